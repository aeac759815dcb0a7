package s3store_test

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sealkv/kv"
	"github.com/sealkv/kv/s3store"
)

// The SeaweedFS tests run against a real cluster on 127.0.0.1 started by
// scripts/seaweedfs/cluster.sh (one master, three volume servers in three
// racks, a filer with the S3 gateway). They need the weed binary, which
// scripts/seaweedfs/build.sh builds once (~9 min) and caches; so they run
// only with SEALKV_SEAWEEDFS=1:
//
//	scripts/seaweedfs/build.sh
//	SEALKV_SEAWEEDFS=1 go test -run SeaweedFS -v -timeout 30m ./s3store
const seaweedEnv = "SEALKV_SEAWEEDFS"

type seaweed struct {
	t       testing.TB
	env     []string // SWFS_* for cluster.sh
	vars    map[string]string
	buckets []string
}

func skipUnlessSeaweed(t testing.TB) {
	if os.Getenv(seaweedEnv) == "" {
		t.Skipf("set %s=1 to run against a SeaweedFS cluster on 127.0.0.1 (see scripts/seaweedfs/)", seaweedEnv)
	}
}

// freeBase finds a port base for cluster.sh whose ports are all free.
func freeBase(t testing.TB) int {
	offsets := []int{0, 10, 11, 12, 20, 30}
	for range 100 {
		base := 20000 + 100*rand.IntN(100)
		ok := true
		for _, o := range offsets {
			for _, p := range []int{base + o, base + o + 10000} {
				ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", p))
				if err != nil {
					ok = false
					break
				}
				ln.Close()
			}
		}
		if ok {
			return base
		}
	}
	t.Fatal("no free port range")
	return 0
}

func scriptPath(name string) string {
	p, _ := filepath.Abs(filepath.Join("..", "scripts", "seaweedfs", name))
	return p
}

// startSeaweed starts a cluster for the test and stops it at cleanup.
func startSeaweed(t testing.TB) *seaweed {
	t.Helper()
	skipUnlessSeaweed(t)
	dir, err := os.MkdirTemp("", "sealkv-swfs-")
	if err != nil {
		t.Fatal(err)
	}
	sw := &seaweed{t: t, vars: map[string]string{}, env: []string{
		"SWFS_DIR=" + dir,
		"SWFS_STATE=" + filepath.Join(dir, ".state"),
		fmt.Sprintf("SWFS_BASE_PORT=%d", freeBase(t)),
	}}
	start := time.Now()
	out := sw.run("start")
	t.Logf("SeaweedFS cluster up in %v", time.Since(start).Round(time.Second))
	t.Cleanup(func() { sw.run("stop") })
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		if k, v, ok := strings.Cut(sc.Text(), "="); ok {
			sw.vars[k] = v
		}
	}
	sw.buckets = strings.Fields(sw.vars["SWFS_BUCKETS"])
	if len(sw.buckets) < 3 || sw.vars["SWFS_S3_ENDPOINT"] == "" {
		t.Fatalf("cluster.sh start printed %q", out)
	}
	return sw
}

func (sw *seaweed) run(args ...string) []byte {
	sw.t.Helper()
	cmd := exec.Command("bash", append([]string{scriptPath("cluster.sh")}, args...)...)
	cmd.Env = append(os.Environ(), sw.env...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		sw.t.Fatalf("cluster.sh %v: %v\n%s", args, err, stderr.Bytes())
	}
	return out
}

// config makes each bucket (pinned to its own volume server) a domain.
func (sw *seaweed) config() s3store.Config {
	cfg := s3store.Config{
		Logger:       slog.New(slog.DiscardHandler),
		Retry:        s3store.Retry{Attempts: 3, Backoff: 50 * time.Millisecond, AttemptTimeout: 15 * time.Second, Cooldown: time.Second},
		HeaderCopies: headerCopies(),
	}
	for _, b := range sw.buckets {
		cfg.Domains = append(cfg.Domains, s3store.Domain{
			Endpoint: sw.vars["SWFS_S3_ENDPOINT"], Bucket: b,
			AccessKey: sw.vars["SWFS_ACCESS_KEY"], SecretKey: sw.vars["SWFS_SECRET_KEY"],
		})
	}
	return cfg
}

