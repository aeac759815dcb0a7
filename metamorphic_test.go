package kv

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"maps"
	"math/rand/v2"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"testing/iotest"

	"github.com/cockroachdb/pebble/v2/vfs"

	"github.com/sealkv/kv/internal/slicestore"
)

// TestMetamorphic runs a seeded random sequence of operations (Put, Batch,
// Get and its Reader's Read, ReadAt and Seek, GetVersion, Stat, List,
// Children, Delete, PruneVersions, concurrent Puts, Close and reopen, Scrub,
// Stats) against an in-memory model and against stores of several
// configurations (erasure layout, compression, padding, slice sizes, KEM,
// external SliceStore, per-slice options changed at reopen). Every result
// must be what the model says, so the transcripts of all configurations
// must be equal; each store must also pass checkInvariants after some
// reopens and at the end, and Scrub must find nothing wrong.
//
// The seeds in metaRegressionSeeds run every time, then one new seed,
// logged. SEALKV_META_SEED replays a seed (alone) and SEALKV_META_OPS sets
// the number of operations per seed.
func TestMetamorphic(t *testing.T) {
	ops := envInt("SEALKV_META_OPS", 100)
	if s := os.Getenv("SEALKV_META_SEED"); s != "" {
		seed, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			t.Fatalf("SEALKV_META_SEED: %v", err)
		}
		runMetamorphic(t, seed, ops)
		return
	}
	for _, seed := range metaRegressionSeeds {
		t.Run(fmt.Sprint(seed), func(t *testing.T) { runMetamorphic(t, seed, ops) })
	}
	seed := rand.Uint64()
	t.Run("new", func(t *testing.T) { runMetamorphic(t, seed, ops) })
}

// metaRegressionSeeds run on every TestMetamorphic: seeds that found bugs
// (none so far) and seeds whose 100 ops cover rare paths (82: a reopen that
// discards an open batch, and Deletes and PruneVersions beside concurrent
// Puts). Runs of over 200 ops also Put, now and then, a 5 MiB block, whose
// over 4 MiB of shards are ingested (with 1000 ops, seed 82 does).
var metaRegressionSeeds = []uint64{82}

// metaConfig is one store configuration. opts gives the Options of the
// gen-th Open of the store (0 creates it), so per-slice options can change
// at a reopen as they may.
type metaConfig struct {
	name string
	opts func(t *testing.T, k *Keys, fs vfs.FS, gen int) *Options
}

var metaConfigs = []metaConfig{
	{"8+2-zstd", func(t *testing.T, k *Keys, fs vfs.FS, gen int) *Options {
		o := memOpts(k, fs)
		if gen%2 == 1 { // new slices in another layout, uncompressed
			o.DataShards, o.ParityShards, o.Compression = 3, 1, CompressionNone
		}
		return o
	}},
	{"1+0-none-tiny", func(t *testing.T, k *Keys, fs vfs.FS, gen int) *Options {
		o := memOpts(k, fs)
		o.DataShards, o.ParityShards, o.Compression, o.Concurrency = 1, NoParity, CompressionNone, 1
		if gen == 0 {
			o.MinSliceSize, o.AvgSliceSize, o.MaxSliceSize = 512, 2<<10, 8<<10
		} else {
			o.MinSliceSize, o.AvgSliceSize, o.MaxSliceSize = 0, 0, 0 // what the store has
		}
		return o
	}},
	{"4+2-padded", func(t *testing.T, k *Keys, fs vfs.FS, gen int) *Options {
		o := memOpts(k, fs)
		o.DataShards, o.ParityShards, o.Padding, o.Concurrency = 4, 2, gen%3 != 2, 3
		o.MinSliceSize, o.AvgSliceSize, o.MaxSliceSize = 2<<10, 8<<10, 32<<10
		return o
	}},
	{"external-mlkem", func(t *testing.T, k *Keys, fs vfs.FS, gen int) *Options {
		o := memOpts(k, fs)
		s, err := slicestore.Open("/ext", fs, pebbleLogger{l: quietLogger}, gen > 0)
		if err != nil {
			t.Fatal(err)
		}
		o.SliceStore, o.KEM = s, KEMMLKEM1024
		return o
	}},
}

// metaKeys derives a store's Keys from the seed, so that cut points (and
// so slice counts and dedup) replay too.
func metaKeys(seed uint64) *Keys {
	var s [32]byte
	binary.LittleEndian.PutUint64(s[:], seed)
	buf := make([]byte, seedSize+storeSecretLen)
	_, _ = rand.NewChaCha8(s).Read(buf)
	k := &Keys{keyRef: newKeyRef(&keySecrets{})}
	copy(k.secret[:], buf[seedSize:])
	k.setSeed(buf[:seedSize])
	return k
}

