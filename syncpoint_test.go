package kv

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/cockroachdb/pebble/v2/vfs"
)

// syncPointFS counts the syncs of every file and directory and, at sync
// number at, takes a crash clone of the file system as it was just before
// that sync: the state a power loss at that point leaves. The clone keeps
// what was synced, and with all set everything written so far too (as if
// the system had written it back just in time): both are such states.
// With every set, it appends such a clone to *every before each sync.
type syncPointFS struct {
	linkGateFS
	n     *atomic.Int64
	at    int64
	all   bool
	every *[]*vfs.MemFS
	mu    *sync.Mutex
	clone **vfs.MemFS
}

func newSyncPointFS(base linkGateFS, at int64) syncPointFS {
	var clone *vfs.MemFS
	return syncPointFS{linkGateFS: base, n: new(atomic.Int64), at: at, mu: new(sync.Mutex), clone: &clone}
}

func (fs syncPointFS) synced() {
	if fs.n.Add(1) != fs.at && fs.every == nil {
		return
	}
	cfg := vfs.CrashCloneCfg{}
	if fs.all {
		cfg = vfs.CrashCloneCfg{UnsyncedDataPercent: 100, RNG: rand.New(rand.NewPCG(1, 1))}
	}
	c := fs.crashClone(cfg)
	fs.mu.Lock()
	if *fs.clone = c; fs.every != nil {
		*fs.every = append(*fs.every, c)
	}
	fs.mu.Unlock()
}

// taken returns the clone, if sync number at was reached.
func (fs syncPointFS) taken() *vfs.MemFS {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	return *fs.clone
}

func (fs syncPointFS) wrap(f vfs.File, err error) (vfs.File, error) {
	if err != nil {
		return nil, err
	}
	return syncPointFile{File: f, fs: fs}, nil
}

func (fs syncPointFS) Create(name string, c vfs.DiskWriteCategory) (vfs.File, error) {
	return fs.wrap(fs.linkGateFS.Create(name, c))
}

func (fs syncPointFS) Open(name string, opts ...vfs.OpenOption) (vfs.File, error) {
	return fs.wrap(fs.linkGateFS.Open(name, opts...))
}

func (fs syncPointFS) OpenReadWrite(name string, c vfs.DiskWriteCategory, opts ...vfs.OpenOption) (vfs.File, error) {
	return fs.wrap(fs.linkGateFS.OpenReadWrite(name, c, opts...))
}

func (fs syncPointFS) OpenDir(name string) (vfs.File, error) {
	return fs.wrap(fs.linkGateFS.OpenDir(name))
}

func (fs syncPointFS) ReuseForWrite(old, new string, c vfs.DiskWriteCategory) (vfs.File, error) {
	return fs.wrap(fs.linkGateFS.ReuseForWrite(old, new, c))
}

type syncPointFile struct {
	vfs.File
	fs syncPointFS
}

func (f syncPointFile) Sync() error     { f.fs.synced(); return f.File.Sync() }
func (f syncPointFile) SyncData() error { f.fs.synced(); return f.File.SyncData() }
func (f syncPointFile) SyncTo(n int64) (bool, error) {
	f.fs.synced()
	return f.File.SyncTo(n)
}

// syncOp is one step of syncPointWorkload and what it leaves acknowledged:
// each key's expected bytes (nil: absent).
type syncOp struct {
	name string
	run  func(db *DB) error
	key  string
	want []byte
}

// syncPointWorkload is a fixed sequence of Puts (shared slices, a large
// ingested one, a Batch), PruneVersions and Deletes.
func syncPointWorkload() []syncOp {
	rng := rand.New(rand.NewPCG(1, 2))
	blob := func(n int) []byte {
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(rng.Uint32())
		}
		return b
	}
	a, b, c, large := blob(40<<10), blob(30<<10), blob(20<<10), blob(5<<20)
	ab := append(append([]byte(nil), a...), b...)
	put := func(key string, v []byte) syncOp {
		return syncOp{name: "put " + key, key: key, want: v, run: func(db *DB) error {
			_, err := db.Put(ctx, key, bytes.NewReader(v))
			return err
		}}
	}
	del := func(key string) syncOp {
		return syncOp{name: "delete " + key, key: key, run: func(db *DB) error {
			_, err := db.Delete(ctx, key)
			return err
		}}
	}
	return []syncOp{
		put("a", a),
		put("b", ab),
		put("l", large),
		put("a", c),
		{name: "prune a", key: "a", want: c, run: func(db *DB) error {
			_, err := db.PruneVersions(ctx, "a", 0)
			return err
		}},
		del("b"),
		put("d", b),
		{name: "batch e", key: "e", want: ab, run: func(db *DB) error {
			bt := db.NewBatch()
			defer bt.Close()
			if err := bt.Put(ctx, "e", bytes.NewReader(ab)); err != nil {
				return err
			}
			return bt.Commit(ctx)
		}},
		del("l"),
		del("a"),
	}
}

