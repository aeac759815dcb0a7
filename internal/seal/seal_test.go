package seal

import (
	"bytes"
	"crypto/ecdh"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"math/rand/v2"
	"testing"

	"github.com/cloudflare/circl/kem/mlkem/mlkem1024"
	"github.com/zeebo/blake3"
)

func seq(n int, start byte) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = start + byte(i)
	}
	return b
}

// TestGoldenMLKEMSession proves the ML-KEM-1024-only construction (KEM 1,
// every session written before the hybrid existed) is byte-for-byte what
// it was: the values were produced by the version-1 code (commit ffc4e15)
// from fixed inputs, so stores made earlier keep opening.
func TestGoldenMLKEMSession(t *testing.T) {
	pk, _ := mlkem1024.NewKeyFromSeed(seq(64, 0))
	id := [SessionIDSize]byte(seq(16, 200))
	ct, s := NewSession(pk, id, seq(32, 100))
	var sid [IDSize]byte
	for i := range sid {
		sid[i] = byte(i * 3)
	}
	ctr := uint64(7<<32 | 9)
	key, commit := s.SliceKeys(&sid, ctr)
	sealed, _ := s.Seal(nil, []byte("hello sealkv"), &sid, ctr, FlagCompressed)
	h := blake3.Sum256(ct)
	for _, c := range []struct{ name, got, want string }{
		{"ciphertext hash", hex.EncodeToString(h[:]), "aca83251ee3c7ab6500e2ca13b6ddd27f8451c373a53451258766d584bd6b609"},
		{"session key", hex.EncodeToString(s.Key[:]), "9a48e9f30c5fc5952ee47c1635cf9503266f8058d72009a35fbff79866849409"},
		{"slice key", hex.EncodeToString(key[:]), "de670168776d03964a6e2b2e3c228a3abbd4ef934353d0c043aada12ba2fdce8"},
		{"commitment", hex.EncodeToString(commit[:]), "7bcf50ab3462a02eb640ddb5b602c41175bb28272ed04d6c3a54a7056d4f58be"},
		{"sealed", hex.EncodeToString(sealed), "790a1b3dd00428ae6f39c63f17c37ead4765ec3b75500f3b0a975097"},
	} {
		if c.got != c.want {
			t.Errorf("%s changed: %s, want %s", c.name, c.got, c.want)
		}
	}
}

