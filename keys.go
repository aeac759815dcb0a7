package kv

import (
	"bytes"
	"crypto/ecdh"
	"crypto/rand"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"

	"github.com/cloudflare/circl/kem/mlkem/mlkem1024"
	"github.com/zeebo/blake3"

	"github.com/sealkv/kv/internal/seal"
)

// Keys are the secrets of one store: an ML-KEM-1024 key pair (kept as the
// 64-byte seed of the decapsulation key), the X25519 key pair derived from
// that seed (for hybrid sessions, see SECURITY.md) and a 32-byte store
// secret from which the dedup and chunker keys are derived.
//
// A Keys value never prints its secrets: fmt and log/slog show only its
// fingerprint and whether it is write-only. The secrets sit two pointers
// away, so that even a Keys value inside another struct's unexported field,
// which fmt prints by reflection without calling Keys' methods, shows an
// address and not the bytes (fmt follows one pointer when it reports a bad
// verb, e.g. %s on a pointer, hence two).
type Keys struct {
	*keyRef // nil only in the zero Keys
	pk      *mlkem1024.PublicKey
	xpk     *ecdh.PublicKey // nil only for write-only keys read from a version-1 file
}

type keyRef struct{ *keySecrets }

func newKeyRef(s *keySecrets) *keyRef { return &keyRef{s} }

type keySecrets struct {
	seed   []byte                // ML-KEM decapsulation key seed; nil when write-only
	sk     *mlkem1024.PrivateKey // nil when write-only
	xsk    *ecdh.PrivateKey      // derived from seed; nil when write-only
	secret [32]byte              // store secret
}

// Key file format: magic, version, kind, body, BLAKE3-256 checksum of all
// that precedes it. Bodies:
//
//	version 1, full:       ML-KEM seed (64) ‖ store secret (32)
//	version 1, write-only: ML-KEM public key (1568) ‖ store secret (32)
//	version 2, write-only: ML-KEM public key (1568) ‖ X25519 public key (32) ‖ store secret (32)
//
// Full keys are still written as version 1: the X25519 key is derived from
// the seed, so their body did not change and older readers keep reading
// them. Write-only keys gained the X25519 public key and are written as
// version 2; version-1 write-only files are still read (they can only make
// ML-KEM-only sessions, see Options.KEM).
const (
	keysMagic      = "sealkv-keys\x00"
	keysVersion    = 1 // full keys, and write-only keys without X25519
	keysVersion2   = 2 // write-only keys with the X25519 public key
	kindFull       = 1
	kindWriteOnly  = 2
	keysChecksum   = 32
	seedSize       = mlkem1024.KeySeedSize
	storeSecretLen = 32
)

// GenerateKeys returns new random Keys.
func GenerateKeys() (*Keys, error) {
	buf := make([]byte, seedSize+storeSecretLen)
	if _, err := rand.Read(buf); err != nil {
		return nil, fmt.Errorf("sealkv: generating keys: %w", err)
	}
	k := &Keys{keyRef: newKeyRef(&keySecrets{})}
	copy(k.secret[:], buf[seedSize:])
	k.setSeed(buf[:seedSize])
	clear(buf)
	return k, nil
}

func (k *Keys) setSeed(seed []byte) {
	k.seed = bytes.Clone(seed)
	k.pk, k.sk = mlkem1024.NewKeyFromSeed(k.seed)
	k.xsk = seal.X25519FromSeed(k.seed)
	k.xpk = k.xsk.PublicKey()
}

// ParseKeys decodes Keys written by MarshalBinary. Damaged, truncated or
// unknown bytes give an error wrapping ErrInvalidKeys.
func ParseKeys(b []byte) (*Keys, error) {
	if len(b) < len(keysMagic)+2+keysChecksum || string(b[:len(keysMagic)]) != keysMagic {
		return nil, fmt.Errorf("%w: not a sealkv key file", ErrInvalidKeys)
	}
	body, sum := b[:len(b)-keysChecksum], b[len(b)-keysChecksum:]
	want := blake3.Sum256(body)
	if subtle.ConstantTimeCompare(want[:], sum) != 1 {
		return nil, fmt.Errorf("%w: checksum mismatch (damaged key file)", ErrInvalidKeys)
	}
	v := body[len(keysMagic)]
	if v != keysVersion && v != keysVersion2 {
		return nil, fmt.Errorf("%w: unsupported key format version %d", ErrInvalidKeys, v)
	}
	kind, rest := body[len(keysMagic)+1], body[len(keysMagic)+2:]
	k := &Keys{keyRef: newKeyRef(&keySecrets{})}
	switch {
	case v == keysVersion && kind == kindFull && len(rest) == seedSize+storeSecretLen:
		k.setSeed(rest[:seedSize])
	case v == keysVersion && kind == kindWriteOnly && len(rest) == mlkem1024.PublicKeySize+storeSecretLen,
		v == keysVersion2 && kind == kindWriteOnly && len(rest) == mlkem1024.PublicKeySize+seal.X25519Size+storeSecretLen:
		k.pk = new(mlkem1024.PublicKey)
		if err := k.pk.Unpack(rest[:mlkem1024.PublicKeySize]); err != nil {
			return nil, fmt.Errorf("%w: bad public key: %v", ErrInvalidKeys, err)
		}
		if v == keysVersion2 {
			xpk, err := parseX25519(rest[mlkem1024.PublicKeySize : mlkem1024.PublicKeySize+seal.X25519Size])
			if err != nil {
				return nil, fmt.Errorf("%w: bad X25519 public key: %v", ErrInvalidKeys, err)
			}
			k.xpk = xpk
		}
	default:
		return nil, fmt.Errorf("%w: unknown key kind %d, or wrong length for version %d", ErrInvalidKeys, kind, v)
	}
	copy(k.secret[:], rest[len(rest)-storeSecretLen:])
	return k, nil
}

