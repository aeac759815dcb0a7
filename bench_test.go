package kv

// Benchmarks of the write and read paths and of their building blocks.
//
//	go test -run '^$' -bench . -benchtime 3x                      # all, 64 MiB sizes
//	SEALKV_BENCH_LARGE=1 go test -run '^$' -bench 'BenchmarkPut/1GiB' -benchtime 1x -timeout 30m
//	go test -run '^$' -bench 'BenchmarkPut/64MiB/zstd' -benchtime 3x -cpuprofile cpu.out && go tool pprof -top cpu.out
//
// Custom metrics (b.ReportMetric):
//
//	slice-WA      bytes the slice keyspace's Pebble wrote to disk (WAL +
//	              flushes + compactions + ingested sstables, blob files
//	              included) divided by the bytes of shards the Puts added
//	              (growth of Stats().StoredBytes). 1.0 is ideal.
//	meta-B/op     bytes the meta keyspace's Pebble wrote to disk per Put.
//	stored/orig   shard bytes (parity and checksums included) per ClearText byte.
//	objects/s     Puts per second (small objects).
//
// The write-amplification figures are taken after a final Flush of the
// memtables and once compactions have settled, outside the timed region, so
// bytes still in a memtable at the end of the loop are not missed.
//
// Only exported functions of the internal packages and the DB's meta and
// slices fields are used here, so that tuning of put.go, slice.go and seal.go
// does not break the benchmarks' build.

import (
	"bytes"
	"context"
	crand "crypto/rand"
	"fmt"
	"io"
	"log/slog"
	mrand "math/rand/v2"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cloudflare/circl/kem/mlkem/mlkem1024"
	"github.com/cockroachdb/pebble/v2"
	"github.com/zeebo/blake3"

	"github.com/sealkv/kv/internal/bufpool"
	"github.com/sealkv/kv/internal/erasure"
	"github.com/sealkv/kv/internal/seal"
)

const (
	benchSliceSize = 256 << 10
	benchMiB       = 1 << 20
)

// benchRandom returns n pseudo-random (incompressible) bytes derived from
// seed; distinct seeds give content that shares no slice.
func benchRandom(seed uint64, n int) []byte {
	var s [32]byte
	for i := range 8 {
		s[i] = byte(seed >> (8 * i))
	}
	s[31] = 0x5e
	b := make([]byte, n)
	mrand.NewChaCha8(s).Read(b)
	return b
}

func benchOpen(b *testing.B, o *Options) *DB {
	b.Helper()
	if o == nil {
		o = &Options{}
	}
	if o.Keys == nil {
		k, err := GenerateKeys()
		if err != nil {
			b.Fatal(err)
		}
		o.Keys = k
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	db, err := Open(b.TempDir(), o)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { db.Close() })
	return db
}

func benchPut(b *testing.B, db *DB, key string, data []byte, opts ...PutOption) {
	b.Helper()
	if _, err := db.Put(context.Background(), key, bytes.NewReader(data), opts...); err != nil {
		b.Fatalf("Put %q: %v", key, err)
	}
}

// --- building blocks -------------------------------------------------------

func benchSession(b *testing.B) *seal.Session {
	b.Helper()
	pk, _, err := mlkem1024.GenerateKeyPair(crand.Reader)
	if err != nil {
		b.Fatal(err)
	}
	var id [seal.SessionIDSize]byte
	seed := make([]byte, 32)
	crand.Read(id[:])
	crand.Read(seed)
	_, s := seal.NewSession(pk, id, seed)
	return s
}

