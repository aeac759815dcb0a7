// Package kv is sealkv: an embeddable store that keeps blobs deduplicated,
// post-quantum encrypted, erasure coded and crash safe in two Pebble
// keyspaces.
//
// A ClearText given to Put is cut into content-defined Slices by a keyed
// chunker, each Slice is named by its keyed BLAKE3-512 SliceID and stored
// once: compressed, sealed with AES-256-GCM under a one-time key derived from
// an ML-KEM-1024 session, and split into k data + m parity Reed-Solomon
// Shards. Names (Data), their versions (ContentMeta) and the references from
// versions to slices live in the meta keyspace; shards live in the slice
// keyspace. See README.md ("Design in brief") for the construction and
// SECURITY.md for what it protects against.
//
// Every Put is durable when it returns. A Batch groups many Puts into one
// atomic commit with one sync, which is how to store many small objects
// fast, or a tree that must appear whole.
package kv

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/bloom"
	"github.com/cockroachdb/pebble/v2/vfs"

	"github.com/sealkv/kv/internal/chunker"
	"github.com/sealkv/kv/internal/erasure"
	"github.com/sealkv/kv/internal/record"
	"github.com/sealkv/kv/internal/seal"
	"github.com/sealkv/kv/internal/slicestore"
)

// Errors returned by DB methods. Test for them with errors.Is; the returned
// errors wrap them with the details (key, SliceID, cause).
var (
	// ErrNotFound: the key, version or parent does not exist.
	ErrNotFound = errors.New("sealkv: not found")
	// ErrHasChildren: Delete of a Data that is the parent of other Data.
	ErrHasChildren = errors.New("sealkv: data has children")
	// ErrHasVersions: Delete of a Data that still has older versions.
	ErrHasVersions = errors.New("sealkv: data has older versions")
	// ErrWriteOnly: a read through a DB opened with write-only Keys.
	ErrWriteOnly = errors.New("sealkv: keys are write-only")
	// ErrWrongKeys: the Keys do not belong to the store.
	ErrWrongKeys = errors.New("sealkv: wrong keys for this store")
	// ErrInvalidKey: a Data key that is empty, longer than 4096 bytes, not
	// valid UTF-8 or contains NUL.
	ErrInvalidKey = errors.New("sealkv: invalid key")
	// ErrCorrupt: stored bytes failed verification and could not be
	// repaired; the message names the slice or record.
	ErrCorrupt = errors.New("sealkv: corrupt")
	// ErrClosed: the DB, the Reader's DB or the Reader itself has been
	// closed.
	ErrClosed = errors.New("sealkv: closed")
	// ErrInvalidOptions: Options that cannot be used, or an argument no
	// call can use (see the message): an empty dir given to Open, a nil
	// context.Context, a nil io.Reader or PutOption given to Put, a nil
	// io.Writer given to Reader.WriteTo, a position before the start given
	// to Reader.Seek or ReadAt, a negative keep given to PruneVersions.
	// The call changes nothing.
	ErrInvalidOptions = errors.New("sealkv: invalid options")
	// ErrLocked: another process (or DB value) has the store open.
	ErrLocked = errors.New("sealkv: store is locked by another process")
	// ErrFailed: the storage engine met a failure it cannot continue from:
	// a failed write or sync of a keyspace's write-ahead log, or a flush
	// that found no space (a full disk). The call that met it and every
	// later call return ErrFailed (wrapping the cause); whether that
	// call's change was committed is unknown. Close the DB and
	// Open the store again: recovery keeps everything acknowledged before.
	ErrFailed = errors.New("sealkv: storage engine failed")
	// ErrUnavailable: a slice could not be read because too few of its
	// shards could be fetched from the SliceStore (failure domains not
	// answering), not because they are damaged; retry when they are back.
	// A SliceStore's Get wraps it to say so (see SliceStore).
	ErrUnavailable = slicestore.ErrUnavailable
)

// SliceStore keeps the shards of SealedSlices: the slice keyspace. The
// default is a Pebble instance beside the meta keyspace; an implementation
// can put shards on an object store or a cluster. See the method docs for
// the contract (durability, missing shards as nil, location addressing).
type SliceStore = slicestore.Store

// SliceWriter collects the shards of one Put for a SliceStore.
type SliceWriter = slicestore.Writer

