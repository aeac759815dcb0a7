package chunker

import (
	"encoding/binary"
	"slices"
	"testing"
)

// FuzzCutEdges compares the vector path with the scalar loop at the edges:
// buffer lengths around Min and Max, start offsets off 8- and 64-byte
// alignment, lengths not a multiple of the lanes' stride, sparse
// pre-filter hits (long scans over several stretches), and streaming in
// odd-sized pieces against one buffer.
func FuzzCutEdges(f *testing.F) {
	f.Add(uint16(0), uint16(100), uint16(1000), []byte("hello"), uint64(1), uint16(0), uint8(3), uint8(0), uint16(7))
	f.Add(uint16(64), uint16(1), uint16(1), make([]byte, 300), uint64(2), uint16(9000), uint8(1), uint8(1), uint16(1))
	f.Add(uint16(200), uint16(300), uint16(50), randBytes(3, 4000), uint64(3), uint16(30000), uint8(63), uint8(2), uint16(513))
	f.Fuzz(func(t *testing.T, minOff, avgOff, maxOff uint16, head []byte, seed uint64, extra uint16, align uint8, sparse uint8, piece uint16) {
		p := Params{Min: WindowSize + int(minOff%2048)}
		p.Avg = p.Min + 1 + int(avgOff%4096)
		p.Max = p.Avg + 1 + int(maxOff%20000)
		var key [32]byte
		binary.LittleEndian.PutUint64(key[:], seed)
		vc := mustNew(t, key, p)
		switch sparse % 3 {
		case 1:
			vc.t1 = 1 << 52
		case 2:
			vc.t1 = 0 // no cut at all: every scan runs to its end
		}
		sc := *vc
		sc.vector = false
		// Data: the fuzzer's bytes, then pseudo-random ones, at an odd
		// offset in a larger buffer.
		n := len(head) + int(extra)%(3*8*laneRows+200)
		back := make([]byte, int(align%64)+n)
		data := back[int(align%64):]
		copy(data, head)
		copy(data[len(head):], randBytes(seed, n-len(head)))

		lens := []int{p.Min - 1, p.Min, p.Min + 1, p.Max - 1, p.Max, p.Max + 1, n, n - 1, n - 7}
		for _, l := range lens {
			if l < 0 || l > n {
				continue
			}
			for _, eof := range []bool{false, true} {
				if v, s := vc.Cut(data[:l], eof), sc.Cut(data[:l], eof); v != s {
					t.Fatalf("%+v len %d eof %v: vector %d, scalar %d", p, l, eof, v, s)
				}
			}
			if v, s := vc.Candidate(data[:l]), sc.Candidate(data[:l]); v != s {
				t.Fatalf("%+v len %d: Candidate vector %d, scalar %d", p, l, v, s)
			}
		}
		// Streaming: odd-sized pieces against one buffer.
		step := max(1+int(piece)%4099, n/256) // bounded rescans
		var want, got []int
		for pos := 0; pos < n; {
			k := sc.Cut(data[pos:], true)
			pos += k
			want = append(want, pos)
		}
		var pending []byte
		pos, fed := 0, 0
		for {
			eof := fed == n
			k := vc.Cut(pending, eof)
			if k == 0 {
				if eof {
					break
				}
				m := min(step, n-fed)
				pending = append(pending, data[fed:fed+m]...)
				fed += m
				continue
			}
			pos += k
			got = append(got, pos)
			pending = pending[k:]
		}
		if !slices.Equal(got, want) {
			t.Fatalf("%+v, pieces of %d: streamed %v, one buffer %v", p, step, got, want)
		}
	})
}
