package seal

import (
	"crypto/ecdh"
	"errors"
	"fmt"

	"github.com/cloudflare/circl/kem/mlkem/mlkem1024"
	"github.com/zeebo/blake3"
)

// KEM identifiers, persisted in every session record so a store keeps
// opening whatever KEM its sessions were made with.
const (
	// KEMMLKEM1024: the session secret is one ML-KEM-1024 encapsulation
	// (NewSession / OpenSession, context "sealkv session v1").
	KEMMLKEM1024 byte = 1
	// KEMHybrid: ML-KEM-1024 and X25519, combined in one KDF call so that
	// the session key is secret as long as either KEM is unbroken
	// (NewHybridSession / OpenHybridSession, context below).
	KEMHybrid byte = 2
)

// Sizes of the hybrid construction.
const (
	X25519Size = 32
	// HybridCiphertextSize is ct_M ‖ ct_X.
	HybridCiphertextSize = mlkem1024.CiphertextSize + X25519Size
	// HybridSeedSize is the encapsulation randomness: 32 bytes for
	// ML-KEM-1024's encapsulation, 32 for the ephemeral X25519 key.
	HybridSeedSize = mlkem1024.EncapsulationSeedSize + X25519Size
)

// hybridContext is the BLAKE3 DeriveKey context of hybrid session keys. It
// differs from the ML-KEM-only context, so the two KEMs can never yield the
// same session key from related inputs.
const hybridContext = "sealkv session v2 ML-KEM-1024+X25519 hybrid"

// x25519Context derives a store's X25519 private key from its ML-KEM-1024
// seed (as X-Wing derives both its keys from one seed).
const x25519Context = "sealkv x25519 private key v1"

// X25519FromSeed derives the X25519 private key that belongs with the
// ML-KEM-1024 decapsulation seed. The derivation is one-way: neither key
// reveals the seed or the other key.
func X25519FromSeed(seed []byte) *ecdh.PrivateKey {
	var b [X25519Size]byte
	blake3.DeriveKey(x25519Context, seed, b[:])
	sk, err := ecdh.X25519().NewPrivateKey(b[:])
	if err != nil {
		panic(err) // unreachable: every 32-byte string is an X25519 key
	}
	return sk
}

// NewHybridSession encapsulates to both public keys with the given
// randomness (HybridSeedSize bytes) and derives the session key. ct
// (HybridCiphertextSize bytes) must be persisted with id before any slice
// sealed under the session is committed.
func NewHybridSession(pk *mlkem1024.PublicKey, xpk *ecdh.PublicKey, id [SessionIDSize]byte, seed []byte) (ct []byte, s *Session, err error) {
	if len(seed) != HybridSeedSize || xpk == nil || xpk.Curve() != ecdh.X25519() {
		return nil, nil, errors.New("seal: hybrid session needs a 64-byte seed and an X25519 public key")
	}
	ct = make([]byte, HybridCiphertextSize)
	ssM := make([]byte, mlkem1024.SharedKeySize)
	pk.EncapsulateTo(ct[:mlkem1024.CiphertextSize], ssM, seed[:mlkem1024.EncapsulationSeedSize])
	eph, err := ecdh.X25519().NewPrivateKey(seed[mlkem1024.EncapsulationSeedSize:])
	if err != nil {
		return nil, nil, err
	}
	ssX, err := eph.ECDH(xpk)
	if err != nil { // low-order public key: all-zero shared secret
		return nil, nil, fmt.Errorf("seal: X25519: %w", err)
	}
	copy(ct[mlkem1024.CiphertextSize:], eph.PublicKey().Bytes())
	return ct, deriveHybrid(pk, xpk, id, ct, ssM, ssX), nil
}

// OpenHybridSession decapsulates both parts of ct and derives the session
// key the writer derived. ML-KEM never fails (implicit rejection); a
// low-order X25519 share does, and anything else wrong yields a wrong key
// that the per-slice key commitment catches.
func OpenHybridSession(sk *mlkem1024.PrivateKey, pk *mlkem1024.PublicKey, xsk *ecdh.PrivateKey, id [SessionIDSize]byte, ct []byte) (*Session, error) {
	if len(ct) != HybridCiphertextSize {
		return nil, errors.New("seal: hybrid session ciphertext has wrong length")
	}
	if xsk == nil {
		return nil, errors.New("seal: no X25519 private key")
	}
	ssM := make([]byte, mlkem1024.SharedKeySize)
	sk.DecapsulateTo(ssM, ct[:mlkem1024.CiphertextSize])
	ctX, err := ecdh.X25519().NewPublicKey(ct[mlkem1024.CiphertextSize:])
	if err != nil {
		return nil, err
	}
	ssX, err := xsk.ECDH(ctX)
	if err != nil {
		return nil, fmt.Errorf("seal: X25519: %w", err)
	}
	return deriveHybrid(pk, xsk.PublicKey(), id, ct, ssM, ssX), nil
}

// deriveHybrid is the combiner and session KDF in one call:
//
//	K_S = BLAKE3.DeriveKey("sealkv session v2 ML-KEM-1024+X25519 hybrid",
//	        ss_M ‖ ss_X ‖ ct_X ‖ pk_X ‖ ct_M ‖ pk_M ‖ sid)
//
// Every field has a fixed length, so the encoding is injective. As in
// X-Wing, ct_X and pk_X are included because X25519 as a KEM is not
// ciphertext-binding; unlike X-Wing, ct_M and pk_M are included in full as
// well (the generic "kitchen sink" combiner), so the argument does not need
// ML-KEM's ciphertext second-preimage resistance either. With the KDF
// modelled as a random oracle, K_S is pseudorandom as long as either ss_M or
// ss_X is.
func deriveHybrid(pk *mlkem1024.PublicKey, xpk *ecdh.PublicKey, id [SessionIDSize]byte, ct, ssM, ssX []byte) *Session {
	pkb := make([]byte, mlkem1024.PublicKeySize)
	pk.Pack(pkb)
	m := make([]byte, 0, len(ssM)+len(ssX)+X25519Size*2+len(ct)+len(pkb)+SessionIDSize)
	m = append(m, ssM...)
	m = append(m, ssX...)
	m = append(m, ct[mlkem1024.CiphertextSize:]...)
	m = append(m, xpk.Bytes()...)
	m = append(m, ct[:mlkem1024.CiphertextSize]...)
	m = append(m, pkb...)
	m = append(m, id[:]...)
	s := &Session{ID: id}
	blake3.DeriveKey(hybridContext, m, s.Key[:])
	clear(m[:len(ssM)+len(ssX)])
	clear(ssM)
	clear(ssX)
	return s
}
