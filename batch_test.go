package kv

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"

	"github.com/sealkv/kv/internal/record"
	"github.com/sealkv/kv/internal/slicestore"
)

// TestBatch puts many keys concurrently in one Batch, some sharing slices,
// one twice, one the parent of others: nothing is visible before Commit,
// everything after it, and the stats and invariants hold.
func TestBatch(t *testing.T) {
	dir := t.TempDir()
	keys := newKeys(t)
	db := openDB(t, dir, smallOpts(keys))
	mustPut(t, db, "old", randBytes(20<<10))
	before := db.Stats()
	shared := randBytes(64 << 10)
	contents := map[string][]byte{}
	for i := range 40 {
		c := randBytes(i * 700) // 0 to 27 KiB: empty, one slice, several
		if i%4 == 0 {
			c = append(bytes.Clone(shared), c...)
		}
		contents[fmt.Sprintf("dir/f%02d", i)] = c
	}
	b := db.NewBatch()
	if err := b.Put(ctx, "dir", bytes.NewReader([]byte("listing"))); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for k, c := range contents {
		wg.Go(func() {
			if err := b.Put(ctx, k, bytes.NewReader(c), WithParent("dir")); err != nil {
				t.Errorf("Put %q: %v", k, err)
			}
		})
	}
	wg.Wait()
	v2 := randBytes(10 << 10)
	if err := b.Put(ctx, "dir/f01", bytes.NewReader(v2), WithParent("dir")); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Stat(ctx, "dir/f03"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("visible before Commit: %v", err)
	}
	if s := db.Stats(); s != before {
		t.Fatalf("stats changed before Commit: %+v, was %+v", s, before)
	}
	if err := b.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	for k, c := range contents {
		if k == "dir/f01" {
			d, err := db.Stat(ctx, k)
			if err != nil || len(d.Versions) != 1 {
				t.Fatalf("%q: want 2 versions: %+v, %v", k, d, err)
			}
			c = v2
		}
		if got := get(t, db, k); !bytes.Equal(got, c) {
			t.Fatalf("%q: read %d bytes, put %d", k, len(got), len(c))
		}
	}
	n := 0
	for _, err := range db.Children(ctx, "dir") {
		if err != nil {
			t.Fatal(err)
		}
		n++
	}
	if n != len(contents) {
		t.Fatalf("dir has %d children, want %d", n, len(contents))
	}
	if s := db.Stats(); s.Data != before.Data+1+int64(len(contents)) || s.Versions != before.Versions+2+int64(len(contents)) {
		t.Fatalf("stats after Commit: %+v, before %+v", s, before)
	}
	checkInvariants(t, db)
	if err := b.Put(ctx, "late", bytes.NewReader(nil)); !errors.Is(err, ErrBatchDone) {
		t.Fatalf("Put after Commit: %v", err)
	}
	if err := b.Commit(ctx); !errors.Is(err, ErrBatchDone) {
		t.Fatalf("second Commit: %v", err)
	}
	if err := b.Close(); err != nil {
		t.Fatalf("Close after Commit: %v", err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	db = openDB(t, dir, smallOpts(keys))
	checkInvariants(t, db)
	if got := get(t, db, "dir/f04"); !bytes.Equal(got, contents["dir/f04"]) {
		t.Fatal("dir/f04 differs after reopening")
	}
}

// TestBatchDiscard checks that a batch closed, left open at DB.Close, or
// whose Commit fails leaves nothing behind, not even shards.
func TestBatchDiscard(t *testing.T) {
	dir := t.TempDir()
	keys := newKeys(t)
	db := openDB(t, dir, smallOpts(keys))
	kept := randBytes(40 << 10)
	mustPut(t, db, "kept", kept)
	mustPut(t, db, "parent", []byte("p"))
	before := db.Stats()
	fill := func(b *Batch) {
		t.Helper()
		for i := range 5 {
			c := randBytes(30 << 10)
			if i == 0 {
				c = append(bytes.Clone(kept), c...) // shares kept's slices
			}
			if err := b.Put(ctx, fmt.Sprintf("x%d", i), bytes.NewReader(c), WithParent("parent")); err != nil {
				t.Fatal(err)
			}
		}
	}
	unchanged := func(what string) {
		t.Helper()
		if _, err := db.Stat(ctx, "x0"); !errors.Is(err, ErrNotFound) {
			t.Fatalf("%s: x0 exists: %v", what, err)
		}
		if s := db.Stats(); s != before {
			t.Fatalf("%s: stats %+v, was %+v", what, s, before)
		}
		checkInvariants(t, db) // also: no shard without a record
	}

	b := db.NewBatch()
	fill(b)
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	unchanged("Close")
	if err := b.Put(ctx, "y", bytes.NewReader(nil)); !errors.Is(err, ErrBatchDone) {
		t.Fatalf("Put after Close: %v", err)
	}

	// A failing Put leaves the batch's other Puts alone.
	b = db.NewBatch()
	errBoom := errors.New("boom")
	if err := b.Put(ctx, "y", &failingReader{r: bytes.NewReader(randBytes(50 << 10)), n: 20 << 10, err: errBoom}); !errors.Is(err, errBoom) {
		t.Fatalf("failing Put: %v", err)
	}
	if err := b.Put(ctx, "y", bytes.NewReader(nil), WithParent("missing")); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Put with a missing parent: %v", err)
	}
	fill(b)
	// The parent goes before Commit: the whole batch fails.
	if _, err := db.Delete(ctx, "parent"); err != nil {
		t.Fatal(err)
	}
	if err := b.Commit(ctx); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Commit without parent: %v", err)
	}
	mustPut(t, db, "parent", []byte("p"))
	before = db.Stats()
	unchanged("failed Commit")

	b = db.NewBatch()
	fill(b)
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if err := b.Commit(cctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("Commit with a cancelled context: %v", err)
	}
	unchanged("cancelled Commit")

	b = db.NewBatch()
	fill(b)
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	if err := b.Close(); err != nil {
		t.Fatalf("Batch.Close after DB.Close: %v", err)
	}
	if err := b.Put(ctx, "y", bytes.NewReader(nil)); !errors.Is(err, ErrClosed) {
		t.Fatalf("Put after DB.Close: %v", err)
	}
	db = openDB(t, dir, smallOpts(keys))
	unchanged("DB.Close")
	if got := get(t, db, "kept"); !bytes.Equal(got, kept) {
		t.Fatal("kept differs")
	}
}

