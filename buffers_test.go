package kv

import (
	"bytes"
	"context"
	"errors"
	"io"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/cockroachdb/pebble/v2/vfs/errorfs"

	"github.com/sealkv/kv/internal/bufpool"
	"github.com/sealkv/kv/internal/record"
	"github.com/sealkv/kv/internal/slicestore"
)

// Buffers of 64 KiB and more come from bufpool, outside the Go heap: only
// bufpool.Put frees them, so every path must hand back what it takes. These
// tests count the buffers outstanding (bufpool.Outstanding), which works
// with and without the race detector (under it the buffers are heap memory
// and a leak would not show in RSS). Found in review: Reader.Close dropped
// its cached slices, a read that needed parity dropped one buffer, and a
// Put whose slice writer failed dropped its blocks and shards.

// settled waits until at most want large buffers are outstanding: fetches
// and cutters still running return theirs when they end.
func settled(t *testing.T, want int, what string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for bufpool.Outstanding() > want && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if n := bufpool.Outstanding(); n > want {
		t.Fatalf("%s: %d pooled buffers never returned", what, n-want)
	}
}

func TestReaderReturnsBuffers(t *testing.T) {
	db := openDB(t, t.TempDir(), &Options{Keys: newKeys(t), Compression: CompressionNone})
	data := randBytes(4 << 20) // ~18 slices of the default sizes, more than a Reader caches
	mustPut(t, db, "big", data)
	reads := []struct {
		name string
		read func(r *Reader) error
	}{
		{"read to the end", func(r *Reader) error {
			got, err := io.ReadAll(r)
			if err == nil && !bytes.Equal(got, data) {
				err = errors.New("wrong bytes")
			}
			return err
		}},
		{"one byte", func(r *Reader) error { _, err := io.ReadFull(r, make([]byte, 1)); return err }},
		{"one byte in the middle", func(r *Reader) error { _, err := r.ReadAt(make([]byte, 1), 2<<20); return err }},
		{"nothing", func(*Reader) error { return nil }},
	}
	before := bufpool.Outstanding()
	for _, rd := range reads {
		for range 10 {
			r, err := db.Get(ctx, "big")
			if err != nil {
				t.Fatal(err)
			}
			if err := rd.read(r); err != nil {
				t.Fatalf("%s: %v", rd.name, err)
			}
			if err := r.Close(); err != nil {
				t.Fatal(err)
			}
		}
		settled(t, before, "Get, "+rd.name+", Close")
	}
}

// TestUnclosedReaderReturnsBuffers drops Readers that read (and read ahead)
// without closing them: once collected they must hand back their buffers,
// which would otherwise stay mapped for the life of the process.
func TestUnclosedReaderReturnsBuffers(t *testing.T) {
	db := openDB(t, t.TempDir(), &Options{Keys: newKeys(t), Compression: CompressionNone})
	mustPut(t, db, "big", randBytes(4<<20))
	before := bufpool.Outstanding()
	for range 10 {
		r, err := db.Get(ctx, "big")
		if err != nil {
			t.Fatal(err)
		}
		if _, err := r.ReadAt(make([]byte, 1), 1<<20); err != nil {
			t.Fatal(err)
		}
	}
	deadline := time.Now().Add(10 * time.Second)
	for bufpool.Outstanding() > before && time.Now().Before(deadline) {
		runtime.GC() // finds the Readers; their cleanups run after it
		time.Sleep(5 * time.Millisecond)
	}
	settled(t, before, "Readers never closed, once collected")
}