func runMetamorphic(t *testing.T, seed uint64, n int) {
	t.Logf("seed %d, %d ops (replay: SEALKV_META_SEED=%d SEALKV_META_OPS=%d)", seed, n, seed, n)
	g := newMetaGen(seed)
	g.bigOK = n > 200
	ops := make([]metaOp, n)
	for i := range ops {
		ops[i] = g.next()
	}
	keys := metaKeys(seed)
	trs := make([][]string, len(metaConfigs))
	t.Run("configs", func(t *testing.T) {
		for i, c := range metaConfigs {
			t.Run(c.name, func(t *testing.T) {
				t.Parallel()
				trs[i] = runMetaConfig(t, c, keys, g.blocks, ops)
			})
		}
	})
	first := trs[0]
	for j, tr := range trs[1:] {
		name := metaConfigs[j+1].name
		for i := range min(len(first), len(tr)) {
			if first[i] != tr[i] {
				t.Fatalf("config %s differs from %s at op %d %s:\n  %s\n  %s", name, metaConfigs[0].name, i, ops[i], first[i], tr[i])
			}
		}
		if len(first) != len(tr) {
			t.Fatalf("config %s ran %d ops, %s %d", name, len(tr), metaConfigs[0].name, len(first))
		}
	}
}

// ---- operations ----

type metaKind int

const (
	mPut metaKind = iota
	mBatchNew
	mBatchPut
	mBatchCommit
	mBatchClose
	mStalePut // Batch.Put on the last batch: committed, closed, of a closed DB or open
	mRead
	mReadAt
	mGetVersion
	mStat
	mList
	mChildren
	mDelete
	mPrune
	mConcurrent
	mReopen
	mScrub
	mStats
)

var metaKindNames = [...]string{"Put", "NewBatch", "Batch.Put", "Batch.Commit", "Batch.Close", "stale Batch.Put",
	"Get+Read", "Get+ReadAt/Seek", "GetVersion", "Stat", "List", "Children", "Delete", "PruneVersions",
	"concurrent Puts", "reopen", "Scrub", "Stats"}

// metaContent is a ClearText: the current content of key base (if it has
// one) followed by blocks of the pool.
type metaContent struct {
	base   string
	blocks []int
}

type metaOp struct {
	kind   metaKind
	key    string
	parent string
	c      metaContent
	keys   []string      // mConcurrent
	cs     []metaContent // mConcurrent
	n      int           // keep, version selector
	r      uint64        // offsets and lengths of reads
}

func (o metaOp) String() string {
	s := metaKindNames[o.kind]
	switch o.kind {
	case mPut, mBatchPut, mStalePut:
		s += fmt.Sprintf(" %q content=%q+%v", o.key, o.c.base, o.c.blocks)
		if o.parent != "" {
			s += fmt.Sprintf(" parent=%q", o.parent)
		}
	case mConcurrent:
		s += fmt.Sprintf(" %q %v", o.keys, o.cs)
		if o.n >= 0 {
			s += fmt.Sprintf(" and %q n=%d", o.key, o.n)
		}
	case mList:
		s += fmt.Sprintf(" prefix=%q", o.key)
	case mPrune:
		s += fmt.Sprintf(" %q keep=%d", o.key, o.n)
	case mRead, mReadAt, mGetVersion, mStat, mChildren, mDelete:
		s += fmt.Sprintf(" %q n=%d r=%d", o.key, o.n, o.r)
	}
	return s
}

// metaKeyPool: nested names for List prefixes and parents; "" is invalid.
var metaKeyPool = []string{"a", "a/1", "a/2", "a/1/x", "b", "b/1", "c", "c/é", "d e", "z"}

var metaPrefixes = []string{"", "a", "a/", "a/1", "b", "c/", "d", "zz"}

type metaGen struct {
	rng      *rand.Rand
	blocks   [][]byte
	batch    bool // a batch is open
	batchLen int
	batches  int  // batches begun
	big      int  // index of the big block, once made
	bigOK    bool // long runs only: reading it back takes seconds under -race
}

// metaBlockSizes are the sizes of the pool's blocks, give or take a
// quarter.
var metaBlockSizes = []int{0, 1, 17, 100, 700, 3 << 10, 9 << 10, 20 << 10, 40 << 10, 70 << 10, 130 << 10, 200 << 10, 300 << 10, 600 << 10}

// newMetaGen makes the block pool: blocks of every size class, some
// incompressible and some not, that Puts concatenate so that slices are
// shared across keys and versions.
func newMetaGen(seed uint64) *metaGen {
	g := &metaGen{rng: rand.New(rand.NewPCG(seed, 0x6d657461))}
	for i, n := range metaBlockSizes {
		n += g.rng.IntN(n/4 + 1)
		b := make([]byte, n)
		if i%3 == 2 { // compressible
			for j := range b {
				b[j] = "sealkv metamorphic "[(j*7+j/97)%19]
			}
		} else {
			for j := range b {
				b[j] = byte(g.rng.Uint32())
			}
		}
		g.blocks = append(g.blocks, b)
	}
	return g
}

