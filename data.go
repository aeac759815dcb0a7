package kv

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"iter"
	"time"

	"github.com/cockroachdb/pebble/v2"

	"github.com/sealkv/kv/internal/record"
)

// SliceID names a Slice: the keyed BLAKE3-512 of its ClearText.
type SliceID [64]byte

// String is the lowercase hex form.
func (id SliceID) String() string { return hex.EncodeToString(id[:]) }

// ContentID names a whole ClearText: the keyed BLAKE3-512 of its slice list
// (each slice's SliceID and length, in order). Within a store, whose chunker
// key and slice sizes are fixed, equal ClearTexts have equal ContentIDs.
type ContentID [64]byte

// String is the lowercase hex form.
func (id ContentID) String() string { return hex.EncodeToString(id[:]) }

// ContentMeta describes one version of a Data.
type ContentMeta struct {
	// Version numbers start at 1 and grow with each Put of the key;
	// PruneVersions does not reuse them, but a key deleted and put again
	// starts at 1 anew (Delete keeps nothing of it). Tell versions apart
	// across a Delete by ContentID or Created, not by number.
	Version uint64
	// ContentID names the version's ClearText.
	ContentID ContentID
	// OriginalSize is the ClearText's length.
	OriginalSize int64
	// StorageSize is the size of the shards of this version's slices,
	// parity included, counting slices shared with other content in full.
	StorageSize int64
	// NumSlices is the number of slices the ClearText was cut into.
	NumSlices int
	// Created is when the version was committed.
	Created time.Time
}

// Data is a named entry.
type Data struct {
	// Key is the Data's name.
	Key string
	// Parent is the key of the Data this one is a child of, or "".
	Parent string
	// Content is the current version.
	Content ContentMeta
	// Versions are the older versions, oldest first.
	Versions []ContentMeta
}

// now is the clock, replaceable in tests.
var now = time.Now

func toContentMeta(v *record.Version) ContentMeta {
	return ContentMeta{Version: v.Version, ContentID: v.ContentID, OriginalSize: v.OriginalSize, StorageSize: v.StorageSize, NumSlices: int(v.NumSlices), Created: time.Unix(0, v.Created)}
}

func toData(key string, r *record.Data) *Data {
	d := &Data{Key: key, Parent: r.Parent}
	n := len(r.Versions)
	d.Content = toContentMeta(&r.Versions[n-1])
	for i := 0; i < n-1; i++ {
		d.Versions = append(d.Versions, toContentMeta(&r.Versions[i]))
	}
	return d
}

func checkKey(key string) error {
	if !record.ValidKey(key) {
		return fmt.Errorf("%w: %.64q", ErrInvalidKey, key)
	}
	return nil
}

// checkParent checks that the Data a Put names as its parent exists in r.
func checkParent(r pebble.Reader, parent string) error {
	if _, err := getData(r, parent); err != nil {
		return fmt.Errorf("parent: %w", err)
	}
	return nil
}

// getData reads the Data record of key; ErrNotFound if there is none.
func getData(r pebble.Reader, key string) (*record.Data, error) {
	d, err := findData(r, key)
	if d == nil && err == nil {
		return nil, fmt.Errorf("%w: %q", ErrNotFound, key)
	}
	return d, err
}

