package slicestore

import (
	"bytes"
	"context"
	"encoding/binary"
	"slices"
	"sync"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/sstable"
)

// groupLimit bounds the shard bytes a Group keeps in memory until Sync.
// Writers that find it full commit their shards to the write-ahead log
// unsynced instead, and Sync syncs the log.
const groupLimit = 32 << 20

// ingestMin is the fewest shard bytes a Group's Sync writes as sstables;
// fewer are committed to the write-ahead log with one sync. An ingestion
// syncs the table and Pebble's MANIFEST, and took 6.5–7.5 ms for the
// ~570 KiB groups of 256 concurrent 4 KiB DB.Puts, where a synced log
// write of a group took ~2 ms: with every group logged, 100,000 Puts were
// faster in 2 of 3 alternated pairs (median −1.59 s). A Batch of 1000 small
// files (~6 MB) still ingests, which saves the flush and compaction.
const ingestMin = 1 << 20

// pebbleGroup keeps the shards of the small Puts of a kv.Batch, or of a
// group commit of DB.Puts, in memory and at Sync writes them (at least
// ingestMin bytes) as sorted sstables ingested into the bottom level: each
// shard is written once, as a large Put's are, instead of to the
// write-ahead log, a memtable flush and a compaction. The group's Puts
// take their put numbers from blocks of GroupBlock reserved for them, and
// no sstable spans two blocks, so none overlaps another writer's shards
// and Pebble places them in the bottom level. (Shards that writers logged
// because the group was full, or range deletions of aborted Puts, can
// overlap a block's table; Pebble then places it higher, which costs a
// later compaction, not correctness.)
//
// 100,000 × 4 KiB files in batches of 1000 (cold, alternated; see the
// README): flushes and compactions were 36% of the CPU profile when the
// batch's shards went through the write-ahead log.
type pebbleGroup struct {
	s       *Pebble
	mu      sync.Mutex
	pending [][][2][]byte // each writer's keys and values, in no order
	size    int
	logged  bool // a writer committed to the log unsynced
	synced  bool
}

// NewGroup starts a Group.
func (s *Pebble) NewGroup() Group { return &pebbleGroup{s: s} }

// NewWriter starts a Writer whose Flush hands its shards to the group.
func (g *pebbleGroup) NewWriter() Writer { return &pebbleWriter{s: g.s, group: g} }

// take adds a writer's shards to the group. It reports false, and the
// writer commits them to the log itself, once the group is full or synced.
func (g *pebbleGroup) take(kvs [][2][]byte, size int) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.synced || g.size+size > groupLimit {
		g.logged = true
		return false
	}
	g.pending = append(g.pending, kvs)
	g.size += size
	return true
}

// Sync writes the group's shards as sstables, one per block, and ingests
// them in one atomic step, after syncing the log if a writer used it; or,
// if they are fewer than ingestMin bytes, commits them to the log with one
// sync.
func (g *pebbleGroup) Sync(ctx context.Context) error {
	g.mu.Lock()
	pending := make([][2][]byte, 0, g.size/512)
	for _, kvs := range g.pending {
		pending = append(pending, kvs...)
	}
	logged, size := g.logged, g.size
	g.pending, g.size, g.synced = nil, 0, true
	g.mu.Unlock()
	if len(pending) > 0 && size < ingestMin {
		return g.s.log(pending, pebble.Sync) // also syncs what writers logged
	}
	if logged {
		if err := g.s.syncLog(); err != nil {
			return err
		}
	}
	if len(pending) == 0 {
		return nil
	}
	slices.SortFunc(pending, func(a, b [2][]byte) int { return bytes.Compare(a[0], b[0]) })
	var paths []string
	var t *sstable.Writer
	var block uint64
	err := func() error {
		for _, kv := range pending {
			if b := keyBlock(kv[0]); t == nil || b != block {
				if t != nil {
					if err := t.Close(); err != nil {
						t = nil
						return err
					}
				}
				var path string
				var err error
				if t, path, err = g.s.createTable(); err != nil {
					return err
				}
				paths, block = append(paths, path), b
			}
			if err := t.Set(kv[0], kv[1]); err != nil {
				return err
			}
		}
		err := t.Close() // syncs the file
		t = nil
		if err != nil {
			return err
		}
		return g.s.db.Ingest(ctx, paths)
	}()
	if err != nil {
		if t != nil {
			_ = t.Close()
		}
		for _, p := range paths {
			_ = g.s.opts.FS.Remove(p)
		}
	}
	return err
}

// keyBlock is the GroupBlock of the put number in a shard key.
func keyBlock(k []byte) uint64 {
	return binary.BigEndian.Uint64(k[16:24]) >> 32 / GroupBlock
}

// syncLog syncs the write-ahead log, which makes every batch committed
// before it durable.
func (s *Pebble) syncLog() (err error) {
	if err := s.err(); err != nil {
		return err
	}
	defer s.guard(&err)
	return s.db.LogData(nil, pebble.Sync)
}