// bigBlock returns the index of a block large enough for a Put of it to
// take the slice keyspace's ingestion path (over 4 MiB of shards), made on
// first use; one is enough (and keeps the test fast).
func (g *metaGen) bigBlock() int {
	if g.big != 0 {
		return g.big
	}
	big := make([]byte, 5<<20)
	for j := range big {
		big[j] = byte(g.rng.Uint32())
	}
	g.blocks = append(g.blocks, big)
	g.big = len(g.blocks) - 1
	return g.big
}

func (g *metaGen) key() string {
	if g.rng.IntN(200) == 0 {
		return "" // ErrInvalidKey
	}
	return metaKeyPool[g.rng.IntN(len(metaKeyPool))]
}

func (g *metaGen) parent() string {
	if g.rng.IntN(3) > 0 {
		return ""
	}
	return metaKeyPool[g.rng.IntN(len(metaKeyPool))]
}

func (g *metaGen) content() metaContent {
	var c metaContent
	if g.rng.IntN(3) == 0 {
		c.base = metaKeyPool[g.rng.IntN(len(metaKeyPool))]
	}
	n := g.rng.IntN(4)
	if c.base == "" {
		n++
	}
	for range n {
		// Small blocks are likelier: most Puts stay under 256 KiB.
		c.blocks = append(c.blocks, min(g.rng.IntN(len(metaBlockSizes)), g.rng.IntN(len(metaBlockSizes))))
	}
	if g.rng.IntN(600) == 0 && g.bigOK { // rare: reading it back is slow
		c.blocks = append(c.blocks, g.bigBlock())
	}
	return c
}

func (g *metaGen) next() metaOp {
	op := metaOp{key: g.key(), n: g.rng.IntN(4), r: g.rng.Uint64()}
	if g.batch && g.rng.IntN(5) < 3 {
		switch x := g.rng.IntN(10); {
		case g.batchLen >= 5 || x < 2:
			op.kind = mBatchCommit
			if x == 0 {
				op.kind = mBatchClose
			}
			g.batch = false
		default:
			op.kind, op.parent, op.c = mBatchPut, g.parent(), g.content()
			g.batchLen++
		}
		return op
	}
	w := g.rng.IntN(100)
	switch {
	case w < 22:
		op.kind, op.parent, op.c = mPut, g.parent(), g.content()
	case w < 27 && !g.batch:
		op.kind, g.batch, g.batchLen = mBatchNew, true, 0
		g.batches++
	case w < 28 && g.batches > 0:
		op.kind, op.parent, op.c = mStalePut, g.parent(), g.content()
	case w < 36:
		op.kind = mRead
	case w < 44:
		op.kind = mReadAt
	case w < 50:
		op.kind = mGetVersion
	case w < 56:
		op.kind = mStat
	case w < 60:
		op.kind, op.key = mList, metaPrefixes[g.rng.IntN(len(metaPrefixes))]
	case w < 64:
		op.kind = mChildren
	case w < 73:
		op.kind = mDelete
	case w < 81:
		op.kind, op.n = mPrune, g.rng.IntN(4)-1 // -1: ErrInvalidOptions
	case w < 85:
		op.kind = mConcurrent
		perm := g.rng.Perm(len(metaKeyPool))[:3+g.rng.IntN(3)]
		same := g.rng.IntN(3) == 0 // the same new slices in flight at once
		for _, i := range perm[1:] {
			op.keys = append(op.keys, metaKeyPool[i])
			if c := g.content(); !same || len(op.cs) == 0 {
				op.cs = append(op.cs, c)
			} else {
				op.cs = append(op.cs, op.cs[0])
			}
		}
		// Beside the Puts, a Delete (n 0) or PruneVersions(keep 0) (n 1)
		// of a key none of them puts, whose slices they may share.
		op.key = metaKeyPool[perm[0]]
		op.n = g.rng.IntN(3) - 1
	case w < 87 || w == 87 && g.rng.IntN(2) == 0:
		op.kind = mReopen
		if g.batch { // Close discards the open batch
			g.batch = false
		}
	case w < 89:
		op.kind = mScrub
	default:
		op.kind = mStats
	}
	return op
}

// ---- the model ----

type metaVersion struct {
	num uint64
	b   []byte
}

type metaEntry struct {
	parent   string
	next     uint64
	versions []metaVersion // oldest first
}

type metaModel map[string]*metaEntry

