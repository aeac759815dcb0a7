package kv

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/sealkv/kv/internal/record"
	"github.com/sealkv/kv/internal/slicestore"
)

// TestMetaScale measures what the meta keyspace costs per Data, per
// ContentMeta, per slice record and per reference, on disk after a full
// compaction (docs/SCALE.md). It puts SEALKV_SCALE slices (e.g. 50000) in
// files of 200 slices, then a second key with the content of each file
// (new Data, versions and references, no new slices), compacts and sizes
// each key prefix. Skipped unless SEALKV_SCALE is set:
//
//	SEALKV_SCALE=50000 go test -run TestMetaScale -v -timeout 30m .
func TestMetaScale(t *testing.T) {
	n, _ := strconv.Atoi(os.Getenv("SEALKV_SCALE"))
	if n <= 0 {
		t.Skip("set SEALKV_SCALE=<slices> (e.g. 50000) to measure meta keyspace sizes (docs/SCALE.md)")
	}
	const perFile = 200
	files := max(1, n/perFile)
	keys, err := GenerateKeys()
	if err != nil {
		t.Fatal(err)
	}
	// Small slices (~4 KiB) keep the run short. Sizes enter the records
	// only as varints (see SCALE.md for the correction at 230 KB).
	const sliceSize = 4 << 10
	dir := t.TempDir()
	db, err := Open(dir, &Options{Keys: keys, MinSliceSize: sliceSize / 2, AvgSliceSize: sliceSize, MaxSliceSize: 2 * sliceSize, Compression: CompressionNone})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	ctx := context.Background()
	start := time.Now()
	put := func(key string, b []byte) {
		if _, err := db.Put(ctx, key, bytes.NewReader(b)); err != nil {
			t.Fatal(err)
		}
	}
	contents := make([][]byte, files)
	for f := range files {
		contents[f] = scaleData(uint64(f), perFile*sliceSize)
		put(fmt.Sprintf("data/file-%08d", f), contents[f])
	}
	// Many one-slice files: Data, ContentMeta and manifest costs per file.
	small := max(1, n/10)
	for f := range small {
		put(fmt.Sprintf("data/small-%08d", f), scaleData(uint64(1<<32+f), sliceSize/2+f%1000))
	}
	st := db.Stats()
	t.Logf("put %d files of ~%d slices and %d one-slice files: %d slices in %v", files, perFile, small, st.Slices, time.Since(start).Round(time.Second))
	first := db.measureMeta(t)
	// A second name for each large content: Data, ContentMeta, manifest
	// chunks and references, but no slice records.
	for f := range files {
		put(fmt.Sprintf("copy/file-%08d", f), contents[f])
	}
	t.Logf("then a second key for each of the %d large files (%d more references)", files, db.Stats().Slices-int64(small))
	second := db.measureMeta(t)
	for i := range second {
		a, b := first[i], second[i]
		if b.keys == a.keys {
			continue
		}
		t.Logf("added %c: %d keys, %.1f disk bytes each (%.1f logical)", b.prefix, b.keys-a.keys,
			float64(int64(b.disk)-int64(a.disk))/float64(b.keys-a.keys), float64(b.keyBytes+b.valBytes-a.keyBytes-a.valBytes)/float64(b.keys-a.keys))
	}
	c1, c2 := first[2], second[2]
	entries := float64(st.Slices - int64(small)) // slices of the large files, listed again
	t.Logf("manifest chunks of the copies: %.1f disk bytes per listed slice", float64(int64(c2.disk)-int64(c1.disk))/entries)
}

func scaleData(seed uint64, n int) []byte {
	b := make([]byte, n)
	rng := rand.New(rand.NewPCG(seed, 42))
	for i := range b {
		b[i] = byte(rng.Uint32())
	}
	return b
}

type metaRow struct {
	prefix   byte
	what     string
	keys     int64
	keyBytes int64
	valBytes int64
	disk     uint64
}

