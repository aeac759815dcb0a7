// Package chunker cuts ClearText into Slices at content-defined boundaries
// whose positions cannot be predicted or fingerprinted without the chunker key.
//
// The rolling digest is buzhash64 over a 64-byte window with a key-derived
// table. Plain keyed buzhash with a "digest & mask == 0" rule is broken by
// Truong et al. ("Breaking and Fixing Content-Defined Chunking", CCS 2025):
// the masked digest bits are GF(2)-linear in the table, so observed slice
// lengths of known files yield linear equations that recover it. Here the cut
// decision is a keyed non-linear function of the digest instead: a keyed
// multiply–xorshift permutation pre-filter followed by an AES-256 PRF on the
// digests that pass it. See docs/chunker-security.md for the argument and the
// measurements.
package chunker

import (
	"crypto/aes"
	"crypto/cipher"
	"fmt"
)

// WindowSize is the number of bytes the rolling digest covers.
const WindowSize = 64

// MaxMax bounds Params.Max so a slice always fits comfortably in memory;
// it also bounds the size of any shard (see s3store).
const MaxMax = 64 << 20

// Params are the slice size bounds in bytes.
type Params struct {
	// Min is the smallest slice length except for the last slice of a stream.
	Min int
	// Avg is the target mean slice length on random data.
	Avg int
	// Max is the length at which a cut is forced.
	Max int
}

// DefaultParams returns the store defaults: 64 KiB / 230 KiB / 1 MiB.
func DefaultParams() Params {
	return Params{Min: 64 << 10, Avg: 230 << 10, Max: 1 << 20}
}

// Validate reports whether p can be used by New.
func (p Params) Validate() error {
	switch {
	case p.Min < WindowSize:
		return fmt.Errorf("chunker: Min (%d) must be at least the %d-byte rolling window", p.Min, WindowSize)
	case p.Avg <= p.Min:
		return fmt.Errorf("chunker: Avg (%d) must be greater than Min (%d)", p.Avg, p.Min)
	case p.Max <= p.Avg:
		return fmt.Errorf("chunker: Max (%d) must be greater than Avg (%d)", p.Max, p.Avg)
	case p.Max > MaxMax:
		return fmt.Errorf("chunker: Max (%d) must be at most %d (64 MiB)", p.Max, MaxMax)
	}
	return nil
}

// Chunker finds slice boundaries. It is immutable after New and safe for
// concurrent use by many goroutines.
type Chunker struct {
	p     Params
	table [256]uint64 // buzhash64 byte table, derived from the key
	mix   mixKey      // keyed non-linear pre-filter
	prf   cipher.Block
	xk    [240]byte // the PRF key expanded for encrypt8, if vector
	// vector is haveVector at New: scan takes the vector path, whose AES
	// needs xk.
	vector bool
	t1     uint64 // pre-filter passes iff mix(d) < t1
	t2     uint64 // PRF confirms iff prf(d) < t2
}

// New returns a Chunker for key K_chunk (already derived by the caller from
// the store secret) and params p.
func New(key [32]byte, p Params) (*Chunker, error) {
	if err := p.Validate(); err != nil {
		return nil, err
	}
	c := &Chunker{p: p}
	c.table = deriveTable(key)
	c.mix = deriveMixKey(key)
	prfKey := derivePRFKey(key)
	block, err := aes.NewCipher(prfKey[:])
	if err != nil {
		return nil, err // unreachable: the key is 32 bytes
	}
	c.prf = block
	if haveVector {
		c.xk = expandKey256(prfKey)
		c.vector = true
	}
	c.t1, c.t2 = thresholds(cutProbability(p))
	return c, nil
}

// Params returns the bounds c was created with.
func (c *Chunker) Params() Params { return c.p }

