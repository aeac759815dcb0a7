package kv

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/sealkv/kv/internal/bufpool"
	"github.com/sealkv/kv/internal/slicestore"
)

// soakSample is one measurement of the process and the store.
type soakSample struct {
	at         time.Duration // since the loop started
	heap       float64       // runtime.MemStats.HeapInuse after runtime.GC
	goroutines float64
	pooled     float64 // bufpool.Outstanding: large buffers outside the Go heap not yet returned
	fds        float64 // entries in /proc/self/fd
	rss        float64 // VmRSS
	meta       float64 // bytes allocated on disk under DIR/meta
	slices     float64 // bytes allocated on disk under DIR/slices
}

func (s soakSample) String() string {
	return fmt.Sprintf("t=%6.1fs heap=%6.1fMiB goroutines=%3.0f pooled=%3.0f fds=%3.0f rss=%6.1fMiB meta=%6.1fMiB slices=%7.1fMiB",
		s.at.Seconds(), s.heap/(1<<20), s.goroutines, s.pooled, s.fds, s.rss/(1<<20), s.meta/(1<<20), s.slices/(1<<20))
}

// soakMetric names a field of soakSample, with the absolute slack its trend
// test allows on top of the relative bound (see TestSoak).
type soakMetric struct {
	name  string
	get   func(soakSample) float64
	slack float64
}

