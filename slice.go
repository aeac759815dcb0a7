package kv

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"runtime"
	"slices"
	"sort"
	"sync"

	"github.com/cockroachdb/pebble/v2"

	"github.com/sealkv/kv/internal/bufpool"
	"github.com/sealkv/kv/internal/erasure"
	"github.com/sealkv/kv/internal/record"
	"github.com/sealkv/kv/internal/seal"
	"github.com/sealkv/kv/internal/slicestore"
)

// readAhead is how many slices a sequential Reader fetches ahead.
const readAhead = 4

// readSlice returns the verified ClearText of slice id: shard checksums,
// key commitment, GCM tag and the keyed BLAKE3 of the plaintext against id
// are all checked. A slice that cannot be verified gives ErrCorrupt naming
// it, and is marked bad so the next Put of the same content replaces it.
func (db *DB) readSlice(ctx context.Context, id *SliceID) ([]byte, error) {
	rec, err := sliceRecord(db.meta, id)
	if err != nil {
		return nil, err
	}
	if rec == nil {
		// Only a Delete or PruneVersions committed after the Reader was
		// opened removes a record a manifest lists.
		return nil, fmt.Errorf("%w: slice %s (its content was deleted while being read)", ErrNotFound, id)
	}
	s, err := db.readSession(rec.Session)
	if err != nil {
		if errors.Is(err, ErrCorrupt) {
			db.markBad(id, rec) // no session, no reading: let a Put reseal it
		}
		return nil, err
	}
	sealed, _, _, err := db.readSealed(ctx, id, rec, false)
	defer bufpool.Put(sealed)
	if err != nil {
		if errors.Is(err, ErrCorrupt) {
			if db.moved(id, rec) {
				return nil, fmt.Errorf("%w: slice %s (its content was deleted while being read)", ErrNotFound, id)
			}
			db.markBad(id, rec)
		}
		return nil, err
	}
	clear, err := db.openSealed(s, id, rec, sealed)
	if err != nil {
		db.markBad(id, rec)
		return nil, err
	}
	return clear, nil
}

// readSealed reads the k data shards of a slice and, if any is missing or
// bad, all k+m, and decodes the SealedSlice. It returns the indexes of bad
// shards and, when repair is set, their rebuilt contents.
func (db *DB) readSealed(ctx context.Context, id *SliceID, rec *record.Slice, repair bool) ([]byte, []int, [][]byte, error) {
	coder, err := erasure.New(rec.K, rec.M)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("%w: slice %s: %v", ErrCorrupt, id, err)
	}
	loc := slicestore.Location{Session: rec.Session, Ctr: rec.Ctr}
	n := rec.K + rec.M
	if !repair {
		// Fast path: the k data shards alone, when all are good.
		shards, err := db.slices.Get(ctx, loc, rec.K)
		if err != nil && !errors.Is(err, ErrUnavailable) {
			return nil, nil, nil, err
		}
		shards = append(shards, make([][]byte, rec.M)...)
		buf := bufpool.Get(int(rec.SealedSize))
		sealed, bad, _, err := coder.DecodeInto(buf, id[:], shards, int(rec.SealedSize), false)
		recycle(shards)
		if err == nil && (len(bad) == 0 || bad[0] >= rec.K) {
			return sealed, nil, nil, nil
		}
		bufpool.Put(buf) // a data shard is missing or bad: read all k+m
	}
	shards, err := db.slices.Get(ctx, loc, n)
	unavailable := errors.Is(err, ErrUnavailable)
	if err != nil && !unavailable {
		return nil, nil, nil, err
	}
	sealed, bad, rebuilt, derr := coder.Decode(id[:], shards, int(rec.SealedSize), repair)
	recycle(shards)
	switch {
	case derr != nil && unavailable:
		// Some shards could not be fetched: what is known says nothing
		// of damage, and the slice must not be marked bad.
		return nil, nil, nil, fmt.Errorf("sealkv: slice %s: %d of %d shards good, need %d: %w", id, n-len(bad), n, rec.K, err)
	case derr != nil:
		return nil, bad, nil, fmt.Errorf("%w: slice %s: %d of %d shards bad, need %d good", ErrCorrupt, id, len(bad), n, rec.K)
	}
	if len(bad) > 0 && !repair {
		db.opts.Logger.Warn("sealkv: slice read with repair from parity", "slice", id.String(), "bad_shards", bad)
	}
	return sealed, bad, rebuilt, nil
}