// parseX25519 decodes an X25519 public key and refuses a low-order point,
// with which every session's key agreement would fail (crypto/ecdh checks
// that only when agreeing): one agreement with a fixed scalar tells.
func parseX25519(b []byte) (*ecdh.PublicKey, error) {
	pk, err := ecdh.X25519().NewPublicKey(b)
	if err != nil {
		return nil, err
	}
	probe, err := ecdh.X25519().NewPrivateKey(make([]byte, seal.X25519Size))
	if err != nil {
		return nil, err
	}
	if _, err := probe.ECDH(pk); err != nil {
		return nil, err
	}
	return pk, nil
}

// MarshalBinary encodes k for storage. Write-only keys encode the public keys
// instead of the decapsulation seed, so the result holds no way to read.
func (k *Keys) MarshalBinary() ([]byte, error) {
	if k == nil || k.zero() {
		return nil, fmt.Errorf("%w: zero Keys", ErrInvalidKeys)
	}
	b := []byte(keysMagic)
	switch {
	case k.seed != nil:
		b = append(b, keysVersion, kindFull)
		b = append(b, k.seed...)
	case k.xpk != nil:
		b = append(b, keysVersion2, kindWriteOnly)
		b = append(b, k.publicKey()...)
		b = append(b, k.xpk.Bytes()...)
	default:
		b = append(b, keysVersion, kindWriteOnly)
		b = append(b, k.publicKey()...)
	}
	b = append(b, k.secret[:]...)
	sum := blake3.Sum256(b)
	return append(b, sum[:]...), nil
}

// WriteOnly returns a copy of k without the decapsulation keys (the ML-KEM
// seed and the X25519 private key derived from it): a store opened with it
// can Put (and deduplicate) but never read anything back.
func (k *Keys) WriteOnly() *Keys {
	if k.zero() {
		return &Keys{}
	}
	return &Keys{keyRef: newKeyRef(&keySecrets{secret: k.secret}), pk: k.pk, xpk: k.xpk}
}

// CanRead reports whether k holds the decapsulation key.
func (k Keys) CanRead() bool { return k.keyRef != nil && k.sk != nil }

// zero reports whether k is the zero Keys (or lacks a part no parsed or
// generated Keys lacks), which no store accepts.
func (k Keys) zero() bool { return k.pk == nil || k.keyRef == nil }

func (k Keys) publicKey() []byte {
	b := make([]byte, mlkem1024.PublicKeySize)
	k.pk.Pack(b)
	return b
}

// Fingerprint identifies the keys (ML-KEM public key and store secret)
// without revealing them. Full and write-only Keys of one store share it.
// It is unchanged since key format version 1 (stores record it), so it does
// not cover the X25519 public key: for full keys that key is derived from
// the seed, which the ML-KEM public key already identifies; a write-only
// file's X25519 key is trusted like the rest of that file (SECURITY.md).
// The zero Keys has the zero fingerprint.
func (k Keys) Fingerprint() [32]byte {
	var fp [32]byte
	if k.zero() {
		return fp
	}
	blake3.DeriveKey("sealkv keys fingerprint v1", append(k.publicKey(), k.secret[:]...), fp[:])
	return fp
}

// derive returns a 32-byte subkey of the store secret for one purpose.
func (k *Keys) derive(purpose string) []byte {
	out := make([]byte, 32)
	blake3.DeriveKey("sealkv "+purpose+" v1", k.secret[:], out)
	return out
}

// String shows the fingerprint prefix only. The printing methods have value
// receivers so that printing a dereferenced Keys is redacted too.
func (k Keys) String() string {
	if k.zero() {
		return "kv.Keys{}"
	}
	fp := k.Fingerprint()
	return fmt.Sprintf("kv.Keys{fingerprint: %s, writeOnly: %t}", hex.EncodeToString(fp[:8]), !k.CanRead())
}

// GoString keeps %#v from dumping the secrets.
func (k Keys) GoString() string { return k.String() }

// Format makes every fmt verb print String.
func (k Keys) Format(f fmt.State, _ rune) { _, _ = f.Write([]byte(k.String())) }

// LogValue makes log/slog print String.
func (k Keys) LogValue() slog.Value { return slog.StringValue(k.String()) }

// ErrInvalidKeys is returned by ParseKeys for bytes that are not valid Keys,
// and by MarshalBinary for the zero Keys.
var ErrInvalidKeys = errors.New("sealkv: invalid keys")