// TestBatchFailedPutParent checks that a Batch.Put that failed does not
// spare later Puts the check of their parent: with the parent deleted
// since, the later Put must fail with ErrNotFound and the batch's other
// Puts commit. (The failed Put's parent was taken as found, the later Put
// was accepted and the whole Commit failed with ErrNotFound.)
func TestBatchFailedPutParent(t *testing.T) {
	db := openDB(t, t.TempDir(), smallOpts(newKeys(t)))
	mustPut(t, db, "p", nil)
	b := db.NewBatch()
	defer b.Close()
	errBoom := errors.New("boom")
	if err := b.Put(ctx, "c1", &failingReader{r: bytes.NewReader(nil), err: errBoom}, WithParent("p")); !errors.Is(err, errBoom) {
		t.Fatalf("failing Put: %v", err)
	}
	if _, err := db.Delete(ctx, "p"); err != nil {
		t.Fatal(err)
	}
	if err := b.Put(ctx, "c2", bytes.NewReader(nil), WithParent("p")); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Put under a deleted parent: %v, want ErrNotFound", err)
	}
	if err := b.Put(ctx, "x", bytes.NewReader([]byte("x"))); err != nil {
		t.Fatal(err)
	}
	if err := b.Commit(ctx); err != nil {
		t.Fatalf("Commit: %v", err)
	}
	if !bytes.Equal(get(t, db, "x"), []byte("x")) {
		t.Fatal("x differs")
	}
	checkInvariants(t, db)
}

