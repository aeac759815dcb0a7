package s3store_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sealkv/kv"
	"github.com/sealkv/kv/s3store"
)

// k+m = 4+2 over 6 domains: every shard has its own domain, so any 2
// domains may be lost.
const testK, testM = 4, 2

func kvOptions(keys *kv.Keys, s *s3store.Store) *kv.Options {
	return &kv.Options{
		Keys: keys, SliceStore: s, DataShards: testK, ParityShards: testM,
		MinSliceSize: 4 << 10, AvgSliceSize: 16 << 10, MaxSliceSize: 64 << 10,
		Logger: slog.New(slog.DiscardHandler),
	}
}

func genKeys(t testing.TB) *kv.Keys {
	t.Helper()
	k, err := kv.GenerateKeys()
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func openKV(t testing.TB, dir string, keys *kv.Keys, c *cluster) (*kv.DB, *s3store.Store) {
	t.Helper()
	s := c.open(c.config())
	db, err := kv.Open(dir, kvOptions(keys, s))
	if err != nil {
		t.Fatal(err)
	}
	return db, s
}

func randData(seed uint64, n int) []byte {
	rng := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(rng.Uint32())
	}
	return b
}

func put(t testing.TB, db *kv.DB, key string, b []byte) {
	t.Helper()
	if _, err := db.Put(bg, key, bytes.NewReader(b)); err != nil {
		t.Fatalf("Put %q: %v", key, err)
	}
}

func read(db *kv.DB, key string) ([]byte, error) {
	r, err := db.Get(bg, key)
	if err != nil {
		return nil, err
	}
	defer r.Close()
	return io.ReadAll(r)
}

