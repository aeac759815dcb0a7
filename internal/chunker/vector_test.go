package chunker

import (
	"crypto/aes"
	"math/rand/v2"
	"slices"
	"testing"
)

// TestRollAVX512 compares the vector roll with the scalar one at many
// offsets and for lengths below, at and above the lookups' lead, with
// pre-filter rates from never to always.
func TestRollAVX512(t *testing.T) {
	if !haveVector {
		t.Skip("no AVX-512 on this CPU")
	}
	data := randBytes(30, 1<<16)
	for _, rate := range []float64{0, 1.0 / 64, 1.0 / 2, 1} {
		c := mustNew(t, testKey(30), DefaultParams())
		c.t1 = toThreshold(rate)
		if rate == 0 {
			c.t1 = 0
		}
		for _, n := range []int{8, 16, 24, 32, 40, 64, 256, 1024} {
			for off := 0; off+n+WindowSize <= len(data); off += 997 {
				win := data[off : off+n+WindowSize]
				d := c.prime(data[max(off-WindowSize, 0):off]) ^ uint64(off)
				ds, mask := make([]uint64, n), make([]uint64, (n+63)/64)
				last := rollAVX512(&c.table, &c.mix, c.t1, d, &win[0], n, &ds[0], &mask[0])
				wantDS, wantMask := make([]uint64, n), make([]uint64, (n+63)/64)
				for i := range n {
					d = (d<<1 | d>>63) ^ c.table[win[i]] ^ c.table[win[i+WindowSize]]
					wantDS[i] = d
					if c.mix.apply(d) < c.t1 {
						wantMask[i/64] |= 1 << (i % 64)
					}
				}
				if !slices.Equal(ds, wantDS) || !slices.Equal(mask, wantMask) || last != d {
					t.Fatalf("rate %v n %d off %d: vector roll differs from scalar", rate, n, off)
				}
			}
		}
	}
}

// TestExpandKey256 checks encrypt8 under expandKey256 against crypto/aes
// for many random keys, which exercises every S-box entry.
func TestExpandKey256(t *testing.T) {
	if !haveVector {
		t.Skip("no AVX-512 on this CPU")
	}
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

// TestVectorScan compares scan, which takes the vector path on this CPU,
// with the scalar loop alone: for random, constant and periodic data, many
// window starts and buffer lengths, and cut rates from 1/Max to every
// window (there the AES batches fill up at once).
func TestVectorScan(t *testing.T) {
	if !haveVector {
		t.Skip("no AVX-512 on this CPU")
	}
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
			c := mustNew(t, testKey(31), p)
			for range 2000 {
				from := WindowSize + r.IntN(2*span)
				end := from + r.IntN(min(4*span, len(data)-from)+1)
				off := r.IntN(len(data) - end + 1)
				buf := data[off : off+end]
				var scratch [aes.BlockSize]byte
				d := c.prime(buf[from-WindowSize : from])
				want := from
				if !c.isCut(d, &scratch) {
					want = c.roll(buf, from, 0, d, &scratch)
				}
				if got := c.scan(buf, from); got != want {
					t.Fatalf("%s %+v: buf %d..%d from %d: vector scan %d, scalar %d", name, p, off, off+end, from, got, want)
				}
			}
		}
	}
}