// findData reads the Data record of key, or returns nil, nil if there is
// none: the Put path, where most keys are new, need not build an error
// for each.
func findData(r pebble.Reader, key string) (*record.Data, error) {
	v, closer, err := r.Get(record.DataKey(key))
	if errors.Is(err, pebble.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	defer closer.Close()
	d, err := record.DecodeData(v)
	if err != nil {
		return nil, fmt.Errorf("%w: data %q: %v", ErrCorrupt, key, err)
	}
	return d, nil
}

// Stat returns the Data stored under key.
func (db *DB) Stat(ctx context.Context, key string) (*Data, error) {
	done, err := db.begin(ctx, key)
	if err != nil {
		return nil, err
	}
	defer done()
	r, err := getData(db.meta, key)
	if err != nil {
		return nil, err
	}
	return toData(key, r), nil
}

// List yields the keys that start with prefix, in byte order. An empty
// prefix lists every key. Iteration stops at the first error, which is
// yielded with an empty key: once ctx is done, that is ctx.Err(), even
// over a range with no keys.
func (db *DB) List(ctx context.Context, prefix string) iter.Seq2[string, error] {
	lo := record.DataKey(prefix)
	return db.scan(ctx, lo, record.PrefixEnd(lo), func(k []byte) string { return string(k[1:]) })
}

// Children yields the keys of the Data whose parent is key, in byte order.
// It yields ErrNotFound if key does not exist.
func (db *DB) Children(ctx context.Context, key string) iter.Seq2[string, error] {
	lo := record.ChildPrefix(key)
	children := db.scan(ctx, lo, record.PrefixEnd(lo), func(k []byte) string { return string(k[len(lo):]) })
	return func(yield func(string, error) bool) {
		// Checked on each ranging, as the scan reads the store then.
		if _, err := db.Stat(ctx, key); err != nil {
			yield("", err)
			return
		}
		children(yield)
	}
}

// scan yields name(k) for the meta keys in [lo, hi). The iterator is a
// consistent snapshot.
func (db *DB) scan(ctx context.Context, lo, hi []byte, name func([]byte) string) iter.Seq2[string, error] {
	return func(yield func(string, error) bool) {
		done, err := db.enterCtx(ctx)
		if err != nil {
			yield("", err)
			return
		}
		defer done()
		// Checked before the first key too: a range with no keys must
		// not end cleanly as if ctx were live.
		if err := ctx.Err(); err != nil {
			yield("", err)
			return
		}
		it, err := db.meta.NewIterWithContext(ctx, &pebble.IterOptions{LowerBound: lo, UpperBound: hi})
		if err != nil {
			yield("", err)
			return
		}
		defer it.Close()
		for it.First(); it.Valid(); it.Next() {
			if err := ctx.Err(); err != nil {
				yield("", err)
				return
			}
			if !yield(name(it.Key()), nil) {
				return
			}
		}
		if err := it.Error(); err != nil {
			yield("", err)
		}
	}
}

// PutOption modifies a Put. A nil PutOption is refused with
// ErrInvalidOptions, not ignored: it is a mistake, not a way to say "none".
type PutOption func(*putOptions)

type putOptions struct {
	parent string
}

// WithParent makes the Data a child of parent, which must exist
// (ErrNotFound otherwise). A later Put without WithParent keeps the parent;
// with another parent it moves the Data. WithParent("") is no option: a
// parent cannot be cleared.
func WithParent(parent string) PutOption {
	return func(o *putOptions) { o.parent = parent }
}

// staged is a Put whose slices are written and whose commit is pending.
type staged struct {
	p  *put
	c  *content
	po putOptions
	// committed is set once the Put's records are committed, or once
	// whether they were is unknown (its group commit's leader failed):
	// from then on nothing may undo it, even if an error follows.
	committed bool
}

// commitPuts makes each staged Put the new current version of its key, in
// order, atomically (one batch) and durably; the shards of every Put must
// already be durable. Content equal to the current version adds no version;
// the Put's manifest is then released like a deleted one. It returns each
// Put's Data as of its own version. On error the caller undoes the Puts
// unless they are marked committed (the sync after the commit failed).
func (db *DB) commitPuts(ps []*staged) ([]*Data, error) {
	ds, synced, err := func() ([]*Data, bool, error) {
		db.mu.Lock()
		defer db.mu.Unlock() // also on a fatal engine panic (see catch)
		rel := db.newRelease()
		defer rel.close()
		ds := make([]*Data, len(ps))
		parents := map[string]bool{} // found in rel: Puts add Data, never remove it
		for i, s := range ps {
			d, err := db.putInto(rel, s, parents)
			if err != nil {
				return nil, false, err
			}
			ds[i] = toData(s.p.key, d)
		}
		synced, err := db.commitRelease(rel)
		if !rel.committed {
			return nil, false, err
		}
		for _, s := range ps {
			s.committed = true
			s.p.published(s.p.added)
			s.p.chunkWritten()
		}
		// Committed: if removing the shards of a slice two Puts sealed
		// failed, the next Open finishes that.
		return ds, synced, db.afterCommit(rel, err)
	}()
	if err == nil && !synced {
		// Group commit: concurrent Puts share this WAL sync, which also
		// makes every earlier batch durable.
		err = db.meta.LogData(nil, pebble.Sync)
	}
	return ds, err
}

// putInto adds to rel the Put's last records and manifest chunk and its new
// version, reading through rel so that it sees the Puts added before it.
// parents are the parents known to exist in rel.
func (db *DB) putInto(rel *release, s *staged, parents map[string]bool) (*record.Data, error) {
	p, c, po := s.p, s.c, s.po
	if po.parent != "" && !parents[po.parent] {
		if err := checkParent(rel.b, po.parent); err != nil {
			return nil, err
		}
		parents[po.parent] = true
	}
	d, err := findData(rel.b, p.key)
	if err != nil {
		return nil, err
	}
	isNew := d == nil
	if isNew {
		d = &record.Data{NextVersion: 1}
		db.stats.Data++
	}
	if err := p.publishLocked(rel, p.added); err != nil {
		return nil, err
	}
	if n := len(d.Versions); n > 0 && d.Versions[n-1].ContentID == c.id {
		// Same content as the current version: drop this Put's manifest.
		if p.wrote {
			if err := rel.manifest(p.manifest); err != nil {
				return nil, err
			}
		}
		for i := range p.chunk {
			rel.candidate(SliceID(p.chunk[i].ID))
		}
	} else {
		p.chunkInto(rel.b)
		v := record.Version{Version: d.NextVersion, ContentID: c.id, OriginalSize: c.size, StorageSize: c.stored, NumSlices: c.slices, Created: now().UnixNano(), Manifest: p.manifest}
		d.NextVersion++
		d.Versions = append(d.Versions, v)
		m := record.Manifest{Key: p.key, Version: v.Version}
		_ = rel.b.Set(record.ManifestKey(p.manifest), m.Encode(), nil)
		db.stats.Versions++
		db.stats.LogicalBytes += c.size
		rel.lazySync = true
	}
	if po.parent != "" && po.parent != d.Parent {
		// A new key has no children (a parent must exist when named, and
		// Delete refuses a Data with children), so it cannot be among
		// parent's ancestors: only a key that exists needs the walk up.
		if !isNew {
			if err := checkAncestors(rel.b, p.key, po.parent); err != nil {
				return nil, err
			}
		}
		if d.Parent != "" {
			_ = rel.b.Delete(record.ChildKey(d.Parent, p.key), nil)
		}
		d.Parent = po.parent
		_ = rel.b.Set(record.ChildKey(d.Parent, p.key), nil, nil)
	}
	_ = rel.b.Set(record.DataKey(p.key), d.Encode(), nil)
	return d, nil
}

// checkAncestors refuses to make parent the parent of key if key is among
// parent's ancestors: no Put can clear a parent, so every Data of a cycle
// would keep a child and could never be deleted.
func checkAncestors(r pebble.Reader, key, parent string) error {
	seen := map[string]bool{}
	for k := parent; k != "" && !seen[k]; {
		if k == key {
			return fmt.Errorf("%w: %q cannot be a child of its descendant %q", ErrInvalidKey, key, parent)
		}
		seen[k] = true
		d, err := findData(r, k)
		if d == nil || err != nil {
			return err
		}
		k = d.Parent
	}
	return nil
}

// commitLocked writes the stats into b and commits it. On failure the
// release that owns b restores the in-memory stats.
func (db *DB) commitLocked(b *pebble.Batch, opts *pebble.WriteOptions) error {
	_ = b.Set(record.StatsKey, db.stats.Encode(), nil)
	if err := b.Commit(opts); err != nil {
		return fmt.Errorf("sealkv: committing: %w", err)
	}
	return nil
}