// TestSoak runs a write + delete + prune + read loop over shared content of
// mixed sizes for SEALKV_SOAK (a Go duration; default 2m, 30s with
// -short) and checks that nothing grows without bound: heap in use,
// goroutines, pooled buffers outside the Go heap not yet returned (which
// RSS shows only without the race detector), open files, RSS and the
// bytes on disk of both keyspaces,
// sampled after runtime.GC, must show no upward trend after a warm-up.
// Then it deletes everything and checks that the store returns to within
// 32 MiB of an empty store on disk with no help from the caller (the slice
// keyspace compacts deleted ranges by itself), and that Close leaves no
// goroutine and no open file behind.
//
// An hour: SEALKV_SOAK=1h go test -run TestSoak -timeout 2h .
func TestSoak(t *testing.T) {
	dur := 2 * time.Minute
	if testing.Short() {
		dur = 30 * time.Second
	}
	if v := os.Getenv("SEALKV_SOAK"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil {
			t.Fatalf("SEALKV_SOAK=%q: %v", v, err)
		}
		dur = d
	}
	runtime.GC()
	leakOpts := []goleak.Option{goleak.IgnoreCurrent()}
	fdsBefore := countFDs()
	pooledBefore := bufpool.Outstanding()

	dir := t.TempDir()
	keys := newKeys(t)
	logs := &lockedBuffer{}
	opts := &Options{Keys: keys, MinSliceSize: 16 << 10, AvgSliceSize: 64 << 10, MaxSliceSize: 256 << 10,
		Logger: slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelWarn}))}
	db, err := Open(dir, opts)
	if err != nil {
		t.Fatal(err)
	}
	empty := diskUsage(t, dir)
	t.Logf("empty store: %.1f MiB on disk", float64(empty)/(1<<20))

	// Shared content: blocks that many values contain (dedup, slices kept
	// by other keys on delete), values from 0 to ~7 MiB (batch path and
	// sstable-ingest path of the slice keyspace).
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 11))
	pool := [][]byte{randBytes(100 << 10), randBytes(300 << 10), randBytes(1 << 20), randBytes(2 << 20)}
	large := randBytes(5 << 20)
	keyName := func(i int) string { return fmt.Sprintf("soak/%02d", i) }
	const nkeys = 16

	interval := max(dur/60, time.Second)
	var samples []soakSample
	var ops [4]int
	start := time.Now()
	next := start
	for time.Since(start) < dur {
		if time.Now().After(next) {
			s := sampleSoak(t, dir)
			s.at = time.Since(start)
			samples = append(samples, s)
			next = next.Add(interval)
		}
		key := keyName(rng.IntN(nkeys))
		switch op := rng.IntN(10); {
		case op < 5:
			var b []byte
			for range rng.IntN(3) {
				b = append(b, pool[rng.IntN(len(pool))]...)
			}
			if rng.IntN(10) == 0 {
				b = append(b, large...)
			}
			b = append(b, randBytes(rng.IntN(200<<10))...)
			if _, err := db.Put(ctx, key, bytes.NewReader(b)); err != nil {
				t.Fatalf("Put: %v", err)
			}
			ops[0]++
		case op < 7:
			if _, err := db.PruneVersions(ctx, key, rng.IntN(2)); err != nil && !errors.Is(err, ErrNotFound) {
				t.Fatalf("PruneVersions: %v", err)
			}
			ops[1]++
		case op < 9:
			if _, err := db.PruneVersions(ctx, key, 0); err != nil && !errors.Is(err, ErrNotFound) {
				t.Fatalf("PruneVersions: %v", err)
			}
			if _, err := db.Delete(ctx, key); err != nil && !errors.Is(err, ErrNotFound) {
				t.Fatalf("Delete: %v", err)
			}
			ops[2]++
		default:
			soakRead(t, db, key)
			ops[3]++
		}
	}
	t.Logf("ops put/prune/delete/get: %v in %v", ops, time.Since(start).Round(time.Second))
	for _, s := range samples {
		t.Log(s)
	}

	// The trend test. After the warm-up (the first quarter, at least 15s:
	// caches, pools, memtables and the live data set fill up), a quantity that does not
	// leak fluctuates around a mean m between bounds; a least-squares line
	// through such a signal over a window T has slope*T of at most 1.5 times
	// the width of the band it moves in (the worst case is a single step in
	// the middle of the window), and a random walk within the band usually
	// much less. A leak of rate g gives slope*T = g*T, growing with T. We
	// allow slope*T < m/2 + slack: half the mean covers the band of a
	// bounded quantity (heap, goroutines, fds and RSS vary by far less than
	// that here) while any steady leak that adds half of the steady state
	// in one run fails; the slack covers what varies by a fixed amount:
	// goroutines (Put's workers and Reader fetches caught mid-flight), fds
	// (sstables and WAL files opened and recycled), and on disk the
	// sawtooth of the slice keyspace, which holds up to CompactBytes of
	// deleted shards before a compaction round plus a 64 MiB memtable's WAL,
	// preallocated to 70 MiB and recycled.
	warmUp := max(dur/4, 15*time.Second)
	warm := 0
	for warm < len(samples) && samples[warm].at < warmUp {
		warm++
	}
	steady := samples[warm:]
	if len(steady) < 8 {
		t.Fatalf("only %d samples after warm-up; run longer", len(steady))
	}
	metrics := []soakMetric{
		{"heap", func(s soakSample) float64 { return s.heap }, 16 << 20},
		{"goroutines", func(s soakSample) float64 { return s.goroutines }, 20},
		// Buffers held by Puts and Reader fetches caught mid-flight.
		{"pooled", func(s soakSample) float64 { return s.pooled }, 64},
		{"fds", func(s soakSample) float64 { return s.fds }, 20},
		{"rss", func(s soakSample) float64 { return s.rss }, 64 << 20},
		{"meta", func(s soakSample) float64 { return s.meta }, 16 << 20},
		{"slices", func(s soakSample) float64 { return s.slices }, float64(slicestore.CompactBytes) + 2*70<<20},
	}
	for _, m := range metrics {
		slope, mean := trend(steady, m.get)
		window := (steady[len(steady)-1].at - steady[0].at).Seconds()
		growth := slope * window
		bound := mean/2 + m.slack
		t.Logf("%-10s mean %12.0f, trend %+12.0f over %.0fs (bound %.0f)", m.name, mean, growth, window, bound)
		if growth > bound {
			t.Errorf("%s grows: %+.0f over %.0fs after warm-up (mean %.0f, bound %.0f)", m.name, growth, window, mean, bound)
		}
	}

	// Delete everything; the library, not the caller, gives the space back.
	for i := range nkeys {
		if _, err := db.PruneVersions(ctx, keyName(i), 0); err != nil && !errors.Is(err, ErrNotFound) {
			t.Fatal(err)
		}
		if _, err := db.Delete(ctx, keyName(i)); err != nil && !errors.Is(err, ErrNotFound) {
			t.Fatal(err)
		}
	}
	if st := db.Stats(); st != (Stats{}) {
		t.Fatalf("stats after deleting everything: %+v", st)
	}
	checkInvariants(t, db)
	var used int64
	deadline := time.Now().Add(2 * time.Minute)
	for {
		used = diskUsage(t, dir)
		if used <= empty+32<<20 || time.Now().After(deadline) {
			break
		}
		time.Sleep(500 * time.Millisecond)
	}
	end := sampleSoak(t, dir)
	t.Logf("after deleting everything: %.1f MiB on disk (empty store %.1f MiB); %s", float64(used)/(1<<20), float64(empty)/(1<<20), end)
	if used > empty+32<<20 {
		t.Errorf("store holds %.1f MiB on disk after deleting everything, empty store %.1f MiB", float64(used)/(1<<20), float64(empty)/(1<<20))
		logFiles(t, dir)
		t.Logf("warnings and errors logged:\n%s", tail(logs.Bytes(), 4000))
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	goleak.VerifyNone(t, leakOpts...)
	if n := bufpool.Outstanding(); n > pooledBefore {
		t.Errorf("%d pooled buffers never returned", n-pooledBefore)
	}
	if fds := countFDs(); fds > fdsBefore {
		t.Errorf("%d files open after Close, %d before Open", fds, fdsBefore)
	}
}

