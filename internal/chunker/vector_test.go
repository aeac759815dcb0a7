package chunker

import (
	"crypto/aes"
	"encoding/hex"
	"math/rand/v2"
	"os"
	"testing"
)

// needVector skips a test of the vector code on a CPU without it, or fails
// it if SEALKV_REQUIRE_VECTOR is set (CI sets it where the CPU has AVX-512,
// so the vector tests cannot silently stop running).
func needVector(t *testing.T) {
	t.Helper()
	if haveVector {
		return
	}
	if os.Getenv("SEALKV_REQUIRE_VECTOR") != "" {
		t.Fatal("SEALKV_REQUIRE_VECTOR is set but the vector code does not run on this CPU")
	}
	t.Skip("no AVX-512 on this CPU")
}

// laneDigests is rollLanes' ds computed one byte at a time: each lane
// rolled from zero, with no leaving byte in its first WindowSize rows.
func laneDigests(c *Chunker, win []byte, stride, n int) []uint64 {
	ds := make([]uint64, 8*n)
	for l := range 8 {
		var d uint64
		for row := range n {
			d = (d<<1 | d>>63) ^ c.table[win[l*stride+row]]
			if row >= WindowSize {
				d ^= c.table[win[l*stride+row-WindowSize]]
			}
			ds[8*row+l] = d
		}
	}
	return ds
}

// TestRollLanes compares each of rollLanes' lanes with a digest rolled one
// byte at a time from zero, for row counts around the lookups' lead and
// the 64 priming rows, strides that make the lanes overlap or leave gaps,
// and pre-filter rates from never to always.
func TestRollLanes(t *testing.T) {
	needVector(t)
	c := mustNew(t, testKey(32), DefaultParams())
	data := randBytes(32, 1<<16)
	r := rand.New(rand.NewPCG(7, 8))
	for _, n := range []int{64, 65, 68, 72, 100, 128, 517, 2048 + 64} {
		for _, stride := range []int{1, 64, 300, n} {
			off := r.IntN(len(data) - 7*stride - n + 1)
			win := data[off:]
			for _, t1 := range []uint64{0, toThreshold(1.0 / 64), toThreshold(1.0 / 2), ^uint64(0)} {
				ls := make([]uint64, 8*(n+WindowSize))
				ds := make([]uint64, 8*n)
				mask := make([]byte, n)
				rollLanes(&c.table, &c.mix, t1, &win[0], stride, n, &ls[0], &ds[0], &mask[0])
				want := laneDigests(c, win, stride, n)
				for l := range 8 {
					for row := range n {
						d := want[8*row+l]
						hit := c.mix.apply(d) < t1
						if ds[8*row+l] != d || (mask[row]>>l)&1 == 1 != hit || ls[8*(row+WindowSize)+l] != c.table[win[l*stride+row]] {
							t.Fatalf("n %d stride %d t1 %#x: lane %d row %d differs from the scalar roll", n, stride, t1, l, row)
						}
					}
				}
			}
		}
	}
}

// TestRollLanesBounds checks that rollLanes writes nothing around ds, mask
// and the lookups it owns (ls from row 64 on).
func TestRollLanesBounds(t *testing.T) {
	needVector(t)
	c := mustNew(t, testKey(8), DefaultParams())
	data := randBytes(8, 8*200)
	const guard = 0x5a
	for _, n := range []int{64, 65, 71, 72, 128, 199} {
		ls := make([]uint64, 8*(n+WindowSize)+16)
		ds := make([]uint64, 8*n+16)
		mask := make([]byte, n+16)
		for _, b := range [][]uint64{ls, ds} {
			for i := range b {
				b[i] = guard
			}
		}
		for i := range mask {
			mask[i] = guard
		}
		clear(ls[8 : 8+8*WindowSize])
		rollLanes(&c.table, &c.mix, ^uint64(0), &data[0], 200, n, &ls[8], &ds[8], &mask[8])
		for i := range 8 {
			if ls[i] != guard || ls[8+8*(n+WindowSize)+i] != guard || ds[i] != guard || ds[8+8*n+i] != guard || mask[i] != guard || mask[8+n+i] != guard {
				t.Fatalf("n %d: wrote outside ls, ds or mask", n)
			}
		}
		for i := range 8 * WindowSize {
			if ls[8+i] != 0 {
				t.Fatalf("n %d: wrote ls[%d], which holds the leaving bytes' lookups of the first rows", n, i)
			}
		}
	}
}

