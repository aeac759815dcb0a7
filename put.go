package kv

import (
	"bytes"
	"cmp"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"runtime"
	"sync"
	"sync/atomic"

	"github.com/cockroachdb/pebble/v2"
	"github.com/zeebo/blake3"

	"github.com/sealkv/kv/internal/bufpool"
	"github.com/sealkv/kv/internal/erasure"
	"github.com/sealkv/kv/internal/record"
	"github.com/sealkv/kv/internal/seal"
	"github.com/sealkv/kv/internal/slicestore"
)

// chunkRefs is how many slices one manifest chunk lists. It also bounds how
// long a Put pins slices in memory before their references are written.
const chunkRefs = 1024

// Put stores the ClearText read from r under key and returns the Data with
// its new current version. r is streamed: memory use does not depend on its
// length. Content equal to the current version adds no version.
//
// If ctx is cancelled or r fails, Put returns that error (errors.Is-able)
// and leaves nothing behind. A nil ctx, r or PutOption is refused with
// ErrInvalidOptions. When Put returns nil the new version is durable.
//
// Puts whose ClearText is shorter than 256 KiB commit in groups: those that finish
// sealing while another group commits are committed together next, with one
// write of their shards and one sync of each keyspace, so many small Puts
// in flight cost far fewer syncs than one each. Each still succeeds or
// fails on its own. Once its ClearText is stored a Put finishes its commit
// even if ctx is cancelled meanwhile.
func (db *DB) Put(ctx context.Context, key string, r io.Reader, opts ...PutOption) (_ *Data, err error) {
	done, err := db.enterCtx(ctx)
	if err != nil {
		return nil, err
	}
	defer done()
	defer catch(&err)
	po, err := putOpts(key, r, opts)
	if err != nil {
		return nil, err
	}
	if po.parent != "" {
		if err := checkParent(db.meta, po.parent); err != nil {
			return nil, err
		}
	}
	s, err := db.stage(ctx, key, r, po, nil)
	if err != nil {
		return nil, err
	}
	return db.commitPut(s)
}

// commitPut commits the staged Put s of DB.Put, with its group if it
// joined one, and undoes it if that fails. After a fatal engine error
// (see catch) nothing is undone: the next Open recovers.
func (db *DB) commitPut(s *staged) (d *Data, err error) {
	defer catch(&err)
	if s.p.grp != nil {
		d, err = db.commitGrouped(s)
	} else {
		var ds []*Data
		if ds, err = db.commitPuts([]*staged{s}); err == nil {
			d = ds[0]
		}
	}
	if err != nil && !s.committed {
		err = errors.Join(err, s.p.abort())
	}
	if err != nil {
		return nil, err
	}
	return d, nil
}

// putOpts checks key, the reader and the options of a Put of it. A nil
// reader or PutOption is refused here, before anything is stored: either
// would panic inside the Put.
func putOpts(key string, r io.Reader, opts []PutOption) (putOptions, error) {
	var po putOptions
	if r == nil {
		return po, fmt.Errorf("%w: nil io.Reader for %.64q", ErrInvalidOptions, key)
	}
	for i, o := range opts {
		if o == nil {
			return po, fmt.Errorf("%w: PutOption %d of %.64q is nil", ErrInvalidOptions, i, key)
		}
		o(&po)
	}
	if err := checkKey(key); err != nil {
		return po, err
	}
	if po.parent != "" {
		if err := checkKey(po.parent); err != nil {
			return po, fmt.Errorf("parent: %w", err)
		}
		if po.parent == key {
			return po, fmt.Errorf("%w: %q cannot be its own parent", ErrInvalidKey, key)
		}
	}
	return po, nil
}

// stage runs a Put up to its commit: every slice is sealed and its shards
// written, durably unless the Put is small and in batch b (then the
// batch's Group makes them durable). On error it undoes what the Put
// wrote.
func (db *DB) stage(ctx context.Context, key string, r io.Reader, po putOptions, b *Batch) (*staged, error) {
	p := db.newPut(key)
	p.batch = b
	ok := false
	defer func() { // also on a panic: the group's leader waits for p
		if !ok {
			p.leaveGroup()
		}
	}()
	c, err := p.run(ctx, r)
	if err != nil {
		p.leaveGroup() // first: the group need not wait for the rollback
		err = errors.Join(err, p.abort())
		var rp *readerPanic
		if errors.As(err, &rp) {
			panic(rp.value) // the Put is undone; the caller sees its reader's panic
		}
		return nil, err
	}
	ok = true
	return &staged{p: p, c: c, po: po}, nil
}

