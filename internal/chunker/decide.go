package chunker

import (
	"crypto/aes"
	"encoding/binary"
	"math"

	"github.com/zeebo/blake3"
)

// Context strings for blake3.DeriveKey. Distinct contexts make the table, the
// mix key and the PRF key independent even though they share K_chunk.
const (
	ctxTable = "sealkv chunker v1 buzhash64 table"
	ctxMix   = "sealkv chunker v1 mix key"
	ctxPRF   = "sealkv chunker v1 aes-256 prf key"
)

// prefilterRate is the fraction of positions whose digest passes the keyed
// mix and is handed to AES. AES then keeps cutProbability/prefilterRate of
// them. 1/64 keeps the AES cost to ~0.35 ns per hashed byte (one confirm is
// ~21 ns) while the pre-filter alone, were it ever broken, would reveal only
// 6 bits per boundary. Changing it moves every cut point. See
// docs/chunker-security.md for the measured trade-off.
const prefilterRate = 1.0 / 64

// deriveTable fills the buzhash64 table from the key (BLAKE3 XOF, 2 KiB).
func deriveTable(key [32]byte) (t [256]uint64) {
	var raw [256 * 8]byte
	blake3.DeriveKey(ctxTable, key[:], raw[:])
	for i := range t {
		t[i] = binary.LittleEndian.Uint64(raw[8*i:])
	}
	return t
}

// mixKey keys a 64-bit permutation of the digest. Multiplication mod 2^64
// propagates carries upward, so the high bits of the product are non-linear
// (over GF(2)) functions of all input bits; the xorshift folds those high bits
// back into the low half before the second multiplication. The cut tests only
// compare the result with a threshold, i.e. look at its top bits, which are
// the best-mixed ones. Both multipliers are odd, so each round is a bijection.
type mixKey struct {
	k0, m0, k1, m1 uint64
}

func deriveMixKey(key [32]byte) mixKey {
	var raw [32]byte
	blake3.DeriveKey(ctxMix, key[:], raw[:])
	return mixKey{
		k0: binary.LittleEndian.Uint64(raw[0:]),
		m0: binary.LittleEndian.Uint64(raw[8:]) | 1,
		k1: binary.LittleEndian.Uint64(raw[16:]),
		m1: binary.LittleEndian.Uint64(raw[24:]) | 1,
	}
}

// apply is the keyed mix. The final xorshift of a full round is omitted:
// it does not change the top 32 bits, which are all the threshold looks at.
func (k mixKey) apply(d uint64) uint64 {
	x := (d ^ k.k0) * k.m0
	x ^= x >> 32
	return (x ^ k.k1) * k.m1
}

func derivePRFKey(key [32]byte) (k [32]byte) {
	blake3.DeriveKey(ctxPRF, key[:], k[:])
	return k
}

// confirm is the second stage: AES-256 of the digest (zero padded) as a PRF,
// compared with t2. It runs only on pre-filter hits, so its ~21 ns matter little.
func (c *Chunker) confirm(d uint64, s *[aes.BlockSize]byte) bool {
	return c.prfValue(d, s) < c.t2
}

// prfValue is the value confirm compares with t2.
func (c *Chunker) prfValue(d uint64, s *[aes.BlockSize]byte) uint64 {
	binary.LittleEndian.PutUint64(s[:8], d)
	clear(s[8:])
	c.prf.Encrypt(s[:], s[:])
	return binary.LittleEndian.Uint64(s[:8])
}

// cutProbability returns the per-position cut probability q for which the
// mean slice length on random data is p.Avg. Positions Min..Max-1 are
// evaluated, each cutting independently with probability q, and a cut is
// forced at Max, so
//
//	E[len] = Min + sum_{k=1..M} (1-q)^k = Min + (1-q)(1-(1-q)^M)/q,  M = Max-Min,
//
// which falls strictly from Max (q→0) to Min (q=1); bisection solves it.
func cutProbability(p Params) float64 {
	m := float64(p.Max - p.Min)
	mean := func(q float64) float64 {
		return float64(p.Min) + (1-q)*(-math.Expm1(m*math.Log1p(-q)))/q
	}
	lo, hi := 0.0, 1.0 // mean(lo) > Avg >= mean(hi)
	for range 200 {
		mid := (lo + hi) / 2
		if mean(mid) > float64(p.Avg) {
			lo = mid
		} else {
			hi = mid
		}
	}
	return hi
}

// thresholds splits q into the pre-filter and PRF pass thresholds.
func thresholds(q float64) (t1, t2 uint64) {
	pre := max(prefilterRate, q)
	return toThreshold(pre), toThreshold(q / pre)
}

// toThreshold maps a probability to t such that a uniform uint64 is < t with
// that probability. The floor of 1 keeps every threshold reachable.
func toThreshold(q float64) uint64 {
	if q >= 1 {
		return math.MaxUint64
	}
	t := math.Ldexp(q, 64)
	if t >= math.Ldexp(1, 64) {
		return math.MaxUint64
	}
	return max(uint64(t), 1)
}