func mustRead(t testing.TB, db *kv.DB, key string, want []byte) {
	t.Helper()
	got, err := read(db, key)
	if err != nil {
		t.Fatalf("Get %q: %v", key, err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("Get %q: %d bytes differ from the %d put", key, len(got), len(want))
	}
}

// TestKVRoundTrip runs sealkv over six S3 domains: Put, dedup, Get,
// concurrent Puts, Scrub, reopen, Delete down to zero objects.
func TestKVRoundTrip(t *testing.T) {
	c := newCluster(t, testK+testM)
	keys := genKeys(t)
	dir := t.TempDir()
	db, _ := openKV(t, dir, keys, c)
	blobs := map[string][]byte{
		"one": {42}, "small": randData(1, 1000), "medium": randData(2, 100_000), "large": randData(3, 600_000),
	}
	for k, b := range blobs {
		put(t, db, k, b)
	}
	st, objs := db.Stats(), c.objects()
	// Same content under another key: no new slice, no new object.
	blobs["large-copy"] = blobs["large"]
	put(t, db, "large-copy", blobs["large"])
	if st2 := db.Stats(); st2.Slices != st.Slices || c.objects() != objs {
		t.Fatalf("dedup: slices %d -> %d, objects %d -> %d", st.Slices, st2.Slices, objs, c.objects())
	}
	// Concurrent Puts, partly overlapping content.
	var wg sync.WaitGroup
	var mu sync.Mutex
	for i := range 4 {
		b := append(randData(uint64(10+i), 100_000), blobs["medium"]...)
		key := fmt.Sprintf("concurrent-%d", i)
		mu.Lock()
		blobs[key] = b
		mu.Unlock()
		wg.Go(func() {
			if _, err := db.Put(bg, key, bytes.NewReader(b)); err != nil {
				t.Errorf("Put %q: %v", key, err)
			}
		})
	}
	wg.Wait()
	for k, b := range blobs {
		mustRead(t, db, k, b)
	}
	rep, err := db.Scrub(bg, kv.ScrubOptions{})
	if err != nil || rep.ShardsBad != 0 || len(rep.Unreadable) != 0 || int64(rep.SlicesChecked) != db.Stats().Slices {
		t.Fatalf("Scrub: %+v, %v", rep, err)
	}
	// Objects: k+m shards per slice plus 3 header copies.
	if got, want := int64(c.objects()), db.Stats().Slices*(testK+testM+3); got != want {
		t.Fatalf("%d objects for %d slices, want %d", got, db.Stats().Slices, want)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}

	db, _ = openKV(t, dir, keys, c)
	defer db.Close()
	for k, b := range blobs {
		mustRead(t, db, k, b)
	}
	// Deleting one of two keys with the same content frees nothing.
	before := c.objects()
	if rep, err := db.Delete(bg, "large"); err != nil || len(rep.Deleted) != 0 {
		t.Fatalf("Delete large: %+v, %v", rep, err)
	}
	if c.objects() != before {
		t.Fatal("deleting a deduplicated copy removed objects")
	}
	delete(blobs, "large")
	for k := range blobs {
		if _, err := db.Delete(bg, k); err != nil {
			t.Fatalf("Delete %q: %v", k, err)
		}
	}
	if n := c.objects(); n != 0 || db.Stats().Slices != 0 {
		t.Fatalf("after deleting everything: %d objects, %d slices", n, db.Stats().Slices)
	}
}

// TestKVLoseDomains: with m domains down every Get returns the exact bytes
// and Scrub reports the missing shards; a Put fails cleanly; with m+1 down
// Get fails with ErrCorrupt and never returns wrong bytes. Two replaced
// (empty) domains are refilled by Scrub with Repair, after which two other
// domains may be lost.
func TestKVLoseDomains(t *testing.T) {
	c := newCluster(t, testK+testM)
	keys := genKeys(t)
	dir := t.TempDir()
	db, _ := openKV(t, dir, keys, c)
	blobs := map[string][]byte{}
	for i, n := range []int{10, 5000, 60_000, 400_000} {
		k := fmt.Sprintf("blob-%d", i)
		blobs[k] = randData(uint64(100+i), n)
		put(t, db, k, blobs[k])
	}
	objs := c.objects()

	t.Log("phase stop", time.Now().Format("05.000"))
	c.domains[1].stop()
	c.domains[4].stop()
	for k, b := range blobs {
		mustRead(t, db, k, b)
	}
	rep, err := db.Scrub(bg, kv.ScrubOptions{})
	if err != nil || rep.ShardsBad == 0 || len(rep.Unreadable) != 0 {
		t.Fatalf("Scrub with 2 domains down: %+v, %v", rep, err)
	}
	t.Logf("2 domains down: scrub found %d of %d shards bad", rep.ShardsBad, rep.SlicesChecked*(testK+testM))
	// A Put needing the lost domains fails, and leaves no trace.
	if _, err := db.Put(bg, "during-outage", bytes.NewReader(randData(7, 50_000))); err == nil {
		t.Fatal("Put with 2 domains down succeeded")
	} else {
		t.Logf("Put during outage: %v", err)
	}
	if _, err := db.Stat(bg, "during-outage"); !errors.Is(err, kv.ErrNotFound) {
		t.Fatalf("failed Put left a Data: %v", err)
	}

	// m+1 domains down: ErrUnavailable (not ErrCorrupt: nothing is
	// damaged), never wrong bytes.
	t.Log("phase m+1", time.Now().Format("05.000"))
	c.domains[2].stop()
	for k, b := range blobs {
		r, err := db.Get(bg, k)
		if err != nil {
			t.Fatal(err)
		}
		got, err := io.ReadAll(r)
		r.Close()
		if !errors.Is(err, kv.ErrUnavailable) || errors.Is(err, kv.ErrCorrupt) {
			t.Fatalf("Get %q with 3 domains down: %v, want ErrUnavailable", k, err)
		}
		if !bytes.Equal(got, b[:len(got)]) {
			t.Fatalf("Get %q returned wrong bytes", k)
		}
	}
	c.domains[2].start()
	time.Sleep(300 * time.Millisecond) // cooldown
	for k, b := range blobs {
		mustRead(t, db, k, b)
	}
	db.Close()

	// Domains 1 and 4 come back empty (replaced disks): New recreates their
	// buckets, Scrub rebuilds their shards.
	t.Log("phase wipe", time.Now().Format("05.000"))
	c.domains[1].wipe()
	c.domains[4].wipe()
	db, _ = openKV(t, dir, keys, c)
	defer db.Close()
	rep, err = db.Scrub(bg, kv.ScrubOptions{Repair: true})
	if err != nil || rep.ShardsBad == 0 || rep.ShardsRepaired != rep.ShardsBad || len(rep.Unreadable) != 0 {
		t.Fatalf("Scrub with Repair: %+v, %v", rep, err)
	}
	if rep, err = db.Scrub(bg, kv.ScrubOptions{}); err != nil || rep.ShardsBad != 0 {
		t.Fatalf("Scrub after repair: %+v, %v", rep, err)
	}
	// The failed Put left nothing (the wiped domains lost header copies,
	// which Scrub does not rebuild: they only serve crash recovery).
	if got := c.objects(); got > objs {
		t.Fatalf("%d objects, %d before the outage", got, objs)
	}
	t.Log("phase final", time.Now().Format("05.000"))
	c.domains[0].stop()
	c.domains[3].stop()
	for k, b := range blobs {
		mustRead(t, db, k, b)
	}
}

// cancelReader cancels ctx once it has delivered after bytes.
type cancelReader struct {
	r      io.Reader
	n      int
	after  int
	cancel context.CancelFunc
}

func (c *cancelReader) Read(p []byte) (int, error) {
	if c.n >= c.after {
		c.cancel()
		time.Sleep(10 * time.Millisecond)
	}
	n, err := c.r.Read(p)
	c.n += n
	return n, err
}

// TestKVCancel: a Put cancelled half way returns the context's error and
// leaves no object behind; a Get with a cancelled context fails.
func TestKVCancel(t *testing.T) {
	c := newCluster(t, testK+testM)
	db, _ := openKV(t, t.TempDir(), genKeys(t), c)
	defer db.Close()
	put(t, db, "kept", randData(1, 30_000))
	objs := c.objects()
	ctx, cancel := context.WithCancel(bg)
	_, err := db.Put(ctx, "cancelled", &cancelReader{r: bytes.NewReader(randData(2, 2_000_000)), after: 1_000_000, cancel: cancel})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled Put: %v", err)
	}
	if n := c.objects(); n != objs {
		t.Fatalf("cancelled Put left %d objects", n-objs)
	}
	r, err := db.Get(ctx, "kept")
	if err == nil {
		_, err = io.ReadAll(r)
	}
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("Get with a cancelled context: %v", err)
	}
}

