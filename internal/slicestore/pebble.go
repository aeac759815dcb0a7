// Package slicestore keeps shards in the slice keyspace, a Pebble instance
// tuned for large write-once values.
//
// Keys are ordered by write time: session (16 bytes), counter (8 bytes,
// big-endian; the high 32 bits are the put number) and shard index (1 byte).
// Index 0xFF holds the SliceID as a back-pointer for crash recovery. Because
// one Put owns a contiguous key range no other writer touches, large Puts
// build sstables themselves and ingest them: they land in the bottom level
// without overlapping anything, so shards are written once (write
// amplification ~1) instead of WAL + flush + compactions.
package slicestore

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"iter"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/objstorage/objstorageprovider"
	"github.com/cockroachdb/pebble/v2/sstable"
	"github.com/cockroachdb/pebble/v2/sstable/block"
	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/sealkv/kv/internal/bufpool"
)

// HeaderIndex is the shard index under which a slice's SliceID is kept.
const HeaderIndex = 0xFF

// FormatMajorVersion is the Pebble format both keyspaces are created with.
const FormatMajorVersion = pebble.FormatValueSeparation

const (
	// batchLimit is the size up to which a Writer keeps shards in memory and
	// commits them as one synced batch; larger Puts go through sstables.
	batchLimit = 4 << 20
	// tableLimit is the size at which a Writer ingests the sstable it is
	// building and starts a new one.
	tableLimit = 64 << 20
	// cacheSize is the block cache of the slice keyspace.
	cacheSize = 1 << 20
)

// Location names a slice's shards: its session and counter.
type Location struct {
	Session [16]byte
	Ctr     uint64
}

// Key returns the key of shard idx of the slice at l.
func (l Location) Key(idx int) []byte {
	k := make([]byte, 0, 25)
	k = append(k, l.Session[:]...)
	k = binary.BigEndian.AppendUint64(k, l.Ctr)
	return append(k, byte(idx))
}

// Pebble is the default Store: a local Pebble instance.
type Pebble struct {
	db   *pebble.DB
	opts *pebble.Options
	dir  string
	seq  atomic.Uint64 // names temporary sstables

	compact *compactor            // reclaims the space of deleted shards
	failed  atomic.Pointer[error] // set by guard: no more writes
}