// recycle returns shards read from the SliceStore, which the caller owns
// (DecodeInto copies what it keeps), to the buffer pool.
func recycle(shards [][]byte) {
	for _, s := range shards {
		bufpool.Put(s)
	}
}

// openSealed authenticates, decrypts, decompresses and checks a slice.
// The ClearText is in a buffer from bufpool.
// On error it has returned every buffer it took: a damaged slice fails
// every read of it, and each must not cost a buffer outside the Go heap.
func (db *DB) openSealed(s *seal.Session, id *SliceID, rec *record.Slice, sealed []byte) ([]byte, error) {
	buf := bufpool.Get(len(sealed))
	body, err := s.Open(buf[:0], sealed, (*[64]byte)(id), rec.Ctr, rec.Flags, &rec.Commit)
	if err == nil && rec.Flags&seal.FlagPadded != 0 {
		body, err = seal.Unpad(body)
	}
	if err != nil {
		bufpool.Put(buf)
		return nil, fmt.Errorf("%w: slice %s: %w", ErrCorrupt, id, err)
	}
	clear := body
	if rec.Flags&seal.FlagCompressed != 0 {
		clear, err = decompress(body, rec.OriginalSize)
		bufpool.Put(buf)
		if err != nil {
			return nil, fmt.Errorf("%w: slice %s: %v", ErrCorrupt, id, err)
		}
	}
	if int64(len(clear)) != rec.OriginalSize || db.sliceID(clear) != *id {
		bufpool.Put(clear)
		return nil, fmt.Errorf("%w: slice %s: plaintext does not match its SliceID", ErrCorrupt, id)
	}
	return clear, nil
}

// moved reports whether slice id no longer has the record rec: a Delete
// committed between reading the record and reading its shards removed them.
func (db *DB) moved(id *SliceID, rec *record.Slice) bool {
	cur, err := sliceRecord(db.meta, id)
	return err == nil && (cur == nil || cur.Session != rec.Session || cur.Ctr != rec.Ctr)
}

// markBad records that slice id (as described by rec) failed verification,
// so the next Put of the same content seals it anew.
func (db *DB) markBad(id *SliceID, rec *record.Slice) {
	defer catch(new(error)) // runs in Reader fetches: a fatal engine error must not escape
	db.mu.Lock()
	defer db.mu.Unlock()
	cur, err := sliceRecord(db.meta, id)
	if err != nil || cur == nil || cur.Session != rec.Session || cur.Ctr != rec.Ctr || cur.Bad {
		return
	}
	cur.Bad = true
	_ = db.meta.Set(record.SliceKey((*[64]byte)(id)), cur.Encode(), pebble.Sync)
}

// Get returns a Reader of the current version of key. ctx also governs the
// Reader's reads: cancel it and they fail.
func (db *DB) Get(ctx context.Context, key string) (*Reader, error) {
	return db.get(ctx, key, 0)
}

// GetVersion returns a Reader of the given version of key; ErrNotFound if
// key has no such version.
func (db *DB) GetVersion(ctx context.Context, key string, version uint64) (*Reader, error) {
	if version == 0 {
		return nil, fmt.Errorf("%w: %q version 0 (versions start at 1)", ErrNotFound, key)
	}
	return db.get(ctx, key, version)
}

