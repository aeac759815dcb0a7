// Command sealkvbench drives sealkv through its public API for bench/run.sh,
// so that each operation can be timed (and its peak RSS taken) by
// /usr/bin/time as one process, like restic and borg are.
//
//	sealkvbench keygen KEYFILE
//	sealkvbench put   -store DIR -keys KEYFILE [STORE FLAGS] KEY FILE
//	sealkvbench get   -store DIR -keys KEYFILE KEY OUTFILE
//	sealkvbench tree  -store DIR -keys KEYFILE [STORE FLAGS] [-j N] [-batch N] ROOTKEY DIR
//	sealkvbench stats -store DIR -keys KEYFILE
//	sealkvbench genfiles DIR COUNT SIZE
//
// tree stores a directory as one Data per file and per directory, each entry
// a child (kv.WithParent) of its directory's Data, keyed
// "<directory key>/<name>"; a directory's content is its sorted listing
// (the layout of "sealkv put DIR"). STORE FLAGS are [-compression zstd|none]
// [-shards K+M] [-slices MIN/AVG/MAX]; the last two only matter when the
// store is created. Every command prints one JSON line on stdout with what
// it did.
package main

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log/slog"
	mrand "math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"runtime/trace"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	kv "github.com/sealkv/kv"
)

// record starts writing to the file named by the environment variable env,
// if set, and returns the matching stop.
func record(env string, start func(io.Writer) error, stop func()) func() {
	path := os.Getenv(env)
	if path == "" {
		return func() {}
	}
	f, err := os.Create(path)
	if err == nil {
		err = start(f)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "sealkvbench:", err)
		os.Exit(1)
	}
	return stop
}

func main() {
	if len(os.Args) < 2 {
		usage()
	}
	cmd, args := os.Args[1], os.Args[2:]
	// SEALKV_CPUPROFILE=FILE writes a CPU profile of the command (the
	// profile-driven changes in the performance notes came from these);
	// SEALKV_TRACE=FILE an execution trace (go tool trace: its -pprof=sync
	// and -pprof=sched profiles show where Puts wait).
	defer record("SEALKV_CPUPROFILE", pprof.StartCPUProfile, pprof.StopCPUProfile)()
	defer record("SEALKV_TRACE", trace.Start, trace.Stop)()
	// SEALKV_MUTEXPROFILE=FILE a mutex profile: where the mutexes that
	// others waited for were held (go tool pprof -top FILE).
	var mutexes *os.File
	defer record("SEALKV_MUTEXPROFILE", func(w io.Writer) error {
		runtime.SetMutexProfileFraction(1)
		mutexes = w.(*os.File)
		return nil
	}, func() { _ = pprof.Lookup("mutex").WriteTo(mutexes, 0) })()
	var err error
	switch cmd {
	case "keygen":
		err = keygen(args)
	case "put":
		err = put(args)
	case "get":
		err = get(args)
	case "tree":
		err = tree(args)
	case "stats":
		err = stats(args)
	case "genfiles":
		err = genfiles(args)
	default:
		usage()
	}
	if err != nil {
		pprof.StopCPUProfile()
		fmt.Fprintln(os.Stderr, "sealkvbench:", err)
		os.Exit(1)
	}
}

func usage() {
	fmt.Fprintln(os.Stderr, `usage:
  sealkvbench keygen KEYFILE
  sealkvbench put   -store DIR -keys KEYFILE [STORE FLAGS] KEY FILE
  sealkvbench get   -store DIR -keys KEYFILE KEY OUTFILE
  sealkvbench tree  -store DIR -keys KEYFILE [STORE FLAGS] [-j N] [-batch N] ROOTKEY DIR
  sealkvbench stats -store DIR -keys KEYFILE
  sealkvbench genfiles DIR COUNT SIZE    (COUNT random files, 1000 per subdirectory)
STORE FLAGS: [-compression zstd|none] [-shards K+M] [-slices MIN/AVG/MAX]`)
	os.Exit(64)
}

func keygen(args []string) error {
	if len(args) != 1 {
		usage()
	}
	k, err := kv.GenerateKeys()
	if err != nil {
		return err
	}
	b, err := k.MarshalBinary()
	if err != nil {
		return err
	}
	return os.WriteFile(args[0], b, 0o600)
}

type common struct {
	fs          *flag.FlagSet
	store, keys string
	compression string
	jobs        int
	batch       int
	shards      string
	slices      string
}

