package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"time"

	"github.com/spf13/cobra"

	"github.com/sealkv/kv"
)

type demoFlags struct {
	keep    bool
	limitMB int
	source  string
	bigFile string
	jobs    int
}

const demoLong = `Demo shows the whole job on real files of this machine, in a temporary
store with fresh keys (removed at the end unless --keep):

  1. put a source tree (by default the Go toolchain's src), directories as
     parents; throughput and dedup ratio
  2. put the same tree again under another key: stored bytes barely grow
  3. insert a line at the start of one file: a new version, few new slices
  4. list the children of a directory
  5. deletes refused (children, older versions) and accepted, with reports
  6. put and get a large file (the go binary)
  7. corrupt one byte of a shard on disk; every read still returns the
     exact bytes, repaired from parity
  8. scrub --repair rewrites the bad shard; a second scrub finds none

--limit-mb bounds the source tree (its first files in lexical order); the
large file of step 6 comes on top.`

func (a *app) demoCommand() *cobra.Command {
	var f demoFlags
	c := &cobra.Command{
		Use:   "demo",
		Short: "Show everything sealkv does on real files, in a temporary store",
		Long:  demoLong,
		Args:  usageArgs(cobra.NoArgs),
		RunE: func(c *cobra.Command, _ []string) error {
			if a.json {
				return usagef("demo prints text only; it has no --json output")
			}
			return a.runDemo(ctx(c), f)
		},
	}
	c.Flags().BoolVar(&f.keep, "keep", false, "keep the temporary store and print its path")
	c.Flags().IntVar(&f.limitMB, "limit-mb", 32, "MiB of source files to put")
	c.Flags().StringVar(&f.source, "source", "", "source tree (default: $(go env GOROOT)/src)")
	c.Flags().StringVar(&f.bigFile, "big-file", "", "large file for steps 6-7 (default: the go binary)")
	c.Flags().IntVarP(&f.jobs, "jobs", "j", 8, "files put concurrently")
	return c
}

// demo is one run of the demo.
type demo struct {
	a    *app // prints indented, for the shared printers
	out  io.Writer
	f    demoFlags
	dir  string
	keys *kv.Keys
	db   *kv.DB
	logs *syncBuffer
	plan *plan
	big  string
	step int

	edited, editedDir string // key given a second version, and its parent
}

const (
	demoCopy1 = "copy1/src"
	demoCopy2 = "copy2/src"
	demoBig   = "bin/big"
)

func (a *app) runDemo(ctx context.Context, f demoFlags) (err error) {
	start := time.Now()
	d := &demo{a: &app{stdout: indent(a.stdout, "    "), stderr: a.stderr}, out: a.stdout, f: f, logs: &syncBuffer{}}
	if err := d.setup(ctx); err != nil {
		return err
	}
	defer func() { err = d.cleanup(err) }()
	steps := []struct {
		title string
		fn    func(context.Context) error
	}{
		{fmt.Sprintf("put the tree as %q (directories are the parents of their entries)", demoCopy1), d.putFirst},
		{fmt.Sprintf("put the same tree again as %q", demoCopy2), d.putSecond},
		{"a new version: one line inserted at the start of a file", d.newVersion},
		{"children of a directory (db.Children)", d.children},
		{"deletes: refused, then accepted", d.deletes},
		{"a large file", d.bigFile},
		{"bit rot: one byte of a shard corrupted on disk, then everything read back", d.corrupt},
		{"scrub --repair", d.scrub},
	}
	for _, s := range steps {
		if err := d.run(ctx, s.title, s.fn); err != nil {
			return err
		}
	}
	fmt.Fprintf(d.out, "\nfinal stats:\n")
	if err := d.a.printStats(d.db.Stats()); err != nil {
		return err
	}
	fmt.Fprintf(d.out, "\ndemo finished in %s\n", fmtDur(time.Since(start)))
	return nil
}

// run prints a step's header, runs it and prints its time.
func (d *demo) run(ctx context.Context, title string, fn func(context.Context) error) error {
	d.step++
	fmt.Fprintf(d.out, "\n[%d] %s\n", d.step, title)
	start := time.Now()
	if err := fn(ctx); err != nil {
		return fmt.Errorf("demo step %d: %w", d.step, err)
	}
	d.say("(step took %s)", fmtDur(time.Since(start)))
	return nil
}

// say prints an indented line.
func (d *demo) say(format string, args ...any) {
	fmt.Fprintf(d.a.stdout, format+"\n", args...)
}

// setup plans the source tree, makes the keys and opens the store.
func (d *demo) setup(ctx context.Context) error {
	src, err := d.source()
	if err != nil {
		return err
	}
	if d.plan, err = planTree(ctx, src, int64(d.f.limitMB)<<20); err != nil {
		return err
	}
	if d.plan.files == 0 {
		return fmt.Errorf("no files in %s", src)
	}
	if d.big, err = d.bigPath(); err != nil {
		return err
	}
	keyTime, err := d.makeStore()
	if err != nil {
		return err
	}
	d.header(src, keyTime)
	return nil
}