// SliceGroup collects the shards of the small Puts of a Batch, or of
// concurrent small DB.Puts that commit as a group, for a SliceStore, which
// makes them durable together.
type SliceGroup = slicestore.Group

// ShardLocation addresses one slice's shards in a SliceStore: the writer
// session and a counter unique within it, so locations sort by write time
// and are never reused.
type ShardLocation = slicestore.Location

// SliceHeader is what SliceStore.Headers yields for each slice a session
// wrote: its ShardLocation and SliceID.
type SliceHeader = slicestore.Header

// Compression selects what Put does to a Slice before sealing it.
type Compression int

const (
	// CompressionZstd compresses with zstd at its fastest level and keeps the
	// result only when it is smaller. It is the default.
	CompressionZstd Compression = iota
	// CompressionNone stores slices as they are.
	CompressionNone
)

// NoParity as Options.ParityShards stores slices without parity shards.
const NoParity = -1

// Defaults for Options fields left zero.
const (
	DefaultDataShards   = 8
	DefaultParityShards = 2
)

// Options configure Open. Only Keys is required.
type Options struct {
	// Keys of the store. Required. Write-only Keys can Put but not read.
	Keys *Keys

	// MinSliceSize, AvgSliceSize and MaxSliceSize bound the chunker, in
	// bytes (defaults 64 KiB, 230 KiB, 1 MiB); they need 64 <= Min < Avg <
	// Max <= 64 MiB, zero ones taking their defaults. They are fixed when
	// the store is created, since dedup depends on them: reopening with
	// other non-zero values is an error (ErrInvalidOptions), zero means
	// "what the store has".
	MinSliceSize, AvgSliceSize, MaxSliceSize int

	// DataShards (k) and ParityShards (m) of new slices; defaults 8 and 2.
	// Use NoParity for m = 0. They need k >= 1 and k+m <= 255. Each slice
	// records its own layout, so changing them affects new slices only.
	DataShards, ParityShards int

	// Compression of new slices; CompressionZstd by default.
	Compression Compression

	// Padding pads every new slice (after compression, before sealing) to
	// its Padmé length, so sealed and shard sizes reveal O(log log n) bits
	// of a slice's size instead of O(log n); costs < 12% per slice, +1.6%
	// stored bytes on 1 GiB of mixed files (SECURITY.md). It does not hide
	// the exact sizes kept in the meta keyspace. Off by default; per slice,
	// so changing it affects new slices only.
	Padding bool

	// KEM of the writer sessions this DB starts; KEMHybrid (ML-KEM-1024 +
	// X25519) by default. Sessions of every KEM are always readable.
	KEM KEM

	// Concurrency is the number of slices sealed in parallel by one Put;
	// GOMAXPROCS by default, at most 65536 (ErrInvalidOptions beyond).
	Concurrency int

	// SliceStore keeps the shards. Nil means a Pebble instance in
	// DIR/slices. A DB that Open returns takes ownership: Close closes
	// it. If Open fails, the SliceStore stays the caller's, open. The
	// store records which of the two it was created with: opening it
	// with the other is an error (ErrInvalidOptions), since its shards
	// are not there. (Stores created before sealkv recorded it open
	// either way.)
	SliceStore SliceStore

	// Logger receives recovery, repair, cleanup and storage-engine
	// messages; slog.Default() if nil.
	Logger *slog.Logger

	fs vfs.FS // tests: in-memory or crashable file systems
	// wrapSlices, in tests, wraps the slice keyspace in DIR/slices (to
	// inject faults) without making it a SliceStore given in Options.
	wrapSlices func(SliceStore) SliceStore
}

// maxConcurrency bounds Options.Concurrency: a Put starts that many
// workers and channels of 2 and 4 times as many jobs, which a larger value
// could not allocate (makechan panics, or memory runs out).
const maxConcurrency = 1 << 16