func (db *DB) get(ctx context.Context, key string, version uint64) (*Reader, error) {
	done, err := db.begin(ctx, key)
	if err != nil {
		return nil, err
	}
	defer done()
	if !db.keys.CanRead() {
		return nil, ErrWriteOnly
	}
	d, err := getData(db.meta, key)
	if err != nil {
		return nil, err
	}
	v := &d.Versions[len(d.Versions)-1]
	if version != 0 {
		i := sort.Search(len(d.Versions), func(i int) bool { return d.Versions[i].Version >= version })
		if i == len(d.Versions) || d.Versions[i].Version != version {
			return nil, fmt.Errorf("%w: %q version %d", ErrNotFound, key, version)
		}
		v = &d.Versions[i]
	}
	return db.newReader(ctx, v), nil
}

// newReader returns a Reader of version v.
func (db *DB) newReader(ctx context.Context, v *record.Version) *Reader {
	r := &Reader{db: db, ctx: ctx, manifest: v.Manifest, size: v.OriginalSize, readCache: &readCache{cache: map[int64]*fetch{}}}
	// A Reader dropped without Close would keep its cached slices' buffers,
	// which live outside the Go heap, for good; like an *os.File, it gives
	// them back when collected. The cleanup holds the cache, not r.
	r.cleanup = runtime.AddCleanup(r, (*readCache).close, r.readCache)
	return r
}

// Reader reads one version of a Data. It implements io.ReadSeekCloser and
// io.ReaderAt, reads only the slices it needs and verifies every one. Read
// and Seek share a position and must not be called concurrently; ReadAt may
// be called concurrently. Reads after the DB or the Reader is closed return
// ErrClosed. A read that failed (ErrUnavailable, say) may be retried on the
// same Reader: it fetches the slice again.
type Reader struct {
	db       *DB
	ctx      context.Context
	manifest record.ManifestID
	size     int64
	pos      int64

	*readCache
	cleanup runtime.Cleanup // closes readCache if the Reader is never closed
}

// readCache is what a Reader holds in memory. It is apart from the Reader,
// and points to nothing of it, so that a Reader's cleanup can close it.
type readCache struct {
	mu     sync.Mutex
	closed bool
	chunk  *chunkIndex
	cache  map[int64]*fetch // by slice start offset
	recent []int64          // cache keys, oldest first
}

// chunkIndex is one manifest chunk with the ClearText offset of each slice.
type chunkIndex struct {
	start int64
	refs  []record.SliceRef
	offs  []int64 // offs[i] = start of refs[i]; offs[len] = end
}

// fetch is a slice being read (or read). Its ClearText buffer goes back to
// bufpool once the fetch has left the cache and no caller is copying from
// it; refs and evicted are guarded by Reader.mu.
type fetch struct {
	done    chan struct{}
	clear   []byte
	err     error
	refs    int  // callers of sliceAt still using clear
	evicted bool // dropped from the cache
	fetched bool // clear is set (or err)
}

// recycleLocked returns f's buffer to the pool once nothing can use it.
// Reader.mu is held.
func (f *fetch) recycleLocked() {
	if f.evicted && f.fetched && f.refs == 0 && f.clear != nil {
		bufpool.Put(f.clear)
		f.clear = nil
	}
}

// release ends a caller's use of the ClearText sliceAt returned for f.
func (r *Reader) release(f *fetch) {
	r.mu.Lock()
	defer r.mu.Unlock()
	f.refs--
	f.recycleLocked()
}

// Size is the length of the ClearText.
func (r *Reader) Size() int64 { return r.size }

// Read reads from the current position.
func (r *Reader) Read(p []byte) (int, error) {
	n, err := r.ReadAt(p, r.pos)
	r.pos += int64(n)
	if err == io.EOF && n > 0 {
		err = nil
	}
	return n, err
}

// WriteTo writes the ClearText from the current position to the end to w,
// a slice at a time without an intermediate buffer; io.Copy uses it. A nil
// w is refused with ErrInvalidOptions; a w that writes less than it was
// given without an error fails with io.ErrShortWrite, as in io.Copy.
func (r *Reader) WriteTo(w io.Writer) (int64, error) {
	if w == nil {
		return 0, fmt.Errorf("%w: nil io.Writer", ErrInvalidOptions)
	}
	done, err := r.db.enter()
	if err != nil {
		return 0, err
	}
	defer done()
	var n int64
	for r.pos < r.size {
		f, start, err := r.sliceAt(r.pos)
		if err != nil {
			return n, err
		}
		m, err := r.write(w, f.clear[r.pos-start:], f)
		n += int64(m)
		r.pos += int64(m)
		if err != nil {
			return n, err
		}
	}
	return n, nil
}

