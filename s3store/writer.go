package s3store

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sealkv/kv"
)

// writer uploads the slices of one Put. Add copies a slice's shards and
// starts their upload; uploads run concurrently, bounded by WriteWindow
// bytes per writer and Concurrency requests across the Store. Slices are
// reported durable in the order they were added. A writer is used by one
// goroutine at a time.
type writer struct {
	s        *Store
	inflight []*upload    // added and not yet reported durable, in order
	durable  int          // slices reported durable (a prefix of those added)
	busy     atomic.Int64 // bytes of uploads not yet finished
	err      error        // first upload error; the writer is then dead
}

// upload is one slice being written.
type upload struct {
	loc    kv.ShardLocation
	id     [64]byte
	n      int
	size   int64
	cancel context.CancelFunc
	done   chan struct{}
	err    error
}

// NewWriter starts a Writer for one Put.
func (s *Store) NewWriter() kv.SliceWriter { return &writer{s: s} }

// Add copies the shards of the slice id at l and starts uploading them: the
// header objects first, then every shard in parallel. It blocks while the
// writer has WriteWindow bytes in flight. The upload runs under ctx, so
// cancelling ctx fails it. Add returns how many of the slices added so far
// are durable: every object of each acknowledged by its domain.
func (w *writer) Add(ctx context.Context, l kv.ShardLocation, id *[64]byte, shards [][]byte) (int, error) {
	if err := w.advance(); err != nil {
		return w.durable, err
	}
	if err := w.s.check(ctx); err != nil {
		return w.durable, err
	}
	if len(shards) == 0 || len(shards) > maxShards {
		return w.durable, fmt.Errorf("s3store: slice with %d shards", len(shards))
	}
	var size int64
	for _, sh := range shards {
		size += int64(len(sh))
	}
	// Backpressure: wait for the oldest uploads until this one fits.
	for _, u := range w.inflight {
		if w.busy.Load()+size <= int64(w.s.cfg.WriteWindow) {
			break
		}
		select {
		case <-u.done:
		case <-ctx.Done():
			return w.durable, ctx.Err()
		}
	}
	if err := w.advance(); err != nil {
		return w.durable, err
	}
	// The caller reuses the shards' memory once Add returns.
	buf := getBuf(int(size))
	own := make([][]byte, len(shards))
	off := 0
	for i, sh := range shards {
		own[i] = buf[off : off+copy(buf[off:], sh) : off+len(sh)]
		off += len(sh)
	}
	uctx, cancel := context.WithCancel(detached(ctx))
	u := &upload{loc: l, id: *id, n: len(shards), size: size, cancel: cancel, done: make(chan struct{})}
	w.inflight = append(w.inflight, u)
	w.busy.Add(size)
	go w.upload(uctx, u, own, buf)
	return w.durable, w.advance()
}

func (w *writer) upload(ctx context.Context, u *upload, shards [][]byte, buf []byte) {
	defer close(u.done)
	defer u.cancel()
	defer w.busy.Add(-u.size)
	defer putBuf(buf)
	s := w.s
	hd := s.headerDomains(u.loc)
	key := s.headerKey(u.loc, &u.id)
	err := parallel(ctx, len(hd), func(ctx context.Context, j int) error {
		return s.putObject(ctx, hd[j], key, nil)
	})
	if err == nil {
		err = parallel(ctx, len(shards), func(ctx context.Context, i int) error {
			return s.putObject(ctx, s.shardDomain(u.loc, i), s.shardKey(u.loc, i), shards[i])
		})
	}
	if err != nil {
		u.err = fmt.Errorf("s3store: writing slice %x/%016x: %w", u.loc.Session, u.loc.Ctr, err)
	}
}

// advance counts the finished uploads at the front of the queue as
// durable. It returns the first upload error, after which the writer only
// fails.
func (w *writer) advance() error {
	if w.err != nil {
		return w.err
	}
	n := 0
	for _, u := range w.inflight {
		select {
		case <-u.done:
		default:
			w.inflight = w.inflight[n:]
			w.durable += n
			return w.failed()
		}
		if u.err != nil {
			w.err = u.err
			break
		}
		n++
	}
	w.inflight = w.inflight[n:]
	w.durable += n
	return w.err
}

// failed notes the error of an upload that finished out of order.
func (w *writer) failed() error {
	for _, u := range w.inflight {
		select {
		case <-u.done:
			if u.err != nil {
				w.err = u.err
				return w.err
			}
		default:
		}
	}
	return nil
}

// Flush waits until every slice added is durable.
func (w *writer) Flush(ctx context.Context) error {
	for _, u := range w.inflight {
		select {
		case <-u.done:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	if err := w.advance(); err != nil {
		return err
	}
	if len(w.inflight) != 0 {
		return errors.New("s3store: uploads left after Flush") // cannot happen
	}
	return nil
}

// abortTimeout bounds the best-effort cleanup of Abort.
const abortTimeout = time.Minute

// Abort cancels the uploads in flight (requests already sent run to their
// response, bounded by the attempt timeout, so none lands after the
// cleanup), waits for them and deletes the objects of every slice not yet
// reported durable. Best effort: a domain that is down keeps its objects;
// they are garbage, never data.
func (w *writer) Abort() {
	for _, u := range w.inflight {
		u.cancel()
	}
	for _, u := range w.inflight {
		<-u.done
	}
	s := w.s
	keys := make([][]string, len(s.domains))
	for _, u := range w.inflight {
		for _, d := range s.headerDomains(u.loc) {
			keys[d.idx] = append(keys[d.idx], s.headerKey(u.loc, &u.id))
		}
		for i := range u.n {
			d := s.shardDomain(u.loc, i)
			keys[d.idx] = append(keys[d.idx], s.shardKey(u.loc, i))
		}
	}
	w.inflight = nil
	if w.err == nil {
		w.err = errors.New("s3store: writer aborted")
	}
	if s.closed.Load() {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), abortTimeout)
	defer cancel()
	var wg sync.WaitGroup
	for i, d := range s.domains {
		if len(keys[i]) == 0 {
			continue
		}
		wg.Go(func() {
			if err := s.removeKeys(ctx, d, keys[i]); err != nil {
				s.log.Warn("s3store: abort could not remove uploaded objects", "domain", d.String(), "objects", len(keys[i]), "err", err)
			}
		})
	}
	wg.Wait()
}

// parallel runs fn(0..n-1) concurrently and returns the first error. When
// one fails the others' contexts are cancelled (for detached contexts: no
// further attempts; requests in flight finish).
func parallel(ctx context.Context, n int, fn func(context.Context, int) error) error {
	if n == 1 {
		return fn(ctx, 0)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		wg    sync.WaitGroup
		once  sync.Once
		first error
	)
	for i := range n {
		wg.Go(func() {
			if err := fn(ctx, i); err != nil {
				once.Do(func() { first = err; cancel() })
			}
		})
	}
	wg.Wait()
	return first
}

// bufs recycles the writer's shard copies.
var bufs sync.Pool

func getBuf(n int) []byte {
	if p, ok := bufs.Get().(*[]byte); ok && cap(*p) >= n {
		return (*p)[:n]
	}
	return make([]byte, n, max(n, 1<<20))
}

func putBuf(b []byte) {
	if cap(b) > 8<<20 {
		return
	}
	bufs.Put(&b)
}