// resolved is Options after defaults, checked.
func (o *Options) resolve() (Options, error) {
	if o == nil || o.Keys == nil || o.Keys.zero() {
		return Options{}, fmt.Errorf("%w: Keys are required", ErrInvalidOptions)
	}
	r := *o
	if r.DataShards == 0 {
		r.DataShards = DefaultDataShards
	}
	switch {
	case r.ParityShards == 0:
		r.ParityShards = DefaultParityShards
	case r.ParityShards == NoParity:
		r.ParityShards = 0
	case r.ParityShards < 0:
		return Options{}, fmt.Errorf("%w: ParityShards %d (use NoParity for none)", ErrInvalidOptions, r.ParityShards)
	}
	if _, err := erasure.New(r.DataShards, r.ParityShards); err != nil {
		return Options{}, fmt.Errorf("%w: %v", ErrInvalidOptions, err)
	}
	if r.Compression != CompressionZstd && r.Compression != CompressionNone {
		return Options{}, fmt.Errorf("%w: unknown Compression %d", ErrInvalidOptions, r.Compression)
	}
	switch {
	case r.KEM != KEMHybrid && r.KEM != KEMMLKEM1024:
		return Options{}, fmt.Errorf("%w: unknown KEM %d", ErrInvalidOptions, r.KEM)
	case r.KEM == KEMHybrid && r.Keys.xpk == nil:
		return Options{}, fmt.Errorf("%w: these write-only Keys come from a version-1 key file without an X25519 public key, "+
			"so they cannot start hybrid sessions: export them again with WriteOnly().MarshalBinary() from the full Keys, "+
			"or set Options.KEM to KEMMLKEM1024", ErrInvalidOptions)
	}
	if r.Concurrency < 0 || r.Concurrency > maxConcurrency {
		return Options{}, fmt.Errorf("%w: Concurrency %d (need 0 to %d)", ErrInvalidOptions, r.Concurrency, maxConcurrency)
	}
	if r.Concurrency == 0 {
		r.Concurrency = min(runtime.GOMAXPROCS(0), maxConcurrency)
	}
	if r.Logger == nil {
		r.Logger = slog.Default()
	}
	if r.fs == nil {
		r.fs = vfs.Default
	}
	return r, nil
}

// sliceParams are the chunker parameters o asks for, zero fields taking
// their defaults.
func (o *Options) sliceParams() chunker.Params {
	p := chunker.DefaultParams()
	for _, f := range []struct {
		opt int
		dst *int
	}{{o.MinSliceSize, &p.Min}, {o.AvgSliceSize, &p.Avg}, {o.MaxSliceSize, &p.Max}} {
		if f.opt != 0 {
			*f.dst = f.opt
		}
	}
	return p
}

// sliceKind is where o puts the shards.
func (o *Options) sliceKind() record.SliceKind {
	if o.SliceStore != nil {
		return record.SlicesExternal
	}
	return record.SlicesLocal
}

// checkNew refuses slice sizes a new store could not use before Open
// creates anything, so that a refused Open leaves no store behind. It
// takes dir for a new store when dir/meta does not exist; a store that
// exists is checked against its config (see config).
func (o *Options) checkNew(dir string) error {
	if _, err := o.fs.Stat(filepath.Join(dir, "meta")); !errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err := o.sliceParams().Validate(); err != nil {
		return fmt.Errorf("%w: %v", ErrInvalidOptions, err)
	}
	return nil
}

// DB is an open store. All methods are safe for concurrent use.
type DB struct {
	opts    Options
	keys    *Keys
	meta    *pebble.DB
	slices  slicestore.Store
	chunker *chunker.Chunker
	idHash  keyedHashers // SliceIDs
	cidHash keyedHashers // ContentIDs

	writer atomic.Pointer[writerSession] // the session new Puts seal under
	// sessions are the writer sessions this DB began, which Close marks
	// clean: one per 2^32 put numbers. sessionMu also serializes beginning
	// them.
	sessionMu sync.Mutex
	sessions  []*seal.Session
	// needsRecovery keeps the sessions marked unclean at Close, so that
	// the next Open cleans up after a Put whose rollback failed.
	needsRecovery atomic.Bool
	groups        groups   // group commits of small Puts
	opened        sync.Map // [16]byte -> *seal.Session, decapsulated for reading

	// calls counts the calls (and Reader fetches) in flight; Close waits for
	// them. Unlike a RWMutex, entering never blocks: once Close has begun,
	// enter fails with ErrClosed, so a call waiting on its own fetches
	// cannot deadlock with Close.
	callsMu sync.Mutex
	calls   int
	closed  bool
	idle    *sync.Cond
	batches map[*Batch]bool       // open batches with Puts, discarded by Close
	failed  atomic.Pointer[error] // set by pebbleLogger.Fatalf (ErrFailed)

	// mu serializes every change to the meta keyspace, so checks and the
	// batches that act on them cannot interleave (invariant I5).
	mu      sync.Mutex
	stats   record.Stats
	intents uint64            // last delete intent number
	pins    map[[64]byte]*pin // slices a Put in flight will reference
}

