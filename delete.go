package kv

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sort"

	"github.com/cockroachdb/pebble/v2"

	"github.com/sealkv/kv/internal/record"
	"github.com/sealkv/kv/internal/slicestore"
)

// DeleteReport says what a Delete or PruneVersions did to the slices of the
// content it removed.
type DeleteReport struct {
	// Deleted are the slices no longer referenced, removed with their shards.
	Deleted []SliceID
	// Kept are the slices still referenced by other Data.
	Kept []KeptSlice
}

// KeptSlice is a slice a Delete left in place, and why.
type KeptSlice struct {
	// ID names the slice.
	ID SliceID
	// ReferencedBy are the keys of the Data (other versions, other keys, or
	// a Put in flight) that still reference the slice.
	ReferencedBy []string
}

// Delete removes the Data under key and every slice no other Data
// references. It refuses, changing nothing, with ErrNotFound for an unknown
// key, ErrHasChildren if other Data name key as parent and ErrHasVersions
// if key has older versions (see PruneVersions).
func (db *DB) Delete(ctx context.Context, key string) (_ *DeleteReport, err error) {
	done, err := db.begin(ctx, key)
	if err != nil {
		return nil, err
	}
	defer done()
	defer catch(&err)
	db.mu.Lock()
	defer db.mu.Unlock()
	d, err := getData(db.meta, key)
	if err != nil {
		return nil, err
	}
	// A failed lookup is returned as itself: ErrHasChildren would send
	// the caller to delete children that may not exist.
	has, err := db.hasChildren(key)
	if err != nil {
		return nil, fmt.Errorf("sealkv: looking up the children of %q: %w", key, err)
	}
	if has {
		return nil, fmt.Errorf("%w: %q (delete its children first)", ErrHasChildren, key)
	}
	if len(d.Versions) > 1 {
		return nil, fmt.Errorf("%w: %q has %d older versions (PruneVersions(key, 0) first)", ErrHasVersions, key, len(d.Versions)-1)
	}
	rel := db.newRelease()
	defer rel.close()
	if err := db.dropVersion(rel, &d.Versions[0]); err != nil {
		return nil, err
	}
	_ = rel.b.Delete(record.DataKey(key), nil)
	if d.Parent != "" {
		_ = rel.b.Delete(record.ChildKey(d.Parent, key), nil)
	}
	db.stats.Data--
	rep, err := db.finishLocked(rel)
	return rep, db.afterCommit(rel, err)
}

// PruneVersions removes all but the keep newest older versions of key (the
// current version is never removed; keep 0 leaves only it) and every slice
// only they referenced. A negative keep gives ErrInvalidOptions.
func (db *DB) PruneVersions(ctx context.Context, key string, keep int) (_ *DeleteReport, err error) {
	if keep < 0 {
		return nil, fmt.Errorf("%w: negative keep %d", ErrInvalidOptions, keep)
	}
	done, err := db.begin(ctx, key)
	if err != nil {
		return nil, err
	}
	defer done()
	defer catch(&err)
	db.mu.Lock()
	defer db.mu.Unlock()
	d, err := getData(db.meta, key)
	if err != nil {
		return nil, err
	}
	drop := len(d.Versions) - 1 - keep
	if drop <= 0 {
		return &DeleteReport{}, nil
	}
	rel := db.newRelease()
	defer rel.close()
	for i := range drop {
		if err := db.dropVersion(rel, &d.Versions[i]); err != nil {
			return nil, err
		}
	}
	d.Versions = d.Versions[drop:]
	_ = rel.b.Set(record.DataKey(key), d.Encode(), nil)
	rep, err := db.finishLocked(rel)
	return rep, db.afterCommit(rel, err)
}

func (db *DB) dropVersion(rel *release, v *record.Version) error {
	db.stats.Versions--
	db.stats.LogicalBytes -= v.OriginalSize
	return rel.manifest(v.Manifest)
}

func (db *DB) hasChildren(key string) (bool, error) {
	lo := record.ChildPrefix(key)
	it, err := db.meta.NewIter(&pebble.IterOptions{LowerBound: lo, UpperBound: record.PrefixEnd(lo)})
	if err != nil {
		return false, err
	}
	defer it.Close()
	return it.First(), it.Error()
}

