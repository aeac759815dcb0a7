package kv

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	mrand "math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"testing/iotest"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"

	"github.com/sealkv/kv/internal/bufpool"
	"github.com/sealkv/kv/internal/record"
	"github.com/sealkv/kv/internal/slicestore"
)

var ctx = context.Background()

// small slice sizes keep tests fast while crossing many slice boundaries.
func smallOpts(k *Keys) *Options {
	return &Options{Keys: k, MinSliceSize: 1 << 10, AvgSliceSize: 4 << 10, MaxSliceSize: 16 << 10}
}

func newKeys(t testing.TB) *Keys {
	t.Helper()
	k, err := GenerateKeys()
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func openDB(t testing.TB, dir string, o *Options) *DB {
	t.Helper()
	db, err := Open(dir, o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

func randBytes(n int) []byte {
	b := make([]byte, n)
	rand.Read(b)
	return b
}

func mustPut(t testing.TB, db *DB, key string, b []byte, opts ...PutOption) *Data {
	t.Helper()
	d, err := db.Put(ctx, key, bytes.NewReader(b), opts...)
	if err != nil {
		t.Fatalf("Put %q: %v", key, err)
	}
	return d
}

func get(t testing.TB, db *DB, key string) []byte {
	t.Helper()
	r, err := db.Get(ctx, key)
	if err != nil {
		t.Fatalf("Get %q: %v", key, err)
	}
	defer r.Close()
	b, err := io.ReadAll(r)
	if err != nil {
		t.Fatalf("read %q: %v", key, err)
	}
	return b
}

func TestRoundTripSizes(t *testing.T) {
	db := openDB(t, t.TempDir(), smallOpts(newKeys(t)))
	min, avg, max := 1<<10, 4<<10, 16<<10
	for _, n := range []int{0, 1, min - 1, min, min + 1, avg, max - 1, max, max + 1, 3*max + 7, 1 << 20} {
		b := randBytes(n)
		d := mustPut(t, db, "k", b)
		if d.Content.OriginalSize != int64(n) {
			t.Fatalf("size %d: OriginalSize %d", n, d.Content.OriginalSize)
		}
		if got := get(t, db, "k"); !bytes.Equal(got, b) {
			t.Fatalf("size %d: round trip mismatch (got %d bytes)", n, len(got))
		}
	}
}

// TestSpeculativeCuts checks that a Put's slices are exactly those of a
// serial chunker run, whatever the speculative chains found ahead of the
// cutter: on random bytes (chains meet quickly), a candidate every 64, 65 or
// 101 bytes (every cut at the first one after Min, in every phase against
// the blocks, so the windows straddling two blocks matter), runs of one byte value
// (likely no candidates: every cut forced), short repeating patterns, their
// mixtures, and short reads.
func TestSpeculativeCuts(t *testing.T) {
	db := openDB(t, t.TempDir(), smallOpts(newKeys(t)))
	max := 16 << 10
	random := randBytes(2 << 20)
	// A window that is a cut candidate, repeated: a candidate every 64
	// bytes, so windows straddling two blocks are candidates too.
	n := db.chunker.Candidate(random)
	if n == 0 {
		t.Fatal("no cut candidate in 2 MiB of random bytes")
	}
	window := random[n-64 : n]
	dense := func(period int) func(int) byte {
		return func(i int) byte {
			if i%period < 64 {
				return window[i%period]
			}
			return byte(i % period)
		}
	}
	patterns := map[string]func(i int) byte{
		"dense64":  dense(64),
		"dense65":  dense(65),
		"dense101": dense(101),
		"random":   func(i int) byte { return random[i%len(random)] },
		"zeros":    func(int) byte { return 0 },
		"sevens":   func(int) byte { return 7 },
		"period13": func(i int) byte { return byte(i % 13) },
		"mixed": func(i int) byte { // random with 40 KiB one-value runs
			if i/(40<<10)%3 == 1 {
				return byte(i / (120 << 10))
			}
			return random[i%len(random)]
		},
	}
	for name, at := range patterns {
		for _, n := range []int{256<<10 - 1, 256 << 10, 256<<10 + max, 1<<20 + 3, 2<<20 + max/2} {
			b := make([]byte, n)
			for i := range b {
				b[i] = at(i)
			}
			for _, r := range []io.Reader{bytes.NewReader(b), iotest.HalfReader(bytes.NewReader(b))} {
				d, err := db.Put(ctx, "k", r)
				if err != nil {
					t.Fatalf("%s/%d: %v", name, n, err)
				}
				if d.Content.ContentID != contentID(db, b) {
					t.Fatalf("%s/%d: slices differ from a serial chunker run", name, n)
				}
			}
		}
	}
	checkInvariants(t, db)
}

func TestReadAtSeek(t *testing.T) {
	db := openDB(t, t.TempDir(), smallOpts(newKeys(t)))
	b := randBytes(3 << 20)
	mustPut(t, db, "k", b)
	r, err := db.Get(ctx, "k")
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	rng := mrand.New(mrand.NewPCG(1, 2))
	for range 300 {
		off := rng.Int64N(int64(len(b)) + 10)
		n := rng.IntN(40 << 10)
		p := make([]byte, n)
		got, err := r.ReadAt(p, off)
		want := max(0, min(n, len(b)-int(off)))
		if got != want || (got < n && !errors.Is(err, io.EOF)) || (got == n && err != nil) {
			t.Fatalf("ReadAt(%d, %d) = %d, %v; want %d", n, off, got, err, want)
		}
		if !bytes.Equal(p[:got], b[min(int(off), len(b)):min(int(off)+got, len(b))]) {
			t.Fatalf("ReadAt(%d, %d): wrong bytes", n, off)
		}
		if _, err := r.Seek(off, io.SeekStart); err != nil {
			t.Fatal(err)
		}
		q := make([]byte, n)
		m, _ := io.ReadFull(r, q)
		if m != want || !bytes.Equal(q[:m], p[:got]) {
			t.Fatalf("Seek+Read at %d: %d bytes, want %d", off, m, want)
		}
		if rng.IntN(20) == 0 { // WriteTo from the current position
			var rest bytes.Buffer
			if _, err := r.WriteTo(&rest); err != nil || !bytes.Equal(rest.Bytes(), b[min(int(off)+m, len(b)):]) {
				t.Fatalf("WriteTo after %d: %d bytes, %v", off+int64(m), rest.Len(), err)
			}
		}
	}
}

// TestSeekRefusals: positions a Reader cannot take are ErrInvalidOptions
// and leave its position. (Found in review: a Seek past the largest int64
// overflowed and was reported as a negative position, and none of these
// errors was errors.Is-able.)
func TestSeekRefusals(t *testing.T) {
	db := openDB(t, t.TempDir(), smallOpts(newKeys(t)))
	mustPut(t, db, "k", []byte("0123456789"))
	r, err := db.Get(ctx, "k")
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if _, err := r.Seek(4, io.SeekStart); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		offset int64
		whence int
		want   string
	}{
		{math.MaxInt64, io.SeekCurrent, "overflows"},
		{math.MaxInt64, io.SeekEnd, "overflows"},
		{-5, io.SeekCurrent, "negative"},
		{math.MinInt64, io.SeekEnd, "negative"},
		{0, 3, "whence"},
	} {
		if _, err := r.Seek(c.offset, c.whence); !errors.Is(err, ErrInvalidOptions) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("Seek(%d, %d): %v, want ErrInvalidOptions (%s)", c.offset, c.whence, err, c.want)
		}
	}
	if pos, err := r.Seek(math.MaxInt64-4, io.SeekCurrent); pos != math.MaxInt64 || err != nil {
		t.Errorf("Seek to the largest position: %d, %v", pos, err)
	}
	if _, err := r.Seek(4, io.SeekStart); err != nil {
		t.Fatal(err)
	}
	if _, err := r.ReadAt(make([]byte, 1), -1); !errors.Is(err, ErrInvalidOptions) {
		t.Errorf("ReadAt at -1: %v, want ErrInvalidOptions", err)
	}
	if rest, err := io.ReadAll(r); string(rest) != "456789" || err != nil {
		t.Errorf("after the refusals the Reader read %q, %v; want \"456789\"", rest, err)
	}
}

func TestDedup100MiB(t *testing.T) {
	if testing.Short() {
		t.Skip("100 MiB")
	}
	db := openDB(t, t.TempDir(), &Options{Keys: newKeys(t)})
	b := randBytes(100 << 20)
	mustPut(t, db, "a", b)
	before := db.Stats()
	mustPut(t, db, "b", b)
	after := db.Stats()
	if grow := after.StoredBytes - before.StoredBytes; grow*100 >= before.StoredBytes {
		t.Fatalf("second copy added %d stored bytes (>= 1%% of %d)", grow, before.StoredBytes)
	}
	if after.LogicalBytes != 2*int64(len(b)) || after.UniqueBytes != int64(len(b)) {
		t.Fatalf("stats %+v", after)
	}
	if !bytes.Equal(get(t, db, "b"), b) {
		t.Fatal("b differs")
	}
	checkInvariants(t, db)
}

// TestSliceRecordBottomLevel checks sliceRecord, which unlike Pebble's Get
// consults the bottom level's bloom filters, for present and absent
// SliceIDs: in the memtable, in L6 after a full compaction, and through an
// indexed batch over it; and that a re-Put then still deduplicates.
func TestSliceRecordBottomLevel(t *testing.T) {
	db := openDB(t, t.TempDir(), smallOpts(newKeys(t)))
	b := randBytes(256 << 10)
	mustPut(t, db, "a", b)
	want := sliceRecords(t, db)
	if len(want) < 8 {
		t.Fatalf("%d slices, want several", len(want))
	}
	var absent SliceID
	rand.Read(absent[:])
	check := func(stage string, r pebble.Reader) {
		t.Helper()
		for id, rec := range want {
			got, err := sliceRecord(r, &id)
			if err != nil || got == nil || !bytes.Equal(got.Encode(), rec.Encode()) {
				t.Fatalf("%s: slice %s: got %+v, %v; want %+v", stage, id, got, err, rec)
			}
		}
		if got, err := sliceRecord(r, &absent); got != nil || err != nil {
			t.Fatalf("%s: absent slice: got %+v, %v", stage, got, err)
		}
	}
	check("memtable", db.meta)
	if err := db.meta.Flush(); err != nil {
		t.Fatal(err)
	}
	if err := db.meta.Compact(ctx, []byte{0}, []byte{0xff}, true); err != nil {
		t.Fatal(err)
	}
	if m := db.meta.Metrics(); m.Levels[6].TablesCount == 0 || m.Levels[0].TablesCount != 0 {
		t.Fatalf("after compaction: %d tables in L0, %d in L6", m.Levels[0].TablesCount, m.Levels[6].TablesCount)
	}
	check("L6", db.meta)

	batch := db.meta.NewIndexedBatch()
	defer batch.Close()
	var added SliceID
	rand.Read(added[:])
	for _, rec := range want { // any one record, under a new SliceID
		if err := batch.Set(record.SliceKey((*[64]byte)(&added)), rec.Encode(), nil); err != nil {
			t.Fatal(err)
		}
		want[added] = rec
		break
	}
	check("indexed batch over L6", batch)
	if got, _ := sliceRecord(db.meta, &added); got != nil {
		t.Fatal("the batch's record is visible outside it")
	}

	before := db.Stats()
	mustPut(t, db, "b", b)
	if after := db.Stats(); after.UniqueBytes != before.UniqueBytes || after.StoredBytes != before.StoredBytes {
		t.Fatalf("re-Put after compaction: stats %+v, before %+v", after, before)
	}
	checkInvariants(t, db)
}

func TestVersions(t *testing.T) {
	db := openDB(t, t.TempDir(), smallOpts(newKeys(t)))
	v := [][]byte{randBytes(50 << 10), randBytes(70 << 10), randBytes(10)}
	for i, b := range v {
		d := mustPut(t, db, "k", b)
		if d.Content.Version != uint64(i+1) || len(d.Versions) != i {
			t.Fatalf("put %d: version %d with %d older", i, d.Content.Version, len(d.Versions))
		}
	}
	d := mustPut(t, db, "k", v[2]) // same as current: no new version
	if d.Content.Version != 3 || len(d.Versions) != 2 {
		t.Fatalf("idempotent put made version %d", d.Content.Version)
	}
	for i, b := range v {
		r, err := db.GetVersion(ctx, "k", uint64(i+1))
		if err != nil {
			t.Fatal(err)
		}
		got, _ := io.ReadAll(r)
		if !bytes.Equal(got, b) {
			t.Fatalf("version %d differs", i+1)
		}
	}
	for _, bad := range []uint64{0, 4, 100} {
		if _, err := db.GetVersion(ctx, "k", bad); !errors.Is(err, ErrNotFound) {
			t.Fatalf("GetVersion %d: %v", bad, err)
		}
	}
	if _, err := db.PruneVersions(ctx, "k", 1); err != nil {
		t.Fatal(err)
	}
	if _, err := db.GetVersion(ctx, "k", 1); !errors.Is(err, ErrNotFound) {
		t.Fatalf("pruned version 1: %v", err)
	}
	d = mustPut(t, db, "k", v[0])
	if d.Content.Version != 4 || len(d.Versions) != 2 || d.Versions[0].Version != 2 {
		t.Fatalf("after prune: version %d, older %v", d.Content.Version, d.Versions)
	}
	checkInvariants(t, db)
}

func TestChildrenAndList(t *testing.T) {
	db := openDB(t, t.TempDir(), smallOpts(newKeys(t)))
	if _, err := db.Put(ctx, "c", bytes.NewReader(nil), WithParent("nope")); !errors.Is(err, ErrNotFound) {
		t.Fatalf("missing parent: %v", err)
	}
	if _, err := db.Put(ctx, "p", bytes.NewReader(nil), WithParent("p")); !errors.Is(err, ErrInvalidKey) {
		t.Fatalf("own parent: %v", err)
	}
	mustPut(t, db, "p", nil)
	mustPut(t, db, "p/b", []byte("b"), WithParent("p"))
	mustPut(t, db, "p/a", []byte("a"), WithParent("p"))
	mustPut(t, db, "q", []byte("q"))
	if got := collect(t, db.Children(ctx, "p")); !equal(got, []string{"p/a", "p/b"}) {
		t.Fatalf("children %v", got)
	}
	if got := collect(t, db.List(ctx, "p")); !equal(got, []string{"p", "p/a", "p/b"}) {
		t.Fatalf("list p %v", got)
	}
	if got := collect(t, db.List(ctx, "")); !equal(got, []string{"p", "p/a", "p/b", "q"}) {
		t.Fatalf("list all %v", got)
	}
	for _, err := range db.Children(ctx, "zz") {
		if !errors.Is(err, ErrNotFound) {
			t.Fatalf("children of missing: %v", err)
		}
	}
	if d, _ := db.Stat(ctx, "p/a"); d.Parent != "p" {
		t.Fatalf("parent %q", d.Parent)
	}
	checkInvariants(t, db)
}

// TestChildrenChecksWhenRanged checks that Children, like List, looks at
// the store when it is ranged over, not when it is called: a Seq made
// before its key existed yielded ErrNotFound for good, and one made before
// the key was deleted yielded nothing instead of ErrNotFound.
func TestChildrenChecksWhenRanged(t *testing.T) {
	db := openDB(t, t.TempDir(), smallOpts(newKeys(t)))
	seq := db.Children(ctx, "p")
	mustPut(t, db, "p", nil)
	mustPut(t, db, "p/a", nil, WithParent("p"))
	if got := collect(t, seq); !equal(got, []string{"p/a"}) {
		t.Fatalf("children %v", got)
	}
	for _, k := range []string{"p/a", "p"} {
		if _, err := db.Delete(ctx, k); err != nil {
			t.Fatal(err)
		}
	}
	n := 0
	for _, err := range seq {
		if n++; !errors.Is(err, ErrNotFound) {
			t.Fatalf("children of a deleted key: %v, want ErrNotFound", err)
		}
	}
	if n != 1 {
		t.Fatalf("children of a deleted key: %d results", n)
	}
}

// TestParentCycle checks that a Put cannot move a Data under one of its own
// descendants, by DB.Put or in a Batch: no Put can clear a parent, so in a
// cycle every Data has a child and none could ever be deleted
// (ErrHasChildren for each).
func TestParentCycle(t *testing.T) {
	db := openDB(t, t.TempDir(), smallOpts(newKeys(t)))
	mustPut(t, db, "a", nil)
	mustPut(t, db, "b", nil, WithParent("a"))
	mustPut(t, db, "c", nil, WithParent("b"))
	for _, parent := range []string{"b", "c"} {
		if _, err := db.Put(ctx, "a", bytes.NewReader(nil), WithParent(parent)); !errors.Is(err, ErrInvalidKey) {
			t.Fatalf("a moved under its descendant %q: %v, want ErrInvalidKey", parent, err)
		}
	}
	b := db.NewBatch()
	if err := b.Put(ctx, "x", bytes.NewReader(nil), WithParent("c")); err != nil {
		t.Fatal(err)
	}
	if err := b.Put(ctx, "a", bytes.NewReader(nil), WithParent("x")); err != nil {
		t.Fatal(err)
	}
	if err := b.Commit(ctx); !errors.Is(err, ErrInvalidKey) {
		t.Fatalf("a batch moved a under its descendant: %v, want ErrInvalidKey", err)
	}
	// Moving c up, and a new key under it, is allowed; checkInvariants
	// checks the child records follow.
	mustPut(t, db, "c", nil, WithParent("a"))
	mustPut(t, db, "d", nil, WithParent("c"))
	checkInvariants(t, db)
	for _, k := range []string{"d", "c", "b", "a"} {
		if _, err := db.Delete(ctx, k); err != nil {
			t.Fatalf("Delete %q: %v", k, err)
		}
	}
	checkInvariants(t, db)
}

func collect(t *testing.T, seq func(func(string, error) bool)) []string {
	t.Helper()
	var out []string
	for k, err := range seq {
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, k)
	}
	return out
}