// pin counts the in-flight Puts about to reference a slice.
type pin struct {
	n    int
	keys map[string]int
	// published is set when a Put publishes a record of the slice while
	// pinned. Until then a Put that found no record when it pinned the
	// slice, and has held its pin since, knows there is still none and
	// publishes without looking.
	published bool
}

// Open opens the store in dir, creating it if dir holds none. It recovers
// from an earlier crash before returning: unfinished Puts are rolled back and
// unfinished Deletes completed. It fails with ErrInvalidOptions for Options
// that cannot be used, ErrWrongKeys if the store was created with other
// Keys, ErrLocked if the store is open already and ErrCorrupt if a record
// it reads fails to decode, the store's configuration record is missing,
// Pebble finds a keyspace's own files damaged (the message is Pebble's) or
// a keyspace is gone or lost its manifest marker (then Open deletes
// nothing, where Pebble would empty it as a new one). Options refused for
// a new store (ErrInvalidOptions) create nothing.
// An empty dir is ErrInvalidOptions, not the working directory (use ".").
func Open(dir string, opts *Options) (*DB, error) {
	if dir == "" {
		return nil, fmt.Errorf("%w: empty dir", ErrInvalidOptions)
	}
	o, err := opts.resolve()
	if err != nil {
		return nil, err
	}
	if err := o.checkNew(dir); err != nil {
		return nil, err
	}
	db := &DB{opts: o, keys: o.Keys, pins: map[[64]byte]*pin{}, batches: map[*Batch]bool{}}
	db.idle = sync.NewCond(&db.callsMu)
	db.groups.cond = sync.NewCond(&db.groups.mu)
	db.idHash.key, db.cidHash.key = o.Keys.derive("slice id"), o.Keys.derive("content id")
	if err := db.openMeta(dir); err != nil {
		return nil, err
	}
	if err := db.start(dir); err != nil {
		db.closeKeyspaces()
		return nil, err
	}
	return db, nil
}

// The meta keyspace's memtable (Pebble's default) and the block cache
// beside it. Most of a Put's meta lookups miss (new Data keys, new
// SliceIDs) and read only filter and index blocks: a few bytes per slice.
// 1 MiB does as well as 2 or 8 for 100,000 4 KiB Puts (about 90% hits);
// each MiB more adds about as much to the peak RSS of an 8 GiB Put, whose
// bound is 64 MiB (62.0–62.6 MiB with 1 MiB, 62.9–65.0 with 2).
const (
	metaMemTable = 4 << 20
	metaCache    = 1 << 20
)

// openMeta creates dir and dir/meta if need be and opens the meta
// keyspace. The slice keyspace waits for the store's config (openSlices).
func (db *DB) openMeta(dir string) error {
	fs := db.opts.fs
	if err := mkdirDurable(fs, filepath.Join(dir, "meta")); err != nil {
		return fmt.Errorf("sealkv: creating %s: %w", filepath.Join(dir, "meta"), err)
	}
	logger := pebbleLogger{l: db.opts.Logger, failed: &db.failed}
	mopts := &pebble.Options{
		FS: slicestore.TableFS(fs), FormatMajorVersion: slicestore.FormatMajorVersion, Logger: logger, EventListener: slicestore.Events(logger),
		MemTableSize: metaMemTable,
		// Pebble charges its memtables against the block cache: the
		// active one and the one being flushed or kept for reuse. Its
		// default 8 MiB cache beside two 4 MiB memtables held nothing, so
		// 100,000 concurrent 4 KiB Puts read 13 filter, index and data
		// blocks per Put from the page cache (hit rate 2.4%; 1.29 M
		// misses, 22% of CPU). metaCache on top of the memtables: ~90%.
		CacheSize: 2*metaMemTable + metaCache,
		// A flushed memtable of random SliceIDs overlaps all of Lbase, so
		// every L0 compaction rewrites Lbase whole; compacting at 8 L0
		// sublevels instead of 4 halves that (lookups probe the extra
		// sublevels' bloom filters). 100,000 × 4 KiB files in Batches of
		// 1000, cold, 5 pairs alternated: faster in 4, user CPU lower in
		// all 5 (e.g. 9.43 against 10.94 s, 6.81 against 8.14 s); per-Put
		// durable: 15.03 against 14.76 s.
		L0CompactionThreshold: 8,
	}
	// Bloom filters (10 bits, ~1.2 bytes per key): a Put looks up its Data
	// key and every new SliceID, and most such lookups miss. Without
	// filters each miss reads a block of every level it might be in.
	for i := range mopts.Levels {
		mopts.Levels[i].FilterPolicy = bloom.FilterPolicy(10)
	}
	var err error
	if db.meta, err = slicestore.OpenDB(filepath.Join(dir, "meta"), mopts); err != nil {
		return openError(err)
	}
	return nil
}