func (m metaModel) clone() metaModel {
	c := metaModel{}
	for k, e := range m {
		ce := *e
		ce.versions = slices.Clone(e.versions)
		c[k] = &ce
	}
	return c
}

func (m metaModel) current(key string) []byte {
	if e := m[key]; e != nil {
		return e.versions[len(e.versions)-1].b
	}
	return nil
}

// metaBaseMax bounds the part of a ClearText taken from another key's
// content, which would otherwise grow with every Put built on it.
const metaBaseMax = 384 << 10

func (m metaModel) resolve(blocks [][]byte, c metaContent) []byte {
	var b []byte
	base := m.current(c.base)
	for len(base) > metaBaseMax {
		base = base[len(base)/2:] // a shifted tail: the chunker resynchronises
	}
	b = append(b, base...)
	for _, i := range c.blocks {
		b = append(b, blocks[i]...)
	}
	return b
}

// putOpts is what DB.Put and Batch.Put check before storing anything.
func (m metaModel) putOpts(key, parent string) error {
	switch {
	case !validMetaKey(key), parent != "" && !validMetaKey(parent), parent == key:
		return ErrInvalidKey
	}
	return nil
}

func validMetaKey(k string) bool { return k != "" }

// put is a Put's commit (putInto): a new version unless b is the current
// content, and the parent set, moved or kept.
func (m metaModel) put(key, parent string, b []byte) error {
	if parent != "" && m[parent] == nil {
		return ErrNotFound
	}
	e := m[key]
	if parent != "" && e != nil && parent != e.parent {
		for k := parent; k != "" && m[k] != nil; k = m[k].parent {
			if k == key {
				return ErrInvalidKey
			}
		}
	}
	if e == nil {
		e = &metaEntry{next: 1}
		m[key] = e
	}
	if n := len(e.versions); n == 0 || !bytes.Equal(e.versions[n-1].b, b) {
		e.versions = append(e.versions, metaVersion{e.next, b})
		e.next++
	}
	if parent != "" {
		e.parent = parent
	}
	return nil
}

func (m metaModel) children(key string) []string {
	var c []string
	for k, e := range m {
		if e.parent == key {
			c = append(c, k)
		}
	}
	slices.Sort(c)
	return c
}

func (m metaModel) describe(key string) string {
	e := m[key]
	var vs []string
	for _, v := range e.versions {
		vs = append(vs, fmt.Sprintf("v%d=%s", v.num, metaLabel(v.b)))
	}
	return fmt.Sprintf("parent=%q [%s]", e.parent, strings.Join(vs, " "))
}

func metaLabel(b []byte) string {
	h := sha256.Sum256(b)
	return fmt.Sprintf("%d:%x", len(b), h[:4])
}

// metaErr is the class of err: the sentinel errors it wraps.
func metaErr(err error) string {
	if err == nil {
		return "ok"
	}
	for _, s := range []struct {
		err  error
		name string
	}{{ErrNotFound, "ErrNotFound"}, {ErrHasChildren, "ErrHasChildren"}, {ErrHasVersions, "ErrHasVersions"},
		{ErrInvalidKey, "ErrInvalidKey"}, {ErrInvalidOptions, "ErrInvalidOptions"}, {ErrClosed, "ErrClosed"},
		{ErrBatchDone, "ErrBatchDone"}, {io.EOF, "EOF"}} {
		if errors.Is(err, s.err) {
			return s.name
		}
	}
	return "unexpected error: " + err.Error()
}

// metaReader reads b as a reader might: all at once, in halves, or with
// io.EOF along with the last bytes.
func metaReader(b []byte, how int) io.Reader {
	switch how {
	case 1:
		return iotest.HalfReader(bytes.NewReader(b))
	case 2:
		return iotest.DataErrReader(bytes.NewReader(b))
	}
	return bytes.NewReader(b)
}

// ---- running one configuration ----

type metaBatch struct {
	b     *Batch
	db    *DB // the DB it belongs to
	done  bool
	puts  []metaStaged
	names map[string]bool // keys and parents of its Puts
}

type metaStaged struct {
	key, parent string
	b           []byte
}

type metaRunner struct {
	t      *testing.T
	cfg    metaConfig
	keys   *Keys
	fs     vfs.FS
	gen    int
	db     *DB
	m      metaModel
	blocks [][]byte
	batch  *metaBatch // the last batch
	cids   map[ContentID]metaCID
	// sliceIDs caches the SliceIDs of contents by label (see sliceSet).
	sliceIDs map[string][]SliceID
}

