package kv

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"

	"github.com/sealkv/kv/internal/slicestore"
)

// ErrBatchDone: Batch.Put or Batch.Commit called after Commit or Close.
var ErrBatchDone = errors.New("sealkv: batch already committed or closed")

// A Batch groups Puts that become visible and durable together. Each
// Batch.Put streams and stores its ClearText like DB.Put, but its new
// version is neither visible nor durable until Commit, which makes every
// Put of the batch current in one atomic commit, with one sync of each
// keyspace for all of them instead of two per Put. For many small objects
// that is most of the cost of a Put.
//
// In the default slice keyspace, the shards of a Put whose ClearText is
// shorter than 256 KiB (its first block) wait in memory (up to 32 MiB per batch;
// beyond that they go to the write-ahead log unsynced) and are written at
// Commit as sorted sstables straight into the bottom level, once, instead
// of through the write-ahead log, a flush and a compaction (or, if they
// are less than 1 MiB, to the log in one write). Larger Puts write their shards
// as DB.Put does; only their new version waits for Commit. Such small Puts
// take their put numbers from blocks of 1024 reserved for the batch.
//
// Until Commit the batch's Puts pin the slices they use, so a Delete keeps
// them, and memory grows with the number of Puts (their records, besides
// the shards). Slices two of them share are sealed twice and one
// copy is dropped at Commit. Close discards an uncommitted batch;
// DB.Close discards every open one.
//
// A Batch is safe for concurrent use.
type Batch struct {
	db    *DB
	group slicestore.Group

	nums  sync.Mutex
	block numberBlock

	mu   sync.Mutex
	puts []*staged       // in the order their Puts returned
	keys map[string]bool // keys and parents of the Puts so far, for WithParent
	done bool            // committed or closed
}

// NewBatch starts an empty Batch.
func (db *DB) NewBatch() *Batch {
	return &Batch{db: db, group: db.slices.NewGroup(), keys: map[string]bool{}}
}

// number returns a put number for a small Put of the batch, from a block
// of slicestore.GroupBlock numbers reserved for the batch's Puts alone.
func (b *Batch) number() (*writerSession, uint64, error) {
	b.nums.Lock()
	defer b.nums.Unlock()
	return b.block.take(b.db)
}

// Put stores the ClearText read from r under key when the batch commits.
// It returns once the ClearText is stored, and checks what DB.Put checks;
// a parent given WithParent must exist or have been put earlier in the
// batch. A Put that fails leaves nothing behind and does not affect the
// batch's other Puts. Puts of one key become versions in the order their
// Put calls returned.
func (b *Batch) Put(ctx context.Context, key string, r io.Reader, opts ...PutOption) (err error) {
	db := b.db
	done, err := db.enterCtx(ctx)
	if err != nil {
		return err
	}
	defer done()
	defer catch(&err)
	po, err := putOpts(key, r, opts)
	if err != nil {
		return err
	}
	if err := b.open(po.parent); err != nil {
		return err
	}
	s, err := db.stage(ctx, key, r, po, b)
	if err != nil {
		return err
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.done {
		return errors.Join(ErrBatchDone, s.p.abort())
	}
	b.puts = append(b.puts, s)
	b.keys[key] = true
	if po.parent != "" {
		// Only now: a Put that failed must not spare later ones the
		// check. Commit checks again, and fails anyway if it is gone.
		b.keys[po.parent] = true
	}
	return nil
}

// open checks that the batch is open and that parent, if any, exists or
// was put in the batch, and registers the batch with its DB so that Close
// can discard it. A call is in flight, so the DB is not closing.
func (b *Batch) open(parent string) error {
	b.mu.Lock()
	done, inBatch := b.done, b.keys[parent]
	b.mu.Unlock()
	if done {
		return ErrBatchDone
	}
	if parent != "" && !inBatch {
		if err := checkParent(b.db.meta, parent); err != nil {
			return err
		}
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.done {
		return ErrBatchDone
	}
	b.db.callsMu.Lock()
	b.db.batches[b] = true
	b.db.callsMu.Unlock()
	return nil
}

// Commit makes every Put of the batch the current version of its key,
// atomically and durably: when Commit returns nil, all of them are; when
// it returns an error, none is, and what they stored is removed, except
// after ErrFailed, which leaves it unknown (as for DB.Put). A parent
// deleted since the Put that named it fails the whole commit
// (ErrNotFound). Commit ends the batch either way, except when it refuses
// a nil ctx (ErrInvalidOptions), which changes nothing.
func (b *Batch) Commit(ctx context.Context) (err error) {
	db := b.db
	done, err := db.enterCtx(ctx)
	if err != nil {
		return err
	}
	defer done()
	defer catch(&err)
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.done {
		return ErrBatchDone
	}
	if err := b.commit(ctx); err != nil {
		return errors.Join(err, b.discardLocked())
	}
	b.end()
	return nil
}

// commit syncs the slice keyspace, then writes the batch's records: meta
// must never reference shards that are not durable.
func (b *Batch) commit(ctx context.Context) error {
	if len(b.puts) == 0 {
		return nil
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := b.group.Sync(ctx); err != nil {
		return fmt.Errorf("sealkv: syncing slices: %w", err)
	}
	_, err := b.db.commitPuts(b.puts)
	return err
}

// Close discards the batch's Puts unless it was committed. It is safe to
// call more than once, and after Commit.
func (b *Batch) Close() error {
	done, err := b.db.enter()
	if errors.Is(err, ErrClosed) {
		return nil // DB.Close discarded the batch
	}
	if err != nil {
		return err
	}
	defer done()
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.done {
		return nil
	}
	return b.discardLocked()
}

// discardLocked undoes every Put of the batch not committed and ends it.
// b.mu is held.
func (b *Batch) discardLocked() error {
	var ps []*put
	for _, s := range b.puts {
		if !s.committed {
			ps = append(ps, s.p)
		}
	}
	b.end()
	if len(ps) == 0 {
		return nil
	}
	return abortPuts(b.db, ps)
}

// end marks the batch done and forgets it. b.mu is held.
func (b *Batch) end() {
	b.done, b.puts, b.keys = true, nil, nil
	b.db.callsMu.Lock()
	delete(b.db.batches, b)
	b.db.callsMu.Unlock()
}

// discardBatches discards every open batch; Close calls it once no call
// is in flight.
func (db *DB) discardBatches() error {
	var err error
	for b := range db.batches {
		b.mu.Lock()
		if !b.done {
			err = errors.Join(err, b.discardLocked())
		}
		b.mu.Unlock()
	}
	return err
}