// release gathers, in one batch, the removal of manifests and the slices
// that thereby lose their last reference. It is used by Delete,
// PruneVersions, an idempotent or failed Put, publishing and recovery, so
// there is one way slices are released.
type release struct {
	db         *DB
	b          *pebble.Batch
	gone       map[record.ManifestID]bool
	candidates map[SliceID]bool
	drops      []slicestore.Location // shards to remove once committed
	// lazySync lets a release with nothing to remove commit without a
	// sync; the caller syncs after releasing db.mu (group commit).
	lazySync bool
	// saved are the stats before this release changed them, restored by
	// close unless the batch committed: an error half-way must not leave
	// counts that the next commit would persist.
	saved     record.Stats
	committed bool
}

// newRelease starts a release. db.mu is held until close. Its batch is
// indexed, and every read that decides what the release writes goes through
// it, so that one release can hold several Puts (Batch.Commit) that see each
// other's records: a key put twice, a slice two of them sealed.
func (db *DB) newRelease() *release {
	return &release{db: db, b: db.meta.NewIndexedBatch(), gone: map[record.ManifestID]bool{}, candidates: map[SliceID]bool{}, saved: db.stats}
}

func (r *release) close() {
	if !r.committed {
		r.db.stats = r.saved
	}
	r.b.Close()
}

// candidate marks a slice to be deleted if nothing references it.
func (r *release) candidate(id SliceID) { r.candidates[id] = true }

// drop schedules removal of the shards at a record's location.
func (r *release) drop(rec *record.Slice) {
	r.drops = append(r.drops, slicestore.Location{Session: rec.Session, Ctr: rec.Ctr})
}

// manifest removes manifest m: its record, chunks and references.
func (r *release) manifest(m record.ManifestID) error {
	r.gone[m] = true
	lo := record.ChunkPrefix(m)
	it, err := r.b.NewIter(&pebble.IterOptions{LowerBound: lo, UpperBound: record.PrefixEnd(lo)})
	if err != nil {
		return err
	}
	defer it.Close()
	for it.First(); it.Valid(); it.Next() {
		v, err := it.ValueAndErr()
		if err != nil {
			return err
		}
		refs, err := record.DecodeChunk(v)
		if err != nil {
			return fmt.Errorf("%w: manifest %x: %v", ErrCorrupt, m, err)
		}
		for i := range refs {
			r.candidates[SliceID(refs[i].ID)] = true
			_ = r.b.Delete(record.RefKey(&refs[i].ID, m), nil)
		}
	}
	if err := it.Error(); err != nil {
		return err
	}
	_ = r.b.DeleteRange(lo, record.PrefixEnd(lo), nil)
	_ = r.b.Delete(record.ManifestKey(m), nil)
	return nil
}

// finishLocked decides every candidate slice, commits the batch durably
// and then removes the shards of deleted slices. A crash after the commit
// is finished by recovery from the intent written in the same batch.
func (db *DB) finishLocked(r *release) (*DeleteReport, error) {
	r.lazySync = false
	rep, _, err := db.finishRelease(r)
	return rep, err
}

// afterCommit is err unless r committed, when only removing the shards of
// the slices it dropped can have failed: the change is made and durable,
// and the intent committed with it lets the next Open remove them (an
// object store with a domain down must not turn a done Delete into an
// error, nor a caller's retry into ErrNotFound). That failure is logged.
func (db *DB) afterCommit(r *release, err error) error {
	if err != nil && r.committed {
		db.opts.Logger.Warn("sealkv: removing the shards of dropped slices failed; the next Open retries", "error", err)
		return nil
	}
	return err
}

// commitRelease is finishLocked that may leave the sync to the caller
// (r.lazySync, and nothing to remove); it reports whether it synced.
func (db *DB) commitRelease(r *release) (bool, error) {
	_, synced, err := db.finishRelease(r)
	return synced, err
}