func equal(a, b []string) bool { return fmt.Sprint(a) == fmt.Sprint(b) }

func TestDeleteRefusals(t *testing.T) {
	db := openDB(t, t.TempDir(), smallOpts(newKeys(t)))
	mustPut(t, db, "p", randBytes(20<<10))
	mustPut(t, db, "c", randBytes(20<<10), WithParent("p"))
	mustPut(t, db, "v", randBytes(20<<10))
	mustPut(t, db, "v", randBytes(20<<10))
	before := db.Stats()
	for key, want := range map[string]error{"missing": ErrNotFound, "p": ErrHasChildren, "v": ErrHasVersions} {
		rep, err := db.Delete(ctx, key)
		if !errors.Is(err, want) || rep != nil {
			t.Fatalf("Delete %q = %v, %v; want %v", key, rep, err, want)
		}
	}
	if db.Stats() != before {
		t.Fatal("a refused delete changed the store")
	}
	checkInvariants(t, db)
	if _, err := db.PruneVersions(ctx, "v", 0); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"c", "p", "v"} {
		if _, err := db.Delete(ctx, k); err != nil {
			t.Fatalf("Delete %q: %v", k, err)
		}
	}
	if s := db.Stats(); s != (Stats{}) {
		t.Fatalf("empty store has stats %+v", s)
	}
	checkInvariants(t, db)
}

