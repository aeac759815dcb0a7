package slicestore

import (
	"bytes"
	"context"
	"errors"
	"slices"
	"sync"

	"github.com/cockroachdb/pebble/v2"
)

// CompactBytes is how many bytes of deleted shards (as estimated from the
// sstables holding them) make the slice keyspace compact the deleted
// ranges. A variable for tests and tuning.
var CompactBytes int64 = 256 << 20

// maxSpans bounds the ranges one compaction round works through; more are
// merged with their neighbours (compacting a little live data too).
const maxSpans = 32

// compactor gives back the disk space of deleted shards.
//
// Delete removes a slice's shards with a range tombstone. Pebble frees the
// bytes under a tombstone only when a compaction drops them, and the slice
// keyspace's write pattern rarely makes one run: tombstones are tiny, so
// the 64 MiB memtable holding them seldom fills and flushes, and the shards
// they cover were mostly ingested straight into the bottom level, which no
// automatic compaction revisits for a tombstone still in the memtable. Left
// alone, a store whose content is all deleted keeps its size on disk.
//
// So each Delete reports the key ranges it removed and their estimated size
// in sstables (shards still only in the memtable count zero: the flush that
// writes them drops them with their tombstone). Once the estimate passes
// CompactBytes, or the keyspace holds no key any more, one background
// goroutine compacts those ranges with db.Compact: it flushes the memtable
// holding the tombstones and rewrites (or drops, when fully covered) the
// files under them. One round runs at a time; Close cancels it and waits;
// errors are logged and the ranges retried by the next round.
//
// Cost: a round rewrites the live data in the sstables its ranges overlap.
// Puts own contiguous, time-ordered key ranges, so a Delete usually covers
// whole ingested tables, which are dropped without a rewrite. The bad case
// is deletions scattered over many tables (one slice each): every table
// touched is rewritten, and when a round has more than maxSpans ranges,
// neighbours are merged and the tables between them rewritten too. Rounds
// start only after CompactBytes of deletions, so the rewriting is at most
// the store's size per CompactBytes deleted, and usually far less.
type compactor struct {
	db     *pebble.DB
	logger pebble.Logger
	// failed reports the store's failure: after a fatal commit error no
	// round may start, since its flush would rotate the broken WAL (which
	// Pebble answers with a panic).
	failed func() error

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu      sync.Mutex
	pending int64  // estimated bytes deleted since the last round began
	spans   []span // key ranges deleted since the last round began
	running bool   // a round's goroutine is active
	again   bool   // deletions arrived while it ran
}

// span is a deleted key range [lo, hi).
type span struct{ lo, hi []byte }

func newCompactor(db *pebble.DB, logger pebble.Logger, failed func() error) *compactor {
	ctx, cancel := context.WithCancel(context.Background())
	return &compactor{db: db, logger: logger, failed: failed, ctx: ctx, cancel: cancel}
}

