package kv

import (
	"slices"

	"github.com/sealkv/kv/internal/chunker"
)

// The chunker scans every byte it does not skip, on one goroutine per Put
// unless told where the slices lie: it is the only serial stage of Put and
// bounds the dedup path. So each block but the first is chunked ahead, on its
// own goroutine, from its first cut candidate on, before the cutter knows
// where the slice that runs into the block starts. Chains of content-defined
// cuts meet within a slice or two (a cut is the first candidate at least Min
// after the previous one), and from the boundary where the cutter's chain
// meets a block's chain the cutter takes its cuts instead of scanning. The
// result is exactly that of a serial run, which TestSpeculativeCuts checks.

// ahead is what speculate found in one block.
type ahead struct {
	off, end int64 // the block's ClearText span
	// cuts is a chain of boundaries (ascending offsets): cuts[0] is the
	// first cut candidate whose window lies inside the block, and if a
	// slice starts at cuts[i], the next starts at cuts[i+1]. Unless the
	// block ends the ClearText, no window ending in [last+Min, end] is a
	// candidate; empty cuts means none ending in [off+WindowSize, end] is.
	cuts []int64
}

// speculate chunks b ahead of the cutter. It runs on its own goroutine and
// holds a use of b.
func (p *put) speculate(b *block) {
	defer b.release()
	defer close(b.spec)
	b.ahead = p.chunkAhead(b.b[b.head:], b.off, b.eof)
}

// chunkAhead chunks data, ClearText at offset off, from its first cut
// candidate on.
func (p *put) chunkAhead(data []byte, off int64, eof bool) *ahead {
	a := &ahead{off: off, end: off + int64(len(data))}
	pos := p.db.chunker.Candidate(data)
	if pos == 0 {
		return a
	}
	a.cuts = append(a.cuts, off+int64(pos))
	for {
		n := p.db.chunker.Cut(data[pos:], eof)
		if n == 0 {
			return a
		}
		pos += n
		a.cuts = append(a.cuts, off+int64(pos))
	}
}

// hinted returns Cut(buf, eof) for the slice at offset pos if the blocks
// chunked ahead determine it, and ok false if they do not.
func (p *put) hinted(known []*ahead, pos int64, buf []byte, eof bool) (n int, ok bool) {
	for i, a := range known {
		j, found := slices.BinarySearch(a.cuts, pos)
		switch {
		case !found:
			continue
		case j+1 < len(a.cuts):
			return int(a.cuts[j+1] - pos), true
		case i+1 < len(known) && known[i+1].off == a.end:
			return p.straddle(known[i+1], pos, buf, eof)
		}
		return 0, false
	}
	return 0, false
}

// straddle cuts the slice at pos, the last of a block's chain, so no window
// ending in [pos+Min, next.off] is a candidate. What is left to scan are the
// windows that straddle the two blocks; after them, next's first candidate
// is the first.
func (p *put) straddle(next *ahead, pos int64, buf []byte, eof bool) (int, bool) {
	pr := p.db.chunker.Params()
	off := next.off
	if pos+int64(pr.Min) > off+chunker.WindowSize || next.end < off+chunker.WindowSize-1 {
		return 0, false
	}
	lo := max(pos+int64(pr.Min), off+1) // the first window end not known clear
	var e int64
	if k := p.db.chunker.Candidate(buf[lo-chunker.WindowSize-pos : off+chunker.WindowSize-1-pos]); k > 0 {
		e = lo - chunker.WindowSize + int64(k)
	} else if len(next.cuts) > 0 {
		e = next.cuts[0]
	}
	first := 0
	if e > 0 {
		first = int(e - pos)
	}
	n := p.db.chunker.Bound(first, len(buf), eof)
	return n, n > 0
}