func runMetaConfig(t *testing.T, c metaConfig, keys *Keys, blocks [][]byte, ops []metaOp) []string {
	r := &metaRunner{t: t, cfg: c, keys: keys, fs: vfs.NewMem(), m: metaModel{}, blocks: blocks, cids: map[ContentID]metaCID{}, sliceIDs: map[string][]SliceID{}}
	r.open()
	defer func() {
		if r.db != nil {
			r.db.Close()
		}
	}()
	var tr []string
	for i, op := range ops {
		want, got := r.step(op)
		if want == got { // and the totals after every op
			w, g := r.stats()
			want, got = want+" "+w, got+" "+g
		}
		tr = append(tr, got)
		if want != got {
			t.Errorf("config %s, op %d %s:\n  want %s\n  got  %s", c.name, i, op, want, got)
			return tr
		}
	}
	if r.batch != nil && !r.batch.done {
		r.batch.b.Close()
	}
	checkInvariants(t, r.db)
	return tr
}

func (r *metaRunner) open() {
	db, err := Open("/db", r.cfg.opts(r.t, r.keys, r.fs, r.gen))
	if err != nil {
		r.t.Fatalf("config %s: Open %d: %v", r.cfg.name, r.gen, err)
	}
	r.db = db
	r.gen++
}

// learn records the ContentID b has in this store, so that Stat's
// ContentIDs can be told as the model's labels.
func (r *metaRunner) learn(b []byte) {
	n := 0
	for c := b; len(c) > 0; n++ {
		c = c[r.db.chunker.Cut(c, true):]
	}
	r.cids[contentID(r.db, b)] = metaCID{metaLabel(b), n}
}

// metaCID is what a ContentID of the store stands for: the model's label
// of the bytes, and how many slices the store cuts them into.
type metaCID struct {
	label  string
	slices int
}

func (r *metaRunner) describe(d *Data) string {
	var vs []string
	for _, v := range append(slices.Clone(d.Versions), d.Content) {
		c, ok := r.cids[v.ContentID]
		l := c.label
		switch {
		case !ok:
			l = "unknown ContentID " + v.ContentID.String()[:8]
		case v.NumSlices != c.slices:
			l += fmt.Sprintf(" (NumSlices %d, cut into %d)", v.NumSlices, c.slices)
		}
		if want := strings.SplitN(l, ":", 2)[0]; want != fmt.Sprint(v.OriginalSize) {
			l += fmt.Sprintf(" (OriginalSize %d)", v.OriginalSize)
		}
		vs = append(vs, fmt.Sprintf("v%d=%s", v.Version, l))
	}
	return fmt.Sprintf("parent=%q [%s]", d.Parent, strings.Join(vs, " "))
}

// step runs op on the model (want) and on the store (got).
func (r *metaRunner) step(op metaOp) (want, got string) {
	m, db := r.m, r.db
	switch op.kind {
	case mPut:
		b := m.resolve(r.blocks, op.c)
		r.learn(b)
		var opts []PutOption
		if op.parent != "" {
			opts = append(opts, WithParent(op.parent))
		}
		d, err := db.Put(ctx, op.key, metaReader(b, op.n), opts...)
		if got = metaErr(err); err == nil {
			got = r.describe(d)
		}
		err = m.putOpts(op.key, op.parent)
		if err == nil {
			err = m.put(op.key, op.parent, b)
		}
		if want = metaErr(err); err == nil {
			want = m.describe(op.key)
		}
	case mBatchNew:
		r.batch = &metaBatch{b: db.NewBatch(), db: db, names: map[string]bool{}}
		return "ok", "ok"
	case mBatchPut, mStalePut:
		return r.batchPut(op)
	case mBatchCommit:
		got = metaErr(r.batch.b.Commit(ctx))
		want = metaErr(r.commit())
	case mBatchClose:
		got = metaErr(r.batch.b.Close())
		r.batch.done = true
		want = "ok"
	case mRead:
		want, got = r.read(op)
	case mReadAt:
		want, got = r.readAt(op)
	case mGetVersion:
		var v uint64
		if e := m[op.key]; e != nil {
			v = op.r % (e.next + 1)
		}
		want = "ErrNotFound"
		if e := m[op.key]; e != nil {
			for _, ver := range e.versions {
				if ver.num == v {
					want = metaLabel(ver.b)
				}
			}
		}
		rd, err := db.GetVersion(ctx, op.key, v)
		got = r.readAll(rd, err, op.n)
		want = fmt.Sprintf("v%d %s", v, want)
		got = fmt.Sprintf("v%d %s", v, got)
	case mStat:
		d, err := db.Stat(ctx, op.key)
		if got = metaErr(err); err == nil {
			got = r.describe(d)
		}
		want = r.notFound(op.key)
		if m[op.key] != nil {
			want = m.describe(op.key)
		}
	case mList:
		var ks []string
		for k := range m {
			if strings.HasPrefix(k, op.key) {
				ks = append(ks, k)
			}
		}
		slices.Sort(ks)
		want = fmt.Sprint(ks)
		got = metaCollect(db.List(ctx, op.key))
	case mChildren:
		want = r.notFound(op.key)
		if m[op.key] != nil {
			want = fmt.Sprint(m.children(op.key))
		}
		got = metaCollect(db.Children(ctx, op.key))
	case mDelete:
		got = r.deleteOrPrune(op.key, true, true, 0)
		want = r.delete(op.key)
	case mPrune:
		got = r.deleteOrPrune(op.key, false, true, op.n)
		want = r.prune(op.key, op.n)
	case mConcurrent:
		return r.concurrent(op)
	case mReopen:
		// A Reader left open across Close reads nothing more.
		var held *Reader
		for _, k := range slices.Sorted(maps.Keys(m)) {
			if len(m.current(k)) > 0 {
				held, _ = db.Get(ctx, k)
				break
			}
		}
		if err := db.Close(); err != nil {
			r.t.Fatalf("config %s: Close: %v", r.cfg.name, err)
		}
		if held != nil {
			_, err := held.ReadAt(make([]byte, 1), 0)
			held.Close()
			if !errors.Is(err, ErrClosed) {
				return "ErrClosed", "Reader after Close: " + metaErr(err)
			}
		}
		r.db = nil
		if r.batch != nil {
			r.batch.done = true // discarded by Close
		}
		r.open()
		if r.gen%3 == 2 { // after the first reopen and every third: they read every version
			checkInvariants(r.t, r.db)
		}
		return "ok", "ok"
	case mScrub:
		rep, err := db.Scrub(ctx, ScrubOptions{})
		got = metaErr(err)
		if err == nil && (rep.ShardsBad != 0 || rep.ShardsRepaired != 0 || len(rep.Unreadable) != 0) {
			got = fmt.Sprintf("damage %+v", rep)
		}
		if err == nil && (r.batch == nil || r.batch.done) && int64(rep.SlicesChecked) != db.Stats().Slices {
			got = fmt.Sprintf("checked %d slices of %d", rep.SlicesChecked, db.Stats().Slices)
		}
		want = "ok"
	case mStats:
		want, got = r.stats()
	}
	return want, got
}

