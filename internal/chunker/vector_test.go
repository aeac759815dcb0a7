package chunker

import (
	"crypto/aes"
	"encoding/hex"
	"math/rand/v2"
	"os"
	"slices"
	"testing"
	"unsafe"
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

// rollScalar is rollAVX512's result computed one window at a time.
func rollScalar(c *Chunker, t1, d uint64, win []byte, n int) (ds, mask []uint64, last uint64) {
	ds, mask = make([]uint64, n), make([]uint64, (n+63)/64)
	for i := range n {
		d = (d<<1 | d>>63) ^ c.table[win[i]] ^ c.table[win[i+WindowSize]]
		ds[i] = d
		if c.mix.apply(d) < t1 {
			mask[i/64] |= 1 << (i % 64)
		}
	}
	return ds, mask, d
}

// TestRollAVX512 compares the vector roll with the scalar one at many
// offsets and for lengths below, at and above the lookups' lead, with
// pre-filter rates from never to always, and with t1 exactly at a digest's
// mix value and one above it (the compare is "less than").
func TestRollAVX512(t *testing.T) {
	needVector(t)
	data := randBytes(30, 1<<16)
	c := mustNew(t, testKey(30), DefaultParams())
	r := rand.New(rand.NewPCG(5, 6))
	for _, n := range []int{0, 8, 16, 24, 32, 40, 64, 256, 1024} {
		for off := 0; off+n+WindowSize <= len(data); off += 997 {
			win := data[off : off+n+WindowSize]
			d := c.prime(data[max(off-WindowSize, 0):off]) ^ uint64(off)
			t1s := []uint64{0, toThreshold(1.0 / 64), toThreshold(1.0 / 2), ^uint64(0)}
			if n > 0 {
				all, _, _ := rollScalar(c, 0, d, win, n)
				edge := c.mix.apply(all[r.IntN(n)])
				t1s = append(t1s, edge, edge+1)
			}
			for _, t1 := range t1s {
				wantDS, wantMask, wantLast := rollScalar(c, t1, d, win, n)
				ds, mask := make([]uint64, n+1), make([]uint64, len(wantMask)+1)
				last := rollAVX512(&c.table, &c.mix, t1, d, &win[0], n, &ds[0], &mask[0])
				if !slices.Equal(ds[:n], wantDS) || !slices.Equal(mask[:len(wantMask)], wantMask) || last != wantLast {
					t.Fatalf("t1 %#x n %d off %d: vector roll differs from scalar", t1, n, off)
				}
			}
		}
	}
}

// TestRollAVX512Bounds checks that rollAVX512 writes nothing around ds and
// the mask bytes it owns.
func TestRollAVX512Bounds(t *testing.T) {
	needVector(t)
	c := mustNew(t, testKey(8), DefaultParams())
	data := randBytes(8, span+WindowSize)
	const guard = 0x5a
	for n := 0; n <= span; n += 8 {
		ds := make([]uint64, n+16)
		mb := make([]byte, span/8+16)
		for i := range ds {
			ds[i] = guard
		}
		for i := range mb {
			mb[i] = guard
		}
		rollAVX512(&c.table, &c.mix, ^uint64(0), 0, &data[0], n, &ds[8], (*uint64)(unsafe.Pointer(&mb[8])))
		for i := range 8 {
			if ds[i] != guard || ds[8+n+i] != guard {
				t.Fatalf("n %d: wrote outside ds", n)
			}
		}
		for i := range mb {
			if (i < 8 || i >= 8+n/8) && mb[i] != guard {
				t.Fatalf("n %d: wrote mask byte %d", n, i-8)
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
// data, many window starts and buffer lengths up to 8 spans, and cut rates
// from 1/Max to every window (there the AES batches fill up at once), and
// with sparse pre-filter hits (there pending hits are confirmed by age).
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
				for range 1000 {
					end := r.IntN(min(8*span, len(data)) + 1)
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