// makeStore creates the temporary directory, the keys and the store, and
// says how long making the keys took.
func (d *demo) makeStore() (time.Duration, error) {
	var err error
	if d.dir, err = os.MkdirTemp("", "sealkv-demo-"); err != nil {
		return 0, err
	}
	t := time.Now()
	if d.keys, err = kv.GenerateKeys(); err != nil {
		return 0, errors.Join(err, os.RemoveAll(d.dir))
	}
	keyTime := time.Since(t)
	if err := d.saveKeys(); err != nil {
		return 0, errors.Join(err, os.RemoveAll(d.dir))
	}
	if err := d.open(); err != nil {
		return 0, errors.Join(err, os.RemoveAll(d.dir))
	}
	return keyTime, nil
}

func (d *demo) header(src string, keyTime time.Duration) {
	kept := "removed at the end; --keep keeps it"
	if d.f.keep {
		kept = "kept (--keep)"
	}
	fp := d.keys.Fingerprint()
	fmt.Fprintf(d.out, "sealkv demo: the whole job on real files of this machine\n")
	d.say("store   %s (%s)", d.storeDir(), kept)
	d.say("keys    new ML-KEM-1024 key pair + store secret, fingerprint %x, made in %s", fp[:8], fmtDur(keyTime))
	d.say("source  %s: %d files, %d directories, %s (the first files in lexical order up to --limit-mb %d)",
		src, d.plan.files, d.plan.dirs, fmtBytes(d.plan.bytes), d.f.limitMB)
	d.say("cpus    %d (GOMAXPROCS)", runtime.GOMAXPROCS(0))
}

func (d *demo) storeDir() string { return filepath.Join(d.dir, "store") }

func (d *demo) keyFile() string { return filepath.Join(d.dir, "demo.key") }

// saveKeys writes the demo's keys next to the store, for --keep.
func (d *demo) saveKeys() error {
	b, err := d.keys.MarshalBinary()
	if err != nil {
		return err
	}
	return writeExclusive(d.keyFile(), b)
}

// open opens the store with the library's log captured, to be shown.
func (d *demo) open() error {
	logger := slog.New(newLineHandler(d.logs, slog.LevelWarn, false))
	db, err := kv.Open(d.storeDir(), &kv.Options{Keys: d.keys, Logger: logger})
	d.db = db
	return err
}

// cleanup closes the store and removes it unless --keep.
func (d *demo) cleanup(err error) error {
	if d.db != nil {
		if cerr := d.db.Close(); err == nil {
			err = cerr
		}
	}
	if d.f.keep {
		fmt.Fprintf(d.out, "store kept; look inside with:\n  export SEALKV_STORE=%s SEALKV_KEYS=%s\n  sealkv ls -l copy1/src/\n", d.storeDir(), d.keyFile())
		return err
	}
	if rerr := os.RemoveAll(d.dir); err == nil {
		err = rerr
	}
	return err
}

// source is --source or the Go toolchain's src directory.
func (d *demo) source() (string, error) {
	if d.f.source != "" {
		return d.f.source, nil
	}
	src := filepath.Join(goroot(), "src")
	if _, err := os.Stat(src); err != nil {
		return "", &cliError{code: exitNotFound, msg: fmt.Sprintf("no Go source tree at %s", src), hint: "give one with --source DIR"}
	}
	return src, nil
}

// goroot asks the go command, then $GOROOT.
func goroot() string {
	out, err := exec.Command("go", "env", "GOROOT").Output()
	if s := strings.TrimSpace(string(out)); err == nil && s != "" {
		return s
	}
	return os.Getenv("GOROOT")
}

// bigPath is --big-file, the go binary, or the largest planned file.
func (d *demo) bigPath() (string, error) {
	if d.f.bigFile != "" {
		return d.f.bigFile, nil
	}
	exe := "go"
	if runtime.GOOS == "windows" {
		exe += ".exe"
	}
	if p := filepath.Join(goroot(), "bin", exe); fileExists(p) {
		return p, nil
	}
	var best *entry
	for _, e := range d.plan.entries {
		if !e.dir && (best == nil || e.size > best.size) {
			best = e
		}
	}
	return filepath.Join(d.plan.root, filepath.FromSlash(best.rel)), nil
}

func fileExists(p string) bool {
	info, err := os.Stat(p)
	return err == nil && info.Mode().IsRegular()
}

// syncBuffer is a Buffer safe for the logger's concurrent writes.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

// Write appends p.
func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

// take returns and clears what was logged.
func (s *syncBuffer) take() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := s.b.String()
	s.b.Reset()
	return out
}

// indentWriter prefixes every line written with a fixed string.
type indentWriter struct {
	w      io.Writer
	prefix string
	mid    bool // in the middle of a line
}

func indent(w io.Writer, prefix string) io.Writer { return &indentWriter{w: w, prefix: prefix} }

// Write writes p with the prefix before each line.
func (iw *indentWriter) Write(p []byte) (int, error) {
	var b bytes.Buffer
	for _, line := range bytes.SplitAfter(p, []byte("\n")) {
		if len(line) == 0 {
			continue
		}
		if !iw.mid {
			b.WriteString(iw.prefix)
		}
		b.Write(line)
		iw.mid = line[len(line)-1] != '\n'
	}
	if _, err := iw.w.Write(b.Bytes()); err != nil {
		return 0, err
	}
	return len(p), nil
}
