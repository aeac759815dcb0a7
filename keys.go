package kv

import (
	"bytes"
	"crypto/rand"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"

	"github.com/cloudflare/circl/kem/mlkem/mlkem1024"
	"github.com/zeebo/blake3"
)

// Keys are the secrets of one store: an ML-KEM-1024 key pair (kept as the
// 64-byte seed of the decapsulation key) and a 32-byte store secret from
// which the dedup and chunker keys are derived.
//
// A Keys value never prints its secrets: fmt and log/slog show only its
// fingerprint and whether it is write-only.
type Keys struct {
	seed   []byte // decapsulation key seed; nil when write-only
	pk     *mlkem1024.PublicKey
	sk     *mlkem1024.PrivateKey // nil when write-only
	secret [32]byte
}

// Key file format: magic, version, kind, body, BLAKE3-256 checksum of all
// that precedes it.
const (
	keysMagic      = "sealkv-keys\x00"
	keysVersion    = 1
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
	k := &Keys{}
	copy(k.secret[:], buf[seedSize:])
	k.setSeed(buf[:seedSize])
	return k, nil
}

func (k *Keys) setSeed(seed []byte) {
	k.seed = bytes.Clone(seed)
	k.pk, k.sk = mlkem1024.NewKeyFromSeed(k.seed)
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
	if v := body[len(keysMagic)]; v != keysVersion {
		return nil, fmt.Errorf("%w: unsupported key format version %d", ErrInvalidKeys, v)
	}
	kind, rest := body[len(keysMagic)+1], body[len(keysMagic)+2:]
	k := &Keys{}
	switch {
	case kind == kindFull && len(rest) == seedSize+storeSecretLen:
		k.setSeed(rest[:seedSize])
	case kind == kindWriteOnly && len(rest) == mlkem1024.PublicKeySize+storeSecretLen:
		k.pk = new(mlkem1024.PublicKey)
		if err := k.pk.Unpack(rest[:mlkem1024.PublicKeySize]); err != nil {
			return nil, fmt.Errorf("%w: bad public key: %v", ErrInvalidKeys, err)
		}
	default:
		return nil, fmt.Errorf("%w: unknown key kind %d or wrong length", ErrInvalidKeys, kind)
	}
	copy(k.secret[:], rest[len(rest)-storeSecretLen:])
	return k, nil
}

// MarshalBinary encodes k for storage. Write-only keys encode the public key
// instead of the decapsulation seed, so the result holds no way to read.
func (k *Keys) MarshalBinary() ([]byte, error) {
	b := []byte(keysMagic)
	if k.seed != nil {
		b = append(b, keysVersion, kindFull)
		b = append(b, k.seed...)
	} else {
		b = append(b, keysVersion, kindWriteOnly)
		b = append(b, k.publicKey()...)
	}
	b = append(b, k.secret[:]...)
	sum := blake3.Sum256(b)
	return append(b, sum[:]...), nil
}

// WriteOnly returns a copy of k without the decapsulation key: a store
// opened with it can Put (and deduplicate) but never read anything back.
func (k *Keys) WriteOnly() *Keys {
	return &Keys{pk: k.pk, secret: k.secret}
}

// CanRead reports whether k holds the decapsulation key.
func (k Keys) CanRead() bool { return k.sk != nil }

func (k Keys) publicKey() []byte {
	b := make([]byte, mlkem1024.PublicKeySize)
	k.pk.Pack(b)
	return b
}

// Fingerprint identifies the keys (public key and store secret) without
// revealing them. Full and write-only Keys of one store share it.
func (k Keys) Fingerprint() [32]byte {
	var fp [32]byte
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
	if k.pk == nil {
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

// ErrInvalidKeys is returned by ParseKeys for bytes that are not valid Keys.
var ErrInvalidKeys = errors.New("sealkv: invalid keys")