// Open opens or creates the slice keyspace in dir; with mustExist, a
// keyspace that does not exist is an error, pebble.ErrDBDoesNotExist
// (see OpenDB).
func Open(dir string, fs vfs.FS, logger pebble.Logger, mustExist bool) (*Pebble, error) {
	opts := &pebble.Options{
		ErrorIfNotExists:   mustExist,
		FS:                 keyspaceFS{FS: fs, readahead: true},
		FormatMajorVersion: FormatMajorVersion,
		Logger:             logger,
		EventListener:      Events(logger),
		// Large Puts bypass the memtable (ingest); it holds small Puts only.
		// Pebble preallocates each WAL to ~1.1 memtables, so a smaller one
		// keeps small stores small on disk.
		MemTableSize:                16 << 20,
		MemTableStopWritesThreshold: 4,
		// Concurrent small Puts finish out of put-number order, so a
		// flushed memtable overlaps the newest L6 table and its
		// compaction rewrites that table: compacting 8 flushes at a time
		// instead of 4 rewrites it half as often. 100,000 durable 4 KiB
		// Puts, warm, 6 alternated pairs: faster in all 6 (median 1.45 s
		// of ~17), user CPU lower in all 6; BenchmarkPutSmall/4KiB/parallel
		// slice-WA 2.30 and 2.30 against 3.23 and 2.69.
		L0CompactionThreshold: 8,
		L0StopWritesThreshold: 24,
		MaxOpenFiles:          256,
		// Keys only grow (session, then put number), so the levels
		// between L0 and L6 would only copy small Puts once more: with
		// an LBase this large, flushes are compacted straight into L6.
		LBaseMaxBytes: 1 << 40,
		Cleaner:       noRecycleCleaner{},
	}
	// Shards are ciphertext: block compression only costs CPU.
	opts.ApplyCompressionSettings(func() pebble.DBCompressionSettings { return pebble.DBCompressionNone })
	// Concurrent Puts finish out of put-number order, so each flush
	// overlaps the newest L6 table a little, and a compaction rewrites that
	// table whole: small tables keep the rewrite small. 100,000 × 4 KiB
	// Puts, cold, 2 runs each: 64 MiB tables and LBase at its default,
	// 22.5–23.6 s and 3.3 GB written to disk; 16 MiB tables into L6,
	// 17.3–18.8 s and 2.2 GB (4 MiB: 19.1–20.3 s, 2.3 GB, 3× the files).
	// Large Puts ingest their own 64 MiB tables (tableLimit) and are not
	// compacted.
	for i := range opts.TargetFileSizes {
		opts.TargetFileSizes[i] = 16 << 20
	}
	// One value per data block: every shard gets its own block checksum, so
	// one flipped bit costs one shard (which parity covers), never several
	// shards of the same slice packed into one block.
	for i := range opts.Levels {
		opts.Levels[i].BlockSize = 1
		// The index block size defaults to the block size, i.e. one entry
		// per index block: a second-level index block and a top-level
		// entry for every shard. 4 KiB index blocks: 148 → 96 bytes per
		// key (TestShardOverhead); 100,000 × 4 KiB Puts 19.1–19.7 →
		// 16.7–17.2 s, 691 → 634 MB of tables; cold 1 GiB Gets unchanged
		// (medians of 10, 1.61 against 1.64 s).
		opts.Levels[i].IndexBlockSize = 4 << 10
	}
	// Row blocks, not columnar ones: with one shard per block, the columnar
	// block's column headers and the longer index entries cost ~222 bytes
	// per key against ~148 (TestShardOverhead, measured before the index
	// block size above; 100,000 × 4 KiB Puts stored 740 MB instead of 810).
	// Columns pay off for many small keys per block, which is the meta
	// keyspace, not this one.
	opts.Experimental.EnableColumnarBlocks = func() bool { return false }
	// Shards are read once per Get and read ahead by the kernel, so a block
	// cache would only churn; it is kept for index blocks. 1 MiB: cold
	// 1 GiB Gets as fast as with 2 (4 runs each, alternated) and 1–3 MiB
	// less peak RSS. Pebble charges the memtable to this cache too, so
	// after small Puts have grown it to full size (16 MiB) the cache holds
	// nothing until the store is reopened; large Puts bypass the memtable.
	opts.Cache = pebble.NewCache(cacheSize)
	defer opts.Cache.Unref()
	opts.EnsureDefaults()
	if err := fs.MkdirAll(filepath.Join(dir, "tmp"), 0o755); err != nil {
		return nil, err
	}
	db, err := OpenDB(dir, opts)
	if err != nil {
		return nil, err
	}
	s := &Pebble{db: db, opts: opts, dir: dir}
	s.compact = newCompactor(db, logger, s.err)
	s.cleanTmp()
	return s, nil
}

// Events makes on-disk corruption an error returned to the reader (and
// logged) instead of Pebble's default, a fatal log: a bad block in the
// slice keyspace costs only the shards in it, which parity covers.
//
// A flush that fails for lack of space (NoSpace) goes to the logger's
// FlushFailed method, if it has one. Pebble retries it at once and
// forever, and once unflushed memtables pile up every commit waits for a
// flush that never comes: the kv package's logger fails the DB instead.
func Events(logger pebble.Logger) *pebble.EventListener {
	return &pebble.EventListener{
		DataCorruption: func(info pebble.DataCorruptionInfo) {
			// The details carry a stack trace; the first line says it all.
			msg, _, _ := strings.Cut(fmt.Sprint(info.Details), "\n")
			logger.Errorf("on-disk corruption in %s: %s", info.Path, msg)
		},
		BackgroundError: func(err error) {
			logger.Errorf("background error: %s", err)
		},
		FlushEnd: func(info pebble.FlushInfo) {
			if f, ok := logger.(interface{ FlushFailed(error) }); ok && NoSpace(info.Err) {
				f.FlushFailed(info.Err)
			}
		},
	}
}

