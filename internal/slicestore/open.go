package slicestore

import (
	"errors"
	"fmt"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/cockroachdb/pebble/v2"
)

// NoSpace reports whether err says a file could not grow: a full disk
// (ENOSPC), a full quota (EDQUOT) or the process's file size limit (EFBIG,
// "ulimit -f").
func NoSpace(err error) bool {
	return errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT) || errors.Is(err, syscall.EFBIG)
}

// OpenDB is pebble.Open, except that it returns an error when a flush
// fails for lack of space (NoSpace) before Pebble's Open returns.
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