// stats are the totals Stats has that do not depend on the configuration.
func (r *metaRunner) stats() (want, got string) {
	var s Stats
	for _, e := range r.m {
		s.Data++
		for _, v := range e.versions {
			s.Versions++
			s.LogicalBytes += int64(len(v.b))
		}
	}
	st := r.db.Stats()
	want = fmt.Sprintf("data=%d versions=%d logical=%d", s.Data, s.Versions, s.LogicalBytes)
	got = fmt.Sprintf("data=%d versions=%d logical=%d", st.Data, st.Versions, st.LogicalBytes)
	return want, got
}

func (r *metaRunner) notFound(key string) string {
	if !validMetaKey(key) {
		return "ErrInvalidKey"
	}
	return "ErrNotFound"
}

func metaCollect(seq func(func(string, error) bool)) string {
	var ks []string
	for k, err := range seq {
		if err != nil {
			return metaErr(err)
		}
		ks = append(ks, k)
	}
	return fmt.Sprint(ks)
}

func (r *metaRunner) batchPut(op metaOp) (want, got string) {
	mb := r.batch
	b := r.m.resolve(r.blocks, op.c)
	if r.db != nil {
		r.learn(b)
	}
	var opts []PutOption
	if op.parent != "" {
		opts = append(opts, WithParent(op.parent))
	}
	got = metaErr(mb.b.Put(ctx, op.key, metaReader(b, op.n), opts...))
	var err error
	switch {
	case mb.db != r.db:
		err = ErrClosed
	case r.m.putOpts(op.key, op.parent) != nil:
		err = ErrInvalidKey
	case mb.done:
		err = ErrBatchDone
	case op.parent != "" && !mb.names[op.parent] && r.m[op.parent] == nil:
		err = ErrNotFound
	default:
		mb.puts = append(mb.puts, metaStaged{op.key, op.parent, b})
		mb.names[op.key] = true
		if op.parent != "" {
			mb.names[op.parent] = true
		}
	}
	return metaErr(err), got
}

// commit is Batch.Commit on the model: every Put in order, or none.
func (r *metaRunner) commit() error {
	mb := r.batch
	switch {
	case mb.db != r.db:
		return ErrClosed
	case mb.done:
		return ErrBatchDone
	}
	mb.done = true
	c := r.m.clone()
	for _, s := range mb.puts {
		if err := c.put(s.key, s.parent, s.b); err != nil {
			return err
		}
	}
	r.m = c
	return nil
}

func (r *metaRunner) delete(key string) string {
	e := r.m[key]
	switch {
	case !validMetaKey(key):
		return "ErrInvalidKey"
	case e == nil:
		return "ErrNotFound"
	case len(r.m.children(key)) > 0:
		return "ErrHasChildren"
	case len(e.versions) > 1:
		return "ErrHasVersions"
	}
	delete(r.m, key)
	return "ok"
}