// cleanTmp removes sstables left unfinished by a crash.
func (s *Pebble) cleanTmp() {
	tmp := filepath.Join(s.dir, "tmp")
	names, _ := s.opts.FS.List(tmp)
	for _, n := range names {
		_ = s.opts.FS.Remove(filepath.Join(tmp, n))
	}
}

// Close closes the keyspace.
func (s *Pebble) Close() error {
	s.compact.close()
	return s.db.Close()
}

// DB exposes the Pebble instance for metrics and tests.
func (s *Pebble) DB() *pebble.DB { return s.db }

// Get reads n shards of the slice at l; a missing or unreadable shard is
// nil (parity covers it). The shards are copies the caller owns, from
// bufpool. A read error is logged: a failing disk must not pass for a
// few missing shards in silence (corruption is logged by Events).
func (s *Pebble) Get(ctx context.Context, l Location, n int) ([][]byte, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	shards := make([][]byte, n)
	var r readErrs
	if s.scan(ctx, l, shards, &r) == nil {
		s.logReadErrs(ctx, l, &r)
		return shards, nil
	}
	// A damaged block stopped the scan: read shard by shard so one bad
	// block costs only the shards in it.
	r = readErrs{}
	for i := range shards {
		if shards[i] == nil {
			shards[i] = s.getOne(l.Key(i), &r)
		}
	}
	if err := ctx.Err(); err != nil {
		// Cancelled meanwhile. With an error other than ErrUnavailable
		// the shards are nil (see Store.Get): the caller frees none.
		for _, sh := range shards {
			bufpool.Put(sh)
		}
		return nil, err
	}
	s.logReadErrs(ctx, l, &r)
	return shards, nil
}

// readErrs counts the shards of one Get that could not be read for
// another reason than corruption, and keeps the first error.
type readErrs struct {
	n     int
	first error
}

func (r *readErrs) add(err error) {
	if pebble.IsCorruptionError(err) {
		return // logged by Events, with its file
	}
	if r.n++; r.first == nil {
		r.first = err
	}
}

func (s *Pebble) logReadErrs(ctx context.Context, l Location, r *readErrs) {
	if r.n > 0 && ctx.Err() == nil {
		s.opts.Logger.Errorf("slicestore: %d shard(s) of slice %x/%016x unreadable, read as missing: %v", r.n, l.Session, l.Ctr, r.first)
	}
}

func (s *Pebble) scan(ctx context.Context, l Location, shards [][]byte, r *readErrs) error {
	it, err := s.db.NewIterWithContext(ctx, &pebble.IterOptions{LowerBound: l.Key(0), UpperBound: l.Key(len(shards))})
	if err != nil {
		return err
	}
	for it.First(); it.Valid(); it.Next() {
		k := it.Key()
		if len(k) != 25 || int(k[24]) >= len(shards) {
			continue
		}
		if v, err := it.ValueAndErr(); err == nil {
			shards[k[24]] = clone(v)
		} else {
			r.add(err)
		}
	}
	return errors.Join(it.Error(), it.Close())
}

func (s *Pebble) getOne(k []byte, r *readErrs) []byte {
	v, closer, err := s.db.Get(k)
	if err != nil {
		if !errors.Is(err, pebble.ErrNotFound) {
			r.add(err)
		}
		return nil
	}
	defer closer.Close()
	return clone(v)
}

// clone copies a shard into a pooled buffer, which the caller may recycle.
func clone(v []byte) []byte {
	b := bufpool.Get(len(v))
	copy(b, v)
	return b
}

// PutShard rewrites one shard durably (repair).
func (s *Pebble) PutShard(_ context.Context, l Location, idx int, shard []byte) (err error) {
	if err := s.err(); err != nil {
		return err
	}
	defer s.guard(&err)
	return s.db.Set(l.Key(idx), shard, pebble.Sync)
}