// TestBatchSpill puts more small ClearTexts in one Batch than its group
// holds in memory (32 MiB of shards), so the rest go through the
// write-ahead log, and a large one that writes its own shards: all of them
// are there after Commit and after reopening.
func TestBatchSpill(t *testing.T) {
	dir := t.TempDir()
	keys := newKeys(t)
	db := openDB(t, dir, smallOpts(keys))
	contents := map[string][]byte{"large": randBytes(3 << 20)}
	for i := range 140 {
		contents[fmt.Sprintf("small%03d", i)] = randBytes(250 << 10)
	}
	b := db.NewBatch()
	sem := make(chan struct{}, 8)
	var wg sync.WaitGroup
	for k, c := range contents {
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			if err := b.Put(ctx, k, bytes.NewReader(c)); err != nil {
				t.Errorf("Put %q: %v", k, err)
			}
		})
	}
	wg.Wait()
	if err := b.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	checkInvariants(t, db)
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	db = openDB(t, dir, smallOpts(keys))
	checkInvariants(t, db)
	for k, c := range contents {
		if got := get(t, db, k); !bytes.Equal(got, c) {
			t.Fatalf("%q differs after reopening", k)
		}
	}
}

// stallReader serves data but blocks at gate until open is closed.
type stallReader struct {
	data      []byte
	off, gate int
	open      chan struct{}
}

func (g *stallReader) Read(p []byte) (int, error) {
	if g.off == g.gate {
		<-g.open
	}
	if g.off >= len(g.data) {
		return 0, io.EOF
	}
	end := len(g.data)
	if g.off < g.gate {
		end = g.gate
	}
	n := copy(p, g.data[g.off:end])
	g.off += n
	return n, nil
}

// publishMeanwhile sets the scene of TestPublishAfterUnpin: it starts Put X
// of x, which stalls at gate, waits until X's first manifest chunk
// references slice s (which releases X's pin) and commits a Batch W of s,
// which publishes s while X has it unpublished. close(g.open) lets X go on;
// xdone gives its result.
func publishMeanwhile(t *testing.T, db *DB, x, s []byte, gate int) (g *stallReader, xdone chan error) {
	t.Helper()
	id := db.sliceID(s)
	w := db.NewBatch()
	if err := w.Put(ctx, "w", bytes.NewReader(s)); err != nil {
		t.Fatal(err)
	}
	g = &stallReader{data: x, gate: gate, open: make(chan struct{})}
	xdone = make(chan error, 1)
	go func() { _, err := db.Put(ctx, "x", g); xdone <- err }()
	for found := false; !found; time.Sleep(time.Millisecond) {
		_ = db.eachKey(record.RefPrefix((*[64]byte)(&id)), func(k, v []byte) error { found = true; return nil })
	}
	if err := w.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	return g, xdone
}

// TestPublishAfterUnpin checks that a Put publishing a slice it no longer
// pins (a full manifest chunk releases its pins first) looks for a record
// published meanwhile instead of overwriting it: W (a batch) publishes
// slice S while X, a large Put, still has S unpublished; Z then pins S
// anew. (Found in review: the published flag lives on the pin, which X had
// released, and X overwrote W's record, leaving W's shards without one.)
func TestPublishAfterUnpin(t *testing.T) {
	db := openDB(t, t.TempDir(), smallOpts(newKeys(t)))
	x := randBytes(8 << 20)
	var s0, s1 int
	for pos, i := 0, 0; ; i++ {
		n := db.chunker.Cut(x[pos:], true)
		if i == chunkRefs-1 { // the last slice of X's first manifest chunk
			s0, s1 = pos, pos+n
			break
		}
		pos += n
	}
	s := bytes.Clone(x[s0:s1])
	g, xdone := publishMeanwhile(t, db, x, s, s1+6*db.chunker.Params().Max)
	z := db.NewBatch()
	if err := z.Put(ctx, "z", bytes.NewReader(s)); err != nil {
		t.Fatal(err)
	}
	close(g.open)
	if err := <-xdone; err != nil {
		t.Fatal(err)
	}
	if err := z.Close(); err != nil {
		t.Fatal(err)
	}
	checkInvariants(t, db)
}