// measureMeta flushes and fully compacts the meta keyspace and sizes each
// record kind.
func (db *DB) measureMeta(t *testing.T) []*metaRow {
	t.Helper()
	if err := db.meta.Flush(); err != nil {
		t.Fatal(err)
	}
	if err := db.meta.Compact(context.Background(), []byte{0}, []byte{0xff}, true); err != nil {
		t.Fatal(err)
	}
	rows := []*metaRow{
		{prefix: record.PrefixData, what: "Data (one version each)"},
		{prefix: record.PrefixManifest, what: "manifest owner records"},
		{prefix: record.PrefixChunk, what: "manifest chunks"},
		{prefix: record.PrefixSlice, what: "slice records"},
		{prefix: record.PrefixRef, what: "references"},
		{prefix: record.PrefixSession, what: "sessions"},
	}
	var total uint64
	for _, r := range rows {
		err := db.eachKey([]byte{r.prefix}, func(k, v []byte) error {
			r.keys++
			r.keyBytes += int64(len(k))
			r.valBytes += int64(len(v))
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		if r.disk, err = db.meta.EstimateDiskUsage([]byte{r.prefix}, record.PrefixEnd([]byte{r.prefix})); err != nil {
			t.Fatal(err)
		}
		total += r.disk
	}
	m := db.meta.Metrics()
	t.Logf("meta keyspace after compaction: %d bytes in sstables (%d by prefix)", m.DiskSpaceUsage(), total)
	t.Logf("%-26s %9s %12s %12s %12s %10s", "prefix", "keys", "key bytes", "value bytes", "disk bytes", "disk/key")
	for _, r := range rows {
		per := 0.0
		if r.keys > 0 {
			per = float64(r.disk) / float64(r.keys)
		}
		t.Logf("%c %-24s %9d %12d %12d %12d %10.1f", r.prefix, r.what, r.keys, r.keyBytes, r.valBytes, r.disk, per)
	}
	return rows
}

// TestShardOverhead bounds what the slice keyspace adds to each small shard:
// its Pebble block, index entry and key. Every shard sits in a block of its
// own (one flipped bit costs one shard), so this overhead is paid per shard:
// ~96 bytes per key (a shard or the SliceID header) with row blocks and
// 4 KiB index blocks; ~148 with one-entry index blocks (Pebble's default
// index block size is the block size), ~222 with columnar blocks.
func TestShardOverhead(t *testing.T) {
	db := openDB(t, t.TempDir(), &Options{Keys: newKeys(t), Compression: CompressionNone})
	const puts = 300
	for i := range puts {
		mustPut(t, db, fmt.Sprint("f", i), randBytes(4<<10))
	}
	p := db.slices.(*slicestore.Pebble).DB()
	if err := p.Flush(); err != nil {
		t.Fatal(err)
	}
	st := db.Stats()
	if st.Slices != puts {
		t.Fatalf("%d slices, want %d", st.Slices, puts)
	}
	m := p.Metrics()
	tables := int64(m.Total().TablesSize)
	keys := puts * (10 + 1)             // 8+2 shards and the SliceID header per slice
	payload := st.StoredBytes + puts*64 // shards, and the headers' SliceIDs
	perKey := float64(tables-payload) / float64(keys)
	t.Logf("%d bytes of tables for %d bytes of shards and headers: %.0f bytes per key", tables, payload, perKey)
	if perKey > 110 {
		t.Fatalf("%.0f bytes of Pebble overhead per shard, want <= 110", perKey)
	}
}

// TestMetaCacheBesideMemtables checks that the meta keyspace's block cache
// still holds blocks once its memtables have grown to full size: Pebble
// charges memtables against the block cache, and with its default cache
// size the lookups of a busy store all missed.
func TestMetaCacheBesideMemtables(t *testing.T) {
	db := openDB(t, t.TempDir(), &Options{Keys: newKeys(t)})
	for i := range 8 {
		mustPut(t, db, fmt.Sprint("f", i), randBytes(100))
	}
	// Grow the memtables to full size: Pebble starts at 256 KiB and doubles
	// the next memtable whenever a full one rotates. Filler keys under a
	// prefix no record uses, deleted again below.
	filler := []byte{'z'}
	val := make([]byte, 64<<10)
	for i := range 16 << 20 / len(val) {
		if err := db.meta.Set(fmt.Appendf(filler, "%08d", i), val, pebble.NoSync); err != nil {
			t.Fatal(err)
		}
	}
	if m := db.meta.Metrics(); m.MemTable.Size < 2*metaMemTable {
		t.Fatalf("memtables hold %d bytes, want >= %d: the setup no longer grows them", m.MemTable.Size, 2*metaMemTable)
	}
	defer func() {
		if err := db.meta.DeleteRange(filler, record.PrefixEnd(filler), pebble.Sync); err != nil {
			t.Error(err)
		}
	}()
	before := db.meta.Metrics().BlockCache
	const lookups = 200
	for i := range lookups {
		if _, err := db.Stat(ctx, fmt.Sprint("missing", i)); !errors.Is(err, ErrNotFound) {
			t.Fatalf("Stat of a missing key: %v", err)
		}
	}
	after := db.meta.Metrics().BlockCache
	hits, misses := after.Hits-before.Hits, after.Misses-before.Misses
	t.Logf("%d lookups: %d block cache hits, %d misses", lookups, hits, misses)
	if hits < 4*misses {
		t.Fatalf("meta block cache: %d hits, %d misses for %d lookups of missing keys; want mostly hits", hits, misses, lookups)
	}
}