// TestKVCrashRecovery: a process dies in the middle of a Put whose shards
// are partly uploaded; reopening the store (recovery lists the session's
// headers through Headers) removes every orphaned object and keeps the
// committed content.
func TestKVCrashRecovery(t *testing.T) {
	if os.Getenv("SEALKV_CRASH_CHILD") != "" {
		crashChild(t)
		return
	}
	c := newCluster(t, testK+testM)
	keys := genKeys(t)
	kb, err := keys.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	keyFile := filepath.Join(t.TempDir(), "keys")
	if err := os.WriteFile(keyFile, kb, 0o600); err != nil {
		t.Fatal(err)
	}
	var eps []string
	for _, d := range c.domains {
		eps = append(eps, d.addr)
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestKVCrashRecovery$")
	cmd.Env = append(os.Environ(), "SEALKV_CRASH_CHILD=1", "SEALKV_CRASH_DIR="+dir, "SEALKV_CRASH_KEYS="+keyFile, "SEALKV_CRASH_ENDPOINTS="+strings.Join(eps, ","))
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 3 {
		t.Fatalf("child: %v\n%s", err, out)
	}
	orphaned := c.objects()
	db, _ := openKV(t, dir, keys, c)
	defer db.Close()
	want := int(db.Stats().Slices) * (testK + testM + 3)
	if orphaned <= want {
		t.Fatalf("the crash left %d objects, committed content has %d: nothing to recover", orphaned, want)
	}
	if got := c.objects(); got != want {
		t.Fatalf("after recovery %d objects, want %d (%d before)", got, want, orphaned)
	}
	t.Logf("recovery removed %d orphaned objects", orphaned-want)
	mustRead(t, db, "committed", randData(1, 200_000))
	if _, err := db.Stat(bg, "crashing"); !errors.Is(err, kv.ErrNotFound) {
		t.Fatalf("the crashed Put is visible: %v", err)
	}
}

// crashChild commits one Put, then exits in the middle of another.
func crashChild(t *testing.T) {
	kb, err := os.ReadFile(os.Getenv("SEALKV_CRASH_KEYS"))
	if err != nil {
		t.Fatal(err)
	}
	keys, err := kv.ParseKeys(kb)
	if err != nil {
		t.Fatal(err)
	}
	cfg := s3store.Config{Logger: slog.New(slog.DiscardHandler)}
	for i, ep := range strings.Split(os.Getenv("SEALKV_CRASH_ENDPOINTS"), ",") {
		cfg.Domains = append(cfg.Domains, s3store.Domain{Endpoint: ep, Bucket: fmt.Sprintf("shards-%d", i), AccessKey: "test", SecretKey: "test"})
	}
	s, err := s3store.New(bg, cfg)
	if err != nil {
		t.Fatal(err)
	}
	db, err := kv.Open(os.Getenv("SEALKV_CRASH_DIR"), kvOptions(keys, s))
	if err != nil {
		t.Fatal(err)
	}
	put(t, db, "committed", randData(1, 200_000))
	r := &exitReader{r: bytes.NewReader(randData(2, 4_000_000)), after: 2_000_000}
	db.Put(bg, "crashing", r)
	os.Exit(4) // the reader should have exited first
}

// exitReader ends the process once it has delivered after bytes, giving
// the uploads in flight a moment to land.
type exitReader struct {
	r     io.Reader
	n     int
	after int
}

func (e *exitReader) Read(p []byte) (int, error) {
	if e.n >= e.after {
		time.Sleep(300 * time.Millisecond)
		os.Exit(3)
	}
	n, err := e.r.Read(p)
	e.n += n
	return n, err
}

// TestKVLargestShards stores slices of the largest size, padded, unsplit
// (1+1): every shard written must read back. (Found in review: Get refused
// objects over 64 MiB, which such a shard is.)
func TestKVLargestShards(t *testing.T) {
	c := newCluster(t, 2)
	s := c.open(c.config())
	db, err := kv.Open(t.TempDir(), &kv.Options{
		Keys: genKeys(t), SliceStore: s, DataShards: 1, ParityShards: 1,
		MinSliceSize: 64<<20 - 1024, AvgSliceSize: 64<<20 - 512, MaxSliceSize: 64 << 20,
		Compression: kv.CompressionNone, Padding: true,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	b := randData(1, 64<<20+100<<10)
	put(t, db, "big", b)
	mustRead(t, db, "big", b)
}

// TestKVOutageIsNotDamage reads and scrubs while more domains are down than
// parity covers: nothing is damaged, so no slice may be marked bad, and
// once the domains are back a Put of the same content deduplicates instead
// of sealing it anew. (Found in review: an outage was reported as
// ErrCorrupt and marked every slice read bad.)
func TestKVOutageIsNotDamage(t *testing.T) {
	c := newCluster(t, testK+testM)
	db, _ := openKV(t, t.TempDir(), genKeys(t), c)
	defer db.Close()
	b := randData(3, 200_000)
	put(t, db, "a", b)
	for _, i := range []int{0, 1, 2} {
		c.domains[i].stop()
	}
	if _, err := read(db, "a"); !errors.Is(err, kv.ErrUnavailable) || errors.Is(err, kv.ErrCorrupt) {
		t.Fatalf("read with 3 domains down: %v, want ErrUnavailable", err)
	}
	if _, err := db.Scrub(bg, kv.ScrubOptions{}); !errors.Is(err, kv.ErrUnavailable) {
		t.Fatalf("Scrub with 3 domains down: %v, want ErrUnavailable", err)
	}
	for _, i := range []int{0, 1, 2} {
		c.domains[i].start()
	}
	time.Sleep(300 * time.Millisecond) // cooldown
	mustRead(t, db, "a", b)
	var puts atomic.Int64
	for _, d := range c.domains {
		d.setHook(func(w http.ResponseWriter, r *http.Request) bool {
			if r.Method == http.MethodPut {
				puts.Add(1)
			}
			return false
		})
	}
	put(t, db, "b", b) // the same content: dedup only
	if n := puts.Load(); n != 0 {
		t.Fatalf("a Put of stored content after an outage wrote %d objects: its slices were marked bad", n)
	}
}

// TestKVOversizedShards: with more shards of a slice oversized (damaged)
// than parity covers, the slice is corrupt, not unavailable: reads fail
// with ErrCorrupt and Scrub reports it unreadable (see
// TestOversizedShardIsDamage); with fewer, Scrub rewrites them.
func TestKVOversizedShards(t *testing.T) {
	c := newCluster(t, testK+testM)
	db, _ := openKV(t, t.TempDir(), genKeys(t), c)
	defer db.Close()
	b := randData(7, 20_000)
	put(t, db, "a", b)
	for _, d := range c.domains[:testM+1] {
		oversize(d)
	}
	if _, err := read(db, "a"); !errors.Is(err, kv.ErrCorrupt) || errors.Is(err, kv.ErrUnavailable) {
		t.Fatalf("read with %d oversized shards: %v, want ErrCorrupt", testM+1, err)
	}
	rep, err := db.Scrub(bg, kv.ScrubOptions{Repair: true})
	if err != nil || len(rep.Unreadable) != rep.SlicesChecked || rep.SlicesChecked == 0 {
		t.Fatalf("Scrub with %d oversized shards: %+v, %v; want every slice unreadable", testM+1, rep, err)
	}
	c.domains[0].setHook(nil)
	rep, err = db.Scrub(bg, kv.ScrubOptions{Repair: true})
	if err != nil || len(rep.Unreadable) != 0 || rep.ShardsRepaired != testM*rep.SlicesChecked {
		t.Fatalf("Scrub with %d oversized shards: %+v, %v; want them all rewritten", testM, rep, err)
	}
}

// TestKVDataShardsDown reads 1+2 slices over three domains with one domain
// down, which Tolerates(3, 1, 2) = 2 allows: a slice whose data shard is in
// the lost domain is rebuilt from parity. (Found in review: Get of only the
// data shards, all in domains down, failed as if the store had, so the
// read failed without trying parity.)
func TestKVDataShardsDown(t *testing.T) {
	c := newCluster(t, 3)
	s := c.open(c.config())
	opts := kvOptions(genKeys(t), s)
	opts.DataShards, opts.ParityShards = 1, 2
	db, err := kv.Open(t.TempDir(), opts)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	b := randData(5, 200_000) // about a dozen slices, on every domain
	put(t, db, "a", b)
	c.domains[0].stop()
	mustRead(t, db, "a", b)
}