// leaveGroup takes a Put that will not commit out of its group, if any.
func (p *put) leaveGroup() {
	if p.grp != nil {
		p.db.groups.leave(p.grp)
		p.grp = nil
	}
}

// put is one Put in flight.
type put struct {
	db       *DB
	key      string
	sess     *writerSession // the session the Put seals under
	num      uint64         // put number within sess
	manifest record.ManifestID
	coder    *erasure.Coder
	batch    *Batch    // nil unless the Put is part of a Batch
	grp      *putGroup // the group commit a small DB.Put joined

	// guarded by db.mu
	pins  map[SliceID]int       // pins taken and not yet released
	local map[SliceID]*newSlice // slices this Put seals, until published
	wrote bool                  // manifest record written

	// writer side (the goroutine running Put)
	w       slicestore.Writer
	pending []*job // added to w, not yet published
	added   int    // slices added to w
	publ    int    // slices published (a prefix of those added)
	chunk   []record.SliceRef
	start   int64 // ClearText offset of chunk[0]
	off     int64
}

// newSlice lets a job that found its slice being sealed by an earlier job of
// the same Put wait for the stored size.
type newSlice struct {
	ready  chan struct{}
	stored int64
	err    error
	// unpinned is set, under db.mu, when a manifest chunk released the
	// Put's last pin of the slice before the Put published it: another
	// Put may have published it since, even if this one pins it again.
	unpinned bool
}

// job is one slice moving through the pipeline.
type job struct {
	seq    uint64
	data   []byte
	done   chan struct{}
	id     SliceID
	local  *newSlice     // set when an earlier job seals the same slice
	bad    bool          // the slice had a record, marked bad: this job replaces it
	rec    *record.Slice // set when this job sealed a new slice
	own    *newSlice     // this job's announcement for later duplicates
	shards [][]byte
	stored int64
	err    error
	blk    *block // holds data
}

// content is what run learned about the ClearText.
type content struct {
	id           ContentID
	size, stored int64
	slices       int64
}

func (db *DB) newPut(key string) *put {
	coder, _ := erasure.New(db.opts.DataShards, db.opts.ParityShards) // checked in Open
	return &put{
		db: db, key: key, coder: coder,
		pins:  map[SliceID]int{},
		local: map[SliceID]*newSlice{},
	}
}

// number gives the Put its put number and slice writer once its first
// block is read. A Put whose ClearText fits in that block takes both from
// its Batch, or else joins a group commit (putGroup); either's Group writes
// the slices of many Puts once, sorted, instead of through the write-ahead
// log. A larger Put takes them from the DB.
func (p *put) number(small bool) (err error) {
	switch {
	case small && p.batch != nil:
		if p.sess, p.num, err = p.batch.number(); err == nil {
			p.w = p.batch.group.NewWriter()
		}
	case small:
		if p.grp, p.sess, p.num, err = p.db.groups.join(p.db); err == nil {
			p.w = p.grp.slices.NewWriter()
		}
	default:
		if p.sess, p.num, err = p.db.putNumber(); err == nil {
			p.w = p.db.slices.NewWriter()
		}
	}
	if err != nil {
		return fmt.Errorf("sealkv: starting a new session: %w", err)
	}
	p.manifest = record.NewManifestID(p.sess.ID, p.num)
	return nil
}