func TestDeleteReportShared(t *testing.T) {
	db := openDB(t, t.TempDir(), smallOpts(newKeys(t)))
	shared, onlyA := randBytes(200<<10), randBytes(200<<10)
	mustPut(t, db, "a", append(append([]byte{}, shared...), onlyA...))
	mustPut(t, db, "b", shared)
	rep, err := db.Delete(ctx, "a")
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Kept) == 0 || len(rep.Deleted) == 0 {
		t.Fatalf("report: %d kept, %d deleted", len(rep.Kept), len(rep.Deleted))
	}
	for _, k := range rep.Kept {
		if !equal(k.ReferencedBy, []string{"b"}) {
			t.Fatalf("kept slice referenced by %v", k.ReferencedBy)
		}
	}
	for _, id := range rep.Deleted {
		if rec, _ := sliceRecord(db.meta, &id); rec != nil {
			t.Fatalf("deleted slice %s still has a record", id)
		}
	}
	if !bytes.Equal(get(t, db, "b"), shared) {
		t.Fatal("b damaged by deleting a")
	}
	checkInvariants(t, db)
	rep, err = db.Delete(ctx, "b")
	if err != nil || len(rep.Kept) != 0 || len(rep.Deleted) == 0 {
		t.Fatalf("delete b: %v %+v", err, rep)
	}
	if s := db.Stats(); s.StoredBytes != 0 || s.Slices != 0 {
		t.Fatalf("stats after deleting all: %+v", s)
	}
	checkInvariants(t, db)
}

func TestWriteOnly(t *testing.T) {
	dir := t.TempDir()
	k := newKeys(t)
	full := openDB(t, dir, smallOpts(k))
	b := randBytes(100 << 10)
	mustPut(t, full, "a", b)
	full.Close()

	wo := k.WriteOnly()
	enc, _ := wo.MarshalBinary()
	if bytes.Contains(enc, k.seed) {
		t.Fatal("write-only key file holds the decapsulation seed")
	}
	parsed, err := ParseKeys(enc)
	if err != nil || parsed.CanRead() {
		t.Fatalf("parse write-only: %v, canRead %v", err, parsed.CanRead())
	}
	db := openDB(t, dir, smallOpts(parsed))
	before := db.Stats().StoredBytes
	mustPut(t, db, "b", b) // dedups against a
	if db.Stats().StoredBytes != before {
		t.Fatal("write-only put of known content stored new bytes")
	}
	mustPut(t, db, "c", randBytes(10<<10))
	if _, err := db.Get(ctx, "a"); !errors.Is(err, ErrWriteOnly) {
		t.Fatalf("write-only Get: %v", err)
	}
	if _, err := db.GetVersion(ctx, "a", 1); !errors.Is(err, ErrWriteOnly) {
		t.Fatalf("write-only GetVersion: %v", err)
	}
	db.Close()
	full = openDB(t, dir, smallOpts(k))
	if !bytes.Equal(get(t, full, "b"), b) {
		t.Fatal("content put with write-only keys not readable with full keys")
	}
	checkInvariants(t, full)
}

func TestWrongKeys(t *testing.T) {
	dir := t.TempDir()
	db := openDB(t, dir, smallOpts(newKeys(t)))
	mustPut(t, db, "a", []byte("x"))
	db.Close()
	if _, err := Open(dir, smallOpts(newKeys(t))); !errors.Is(err, ErrWrongKeys) {
		t.Fatalf("wrong keys: %v", err)
	}
}