// failingDeletes is a SliceStore whose next fail Deletes fail.
type failingDeletes struct {
	slicestore.Store
	fail atomic.Int32
}

func (f *failingDeletes) Delete(ctx context.Context, locs []slicestore.Location) error {
	if f.fail.Add(-1) >= 0 {
		return errors.New("transient")
	}
	return f.Store.Delete(ctx, locs)
}

// openFailingDeletes opens a new store whose slice store fails as many
// Deletes as fd.fail says.
func openFailingDeletes(t *testing.T) (db *DB, dir string, keys *Keys, fd *failingDeletes) {
	dir, keys, fd = t.TempDir(), newKeys(t), &failingDeletes{}
	db = openDB(t, dir, wrappedOpts(keys, func(s slicestore.Store) slicestore.Store {
		fd.Store = s
		return fd
	}))
	return db, dir, keys, fd
}

// wrappedOpts are smallOpts with a quiet logger whose slice keyspace, the
// default one in DIR/slices, is what wrap makes of it.
func wrappedOpts(keys *Keys, wrap func(slicestore.Store) slicestore.Store) *Options {
	o := smallOpts(keys)
	o.wrapSlices, o.Logger = wrap, quietLogger
	return o
}

// externalOpts are smallOpts with a quiet logger and a SliceStore of their
// own: a Pebble slice keyspace in dir.
func externalOpts(t *testing.T, dir string, keys *Keys) *Options {
	t.Helper()
	s, err := slicestore.Open(dir, vfs.Default, pebbleLogger{l: quietLogger}, false)
	if err != nil {
		t.Fatal(err)
	}
	o := smallOpts(keys)
	o.SliceStore, o.Logger = s, quietLogger
	return o
}