func (sw *seaweed) open(t testing.TB) *s3store.Store {
	t.Helper()
	ctx, cancel := context.WithTimeout(bg, time.Minute)
	defer cancel()
	s, err := s3store.New(ctx, sw.config())
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// TestSeaweedFSVolumeKill: sealkv (4+2 shards over three buckets, each on
// its own volume server, so one server may be lost) keeps returning the
// exact bytes while a volume server is SIGKILLed under concurrent reads; a
// Put during the outage succeeds or fails cleanly; Scrub sees the lost
// shards and, once the server is back, none.
func TestSeaweedFSVolumeKill(t *testing.T) {
	sw := startSeaweed(t)
	s := sw.open(t)
	if tol := s3store.Tolerates(s.Domains(), testK, testM); tol != 1 {
		t.Fatalf("layout tolerates %d domains", tol)
	}
	dir := t.TempDir()
	keys := genKeys(t)
	opts := &kv.Options{Keys: keys, SliceStore: s, DataShards: testK, ParityShards: testM, Logger: slog.New(slog.DiscardHandler)}
	db, err := kv.Open(dir, opts)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { db.Close() }()
	blobs := map[string][]byte{}
	for i, n := range []int{1, 10_000, 300_000, 1 << 20, 3 << 20, 6 << 20} {
		k := fmt.Sprintf("blob-%d", i)
		blobs[k] = randData(uint64(1000+i), n)
		put(t, db, k, blobs[k])
	}
	t.Logf("stored %d slices", db.Stats().Slices)

	// Readers verify every blob in a loop until told to stop.
	var reads, failures atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for r := range 3 {
		wg.Go(func() {
			names := make([]string, 0, len(blobs))
			for k := range blobs {
				names = append(names, k)
			}
			for i := r; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				k := names[i%len(names)]
				got, err := read(db, k)
				reads.Add(1)
				if err != nil || !bytes.Equal(got, blobs[k]) {
					failures.Add(1)
					t.Errorf("reader %d: Get %q: %d bytes, %v", r, k, len(got), err)
				}
			}
		})
	}
	time.Sleep(3 * time.Second)
	before := reads.Load()
	sw.run("kill-volume", "1")
	killed := time.Now()
	time.Sleep(10 * time.Second)
	t.Logf("verified reads/s: %.1f before the kill, %.1f in the 10 s after it", float64(before)/3, float64(reads.Load()-before)/10)

	// A Put during the outage: it needs bucket 1, whose only volume server
	// is gone. It must succeed (and read back) or fail and leave nothing.
	fresh := randData(77, 2<<20)
	if _, err := db.Put(bg, "during-outage", bytes.NewReader(fresh)); err != nil {
		t.Logf("Put during the outage failed cleanly: %v", firstLine(err))
		if _, err := db.Stat(bg, "during-outage"); !errors.Is(err, kv.ErrNotFound) {
			t.Fatalf("failed Put left a Data: %v", err)
		}
	} else {
		t.Log("Put during the outage succeeded")
		blobs["during-outage"] = fresh
		mustRead(t, db, "during-outage", fresh)
	}
	rep, err := db.Scrub(bg, kv.ScrubOptions{})
	if err != nil || rep.ShardsBad == 0 || len(rep.Unreadable) != 0 {
		t.Fatalf("Scrub during the outage: %+v, %v", rep, err)
	}
	t.Logf("Scrub during the outage: %d slices, %d shards bad, none unreadable", rep.SlicesChecked, rep.ShardsBad)
	close(stop)
	wg.Wait()
	t.Logf("%d verified reads (%d after the kill, over %v), %d failures", reads.Load(), reads.Load()-before, time.Since(killed).Round(time.Second), failures.Load())
	if failures.Load() != 0 {
		t.FailNow()
	}

	sw.run("start-volume", "1")
	// The master needs a heartbeat to see the volumes again.
	deadline := time.Now().Add(60 * time.Second)
	for {
		rep, err = db.Scrub(bg, kv.ScrubOptions{})
		if err == nil && rep.ShardsBad == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("Scrub after the restart: %+v, %v", rep, err)
		}
		time.Sleep(2 * time.Second)
	}
	for k, b := range blobs {
		mustRead(t, db, k, b)
	}
	// Delete everything; the store is empty again.
	for k := range blobs {
		if _, err := db.Delete(bg, k); err != nil {
			t.Fatalf("Delete %q: %v", k, err)
		}
	}
	if n := db.Stats().Slices; n != 0 {
		t.Fatalf("%d slices left", n)
	}
}

func firstLine(err error) string {
	s, _, _ := strings.Cut(err.Error(), "\n")
	return s
}

// randReader streams incompressible bytes without holding them.
func randReader(seed uint64, n int64) io.Reader {
	var s [32]byte
	s[0] = byte(seed)
	s[1] = byte(seed >> 8)
	return io.LimitReader(rand.NewChaCha8(s), n)
}

// headerCopies lets the benchmark compare header settings
// (SEALKV_HEADER_COPIES); 0 is the default.
func headerCopies() int {
	n, _ := strconv.Atoi(os.Getenv("SEALKV_HEADER_COPIES"))
	return n
}
