package kv

import (
	"bytes"
	"fmt"
	"testing"
)

// TestStraddle checks the cut across two blocks against Cut, for every
// slice start the rule applies to (no candidate between Min and the second
// block) and every phase of the candidates against the block boundary.
func TestStraddle(t *testing.T) {
	db := openDB(t, t.TempDir(), smallOpts(newKeys(t)))
	p := &put{db: db}
	pr := db.chunker.Params()
	random := randBytes(1 << 20)
	n := db.chunker.Candidate(random)
	if n == 0 {
		t.Fatal("no cut candidate in 1 MiB of random bytes")
	}
	streams := map[string][]byte{"random": random[:256<<10]}
	for _, period := range []int{64, 65, 97, 130} {
		b := make([]byte, 256<<10)
		for i := range b {
			if b[i] = byte(i % period); i%period < 64 {
				b[i] = random[n-64+i%period]
			}
		}
		streams[fmt.Sprint("dense", period)] = b
	}
	// A window that is a candidate in a run of a byte value that is not:
	// the second block holds a single cut (less than Max follows it).
	for v := range 256 {
		single := bytes.Repeat([]byte{byte(v)}, 117<<10)
		if db.chunker.Candidate(single[:4096]) == 0 {
			copy(single[102<<10-64:], random[n-64:n])
			streams["single"] = single
			break
		}
	}
	applied := 0
	for name, data := range streams {
		for _, eof := range []bool{false, true} {
			for off := 100 << 10; off < 100<<10+131; off++ {
				next := p.chunkAhead(data[off:], int64(off), eof)
				// The rule applies from pos+Min <= off+64 on; a few hundred
				// starts before that see a candidate first, or are refused.
				for pos := off - pr.Min - 300; pos <= off-pr.Min+80; pos++ {
					if db.chunker.Cut(data[pos:off], false) != 0 {
						continue // a candidate before the block: not a chain's end
					}
					got, ok := p.straddle(next, int64(pos), data[pos:], eof)
					if !ok {
						continue
					}
					applied++
					if want := db.chunker.Cut(data[pos:], eof); got != want {
						t.Fatalf("%s, block at %d, slice at %d, eof %v: straddle %d, Cut %d", name, off, pos, eof, got, want)
					}
				}
			}
		}
	}
	if applied < 1000 {
		t.Fatalf("the rule applied only %d times", applied)
	}
}