// TestCommitKeepsCommitted checks that a Commit whose records are committed
// succeeds even if removing the shards of a slice two of its Puts sealed
// fails: the intent committed with the records lets the next Open remove
// them. (Found in review: Commit returned the error and its discard then
// removed shards that committed records point to.)
func TestCommitKeepsCommitted(t *testing.T) {
	db, dir, keys, fd := openFailingDeletes(t)
	c := randBytes(50 << 10)
	b := db.NewBatch()
	for _, k := range []string{"a", "b"} { // the same new slices, sealed twice
		if err := b.Put(ctx, k, bytes.NewReader(c)); err != nil {
			t.Fatal(err)
		}
	}
	fd.fail.Store(1)
	if err := b.Commit(ctx); err != nil {
		t.Fatalf("Commit: %v", err)
	}
	if fd.fail.Load() > 0 {
		t.Fatal("no Delete was attempted: the test does not test what it says")
	}
	for _, k := range []string{"a", "b"} {
		if got := get(t, db, k); !bytes.Equal(got, c) {
			t.Fatalf("%q differs", k)
		}
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	db = openDB(t, dir, smallOpts(keys))
	checkInvariants(t, db)
	for _, k := range []string{"a", "b"} {
		if got := get(t, db, k); !bytes.Equal(got, c) {
			t.Fatalf("%q differs after reopening", k)
		}
	}
}

// TestPublishKeepsCommitted is TestCommitKeepsCommitted for the records a
// large Put publishes while it runs: when removing the old shards of a
// slice it replaced fails after those records committed, the Put must not
// count the slices as its own to remove. (Found in review: its abort then
// deleted the shards of the new record, and "z", committed before and never
// touched, was left with none: I1 broken.)
func TestPublishKeepsCommitted(t *testing.T) {
	db, dir, keys, fd := openFailingDeletes(t)
	x := randBytes(120 << 20) // > 64 MiB of shards: its first sstable is ingested and published mid-Put
	first := bytes.Clone(x[:db.chunker.Cut(x, true)])
	mustPut(t, db, "z", first)
	// A read or Scrub found z's slice bad: the next Put of it seals it anew
	// and publishing the new record removes the old shards.
	id := db.sliceID(first)
	rec, err := sliceRecord(db.meta, &id)
	if err != nil || rec == nil {
		t.Fatal(rec, err)
	}
	db.markBad(&id, rec)
	fd.fail.Store(1)
	_, err = db.Put(ctx, "x", bytes.NewReader(x))
	if fd.fail.Load() > 0 {
		t.Fatal("no removal of shards was attempted: the test does not test what it says")
	}
	t.Logf("Put x: %v", err) // either outcome is fine; z must stay readable
	if got := get(t, db, "z"); !bytes.Equal(got, first) {
		t.Fatal("z differs")
	}
	closeAndCheck(t, db, dir, keys)
}

// closeAndCheck closes db and checks the invariants of its store reopened.
func closeAndCheck(t *testing.T, db *DB, dir string, keys *Keys) {
	t.Helper()
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	checkInvariants(t, openDB(t, dir, smallOpts(keys)))
}

// failAfter is a reader that fails after n bytes.
type failAfter struct {
	r io.Reader
	n int
}

func (f *failAfter) Read(p []byte) (int, error) {
	if f.n <= 0 {
		return 0, errors.New("input failed")
	}
	p = p[:min(len(p), f.n)]
	n, err := f.r.Read(p)
	f.n -= n
	return n, err
}

// TestRecoveryWhileDeletesFail opens a store whose session left a Put
// unfinished while the slice store cannot delete (an object store with a
// domain down): Open must succeed, and a later Open finish the cleanup.
// (Found in review: Open failed until every domain was back.)
func TestRecoveryWhileDeletesFail(t *testing.T) {
	dir := t.TempDir()
	keys := newKeys(t)
	deletesFail := func(fd *failingDeletes) func(slicestore.Store) slicestore.Store {
		return func(s slicestore.Store) slicestore.Store {
			fd.Store = s
			fd.fail.Store(1 << 30)
			return fd
		}
	}
	db, err := Open(dir, wrappedOpts(keys, deletesFail(&failingDeletes{})))
	if err != nil {
		t.Fatal(err)
	}
	keep := randBytes(100 << 10)
	mustPut(t, db, "keep", keep)
	// A large Put whose input fails after 80 MiB: its ingested slices are
	// published, and its rollback cannot remove them.
	if _, err := db.Put(ctx, "a", &failAfter{r: bytes.NewReader(randBytes(100 << 20)), n: 80 << 20}); err == nil {
		t.Fatal("Put succeeded")
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	db, err = Open(dir, wrappedOpts(keys, deletesFail(&failingDeletes{})))
	if err != nil {
		t.Fatalf("Open while the slice store cannot delete: %v", err)
	}
	if got := get(t, db, "keep"); !bytes.Equal(got, keep) {
		t.Fatal("keep differs")
	}
	closeAndCheck(t, db, dir, keys)
}

// closeCount counts the Closes of a SliceStore.
type closeCount struct {
	slicestore.Store
	closes atomic.Int32
}

func (c *closeCount) Close() error { c.closes.Add(1); return c.Store.Close() }

// TestOpenFailureKeepsSliceStore checks who closes a SliceStore given in
// Options: the DB Open returns, at Close; after a failed Open, nobody, so
// the caller may retry with it. (Found in review: a failed Open closed it
// on ErrWrongKeys but not on ErrLocked.)
func TestOpenFailureKeepsSliceStore(t *testing.T) {
	dir := t.TempDir()
	keys := newKeys(t)
	held := openDB(t, dir, externalOpts(t, t.TempDir(), keys))
	o := externalOpts(t, t.TempDir(), keys)
	cc := &closeCount{Store: o.SliceStore}
	o.SliceStore = cc
	if _, err := Open(dir, o); !errors.Is(err, ErrLocked) {
		t.Fatalf("Open of a store in use: %v, want ErrLocked", err)
	}
	held.Close()
	wrong := *o
	wrong.Keys = newKeys(t)
	if _, err := Open(dir, &wrong); !errors.Is(err, ErrWrongKeys) {
		t.Fatalf("Open with other keys: %v, want ErrWrongKeys", err)
	}
	if n := cc.closes.Load(); n != 0 {
		t.Fatalf("failed Opens closed the caller's SliceStore %d times", n)
	}
	db, err := Open(dir, o) // the same SliceStore, still usable
	if err != nil {
		t.Fatal(err)
	}
	mustPut(t, db, "k", randBytes(10<<10))
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	if n := cc.closes.Load(); n != 1 {
		t.Fatalf("Close closed the SliceStore %d times, want 1", n)
	}
}

// TestDeleteWhileDeletesFail checks that a Delete and a PruneVersions whose
// meta batch committed succeed even when removing the shards fails (an
// object store with a domain down): the Data is gone or pruned, durably,
// and the next Open removes the shards from the intent committed with it.
// (Found in review: they returned the error, and a caller's retry got
// ErrNotFound.)
func TestDeleteWhileDeletesFail(t *testing.T) {
	db, dir, keys, fd := openFailingDeletes(t)
	mustPut(t, db, "a", randBytes(64<<10))
	mustPut(t, db, "v", randBytes(64<<10))
	mustPut(t, db, "v", randBytes(64<<10))
	fd.fail.Store(1 << 30)
	if rep, err := db.Delete(ctx, "a"); err != nil || len(rep.Deleted) == 0 {
		t.Fatalf("Delete: %v, %v", rep, err)
	}
	if rep, err := db.PruneVersions(ctx, "v", 0); err != nil || len(rep.Deleted) == 0 {
		t.Fatalf("PruneVersions: %v, %v", rep, err)
	}
	if _, err := db.Stat(ctx, "a"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Stat of the deleted key: %v", err)
	}
	fd.fail.Store(0)
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	db = openDB(t, dir, smallOpts(keys))
	checkInvariants(t, db)
	if d, err := db.Stat(ctx, "v"); err != nil || len(d.Versions) != 0 || d.Content.Version != 2 {
		t.Fatalf("Stat of the pruned key: %v, %v", d, err)
	}
}

// TestPublishAfterRepin is TestPublishAfterUnpin where X pins S again
// before publishing it: S appears a second time in X, after its first
// manifest chunk, so a later slice of X finds W's record and pins S anew.
// X then still holds a pin, but not since it found no record, and must
// look before publishing. (Without the look, X overwrote W's record: W's
// shards were left without one and the slice counted twice.)
func TestPublishAfterRepin(t *testing.T) {
	db := openDB(t, t.TempDir(), smallOpts(newKeys(t)))
	// Fewer than 2 manifest chunks: X holds its second pin of S until it
	// commits. S is x[s0:s1]; c, a cut past the gate, is where S comes again.
	x := randBytes(6 << 20)
	var s0, s1, c int
	gate := 0
	for pos, i := 0, 0; ; i++ {
		n := db.chunker.Cut(x[pos:], true)
		if i == chunkRefs-1 { // the last slice of X's first manifest chunk
			s0, s1 = pos, pos+n
			gate = s1 + 6*db.chunker.Params().Max
		}
		pos += n
		if gate > 0 && pos > gate+db.chunker.Params().Max {
			c = pos
			break
		}
	}
	s := bytes.Clone(x[s0:s1])
	x = append(append(append([]byte(nil), x[:c]...), s...), x[c:]...)
	g, xdone := publishMeanwhile(t, db, x, s, gate)
	close(g.open)
	if err := <-xdone; err != nil {
		t.Fatal(err)
	}
	if got := get(t, db, "x"); !bytes.Equal(got, x) {
		t.Fatal("x differs")
	}
	checkInvariants(t, db)
}