// TestMissingConfigRefused: a store whose Config record is lost is refused
// with ErrCorrupt, by its own keys and others, instead of being taken for a
// new store: Open with other keys succeeded and wrote a Config of theirs,
// after which the store's own keys got ErrWrongKeys.
func TestMissingConfigRefused(t *testing.T) {
	dir := t.TempDir()
	k := newKeys(t)
	db := openDB(t, dir, smallOpts(k))
	mustPut(t, db, "a", []byte("x"))
	if err := db.meta.Delete(record.ConfigKey, pebble.Sync); err != nil {
		t.Fatal(err)
	}
	db.Close()
	for _, keys := range []*Keys{newKeys(t), k} {
		db, err := Open(dir, &Options{Keys: keys})
		if err == nil {
			db.Close()
		}
		if !errors.Is(err, ErrCorrupt) {
			t.Errorf("Open without a Config: %v", err)
		}
	}
}

// TestOldFormatRefused checks that a store of an earlier development format
// (Config tag 0xC1: reference keys with the full SliceID) is refused with a
// clear error instead of being misread.
func TestOldFormatRefused(t *testing.T) {
	dir := t.TempDir()
	k := newKeys(t)
	db := openDB(t, dir, smallOpts(k))
	mustPut(t, db, "a", []byte("x"))
	v, closer, err := db.meta.Get(record.ConfigKey)
	if err != nil {
		t.Fatal(err)
	}
	old := append([]byte(nil), v...)
	closer.Close()
	old[0] = 0xC1
	if err := db.meta.Set(record.ConfigKey, old, pebble.Sync); err != nil {
		t.Fatal(err)
	}
	db.Close()
	_, err = Open(dir, smallOpts(k))
	if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), "earlier development format of sealkv and must be re-created") {
		t.Fatalf("old format store: %v", err)
	}
}

// TestPebbleCorruptionIsErrCorrupt: damage Pebble reports as corruption in
// either keyspace's own files (here a garbled MANIFEST, the file the
// manifest marker names) makes Open fail with ErrCorrupt, keeping Pebble's
// message. (Found in review: "sealkv: opening store: pebble: malformed
// manifest file ...", not ErrCorrupt.) Pebble's format here keeps no
// CURRENT file, so a garbage one is ignored; a missing MANIFEST is not
// marked as corruption by Pebble and stays a plain error.
func TestPebbleCorruptionIsErrCorrupt(t *testing.T) {
	k := newKeys(t)
	for _, keyspace := range []string{"meta", "slices"} {
		dir := t.TempDir()
		db := openDB(t, dir, smallOpts(k))
		mustPut(t, db, "a", randBytes(10<<10))
		db.Close()
		manifests, err := filepath.Glob(filepath.Join(dir, keyspace, "MANIFEST-*"))
		if err != nil || len(manifests) != 1 {
			t.Fatalf("%s: manifests %v, %v", keyspace, manifests, err)
		}
		if err := os.WriteFile(manifests[0], []byte("not a manifest, not a manifest, not a manifest"), 0o644); err != nil {
			t.Fatal(err)
		}
		db, err = Open(dir, smallOpts(k))
		if err == nil {
			db.Close()
		}
		if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), "malformed manifest") || errors.Is(err, ErrLocked) {
			t.Errorf("%s: Open with a garbled MANIFEST: %v, want ErrCorrupt with Pebble's message", keyspace, err)
		}
	}
}

// TestLostManifestMarkerRefused: a keyspace whose manifest marker
// (marker.manifest.*, the file naming its current MANIFEST) is lost makes
// Open fail with ErrCorrupt and deletes nothing: with the marker put back,
// the store opens whole. (Found in review: Pebble took such a keyspace for
// a new one, wrote a fresh MANIFEST and deleted every table it no longer
// knew. Lost from DIR/slices, every shard went and every read failed
// ("10 of 10 shards bad"); lost from DIR/meta, the store looked new and
// was created again over its shards.)
func TestLostManifestMarkerRefused(t *testing.T) {
	k := newKeys(t)
	b := randBytes(64 << 10)
	glob := func(fs vfs.FS, keyspace, pattern string) []string {
		names, _ := fs.List("/db/" + keyspace)
		var m []string
		for _, n := range names {
			if ok, _ := filepath.Match(pattern, n); ok {
				m = append(m, "/db/"+keyspace+"/"+n)
			}
		}
		return m
	}
	marker := func(keyspace string) func(vfs.FS) func() {
		return func(fs vfs.FS) func() {
			m := glob(fs, keyspace, "marker.manifest.*")
			if len(m) != 1 || fs.Remove(m[0]) != nil {
				t.Fatalf("%s: markers %v", keyspace, m)
			}
			return func() {
				if f, err := fs.Create(m[0], vfs.WriteCategoryUnspecified); err == nil {
					f.Close()
				}
			}
		}
	}
	for _, c := range []struct {
		name string
		lose func(vfs.FS) (restore func())
	}{
		{"meta marker", marker("meta")},
		{"slices marker", marker("slices")}, // (all of DIR/slices gone: TestLocalSlicesMissing)
	} {
		fs := vfs.NewMem()
		db, err := Open("/db", memOpts(k, fs))
		if err != nil {
			t.Fatal(err)
		}
		mustPut(t, db, "a", b)
		if err := errors.Join(db.meta.Flush(), db.slices.(*slicestore.Pebble).DB().Flush()); err != nil {
			t.Fatal(err)
		}
		db.Close()
		tables := append(glob(fs, "meta", "*.sst"), glob(fs, "slices", "*.sst")...)
		restore := c.lose(fs)
		if db, err = Open("/db", memOpts(k, fs)); err == nil {
			db.Close()
		}
		if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), "no manifest marker") {
			t.Errorf("%s lost: Open: %v, want ErrCorrupt", c.name, err)
		}
		restore()
		for _, f := range tables {
			if _, err := fs.Stat(f); err != nil {
				t.Errorf("%s lost: Open deleted %s", c.name, f)
			}
		}
		db, err = Open("/db", memOpts(k, fs))
		if err != nil {
			t.Fatal(err)
		}
		if got, err := getBytes(db, "a"); !bytes.Equal(got, b) {
			t.Errorf("%s lost: round trip once it is back: %v", c.name, err)
		}
		db.Close()
	}
}

// TestRefusedOpenCreatesNothing: an Open refused for Options that need no
// store to check leaves nothing behind. (Found in review: the slice sizes
// of a new store were checked once its config was to be written, after
// dir, dir/meta and dir/slices were created and both keyspaces set up.)
func TestRefusedOpenCreatesNothing(t *testing.T) {
	k := newKeys(t)
	for name, o := range map[string]*Options{
		"min < 64":              {Keys: k, MinSliceSize: 63, AvgSliceSize: 128, MaxSliceSize: 256},
		"avg below default min": {Keys: k, AvgSliceSize: 4 << 10},
		"max > 64MiB":           {Keys: k, MaxSliceSize: 64<<20 + 1},
		"k+m = 256":             {Keys: k, DataShards: 256, ParityShards: NoParity},
	} {
		dir := filepath.Join(t.TempDir(), "store")
		if _, err := Open(dir, o); !errors.Is(err, ErrInvalidOptions) {
			t.Errorf("%s: %v, want ErrInvalidOptions", name, err)
		}
		if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s: refused Open left %s behind (%v)", name, dir, err)
		}
	}
	// Sizes a new store could not take are fine for a store that has them.
	dir := t.TempDir()
	openDB(t, dir, smallOpts(k)).Close()
	openDB(t, dir, &Options{Keys: k, AvgSliceSize: 4 << 10}).Close()
}