// TestDeleteReclaimsDisk deletes everything from a store holding ingested
// sstables and batch-written shards and checks that the slice keyspace gives
// the disk space back by itself (slicestore's compactor), with no compaction
// asked for by the caller.
func TestDeleteReclaimsDisk(t *testing.T) {
	dir := t.TempDir()
	db := openDB(t, dir, &Options{Keys: newKeys(t), Logger: quietLogger})
	shared := randBytes(1 << 20)
	for i := range 6 {
		b := append(append([]byte(nil), shared...), randBytes(200<<10)...)
		if i%2 == 0 {
			b = append(b, randBytes(8<<20)...) // ingested
		}
		mustPut(t, db, fmt.Sprintf("k%d", i), b)
	}
	before := diskUsage(t, filepath.Join(dir, "slices"))
	for i := range 6 {
		if _, err := db.Delete(ctx, fmt.Sprintf("k%d", i)); err != nil {
			t.Fatal(err)
		}
	}
	deadline := time.Now().Add(30 * time.Second)
	var after int64
	for {
		after = diskUsage(t, filepath.Join(dir, "slices"))
		if after <= 1<<20 || time.Now().After(deadline) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Logf("slice keyspace: %.1f MiB before deleting, %.1f MiB after", float64(before)/(1<<20), float64(after)/(1<<20))
	if after > 1<<20 {
		logFiles(t, dir)
		t.Fatalf("slice keyspace holds %.1f MiB after everything was deleted", float64(after)/(1<<20))
	}
}

// soakRead reads key back and checks its bytes hash to its ContentID. (The
// loop is the only writer, so Stat and Get see the same version; a set of
// every ContentID put would itself grow and show as a heap leak.)
func soakRead(t *testing.T, db *DB, key string) {
	t.Helper()
	d, err := db.Stat(ctx, key)
	if errors.Is(err, ErrNotFound) {
		return
	}
	if err != nil {
		t.Fatalf("Stat: %v", err)
	}
	r, err := db.Get(ctx, key)
	if err != nil {
		t.Fatalf("Get: %v", err)
	}
	defer r.Close()
	if contentIDOf(t, db, r) != d.Content.ContentID {
		t.Fatalf("Get %q returned bytes that do not hash to its ContentID", key)
	}
}

// contentIDOf hashes what r yields with the store's ContentID key.
func contentIDOf(t testing.TB, db *DB, r io.Reader) ContentID {
	t.Helper()
	b, err := io.ReadAll(r)
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	return contentID(db, b)
}

// trend fits y = a + slope*t by least squares and returns slope (per
// second) and the mean of y.
func trend(s []soakSample, get func(soakSample) float64) (slope, mean float64) {
	var st, sy float64
	for _, x := range s {
		st += x.at.Seconds()
		sy += get(x)
	}
	n := float64(len(s))
	mt, my := st/n, sy/n
	var cov, vt float64
	for _, x := range s {
		dt := x.at.Seconds() - mt
		cov += dt * (get(x) - my)
		vt += dt * dt
	}
	if vt == 0 {
		return 0, my
	}
	return cov / vt, my
}

func sampleSoak(t *testing.T, dir string) soakSample {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return soakSample{
		heap:       float64(ms.HeapInuse),
		goroutines: float64(runtime.NumGoroutine()),
		pooled:     float64(bufpool.Outstanding()),
		fds:        float64(countFDs()),
		rss:        float64(rssBytes()),
		meta:       float64(diskUsage(t, filepath.Join(dir, "meta"))),
		slices:     float64(diskUsage(t, filepath.Join(dir, "slices"))),
	}
}

func countFDs() int {
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return -1
	}
	return len(ents)
}

func rssBytes() int64 {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return -1
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return kb << 10
		}
	}
	return -1
}

// diskUsage is what du reports for dir: blocks allocated, which counts the
// space Pebble preallocates for WAL files.
func diskUsage(t testing.TB, dir string) int64 {
	var n int64
	err := filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil // removed by Pebble meanwhile
			}
			return err
		}
		info, err := d.Info()
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil
			}
			return err
		}
		if st, ok := info.Sys().(*syscall.Stat_t); ok {
			n += st.Blocks * 512
		} else {
			n += info.Size()
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// lockedBuffer is a bytes.Buffer safe for concurrent writers.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) Bytes() []byte {
	l.mu.Lock()
	defer l.mu.Unlock()
	return bytes.Clone(l.b.Bytes())
}

// logFiles lists the files under dir with their sizes and allocation.
func logFiles(t *testing.T, dir string) {
	_ = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return nil
		}
		if info, err := d.Info(); err == nil {
			alloc := info.Size()
			if st, ok := info.Sys().(*syscall.Stat_t); ok {
				alloc = st.Blocks * 512
			}
			t.Logf("  %-40s %12d bytes, %12d allocated", strings.TrimPrefix(p, dir), info.Size(), alloc)
		}
		return nil
	})
}
