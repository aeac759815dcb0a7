package chunker

import (
	"encoding/binary"
	"testing"
)

// FuzzCut checks, for valid random params, random data and random atEOF,
// that Cut never panics, obeys its bounds and is pure: the same answer twice,
// the same answer on a fresh Chunker and on the scalar loop (Candidate too),
// and a boundary never moves when more bytes follow.
func FuzzCut(f *testing.F) {
	f.Add(uint16(0), uint16(100), uint16(1000), []byte("hello"), false, uint64(1))
	f.Add(uint16(64), uint16(1), uint16(1), make([]byte, 300), true, uint64(2))
	f.Add(uint16(200), uint16(300), uint16(50), randBytes(3, 4000), false, uint64(3))
	f.Add(uint16(1000), uint16(3000), uint16(9000), randBytes(4, 20000), true, uint64(4))
	f.Fuzz(func(t *testing.T, minOff, avgOff, maxOff uint16, data []byte, atEOF bool, seed uint64) {
		// Map the inputs onto valid params small enough for the data to
		// reach Max now and then.
		p := Params{Min: WindowSize + int(minOff%4096)}
		p.Avg = p.Min + 1 + int(avgOff%8192)
		p.Max = p.Avg + 1 + int(maxOff%16384)
		var key [32]byte
		binary.LittleEndian.PutUint64(key[:], seed)
		c := mustNew(t, key, p)

		n := c.Cut(data, atEOF)
		checkCut(t, p, data, atEOF, n)
		if again := c.Cut(data, atEOF); again != n {
			t.Fatalf("Cut not deterministic: %d then %d", n, again)
		}
		if fresh := mustNew(t, key, p).Cut(data, atEOF); fresh != n {
			t.Fatalf("Cut differs across Chunkers with one key: %d vs %d", n, fresh)
		}
		// The vector path, where this CPU has it, against the scalar loop.
		scalar := *c
		scalar.vector = false
		if s := scalar.Cut(data, atEOF); s != n {
			t.Fatalf("Cut = %d, scalar loop %d", n, s)
		}
		if v, s := c.Candidate(data), scalar.Candidate(data); v != s {
			t.Fatalf("Candidate = %d, scalar loop %d", v, s)
		}
		// A content-defined boundary (not forced by Max or EOF) must stay
		// put when the buffer grows, and a longer buffer must find it.
		if n > 0 && n < p.Max && !(atEOF && n == len(data)) {
			longer := append(append([]byte(nil), data...), data...)
			if m := c.Cut(longer, false); m != n {
				t.Fatalf("boundary %d moved to %d when bytes were appended", n, m)
			}
		}
	})
}

func checkCut(t *testing.T, p Params, data []byte, atEOF bool, n int) {
	t.Helper()
	switch {
	case len(data) == 0 && n != 0:
		t.Fatalf("Cut(empty) = %d", n)
	case n < 0 || n > min(len(data), p.Max):
		t.Fatalf("Cut = %d outside [0, min(%d, %d)]", n, len(data), p.Max)
	case n == 0 && len(data) > 0 && (atEOF || len(data) >= p.Max):
		t.Fatalf("Cut = 0 with atEOF=%v, len %d, Max %d", atEOF, len(data), p.Max)
	case n > 0 && n < p.Min && !(atEOF && n == len(data)):
		t.Fatalf("Cut = %d below Min %d (len %d, atEOF %v)", n, p.Min, len(data), atEOF)
	}
}