// TestSliceStoreKindRecorded: a store records whether its shards are in
// DIR/slices or in a SliceStore given in Options, and an Open with the
// other kind is refused with ErrInvalidOptions, writing nothing. A store
// whose config predates the record opens either way. (Found in review: a
// store made with a SliceStore and reopened without one opened an empty
// DIR/slices, where reads found no shards: every slice "corrupt".)
func TestSliceStoreKindRecorded(t *testing.T) {
	keys := newKeys(t)
	extDir := t.TempDir()
	withExternal := func() *Options { return externalOpts(t, extDir, keys) }
	dir := t.TempDir()
	b := randBytes(20 << 10)
	db := openDB(t, dir, withExternal())
	mustPut(t, db, "a", b)
	db.Close()
	if db, err := Open(dir, smallOpts(keys)); !errors.Is(err, ErrInvalidOptions) {
		if err == nil {
			db.Close()
		}
		t.Fatalf("Open without the SliceStore the store was made with: %v, want ErrInvalidOptions", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "slices")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("refused Open created DIR/slices (%v)", err)
	}
	db = openDB(t, dir, withExternal())
	if !bytes.Equal(get(t, db, "a"), b) {
		t.Fatal("round trip through the SliceStore")
	}
	// A config without the record (an older store) opens either way.
	v, closer, err := db.meta.Get(record.ConfigKey)
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := record.DecodeConfig(v)
	closer.Close()
	if err != nil {
		t.Fatal(err)
	}
	old := record.Config{Fingerprint: cfg.Fingerprint, Min: cfg.Min, Avg: cfg.Avg, Max: cfg.Max, Created: cfg.Created}
	if err := db.meta.Set(record.ConfigKey, old.Encode(), pebble.Sync); err != nil {
		t.Fatal(err)
	}
	db.Close()
	openDB(t, dir, smallOpts(keys)).Close()
	openDB(t, dir, withExternal()).Close()

	// The converse: a store with DIR/slices, opened with a SliceStore.
	dir = t.TempDir()
	db = openDB(t, dir, smallOpts(keys))
	mustPut(t, db, "a", b)
	db.Close()
	o := withExternal()
	if db, err := Open(dir, o); !errors.Is(err, ErrInvalidOptions) {
		if err == nil {
			db.Close()
		}
		t.Fatalf("Open with a SliceStore of a store made without: %v, want ErrInvalidOptions", err)
	}
	o.SliceStore.Close() // still the caller's
	db = openDB(t, dir, smallOpts(keys))
	if !bytes.Equal(get(t, db, "a"), b) {
		t.Fatal("round trip through DIR/slices after the refused Open")
	}
}

func TestParseKeys(t *testing.T) {
	k := newKeys(t)
	enc, err := k.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	k2, err := ParseKeys(enc)
	if err != nil || k2.Fingerprint() != k.Fingerprint() || !k2.CanRead() {
		t.Fatalf("round trip: %v", err)
	}
	for i := range enc {
		bad := bytes.Clone(enc)
		bad[i] ^= 0x40
		if _, err := ParseKeys(bad); !errors.Is(err, ErrInvalidKeys) {
			t.Fatalf("flipped byte %d: %v", i, err)
		}
	}
	for _, n := range []int{0, 1, 20, len(enc) - 1} {
		if _, err := ParseKeys(enc[:n]); !errors.Is(err, ErrInvalidKeys) {
			t.Fatalf("truncated to %d: %v", n, err)
		}
	}
}

// TestZeroKeys checks that the zero Keys and a nil *Keys give errors, not
// panics: every method, and Open. (Found in review: Fingerprint, WriteOnly
// and MarshalBinary on a nil *Keys dereferenced nil.)
func TestZeroKeys(t *testing.T) {
	var zero Keys
	if fp := zero.Fingerprint(); fp != ([32]byte{}) || zero.CanRead() || zero.String() != "kv.Keys{}" {
		t.Fatalf("zero Keys: fingerprint %x, CanRead %t, %s", fp, zero.CanRead(), zero)
	}
	if w := zero.WriteOnly(); w.Fingerprint() != ([32]byte{}) {
		t.Fatal("WriteOnly of the zero Keys is not zero")
	}
	for _, k := range []*Keys{nil, &zero, zero.WriteOnly()} {
		if _, err := k.MarshalBinary(); !errors.Is(err, ErrInvalidKeys) {
			t.Fatalf("MarshalBinary of %#v: %v", k, err)
		}
		if _, err := Open(t.TempDir(), &Options{Keys: k}); !errors.Is(err, ErrInvalidOptions) {
			t.Fatalf("Open with %#v: %v", k, err)
		}
	}
}

func TestKeysNeverPrinted(t *testing.T) {
	k := newKeys(t)
	var buf bytes.Buffer
	slog.New(slog.NewJSONHandler(&buf, nil)).Info("keys", "k", k, "v", *k)
	out := fmt.Sprintf("%v %+v %#v %s %v %+v %#v", k, k, k, k, *k, *k, *k) + buf.String()
	secrets := [][]byte{k.seed, k.secret[:]}
	for _, s := range secrets {
		for _, enc := range []string{string(s), hex.EncodeToString(s), fmt.Sprint(s), fmt.Sprintf("%x", s[:8])} {
			if strings.Contains(out, enc) {
				t.Fatalf("secret leaked in %q", out)
			}
		}
	}
	if !strings.Contains(out, "fingerprint") {
		t.Fatalf("unexpected output %q", out)
	}
}

func TestInvalidKey(t *testing.T) {
	db := openDB(t, t.TempDir(), smallOpts(newKeys(t)))
	for _, k := range []string{"", "a\x00b", "\xff\xfe", strings.Repeat("x", 4097)} {
		if _, err := db.Put(ctx, k, bytes.NewReader(nil)); !errors.Is(err, ErrInvalidKey) {
			t.Fatalf("Put %.20q: %v", k, err)
		}
		if _, err := db.Get(ctx, k); !errors.Is(err, ErrInvalidKey) {
			t.Fatalf("Get %.20q: %v", k, err)
		}
		if _, err := db.Delete(ctx, k); !errors.Is(err, ErrInvalidKey) {
			t.Fatalf("Delete %.20q: %v", k, err)
		}
	}
	mustPut(t, db, strings.Repeat("x", 4096), nil)
	mustPut(t, db, "ключ/🔑", nil)
}

func TestInvalidOptions(t *testing.T) {
	k := newKeys(t)
	for name, o := range map[string]*Options{
		"nil":         nil,
		"no keys":     {},
		"k=0 m=300":   {Keys: k, DataShards: 1, ParityShards: 300},
		"m negative":  {Keys: k, ParityShards: -5},
		"compression": {Keys: k, Compression: 7},
		"min > max":   {Keys: k, MinSliceSize: 1 << 20, MaxSliceSize: 1 << 10},
		"concurrency": {Keys: k, Concurrency: -1},
		"k negative":  {Keys: k, DataShards: -1},
		"k+m = 256":   {Keys: k, DataShards: 256, ParityShards: NoParity},
		"min < 64":    {Keys: k, MinSliceSize: 63, AvgSliceSize: 128, MaxSliceSize: 256},
		"avg = min":   {Keys: k, MinSliceSize: 1 << 10, AvgSliceSize: 1 << 10},
		"max > 64MiB": {Keys: k, MaxSliceSize: 64<<20 + 1},
	} {
		if _, err := Open(t.TempDir(), o); !errors.Is(err, ErrInvalidOptions) {
			t.Errorf("%s: %v", name, err)
		}
	}
	dir := t.TempDir()
	db := openDB(t, dir, smallOpts(k))
	db.Close()
	o := smallOpts(k)
	o.AvgSliceSize = 8 << 10
	if _, err := Open(dir, o); !errors.Is(err, ErrInvalidOptions) {
		t.Fatalf("reopen with other slice sizes: %v", err)
	}
	db = openDB(t, dir, &Options{Keys: k, ParityShards: NoParity})
	b := randBytes(50 << 10)
	mustPut(t, db, "a", b)
	if !bytes.Equal(get(t, db, "a"), b) {
		t.Fatal("m=0 round trip")
	}
}

