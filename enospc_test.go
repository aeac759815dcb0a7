package kv

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"runtime/pprof"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
)

// fullFS is a file system that runs out of space: once full is set, every
// write to a file whose name match accepts (all files if nil) fails with an
// error wrapping syscall.ENOSPC, as on a full disk. (Pebble preallocates
// its write-ahead logs, so on a real disk their writes can go on for a
// while after sstable writes fail.)
type fullFS struct {
	vfs.FS
	full  atomic.Bool
	match func(name string) bool
	hits  atomic.Int64
}

func (f *fullFS) Create(name string, c vfs.DiskWriteCategory) (vfs.File, error) {
	file, err := f.FS.Create(name, c)
	if err != nil {
		return nil, err
	}
	return &fullFile{File: file, fs: f, name: name}, nil
}

func (f *fullFS) ReuseForWrite(oldname, newname string, c vfs.DiskWriteCategory) (vfs.File, error) {
	file, err := f.FS.ReuseForWrite(oldname, newname, c)
	if err != nil {
		return nil, err
	}
	return &fullFile{File: file, fs: f, name: newname}, nil
}

func (f *fullFS) OpenReadWrite(name string, c vfs.DiskWriteCategory, opts ...vfs.OpenOption) (vfs.File, error) {
	file, err := f.FS.OpenReadWrite(name, c, opts...)
	if err != nil {
		return nil, err
	}
	return &fullFile{File: file, fs: f, name: name}, nil
}

// noSpace is the error of a write to name, or nil if there is room.
func (f *fullFS) noSpace(op, name string) error {
	if !f.full.Load() || (f.match != nil && !f.match(name)) {
		return nil
	}
	f.hits.Add(1)
	return &fs.PathError{Op: op, Path: name, Err: syscall.ENOSPC}
}

type fullFile struct {
	vfs.File
	fs   *fullFS
	name string
}

func (f *fullFile) Write(p []byte) (int, error) {
	if err := f.fs.noSpace("write", f.name); err != nil {
		return 0, err
	}
	return f.File.Write(p)
}

func (f *fullFile) WriteAt(p []byte, off int64) (int, error) {
	if err := f.fs.noSpace("write", f.name); err != nil {
		return 0, err
	}
	return f.File.WriteAt(p, off)
}

func (f *fullFile) Preallocate(off, n int64) error {
	if err := f.fs.noSpace("fallocate", f.name); err != nil {
		return err
	}
	return f.File.Preallocate(off, n)
}

func isTable(name string) bool { return strings.HasSuffix(name, ".sst") }

// hangScale stretches inTime's limits: they only have to tell a call that
// never returns from a slow one (a review run on a loaded machine once took
// more than 10 s for a Close that returned).
const hangScale = 4

// inTime runs f and fails the test if it has not returned after d, with
// the goroutines in the log: a call that never returns is what these tests
// look for. d is scaled by hangScale, since a loaded machine under -race
// can take several times the usual time for what does return.
func inTime(t *testing.T, what string, d time.Duration, f func()) {
	t.Helper()
	d *= hangScale
	done := make(chan struct{})
	go func() { defer close(done); f() }()
	select {
	case <-done:
	case <-time.After(d):
		var b strings.Builder
		_ = pprof.Lookup("goroutine").WriteTo(&b, 1)
		t.Fatalf("%s did not return within %v:\n%s", what, d, tail([]byte(b.String()), 8000))
	}
}