// TestHybridSession: both sides derive the same session key; the key
// depends on every byte of the ciphertext and on both private keys, so an
// attacker who breaks ML-KEM alone (knows ss_M: here, holds the ML-KEM
// private key) or X25519 alone still derives a different key; a low-order
// X25519 share is refused.
func TestHybridSession(t *testing.T) {
	seed := seq(64, 1)
	pk, sk := mlkem1024.NewKeyFromSeed(seed)
	xsk := X25519FromSeed(seed)
	id := [SessionIDSize]byte(seq(16, 9))
	ct, s, err := NewHybridSession(pk, xsk.PublicKey(), id, seq(HybridSeedSize, 50))
	if err != nil {
		t.Fatal(err)
	}
	if len(ct) != HybridCiphertextSize {
		t.Fatalf("ciphertext %d bytes", len(ct))
	}
	r, err := OpenHybridSession(sk, pk, xsk, id, ct)
	if err != nil || r.Key != s.Key {
		t.Fatalf("decapsulated key differs: %v", err)
	}
	// Deterministic in its randomness, fresh with other randomness.
	ct2, s2, _ := NewHybridSession(pk, xsk.PublicKey(), id, seq(HybridSeedSize, 50))
	ct3, s3, _ := NewHybridSession(pk, xsk.PublicKey(), id, seq(HybridSeedSize, 51))
	if !bytes.Equal(ct, ct2) || s2.Key != s.Key || s3.Key == s.Key || bytes.Equal(ct3, ct) {
		t.Fatal("encapsulation is not a function of its randomness")
	}
	// Differs from the ML-KEM-only session on the same ML-KEM part.
	_, m := NewSession(pk, id, seq(32, 50))
	if m.Key == s.Key {
		t.Fatal("hybrid and ML-KEM-only sessions share a key")
	}
	// One private key alone is not enough.
	otherX, _ := ecdh.X25519().NewPrivateKey(seq(32, 77))
	if r, err := OpenHybridSession(sk, pk, otherX, id, ct); err == nil && r.Key == s.Key {
		t.Fatal("session key derived without the X25519 private key")
	}
	_, otherM := mlkem1024.NewKeyFromSeed(seq(64, 2))
	if r, err := OpenHybridSession(otherM, pk, xsk, id, ct); err == nil && r.Key == s.Key {
		t.Fatal("session key derived without the ML-KEM private key")
	}
	// Every ciphertext byte and the session ID are bound.
	for i := 0; i < len(ct); i += 7 {
		bad := bytes.Clone(ct)
		bad[i] ^= 0x10
		if r, err := OpenHybridSession(sk, pk, xsk, id, bad); err == nil && r.Key == s.Key {
			t.Fatalf("ciphertext byte %d not bound", i)
		}
	}
	id2 := id
	id2[0] ^= 1
	if r, _ := OpenHybridSession(sk, pk, xsk, id2, ct); r.Key == s.Key {
		t.Fatal("session ID not bound")
	}
	// Low-order X25519 share (the all-zero point): refused on both sides.
	zero := bytes.Clone(ct)
	clear(zero[mlkem1024.CiphertextSize:])
	if _, err := OpenHybridSession(sk, pk, xsk, id, zero); err == nil {
		t.Fatal("low-order X25519 share accepted")
	}
	lowPK, _ := ecdh.X25519().NewPublicKey(make([]byte, 32))
	if _, _, err := NewHybridSession(pk, lowPK, id, seq(HybridSeedSize, 50)); err == nil {
		t.Fatal("encapsulation to a low-order X25519 key accepted")
	}
	if _, err := OpenHybridSession(sk, pk, xsk, id, ct[:len(ct)-1]); err == nil {
		t.Fatal("short ciphertext accepted")
	}
}

// TestX25519FromSeed: the derived X25519 key is a fixed function of the
// seed (so version-1 full key files gain it without a format change) and is
// not the seed or part of it.
func TestX25519FromSeed(t *testing.T) {
	seed := seq(64, 0)
	a, b := X25519FromSeed(seed), X25519FromSeed(bytes.Clone(seed))
	if !a.Equal(b) {
		t.Fatal("not deterministic")
	}
	if bytes.Contains(seed, a.Bytes()[:8]) || a.Equal(X25519FromSeed(seq(64, 1))) {
		t.Fatal("derived key related to the seed")
	}
	if got := hex.EncodeToString(a.PublicKey().Bytes()); got != goldenX25519 {
		t.Fatalf("derivation changed: public key %s", got)
	}
}

const goldenX25519 = "551ce3b8c09da09d13aa6e15920c78394b4f132915411014fd3833ae984bda4c"