// openSlices opens the slice keyspace: the SliceStore in Options, or the
// Pebble instance in dir/slices, created if need be. Once the config says
// the store keeps its shards there (mustExist; a new store's config is
// written after it is created), a missing dir/slices or a keyspace without
// its manifest marker is ErrCorrupt, not a new empty keyspace in which
// every slice of the store would be missing and to which Puts of content
// the store holds would deduplicate.
func (db *DB) openSlices(dir string, mustExist bool) error {
	if db.slices = db.opts.SliceStore; db.slices != nil {
		return nil
	}
	d := filepath.Join(dir, "slices")
	if _, err := db.opts.fs.Stat(d); mustExist && errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("%w: %s is missing, and the store keeps its shards there", ErrCorrupt, d)
	}
	if err := mkdirDurable(db.opts.fs, d); err != nil {
		return fmt.Errorf("sealkv: creating %s: %w", d, err)
	}
	s, err := slicestore.Open(d, db.opts.fs, pebbleLogger{l: db.opts.Logger, failed: &db.failed}, mustExist)
	if err != nil {
		return openError(err)
	}
	if db.slices = s; db.opts.wrapSlices != nil {
		db.slices = db.opts.wrapSlices(s)
	}
	return nil
}

// mkdirDurable creates dir and any missing parents, syncing each parent
// so a crash right after creating a store cannot lose the directory (and
// with it everything later synced inside it).
func mkdirDurable(fs vfs.FS, dir string) error {
	dir = filepath.Clean(dir)
	if _, err := fs.Stat(dir); err == nil {
		return nil
	}
	parent := filepath.Dir(dir)
	if parent != dir {
		if err := mkdirDurable(fs, parent); err != nil {
			return err
		}
	}
	if err := fs.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	d, err := fs.OpenDir(parent)
	if err != nil {
		return err
	}
	return errors.Join(d.Sync(), d.Close())
}

// openError is the error of a keyspace's Pebble Open: ErrLocked when
// another process holds it, ErrCorrupt when Pebble found its own files
// damaged (a garbled MANIFEST or OPTIONS file) or a keyspace that was
// created has lost its manifest marker (pebble.ErrDBDoesNotExist, see
// slicestore.OpenDB).
func openError(err error) error {
	if errors.Is(err, syscall.EWOULDBLOCK) || errors.Is(err, syscall.EAGAIN) || strings.Contains(err.Error(), "lock held") {
		return fmt.Errorf("%w: %v", ErrLocked, err)
	}
	if pebble.IsCorruptionError(err) || errors.Is(err, pebble.ErrDBDoesNotExist) {
		return fmt.Errorf("%w: opening store: %w", ErrCorrupt, err)
	}
	return fmt.Errorf("sealkv: opening store: %w", err)
}

// closeKeyspaces closes what a failed Open opened: the meta keyspace and,
// unless it is the caller's (Options.SliceStore) or was not opened, the
// slice keyspace.
func (db *DB) closeKeyspaces() {
	if db.opts.SliceStore == nil && db.slices != nil {
		db.slices.Close()
	}
	db.meta.Close()
}