// reopenWhenFree makes room on the disk and opens the store, which must
// hold its invariants and every acknowledged value. An Open that gave up on
// a full disk leaves Pebble retrying its flush (once a second) and holding
// the lock until it succeeds, so the first attempts may find the store
// locked.
func reopenWhenFree(t *testing.T, keys *Keys, ffs *fullFS, acked map[string][]byte) {
	t.Helper()
	ffs.full.Store(false)
	for tries, deadline := 1, time.Now().Add(10*time.Second); ; tries++ {
		db, err := reopenChecked(keys, ffs)
		if err == nil {
			t.Logf("reopened at try %d", tries)
			t.Cleanup(func() { db.Close() })
			for k, b := range acked {
				if !bytes.Equal(get(t, db, k), b) {
					t.Fatalf("acknowledged %q differs after reopening", k)
				}
			}
			return
		}
		if !errors.Is(err, ErrLocked) || time.Now().After(deadline) {
			t.Fatalf("reopen with room on the disk: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestOpenOnFullDisk opens a store whose write-ahead logs hold small Puts
// on a disk with no room for sstables. Pebble flushes what it replays
// before its Open returns and retries a failed flush at once and forever,
// so Open never returned (found in review: a "sealkv get" under "ulimit -f"
// printed one "background error" line per attempt until killed). It must
// fail with the cause, and the store must open whole once there is room.
func TestOpenOnFullDisk(t *testing.T) {
	keys := newKeys(t)
	ffs := &fullFS{FS: vfs.NewMem(), match: isTable}
	db := openDB(t, "/db", memOpts(keys, ffs))
	want := map[string][]byte{}
	for i := range 20 {
		k := fmt.Sprint("k", i)
		want[k] = randBytes(100 << 10)
		mustPut(t, db, k, want[k])
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	ffs.full.Store(true)
	inTime(t, "Open on a full disk", 10*time.Second, func() {
		db, err := Open("/db", memOpts(keys, ffs))
		if err == nil {
			db.Close()
			t.Error("Open on a full disk succeeded")
		} else if t.Logf("Open: %v", err); !errors.Is(err, syscall.ENOSPC) {
			t.Errorf("Open on a full disk: %v, want an error wrapping ENOSPC", err)
		}
	})
	reopenWhenFree(t, keys, ffs, want)
}

// TestPutsOnFullDisk Puts small values while the disk has room for the
// write-ahead logs (preallocated) but not for sstables. Pebble retries the
// failed flushes at once and forever and stalls commits once memtables pile
// up: Put never returned, and neither did Close. The DB must fail instead
// (ErrFailed wrapping ENOSPC), Close must return, and everything
// acknowledged must be there once there is room.
func TestPutsOnFullDisk(t *testing.T) {
	keys := newKeys(t)
	ffs := &fullFS{FS: vfs.NewMem(), match: isTable}
	db := openDB(t, "/db", memOpts(keys, ffs))
	ffs.full.Store(true)
	acked := map[string][]byte{}
	inTime(t, "Puts on a full disk", 30*time.Second, func() {
		for i := 0; ; i++ {
			k, b := fmt.Sprint("k", i), randBytes(100<<10)
			_, err := db.Put(ctx, k, bytes.NewReader(b))
			if err != nil {
				if !errors.Is(err, ErrFailed) || !errors.Is(err, syscall.ENOSPC) {
					t.Errorf("Put %d: %v, want ErrFailed wrapping ENOSPC", i, err)
				}
				return
			}
			acked[k] = b
		}
	})
	t.Logf("%d Puts acknowledged before the failure", len(acked))
	inTime(t, "Close on a full disk", 10*time.Second, func() {
		if err := db.Close(); !errors.Is(err, ErrFailed) {
			t.Errorf("Close: %v, want ErrFailed", err)
		}
	})
	reopenWhenFree(t, keys, ffs, acked)
}

// TestCallsOnFullDisk runs each kind of call on a disk that has filled up,
// either for sstables only (the write-ahead logs are preallocated) or for
// every file: each must return (an error wrapping ENOSPC, or ErrFailed
// for a write-ahead log Pebble could not write), Close must return, and
// everything acknowledged must be there once there is room.
func TestCallsOnFullDisk(t *testing.T) {
	calls := map[string]func(db *DB) (acked map[string][]byte, err error){
		"put-small": func(db *DB) (map[string][]byte, error) { return putEach(db, 1, 100<<10) },
		"put-large": func(db *DB) (map[string][]byte, error) { return putEach(db, 1, 6<<20) },
		"puts":      func(db *DB) (map[string][]byte, error) { return putEach(db, 1000, 100<<10) },
		"batch": func(db *DB) (map[string][]byte, error) {
			b := db.NewBatch()
			defer b.Close()
			put := map[string][]byte{"b0": randBytes(50 << 10), "b1": randBytes(50 << 10)}
			for k, v := range put {
				if err := b.Put(ctx, k, bytes.NewReader(v)); err != nil {
					return nil, err
				}
			}
			return put, b.Commit(ctx)
		},
		"delete": func(db *DB) (map[string][]byte, error) { _, err := db.Delete(ctx, "k0"); return nil, err },
		"scrub": func(db *DB) (map[string][]byte, error) {
			_, err := db.Scrub(ctx, ScrubOptions{Repair: true})
			return nil, err
		},
	}
	for _, mode := range []string{"tables", "all"} {
		for name, call := range calls {
			t.Run(mode+"/"+name, func(t *testing.T) {
				keys := newKeys(t)
				ffs := &fullFS{FS: vfs.NewMem()}
				if mode == "tables" {
					ffs.match = isTable
				}
				db := openDB(t, "/db", memOpts(keys, ffs))
				acked := map[string][]byte{"k0": randBytes(200 << 10), "k1": randBytes(5 << 20)}
				for k, v := range acked {
					mustPut(t, db, k, v)
				}
				ffs.full.Store(true)
				inTime(t, name, 30*time.Second, func() {
					more, err := call(db)
					if err != nil && !errors.Is(err, syscall.ENOSPC) {
						t.Errorf("%s: %v, want an error wrapping ENOSPC", name, err)
					}
					t.Logf("%s: %v (%d acknowledged)", name, err, len(more))
					if name == "delete" && err == nil {
						delete(acked, "k0")
					}
					if name == "batch" && err != nil {
						more = nil
					}
					for k, v := range more {
						acked[k] = v
					}
				})
				inTime(t, "Close", 10*time.Second, func() {
					if err := db.Close(); err != nil && !errors.Is(err, ErrFailed) {
						t.Errorf("Close: %v", err)
					}
				})
				reopenWhenFree(t, keys, ffs, acked)
			})
		}
	}
}

// putEach Puts n values of size bytes each until one fails, and returns
// those acknowledged and that failure.
func putEach(db *DB, n, size int) (map[string][]byte, error) {
	acked := map[string][]byte{}
	for i := range n {
		k, b := fmt.Sprint("p", i), randBytes(size)
		if _, err := db.Put(ctx, k, bytes.NewReader(b)); err != nil {
			return acked, err
		}
		acked[k] = b
	}
	return acked, nil
}
