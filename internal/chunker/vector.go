package chunker

import (
	"encoding/binary"
	"math/bits"
)

// The vector scan computes exactly what scan's scalar loop does, faster:
// rollAVX512 rolls the digest and applies the keyed mix to 8 windows per
// instruction, and the pre-filter hits are confirmed 8 at a time by
// encrypt8, whose blocks are independent, instead of one AES call per hit
// that waits out all 14 rounds. TestRollAVX512 compares every digest and
// pre-filter bit with the scalar roll, TestVectorScan compares the cuts of
// the two paths, and TestGoldenCuts pins them.

// span is the number of windows scanVector rolls per rollAVX512 call: their
// digests take 2 KiB of stack.
const span = 256

// hits are pre-filter hits waiting for AES, in window order.
type hits struct {
	n   int
	at  [8]int // the window's index past from
	blk [8][16]byte
}

// scanVector is scan's loop on the vector unit for the first multiple of 8
// windows past from; d is the digest of the window ending at from. It
// returns the boundary if it finds one, else how many windows it rolled and
// the last digest.
func (c *Chunker) scanVector(buf []byte, from int, d uint64) (cut, rolled int, last uint64) {
	var ds [span]uint64
	var mask [span / 64]uint64
	var h hits
	win := buf[from-WindowSize:]
	todo := (len(buf) - from) &^ 7
	for i := 0; i < todo; i += span {
		k := min(span, todo-i)
		clear(mask[:])
		d = rollAVX512(&c.table, &c.mix, c.t1, d, &win[i], k, &ds[0], &mask[0])
		for w, m := range mask[:(k+63)/64] {
			for ; m != 0; m &= m - 1 {
				j := 64*w + bits.TrailingZeros64(m)
				h.blk[h.n] = [16]byte{}
				binary.LittleEndian.PutUint64(h.blk[h.n][:8], ds[j])
				h.at[h.n] = i + j + 1
				if h.n++; h.n == len(h.at) {
					if at := c.confirmHits(&h); at > 0 {
						return from + at, 0, 0
					}
				}
			}
		}
		// Rolling on past a pending hit is wasted if AES confirms it: bound
		// the waste where hits are rare (pre-filter rates below 1/64).
		if h.n > 0 && i+k-h.at[0] >= 4*span {
			if at := c.confirmHits(&h); at > 0 {
				return from + at, 0, 0
			}
		}
	}
	if at := c.confirmHits(&h); at > 0 {
		return from + at, 0, 0
	}
	return 0, todo, d
}

// confirmHits runs the AES stage on h's hits and empties h. It returns the
// first hit that AES confirms, or 0.
func (c *Chunker) confirmHits(h *hits) int {
	if h.n == 0 {
		return 0
	}
	encrypt8(&c.xk, &h.blk)
	n := h.n
	h.n = 0
	for k := range n {
		if binary.LittleEndian.Uint64(h.blk[k][:8]) < c.t2 {
			return h.at[k]
		}
	}
	return 0
}
