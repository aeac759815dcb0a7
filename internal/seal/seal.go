// Package seal implements sealkv's sealing construction (DESIGN.md, "Sealing";
// SECURITY.md): one key encapsulation per writer session (ML-KEM-1024 alone,
// or ML-KEM-1024 combined with X25519, see hybrid.go), and from the session
// key a fresh AES-256-GCM key and a key commitment for every slice.
//
// Because each derived key seals exactly one message, the GCM nonce is fixed
// at zero: a (key, nonce) pair can only repeat if the KDF input (session key,
// SliceID, counter) repeats, and the session key is fresh per session while
// the counter is unique within it. Since the SliceID (a keyed hash of the
// plaintext) is part of the KDF input, even a repeated counter would only
// repeat a key for the same plaintext, which then seals to the same bytes.
package seal

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/subtle"
	"encoding/binary"
	"errors"
	"fmt"
	"sync"

	"github.com/cloudflare/circl/kem/mlkem/mlkem1024"
	"github.com/zeebo/blake3"
)

// Version is the sealing format version bound into every AAD.
const Version = 1

// Sizes of the parts of the construction.
const (
	SessionIDSize  = 16
	CommitmentSize = 32
	IDSize         = 64
	CiphertextSize = mlkem1024.CiphertextSize
	Overhead       = 16 // GCM tag
)

// Flag bits bound into the AAD of a sealed slice.
const (
	// FlagCompressed: the plaintext is zstd-compressed.
	FlagCompressed byte = 1 << 0
	// FlagPadded: the plaintext (after compression) carries Padmé padding
	// (see Pad); Open's caller strips it with Unpad.
	FlagPadded byte = 1 << 1

	// KnownFlags are the flags this version understands. Open refuses any
	// other bit rather than misreading a slice from a newer format.
	KnownFlags = FlagCompressed | FlagPadded
)

// Errors of Open. The last three wrap ErrOpen; callers wrap them with their own
// corruption error.
var (
	// ErrOpen is returned when a sealed slice fails the key commitment, the
	// GCM authentication or carries unknown flags.
	ErrOpen = errors.New("seal: authentication failed")
	// ErrCommitment: the stored key commitment is not the one derived for
	// (session, SliceID, counter). It is checked before any decryption.
	ErrCommitment = fmt.Errorf("%w: key commitment mismatch", ErrOpen)
	// ErrTag: the commitment matched but the GCM tag did not (ciphertext,
	// flags or other AAD changed).
	ErrTag = fmt.Errorf("%w: GCM tag mismatch", ErrOpen)
	// ErrFlags: the record has flag bits this version does not know.
	ErrFlags = fmt.Errorf("%w: unknown flags", ErrOpen)
)

var zeroNonce [12]byte

// Session is one writer's key-encapsulation epoch. Its Key must never leave
// the process.
type Session struct {
	ID  [SessionIDSize]byte
	Key [32]byte

	trace func(id *[IDSize]byte, ctr uint64, key [32]byte)
}

// SetTrace makes Seal call f with the SliceID, counter and one-time key of
// every slice it seals. It exists for the nonce-uniqueness test only; f must
// be safe for concurrent use. Never set it outside tests: it sees keys.
func (s *Session) SetTrace(f func(id *[IDSize]byte, ctr uint64, key [32]byte)) { s.trace = f }

// NewSession encapsulates a fresh shared secret to pk and derives the session
// key. ct must be persisted (with id) before any slice sealed under the
// session is committed, so readers can decapsulate it.
func NewSession(pk *mlkem1024.PublicKey, id [SessionIDSize]byte, seed []byte) (ct []byte, s *Session) {
	ct = make([]byte, mlkem1024.CiphertextSize)
	ss := make([]byte, mlkem1024.SharedKeySize)
	pk.EncapsulateTo(ct, ss, seed)
	return ct, derive(pk, id, ct, ss)
}

// OpenSession decapsulates ct with sk and derives the same session key the
// writer derived. ML-KEM decapsulation never fails (implicit rejection); a
// wrong ct yields a wrong key, which the per-slice key commitment catches.
func OpenSession(sk *mlkem1024.PrivateKey, pk *mlkem1024.PublicKey, id [SessionIDSize]byte, ct []byte) (*Session, error) {
	if len(ct) != mlkem1024.CiphertextSize {
		return nil, errors.New("seal: session ciphertext has wrong length")
	}
	ss := make([]byte, mlkem1024.SharedKeySize)
	sk.DecapsulateTo(ss, ct)
	return derive(pk, id, ct, ss), nil
}