// Delete removes the shards and header of every slice in locs, durably.
func (s *Pebble) Delete(_ context.Context, locs []Location) error {
	if len(locs) == 0 {
		return nil
	}
	b := s.db.NewBatch()
	defer b.Close()
	spans := make([]span, len(locs))
	for i, l := range locs {
		spans[i] = span{lo: l.Key(0), hi: next(l).Key(0)}
		if err := b.DeleteRange(spans[i].lo, spans[i].hi, nil); err != nil {
			return err
		}
	}
	if err := s.commit(b, pebble.Sync); err != nil {
		return err
	}
	s.compact.deleted(spans)
	return nil
}

func next(l Location) Location { return Location{Session: l.Session, Ctr: l.Ctr + 1} }

// Headers yields the (counter, SliceID) back-pointers of every slice written
// in session sid, in counter order, and an error last if the keyspace could
// not be read through (a damaged header counts: its slice's shards would
// be missed).
func (s *Pebble) Headers(_ context.Context, sid [16]byte) iter.Seq2[Header, error] {
	return func(yield func(Header, error) bool) {
		lo := Location{Session: sid}
		it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: lo.Key(0), UpperBound: endOfSession(sid)})
		if err != nil {
			yield(Header{}, err)
			return
		}
		defer it.Close()
		for valid := it.First(); valid; {
			k := it.Key()
			l := Location{Session: sid, Ctr: binary.BigEndian.Uint64(k[16:24])}
			if k[24] != HeaderIndex {
				valid = it.SeekGE(l.Key(HeaderIndex))
				continue
			}
			v, err := it.ValueAndErr()
			if err == nil && len(v) != 64 {
				err = fmt.Errorf("slicestore: header of %x/%016x has %d bytes", l.Session, l.Ctr, len(v))
			}
			if err != nil {
				yield(Header{}, err)
				return
			}
			if !yield(Header{Location: l, ID: [64]byte(v)}, nil) {
				return
			}
			valid = it.SeekGE(next(l).Key(0))
		}
		if err := it.Error(); err != nil {
			yield(Header{}, err)
		}
	}
}

func endOfSession(sid [16]byte) []byte {
	end := append([]byte(nil), sid[:]...)
	for i := len(end) - 1; i >= 0; i-- {
		if end[i] != 0xff {
			end[i]++
			return end[:i+1]
		}
		end = end[:i]
	}
	return []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}
}

// pebbleWriter collects the shards of one Put, in ascending key order, and
// makes them durable: small Puts as one synced batch, large ones as
// sstables. A full sstable is synced and ingested in the background while
// the next one fills, so the Put's pipeline does not stall on the disk.
type pebbleWriter struct {
	s       *Pebble
	group   *pebbleGroup // nil unless the writer belongs to a Group
	pending [][2][]byte  // key, value; in key order
	size    int
	table   *sstable.Writer
	path    string
	lastKey []byte

	large   bool // an sstable was started: later ones skip the batch stage
	added   int  // slices added
	durable int  // slices known durable
	// ingest is the sstable being synced and ingested, if any.
	ingest chan ingested
}

type ingested struct {
	upto int // durable count once this ingest succeeded
	err  error
}

// NewWriter starts a Writer.
func (s *Pebble) NewWriter() Writer { return &pebbleWriter{s: s} }

// Add appends the shards and header of the slice at l. Locations must
// increase from call to call. It returns how many of the slices added so
// far are durable (they are durable in the order they were added).
func (w *pebbleWriter) Add(ctx context.Context, l Location, id *[64]byte, shards [][]byte) (int, error) {
	if w.table == nil {
		w.pending = slices.Grow(w.pending, len(shards)+1)
	}
	for i, sh := range shards {
		if err := w.set(l.Key(i), sh); err != nil {
			return w.durable, err
		}
	}
	if err := w.set(l.Key(HeaderIndex), id[:]); err != nil {
		return w.durable, err
	}
	w.added++
	if w.table == nil && (w.size > batchLimit || w.large) {
		if err := w.startTable(); err != nil {
			return w.durable, err
		}
	}
	if w.table != nil && w.table.Raw().EstimatedSize() >= tableLimit {
		if err := w.wait(); err != nil {
			return w.durable, err
		}
		w.startIngest(ctx)
	}
	return w.durable, w.poll()
}

