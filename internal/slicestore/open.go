package slicestore

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"
)

// NoSpace reports whether err says a file could not grow: a full disk
// (ENOSPC), a full quota (EDQUOT) or the process's file size limit (EFBIG,
// "ulimit -f").
func NoSpace(err error) bool {
	return errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT) || errors.Is(err, syscall.EFBIG)
}

// OpenDB is pebble.Open, except that it returns an error when a flush
// fails for lack of space (NoSpace) before Pebble's Open returns, and
// when the keyspace in dir was created but its manifest marker is gone
// (see created), or is gone and opts.ErrorIfNotExists says it must
// exist: errors.Is(err, pebble.ErrDBDoesNotExist).
//
// Pebble v2.1.7 flushes the memtables it replays from the write-ahead log
// before its Open returns, and retries a failed flush at once and forever
// (compaction.go, DB.flush: "TODO(peter): count consecutive flush errors
// and backoff"), so on a full disk its Open never returns. Nothing can
// cancel it: it goes on in the background, retrying once a second and
// holding the store's lock, until a flush succeeds (there is room again);
// then it closes the DB and the lock is free.
func OpenDB(dir string, opts *pebble.Options) (*pebble.DB, error) {
	w := &openWatch{failed: make(chan error, 1)}
	o := opts.Clone()
	if !o.ErrorIfNotExists {
		c, err := created(o.FS, dir)
		if err != nil {
			return nil, err
		}
		o.ErrorIfNotExists = c
	}
	o.AddEventListener(pebble.EventListener{FlushEnd: w.flushEnd})
	type result struct {
		db  *pebble.DB
		err error
	}
	done := make(chan result, 1)
	go func() {
		db, err := pebble.Open(dir, o)
		done <- result{db, err}
	}()
	select {
	case r := <-done:
		w.state.Store(watchOpen)
		if errors.Is(r.err, pebble.ErrDBDoesNotExist) {
			return nil, fmt.Errorf("%s: the keyspace was created but has no manifest marker (marker.manifest.*, "+
				"which names its current MANIFEST); opened as new, it would lose its tables: %w", dir, pebble.ErrDBDoesNotExist)
		}
		return r.db, r.err
	case err := <-w.failed:
		w.state.Store(watchAbandoned)
		go func() {
			if r := <-done; r.err == nil {
				_ = r.db.Close()
			}
		}()
		return nil, fmt.Errorf("flushing the write-ahead log: %w (free some space and open the store again)", err)
	}
}

// created reports whether the Pebble keyspace in dir was created: dir
// holds one of its markers (marker.*) or a file Pebble writes only once
// the manifest marker is durable. Without that marker Pebble takes a
// keyspace for a new one, writes a fresh MANIFEST and deletes every table
// and log it no longer knows, so OpenDB opens a created keyspace with
// ErrorIfNotExists: a lost marker is an error, not an empty keyspace.
// Pebble checks it under the keyspace's lock, from its own listing, before
// it writes or removes anything but its LOCK file and superseded marker
// files (open.go:310-313).
//
// Pebble v2.1.7 creates a keyspace in this order (open.go, Open): LOCK;
// versionSet.create writes and syncs MANIFEST-000001, then moves the
// manifest marker to it (version_set.go:187-202), and Marker.Move syncs
// the directory after creating the marker file (vfs/atomicfs/marker.go:
// 196, 227); only then does Open create the first WAL, NNNNNN.log
// (open.go:539-541), the format-version marker (open.go:561-569) and the
// OPTIONS file (open.go:572-601). Tables and blob files come from flushes
// and ingests, later still. So a crash while a keyspace is being created
// leaves the manifest marker, or none of these files: the keyspace opens,
// as new if need be (LOCK, a MANIFEST or temporary files alone do not
// count). A later move of the marker creates the new one before removing
// the old (marker.go:196-224), so one always remains.
func created(fs vfs.FS, dir string) (bool, error) {
	if fs == nil {
		fs = vfs.Default
	}
	names, err := fs.List(dir)
	if errors.Is(err, os.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	for _, n := range names {
		if strings.HasPrefix(n, "marker.") || strings.HasPrefix(n, "OPTIONS-") ||
			strings.HasSuffix(n, ".log") || strings.HasSuffix(n, ".sst") || strings.HasSuffix(n, ".blob") {
			return true, nil
		}
	}
	return false, nil
}

// openWatch follows the flushes of a Pebble Open (see OpenDB).
type openWatch struct {
	state  atomic.Int32
	failed chan error // the first flush that failed for lack of space
}

const (
	watchOpening = iota
	watchOpen
	watchAbandoned
)

func (w *openWatch) flushEnd(info pebble.FlushInfo) {
	if !NoSpace(info.Err) {
		return
	}
	switch w.state.Load() {
	case watchOpening:
		select {
		case w.failed <- info.Err:
		default:
		}
	case watchAbandoned:
		// Only the abandoned Open uses this DB: slow its retries down from
		// thousands a second (Pebble calls this with its mutex held).
		time.Sleep(time.Second)
	}
}