// run streams r through reader, cutter, workers and the ordered writer.
func (p *put) run(ctx context.Context, r io.Reader) (*content, error) {
	sem := make(chan struct{}, maxBlocks)
	first, err := p.fill(ctx, r, sem, 0, firstBlock, 0)
	if err != nil || first == nil {
		return nil, cmp.Or(err, context.Cause(ctx))
	}
	if err := p.number(first.eof); err != nil {
		first.release()
		return nil, err
	}
	if first.eof {
		return p.runInline(ctx, first)
	}
	// Only the pipeline needs to cancel its own stages. (Deriving a
	// context costs a Put the parent context's lock, which concurrent
	// small Puts sharing one context contend for.)
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	n := p.db.opts.Concurrency
	work := make(chan *job, 2*n)
	order := make(chan *job, 4*n)
	var wg sync.WaitGroup
	for range n {
		wg.Go(func() {
			for j := range work {
				p.process(j)
				close(j.done)
				// Let the goroutine just readied run: the writer, one
				// Put's only serial stage, which otherwise waits for a
				// worker to block or be preempted. Scheduler delay of
				// the writer over a 1 GiB Put (go tool trace): 579 →
				// 445 ms, of the cutter 316 → 159 ms; warm Puts, 5 runs
				// alternated: median 663 → 682 MB/s (GOMAXPROCS=1, 4
				// runs: 353 → 367).
				runtime.Gosched()
			}
		})
	}
	filled := make(chan *block, 1)
	var readErr, cutErr error
	wg.Go(func() {
		// A reader calling runtime.Goexit (t.FailNow, say) leaves
		// errReaderExited: the Put fails instead of hanging, or taking
		// what was read for the whole.
		readErr = errReaderExited
		defer func() {
			close(filled)
			if readErr != nil {
				cancel(readErr)
			}
		}()
		readErr = p.read(ctx, r, first, filled)
	})
	go func() {
		cutErr = p.cut(ctx, filled, work, order)
		close(work)
		close(order)
		if cutErr != nil {
			cancel(cutErr)
		}
		for b := range filled { // unblock the reader
			b.release()
		}
	}()
	c, err := p.write(ctx, order)
	if err != nil {
		cancel(err)
	}
	for j := range order { // drain so the cutter can finish
		<-j.done
		j.release()
	}
	wg.Wait()
	var rp *readerPanic
	if errors.As(readErr, &rp) {
		// Whatever else failed meanwhile (ctx cancelled, say), the
		// reader's panic must reach the caller (see stage).
		err = readErr
	}
	err = cmp.Or(err, readErr, cutErr)
	if err == nil {
		err = context.Cause(ctx)
	}
	if err != nil {
		return nil, err
	}
	return c, nil
}

// A block is a span of ClearText as read from the Put's reader. Slices are
// cut from it in place, not copied; it is recycled when the last of them has
// been written. The first maxSlice bytes are left free for the cutter to
// copy in the tail of the previous block, so a slice is always contiguous.
type block struct {
	b     []byte // b[:head] is free, b[head:] holds ClearText
	head  int
	off   int64 // ClearText offset of b[head]
	eof   bool
	users atomic.Int32
	sem   chan struct{} // bounds the blocks of one Put in memory

	// ahead is what speculate found in the block, set before spec is
	// closed. spec is nil for the first block, which the cutter starts at
	// a known boundary.
	ahead *ahead
	spec  chan struct{}
}

func (b *block) release() {
	if b.users.Add(-1) == 0 {
		bufpool.Put(b.b[:cap(b.b)])
		<-b.sem
	}
}

// Block sizes: a Put's first block is small so small Puts stay cheap (and
// one whose ClearText fits in it runs inline, see runInline); the later ones
// hold one maximal slice after the copied-in tail.
const (
	firstBlock = 256 << 10
	maxBlocks  = 3
)

// read sends first and the blocks that follow it in r on out, in order,
// until r ends. It runs on its own goroutine so the cutter never waits for r.
func (p *put) read(ctx context.Context, r io.Reader, first *block, out chan<- *block) error {
	max := p.db.chunker.Params().Max
	for b := first; ; {
		select {
		case out <- b:
		case <-ctx.Done():
			b.release()
			return nil // the cause is reported by whoever cancelled
		}
		if b.eof {
			return nil
		}
		var err error
		if b, err = p.fill(ctx, r, b.sem, max, max, b.off+int64(len(b.b)-b.head)); err != nil || b == nil {
			return err
		}
	}
}

