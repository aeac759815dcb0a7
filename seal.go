package kv

import (
	"crypto/rand"
	"errors"
	"fmt"
	"math"
	"sync"
	"sync/atomic"

	"github.com/cockroachdb/pebble/v2"
	"github.com/klauspost/compress/zstd"
	"github.com/zeebo/blake3"

	"github.com/sealkv/kv/internal/bufpool"
	"github.com/sealkv/kv/internal/record"
	"github.com/sealkv/kv/internal/seal"
)

// KEM selects the key encapsulation of the writer sessions a DB starts.
// Every session records its KEM, so a store holds sessions of both kinds and
// reads them all, whatever Options.KEM says.
type KEM int

const (
	// KEMHybrid encapsulates to ML-KEM-1024 and X25519 and combines both
	// shared secrets, so the session key stays secret unless both are
	// broken. It is the default.
	KEMHybrid KEM = iota
	// KEMMLKEM1024 encapsulates to ML-KEM-1024 alone (sessions as written
	// before the hybrid existed). Needed only for write-only Keys read from
	// a version-1 key file, which lack the X25519 public key.
	KEMMLKEM1024
)

// kemMLKEM1024 tags sessions encapsulated with ML-KEM-1024 alone.
const kemMLKEM1024 = seal.KEMMLKEM1024

// sealTrace, set by tests only, sees every one-time slice key sealed by
// sessions begun while it is set (see seal.Session.SetTrace).
var sealTrace func(sid [seal.SessionIDSize]byte, id *[seal.IDSize]byte, ctr uint64, key [32]byte)

// writerSession is a session new Puts seal under, with its put numbers.
type writerSession struct {
	*seal.Session
	puts atomic.Uint64 // the last put number handed out
}

// putNumber returns a put number for one Put and the session it is in. A
// session has 2^32-1 of them (ctr = put << 32 | seq must not wrap); when
// they run out, the DB begins a new session.
func (db *DB) putNumber() (*writerSession, uint64, error) {
	for {
		ws := db.writer.Load()
		if n := ws.puts.Add(1); n <= math.MaxUint32 {
			return ws, n, nil
		}
		if err := db.nextSession(ws); err != nil {
			return nil, 0, err
		}
	}
}

// nextSession begins a new writer session if ws is still the current one:
// the Puts that found ws out of numbers start only one.
func (db *DB) nextSession(ws *writerSession) (err error) {
	defer catch(&err) // a fatal engine error in the session's sync
	db.sessionMu.Lock()
	defer db.sessionMu.Unlock()
	if db.writer.Load() != ws {
		return nil
	}
	return db.beginSession()
}

// beginSession starts a writer session: a fresh encapsulation to the
// store's public keys and a random session ID. The session record and the
// "unclean" marker are synced before any slice is sealed under it, so a
// reader can always decapsulate and a crash is always noticed. Open calls
// it once, nextSession whenever a session's put numbers run out;
// db.sessionMu is held.
func (db *DB) beginSession() error {
	var id [seal.SessionIDSize]byte
	if _, err := rand.Read(id[:]); err != nil {
		return err
	}
	var (
		kem byte
		ct  []byte
		s   *seal.Session
	)
	switch db.opts.KEM {
	case KEMHybrid: // Options.resolve checked the Keys can
		seed := make([]byte, seal.HybridSeedSize)
		defer clear(seed) // it determines the session key
		if _, err := rand.Read(seed); err != nil {
			return err
		}
		var err error
		if ct, s, err = seal.NewHybridSession(db.keys.pk, db.keys.xpk, id, seed); err != nil {
			return fmt.Errorf("sealkv: starting session: %w", err)
		}
		kem = seal.KEMHybrid
	case KEMMLKEM1024:
		seed := make([]byte, 32)
		defer clear(seed)
		if _, err := rand.Read(seed); err != nil {
			return err
		}
		ct, s = seal.NewSession(db.keys.pk, id, seed)
		kem = kemMLKEM1024
	default:
		return fmt.Errorf("%w: unknown KEM %d", ErrInvalidOptions, db.opts.KEM)
	}
	if f := sealTrace; f != nil {
		s.SetTrace(func(sid *[seal.IDSize]byte, ctr uint64, key [32]byte) { f(id, sid, ctr, key) })
	}
	b := db.meta.NewBatch()
	defer b.Close()
	rec := record.Session{KEM: kem, Ciphertext: ct}
	_ = b.Set(record.SessionKey(id), rec.Encode(), nil)
	_ = b.Set(record.UncleanKey(id), nil, nil)
	if err := b.Commit(pebble.Sync); err != nil {
		clear(s.Key[:]) // never used, and no Close would zero it
		return fmt.Errorf("sealkv: starting session: %w", err)
	}
	db.sessions = append(db.sessions, s)
	db.opened.Store(id, s)
	db.writer.Store(&writerSession{Session: s})
	return nil
}