// TestOpenChecksCommitmentFirst: a record whose commitment was made under
// another key — here a valid GCM ciphertext of the same slice, sealed by
// another session — is refused with ErrCommitment, which Open returns
// before any AES operation on the ciphertext (a too-short ciphertext, which
// GCM itself would refuse with ErrTag, gets ErrCommitment too). Only with
// the right commitment does the GCM tag decide (ErrTag).
func TestOpenChecksCommitmentFirst(t *testing.T) {
	pk, _ := mlkem1024.NewKeyFromSeed(seq(64, 0))
	_, s1 := NewSession(pk, [16]byte{1}, seq(32, 1))
	_, s2 := NewSession(pk, [16]byte{2}, seq(32, 2))
	id := [IDSize]byte(seq(64, 5))
	msg := []byte("the slice")
	sealed1, c1 := s1.Seal(nil, msg, &id, 42, 0)
	sealed2, c2 := s2.Seal(nil, msg, &id, 42, 0)
	if got, err := s1.Open(nil, sealed1, &id, 42, 0, &c1); err != nil || !bytes.Equal(got, msg) {
		t.Fatalf("open: %v", err)
	}
	for _, c := range []struct {
		name   string
		sealed []byte
		commit [32]byte
		want   error
	}{
		{"other session's record", sealed2, c2, ErrCommitment},
		{"other session's commitment, short ciphertext", nil, c2, ErrCommitment},
		{"right commitment, other ciphertext", sealed2, c1, ErrTag},
		{"right commitment, short ciphertext", nil, c1, ErrTag},
	} {
		if _, err := s1.Open(nil, c.sealed, &id, 42, 0, &c.commit); !errors.Is(err, c.want) || !errors.Is(err, ErrOpen) {
			t.Errorf("%s: %v, want %v", c.name, err, c.want)
		}
	}
	if _, err := s1.Open(nil, sealed1, &id, 42, 1<<7, &c1); !errors.Is(err, ErrFlags) {
		t.Errorf("unknown flag: %v", err)
	}
	if _, err := s1.Open(nil, sealed1, &id, 42, FlagPadded, &c1); !errors.Is(err, ErrTag) {
		t.Errorf("flag not bound: %v", err)
	}
}

// TestPadme checks Padmé lengths against the definition and the paper's
// bounds, and that Pad/Unpad round-trip and reject every malformed form.
func TestPadme(t *testing.T) {
	for n, want := range map[int]int{0: 0, 1: 1, 2: 2, 3: 3, 8: 8, 9: 10, 15: 16, 100: 104, 1000: 1024, 4097: 4352, 230000: 233472, 1 << 20: 1 << 20, 1<<20 + 1: 1<<20 + 1<<15} {
		if got := PadmeLen(n); got != want {
			t.Errorf("PadmeLen(%d) = %d, want %d", n, got, want)
		}
	}
	distinct := map[int]bool{}
	for n := 1; n <= 1<<22; n++ {
		p := PadmeLen(n)
		if p < n || float64(p-n) > 0.12*float64(n) || PadmeLen(p) != p {
			t.Fatalf("PadmeLen(%d) = %d", n, p)
		}
		if n > 1<<21 {
			distinct[p] = true
		}
	}
	// Lengths in (2^21, 2^22] fall into 2^(⌊log2 21⌋+1) = 32 classes.
	if len(distinct) != 32 {
		t.Fatalf("%d distinct padded lengths in (2^21, 2^22]", len(distinct))
	}
	rng := rand.New(rand.NewPCG(1, 2))
	for range 2000 {
		body := make([]byte, rng.IntN(5000))
		for i := range body {
			body[i] = byte(rng.IntN(3)) * 0x40 // many 0x00 and 0x80 bytes
		}
		p := Pad(body)
		if len(p) != PadmeLen(len(body)+1) {
			t.Fatal("padded length")
		}
		got, err := Unpad(p)
		if err != nil || !bytes.Equal(got, body) {
			t.Fatalf("round trip of %d bytes: %v", len(body), err)
		}
		dirty := bytes.Repeat([]byte{0xff}, len(p))
		if !bytes.Equal(PadInto(dirty, body), p) {
			t.Fatal("PadInto differs from Pad")
		}
	}
	for _, bad := range [][]byte{nil, {0}, {0, 0}, {1}, {0x80, 1}, {0x7f, 0, 0}, append(Pad(make([]byte, 100)), 0), Pad(make([]byte, 100))[:103]} {
		if _, err := Unpad(bad); !errors.Is(err, ErrPadding) {
			t.Errorf("Unpad(%x) accepted", bad)
		}
	}
}