// BenchmarkSeal seals (key derivation, AES-256-GCM) and opens one 256 KiB
// slice, as Put and Get do per slice: into one reused buffer, as they reuse
// pooled ones.
func BenchmarkSeal(b *testing.B) {
	s := benchSession(b)
	clear := benchRandom(1, benchSliceSize)
	var id [seal.IDSize]byte
	crand.Read(id[:])
	dst := make([]byte, 0, benchSliceSize+seal.Overhead)
	b.Run("seal-256KiB", func(b *testing.B) {
		b.SetBytes(benchSliceSize)
		var ctr uint64
		for b.Loop() {
			ctr++
			s.Seal(dst[:0], clear, &id, ctr, 0)
		}
	})
	b.Run("open-256KiB", func(b *testing.B) {
		sealed, commit := s.Seal(nil, clear, &id, 7, 0)
		b.SetBytes(benchSliceSize)
		for b.Loop() {
			if _, err := s.Open(dst[:0], sealed, &id, 7, 0, &commit); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkSliceID is the keyed BLAKE3-512 that names every slice (Put) and
// verifies it again after opening (Get).
func BenchmarkSliceID(b *testing.B) {
	key := make([]byte, 32)
	crand.Read(key)
	clear := benchRandom(2, benchSliceSize)
	b.SetBytes(benchSliceSize)
	var id [64]byte
	for b.Loop() {
		h, _ := blake3.NewKeyed(key)
		h.Write(clear)
		h.Digest().Read(id[:])
	}
}

// BenchmarkCompress is the zstd attempt Put makes on every new slice by
// default (compress, seal.go). On incompressible input it stops after
// compressing a 16 KiB sample and Put keeps the slice as it is; text is
// compressed whole.
func BenchmarkCompress(b *testing.B) {
	text := bytes.Repeat([]byte("func (db *DB) Put(ctx context.Context, key string, r io.Reader) error {\n\treturn nil\n}\n"), benchSliceSize/80+1)[:benchSliceSize]
	for _, in := range []struct {
		name string
		data []byte
	}{{"random-256KiB", benchRandom(3, benchSliceSize)}, {"text-256KiB", text}} {
		b.Run(in.name, func(b *testing.B) {
			b.SetBytes(benchSliceSize)
			out := 0
			for b.Loop() {
				c, ok := compress(in.data)
				out = len(c)
				if ok {
					bufpool.Put(c)
				}
			}
			b.ReportMetric(float64(out)/float64(len(in.data)), "out/in")
		})
	}
}

// BenchmarkErasure encodes a 256 KiB sealed slice into 8+2 checksummed
// shards and decodes it: intact (Get's fast path: checksums only) and with
// two data shards missing (reconstruction).
func BenchmarkErasure(b *testing.B) {
	c, err := erasure.New(DefaultDataShards, DefaultParityShards)
	if err != nil {
		b.Fatal(err)
	}
	sealed := benchRandom(4, benchSliceSize+seal.Overhead)
	id := benchRandom(5, 64)
	b.Run("encode-8+2", func(b *testing.B) {
		b.SetBytes(int64(len(sealed)))
		buf := make([]byte, c.StoredSize(len(sealed))) // one buffer, as Put reuses pooled ones (EncodeInto)
		for b.Loop() {
			if _, err := c.EncodeInto(buf, id, sealed); err != nil {
				b.Fatal(err)
			}
		}
	})
	shards, err := c.Encode(id, sealed)
	if err != nil {
		b.Fatal(err)
	}
	// Both decodes write into one buffer, as Get does (DecodeInto): with a
	// fresh one per call the benchmark measured allocation, not decoding.
	dst := make([]byte, len(sealed))
	b.Run("decode-intact", func(b *testing.B) {
		b.SetBytes(int64(len(sealed)))
		in := make([][]byte, len(shards))
		for b.Loop() {
			copy(in, shards)
			out, _, _, err := c.DecodeInto(dst, id, in, len(sealed), false)
			if err != nil || len(out) != len(sealed) {
				b.Fatal(err)
			}
		}
	})
	b.Run("decode-2missing", func(b *testing.B) {
		b.SetBytes(int64(len(sealed)))
		in := make([][]byte, len(shards))
		for b.Loop() {
			copy(in, shards)
			in[1], in[5] = nil, nil
			out, bad, _, err := c.DecodeInto(dst, id, in, len(sealed), false)
			if err != nil || len(bad) != 2 || !bytes.Equal(out, sealed) {
				b.Fatal(err, bad)
			}
		}
	})
}

// --- write amplification ---------------------------------------------------

// benchPebbleWritten is what a Pebble instance has written to disk since it
// was opened: WAL, sstables from flushes and compactions, ingested sstables
// and blob files.
func benchPebbleWritten(p *pebble.DB) uint64 {
	m := p.Metrics()
	n := m.WAL.BytesWritten
	for i := range m.Levels {
		l := &m.Levels[i]
		n += l.TableBytesFlushed + l.TableBytesCompacted + l.TableBytesIngested + l.BlobBytesFlushed + l.BlobBytesCompacted
	}
	return n
}

// benchSlicePebble is the slice keyspace's Pebble, or nil for another
// SliceStore.
func benchSlicePebble(db *DB) *pebble.DB {
	if p, ok := db.slices.(interface{ DB() *pebble.DB }); ok {
		return p.DB()
	}
	return nil
}

// benchSettle flushes the memtables and waits (bounded) for compactions.
func benchSettle(p *pebble.DB) {
	if p == nil {
		return
	}
	_ = p.Flush()
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		m := p.Metrics()
		if m.Compact.NumInProgress == 0 && m.Compact.EstimatedDebt == 0 {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// benchWA measures the keyspaces' disk writes across a benchmark loop.
type benchWA struct {
	db                *DB
	slice0, meta0     uint64
	stored0, logical0 int64
}

func benchStartWA(db *DB) *benchWA {
	w := &benchWA{db: db, meta0: benchPebbleWritten(db.meta)}
	if p := benchSlicePebble(db); p != nil {
		benchSettle(p)
		w.slice0 = benchPebbleWritten(p)
	}
	st := db.Stats()
	w.stored0, w.logical0 = st.StoredBytes, st.LogicalBytes
	return w
}

// report stops the timer, settles both keyspaces and reports the metrics.
func (w *benchWA) report(b *testing.B, ops int) {
	b.StopTimer()
	p := benchSlicePebble(w.db)
	benchSettle(p)
	benchSettle(w.db.meta)
	st := w.db.Stats()
	stored := st.StoredBytes - w.stored0
	if p != nil && stored > 0 {
		b.ReportMetric(float64(benchPebbleWritten(p)-w.slice0)/float64(stored), "slice-WA")
	}
	if ops > 0 {
		b.ReportMetric(float64(benchPebbleWritten(w.db.meta)-w.meta0)/float64(ops), "meta-B/op")
	}
	if logical := st.LogicalBytes - w.logical0; logical > 0 && stored > 0 {
		b.ReportMetric(float64(stored)/float64(logical), "stored/orig")
	}
}

// --- whole operations ------------------------------------------------------

var benchSeed atomic.Uint64

// benchSize is a ClearText size of the Put and Get benchmarks.
type benchSize struct {
	name  string
	n     int
	large bool // only with SEALKV_BENCH_LARGE=1
}

var benchSizes = []benchSize{{"64MiB", 64 * benchMiB, false}, {"1GiB", 1024 * benchMiB, true}}

// skip skips a large size unless SEALKV_BENCH_LARGE=1.
func (s benchSize) skip(b *testing.B) {
	if s.large && os.Getenv("SEALKV_BENCH_LARGE") != "1" {
		b.Skip("set SEALKV_BENCH_LARGE=1 (and -benchtime 1x) for 1 GiB benchmarks")
	}
}

// BenchmarkPut puts fresh random content (no dedup possible) into one store:
// 64 MiB with the default zstd attempt and without compression, 1 GiB with
// SEALKV_BENCH_LARGE=1. Generating the content is outside the timed region.
func BenchmarkPut(b *testing.B) {
	for _, size := range benchSizes {
		for _, comp := range []struct {
			name string
			c    Compression
		}{{"zstd", CompressionZstd}, {"none", CompressionNone}} {
			b.Run(size.name+"/"+comp.name, func(b *testing.B) {
				size.skip(b)
				db := benchOpen(b, &Options{Compression: comp.c})
				wa := benchStartWA(db)
				b.SetBytes(int64(size.n))
				i := 0
				for b.Loop() {
					b.StopTimer()
					data := benchRandom(benchSeed.Add(1), size.n)
					b.StartTimer()
					benchPut(b, db, fmt.Sprintf("put-%d", i), data)
					i++
				}
				wa.report(b, i)
			})
		}
	}
}

// BenchmarkGet reads 64 MiB (1 GiB with SEALKV_BENCH_LARGE=1) back through
// Read with a 1 MiB buffer, and through io.Copy (io.Discard's ReadFrom: 8 KiB
// reads).
func BenchmarkGet(b *testing.B) {
	for _, size := range benchSizes {
		b.Run(size.name, func(b *testing.B) {
			size.skip(b)
			db := benchOpen(b, nil)
			data := benchRandom(benchSeed.Add(1), size.n)
			benchPut(b, db, "get", data)
			data = nil
			for _, bufSize := range []int{benchMiB, 0} {
				name := "buf=1MiB"
				if bufSize == 0 {
					name = "io.Copy"
				}
				b.Run(name, func(b *testing.B) {
					b.SetBytes(int64(size.n))
					buf := make([]byte, max(bufSize, 1))
					for b.Loop() {
						r, err := db.Get(context.Background(), "get")
						if err != nil {
							b.Fatal(err)
						}
						var n int64
						if bufSize == 0 {
							n, err = io.Copy(io.Discard, r)
						} else {
							n, err = io.CopyBuffer(struct{ io.Writer }{io.Discard}, struct{ io.Reader }{r}, buf)
						}
						r.Close()
						if err != nil || n != int64(size.n) {
							b.Fatalf("read %d of %d: %v", n, size.n, err)
						}
					}
				})
			}
		})
	}
}

// BenchmarkPutDedup puts content the store already holds under a new key
// each time: chunking and hashing only, no sealing or shard writes.
func BenchmarkPutDedup(b *testing.B) {
	for _, size := range benchSizes {
		b.Run(size.name, func(b *testing.B) {
			size.skip(b)
			db := benchOpen(b, nil)
			data := benchRandom(benchSeed.Add(1), size.n)
			benchPut(b, db, "orig", data)
			wa := benchStartWA(db)
			b.SetBytes(int64(size.n))
			i := 0
			for b.Loop() {
				benchPut(b, db, fmt.Sprintf("dedup-%d", i), data)
				i++
			}
			wa.report(b, i)
			if st := db.Stats(); st.UniqueBytes != int64(size.n) {
				b.Fatalf("dedup failed: UniqueBytes %d, want %d", st.UniqueBytes, size.n)
			}
		})
	}
}

// BenchmarkPutSmall puts 4 KiB objects (one slice each) under new keys, 64
// per op so that -benchtime 3x still means something: one at a time, and
// from GOMAXPROCS*4 goroutines. Every Put is durable, so this is mostly
// fsync latency and how well concurrent Puts share it.
func BenchmarkPutSmall(b *testing.B) {
	const size = 4 << 10
	const perOp = 64
	const pool = 1 << 12 // distinct objects, cycled with a counter prefix
	objs := make([][]byte, pool)
	for i := range objs {
		objs[i] = benchRandom(benchSeed.Add(1), size)
	}
	// Each Put gets unique content: the first 8 bytes are a counter.
	var ctr atomic.Uint64
	next := func() (string, io.Reader) {
		n := ctr.Add(1)
		o := bytes.Clone(objs[n%pool])
		for i := range 8 {
			o[i] = byte(n >> (8 * i))
		}
		return fmt.Sprintf("small/%d", n), bytes.NewReader(o)
	}
	put := func(db *DB) error {
		k, r := next()
		_, err := db.Put(context.Background(), k, r)
		return err
	}
	b.Run("4KiB/serial", func(b *testing.B) {
		db := benchOpen(b, nil)
		wa := benchStartWA(db)
		b.SetBytes(size * perOp)
		objects := 0
		for b.Loop() {
			for range perOp {
				if err := put(db); err != nil {
					b.Fatal(err)
				}
				objects++
			}
		}
		b.ReportMetric(float64(objects)/b.Elapsed().Seconds(), "objects/s")
		wa.report(b, objects)
	})
	b.Run("4KiB/parallel", func(b *testing.B) {
		db := benchOpen(b, nil)
		wa := benchStartWA(db)
		b.SetBytes(size * perOp)
		b.SetParallelism(4)
		var objects atomic.Int64
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				for range perOp {
					if err := put(db); err != nil {
						b.Error(err) // not Fatal: this is not the benchmark's goroutine
						return
					}
					objects.Add(1)
				}
			}
		})
		b.ReportMetric(float64(objects.Load())/b.Elapsed().Seconds(), "objects/s")
		wa.report(b, int(objects.Load()))
	})
	// One op is a Batch of 1000 Puts from 8 goroutines and its Commit.
	b.Run("4KiB/batch1000", func(b *testing.B) {
		const n = 1000
		db := benchOpen(b, nil)
		wa := benchStartWA(db)
		b.SetBytes(size * n)
		objects := 0
		for b.Loop() {
			bt := db.NewBatch()
			work := make(chan struct{})
			var wg sync.WaitGroup
			for range 8 {
				wg.Go(func() {
					for range work {
						k, r := next()
						if err := bt.Put(context.Background(), k, r); err != nil {
							b.Error(err)
						}
					}
				})
			}
			for range n {
				work <- struct{}{}
			}
			close(work)
			wg.Wait()
			if err := bt.Commit(context.Background()); err != nil {
				b.Fatal(err)
			}
			objects += n
		}
		b.ReportMetric(float64(objects)/b.Elapsed().Seconds(), "objects/s")
		wa.report(b, objects)
	})
}
