package kv

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"log/slog"
	"testing"

	"github.com/cockroachdb/pebble/v2"
	"github.com/zeebo/blake3"

	"github.com/sealkv/kv/internal/erasure"
	"github.com/sealkv/kv/internal/record"
	"github.com/sealkv/kv/internal/slicestore"
)

// checkInvariants asserts DESIGN.md's I1 and I2 on a quiescent store and
// that the running totals match a recount:
//   - every manifest of a committed version lists slices that have a record,
//     a reference from that manifest and at least k good shards (I1);
//   - every slice record is referenced, every reference belongs to a
//     committed manifest, every shard in the slice keyspace belongs to a
//     record (I2, nothing leaks);
//   - when readable, every version's bytes hash to its ContentID.
func checkInvariants(t testing.TB, db *DB) {
	t.Helper()
	if err := invariants(db); err != nil {
		t.Fatal(err)
	}
}

func invariants(db *DB) error {
	var s record.Stats
	manifests := map[record.ManifestID]bool{}
	refsWanted := map[string]bool{}
	parents := map[string]string{} // every Data's parent ("" for none)
	var versions []*record.Version
	err := db.eachKey([]byte{record.PrefixData}, func(k, v []byte) error {
		d, err := record.DecodeData(v)
		if err != nil {
			return err
		}
		s.Data++
		parents[string(k[1:])] = d.Parent
		for i := range d.Versions {
			ver := &d.Versions[i]
			s.Versions++
			s.LogicalBytes += ver.OriginalSize
			manifests[ver.Manifest] = true
			versions = append(versions, ver)
			if err := checkManifest(db, string(k[1:]), ver, refsWanted); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	if err := checkParents(db, parents); err != nil {
		return err
	}
	records := map[SliceID]*record.Slice{}
	err = db.eachKey([]byte{record.PrefixSlice}, func(k, v []byte) error {
		rec, err := record.DecodeSlice(v)
		if err != nil {
			return err
		}
		records[SliceID(k[1:])] = rec
		s.Slices++
		s.UniqueBytes += rec.OriginalSize
		s.StoredBytes += storedSize(rec)
		return nil
	})
	if err != nil {
		return err
	}
	// Reference keys carry only a SliceID prefix (record.RefIDSize).
	referenced := map[[record.RefIDSize]byte]bool{}
	err = db.eachKey([]byte{record.PrefixRef}, func(k, _ []byte) error {
		m, ok := record.RefManifest(k)
		if !ok || !manifests[m] {
			return fmt.Errorf("I2: reference %x from uncommitted manifest", k)
		}
		p, _ := record.RefSlicePrefix(k)
		referenced[p] = true
		delete(refsWanted, string(k))
		return nil
	})
	if err != nil {
		return err
	}
	for k := range refsWanted {
		return fmt.Errorf("I1: missing reference %x", k)
	}
	for id := range records {
		if !referenced[[record.RefIDSize]byte(id[:record.RefIDSize])] {
			return fmt.Errorf("I2: slice %s has no references", id)
		}
	}
	if err := checkShards(db, records); err != nil {
		return err
	}
	if got := db.stats; got != s {
		return fmt.Errorf("stats %+v, recount %+v", got, s)
	}
	for _, p := range []byte{record.PrefixIntent, record.PrefixUnclean} {
		n := 0
		_ = db.eachKey([]byte{p}, func(k, _ []byte) error { n++; return nil })
		if p == record.PrefixUnclean && n != len(db.sessions) || p == record.PrefixIntent && n != 0 {
			return fmt.Errorf("%d leftover %c records", n, p)
		}
	}
	if db.keys.CanRead() {
		for _, v := range versions {
			if err := checkContent(db, v); err != nil {
				return err
			}
		}
	}
	return nil
}

// checkParents checks the tree of Data: every parent exists and every
// Data with a parent has exactly its child record, and there is no other.
// Put relies on it: a key that does not exist is nobody's parent.
func checkParents(db *DB, parents map[string]string) error {
	children := 0
	err := db.eachKey([]byte{record.PrefixChild}, func(k, _ []byte) error {
		parent, child, ok := bytes.Cut(k[1:], []byte{0})
		if p, exists := parents[string(child)]; !ok || !exists || p != string(parent) {
			return fmt.Errorf("child record %q without its Data", k)
		}
		children++
		return nil
	})
	if err != nil {
		return err
	}
	for key, parent := range parents {
		if parent == "" {
			continue
		}
		children--
		if _, ok := parents[parent]; !ok {
			return fmt.Errorf("%q names the missing parent %q", key, parent)
		}
	}
	if children != 0 {
		return fmt.Errorf("%d child records too many", children)
	}
	return nil
}

// checkManifest checks that the manifest of a committed version covers its
// size and that each slice has a record; it notes the references it needs.
func checkManifest(db *DB, key string, v *record.Version, refs map[string]bool) error {
	var off int64
	n := int64(0)
	err := db.eachKey(record.ChunkPrefix(v.Manifest), func(k, val []byte) error {
		if start := int64(binary.BigEndian.Uint64(k[len(k)-8:])); start != off {
			return fmt.Errorf("%q v%d: chunk at %d, expected %d", key, v.Version, start, off)
		}
		chunk, err := record.DecodeChunk(val)
		if err != nil {
			return err
		}
		for i := range chunk {
			id := SliceID(chunk[i].ID)
			rec, err := sliceRecord(db.meta, &id)
			if err != nil || rec == nil {
				return fmt.Errorf("I1: %q v%d: slice %s has no record (%v)", key, v.Version, id, err)
			}
			refs[string(record.RefKey(&chunk[i].ID, v.Manifest))] = true
			off += chunk[i].Size
			n++
		}
		return nil
	})
	if err != nil {
		return err
	}
	if off != v.OriginalSize || n != v.NumSlices {
		return fmt.Errorf("%q v%d: manifest covers %d bytes in %d slices, version says %d in %d", key, v.Version, off, n, v.OriginalSize, v.NumSlices)
	}
	return nil
}

// checkShards checks every record has >= k good shards and every shard or
// header in the slice keyspace belongs to a record.
func checkShards(db *DB, records map[SliceID]*record.Slice) error {
	owner := map[slicestore.Location]SliceID{}
	for id, rec := range records {
		loc := slicestore.Location{Session: rec.Session, Ctr: rec.Ctr}
		owner[loc] = id
		shards, err := db.slices.Get(ctx, loc, rec.K+rec.M)
		if err != nil {
			return err
		}
		c, _ := erasure.New(rec.K, rec.M)
		good := 0
		for i, sh := range shards {
			if sh != nil && erasure.Good(id[:], i, sh, c.ShardSize(int(rec.SealedSize))) {
				good++
			}
		}
		if good < rec.K {
			return fmt.Errorf("I1: slice %s has %d good shards, needs %d", id, good, rec.K)
		}
	}
	it, err := db.slices.(*slicestore.Pebble).DB().NewIter(&pebble.IterOptions{})
	if err != nil {
		return err
	}
	defer it.Close()
	for it.First(); it.Valid(); it.Next() {
		k := it.Key()
		if len(k) != 25 {
			return fmt.Errorf("I2: stray key %x in slice keyspace", k)
		}
		loc := slicestore.Location{Session: [16]byte(k[:16]), Ctr: binary.BigEndian.Uint64(k[16:24])}
		if _, ok := owner[loc]; !ok {
			return fmt.Errorf("I2: shard %x has no record", k)
		}
	}
	return it.Error()
}

// checkContent reads a version back and recomputes its ContentID.
func checkContent(db *DB, v *record.Version) error {
	r := db.newReader(ctx, v)
	defer r.Close()
	b, err := io.ReadAll(r)
	if err != nil {
		return fmt.Errorf("version %d: %w", v.Version, err)
	}
	if contentID(db, b) != v.ContentID {
		return fmt.Errorf("version %d: bytes do not hash to ContentID", v.Version)
	}
	return nil
}

// contentID computes the ContentID of b independently of the Put pipeline:
// b cut by the store's chunker, each slice named, the list hashed.
func contentID(db *DB, b []byte) ContentID {
	h, _ := blake3.NewKeyed(db.cidHash.key)
	for len(b) > 0 {
		n := db.chunker.Cut(b, true)
		id := db.sliceID(b[:n])
		contentEntry(h, &id, n)
		b = b[n:]
	}
	var id ContentID
	h.Digest().Read(id[:])
	return id
}

var quietLogger = slog.New(slog.NewTextHandler(io.Discard, nil))