// fill reads the block of r at ClearText offset off: up to size bytes after
// head free ones. It returns nil if ctx is done first. Every block but a
// Put's first starts chunking ahead at once (see speculate).
func (p *put) fill(ctx context.Context, r io.Reader, sem chan struct{}, head, size int, off int64) (*block, error) {
	select {
	case sem <- struct{}{}:
	case <-ctx.Done():
		return nil, nil
	}
	b := &block{b: bufpool.Get(head + size), head: head, off: off, sem: sem}
	b.users.Store(1) // the cutter's
	n, err := readFull(r, b.b[head:])
	b.b = b.b[:head+n]
	switch {
	case err == io.EOF:
		b.eof = true
	case err != nil:
		b.release()
		return nil, fmt.Errorf("sealkv: reading %q: %w", p.key, err)
	}
	if b.off > 0 {
		b.spec = make(chan struct{})
		b.users.Add(1) // speculate's
		go p.speculate(b)
	}
	return b, nil
}

// errReaderExited fails a Put whose reader ended its goroutine.
var errReaderExited = errors.New("sealkv: the reader called runtime.Goexit")

// readerPanic is a panic of a Put's reader, which Put raises again on the
// caller's goroutine once it has undone the Put: the reader runs on a
// goroutine of the Put's own, where a panic would end the process.
type readerPanic struct{ value any }

func (p *readerPanic) Error() string { return fmt.Sprintf("sealkv: reader panicked: %v", p.value) }

// readFull is io.ReadFull except that it returns r's errors as they are,
// io.EOF only at the end of r: io.ReadFull also turns that end into
// io.ErrUnexpectedEOF, which readers such as a truncated HTTP body or gzip
// stream return as an error, and the Put must not store such a ClearText
// cut short. A reader that keeps returning (0, nil) fails the Put with
// io.ErrNoProgress, as bufio.Reader does, instead of spinning forever, and
// one that returns an impossible count fails it with errReaderCount.
func readFull(r io.Reader, b []byte) (n int, err error) {
	defer func() {
		if v := recover(); v != nil {
			err = &readerPanic{v}
		}
	}()
	empty := 0 // reads in a row that returned nothing
	for n < len(b) {
		m, err := r.Read(b[n:])
		if m < 0 || m > len(b)-n {
			return n, fmt.Errorf("%w (%d bytes into a buffer of %d)", errReaderCount, m, len(b)-n)
		}
		n += m
		if err != nil {
			return n, err
		}
		if m > 0 {
			empty = 0
		} else if empty++; empty == maxEmptyReads {
			return n, io.ErrNoProgress
		}
	}
	return n, nil
}

// maxEmptyReads is how many (0, nil) reads in a row readFull takes before
// giving up, bufio.Reader's limit.
const maxEmptyReads = 100

// errReaderCount fails a Put whose reader claimed to have read a negative
// count or more than the buffer it was given (io.Reader forbids both), where
// using the count would slice out of bounds.
var errReaderCount = errors.New("sealkv: reader returned an invalid count")

// runInline puts a ClearText that fits in its first block on the caller's
// goroutine: the cutter runs to the end into channels that hold every slice,
// then each slice is processed and written in order. Small Puts so skip the
// pipeline's four goroutines, their hand-offs and stack growth; their few
// slices (at most 5 with the default sizes) are sealed one after another.
// 100,000 × 4 KiB files from 64 goroutines (cold, 6 runs alternated):
// median 15.7 → 14.4 s, faster in 5 of the 6 pairs.
func (p *put) runInline(ctx context.Context, b *block) (*content, error) {
	// Every slice but the last is at least Min long, so the channels never
	// fill and cut never blocks.
	most := (len(b.b)-b.head)/p.db.chunker.Params().Min + 1
	filled := make(chan *block, 1)
	filled <- b
	close(filled)
	work, order := make(chan *job, most), make(chan *job, most)
	err := p.cut(ctx, filled, work, order)
	close(work)
	close(order)
	for b := range filled { // cut found ctx done before it took b
		b.release()
	}
	for j := range work {
		if err == nil {
			p.process(j)
		}
		close(j.done)
	}
	var c *content
	if err == nil {
		c, err = p.write(ctx, order)
	}
	for j := range order { // what write did not consume
		j.release()
	}
	if err != nil {
		return nil, err
	}
	return c, nil
}