// TestDamagedReadsReturnBuffers reads slices that need parity (a data shard
// missing) and slices that fail to open (a record whose key commitment is
// wrong): each read must hand back every buffer it took.
func TestDamagedReadsReturnBuffers(t *testing.T) {
	db := openDB(t, t.TempDir(), &Options{Keys: newKeys(t), Compression: CompressionNone, Logger: quietLogger})
	data := randBytes(2 << 20)
	mustPut(t, db, "degraded", data)
	mustPut(t, db, "unopenable", randBytes(1<<20))
	readAll := func(key string) error {
		r, err := db.Get(ctx, key)
		if err != nil {
			return err
		}
		defer r.Close()
		got, err := io.ReadAll(r)
		if err == nil && !bytes.Equal(got, data) {
			t.Fatalf("%s: wrong bytes", key)
		}
		return err
	}
	p := db.slices.(*slicestore.Pebble).DB()
	for id := range viewOf(t, db, "degraded").ids {
		rec, err := sliceRecord(db.meta, &id)
		if err != nil || rec == nil {
			t.Fatal(rec, err)
		}
		if err := p.Delete(slicestore.Location{Session: rec.Session, Ctr: rec.Ctr}.Key(0), pebble.Sync); err != nil {
			t.Fatal(err)
		}
	}
	for id := range viewOf(t, db, "unopenable").ids {
		rec, err := sliceRecord(db.meta, &id)
		if err != nil || rec == nil {
			t.Fatal(rec, err)
		}
		rec.Commit[0] ^= 1
		if err := db.meta.Set(record.SliceKey((*[64]byte)(&id)), rec.Encode(), pebble.Sync); err != nil {
			t.Fatal(err)
		}
	}
	before := bufpool.Outstanding()
	for range 10 {
		if err := readAll("degraded"); err != nil {
			t.Fatalf("a read with one data shard missing per slice: %v", err)
		}
		if err := readAll("unopenable"); !errors.Is(err, ErrCorrupt) {
			t.Fatalf("a read of slices whose key commitment is wrong: %v, want ErrCorrupt", err)
		}
	}
	settled(t, before, "reads needing parity, and reads failing to open")
}

// addFailStore is a SliceStore whose plain Writers (large Puts) fail their
// n-th Add, as a full disk or an object store outage would.
type addFailStore struct {
	slicestore.Store
	n int32
}

type addFailWriter struct {
	slicestore.Writer
	left atomic.Int32
}

var errInjectedAdd = errors.New("injected Add failure")

func (s *addFailStore) NewWriter() slicestore.Writer {
	w := &addFailWriter{Writer: s.Store.NewWriter()}
	w.left.Store(s.n)
	return w
}

func (w *addFailWriter) Add(ctx context.Context, l slicestore.Location, id *[64]byte, shards [][]byte) (int, error) {
	if w.left.Add(-1) == 0 {
		return 0, errInjectedAdd
	}
	return w.Writer.Add(ctx, l, id, shards)
}

func TestFailedPutReturnsBuffers(t *testing.T) {
	dir := t.TempDir()
	keys := newKeys(t)
	o := wrappedOpts(keys, func(s slicestore.Store) slicestore.Store { return &addFailStore{Store: s, n: 4} })
	o.MinSliceSize, o.AvgSliceSize, o.MaxSliceSize = 0, 0, 0 // the defaults: blocks and shards from bufpool
	db := openDB(t, dir, o)
	data := randBytes(32 << 20)
	before := bufpool.Outstanding()
	for i := range 5 {
		data[0] = byte(i)
		if _, err := db.Put(ctx, "k", bytes.NewReader(data)); !errors.Is(err, errInjectedAdd) {
			t.Fatalf("Put: %v, want the injected error", err)
		}
	}
	settled(t, before, "Puts whose slice writer failed")
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	checkInvariants(t, openDB(t, dir, &Options{Keys: keys}))
}

// cancelOnRead cancels its context on the first Read, then serves r: the
// Put's first block is read in full, and ctx is done when it is cut.
type cancelOnRead struct {
	r      io.Reader
	cancel context.CancelFunc
}

func (c *cancelOnRead) Read(p []byte) (int, error) {
	c.cancel()
	return c.r.Read(p)
}

// TestCancelledPutReturnsBuffers cancels small Puts while their only block
// is read: the Put fails with the cancellation and hands its block back.
// (Found in review: the inline cutter, finding ctx done before it took the
// block, left it in its channel, never released.)
func TestCancelledPutReturnsBuffers(t *testing.T) {
	db := openDB(t, t.TempDir(), smallOpts(newKeys(t)))
	before := bufpool.Outstanding()
	for range 20 { // cut picks the block or ctx.Done at random
		cctx, cancel := context.WithCancel(ctx)
		_, err := db.Put(cctx, "k", &cancelOnRead{r: bytes.NewReader(randBytes(10 << 10)), cancel: cancel})
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("Put: %v, want context.Canceled", err)
		}
	}
	settled(t, before, "cancelled small Puts")
	checkInvariants(t, db)
}