// TestHugeConcurrency: a Concurrency too large for a Put's worker pool and
// job channels is refused by Open, instead of being accepted and making the
// first Put that leaves its first block panic (makechan: size out of range)
// or run out of memory.
func TestHugeConcurrency(t *testing.T) {
	k := newKeys(t)
	for _, c := range []int{math.MaxInt, 1 << 40, maxConcurrency + 1} {
		db, err := Open(t.TempDir(), &Options{Keys: k, Concurrency: c})
		if errors.Is(err, ErrInvalidOptions) {
			continue
		}
		if err != nil {
			t.Fatalf("Concurrency %d: %v", c, err)
		}
		func() {
			defer db.Close()
			defer func() {
				if r := recover(); r != nil {
					t.Errorf("Concurrency %d accepted, then Put panicked: %v", c, r)
				}
			}()
			if c > 1<<40 {
				db.Put(ctx, "a", bytes.NewReader(randBytes(512<<10)))
			}
			t.Errorf("Concurrency %d accepted", c)
		}()
	}
	db := openDB(t, t.TempDir(), &Options{Keys: k, Concurrency: maxConcurrency})
	b := randBytes(512 << 10) // past the first block: the pipeline runs
	mustPut(t, db, "a", b)
	if !bytes.Equal(get(t, db, "a"), b) {
		t.Fatal("round trip")
	}
}

// failingReader reads r's first n bytes, then fails with err, or panics
// with panicking if it is set.
type failingReader struct {
	r         io.Reader
	n         int
	err       error
	panicking any
}

func (f *failingReader) Read(p []byte) (int, error) {
	if f.n <= 0 && f.panicking != nil {
		panic(f.panicking)
	}
	if f.n <= 0 {
		return 0, f.err
	}
	p = p[:min(len(p), f.n)]
	n, err := f.r.Read(p)
	f.n -= n
	return n, err
}

func TestFailedPutLeavesNothing(t *testing.T) {
	db := openDB(t, t.TempDir(), smallOpts(newKeys(t)))
	mustPut(t, db, "keep", randBytes(30<<10))
	before := db.Stats()
	errBoom := errors.New("boom")
	b := randBytes(6 << 20)
	for _, n := range []int{0, 1, 100 << 10, 5 << 20} {
		_, err := db.Put(ctx, "x", &failingReader{r: bytes.NewReader(b), n: n, err: errBoom})
		if !errors.Is(err, errBoom) {
			t.Fatalf("failing reader at %d: %v", n, err)
		}
		if _, err := db.Stat(ctx, "x"); !errors.Is(err, ErrNotFound) {
			t.Fatalf("failed put left data: %v", err)
		}
		if s := db.Stats(); s != before {
			t.Fatalf("failed put changed stats: %+v vs %+v", s, before)
		}
		checkInvariants(t, db)
	}
	cctx, cancel := context.WithCancel(ctx)
	pr, pw := io.Pipe()
	go func() {
		pw.Write(b[:3<<20])
		cancel()
		pw.Write(b[3<<20:])
		pw.Close()
	}()
	if _, err := db.Put(cctx, "x", pr); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled put: %v", err)
	}
	if s := db.Stats(); s != before {
		t.Fatalf("cancelled put changed stats: %+v", s)
	}
	checkInvariants(t, db)
}

// TestTruncatedReaderFails checks that a reader failing with
// io.ErrUnexpectedEOF, as a truncated HTTP body or gzip stream does, fails
// the Put instead of storing the ClearText cut short. (Found in review:
// io.ReadFull returns the reader's own io.ErrUnexpectedEOF as it reports a
// short read at the end, and the Put committed what it had read.)
func TestTruncatedReaderFails(t *testing.T) {
	db := openDB(t, t.TempDir(), smallOpts(newKeys(t)))
	b := randBytes(1 << 20)
	for _, n := range []int{0, 100 << 10, 600 << 10} { // in the first block, later ones
		_, err := db.Put(ctx, "x", &failingReader{r: bytes.NewReader(b), n: n, err: io.ErrUnexpectedEOF})
		if !errors.Is(err, io.ErrUnexpectedEOF) {
			t.Fatalf("reader truncated at %d: %v, want io.ErrUnexpectedEOF", n, err)
		}
		if _, err := db.Stat(ctx, "x"); !errors.Is(err, ErrNotFound) {
			t.Fatalf("reader truncated at %d: stored anyway (%v)", n, err)
		}
	}
	checkInvariants(t, db)
}

// badCountReader reads its n bytes, then returns count with a nil error
// on every call: (0, nil) forever, or a count io.Reader forbids.
type badCountReader struct {
	r     io.Reader
	n     int
	count int
}

func (b *badCountReader) Read(p []byte) (int, error) {
	if b.n <= 0 {
		return b.count, nil
	}
	m, err := b.r.Read(p[:min(len(p), b.n)])
	b.n -= m
	return m, err
}

// TestMisbehavingReaderFails checks that a Put whose reader keeps returning
// (0, nil) fails with io.ErrNoProgress instead of spinning forever, and that
// one returning a negative count or more than it was given fails with an
// error instead of a panic, in the first block and in a later one, storing
// nothing and handing back its buffers.
func TestMisbehavingReaderFails(t *testing.T) {
	db := openDB(t, t.TempDir(), smallOpts(newKeys(t)))
	b := randBytes(1 << 20)
	before := bufpool.Outstanding()
	for _, c := range []struct {
		count int
		want  error
	}{{0, io.ErrNoProgress}, {-1, errReaderCount}, {1 << 30, errReaderCount}} {
		for _, n := range []int{0, 100 << 10, 600 << 10} {
			_, err := db.Put(ctx, "x", &badCountReader{r: bytes.NewReader(b), n: n, count: c.count})
			if !errors.Is(err, c.want) {
				t.Fatalf("reader returning (%d, nil) after %d bytes: %v, want %v", c.count, n, err, c.want)
			}
			if _, err := db.Stat(ctx, "x"); !errors.Is(err, ErrNotFound) {
				t.Fatalf("reader returning (%d, nil) after %d bytes: stored anyway (%v)", c.count, n, err)
			}
		}
	}
	settled(t, before, "Puts whose reader misbehaved")
	checkInvariants(t, db)
	mustPut(t, db, "x", b)
}

// TestReaderPanic checks that a Put whose reader panics, in its first
// block (the caller's goroutine) or a later one (the Put's reader
// goroutine, where the panic would end the process), undoes the Put, hands
// back its buffers and raises the panic on the caller's goroutine.
func TestReaderPanic(t *testing.T) {
	db := openDB(t, t.TempDir(), smallOpts(newKeys(t)))
	b := randBytes(1 << 20)
	before := bufpool.Outstanding()
	for _, n := range []int{100 << 10, 600 << 10} {
		func() {
			defer func() {
				if v := recover(); v != "reader broke" {
					t.Fatalf("reader panicking at %d: recovered %v, want its panic", n, v)
				}
			}()
			db.Put(ctx, "x", &failingReader{r: bytes.NewReader(b), n: n, panicking: "reader broke"})
		}()
		if _, err := db.Stat(ctx, "x"); !errors.Is(err, ErrNotFound) {
			t.Fatalf("reader panicking at %d: stored anyway (%v)", n, err)
		}
	}
	settled(t, before, "Puts whose reader panicked")
	checkInvariants(t, db)
	mustPut(t, db, "x", b)
}

// TestReaderPanicAfterCancel checks that a reader's panic reaches the
// caller even when the Put's context was cancelled just before: the Put
// then failed for two reasons, and returning context.Canceled swallowed the
// panic. (Found in review.)
func TestReaderPanicAfterCancel(t *testing.T) {
	db := openDB(t, t.TempDir(), smallOpts(newKeys(t)))
	b := bytes.NewReader(randBytes(1 << 20))
	cctx, cancel := context.WithCancel(ctx)
	defer cancel()
	r := readerFunc(func(p []byte) (int, error) {
		if b.Len() < 600<<10 { // past the first block: the Put's reader goroutine
			cancel() // as a handler whose client went away, say
			panic("reader broke")
		}
		return b.Read(p)
	})
	defer func() {
		if v := recover(); v != "reader broke" {
			t.Fatalf("recovered %v, want the reader's panic", v)
		}
		checkInvariants(t, db)
	}()
	_, err := db.Put(cctx, "x", r)
	t.Fatalf("Put returned %v, want the reader's panic", err)
}