// deleted records key ranges whose removal has been committed.
func (c *compactor) deleted(spans []span) {
	if len(spans) == 0 {
		return
	}
	spans = coalesce(spans)
	var est int64
	for _, s := range spans {
		n, err := c.db.EstimateDiskUsage(s.lo, s.hi)
		if err == nil {
			est += int64(n)
		}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.pending += est
	c.spans = append(c.spans, spans...)
	if len(c.spans) > 4*maxSpans {
		c.spans = limit(coalesce(c.spans), maxSpans)
	}
	if c.running {
		c.again = true
		return
	}
	if c.ctx.Err() != nil {
		return
	}
	c.running = true
	c.wg.Add(1)
	go c.loop()
}

// loop runs compaction rounds while they are due. Deletions that arrive
// while it checks or compacts make it check again.
func (c *compactor) loop() {
	defer c.wg.Done()
	for {
		c.mu.Lock()
		c.again = false
		c.mu.Unlock()
		if c.due() {
			c.mu.Lock()
			spans := limit(coalesce(c.spans), maxSpans)
			c.spans, c.pending = nil, 0
			c.mu.Unlock()
			if err := c.compact(spans); err != nil {
				if c.ctx.Err() == nil {
					c.logger.Errorf("slicestore: compacting deleted shards: %v", err)
				}
				c.mu.Lock()
				c.spans = append(c.spans, spans...) // retried by the next round
				c.running = false
				c.mu.Unlock()
				return
			}
		}
		c.mu.Lock()
		if !c.again || c.ctx.Err() != nil {
			c.running = false
			c.mu.Unlock()
			return
		}
		c.mu.Unlock()
	}
}

// due reports whether a round should run now: enough bytes were deleted, or
// there are deletions and the keyspace is empty.
func (c *compactor) due() bool {
	c.mu.Lock()
	pending, n := c.pending, len(c.spans)
	c.mu.Unlock()
	if n == 0 || c.failed() != nil || c.ctx.Err() != nil {
		return false
	}
	if pending >= CompactBytes {
		return true
	}
	it, err := c.db.NewIterWithContext(c.ctx, &pebble.IterOptions{})
	if err != nil {
		return false
	}
	empty := !it.First() && it.Error() == nil
	return errors.Join(it.Close()) == nil && empty
}

func (c *compactor) compact(spans []span) error {
	for _, s := range spans {
		if err := c.db.Compact(c.ctx, s.lo, s.hi, true); err != nil {
			return err
		}
	}
	return nil
}

// close cancels a round in progress and waits for it. No round starts
// after it.
func (c *compactor) close() {
	c.mu.Lock()
	c.cancel()
	c.mu.Unlock()
	c.wg.Wait()
}

// coalesce sorts spans and merges those that overlap or touch.
func coalesce(spans []span) []span {
	slices.SortFunc(spans, func(a, b span) int { return bytes.Compare(a.lo, b.lo) })
	out := spans[:0:0]
	for _, s := range spans {
		if n := len(out); n > 0 && bytes.Compare(s.lo, out[n-1].hi) <= 0 {
			if bytes.Compare(s.hi, out[n-1].hi) > 0 {
				out[n-1].hi = s.hi
			}
			continue
		}
		out = append(out, s)
	}
	return out
}

// limit merges sorted, disjoint spans into at most n, joining neighbours.
func limit(spans []span, n int) []span {
	if len(spans) <= n {
		return spans
	}
	per := (len(spans) + n - 1) / n
	out := make([]span, 0, n)
	for i := 0; i < len(spans); i += per {
		j := min(i+per, len(spans)) - 1
		out = append(out, span{lo: spans[i].lo, hi: spans[j].hi})
	}
	return out
}

// Failures Pebble cannot continue from.
//
// Pebble reports a failed write or sync of its write-ahead log through
// Logger.Fatalf, called synchronously in the goroutine committing the
// batch, with none of its locks held. The kv package's Logger panics there
// with a value that has a CommitFailure method; guard turns that panic into
// the error it returns and marks the store failed, since Pebble's commit
// pipeline is wedged after it (a later commit could wait forever behind the
// failed one). Any other panic is not touched.

// err returns the failure that stopped the store, if any.
func (s *Pebble) err() error {
	if p := s.failed.Load(); p != nil {
		return *p
	}
	return nil
}

// guard is deferred by the methods that commit.
func (s *Pebble) guard(errp *error) {
	r := recover()
	if r == nil {
		return
	}
	f, ok := r.(interface{ CommitFailure() error })
	if !ok {
		panic(r)
	}
	err := f.CommitFailure()
	s.failed.CompareAndSwap(nil, &err)
	*errp = err
}

// commit commits b unless the store has failed, durably if opts says so.
func (s *Pebble) commit(b *pebble.Batch, opts *pebble.WriteOptions) (err error) {
	if err := s.err(); err != nil {
		return err
	}
	defer s.guard(&err)
	return b.Commit(opts)
}

// noRecycleCleaner deletes obsolete files like Pebble's default cleaner, and
// turns off WAL recycling in the slice keyspace. Pebble keeps up to
// MemTableStopWritesThreshold+1 obsolete WAL files for reuse, and each holds
// the 70 MiB it preallocates for a 64 MiB memtable: 350 MiB of disk that a
// store keeps after all its content is deleted. Pebble recycles only when
// the cleaner does not need the files' contents; the ArchiveCleaner two
// levels down is what declares that need, while Clean (and String) come
// from the DeleteCleaner one level down, which wins.
type noRecycleCleaner struct {
	pebble.DeleteCleaner
	needsContents
}

type needsContents struct{ pebble.ArchiveCleaner }