// cut cuts the blocks from in into slices and hands them out in order.
func (p *put) cut(ctx context.Context, in <-chan *block, work, order chan<- *job) error {
	var cur *block
	defer func() {
		if cur != nil {
			cur.release()
		}
	}()
	var buf []byte // the unconsumed ClearText, inside cur
	var pos int64  // its offset
	var known []*ahead
	eof := false
	max := p.db.chunker.Params().Max
	for seq := uint64(0); ; {
		for len(known) > 0 && known[0].end < pos {
			known = known[1:]
		}
		// A cut the blocks chunked ahead determine within buf needs no
		// more bytes: taking it before refilling leaves a shorter tail to
		// copy into the next block (the part of a slice that runs into
		// it, instead of up to Max bytes).
		n, ok := p.hinted(known, pos, buf, eof)
		if !ok && !eof && len(buf) < max {
			var next *block
			select {
			case next = <-in:
			case <-ctx.Done():
				return context.Cause(ctx)
			}
			if next == nil {
				return nil // the reader failed or was cancelled; it says why
			}
			// Move the tail in front of the new bytes.
			from := next.head - len(buf)
			copy(next.b[from:], buf)
			buf, eof = next.b[from:], next.eof
			if cur != nil {
				cur.release()
			}
			cur = next
			if next.spec != nil {
				<-next.spec
				known = append(known, next.ahead)
			}
			continue
		}
		if !ok {
			n = p.db.chunker.Cut(buf, eof)
		}
		if n == 0 {
			if eof {
				return nil
			}
			continue
		}
		if seq > math.MaxUint32 {
			return fmt.Errorf("sealkv: %q has more than 2^32 slices", p.key)
		}
		cur.users.Add(1)
		j := &job{seq: seq, data: buf[:n:n], blk: cur, done: make(chan struct{})}
		buf, pos = buf[n:], pos+int64(n)
		seq++
		select {
		case order <- j:
		case <-ctx.Done():
			j.release()
			return context.Cause(ctx)
		}
		select {
		case work <- j:
		case <-ctx.Done():
			close(j.done)
			return context.Cause(ctx)
		}
	}
}

// release returns the job's shards, if any, and drops its hold on its
// ClearText. The slice writer copies what it keeps of the shards.
func (j *job) release() {
	if j.shards != nil {
		bufpool.Put(j.shards[0][:cap(j.shards[0])])
		j.shards = nil
	}
	if j.blk != nil {
		j.blk.release()
		j.blk, j.data = nil, nil
	}
}

// process names a slice and, unless it is stored already, seals and encodes
// it. It runs on a worker.
func (p *put) process(j *job) {
	j.id = p.db.sliceID(j.data)
	stored, err := p.claim(j)
	if err != nil || stored >= 0 || j.local != nil {
		j.stored, j.err = stored, err
		return
	}
	defer close(j.own.ready)
	if err := p.seal(j); err != nil {
		j.err, j.own.err = err, err
		return
	}
	j.own.stored = j.stored
}

// claim pins j's slice and decides whether it must be sealed. It returns the
// stored size of an existing slice, or -1 when j is to seal it (j.own set)
// or waits for an earlier job of this Put (j.local set).
func (p *put) claim(j *job) (int64, error) {
	db := p.db
	db.mu.Lock()
	defer db.mu.Unlock()
	rec, err := sliceRecord(db.meta, &j.id)
	if err != nil {
		return 0, err
	}
	db.pinLocked(j.id, p.key)
	p.pins[j.id]++
	if rec != nil && !rec.Bad && !db.dedupHitOK(&j.id, rec) {
		rec.Bad = true // marked in meta too: sealed anew and replaced on publish
	}
	if rec != nil && !rec.Bad {
		return storedSize(rec), nil
	}
	j.bad = rec != nil
	if ns := p.local[j.id]; ns != nil {
		j.local = ns
		return -1, nil
	}
	j.own = &newSlice{ready: make(chan struct{})}
	p.local[j.id] = j.own
	return -1, nil
}