// TestReaderGoexit checks that a Put whose reader ends its goroutine with
// runtime.Goexit past the first block (as t.FailNow does) fails instead of
// hanging, and stores nothing.
func TestReaderGoexit(t *testing.T) {
	db := openDB(t, t.TempDir(), smallOpts(newKeys(t)))
	b := bytes.NewReader(randBytes(1 << 20))
	r := readerFunc(func(p []byte) (int, error) {
		if b.Len() < 600<<10 {
			runtime.Goexit()
		}
		return b.Read(p)
	})
	done := make(chan error, 1)
	go func() { _, err := db.Put(ctx, "x", r); done <- err }()
	select {
	case err := <-done:
		if !errors.Is(err, errReaderExited) {
			t.Fatalf("Put: %v, want errReaderExited", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("Put hung after its reader's goroutine exited")
	}
	if _, err := db.Stat(ctx, "x"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("stored anyway (%v)", err)
	}
	checkInvariants(t, db)
}

// readerFunc is an io.Reader made of a function.
type readerFunc func(p []byte) (int, error)

func (f readerFunc) Read(p []byte) (int, error) { return f(p) }

func TestClosed(t *testing.T) {
	db, err := Open(t.TempDir(), smallOpts(newKeys(t)))
	if err != nil {
		t.Fatal(err)
	}
	mustPut(t, db, "a", randBytes(10<<10))
	r, _ := db.Get(ctx, "a")
	closed, _ := db.Get(ctx, "a")
	closed.Close()
	calls := map[string]error{}
	_, calls["ReadAt of a closed Reader"] = closed.ReadAt(make([]byte, 1), 0)
	_, calls["Read of a closed Reader"] = closed.Read(make([]byte, 1))
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	_, calls["Put"] = db.Put(ctx, "b", bytes.NewReader(nil))
	_, calls["Get"] = db.Get(ctx, "a")
	_, calls["GetVersion"] = db.GetVersion(ctx, "a", 1)
	_, calls["Stat"] = db.Stat(ctx, "a")
	_, calls["Delete"] = db.Delete(ctx, "a")
	_, calls["PruneVersions"] = db.PruneVersions(ctx, "a", 0)
	_, calls["ReadAt"] = r.ReadAt(make([]byte, 1), 0)
	calls["Close"] = db.Close()
	for _, err := range db.List(ctx, "") {
		calls["List"] = err
	}
	for _, err := range db.Children(ctx, "a") {
		calls["Children"] = err
	}
	for name, err := range calls {
		if !errors.Is(err, ErrClosed) {
			t.Errorf("%s after Close: %v", name, err)
		}
	}
}

func TestLocked(t *testing.T) {
	dir := t.TempDir()
	openDB(t, dir, smallOpts(newKeys(t)))
	if _, err := Open(dir, smallOpts(newKeys(t))); !errors.Is(err, ErrLocked) {
		t.Fatalf("second open: %v", err)
	}
}

// getFailStore is a SliceStore whose Get fails while fail > 0, as a store
// that times out does.
type getFailStore struct {
	slicestore.Store
	fail atomic.Int32
}

func (s *getFailStore) Get(ctx context.Context, l slicestore.Location, n int) ([][]byte, error) {
	if s.fail.Add(-1) >= 0 {
		return nil, errors.New("transient")
	}
	return s.Store.Get(ctx, l, n)
}

// TestReaderRetriesFailedFetch checks that a Reader whose read failed on a
// transient error reads the same bytes once the store answers again,
// instead of returning the cached failure until it is evicted. (Found in
// review.)
func TestReaderRetriesFailedFetch(t *testing.T) {
	dir := t.TempDir()
	fs := &getFailStore{}
	db := openDB(t, dir, wrappedOpts(newKeys(t), func(s slicestore.Store) slicestore.Store { fs.Store = s; return fs }))
	data := randBytes(64 << 10)
	mustPut(t, db, "k", data)
	r, err := db.Get(ctx, "k")
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	fs.fail.Store(1 << 20)
	p := make([]byte, 100)
	if _, err := r.ReadAt(p, 0); err == nil || errors.Is(err, ErrCorrupt) {
		t.Fatalf("ReadAt while the store fails: %v, want its error", err)
	}
	fs.fail.Store(0)
	if _, err := r.ReadAt(p, 0); err != nil || !bytes.Equal(p, data[:100]) {
		t.Fatalf("ReadAt once the store answers again: %v", err)
	}
	got, err := io.ReadAll(r)
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("reading on: %v", err)
	}
}

// call runs f and returns its error, turning a panic into a test failure
// named what.
func call(t *testing.T, what string, f func() error) (err error) {
	t.Helper()
	defer func() {
		if v := recover(); v != nil {
			t.Errorf("%s panicked: %v", what, v)
			err = fmt.Errorf("panic: %v", v)
		}
	}()
	return f()
}

// TestNilReaderRefused checks that Put and Batch.Put given a nil io.Reader
// fail with ErrInvalidOptions, storing nothing and leaving the batch
// usable. (Found in review: both panicked, a nil pointer dereference in
// the reader's Read raised again on the caller's goroutine.)
func TestNilReaderRefused(t *testing.T) {
	db := openDB(t, t.TempDir(), smallOpts(newKeys(t)))
	before := db.Stats()
	if err := call(t, "Put", func() error { _, err := db.Put(ctx, "x", nil); return err }); !errors.Is(err, ErrInvalidOptions) {
		t.Fatalf("Put with a nil reader: %v, want ErrInvalidOptions", err)
	}
	b := db.NewBatch()
	defer b.Close()
	if err := call(t, "Batch.Put", func() error { return b.Put(ctx, "x", nil) }); !errors.Is(err, ErrInvalidOptions) {
		t.Fatalf("Batch.Put with a nil reader: %v, want ErrInvalidOptions", err)
	}
	if err := b.Commit(ctx); err != nil {
		t.Fatalf("Commit after the refused Put: %v", err)
	}
	if _, err := db.Stat(ctx, "x"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("stored anyway (%v)", err)
	}
	if s := db.Stats(); s != before {
		t.Fatalf("stats changed: %+v", s)
	}
	checkInvariants(t, db)
}

// TestNilPutOptionRefused checks that a nil PutOption fails Put and
// Batch.Put with ErrInvalidOptions instead of a panic (found in review),
// storing nothing.
func TestNilPutOptionRefused(t *testing.T) {
	db := openDB(t, t.TempDir(), smallOpts(newKeys(t)))
	mustPut(t, db, "p", randBytes(1<<10))
	if err := call(t, "Put", func() error {
		_, err := db.Put(ctx, "x", bytes.NewReader(randBytes(1<<10)), WithParent("p"), nil)
		return err
	}); !errors.Is(err, ErrInvalidOptions) {
		t.Fatalf("Put with a nil PutOption: %v, want ErrInvalidOptions", err)
	}
	b := db.NewBatch()
	defer b.Close()
	if err := call(t, "Batch.Put", func() error { return b.Put(ctx, "x", bytes.NewReader(nil), nil) }); !errors.Is(err, ErrInvalidOptions) {
		t.Fatalf("Batch.Put with a nil PutOption: %v, want ErrInvalidOptions", err)
	}
	if err := b.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Stat(ctx, "x"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("stored anyway (%v)", err)
	}
	checkInvariants(t, db)
}

// TestNilContextRefused checks that every call taking a context refuses a
// nil one with ErrInvalidOptions, and that Close still returns. (Found in
// review: each panicked; Get, GetVersion, Stat, Delete and PruneVersions
// with their call still counted, so Close waited for them forever.)
func TestNilContextRefused(t *testing.T) {
	db, err := Open(t.TempDir(), smallOpts(newKeys(t)))
	if err != nil {
		t.Fatal(err)
	}
	mustPut(t, db, "a", randBytes(1<<10))
	var nilCtx context.Context
	first := func(seq func(func(string, error) bool)) error {
		for _, err := range seq {
			return err
		}
		return nil
	}
	b := db.NewBatch()
	defer b.Close()
	if err := b.Put(ctx, "b", bytes.NewReader(nil)); err != nil {
		t.Fatal(err)
	}
	for name, f := range map[string]func() error{
		"Put":           func() error { _, err := db.Put(nilCtx, "x", bytes.NewReader(nil)); return err },
		"Get":           func() error { _, err := db.Get(nilCtx, "a"); return err },
		"GetVersion":    func() error { _, err := db.GetVersion(nilCtx, "a", 1); return err },
		"Stat":          func() error { _, err := db.Stat(nilCtx, "a"); return err },
		"Delete":        func() error { _, err := db.Delete(nilCtx, "a"); return err },
		"PruneVersions": func() error { _, err := db.PruneVersions(nilCtx, "a", 0); return err },
		"Scrub":         func() error { _, err := db.Scrub(nilCtx, ScrubOptions{}); return err },
		"List":          func() error { return first(db.List(nilCtx, "")) },
		"Children":      func() error { return first(db.Children(nilCtx, "a")) },
		"Batch.Put":     func() error { return b.Put(nilCtx, "x", bytes.NewReader(nil)) },
		"Batch.Commit":  func() error { return b.Commit(nilCtx) },
	} {
		if err := call(t, name, f); !errors.Is(err, ErrInvalidOptions) {
			t.Errorf("%s with a nil context: %v, want ErrInvalidOptions", name, err)
		}
	}
	if err := b.Commit(ctx); err != nil {
		t.Fatalf("Commit after the refused one: %v", err)
	}
	if _, err := db.Stat(ctx, "b"); err != nil {
		t.Fatalf("the batch's Put: %v", err)
	}
	closed := make(chan error, 1)
	go func() { closed <- db.Close() }()
	select {
	case err := <-closed:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Close hung: a call refused for its nil context is still counted")
	}
}

// TestListCancelled checks that List and Children with a context cancelled
// beforehand yield ctx.Err() and no key, over a range with keys and one
// without. (Found in review: List over an empty range ended as if it had
// run, with no error.)
func TestListCancelled(t *testing.T) {
	db := openDB(t, t.TempDir(), smallOpts(newKeys(t)))
	mustPut(t, db, "a", nil)
	mustPut(t, db, "a/1", nil, WithParent("a"))
	mustPut(t, db, "b", nil)
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	for name, seq := range map[string]func(func(string, error) bool){
		"List of every key":    db.List(cctx, ""),
		"List of no key":       db.List(cctx, "zzz"),
		"Children of a parent": db.Children(cctx, "a"),
		"Children of a leaf":   db.Children(cctx, "b"),
	} {
		var keys []string
		var errs []error
		for k, err := range seq {
			if err != nil {
				errs = append(errs, err)
			} else {
				keys = append(keys, k)
			}
		}
		if len(keys) > 0 || len(errs) != 1 || !errors.Is(errs[0], context.Canceled) {
			t.Errorf("%s with a cancelled context: keys %q, errors %v; want only context.Canceled", name, keys, errs)
		}
	}
}

// TestOpenEmptyDir checks that Open("") is refused with ErrInvalidOptions
// instead of creating a store in the working directory. (Found in review.)
func TestOpenEmptyDir(t *testing.T) {
	wd := t.TempDir()
	t.Chdir(wd)
	db, err := Open("", smallOpts(newKeys(t)))
	if err == nil {
		db.Close()
	}
	if !errors.Is(err, ErrInvalidOptions) {
		t.Errorf("Open(\"\"): %v, want ErrInvalidOptions", err)
	}
	if names, _ := filepath.Glob(filepath.Join(wd, "*")); len(names) > 0 {
		t.Fatalf("Open(\"\") created %q in the working directory", names)
	}
}

// writerFunc is an io.Writer made of a function.
type writerFunc func(p []byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }

// TestWriteToMisbehavingWriter checks that Reader.WriteTo refuses a nil
// writer, fails on a writer returning a short count without an error or a
// count io.Writer forbids, and hands back its slice's buffer when the
// writer panics. (Found in review: a nil writer panicked; (0, nil) spun
// forever; (-1, nil) walked the position back to -1 and blamed the store
// (ErrCorrupt); len+1 skipped bytes and returned nil; a panicking writer
// kept a buffer outside the Go heap for good.)
func TestWriteToMisbehavingWriter(t *testing.T) {
	db := openDB(t, t.TempDir(), &Options{Keys: newKeys(t), Compression: CompressionNone})
	data := randBytes(300 << 10)
	mustPut(t, db, "k", data)
	before := bufpool.Outstanding()
	for name, c := range map[string]struct {
		w    io.Writer
		want error
	}{
		"nil":        {nil, ErrInvalidOptions},
		"(0, nil)":   {writerFunc(func([]byte) (int, error) { return 0, nil }), io.ErrShortWrite},
		"(-1, nil)":  {writerFunc(func([]byte) (int, error) { return -1, nil }), errWriterCount},
		"(len+1, …)": {writerFunc(func(p []byte) (int, error) { return len(p) + 1, nil }), errWriterCount},
	} {
		r, err := db.Get(ctx, "k")
		if err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		go func() {
			defer func() {
				if v := recover(); v != nil {
					done <- fmt.Errorf("panic: %v", v)
				}
			}()
			_, err := r.WriteTo(c.w)
			done <- err
		}()
		select {
		case err := <-done:
			if !errors.Is(err, c.want) {
				t.Errorf("WriteTo a %s writer: %v, want %v", name, err, c.want)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("WriteTo a %s writer hung", name)
		}
		r.Close()
	}
	r, err := db.Get(ctx, "k")
	if err != nil {
		t.Fatal(err)
	}
	func() {
		defer func() {
			if v := recover(); v != "writer broke" {
				t.Fatalf("recovered %v, want the writer's panic", v)
			}
		}()
		r.WriteTo(writerFunc(func([]byte) (int, error) { panic("writer broke") }))
	}()
	r.Close()
	settled(t, before, "WriteTo whose writer panicked")
	r, err = db.Get(ctx, "k")
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	var buf bytes.Buffer
	if n, err := r.WriteTo(&buf); err != nil || n != int64(len(data)) || !bytes.Equal(buf.Bytes(), data) {
		t.Fatalf("WriteTo: %d, %v", n, err)
	}
}

// TestLocalSlicesMissing: a store whose config says its shards are in
// DIR/slices must not open with that directory gone, as a store whose
// every slice is missing: Open would make an empty slice keyspace, and a
// Put of content the store holds would deduplicate against lost shards.
func TestLocalSlicesMissing(t *testing.T) {
	keys := newKeys(t)
	dir := t.TempDir()
	b := randBytes(20 << 10)
	db := openDB(t, dir, smallOpts(keys))
	mustPut(t, db, "a", b)
	db.Close()
	if err := os.RemoveAll(filepath.Join(dir, "slices")); err != nil {
		t.Fatal(err)
	}
	if db, err := Open(dir, smallOpts(keys)); !errors.Is(err, ErrCorrupt) {
		if err == nil {
			db.Close()
		}
		t.Fatalf("Open of a store whose DIR/slices is gone: %v, want ErrCorrupt", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "slices")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("refused Open created DIR/slices (%v)", err)
	}
}