// Cut returns the length of the next slice at the start of buf.
//
// buf always begins at a slice boundary. If atEOF is false and
// len(buf) < Max, Cut may return 0, meaning "give me more bytes": call again
// with a longer buf starting at the same position. Otherwise it returns n with
// 1 <= n <= min(len(buf), Max); n == len(buf) when atEOF and no boundary was
// found. len(buf) == 0 with atEOF returns 0.
//
// The digest is reset at every slice start, so Cut is a pure function of
// (key, params, buf, atEOF). Callers should offer at least Max bytes when they
// have them: a call that returns 0 rescans its bytes on the next call.
func (c *Chunker) Cut(buf []byte, atEOF bool) int {
	first := 0
	if len(buf) >= c.p.Min {
		// Lengths Min..Max-1 are content-defined; Max is forced by Bound.
		first = c.scan(buf[:min(len(buf), c.p.Max-1)], c.p.Min)
	}
	return c.Bound(first, len(buf), atEOF)
}

// Bound is Cut's result for a buffer of n bytes starting at a slice boundary
// whose first candidate at least Min bytes in ends at first (0 if there is
// none in the buffer): first if it is below Max, else a forced cut at Max,
// the whole buffer at EOF, or 0 for "give me more bytes".
func (c *Chunker) Bound(first, n int, atEOF bool) int {
	switch {
	case first > 0 && first < c.p.Max:
		return first
	case n >= c.p.Max:
		return c.p.Max
	case atEOF:
		return n
	}
	return 0
}

// Candidate returns the smallest n >= WindowSize such that the content
// decides a cut after buf[:n], or 0 if there is none in buf. The decision
// depends on buf[n-WindowSize:n] alone, so a slice that starts at least Min
// bytes before such an n, and has not been cut before it, is cut at n. This
// lets a caller find boundaries ahead of the slice start it does not know
// yet, and so chunk one stream on several cores (see Cut for the rest).
func (c *Chunker) Candidate(buf []byte) int {
	if len(buf) < WindowSize {
		return 0
	}
	return c.scan(buf, WindowSize)
}

// scan returns the first boundary n in [from, len(buf)], or 0 if there is
// none; from >= WindowSize. Boundary n is decided by the digest of
// buf[n-64:n] alone, which is what makes Cut pure and streaming-safe.
//
// No byte before from-WindowSize influences the result, so those bytes are
// not hashed at all: the window is primed from the WindowSize bytes before
// from (for Cut, from is Min).
func (c *Chunker) scan(buf []byte, from int) int {
	// One heap block per call: Encrypt takes slices through an interface, so
	// the scratch escapes; allocating it per digest would cost more than AES.
	var scratch [aes.BlockSize]byte
	d := c.prime(buf[from-WindowSize : from])
	if c.isCut(d, &scratch) {
		return from
	}
	i := 0 // windows rolled past from
	if c.vector {
		var cut int
		if cut, i, d = c.scanVector(buf, from, d); cut > 0 {
			return cut
		}
	}
	return c.roll(buf, from, i, d, &scratch)
}

// roll is scan's loop on one core from the window i past from on; d is the
// digest of the window before it.
func (c *Chunker) roll(buf []byte, from, i int, d uint64, scratch *[aes.BlockSize]byte) int {
	// Roll: the digest of buf[n-63:n+1] from that of buf[n-64:n]. With a
	// 64-byte window the leaving byte has been rotated 64 times, i.e. not at
	// all, so it is removed by a plain XOR of its table entry.
	out := buf[from-WindowSize+i : len(buf)-WindowSize]
	in := buf[from+i:]
	// Equal lengths let the compiler drop bounds checks in the loop, and
	// copying the keys to locals keeps them in registers.
	in = in[:len(out)]
	t, mk, t1 := &c.table, c.mix, c.t1
	for j, b := range in {
		d = (d<<1 | d>>63) ^ (t[out[j]] ^ t[b])
		if mk.apply(d) < t1 && c.confirm(d, scratch) {
			return len(buf) - len(in) + j + 1
		}
	}
	return 0
}

// prime computes the buzhash64 digest of a full window from scratch, exactly
// as rollinghash/buzhash64.Write does.
func (c *Chunker) prime(window []byte) uint64 {
	var d uint64
	for _, b := range window {
		d = (d<<1 | d>>63) ^ c.table[b]
	}
	return d
}

// isCut is the full cut decision for digest d.
func (c *Chunker) isCut(d uint64, scratch *[aes.BlockSize]byte) bool {
	return c.mix.apply(d) < c.t1 && c.confirm(d, scratch)
}