// TestReadOddShardsReturnsBuffers reads a slice whose SealedSize is a
// power of two with k = 3 data shards: the k shard payloads hold k-1 bytes
// of padding past SealedSize, more than the buffer sized for SealedSize
// holds. (Found in review: DecodeInto grew the SealedSlice into a new heap
// buffer and the pooled one was never returned, one per read.)
func TestReadOddShardsReturnsBuffers(t *testing.T) {
	db := openDB(t, t.TempDir(), &Options{Keys: newKeys(t), Compression: CompressionNone, DataShards: 3})
	data := randBytes(bufpool.LargeSize - 16) // sealed: + the GCM tag = 64 KiB
	mustPut(t, db, "k", data)
	before := bufpool.Outstanding()
	for range 10 {
		if got := get(t, db, "k"); !bytes.Equal(got, data) {
			t.Fatal("wrong bytes")
		}
	}
	settled(t, before, "reads of a slice with padded shards")
}

// TestWrongSliceSizeReturnsBuffer reads a slice whose manifest gives it
// one byte less than it has (a damaged or forged chunk record): the read
// fails with ErrCorrupt and the fetched ClearText must still go back.
// (Found in review: the fetch dropped it, one buffer per read.)
func TestWrongSliceSizeReturnsBuffer(t *testing.T) {
	db := openDB(t, t.TempDir(), &Options{Keys: newKeys(t), Compression: CompressionNone})
	mustPut(t, db, "k", randBytes(1<<20))
	d, err := getData(db.meta, "k")
	if err != nil {
		t.Fatal(err)
	}
	first := record.ChunkKey(d.Versions[0].Manifest, 0)
	v, closer, err := db.meta.Get(first)
	if err != nil {
		t.Fatal(err)
	}
	refs, err := record.DecodeChunk(v)
	closer.Close()
	if err != nil {
		t.Fatal(err)
	}
	refs[0].Size--
	if err := db.meta.Set(first, record.EncodeChunk(refs), pebble.Sync); err != nil {
		t.Fatal(err)
	}
	before := bufpool.Outstanding()
	for range 10 {
		r, err := db.Get(ctx, "k")
		if err != nil {
			t.Fatal(err)
		}
		if _, err := r.ReadAt(make([]byte, 1), 0); !errors.Is(err, ErrCorrupt) {
			t.Fatalf("ReadAt of a slice longer than its manifest says: %v, want ErrCorrupt", err)
		}
		r.Close()
	}
	settled(t, before, "reads of a slice of the wrong size")
}

// cancelOnSliceRead fails the first read of a slice keyspace sstable once
// armed, as a damaged block does, and cancels the reading context then.
type cancelOnSliceRead struct {
	armed  atomic.Bool
	cancel context.CancelFunc
}

func (c *cancelOnSliceRead) String() string { return "cancelOnSliceRead" }

func (c *cancelOnSliceRead) MaybeError(op errorfs.Op) error {
	if op.Kind != errorfs.OpFileReadAt || !inDir(op, "slices", ".sst") || !c.armed.CompareAndSwap(true, false) {
		return nil
	}
	c.cancel()
	return errorfs.ErrInjected
}

// TestCancelledDamagedReadReturnsBuffers cancels a read while the slice
// store reads shard by shard around a block it could not read: the shards
// it did read must go back. (Found in review: the store returned them with
// the cancellation, and the read dropped them.)
func TestCancelledDamagedReadReturnsBuffers(t *testing.T) {
	cctx, cancel := context.WithCancel(ctx)
	in := &cancelOnSliceRead{cancel: cancel}
	// 2 data shards: shards of ~115 KiB, from bufpool outside the heap.
	db := openDB(t, "/db", &Options{Keys: newKeys(t), Compression: CompressionNone, DataShards: 2, ParityShards: 1,
		Logger: quietLogger, fs: errorfs.Wrap(vfs.NewMem(), in)})
	before := bufpool.Outstanding()
	mustPut(t, db, "k", randBytes(6<<20)) // ingested as an sstable
	r, err := db.Get(cctx, "k")
	if err != nil {
		t.Fatal(err)
	}
	in.armed.Store(true)
	_, _ = r.ReadAt(make([]byte, 1), 0) // fails, unless its slice was read before the cancel
	r.Close()
	db.Close() // waits for the fetches reading ahead
	if in.armed.Load() {
		t.Fatal("no sstable read failed")
	}
	settled(t, before, "a cancelled read around a damaged block")
}