// seal compresses, seals and erasure codes j's slice.
func (p *put) seal(j *job) error {
	if p.num > math.MaxUint32 { // num<<32 would wrap: counters (and slice locations) would repeat
		return fmt.Errorf("sealkv: put number %d is outside its session", p.num)
	}
	body, flags := j.data, byte(0)
	if p.db.opts.Compression == CompressionZstd {
		var ok bool
		if body, ok = compress(j.data); ok {
			flags |= seal.FlagCompressed
			defer bufpool.Put(body)
		}
	}
	if p.db.opts.Padding {
		body, flags = seal.PadInto(bufpool.Get(seal.PadmeLen(len(body)+1)), body), flags|seal.FlagPadded
		defer bufpool.Put(body)
	}
	ctr := p.num<<32 | j.seq
	sealed, commit := p.sess.Seal(bufpool.Get(len(body) + seal.Overhead)[:0], body, (*[64]byte)(&j.id), ctr, flags)
	defer bufpool.Put(sealed)
	shards, err := p.coder.EncodeInto(bufpool.Get(int(p.coder.StoredSize(len(sealed)))), j.id[:], sealed)
	if err != nil {
		return err
	}
	j.shards = shards
	j.rec = &record.Slice{Session: p.sess.ID, Ctr: ctr, Commit: commit, Flags: flags, OriginalSize: int64(len(j.data)), SealedSize: int64(len(sealed)), K: p.db.opts.DataShards, M: p.db.opts.ParityShards}
	j.stored = storedSize(j.rec)
	return nil
}

func storedSize(r *record.Slice) int64 {
	c, err := erasure.New(r.K, r.M)
	if err != nil {
		return 0
	}
	return c.StoredSize(int(r.SealedSize))
}

// write consumes jobs in order: it lists each slice in the manifest, hands
// new shards to the slice keyspace and publishes them once durable.
func (p *put) write(ctx context.Context, order <-chan *job) (*content, error) {
	c := &content{}
	cid := p.db.cidHash.get()
	defer p.db.cidHash.put(cid)
	for j := range order {
		err := p.writeOne(ctx, c, cid, j)
		j.release() // on every path: a job holds pooled buffers outside the Go heap
		if err != nil {
			return nil, err
		}
	}
	if err := ctx.Err(); err != nil {
		return nil, context.Cause(ctx)
	}
	cid.Digest().Read(c.id[:])
	// The last records and manifest chunk go into the commit's batch.
	return c, p.w.Flush(ctx)
}

// writeOne waits for job j, lists its slice in the manifest and hands its
// shards, if it sealed the slice, to the slice writer.
func (p *put) writeOne(ctx context.Context, c *content, cid *blake3.Hasher, j *job) error {
	<-j.done
	if j.err != nil {
		return j.err
	}
	if j.local != nil {
		<-j.local.ready
		if j.local.err != nil {
			return j.local.err
		}
		j.stored = j.local.stored
	}
	c.size += int64(len(j.data))
	c.stored += j.stored
	c.slices++
	contentEntry(cid, &j.id, len(j.data))
	if err := p.list(j); err != nil {
		return err
	}
	if j.rec == nil {
		return nil
	}
	return p.add(ctx, j)
}

// contentEntry adds one slice to a ContentID hash. A ContentID is the keyed
// BLAKE3-512 of the ClearText's slice list, each slice as SliceID ‖ length
// (uint64, little-endian), not of the ClearText itself: SliceIDs are keyed
// BLAKE3-512 of the slices and the store's chunker (key and sizes fixed at
// creation) cuts equal ClearTexts into equal lists, so equal ContentIDs still
// mean equal ClearTexts, and a Put hashes its ClearText once instead of twice.
func contentEntry(h *blake3.Hasher, id *SliceID, n int) {
	var e [len(SliceID{}) + 8]byte
	copy(e[:], id[:])
	binary.LittleEndian.PutUint64(e[len(id):], uint64(n))
	h.Write(e[:])
}