// runSyncPoints runs the workload on fs; it returns the index of the
// operation during which sync number fs.at happened (len(ops) if none).
func runSyncPoints(t *testing.T, keys *Keys, fs syncPointFS, ops []syncOp) int {
	db, err := Open("/db", memOpts(keys, fs))
	if err != nil {
		t.Fatal(err)
	}
	at := len(ops)
	for i, op := range ops {
		if err := op.run(db); err != nil {
			t.Fatalf("%s: %v", op.name, err)
		}
		if at == len(ops) && fs.taken() != nil {
			at = i
		}
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	return at
}

// checkSyncPoint opens the crashed file system and checks the invariants,
// that operations before inflight are there and later ones are not, and
// that the one in flight is all or nothing.
func checkSyncPoint(keys *Keys, fs vfs.FS, ops []syncOp, inflight int) error {
	db, err := reopenChecked(keys, fs)
	if err != nil {
		return err
	}
	defer db.Close()
	want := map[string][]byte{}
	for _, op := range ops {
		want[op.key] = nil // absent until an operation before inflight wrote it
	}
	for _, op := range ops[:inflight] {
		want[op.key] = op.want
	}
	for k, w := range want {
		got, err := getBytes(db, k)
		if inflight < len(ops) && k == ops[inflight].key && (bytes.Equal(got, ops[inflight].want) || ops[inflight].want == nil && errors.Is(err, ErrNotFound)) {
			continue
		}
		if w == nil && errors.Is(err, ErrNotFound) {
			continue
		}
		if err != nil || !bytes.Equal(got, w) {
			return fmt.Errorf("%q: got %d bytes, err %v; want %d bytes", k, len(got), err, len(w))
		}
	}
	return nil
}

func getBytes(db *DB, key string) ([]byte, error) {
	r, err := db.Get(ctx, key)
	if err != nil {
		return nil, err
	}
	defer r.Close()
	var buf bytes.Buffer
	_, err = buf.ReadFrom(r)
	return buf.Bytes(), err
}

// TestSyncPointCrashes crashes a fixed workload just before one of its
// syncs, recovers and checks the store; every SEALKV_RECOVERY_STEP-th of
// those crashes it also crashes the recovery before each of its syncs, and
// checks that the next Open finishes it (recovery is idempotent). Each sync
// is one point at which a step becomes durable, so all of them cover every
// order a power loss can cut. By default it takes every
// SEALKV_SYNC_STEP-th (10) sync point from a random start, and nests the
// recovery crashes in every 6th, so that CI (under the race detector,
// ~7 s per point, ~25 s per nested one) covers different points each run;
// SEALKV_SYNC_STEP=1 SEALKV_RECOVERY_STEP=1 takes them all (~70 points).
func TestSyncPointCrashes(t *testing.T) {
	keys := newKeys(t)
	ops := syncPointWorkload()
	total := newSyncPointFS(newLinkGateFS(), -1)
	runSyncPoints(t, keys, total, ops)
	n := total.n.Load()
	step := int64(envInt("SEALKV_SYNC_STEP", 10))
	nested := envInt("SEALKV_RECOVERY_STEP", 6)
	start := 1 + rand.Int64N(step)
	t.Logf("%d sync points; crashing at %d, then every %d", n, start, step)
	for i, at := 0, start; at <= n; i, at = i+1, at+step {
		fs := newSyncPointFS(newLinkGateFS(), at)
		inflight := runSyncPoints(t, keys, fs, ops)
		if fs.taken() == nil {
			continue // background syncs vary: this run made fewer
		}
		if err := checkSyncPoint(keys, fs.taken().CrashClone(vfs.CrashCloneCfg{}), ops, inflight); err != nil {
			t.Errorf("sync point %d (during %q): %v", at, ops[min(inflight, len(ops)-1)].name, err)
		}
		if i%nested == 0 {
			checkRecoveryCrashes(t, keys, fs.taken(), ops, inflight)
		}
	}
}

// checkRecoveryCrashes crashes the recovery of crashed just before each of
// its syncs in turn, and checks that the next Open recovers.
func checkRecoveryCrashes(t *testing.T, keys *Keys, crashed *vfs.MemFS, ops []syncOp, inflight int) {
	count := newSyncPointFS(linkGateFS{MemFS: crashed.CrashClone(vfs.CrashCloneCfg{}), gate: new(sync.RWMutex)}, -1)
	n, err := openCounting(keys, count)
	if err != nil {
		t.Fatalf("reopen: %v", err)
	}
	for at := int64(1); at <= n; at++ {
		fs := newSyncPointFS(linkGateFS{MemFS: crashed.CrashClone(vfs.CrashCloneCfg{}), gate: new(sync.RWMutex)}, at)
		if _, err := openCounting(keys, fs); err != nil {
			t.Fatalf("reopen: %v", err)
		}
		if fs.taken() == nil {
			continue
		}
		if err := checkSyncPoint(keys, fs.taken(), ops, inflight); err != nil {
			t.Errorf("recovery sync point %d of %d (after a crash during %q): %v", at, n, ops[min(inflight, len(ops)-1)].name, err)
		}
	}
}

// openCounting opens the store on fs and closes it; it returns how many
// syncs the Open made.
func openCounting(keys *Keys, fs syncPointFS) (int64, error) {
	db, err := Open("/db", memOpts(keys, fs))
	if err != nil {
		return 0, err
	}
	n := fs.n.Load()
	return n, db.Close()
}

// TestCrashCreatingStoreOpens crashes the creation of a new store just
// before each of its syncs, in the two states syncPointFS takes, and checks
// that the store then opens and works. Among those states are keyspaces
// with a MANIFEST and no manifest marker, and with a marker and no OPTIONS
// file: Open must take them for keyspaces being created, not for ones
// that lost their marker (TestLostManifestMarkerRefused), or a store
// whose creation was cut short could never be opened.
func TestCrashCreatingStoreOpens(t *testing.T) {
	keys := newKeys(t)
	seen := map[string]bool{}
	for _, all := range []bool{false, true} {
		fs := newSyncPointFS(newLinkGateFS(), -1)
		fs.all, fs.every = all, new([]*vfs.MemFS)
		if _, err := openCounting(keys, fs); err != nil {
			t.Fatal(err)
		}
		for i, crashed := range *fs.every {
			for _, ks := range []string{"meta", "slices"} {
				seen[ks+creationState(crashed, "/db/"+ks)] = true
			}
			db, err := Open("/db", memOpts(keys, crashed))
			if err != nil {
				t.Errorf("crash before sync %d of %d (all written: %v): %v", i+1, len(*fs.every), all, err)
				continue
			}
			mustPut(t, db, "a", []byte("x"))
			if err := db.Close(); err != nil {
				t.Fatal(err)
			}
		}
	}
	for _, want := range []string{"meta: MANIFEST, no marker", "meta: marker, no OPTIONS", "slices: MANIFEST, no marker", "slices: marker, no OPTIONS"} {
		if !seen[want] {
			t.Errorf("no crash left %q", want)
		}
	}
}

// creationState names the state of the keyspace in dir that
// TestCrashCreatingStoreOpens looks for, if it is in one.
func creationState(fs vfs.FS, dir string) string {
	names, _ := fs.List(dir)
	var manifest, marker, options bool
	for _, n := range names {
		manifest = manifest || strings.HasPrefix(n, "MANIFEST-")
		marker = marker || strings.HasPrefix(n, "marker.manifest.")
		options = options || strings.HasPrefix(n, "OPTIONS-")
	}
	switch {
	case manifest && !marker:
		return ": MANIFEST, no marker"
	case marker && !options:
		return ": marker, no OPTIONS"
	}
	return ""
}