// start checks the keys and Options against the store (or creates it),
// opens the slice keyspace, recovers and begins this DB's writer session.
// Nothing is written before the checks pass.
func (db *DB) start(dir string) (err error) {
	defer catch(&err)
	cfg, isNew, err := db.config()
	if err != nil {
		return err
	}
	if err := db.openSlices(dir, !isNew && cfg.Slices == record.SlicesLocal); err != nil {
		return err
	}
	if isNew {
		if err := db.meta.Set(record.ConfigKey, cfg.Encode(), pebble.Sync); err != nil {
			return err
		}
	}
	c, err := chunker.New([32]byte(db.keys.derive("chunker")), chunker.Params{Min: int(cfg.Min), Avg: int(cfg.Avg), Max: int(cfg.Max)})
	if err != nil {
		return fmt.Errorf("%w: %v", ErrCorrupt, err)
	}
	db.chunker = c
	if err := db.loadStats(); err != nil {
		return err
	}
	if err := db.recover(); err != nil {
		return fmt.Errorf("sealkv: recovery: %w", err)
	}
	db.sessionMu.Lock()
	defer db.sessionMu.Unlock()
	return db.beginSession()
}

// config reads the store's Config and checks the keys and Options against
// it, or makes the Config of a new store (isNew), which start writes once
// the slice keyspace is open. It writes nothing.
func (db *DB) config() (cfg *record.Config, isNew bool, err error) {
	v, closer, err := db.meta.Get(record.ConfigKey)
	if errors.Is(err, pebble.ErrNotFound) {
		// The Config is a store's first record: a meta keyspace holding
		// others without it lost it, and must not be claimed by these
		// keys (the store's own would get ErrWrongKeys after).
		used, err := db.metaUsed()
		if err != nil {
			return nil, false, err
		}
		if used {
			return nil, false, fmt.Errorf("%w: store config missing", ErrCorrupt)
		}
		want := db.opts.sliceParams()
		if err := want.Validate(); err != nil {
			return nil, false, fmt.Errorf("%w: %v", ErrInvalidOptions, err)
		}
		return &record.Config{Fingerprint: db.keys.Fingerprint(), Min: int64(want.Min), Avg: int64(want.Avg), Max: int64(want.Max),
			Created: now().UnixNano(), Slices: db.opts.sliceKind()}, true, nil
	}
	if err != nil {
		return nil, false, err
	}
	cfg, err = record.DecodeConfig(v)
	closer.Close()
	if err != nil {
		return nil, false, fmt.Errorf("%w: store config: %v", ErrCorrupt, err)
	}
	if cfg.Fingerprint != db.keys.Fingerprint() {
		return nil, false, ErrWrongKeys
	}
	o := db.opts
	if (o.MinSliceSize != 0 && int64(o.MinSliceSize) != cfg.Min) || (o.AvgSliceSize != 0 && int64(o.AvgSliceSize) != cfg.Avg) || (o.MaxSliceSize != 0 && int64(o.MaxSliceSize) != cfg.Max) {
		return nil, false, fmt.Errorf("%w: slice sizes differ from the store's %d/%d/%d (they are fixed at creation; leave them zero)", ErrInvalidOptions, cfg.Min, cfg.Avg, cfg.Max)
	}
	return cfg, false, db.checkSliceKind(cfg.Slices)
}

// checkSliceKind refuses Options whose slice keyspace is not the one the
// store keeps its shards in: its reads would find none, and its writes
// would go where the store never looks. A Config written before the kind
// was recorded (SlicesUnknown) takes either.
func (db *DB) checkSliceKind(k record.SliceKind) error {
	switch {
	case k == record.SlicesUnknown || k == db.opts.sliceKind():
		return nil
	case k == record.SlicesExternal:
		return fmt.Errorf("%w: the store keeps its shards in a SliceStore given to Open, and Options.SliceStore is nil", ErrInvalidOptions)
	default:
		return fmt.Errorf("%w: the store keeps its shards in DIR/slices, and Options.SliceStore is set", ErrInvalidOptions)
	}
}

// metaUsed reports whether the meta keyspace holds any record.
func (db *DB) metaUsed() (bool, error) {
	it, err := db.meta.NewIter(nil)
	if err != nil {
		return false, err
	}
	used := it.First()
	return used, errors.Join(it.Error(), it.Close())
}