// BenchmarkSession measures the per-session cost of each KEM (once per
// Open for the writer, once per session per DB for a reader); nothing
// per slice depends on the KEM.
func BenchmarkSession(b *testing.B) {
	seed := seq(64, 0)
	pk, sk := mlkem1024.NewKeyFromSeed(seed)
	xsk := X25519FromSeed(seed)
	id := [SessionIDSize]byte{}
	r := seq(HybridSeedSize, 3)
	b.Run("mlkem1024/encapsulate", func(b *testing.B) {
		for b.Loop() {
			NewSession(pk, id, r[:32])
		}
	})
	ct, _ := NewSession(pk, id, r[:32])
	b.Run("mlkem1024/decapsulate", func(b *testing.B) {
		for b.Loop() {
			_, _ = OpenSession(sk, pk, id, ct)
		}
	})
	b.Run("hybrid/encapsulate", func(b *testing.B) {
		for b.Loop() {
			_, _, _ = NewHybridSession(pk, xsk.PublicKey(), id, r)
		}
	})
	hct, _, _ := NewHybridSession(pk, xsk.PublicKey(), id, r)
	b.Run("hybrid/decapsulate", func(b *testing.B) {
		for b.Loop() {
			_, _ = OpenHybridSession(sk, pk, xsk, id, hct)
		}
	})
}

// BenchmarkSealSlice is the per-slice sealing cost without the AES work
// on the body: key derivation, AES key schedule, GCM of 16 bytes.
func BenchmarkSealSlice(b *testing.B) {
	pk, _ := mlkem1024.NewKeyFromSeed(seq(64, 0))
	_, s := NewSession(pk, [16]byte{}, seq(32, 0))
	id := [IDSize]byte{}
	msg := make([]byte, 16)
	var ctr uint64
	for b.Loop() {
		ctr++
		s.Seal(nil, msg, &id, ctr, 0)
	}
}

// TestSliceKeysDerivation checks the pooled hasher of SliceKeys against a
// fresh blake3.DeriveKey of the documented input, K_S ‖ SliceID ‖ ctr.
func TestSliceKeysDerivation(t *testing.T) {
	s := &Session{}
	for i := range s.Key {
		s.Key[i] = byte(i)
	}
	for ctr := range uint64(20) {
		var id [IDSize]byte
		id[0], id[IDSize-1] = byte(ctr), byte(3*ctr)
		key, commit := s.SliceKeys(&id, ctr<<32|ctr)
		m := append(append(append([]byte(nil), s.Key[:]...), id[:]...), binary.BigEndian.AppendUint64(nil, ctr<<32|ctr)...)
		var want [64]byte
		blake3.DeriveKey("sealkv slice v1", m, want[:])
		if !bytes.Equal(key[:], want[:32]) || !bytes.Equal(commit[:], want[32:]) {
			t.Fatalf("ctr %d: SliceKeys differs from DeriveKey", ctr)
		}
	}
}

// TestDeriveWipesSharedSecrets: the session KDFs zero the KEM shared
// secrets they are given once K_S is derived, as they zero their own copy
// of them; the hybrid one left ss_X, the ML-KEM one ss.
func TestDeriveWipesSharedSecrets(t *testing.T) {
	pk, _ := mlkem1024.NewKeyFromSeed(seq(64, 0))
	xpk := X25519FromSeed(seq(64, 0)).PublicKey()
	id := [SessionIDSize]byte(seq(16, 9))
	ss, ssM, ssX := seq(32, 1), seq(32, 2), seq(32, 3)
	derive(pk, id, seq(CiphertextSize, 4), ss)
	deriveHybrid(pk, xpk, id, seq(HybridCiphertextSize, 5), ssM, ssX)
	for name, b := range map[string][]byte{"ss": ss, "ss_M": ssM, "ss_X": ssX} {
		if !bytes.Equal(b, make([]byte, len(b))) {
			t.Errorf("%s not zeroed after deriving the session key", name)
		}
	}
}
