//go:build unix

package chunker

import (
	"encoding/binary"
	"math/rand/v2"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/sealkv/kv/internal/bufpool"
)

// poisonScratch hands bufpool a lanes-sized buffer full of random bytes,
// so that the next scanVector (bufpool's free list is LIFO) gets scratch
// that is not fresh zeroed memory, as it would after Put or Get used it.
// (A constant byte would not do: the XOR of the 64 rotations of a word
// with an even number of set bits is zero, and would cancel out.)
func poisonScratch() {
	b := bufpool.Get(lanesSize)
	b = b[:cap(b)]
	poisonRand.Read(b)
	bufpool.Put(b)
}

var poisonRand = rand.NewChaCha8([32]byte{42})

// craftBlock returns a 64-byte window whose digest passes the pre-filter t1
// with an AES value as low as a search finds, and that value.
func craftBlock(c *Chunker, t1 uint64) (blk [WindowSize]byte, a uint64) {
	r := rand.New(rand.NewPCG(11, 12))
	var scratch [16]byte
	a = ^uint64(0)
	var w [WindowSize]byte
	for range 1 << 18 {
		for k := 0; k < WindowSize; k += 8 {
			binary.LittleEndian.PutUint64(w[k:], r.Uint64())
		}
		d := c.prime(w[:])
		if c.mix.apply(d) >= t1 {
			continue
		}
		if v := c.prfValue(d, &scratch); v < a {
			blk, a = w, v
		}
	}
	return blk, a
}

// stretch is one scanLanes call: windows i+1 to i+8*rows past from.
type stretch struct{ i, rows int }

// stretchLayouts are window counts past from with the stretches scanVector
// must split them into (laneRows 1024, at least 64 rows, rows a multiple of
// 8) and the windows left to the scalar loop.
var stretchLayouts = []struct {
	windows   int
	stretches []stretch
	rem       int
}{
	{511, nil, 511},
	{512, []stretch{{0, 64}}, 0},
	{1000, []stretch{{0, 120}}, 40},
	{8192, []stretch{{0, 1024}}, 0},
	{8192 + 511, []stretch{{0, 1024}}, 511},
	{8192 + 519, []stretch{{0, 1024}, {8192, 64}}, 7},
	{2*8192 + 8*200 + 37, []stretch{{0, 1024}, {8192, 1024}, {16384, 200}}, 37},
}

// TestCutAtStretchEdges places a window that the cut decision
// confirms at the first and last window of every lane of every stretch, in
// the middle of lanes and in the scalar remainder, on random data whose
// other windows pass the pre-filter at 1/64 and are (almost all) rejected
// by AES, optionally with a second copy later in window order but earlier
// in row order (lane 7's first row). The scratch is poisoned before every
// vector scan. The scalar loop must cut exactly at the placed window, and
// the vector path where the scalar loop does.
func TestCutAtStretchEdges(t *testing.T) {
	needVector(t)
	vc := mustNew(t, testKey(41), Params{Min: 64, Avg: 4000, Max: 100000})
	vc.t1 = toThreshold(1.0 / 64)
	blk, a := craftBlock(vc, vc.t1)
	vc.t2 = a + 1
	sc := *vc
	sc.vector = false
	seed := uint64(0)
	for _, lay := range stretchLayouts {
		// The layout is what scanVector does (via its return value).
		if got := func() int {
			buf := randBytes(1, WindowSize+lay.windows)
			sv := *vc
			sv.t1 = 0 // no hits: scanVector rolls everything it can
			_, rolled, _ := sv.scanVector(buf, WindowSize, sv.prime(buf[:WindowSize]))
			return rolled
		}(); got != lay.windows-lay.rem {
			t.Fatalf("%d windows: scanVector rolled %d, want %d", lay.windows, got, lay.windows-lay.rem)
		}
		var targets []int
		for _, s := range lay.stretches {
			for l := range 8 {
				targets = append(targets, s.i+l*s.rows+1, s.i+l*s.rows+s.rows/2, s.i+(l+1)*s.rows)
			}
		}
		targets = append(targets, lay.windows-lay.rem+1, lay.windows)
		for _, from := range []int{WindowSize, 200} {
			for _, at := range targets {
				if at < 1 || at > lay.windows {
					continue
				}
				// A decoy in the same stretch's lane 7, first row, if it
				// comes after the target and does not overlap it.
				decoy := 0
				for _, s := range lay.stretches {
					if d := s.i + 7*s.rows + 1; at > s.i && at <= s.i+8*s.rows && d-at >= WindowSize {
						decoy = d
					}
				}
				for _, withDecoy := range []bool{false, true} {
					if withDecoy && decoy == 0 {
						continue
					}
					found := false
					for range 40 {
						seed++
						buf := randBytes(seed, from+lay.windows)
						copy(buf[from+at-WindowSize:], blk[:])
						if withDecoy {
							copy(buf[from+decoy-WindowSize:], blk[:])
						}
						want := sc.scan(buf, from)
						if want != from+at {
							continue // a random window cut first: try other data
						}
						found = true
						poisonScratch()
						if got := vc.scan(buf, from); got != want {
							t.Fatalf("%d windows, from %d, cut at window %d (decoy %d): vector path %d, scalar %d", lay.windows, from, at, decoy, got-from, want-from)
						}
						break
					}
					if !found {
						t.Fatalf("%d windows, from %d: could not place a cut at window %d", lay.windows, from, at)
					}
				}
			}
		}
	}
}

