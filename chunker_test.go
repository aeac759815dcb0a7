package kv

import (
	"bytes"
	"fmt"
	"testing"

	"github.com/sealkv/kv/internal/chunker"
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

// FuzzStraddle checks the cut across two blocks against Cut for arbitrary
// bytes, block boundaries and slice starts.
//
//	go test -fuzz FuzzStraddle -run '^$' .
func FuzzStraddle(f *testing.F) {
	db := openDB(f, f.TempDir(), smallOpts(newKeys(f)))
	p := &put{db: db}
	pr := db.chunker.Params()
	f.Add(bytes.Repeat([]byte{1, 2, 3, 4, 5, 6, 7}, 700), uint32(3000), uint32(900), false)
	f.Add(randBytes(4000), uint32(2500), uint32(1000), true)
	f.Fuzz(func(t *testing.T, data []byte, off, back uint32, eof bool) {
		if len(data) < 2*chunker.WindowSize {
			return
		}
		o := int(off%uint32(len(data)-chunker.WindowSize)) + 1
		pos := o - int(back%uint32(pr.Max))
		if pos < 0 || db.chunker.Cut(data[pos:o], false) != 0 {
			return // not the end of a chain that needs more bytes
		}
		next := p.chunkAhead(data[o:], int64(o), eof)
		got, ok := p.straddle(next, int64(pos), data[pos:], eof)
		if !ok {
			return
		}
		if want := db.chunker.Cut(data[pos:], eof); got != want {
			t.Fatalf("block at %d, slice at %d, eof %v: straddle %d, Cut %d", o, pos, eof, got, want)
		}
	})
}