// write writes p, from fetch f, to w and releases f, also if w panics: f's
// buffer lives outside the Go heap and would never come back. A count
// io.Writer forbids is an error: used, it would move the position past
// bytes never written, or back.
func (r *Reader) write(w io.Writer, p []byte, f *fetch) (int, error) {
	defer r.release(f)
	m, err := w.Write(p)
	switch {
	case m < 0 || m > len(p):
		return 0, fmt.Errorf("%w (%d bytes of %d)", errWriterCount, m, len(p))
	case m < len(p) && err == nil:
		return m, io.ErrShortWrite
	}
	return m, err
}

// errWriterCount fails a WriteTo whose writer claimed to have written a
// negative count or more than it was given.
var errWriterCount = errors.New("sealkv: writer returned an invalid count")

// Seek sets the position for the next Read. An unknown whence, or a
// position before the start or beyond the largest int64, is refused with
// ErrInvalidOptions and leaves the position as it was.
func (r *Reader) Seek(offset int64, whence int) (int64, error) {
	var base int64 // never negative, so only offset > 0 can overflow
	switch whence {
	case io.SeekStart:
	case io.SeekCurrent:
		base = r.pos
	case io.SeekEnd:
		base = r.size
	default:
		return 0, fmt.Errorf("%w: Seek: invalid whence %d", ErrInvalidOptions, whence)
	}
	switch {
	case offset > math.MaxInt64-base:
		return 0, fmt.Errorf("%w: Seek: position %d + %d overflows", ErrInvalidOptions, base, offset)
	case base+offset < 0:
		return 0, fmt.Errorf("%w: Seek: negative position %d", ErrInvalidOptions, base+offset)
	}
	r.pos = base + offset
	return r.pos, nil
}

// Close releases the Reader and the slices it holds in memory (buffers
// outside the Go heap). Every Reader should be closed: one that is not
// keeps them until the garbage collector finds it unreachable.
func (r *Reader) Close() error {
	r.cleanup.Stop()
	r.readCache.close()
	return nil
}

// close hands the cached slices' buffers back: at once those nothing reads,
// the others when their fetch or read ends (recycleLocked).
func (c *readCache) close() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, f := range c.cache {
		f.evicted = true
		f.recycleLocked()
	}
	c.closed, c.cache, c.chunk, c.recent = true, nil, nil, nil
}

// ReadAt reads len(p) bytes at off, or fewer with io.EOF at the end.
func (r *Reader) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, fmt.Errorf("%w: ReadAt: negative offset %d", ErrInvalidOptions, off)
	}
	done, err := r.db.enter()
	if err != nil {
		return 0, err
	}
	defer done()
	n := 0
	for n < len(p) && off < r.size {
		f, start, err := r.sliceAt(off)
		if err != nil {
			return n, err
		}
		c := copy(p[n:], f.clear[off-start:])
		r.release(f)
		n += c
		off += int64(c)
	}
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

// sliceAt returns the fetched slice holding off and its start, and starts
// fetching the slices after it. Unless it fails, the caller reads f.clear
// and then calls release(f).
func (r *Reader) sliceAt(off int64) (*fetch, int64, error) {
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return nil, 0, fmt.Errorf("%w: Reader", ErrClosed)
	}
	ci, err := r.chunkAt(off)
	if err != nil {
		r.mu.Unlock()
		return nil, 0, err
	}
	i := sort.Search(len(ci.refs), func(i int) bool { return ci.offs[i+1] > off }) // slice holding off
	f := r.start(ci, i)
	f.refs++ // before the read-ahead below may evict f
	for a := 1; a <= readAhead && i+a < len(ci.refs); a++ {
		r.start(ci, i+a)
	}
	start := ci.offs[i]
	r.mu.Unlock()
	select {
	case <-f.done:
	case <-r.ctx.Done():
		r.release(f)
		return nil, 0, r.ctx.Err()
	}
	if f.err != nil {
		r.release(f)
		return nil, 0, f.err
	}
	return f, start, nil
}