// TestLanesScratchNotZero runs TestVectorScan's kind of comparison with
// the scratch poisoned before every scan, so a missing clear of ls's first
// 64 rows (or a read of a ds or mask entry rollLanes did not write) shows.
func TestLanesScratchNotZero(t *testing.T) {
	needVector(t)
	data := randBytes(43, 1<<16)
	for _, p := range []Params{{Min: 64, Avg: 100, Max: 3000}, {Min: 64, Avg: 40000, Max: 100000}} {
		vc := mustNew(t, testKey(43), p)
		sc := *vc
		sc.vector = false
		r := rand.New(rand.NewPCG(43, 44))
		for range 300 {
			end := r.IntN(3*8*laneRows) + 1
			off := r.IntN(len(data) - end + 1)
			buf := data[off : off+end]
			poisonScratch()
			if got, want := vc.Candidate(buf), sc.Candidate(buf); got != want {
				t.Fatalf("%+v: Candidate(data[%d:%d]) = %d on the vector path with used scratch, %d on the scalar", p, off, off+end, got, want)
			}
		}
	}
}

// guarded returns two n-byte buffers, each in its own mapping between
// two inaccessible pages: front starts right after one, back ends right
// before one, so a read or write just outside either faults.
func guarded(t *testing.T, n int) (front, back []byte) {
	t.Helper()
	page := unix.Getpagesize()
	body := (n + page - 1) / page * page
	var bufs [2][]byte
	for k := range bufs {
		m, err := unix.Mmap(-1, 0, body+2*page, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_ANON|unix.MAP_PRIVATE)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { unix.Munmap(m) })
		if err := unix.Mprotect(m[:page], unix.PROT_NONE); err != nil {
			t.Fatal(err)
		}
		if err := unix.Mprotect(m[page+body:], unix.PROT_NONE); err != nil {
			t.Fatal(err)
		}
		if k == 0 {
			bufs[k] = m[page : page+n : page+n]
		} else {
			bufs[k] = m[page+body-n : page+body : page+body]
		}
	}
	return bufs[0], bufs[1]
}

func asUint64s(b []byte) []uint64 {
	return unsafe.Slice((*uint64)(unsafe.Pointer(unsafe.SliceData(b))), len(b)/8)
}

// TestRollLanesReadBounds runs rollLanes with its input window and
// its ls, ds and mask buffers each exactly as long as documented (win:
// 7*stride+n bytes; ls: 8*(n+64) words; ds: 8*n words; mask: n bytes),
// placed against an inaccessible page on either side: a read or write
// outside them faults. TestRollLanesBounds checks writes only, and only
// next to ls, ds and mask.
func TestRollLanesReadBounds(t *testing.T) {
	needVector(t)
	c := mustNew(t, testKey(44), DefaultParams())
	for _, n := range []int{64, 65, 72, 1088, 2112} {
		for _, stride := range []int{1, 64, n, 1000} {
			wl := 7*stride + n
			wf, wb := guarded(t, wl)
			lf, lb := guarded(t, 8*8*(n+WindowSize))
			df, db := guarded(t, 8*8*n)
			mf, mb := guarded(t, n)
			src := randBytes(uint64(n*stride), wl)
			copy(wf, src)
			copy(wb, src)
			for k, set := range [][4][]byte{{wf, lf, df, mf}, {wb, lb, db, mb}} {
				clear(set[1])
				ls, ds := asUint64s(set[1]), asUint64s(set[2])
				rollLanes(&c.table, &c.mix, c.t1, &set[0][0], stride, n, &ls[0], &ds[0], &set[3][0])
				// Check every lane's digests against a scalar roll.
				want := laneDigests(c, src, stride, n)
				for l := range 8 {
					for row := range n {
						if ds[8*row+l] != want[8*row+l] {
							t.Fatalf("n %d stride %d placement %d: lane %d row %d differs", n, stride, k, l, row)
						}
					}
				}
			}
		}
	}
}

// TestScanReadBounds runs scan on buffers that end (and start) at an
// inaccessible page, for the layouts above and two window starts: the
// vector path must read nothing outside buf.
func TestScanReadBounds(t *testing.T) {
	needVector(t)
	vc := mustNew(t, testKey(45), Params{Min: 64, Avg: 40000, Max: 100000})
	vc.t1 = 0 // no hits: every scan rolls to the end
	sc := *vc
	sc.vector = false
	for _, lay := range stretchLayouts {
		for _, from := range []int{WindowSize, 200} {
			f, b := guarded(t, from+lay.windows)
			src := randBytes(uint64(lay.windows), from+lay.windows)
			copy(f, src)
			copy(b, src)
			for _, buf := range [][]byte{f, b} {
				if got, want := vc.scan(buf, from), sc.scan(buf, from); got != want {
					t.Fatalf("%d windows from %d: vector %d, scalar %d", lay.windows, from, got, want)
				}
			}
		}
	}
}
