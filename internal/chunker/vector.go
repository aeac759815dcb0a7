package chunker

import (
	"encoding/binary"
	"math/bits"
	"unsafe"

	"github.com/sealkv/kv/internal/bufpool"
)

// The vector scan computes exactly what scan's scalar loop does, faster:
// rollLanes rolls 8 digests at once, each along its own stretch of the
// buffer, and applies the keyed mix to all 8 per instruction; the
// pre-filter hits are confirmed 8 at a time by encrypt8, whose blocks are
// independent, instead of one AES call per hit that waits out all 14
// rounds. TestRollLanes compares every digest and pre-filter bit with a
// scalar roll, TestVectorScan compares the cuts of the two paths, and
// TestGoldenCuts pins them.

// hits are pre-filter hits waiting for AES.
type hits struct {
	n   int
	at  [8]int // the window's index past from, plus one: the boundary
	blk [8][16]byte
}

// scanVector is scan's loop on the vector unit for as many windows past
// from as it rolls in lanes (all but fewer than 8*minLaneRows); d is the
// digest of the window ending at from. It returns the boundary if it finds
// one, else how many windows it rolled and the last digest.
func (c *Chunker) scanVector(buf []byte, from int, d uint64) (cut, rolled int, last uint64) {
	if (len(buf)-from)/8 < minLaneRows {
		return 0, 0, d
	}
	buf8 := bufpool.Get(lanesSize)
	defer bufpool.Put(buf8)
	lw := (*lanes)(unsafe.Pointer(unsafe.SliceData(buf8)))
	var h hits
	i := 0 // windows rolled past from
	for {
		rows := min(laneRows, (len(buf)-from-i)/8) &^ 7
		if rows < minLaneRows {
			return 0, i, d
		}
		if at := c.scanLanes(buf, from, i, rows, lw, &h); at > 0 {
			return from + at, 0, 0
		}
		d = lw.ds[8*(rows+WindowSize-1)+7] // lane 7's last window
		i += 8 * rows
	}
}

// laneRows is how many windows each of rollLanes' 8 lanes rolls per call,
// at most. Every lane first rolls in the WindowSize bytes before its
// windows, and a cut ends the scan with the later lanes' windows rolled for
// nothing: with the default sizes, about 6% and 2.5% more windows rolled
// than the cuts need (1024 rolled as fast as 2048 in BenchmarkCut, 512
// 5% slower). Below minLaneRows per lane the priming costs more than the
// scalar loop (the last windows of a scan go there).
const (
	laneRows    = 1024
	minLaneRows = 64
)

// lanes is rollLanes' scratch, 141 KiB: too large for the stack, and
// taken from bufpool, outside the Go heap. A sync.Pool of them raised the
// peak RSS of an 8 GiB Put by 2.5 MiB (the collector drops pooled objects
// and lets the heap grow to twice what is live), which the 64 MiB budget
// cannot spare.
type lanes struct {
	ls   [8 * (laneRows + 2*WindowSize)]uint64
	ds   [8 * (laneRows + WindowSize)]uint64
	mask [laneRows + WindowSize]byte
}

const lanesSize = int(unsafe.Sizeof(lanes{}))

// scanLanes rolls windows i to i+8*rows past from, lane l taking windows
// i+l*rows onwards, and confirms all their pre-filter hits. It
// returns the first cut (as the boundary's index past from) or 0, and
// leaves h empty. The hits go to AES row by row, not in window order: a
// cut is rare, and the mask read row by row costs fewer mispredicted
// branches than lane by lane.
func (c *Chunker) scanLanes(buf []byte, from, i, rows int, lw *lanes, h *hits) int {
	clear(lw.ls[:8*WindowSize])
	start := from + i - WindowSize // lane 0 first takes in the bytes of the window ending at from+i
	rollLanes(&c.table, &c.mix, c.t1, &buf[start], rows, rows+WindowSize, &lw.ls[0], &lw.ds[0], &lw.mask[0])
	first := 0
	// 8 rows at a time; rows below WindowSize are the lanes' priming.
	for r := WindowSize; r < rows+WindowSize; r += 8 {
		for m := binary.LittleEndian.Uint64(lw.mask[r:]); m != 0; m &= m - 1 {
			b := bits.TrailingZeros64(m)
			row, l := r+b>>3, b&7
			h.blk[h.n] = [16]byte{}
			binary.LittleEndian.PutUint64(h.blk[h.n][:8], lw.ds[8*row+l])
			h.at[h.n] = i + l*rows + row - WindowSize + 1
			if h.n++; h.n == len(h.at) {
				first = earliest(first, c.confirmHits(h))
			}
		}
	}
	return earliest(first, c.confirmHits(h))
}

// earliest returns the earlier of two cuts, 0 meaning none.
func earliest(a, b int) int {
	if a == 0 || (b > 0 && b < a) {
		return b
	}
	return a
}

// confirmHits runs the AES stage on h's hits and empties h. It returns the
// earliest hit that AES confirms, or 0.
func (c *Chunker) confirmHits(h *hits) int {
	if h.n == 0 {
		return 0
	}
	encrypt8(&c.xk, &h.blk)
	n := h.n
	h.n = 0
	first := 0
	for k := range n {
		if binary.LittleEndian.Uint64(h.blk[k][:8]) < c.t2 {
			first = earliest(first, h.at[k])
		}
	}
	return first
}