func (r *metaRunner) prune(key string, keep int) string {
	e := r.m[key]
	switch {
	case keep < 0:
		return "ErrInvalidOptions"
	case !validMetaKey(key):
		return "ErrInvalidKey"
	case e == nil:
		return "ErrNotFound"
	}
	drop := len(e.versions) - 1 - keep
	if drop <= 0 {
		return "ok report=false"
	}
	report := false // the dropped versions had slices
	for _, v := range e.versions[:drop] {
		report = report || len(v.b) > 0
	}
	e.versions = slices.Clone(e.versions[drop:])
	return fmt.Sprintf("ok report=%t", report)
}

// readAll reads rd with Read (through io.ReadAll) or WriteTo.
func (r *metaRunner) readAll(rd *Reader, err error, how int) string {
	if err != nil {
		return metaErr(err)
	}
	defer rd.Close()
	var b []byte
	if how%2 == 0 {
		b, err = io.ReadAll(rd)
	} else {
		var buf bytes.Buffer
		_, err = rd.WriteTo(&buf)
		b = buf.Bytes()
	}
	if err != nil {
		return metaErr(err)
	}
	if int64(len(b)) != rd.Size() {
		return fmt.Sprintf("read %d bytes, Size %d", len(b), rd.Size())
	}
	return metaLabel(b)
}

func (r *metaRunner) read(op metaOp) (want, got string) {
	rd, err := r.db.Get(ctx, op.key)
	got = r.readAll(rd, err, op.n)
	want = r.notFound(op.key)
	if r.m[op.key] != nil {
		want = metaLabel(r.m.current(op.key))
	}
	return want, got
}

// readAt reads the current version (or, with n 3, the first one there is)
// at offsets drawn from op.r: ReadAt, then Seek and Read.
func (r *metaRunner) readAt(op metaOp) (want, got string) {
	e := r.m[op.key]
	var rd *Reader
	var err error
	var b []byte
	if e != nil && op.n == 3 {
		rd, err = r.db.GetVersion(ctx, op.key, e.versions[0].num)
		b = e.versions[0].b
	} else {
		rd, err = r.db.Get(ctx, op.key)
		b = r.m.current(op.key)
	}
	if e == nil {
		return r.notFound(op.key), metaErr(err)
	}
	if err != nil {
		return "reader", metaErr(err)
	}
	defer rd.Close()
	rng := rand.New(rand.NewPCG(op.r, 1))
	size := int64(len(b))
	var ws, gs []string
	pos := int64(0)
	for range 4 {
		off := rng.Int64N(size + 3)
		n := rng.IntN(3 * 16 << 10)
		if rng.IntN(4) == 0 {
			n = rng.IntN(4)
		}
		p := make([]byte, n)
		k, err := rd.ReadAt(p, off)
		gs = append(gs, fmt.Sprintf("ReadAt(%d,%d)=%d,%s,%s", n, off, k, metaErr(err), metaLabel(p[:k])))
		k = int(max(0, min(int64(n), size-off)))
		werr := "ok"
		if k < n {
			werr = "EOF"
		}
		ws = append(ws, fmt.Sprintf("ReadAt(%d,%d)=%d,%s,%s", n, off, k, werr, metaLabel(b[min(off, size):][:k])))

		whence := rng.IntN(3)
		so := rng.Int64N(size+3) - []int64{0, pos, size}[whence]
		if rng.IntN(8) == 0 {
			so = -1 - []int64{0, pos, size}[whence] // before the start
		}
		np, err := rd.Seek(so, whence)
		gs = append(gs, fmt.Sprintf("Seek(%d,%d)=%d,%s", so, whence, np, metaErr(err)))
		if base := []int64{0, pos, size}[whence]; base+so < 0 {
			ws = append(ws, fmt.Sprintf("Seek(%d,%d)=%d,%s", so, whence, 0, "ErrInvalidOptions"))
		} else {
			pos = base + so
			ws = append(ws, fmt.Sprintf("Seek(%d,%d)=%d,%s", so, whence, pos, "ok"))
		}
		k, err = rd.Read(p)
		gs = append(gs, fmt.Sprintf("Read(%d)=%d,%s,%s", n, k, metaErr(err), metaLabel(p[:k])))
		k = int(max(0, min(int64(n), size-pos)))
		werr = "ok"
		if k == 0 && n > 0 {
			werr = "EOF"
		}
		ws = append(ws, fmt.Sprintf("Read(%d)=%d,%s,%s", n, k, werr, metaLabel(b[min(pos, size):][:k])))
		pos += int64(k)
	}
	if size > 0 { // and nothing once closed
		rd.Close()
		_, err := rd.ReadAt(make([]byte, 1), 0)
		ws, gs = append(ws, "closed:ErrClosed"), append(gs, "closed:"+metaErr(err))
	}
	return strings.Join(ws, " "), strings.Join(gs, " ")
}