// list appends j's slice to the manifest, writing a full chunk.
func (p *put) list(j *job) error {
	p.chunk = append(p.chunk, record.SliceRef{ID: j.id, Size: int64(len(j.data))})
	p.off += int64(len(j.data))
	if len(p.chunk) < chunkRefs {
		return nil
	}
	return p.writeChunk()
}

// add hands a new slice's shards to the slice keyspace.
func (p *put) add(ctx context.Context, j *job) error {
	loc := slicestore.Location{Session: j.rec.Session, Ctr: j.rec.Ctr}
	p.pending = append(p.pending, &job{id: j.id, rec: j.rec, bad: j.bad})
	p.added++
	durable, err := p.w.Add(ctx, loc, (*[64]byte)(&j.id), j.shards)
	if err != nil {
		return err
	}
	return p.publish(durable)
}

// writeChunk writes the current manifest chunk and the references it adds,
// then releases the pins that protected those slices until now.
func (p *put) writeChunk() error {
	if len(p.chunk) == 0 {
		return nil
	}
	db := p.db
	db.mu.Lock()
	defer db.mu.Unlock()
	b := db.meta.NewBatch()
	defer b.Close()
	p.chunkInto(b)
	if err := b.Commit(pebble.NoSync); err != nil {
		return fmt.Errorf("sealkv: writing manifest: %w", err)
	}
	p.chunkWritten()
	return nil
}

// chunkInto adds the current manifest chunk and its references to b.
func (p *put) chunkInto(b *pebble.Batch) {
	if len(p.chunk) == 0 {
		return
	}
	if !p.wrote {
		m := record.Manifest{Key: p.key}
		_ = b.Set(record.ManifestKey(p.manifest), m.Encode(), nil)
	}
	_ = b.Set(record.ChunkKey(p.manifest, p.start), record.EncodeChunk(p.chunk), nil)
	for i := range p.chunk {
		_ = b.Set(record.RefKey(&p.chunk[i].ID, p.manifest), nil, nil)
	}
}

// chunkWritten releases the chunk's pins once its batch has committed: the
// references now protect the slices. db.mu is held.
func (p *put) chunkWritten() {
	if len(p.chunk) == 0 {
		return
	}
	p.wrote = true
	for i := range p.chunk {
		id := SliceID(p.chunk[i].ID)
		p.db.unpinLocked(id, p.key)
		if p.pins[id]--; p.pins[id] == 0 {
			delete(p.pins, id)
			if ns := p.local[id]; ns != nil {
				ns.unpinned = true
			}
		}
	}
	p.chunk, p.start = p.chunk[:0], p.off
}

// publish writes the records of the slices up to the durable-th added
// (whose shards are now durable), making them visible to dedup.
func (p *put) publish(durable int) error {
	if durable <= p.publ {
		return nil
	}
	db := p.db
	db.mu.Lock()
	defer db.mu.Unlock()
	rel := db.newRelease()
	defer rel.close()
	if err := p.publishLocked(rel, durable); err != nil {
		return err
	}
	_, err := db.finishLocked(rel)
	if rel.committed {
		// These slices are no longer this Put's to remove, whatever
		// happens to it next (its abort would take their shards from
		// under the records just committed).
		p.published(durable)
	}
	return db.afterCommit(rel, err)
}

// publishLocked adds to rel the records of the slices up to the durable-th
// added. A slice another Put published meanwhile is kept in its first form
// and this Put's shards of it are dropped; a slice marked bad is replaced.
func (p *put) publishLocked(rel *release, durable int) error {
	db := p.db
	for _, j := range p.pending[:durable-p.publ] {
		// Look unless this Put has held its pin since it found no record
		// (a full manifest chunk releases pins before its slices publish,
		// and a later slice of the Put may pin it again).
		pn := db.pins[j.id] // not nil while this Put holds a pin
		ns := p.local[j.id] // nil if a commit that failed published it
		var old *record.Slice
		if j.bad || p.pins[j.id] == 0 || ns == nil || ns.unpinned || pn.published {
			var err error
			if old, err = sliceRecord(rel.b, &j.id); err != nil {
				return err
			}
		}
		if pn != nil {
			pn.published = true
		}
		delete(p.local, j.id)
		if old != nil && !old.Bad {
			rel.drop(j.rec)
			continue
		}
		if old != nil {
			rel.drop(old)
			db.stats.Slices--
			db.stats.UniqueBytes -= old.OriginalSize
			db.stats.StoredBytes -= storedSize(old)
		}
		_ = rel.b.Set(record.SliceKey((*[64]byte)(&j.id)), j.rec.Encode(), nil)
		db.stats.Slices++
		db.stats.UniqueBytes += j.rec.OriginalSize
		db.stats.StoredBytes += storedSize(j.rec)
	}
	return nil
}