func (w *pebbleWriter) set(k, v []byte) error {
	if w.lastKey != nil && bytes.Compare(k, w.lastKey) <= 0 {
		return errors.New("slicestore: keys out of order")
	}
	w.lastKey = k
	if w.table != nil {
		return w.table.Set(k, v)
	}
	w.pending = append(w.pending, [2][]byte{k, bytes.Clone(v)}) // the caller reuses v
	w.size += len(k) + len(v)
	return nil
}

func (w *pebbleWriter) startTable() error {
	var err error
	if w.table, w.path, err = w.s.createTable(); err != nil {
		return err
	}
	w.large = true
	for _, kv := range w.pending {
		if err := w.table.Set(kv[0], kv[1]); err != nil {
			return err
		}
	}
	w.pending, w.size = nil, 0
	return nil
}

// createTable creates an sstable to be ingested into the bottom level.
func (s *Pebble) createTable() (*sstable.Writer, string, error) {
	path := filepath.Join(s.dir, "tmp", fmt.Sprintf("%d.sst", s.seq.Add(1)))
	f, err := s.opts.FS.Create(path, vfs.WriteCategoryUnspecified)
	if err != nil {
		return nil, "", err
	}
	wo := s.opts.MakeWriterOptions(6, s.db.TableFormat())
	wo.Compression = block.NoCompression
	return sstable.NewWriter(objstorageprovider.NewFileWritable(f), wo), path, nil
}

// startIngest finishes (syncs) the current sstable and ingests it in the
// background.
func (w *pebbleWriter) startIngest(ctx context.Context) {
	t, path, upto := w.table, w.path, w.added
	w.table = nil
	w.ingest = make(chan ingested, 1)
	go func(done chan<- ingested) {
		err := t.Close()
		if err == nil {
			err = w.s.db.Ingest(ctx, []string{path})
		}
		if err != nil {
			// Pebble removes an ingested table's file only when the
			// ingestion succeeds (it links the file; the link is its own).
			_ = w.s.opts.FS.Remove(path)
		}
		done <- ingested{upto: upto, err: err}
	}(w.ingest)
}

// poll notes a finished background ingest without waiting.
func (w *pebbleWriter) poll() error {
	if w.ingest == nil {
		return nil
	}
	select {
	case r := <-w.ingest:
		return w.finish(r)
	default:
		return nil
	}
}

// wait waits for the background ingest, if any.
func (w *pebbleWriter) wait() error {
	if w.ingest == nil {
		return nil
	}
	return w.finish(<-w.ingest)
}

func (w *pebbleWriter) finish(r ingested) error {
	w.ingest = nil
	if r.err != nil {
		return r.err
	}
	w.durable = r.upto
	return nil
}

// Flush makes everything added durable; a Group's writer hands what it
// holds to the group instead, if it has room.
func (w *pebbleWriter) Flush(ctx context.Context) error {
	if err := w.wait(); err != nil {
		return err
	}
	if w.table != nil {
		w.startIngest(ctx)
		return w.wait()
	}
	opts := pebble.Sync
	if w.group != nil {
		if w.group.take(w.pending, w.size) {
			w.pending, w.size = nil, 0
		}
		opts = pebble.NoSync // Group.Sync syncs the log
	}
	if len(w.pending) > 0 {
		if err := w.s.log(w.pending, opts); err != nil {
			return err
		}
		w.pending, w.size = nil, 0
	}
	w.durable = w.added
	return nil
}

// log commits kvs to the write-ahead log in one batch.
func (s *Pebble) log(kvs [][2][]byte, opts *pebble.WriteOptions) error {
	b := s.db.NewBatch()
	defer b.Close()
	for _, kv := range kvs {
		if err := b.Set(kv[0], kv[1], nil); err != nil {
			return err
		}
	}
	return s.commit(b, opts)
}

// Abort drops whatever has not been made durable. It waits for a
// background ingest, whose slices are then durable but unpublished: the
// caller deletes them.
func (w *pebbleWriter) Abort() {
	_ = w.wait()
	if w.table != nil {
		_ = w.table.Close()
		_ = w.s.opts.FS.Remove(w.path)
		w.table = nil
	}
	w.pending, w.size = nil, 0
}