// TestExpandKey256 checks encrypt8 under expandKey256 against crypto/aes
// for many random keys, which exercises every S-box entry.
func TestExpandKey256(t *testing.T) {
	needVector(t)
	r := rand.New(rand.NewPCG(1, 2))
	for range 2000 {
		var key [32]byte
		for i := range key {
			key[i] = byte(r.Uint32())
		}
		ref, err := aes.NewCipher(key[:])
		if err != nil {
			t.Fatal(err)
		}
		xk := expandKey256(key)
		var b, want [8][16]byte
		for i := range b {
			for j := range b[i] {
				b[i][j] = byte(r.Uint32())
			}
			ref.Encrypt(want[i][:], b[i][:])
		}
		encrypt8(&xk, &b)
		if b != want {
			t.Fatalf("key %x: encrypt8 %x, crypto/aes %x", key, b, want)
		}
	}
}

// TestExpandKey256FIPS197 checks the key schedule against the AES-256
// expansion example of FIPS 197, Appendix A.3. It needs no CPU feature.
func TestExpandKey256FIPS197(t *testing.T) {
	key, _ := hex.DecodeString("603deb1015ca71be2b73aef0857d77811f352c073b6108d72d9810a30914dff4")
	xk := expandKey256([32]byte(key))
	for _, w := range []struct {
		i    int
		want string
	}{{8, "9ba35411"}, {9, "8e6925af"}, {12, "a8b09c1a"}, {16, "d59aecb8"}, {20, "b5a9328a"}, {52, "cafaaae3"}, {56, "fe4890d1"}, {59, "706c631e"}} {
		if got := hex.EncodeToString(xk[4*w.i : 4*w.i+4]); got != w.want {
			t.Errorf("w[%d] = %s, FIPS 197 A.3 %s", w.i, got, w.want)
		}
	}
}

// TestVectorScan compares Cut and Candidate on the vector path with the
// same Chunker on the scalar loop alone: for random, constant and periodic
// data, many window starts, buffer lengths up to 2048 and, fewer, up to
// three times 8*laneRows (so both partial and full lane stretches, and
// the scalar loop's remainder), cut rates from 1/Max to every window (there
// the AES batches fill up at once and several hits of a batch confirm), and
// with sparse pre-filter hits (batches left part full).
func TestVectorScan(t *testing.T) {
	needVector(t)
	periodic := make([]byte, 1<<18)
	for i := range periodic {
		periodic[i] = byte(i % 251)
	}
	inputs := map[string][]byte{
		"random":   randBytes(31, 1<<18),
		"zeros":    make([]byte, 1<<18),
		"periodic": periodic,
	}
	params := []Params{
		DefaultParams(),
		{Min: 64, Avg: 65, Max: 70},
		{Min: 64, Avg: 100, Max: 3000},
		{Min: 200, Avg: 700, Max: 3000},
		{Min: 1000, Avg: 4000, Max: 8000},
		{Min: 64, Avg: 40000, Max: 100000},
	}
	r := rand.New(rand.NewPCG(3, 4))
	for name, data := range inputs {
		for _, p := range params {
			for _, sparse := range []bool{false, true} {
				vc := mustNew(t, testKey(31), p)
				if sparse {
					vc.t1 = 1 << 52 // a pre-filter hit per 4096 windows
				}
				sc := *vc
				sc.vector = false
				for k := range 1030 {
					most := 2048
					if k >= 1000 {
						most = 3*8*laneRows + 100
					}
					end := r.IntN(min(most, len(data)) + 1)
					off := r.IntN(len(data) - end + 1)
					buf := data[off : off+end]
					eof := r.IntN(2) == 0
					if got, want := vc.Cut(buf, eof), sc.Cut(buf, eof); got != want {
						t.Fatalf("%s %+v sparse %v: Cut(buf[%d:%d], %v) = %d on the vector path, %d on the scalar", name, p, sparse, off, off+end, eof, got, want)
					}
					if got, want := vc.Candidate(buf), sc.Candidate(buf); got != want {
						t.Fatalf("%s %+v sparse %v: Candidate(buf[%d:%d]) = %d on the vector path, %d on the scalar", name, p, sparse, off, off+end, got, want)
					}
				}
			}
		}
	}
}