// readSession returns the session sid, decapsulating it once per DB.
func (db *DB) readSession(sid [seal.SessionIDSize]byte) (*seal.Session, error) {
	if s, ok := db.opened.Load(sid); ok {
		return s.(*seal.Session), nil
	}
	if !db.keys.CanRead() {
		return nil, ErrWriteOnly
	}
	v, closer, err := db.meta.Get(record.SessionKey(sid))
	if errors.Is(err, pebble.ErrNotFound) {
		return nil, fmt.Errorf("%w: session %x missing", ErrCorrupt, sid)
	}
	if err != nil {
		return nil, err
	}
	rec, err := record.DecodeSession(v)
	closer.Close()
	if err != nil {
		return nil, fmt.Errorf("%w: session %x record", ErrCorrupt, sid)
	}
	var s *seal.Session
	switch rec.KEM {
	case kemMLKEM1024:
		s, err = seal.OpenSession(db.keys.sk, db.keys.pk, sid, rec.Ciphertext)
	case seal.KEMHybrid:
		s, err = seal.OpenHybridSession(db.keys.sk, db.keys.pk, db.keys.xsk, sid, rec.Ciphertext)
	default:
		err = fmt.Errorf("unknown KEM %d", rec.KEM)
	}
	if err != nil {
		return nil, fmt.Errorf("%w: session %x: %v", ErrCorrupt, sid, err)
	}
	// Reads that missed the cache together all decapsulated: keep one key,
	// the one Close will zero, and zero this copy if it lost.
	if kept, loaded := db.opened.LoadOrStore(sid, s); loaded {
		clear(s.Key[:])
		return kept.(*seal.Session), nil
	}
	return s, nil
}

// sliceID is the keyed BLAKE3-512 of a slice's ClearText.
func (db *DB) sliceID(clear []byte) SliceID {
	h := db.idHash.get()
	defer db.idHash.put(h)
	h.Write(clear)
	var id SliceID
	h.Digest().Read(id[:])
	return id
}

// keyedHashers recycles BLAKE3 hashers keyed with one key. A hasher is
// ~10 KiB: Puts of small objects allocated one per Put for the ContentID
// before it was pooled.
type keyedHashers struct {
	key  []byte
	pool sync.Pool
}

// get returns a reset hasher keyed with h.key; put it back when done.
func (h *keyedHashers) get() *blake3.Hasher {
	if x, ok := h.pool.Get().(*blake3.Hasher); ok {
		x.Reset()
		return x
	}
	x, _ := blake3.NewKeyed(h.key)
	return x
}

func (h *keyedHashers) put(x *blake3.Hasher) { h.pool.Put(x) }

// zstd coders are pooled: an encoder holds a few MiB of state.
var (
	encoders = sync.Pool{New: func() any {
		e, _ := zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.SpeedFastest), zstd.WithEncoderConcurrency(1), zstd.WithLowerEncoderMem(true))
		return e
	}}
	decoders = sync.Pool{New: func() any {
		// WithDecodeAllCapLimit: a slice never decodes past its buffer, so
		// a frame that expands beyond OriginalSize (a forged "bomb" from
		// a faulty writer) fails at once instead of allocating its size.
		d, _ := zstd.NewReader(nil, zstd.WithDecoderConcurrency(1), zstd.WithDecoderLowmem(true), zstd.WithDecodeAllCapLimit(true))
		return d
	}}
)

// compressProbe is the sample compress tries before a whole slice.
const compressProbe = 16 << 10

// compress returns the compressed form of clear and true when compression
// pays, or clear and false.
func compress(clear []byte) ([]byte, bool) {
	e := encoders.Get().(*zstd.Encoder)
	defer encoders.Put(e)
	if len(clear) > 4*compressProbe {
		// Try a sample first: already compressed or encrypted data (most
		// large blobs) would otherwise cost a full zstd pass for nothing.
		// A sample that shrinks < 3% predicts the whole will too.
		probe := e.EncodeAll(clear[:compressProbe], bufpool.Get(e.MaxEncodedSize(compressProbe))[:0])
		skip := len(probe) >= compressProbe-compressProbe/32
		bufpool.Put(probe)
		if skip {
			return clear, false
		}
	}
	out := e.EncodeAll(clear, bufpool.Get(e.MaxEncodedSize(len(clear)))[:0])
	if len(out) >= len(clear)-len(clear)/32 {
		bufpool.Put(out)
		return clear, false
	}
	return out, true
}

func decompress(b []byte, size int64) ([]byte, error) {
	d := decoders.Get().(*zstd.Decoder)
	defer decoders.Put(d)
	dst := bufpool.Get(int(size))
	out, err := d.DecodeAll(b, dst[:0])
	if err != nil || int64(len(out)) != size {
		bufpool.Put(dst) // out holds none of it past this point
		return nil, errors.New("decompression failed")
	}
	return out, nil
}

// dedupHitOK is checked before a Put deduplicates against rec: the key
// commitment must be the one rec's session derives for (id, ctr), and the
// flags must be known. A record made by a faulty or malicious writer (wrong
// public key, forged or damaged record, missing session) is marked bad in
// meta, so this Put seals the slice anew and publish replaces the record,
// instead of a new version referencing a slice nobody can read. It costs one
// BLAKE3 derivation per dedup hit (and one decapsulation per session per
// DB). Without the decapsulation key only this DB's own sessions can be
// checked; other records are trusted until a read or Scrub marks them.
// Ciphertext damage is not seen here (that needs reading the shards).
// db.mu is held.
func (db *DB) dedupHitOK(id *SliceID, rec *record.Slice) bool {
	s, err := db.readSession(rec.Session)
	switch {
	case errors.Is(err, ErrWriteOnly):
		return true
	case err != nil && !errors.Is(err, ErrCorrupt):
		return true // an I/O error says nothing about the record
	case err == nil && rec.Flags&^seal.KnownFlags == 0 && s.CheckCommitment((*[seal.IDSize]byte)(id), rec.Ctr, &rec.Commit):
		return true
	}
	bad := *rec
	bad.Bad = true
	db.opts.Logger.Warn("sealkv: stored slice fails its key commitment; sealing it anew", "slice", id.String(), "error", err)
	_ = db.meta.Set(record.SliceKey((*[seal.IDSize]byte)(id)), bad.Encode(), pebble.NoSync)
	return false
}