func parse(name string, args []string, want int) (*common, []string) {
	c := &common{fs: flag.NewFlagSet(name, flag.ExitOnError)}
	c.fs.StringVar(&c.store, "store", "", "store directory")
	c.fs.StringVar(&c.keys, "keys", "", "key file")
	c.fs.StringVar(&c.compression, "compression", "zstd", "zstd or none")
	c.fs.IntVar(&c.jobs, "j", 4, "files put concurrently (tree)")
	c.fs.IntVar(&c.batch, "batch", 0, "files per kv.Batch, committed together (tree; 0: every Put durable on its own)")
	c.fs.StringVar(&c.shards, "shards", "", "data+parity shards of new slices, e.g. 8+2 or 1+0 (default: the library's 8+2)")
	c.fs.StringVar(&c.slices, "slices", "", "MIN/AVG/MAX slice sizes in bytes of a new store (default: the library's)")
	_ = c.fs.Parse(args)
	if c.store == "" || c.keys == "" || c.fs.NArg() != want {
		usage()
	}
	return c, c.fs.Args()
}

func (c *common) open() (*kv.DB, error) {
	b, err := os.ReadFile(c.keys)
	if err != nil {
		return nil, err
	}
	k, err := kv.ParseKeys(b)
	if err != nil {
		return nil, err
	}
	o := &kv.Options{Keys: k, Logger: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))}
	switch c.compression {
	case "zstd":
		o.Compression = kv.CompressionZstd
	case "none":
		o.Compression = kv.CompressionNone
	default:
		return nil, fmt.Errorf("unknown -compression %q", c.compression)
	}
	if c.shards != "" {
		if !ints(c.shards, "+", &o.DataShards, &o.ParityShards) {
			return nil, fmt.Errorf("-shards %q: want K+M", c.shards)
		}
		if o.ParityShards == 0 {
			o.ParityShards = kv.NoParity
		}
	}
	if c.slices != "" && !ints(c.slices, "/", &o.MinSliceSize, &o.AvgSliceSize, &o.MaxSliceSize) {
		return nil, fmt.Errorf("-slices %q: want MIN/AVG/MAX", c.slices)
	}
	return kv.Open(c.store, o)
}

// ints parses s as len(dst) decimal integers joined by sep, all of s:
// fmt.Sscanf would accept "8+2x" as 8+2.
func ints(s, sep string, dst ...*int) bool {
	parts := strings.Split(s, sep)
	if len(parts) != len(dst) {
		return false
	}
	for i, p := range parts {
		v, err := strconv.Atoi(p)
		if err != nil {
			return false
		}
		*dst[i] = v
	}
	return true
}

func report(v map[string]any) {
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	v["go_heap_sys_mib"] = float64(ms.HeapSys) / (1 << 20)
	b, _ := json.Marshal(v)
	fmt.Println(string(b))
}

func put(args []string) error {
	c, a := parse("put", args, 2)
	db, err := c.open()
	if err != nil {
		return err
	}
	f, err := os.Open(a[1])
	if err != nil {
		db.Close()
		return err
	}
	defer f.Close()
	start := time.Now()
	d, err := db.Put(context.Background(), a[0], f)
	el := time.Since(start)
	if cerr := db.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	report(map[string]any{"op": "put", "key": a[0], "bytes": d.Content.OriginalSize, "slices": d.Content.NumSlices,
		"stored": d.Content.StorageSize, "seconds": el.Seconds(), "mb_s": float64(d.Content.OriginalSize) / el.Seconds() / 1e6})
	return nil
}

func get(args []string) error {
	c, a := parse("get", args, 2)
	db, err := c.open()
	if err != nil {
		return err
	}
	defer db.Close()
	start := time.Now()
	r, err := db.Get(context.Background(), a[0])
	if err != nil {
		return err
	}
	defer r.Close()
	f, err := os.Create(a[1])
	if err != nil {
		return err
	}
	n, err := io.Copy(f, r) // through Reader.WriteTo, as the CLI's get
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	el := time.Since(start)
	report(map[string]any{"op": "get", "key": a[0], "bytes": n, "seconds": el.Seconds(), "mb_s": float64(n) / el.Seconds() / 1e6})
	return nil
}

func stats(args []string) error {
	c, _ := parse("stats", args, 0)
	db, err := c.open()
	if err != nil {
		return err
	}
	defer db.Close()
	st := db.Stats()
	b, _ := json.Marshal(st)
	fmt.Println(string(b))
	return nil
}

