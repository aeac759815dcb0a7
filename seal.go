package kv

import (
	"crypto/rand"
	"errors"
	"fmt"
	"sync"

	"github.com/cockroachdb/pebble/v2"
	"github.com/klauspost/compress/zstd"
	"github.com/zeebo/blake3"

	"github.com/sealkv/kv/internal/record"
	"github.com/sealkv/kv/internal/seal"
)

// kemMLKEM1024 tags sessions encapsulated with ML-KEM-1024 alone.
const kemMLKEM1024 = 1

// beginSession starts this DB's writer session: a fresh encapsulation to the
// store's public key and a random session ID. The session record and the
// "unclean" marker are synced before any slice is sealed under it, so a
// reader can always decapsulate and a crash is always noticed.
func (db *DB) beginSession() error {
	var id [seal.SessionIDSize]byte
	seed := make([]byte, 32)
	if _, err := rand.Read(id[:]); err != nil {
		return err
	}
	if _, err := rand.Read(seed); err != nil {
		return err
	}
	ct, s := seal.NewSession(db.keys.pk, id, seed)
	b := db.meta.NewBatch()
	defer b.Close()
	rec := record.Session{KEM: kemMLKEM1024, Ciphertext: ct}
	_ = b.Set(record.SessionKey(id), rec.Encode(), nil)
	_ = b.Set(record.UncleanKey(id), nil, nil)
	if err := b.Commit(pebble.Sync); err != nil {
		return fmt.Errorf("sealkv: starting session: %w", err)
	}
	db.session = s
	db.opened.Store(id, s)
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
	if err != nil || rec.KEM != kemMLKEM1024 {
		return nil, fmt.Errorf("%w: session %x record", ErrCorrupt, sid)
	}
	s, err := seal.OpenSession(db.keys.sk, db.keys.pk, sid, rec.Ciphertext)
	if err != nil {
		return nil, fmt.Errorf("%w: session %x: %v", ErrCorrupt, sid, err)
	}
	db.opened.Store(sid, s)
	return s, nil
}

// sliceID is the keyed BLAKE3-512 of a slice's ClearText.
func (db *DB) sliceID(clear []byte) SliceID {
	h, _ := blake3.NewKeyed(db.idKey)
	h.Write(clear)
	var id SliceID
	h.Digest().Read(id[:])
	return id
}

// zstd coders are pooled: an encoder holds a few MiB of state.
var (
	encoders = sync.Pool{New: func() any {
		e, _ := zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.SpeedFastest), zstd.WithEncoderConcurrency(1), zstd.WithLowerEncoderMem(true))
		return e
	}}
	decoders = sync.Pool{New: func() any {
		d, _ := zstd.NewReader(nil, zstd.WithDecoderConcurrency(1), zstd.WithDecoderLowmem(true))
		return d
	}}
)

// compress returns the compressed form of clear and true when compression
// pays, or clear and false.
func compress(clear []byte) ([]byte, bool) {
	e := encoders.Get().(*zstd.Encoder)
	defer encoders.Put(e)
	out := e.EncodeAll(clear, make([]byte, 0, len(clear)))
	if len(out) >= len(clear)-len(clear)/32 {
		return clear, false
	}
	return out, true
}

func decompress(b []byte, size int64) ([]byte, error) {
	d := decoders.Get().(*zstd.Decoder)
	defer decoders.Put(d)
	out, err := d.DecodeAll(b, make([]byte, 0, size))
	if err != nil || int64(len(out)) != size {
		return nil, errors.New("decompression failed")
	}
	return out, nil
}