// published notes that the slices up to the durable-th are published.
func (p *put) published(durable int) {
	p.pending = append(p.pending[:0], p.pending[durable-p.publ:]...)
	p.publ = durable
}

// abort undoes whatever an unsuccessful Put wrote.
func (p *put) abort() error { return abortPuts(p.db, []*put{p}) }

// abortPuts undoes whatever unsuccessful Puts wrote, with one removal of
// their shards and one release for all of them (a discarded Batch).
func abortPuts(db *DB, ps []*put) error {
	var locs []slicestore.Location
	for _, p := range ps {
		if p.w != nil {
			p.w.Abort()
		}
		for _, j := range p.pending {
			locs = append(locs, slicestore.Location{Session: j.rec.Session, Ctr: j.rec.Ctr})
		}
	}
	err := db.slices.Delete(context.Background(), locs)
	db.mu.Lock()
	defer db.mu.Unlock()
	rel := db.newRelease()
	defer rel.close()
	var merr error
	for _, p := range ps {
		for id, n := range p.pins {
			for range n {
				db.unpinLocked(id, p.key)
			}
			// A Delete may have kept it for this Put alone; the
			// Put may not have listed it yet.
			rel.candidate(id)
		}
		p.pins = nil
		if p.wrote {
			merr = errors.Join(merr, rel.manifest(p.manifest))
		}
		for i := range p.chunk {
			rel.candidate(SliceID(p.chunk[i].ID))
		}
	}
	if merr != nil {
		err = errors.Join(err, merr)
	} else if _, ferr := db.finishLocked(rel); ferr != nil {
		err = errors.Join(err, ferr)
	}
	if err != nil {
		// What could not be undone now is undone by the next Open.
		db.needsRecovery.Store(true)
	}
	return err
}

// sliceRecord reads the record of id from r (the meta keyspace, or a
// release's batch over it); nil if there is none.
//
// It is a Get that also consults the bloom filters of the bottom level,
// which Pebble's Get skips (IterOptions.UseL6Filters): most lookups are for
// the SliceIDs of new content, which are random and absent, so without the
// filter each one reads an index block and a data block of the bottom
// level, where most slice records lie, and rarely the same block twice.
// (Data keys are looked up with Get: they are mostly absent too, but a
// tree's keys are looked up in order, so their blocks are cached.)
func sliceRecord(r pebble.Reader, id *SliceID) (rec *record.Slice, err error) {
	key := record.SliceKey((*[64]byte)(id))
	it, err := r.NewIter(&pebble.IterOptions{UseL6Filters: true})
	if err != nil {
		return nil, err
	}
	defer func() { err = cmp.Or(err, it.Close()) }()
	if !it.SeekPrefixGE(key) || !bytes.Equal(it.Key(), key) {
		return nil, it.Error()
	}
	v, err := it.ValueAndErr()
	if err != nil {
		return nil, err
	}
	if rec, err = record.DecodeSlice(v); err != nil {
		return nil, fmt.Errorf("%w: slice %s: %v", ErrCorrupt, id, err)
	}
	return rec, nil
}

func (db *DB) pinLocked(id SliceID, key string) {
	pn := db.pins[id]
	if pn == nil {
		pn = &pin{keys: map[string]int{}}
		db.pins[id] = pn
	}
	pn.n++
	pn.keys[key]++
}

func (db *DB) unpinLocked(id SliceID, key string) {
	pn := db.pins[id]
	if pn == nil {
		return
	}
	if pn.keys[key]--; pn.keys[key] <= 0 {
		delete(pn.keys, key)
	}
	if pn.n--; pn.n <= 0 {
		delete(db.pins, id)
	}
}