// tree puts the directory dir under rootKey: directories first (a child
// needs its parent), files by -j workers. With -batch N the files go into
// batches of N, each committed by the worker that finishes its last Put
// while the next batch fills.
func tree(args []string) error {
	c, a := parse("tree", args, 2)
	rootKey, root := strings.TrimSuffix(a[0], "/"), a[1]
	db, err := c.open()
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancelCause(context.Background())
	defer cancel(nil)
	type file struct {
		key, path, parent string
		g                 *group
	}
	files := make(chan file, 256)
	var nfiles, ndirs, nbytes atomic.Int64
	var wg sync.WaitGroup
	for range max(c.jobs, 1) {
		wg.Go(func() {
			for f := range files {
				if ctx.Err() != nil {
					continue
				}
				fh, err := os.Open(f.path)
				if err != nil {
					cancel(err)
					continue
				}
				var n int64
				if f.g != nil {
					cr := &counter{r: fh}
					err = f.g.b.Put(ctx, f.key, cr, kv.WithParent(f.parent))
					n = cr.n
				} else {
					var d *kv.Data
					if d, err = db.Put(ctx, f.key, fh, kv.WithParent(f.parent)); err == nil {
						n = d.Content.OriginalSize
					}
				}
				fh.Close()
				if err == nil {
					err = f.g.done(ctx)
				}
				if err != nil {
					cancel(fmt.Errorf("%s: %w", f.path, err))
					continue
				}
				nfiles.Add(1)
				nbytes.Add(n)
			}
		})
	}
	start := time.Now()
	var g *group // the batch being filled
	send := func(f file) error {
		if c.batch > 0 {
			if g == nil {
				g = newGroup(db)
			}
			f.g = g.add()
			if g.n == c.batch {
				// The walker's hold: the last to let go commits.
				if err := g.done(ctx); err != nil {
					return err
				}
				g = nil
			}
		}
		files <- f
		return nil
	}
	var walk func(key, path, parent string) error
	walk = func(key, path, parent string) error {
		ents, err := os.ReadDir(path)
		if err != nil {
			return err
		}
		sort.Slice(ents, func(i, j int) bool { return ents[i].Name() < ents[j].Name() })
		var listing strings.Builder
		listing.WriteString("sealkv directory v1\n")
		for _, e := range ents {
			if e.IsDir() {
				listing.WriteString(e.Name() + "/\n")
			} else if e.Type().IsRegular() {
				listing.WriteString(e.Name() + "\n")
			}
		}
		var opts []kv.PutOption
		if parent != "" {
			opts = append(opts, kv.WithParent(parent))
		}
		if _, err := db.Put(ctx, key, strings.NewReader(listing.String()), opts...); err != nil {
			return fmt.Errorf("%s: %w", path, err)
		}
		ndirs.Add(1)
		for _, e := range ents {
			if ctx.Err() != nil {
				return context.Cause(ctx)
			}
			p, k := filepath.Join(path, e.Name()), key+"/"+e.Name()
			switch {
			case e.IsDir():
				if err := walk(k, p, key); err != nil {
					return err
				}
			case e.Type().IsRegular():
				if err := send(file{key: k, path: p, parent: key}); err != nil {
					return err
				}
			}
		}
		return nil
	}
	err = walk(rootKey, root, "")
	if g != nil {
		if gerr := g.done(ctx); err == nil {
			err = gerr
		}
	}
	close(files)
	wg.Wait()
	if err == nil {
		err = context.Cause(ctx)
	}
	el := time.Since(start)
	if cerr := db.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	n := nfiles.Load()
	report(map[string]any{"op": "tree", "key": rootKey, "files": n, "dirs": ndirs.Load(), "bytes": nbytes.Load(),
		"seconds": el.Seconds(), "files_s": float64(n) / el.Seconds(), "mb_s": float64(nbytes.Load()) / el.Seconds() / 1e6})
	return nil
}

// counter counts the bytes read through it.
type counter struct {
	r io.Reader
	n int64
}

func (c *counter) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

// group is one kv.Batch of tree's files. It is committed when the walker
// and every file's Put are done with it.
type group struct {
	b    *kv.Batch
	n    int          // files added (walker only)
	left atomic.Int64 // holds: the walker's and one per file not yet put
}

func newGroup(db *kv.DB) *group {
	g := &group{b: db.NewBatch()}
	g.left.Store(1)
	return g
}

func (g *group) add() *group {
	g.n++
	g.left.Add(1)
	return g
}

// done drops one hold and commits the batch when it was the last. A nil
// group (no batching) does nothing.
func (g *group) done(ctx context.Context) error {
	if g == nil || g.left.Add(-1) > 0 {
		return nil
	}
	return g.b.Commit(ctx)
}

// genfiles writes count files of size pseudo-random bytes (distinct
// content) into dir/dNNN/fNNNNNN, 1000 files per subdirectory.
func genfiles(args []string) error {
	if len(args) != 3 {
		usage()
	}
	var count, size int
	if _, err := fmt.Sscan(args[1], &count); err != nil {
		return err
	}
	if _, err := fmt.Sscan(args[2], &size); err != nil {
		return err
	}
	var seed [32]byte
	copy(seed[:], "sealkvbench genfiles")
	rng := mrand.NewChaCha8(seed)
	buf := make([]byte, size)
	for i := range count {
		d := filepath.Join(args[0], fmt.Sprintf("d%03d", i/1000))
		if i%1000 == 0 {
			if err := os.MkdirAll(d, 0o755); err != nil {
				return err
			}
		}
		rng.Read(buf)
		if size >= 8 {
			binary.LittleEndian.PutUint64(buf, uint64(i)) // distinct even if the generator repeated
		}
		if err := os.WriteFile(filepath.Join(d, fmt.Sprintf("f%06d", i)), buf, 0o644); err != nil {
			return err
		}
	}
	return nil
}