func (db *DB) finishRelease(r *release) (*DeleteReport, bool, error) {
	rep := &DeleteReport{}
	ids := make([]SliceID, 0, len(r.candidates))
	for id := range r.candidates {
		ids = append(ids, id)
	}
	sort.Slice(ids, func(i, j int) bool { return bytes.Compare(ids[i][:], ids[j][:]) < 0 })
	for _, id := range ids {
		by, refs, err := r.referencedBy(&id)
		if err != nil {
			return nil, false, err
		}
		if len(by) > 0 && refs == 0 {
			// Only a pin, which a crash loses, keeps it: the Put's
			// manifest may never list it, and the slice may lie in
			// an older session than the one recovery walks.
			_ = r.b.Set(record.PinnedKey((*[64]byte)(&id)), nil, nil)
		}
		if len(by) > 0 {
			rep.Kept = append(rep.Kept, KeptSlice{ID: id, ReferencedBy: by})
			continue
		}
		rec, err := sliceRecord(r.b, &id)
		if err != nil {
			return nil, false, err
		}
		if rec == nil {
			continue // never published: its Put's shards are dropped by the Put
		}
		_ = r.b.Delete(record.SliceKey((*[64]byte)(&id)), nil)
		db.stats.Slices--
		db.stats.UniqueBytes -= rec.OriginalSize
		db.stats.StoredBytes -= storedSize(rec)
		r.drop(rec)
		rep.Deleted = append(rep.Deleted, id)
	}
	var intent []byte
	if len(r.drops) > 0 {
		db.intents++
		intent = record.IntentKey(db.intents)
		_ = r.b.Set(intent, encodeLocs(r.drops), nil)
	}
	sync := !r.lazySync || intent != nil
	opts := pebble.NoSync
	if sync {
		opts = pebble.Sync
	}
	if err := db.commitLocked(r.b, opts); err != nil {
		return nil, false, err
	}
	r.committed = true
	if intent != nil {
		if err := db.slices.Delete(context.Background(), r.drops); err != nil {
			return rep, sync, fmt.Errorf("sealkv: removing shards (recovery will finish it): %w", err)
		}
		_ = db.meta.Delete(intent, pebble.NoSync)
	}
	return rep, sync, nil
}

func encodeLocs(locs []slicestore.Location) []byte {
	rl := make([]record.Location, len(locs))
	for i, l := range locs {
		rl[i] = record.Location(l)
	}
	return record.EncodeIntent(rl)
}

// referencedBy returns the keys whose manifests (other than those the
// release removes) reference id, and those of Puts in flight that pinned it;
// refs counts the references from manifests.
func (r *release) referencedBy(id *SliceID) (_ []string, refs int, _ error) {
	keys := map[string]bool{}
	if pn := r.db.pins[*id]; pn != nil {
		for k := range pn.keys {
			keys[k] = true
		}
	}
	lo := record.RefPrefix((*[64]byte)(id))
	it, err := r.b.NewIter(&pebble.IterOptions{LowerBound: lo, UpperBound: record.PrefixEnd(lo)})
	if err != nil {
		return nil, 0, err
	}
	defer it.Close()
	for it.First(); it.Valid(); it.Next() {
		m, ok := record.RefManifest(it.Key())
		if !ok || r.gone[m] {
			continue
		}
		k, err := manifestKey(r.b, m)
		if err != nil {
			return nil, 0, err
		}
		keys[k] = true
		refs++
	}
	if err := it.Error(); err != nil {
		return nil, 0, err
	}
	out := make([]string, 0, len(keys))
	for k := range keys {
		out = append(out, k)
	}
	sort.Strings(out)
	return out, refs, nil
}

// manifestKey reads the key whose version manifest m holds from r.
func manifestKey(r pebble.Reader, m record.ManifestID) (string, error) {
	v, closer, err := r.Get(record.ManifestKey(m))
	if errors.Is(err, pebble.ErrNotFound) {
		return "", fmt.Errorf("%w: reference to unknown manifest %x", ErrCorrupt, m)
	}
	if err != nil {
		return "", err
	}
	defer closer.Close()
	mr, err := record.DecodeManifest(v)
	if err != nil {
		return "", fmt.Errorf("%w: manifest %x: %v", ErrCorrupt, m, err)
	}
	return mr.Key, nil
}