// concurrent Puts distinct keys at once, without parents, so that they
// commit as groups; each result is the model's whatever the order.
func (r *metaRunner) concurrent(op metaOp) (want, got string) {
	bs := make([][]byte, len(op.keys))
	for i, c := range op.cs {
		bs[i] = r.m.resolve(r.blocks, c)
		r.learn(bs[i])
	}
	gs := make([]string, len(op.keys))
	var wg sync.WaitGroup
	for i, k := range op.keys {
		wg.Go(func() {
			d, err := r.db.Put(context.Background(), k, bytes.NewReader(bs[i]))
			if gs[i] = metaErr(err); err == nil {
				gs[i] = r.describe(d)
			}
		})
	}
	var gd, wd string
	if op.n >= 0 {
		wg.Go(func() { gd = r.deleteOrPrune(op.key, op.n == 0, false, 0) })
	}
	wg.Wait()
	ws := make([]string, len(op.keys))
	for i, k := range op.keys {
		if err := r.m.put(k, "", bs[i]); err != nil {
			ws[i] = metaErr(err)
		} else {
			ws[i] = r.m.describe(k)
		}
	}
	switch op.n {
	case 0:
		wd = r.delete(op.key)
	case 1:
		wd = r.prune(op.key, 0)
	}
	return strings.Join(append(ws, wd), "; "), strings.Join(append(gs, gd), "; ")
}

// deleteOrPrune runs Delete (del) or PruneVersions(keep) on the store,
// not the model, with results as the model gives them. The report must
// name each slice of the removed versions once: as deleted, or as kept if
// a version the model keeps or a Put of the open batch has it (exact says
// no other Put is in flight).
func (r *metaRunner) deleteOrPrune(key string, del, exact bool, keep int) string {
	gone, live := r.expectReport(key, del, keep)
	var rep *DeleteReport
	var err error
	if del {
		rep, err = r.db.Delete(ctx, key)
	} else {
		rep, err = r.db.PruneVersions(ctx, key, keep)
	}
	if err != nil {
		return metaErr(err)
	}
	seen := map[SliceID]bool{}
	wrong := 0
	for _, id := range rep.Deleted {
		if seen[id] || !gone[id] || exact && live[id] {
			wrong++
		}
		seen[id] = true
	}
	for _, k := range rep.Kept {
		if seen[k.ID] || !gone[k.ID] || exact && !live[k.ID] || len(k.ReferencedBy) == 0 {
			wrong++
		}
		seen[k.ID] = true
	}
	if wrong > 0 || len(seen) != len(gone) {
		kept := 0
		for id := range gone {
			if live[id] {
				kept++
			}
		}
		return fmt.Sprintf("report: %d deleted, %d kept, %d wrong; want %d slices, %d kept", len(rep.Deleted), len(rep.Kept), wrong, len(gone), kept)
	}
	if del {
		return "ok"
	}
	return fmt.Sprintf("ok report=%t", len(rep.Deleted)+len(rep.Kept) > 0)
}

// expectReport returns the slices of the versions a Delete or
// PruneVersions would remove (gone) and those of every other version and
// of the open batch's Puts (live), as the store cuts them.
func (r *metaRunner) expectReport(key string, del bool, keep int) (gone, live map[SliceID]bool) {
	gone, live = map[SliceID]bool{}, map[SliceID]bool{}
	e := r.m[key]
	if e == nil || keep < 0 {
		return gone, live
	}
	drop := len(e.versions) - 1 - keep
	if del {
		drop = len(e.versions)
	}
	for k, e2 := range r.m {
		for i, v := range e2.versions {
			if k == key && i < drop {
				r.sliceSet(v.b, gone)
			} else {
				r.sliceSet(v.b, live)
			}
		}
	}
	if mb := r.batch; mb != nil && !mb.done && mb.db == r.db {
		for _, s := range mb.puts {
			r.sliceSet(s.b, live)
		}
	}
	return gone, live
}

// sliceSet adds the SliceIDs b is cut into in this store to set.
func (r *metaRunner) sliceSet(b []byte, set map[SliceID]bool) {
	l := metaLabel(b)
	ids, ok := r.sliceIDs[l]
	for !ok && len(b) > 0 {
		n := r.db.chunker.Cut(b, true)
		ids = append(ids, r.db.sliceID(b[:n]))
		b = b[n:]
	}
	r.sliceIDs[l] = ids
	for _, id := range ids {
		set[id] = true
	}
}