// start begins (or finds) the fetch of slice i of ci. r.mu is held.
func (r *Reader) start(ci *chunkIndex, i int) *fetch {
	off := ci.offs[i]
	if f := r.cache[off]; f != nil {
		if !f.fetched || f.err == nil {
			return f
		}
		// A failed fetch is tried again, not kept: the failure may have
		// been transient (ErrUnavailable, a store timing out). It holds
		// no buffer.
		delete(r.cache, off)
		r.recent = slices.DeleteFunc(r.recent, func(o int64) bool { return o == off })
	}
	f := &fetch{done: make(chan struct{})}
	r.cache[off] = f
	r.recent = append(r.recent, off)
	for len(r.recent) > readAhead+2 {
		old := r.cache[r.recent[0]]
		delete(r.cache, r.recent[0])
		r.recent = r.recent[1:]
		old.evicted = true
		old.recycleLocked()
	}
	id := SliceID(ci.refs[i].ID)
	want := ci.refs[i].Size
	go func() {
		defer close(f.done)
		done, err := r.db.enter()
		if err != nil {
			f.err = err
			return
		}
		defer done()
		clear, err := r.db.readSlice(r.ctx, &id)
		if err == nil && int64(len(clear)) != want {
			err = fmt.Errorf("%w: slice %s has %d bytes, manifest says %d", ErrCorrupt, id, len(clear), want)
			bufpool.Put(clear) // the fetch fails: nothing reads it
			clear = nil
		}
		r.mu.Lock()
		defer r.mu.Unlock()
		f.clear, f.err, f.fetched = clear, err, true
		f.recycleLocked()
	}()
	return f
}

// chunkAt returns the manifest chunk covering off. r.mu is held.
func (r *Reader) chunkAt(off int64) (*chunkIndex, error) {
	if c := r.chunk; c != nil && off >= c.start && off < c.offs[len(c.refs)] {
		return c, nil
	}
	lo := record.ChunkPrefix(r.manifest)
	it, err := r.db.meta.NewIter(&pebble.IterOptions{LowerBound: lo, UpperBound: record.ChunkKey(r.manifest, off+1)})
	if err != nil {
		return nil, err
	}
	defer it.Close()
	if !it.Last() {
		if err := it.Error(); err != nil {
			return nil, err
		}
		return nil, r.missing(off)
	}
	k := it.Key()
	start := int64(binary.BigEndian.Uint64(k[len(k)-8:]))
	refs, err := record.DecodeChunk(it.Value())
	if err != nil {
		return nil, fmt.Errorf("%w: manifest %x: %v", ErrCorrupt, r.manifest, err)
	}
	c := &chunkIndex{start: start, refs: refs, offs: make([]int64, len(refs)+1)}
	c.offs[0] = start
	for i, ref := range refs {
		c.offs[i+1] = c.offs[i] + ref.Size
	}
	if off >= c.offs[len(refs)] {
		return nil, fmt.Errorf("%w: manifest %x does not cover offset %d", ErrCorrupt, r.manifest, off)
	}
	r.chunk = c
	return c, nil
}

// missing explains a manifest chunk that is not there: the version was
// deleted while being read (ErrNotFound), or the store lost it (ErrCorrupt).
func (r *Reader) missing(off int64) error {
	if _, err := manifestKey(r.db.meta, r.manifest); errors.Is(err, ErrCorrupt) {
		return fmt.Errorf("%w: content deleted while being read", ErrNotFound)
	}
	return fmt.Errorf("%w: manifest %x has no chunk at %d", ErrCorrupt, r.manifest, off)
}