func derive(pk *mlkem1024.PublicKey, id [SessionIDSize]byte, ct, ss []byte) *Session {
	pkb := make([]byte, mlkem1024.PublicKeySize)
	pk.Pack(pkb)
	pkh := blake3.Sum256(pkb)
	m := make([]byte, 0, len(ss)+len(ct)+len(pkh)+len(id))
	m = append(append(append(append(m, ss...), ct...), pkh[:]...), id[:]...)
	s := &Session{ID: id}
	blake3.DeriveKey("sealkv session v1", m, s.Key[:])
	clear(m) // it holds the shared secret
	clear(ss)
	return s
}

// sliceKDF holds BLAKE3 hashers in derive-key mode for SliceKeys; Reset
// returns one to its keyed initial state, which saves deriving the context
// key and allocating a hasher per slice.
var sliceKDF = sync.Pool{New: func() any { return blake3.NewDeriveKey("sealkv slice v1") }}

// SliceKeys derives the one-time AES-256 key and the key commitment of the
// slice with the given id sealed under counter ctr.
func (s *Session) SliceKeys(id *[IDSize]byte, ctr uint64) (key, commit [32]byte) {
	var m [32 + IDSize + 8]byte
	copy(m[:32], s.Key[:])
	copy(m[32:], id[:])
	binary.BigEndian.PutUint64(m[32+IDSize:], ctr)
	var out [64]byte
	h := sliceKDF.Get().(*blake3.Hasher)
	h.Reset()
	h.Write(m[:])
	h.Digest().Read(out[:])
	sliceKDF.Put(h)
	copy(key[:], out[:32])
	copy(commit[:], out[32:])
	clear(m[:32]) // the session key
	clear(out[:32])
	return key, commit
}

// AAD returns the additional data bound to a sealed slice: format version,
// session, counter, SliceID and flags. Swapping any of them fails the tag.
func (s *Session) AAD(id *[IDSize]byte, ctr uint64, flags byte) []byte {
	a := make([]byte, 0, 1+SessionIDSize+8+IDSize+1)
	a = append(a, Version)
	a = append(a, s.ID[:]...)
	a = binary.BigEndian.AppendUint64(a, ctr)
	a = append(a, id[:]...)
	return append(a, flags)
}

// Seal appends the sealed form of plaintext to dst and returns it with the
// key commitment to store beside it.
func (s *Session) Seal(dst, plaintext []byte, id *[IDSize]byte, ctr uint64, flags byte) ([]byte, [32]byte) {
	key, commit := s.SliceKeys(id, ctr)
	if s.trace != nil {
		s.trace(id, ctr, key)
	}
	return gcm(key).Seal(dst, zeroNonce[:], plaintext, s.AAD(id, ctr, flags)), commit
}

// Open checks the flags and the key commitment (in constant time) and only
// then authenticates and decrypts sealed, appending the plaintext to dst.
// A commitment made under another key (another session, counter or
// SliceID) gives ErrCommitment without any AES operation on sealed.
func (s *Session) Open(dst, sealed []byte, id *[IDSize]byte, ctr uint64, flags byte, commit *[32]byte) ([]byte, error) {
	if flags&^KnownFlags != 0 {
		return nil, ErrFlags
	}
	key, want := s.SliceKeys(id, ctr)
	if subtle.ConstantTimeCompare(want[:], commit[:]) != 1 {
		return nil, ErrCommitment
	}
	out, err := gcm(key).Open(dst, zeroNonce[:], sealed, s.AAD(id, ctr, flags))
	if err != nil {
		return nil, ErrTag
	}
	return out, nil
}

// CheckCommitment reports whether commit is the commitment of (id, ctr)
// under this session, without touching any ciphertext.
func (s *Session) CheckCommitment(id *[IDSize]byte, ctr uint64, commit *[32]byte) bool {
	_, want := s.SliceKeys(id, ctr)
	return subtle.ConstantTimeCompare(want[:], commit[:]) == 1
}

func gcm(key [32]byte) cipher.AEAD {
	b, err := aes.NewCipher(key[:])
	if err != nil {
		panic(err) // unreachable: the key is always 32 bytes
	}
	g, err := cipher.NewGCM(b)
	if err != nil {
		panic(err) // unreachable: standard nonce and tag sizes
	}
	return g
}