func (db *DB) loadStats() error {
	v, closer, err := db.meta.Get(record.StatsKey)
	if errors.Is(err, pebble.ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	defer closer.Close()
	s, err := record.DecodeStats(v)
	if err != nil {
		return fmt.Errorf("%w: stats: %v", ErrCorrupt, err)
	}
	db.stats = *s
	return nil
}

// Close waits for calls in flight, discards open batches (Batch), marks the
// sessions clean and closes both keyspaces. Calls after Close return
// ErrClosed. A List or Children loop is a call in flight until it ends:
// Close inside one, or while an iter.Pull of one is not stopped, waits for
// good.
func (db *DB) Close() error {
	db.callsMu.Lock()
	if db.closed {
		db.callsMu.Unlock()
		return ErrClosed
	}
	db.closed = true
	for db.calls > 0 {
		db.idle.Wait()
	}
	db.callsMu.Unlock()
	var err error
	if ferr := db.failure(); ferr != nil {
		// Write nothing more: close both keyspaces so the lock is released
		// and the store can be reopened; the session stays unclean and
		// recovery finishes it from what is durable.
		err = ferr
	} else {
		err = errors.Join(db.discardBatches(), db.closeSessions())
	}
	err = errors.Join(err, db.slices.Close(), db.meta.Close())
	db.wipeSessions()
	if err != nil {
		return fmt.Errorf("sealkv: close: %w", err)
	}
	return nil
}

// wipeSessions zeroes the session keys the DB holds: its writer sessions'
// and those decapsulated for reading. Close calls it once every call has
// ended and none can begin, so no seal or open can be using them. (Go may
// have copied them elsewhere; see SECURITY.md, "Key memory".)
func (db *DB) wipeSessions() {
	for _, s := range db.sessions {
		clear(s.Key[:])
	}
	db.opened.Range(func(id, v any) bool {
		clear(v.(*seal.Session).Key[:])
		db.opened.Delete(id)
		return true
	})
}

// begin admits a call on key: the DB is open, the key valid and ctx live.
// The returned function ends the call.
func (db *DB) begin(ctx context.Context, key string) (func(), error) {
	done, err := db.enterCtx(ctx)
	if err != nil {
		return nil, err
	}
	if err := checkKey(key); err != nil {
		done()
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		done()
		return nil, err
	}
	return done, nil
}

// enterCtx is enter for a call given ctx, which must not be nil: calls
// would panic on it, begin's with the call still counted, so that Close
// waited for it forever.
func (db *DB) enterCtx(ctx context.Context) (func(), error) {
	if ctx == nil {
		return nil, fmt.Errorf("%w: nil context.Context", ErrInvalidOptions)
	}
	return db.enter()
}

// enter admits a call; the returned function ends it.
func (db *DB) enter() (func(), error) {
	db.callsMu.Lock()
	defer db.callsMu.Unlock()
	if db.closed {
		return nil, ErrClosed
	}
	if err := db.failure(); err != nil {
		return nil, err
	}
	db.calls++
	return db.exit, nil
}

func (db *DB) exit() {
	db.callsMu.Lock()
	defer db.callsMu.Unlock()
	if db.calls--; db.calls == 0 {
		db.idle.Broadcast()
	}
}

// Stats are the store's totals.
type Stats struct {
	// Data is the number of live Data entries.
	Data int64
	// Versions is the number of ContentMetas, current and older.
	Versions int64
	// Slices is the number of unique live slices.
	Slices int64
	// LogicalBytes is OriginalSize summed over every version of every Data.
	LogicalBytes int64
	// UniqueBytes is OriginalSize summed over unique slices.
	UniqueBytes int64
	// StoredBytes is the size of all live shards, parity and checksums
	// included.
	StoredBytes int64
}

// Stats returns the store's totals. It is cheap: the totals are kept up to
// date in the same batches as the changes they count.
func (db *DB) Stats() Stats {
	db.mu.Lock()
	defer db.mu.Unlock()
	s := db.stats
	return Stats{Data: s.Data, Versions: s.Versions, Slices: s.Slices, LogicalBytes: s.LogicalBytes, UniqueBytes: s.UniqueBytes, StoredBytes: s.StoredBytes}
}

// pebbleLogger routes Pebble's messages to slog and turns Pebble's fatal
// errors (Logger.Fatalf) into ErrFailed.
//
// Pebble calls Fatalf when it cannot continue: a failed write or sync of
// the write-ahead log ("fatal commit error"), a failed MANIFEST write or
// sync, a broken internal invariant. Fatalf must not return (Pebble would
// go on as if the write had succeeded), so it logs the message at error
// level with fatal=true, marks the DB failed (every later call returns
// ErrFailed) and panics with an error wrapping ErrFailed and the cause.
//
// The fatal commit error is raised synchronously in the goroutine that
// commits the batch, with none of Pebble's locks held: sealkv recovers that
// panic (see catch) and returns the error, and the host goes on. The other
// fatal errors happen in Pebble's background flushes and compactions, or
// with Pebble's DB mutex held; no caller can recover them safely and the
// panic ends the process, loudly: the log line and the panic value carry
// the cause.
type pebbleLogger struct {
	l      *slog.Logger
	failed *atomic.Pointer[error] // the DB's; nil outside a DB
}

func (p pebbleLogger) Infof(format string, args ...any) {
	p.l.Debug(fmt.Sprintf(format, args...), "component", "pebble")
}

func (p pebbleLogger) Errorf(format string, args ...any) {
	p.l.Error(fmt.Sprintf(format, args...), "component", "pebble")
}

func (p pebbleLogger) Fatalf(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	p.l.Error(msg, "component", "pebble", "fatal", true)
	f := &engineFailure{msg: msg, commit: strings.HasPrefix(format, "pebble: fatal commit error")}
	for _, a := range args {
		if e, ok := a.(error); ok {
			f.cause = e
		}
	}
	p.fail(f)
	if f.commit {
		panic(commitFailure{f})
	}
	panic(f)
}

// fail records f as the DB's failure unless one is recorded already, and
// reports whether it did.
func (p pebbleLogger) fail(f *engineFailure) bool {
	var err error = f
	return p.failed != nil && p.failed.CompareAndSwap(nil, &err)
}

// FlushFailed fails the DB when a flush found no space (see
// slicestore.Events): Pebble retries it at once and forever, and commits
// wait for it once unflushed memtables pile up, so a call could hang
// forever. Failing the DB makes every later call return ErrFailed and
// Close write nothing; Pebble's retries stop at Close. Unlike Fatalf it
// returns: Pebble calls it from a flush, holding its mutex.
func (p pebbleLogger) FlushFailed(cause error) {
	f := &engineFailure{msg: "flush failed: " + cause.Error(), cause: cause}
	if p.fail(f) {
		p.l.Error(f.Error(), "component", "pebble", "fatal", true)
	}
}

// engineFailure is a fatal Pebble error. It wraps ErrFailed and the cause.
type engineFailure struct {
	msg    string
	cause  error
	commit bool // a fatal commit error, recoverable by its caller
}

func (f *engineFailure) Error() string { return "sealkv: storage engine failed: " + f.msg }
func (f *engineFailure) Unwrap() []error {
	if f.cause == nil {
		return []error{ErrFailed}
	}
	return []error{ErrFailed, f.cause}
}

// commitFailure is the panic value of a fatal commit error; slicestore's
// guard recognises it by its CommitFailure method.
type commitFailure struct{ f *engineFailure }

func (c commitFailure) CommitFailure() error { return c.f }
func (c commitFailure) Error() string        { return c.f.Error() }
func (c commitFailure) Unwrap() error        { return c.f }

// catch, deferred in a function with a named error result, turns the panic
// of a fatal commit error raised in its goroutine into that error. Other
// panics go on.
func catch(errp *error) {
	r := recover()
	if r == nil {
		return
	}
	c, ok := r.(commitFailure)
	if !ok {
		panic(r)
	}
	*errp = c.f
}

// failure is the fatal error that stopped the DB, if any.
func (db *DB) failure() error {
	if p := db.failed.Load(); p != nil {
		return *p
	}
	return nil
}

// closeSessions marks this DB's writer sessions clean.
func (db *DB) closeSessions() (err error) {
	defer catch(&err)
	if db.needsRecovery.Load() {
		// Keeping the markers makes the next Open roll back what a failed
		// Put could not undo (see put.abort).
		return nil
	}
	b := db.meta.NewBatch()
	defer b.Close()
	for _, s := range db.sessions {
		_ = b.Delete(record.UncleanKey(s.ID), nil)
	}
	return b.Commit(pebble.Sync)
}
