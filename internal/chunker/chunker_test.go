package chunker

import (
	"bytes"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/chmduquesne/rollinghash/buzhash64"
)

// randBytes returns n deterministic pseudo-random bytes for seed.
func randBytes(seed uint64, n int) []byte {
	var s [32]byte
	s[0], s[1] = byte(seed), byte(seed>>8)
	b := make([]byte, n)
	_, _ = rand.NewChaCha8(s).Read(b)
	return b
}

// testKey returns a fixed key distinct for each i.
func testKey(i byte) (k [32]byte) {
	for j := range k {
		k[j] = i ^ byte(j*7+1)
	}
	return k
}

func mustNew(t testing.TB, key [32]byte, p Params) *Chunker {
	t.Helper()
	c, err := New(key, p)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// boundaries chunks data in one buffer and returns the slice end offsets.
func boundaries(t testing.TB, c *Chunker, data []byte) []int {
	t.Helper()
	var ends []int
	for pos := 0; pos < len(data); {
		n := c.Cut(data[pos:], true)
		if n < 1 || n > c.p.Max || pos+n > len(data) {
			t.Fatalf("Cut at %d returned %d (remaining %d)", pos, n, len(data)-pos)
		}
		pos += n
		ends = append(ends, pos)
	}
	return ends
}

// TestDigestMatchesPackage checks the hand-written roll against
// rollinghash/buzhash64 with the derived table at every position.
func TestDigestMatchesPackage(t *testing.T) {
	c := mustNew(t, testKey(1), DefaultParams())
	data := randBytes(1, 1<<16)
	ref := buzhash64.NewFromUint64Array(c.table)
	_, _ = ref.Write(data[:WindowSize])
	d := c.prime(data[:WindowSize])
	for n := WindowSize; ; n++ {
		if d != ref.Sum64() {
			t.Fatalf("digest of window ending at %d: got %#x, package %#x", n, d, ref.Sum64())
		}
		if n == len(data) {
			break
		}
		ref.Roll(data[n])
		d = (d<<1 | d>>63) ^ c.table[data[n-WindowSize]] ^ c.table[data[n]]
	}
}

// TestScanMatchesReference checks the fast scan against a naive
// implementation that recomputes the package digest for every candidate.
func TestScanMatchesReference(t *testing.T) {
	p := Params{Min: 200, Avg: 700, Max: 3000}
	c := mustNew(t, testKey(2), p)
	data := randBytes(2, 1<<18)
	var scratch [16]byte
	for pos := 0; pos < len(data); {
		want := 0
		for n := p.Min; n < p.Max && pos+n <= len(data); n++ {
			h := buzhash64.NewFromUint64Array(c.table)
			_, _ = h.Write(data[pos+n-WindowSize : pos+n])
			if c.isCut(h.Sum64(), &scratch) {
				want = n
				break
			}
		}
		if want == 0 {
			want = min(p.Max, len(data)-pos)
		}
		if got := c.Cut(data[pos:], true); got != want {
			t.Fatalf("at %d: Cut = %d, reference = %d", pos, got, want)
		}
		pos += want
	}
}

func TestValidate(t *testing.T) {
	if err := DefaultParams().Validate(); err != nil {
		t.Fatalf("defaults: %v", err)
	}
	bad := []Params{
		{Min: 63, Avg: 100, Max: 200},
		{Min: 100, Avg: 100, Max: 200},
		{Min: 100, Avg: 200, Max: 200},
		{Min: 100, Avg: 200, Max: 64<<20 + 1},
		{},
	}
	for _, p := range bad {
		if err := p.Validate(); err == nil {
			t.Errorf("%+v: no error", p)
		}
		if _, err := New(testKey(0), p); err == nil {
			t.Errorf("New(%+v): no error", p)
		}
	}
}

func TestBoundsAndEOF(t *testing.T) {
	p := Params{Min: 1000, Avg: 4000, Max: 8000}
	c := mustNew(t, testKey(3), p)
	if got := c.Cut(nil, true); got != 0 {
		t.Errorf("Cut(empty, EOF) = %d", got)
	}
	if got := c.Cut(nil, false); got != 0 {
		t.Errorf("Cut(empty) = %d", got)
	}
	short := randBytes(3, p.Min-1)
	if got := c.Cut(short, false); got != 0 {
		t.Errorf("Cut(<Min, !EOF) = %d, want 0", got)
	}
	if got := c.Cut(short, true); got != len(short) {
		t.Errorf("Cut(<Min, EOF) = %d, want %d", got, len(short))
	}
	// All-zero data has one constant digest: every slice is Min or Max.
	zeros := make([]byte, 3*p.Max)
	if got := c.Cut(zeros, false); got != p.Min && got != p.Max {
		t.Errorf("Cut(zeros) = %d, want Min or Max", got)
	}
	data := randBytes(4, 4<<20)
	ends := boundaries(t, c, data)
	prev := 0
	for i, e := range ends {
		n := e - prev
		if n > p.Max || (n < p.Min && i != len(ends)-1) {
			t.Fatalf("slice %d has length %d outside [%d,%d]", i, n, p.Min, p.Max)
		}
		prev = e
	}
}

// TestNeedMore checks the "give me more bytes" contract: 0 is returned only
// when no boundary exists yet, and a non-zero answer never changes when more
// bytes follow.
func TestNeedMore(t *testing.T) {
	p := Params{Min: 500, Avg: 2000, Max: 6000}
	c := mustNew(t, testKey(4), p)
	data := randBytes(5, 64<<10)
	full := c.Cut(data, false)
	for l := 0; l <= p.Max+10; l++ {
		got := c.Cut(data[:l], false)
		switch {
		case l < full && got != 0:
			t.Fatalf("len %d < first boundary %d: Cut = %d, want 0", l, full, got)
		case l >= full && got != full:
			t.Fatalf("len %d >= first boundary %d: Cut = %d", l, full, got)
		}
		if fin := c.Cut(data[:l], true); l > 0 && fin != min(l, full) {
			t.Fatalf("len %d at EOF: Cut = %d, want %d", l, fin, min(l, full))
		}
	}
}

func TestDeterministicAndConcurrent(t *testing.T) {
	p := Params{Min: 2 << 10, Avg: 8 << 10, Max: 32 << 10}
	data := randBytes(6, 2<<20)
	want := boundaries(t, mustNew(t, testKey(5), p), data)
	c := mustNew(t, testKey(5), p)
	done := make(chan []int)
	for range 4 {
		go func() {
			var ends []int
			for pos := 0; pos < len(data); {
				pos += c.Cut(data[pos:], true)
				ends = append(ends, pos)
			}
			done <- ends
		}()
	}
	for range 4 {
		if got := <-done; !slices.Equal(got, want) {
			t.Fatal("concurrent Cut calls disagree with a fresh Chunker")
		}
	}
}

// TestStreaming feeds the data in random-sized pieces, appending until Cut
// returns non-zero, and expects the one-buffer slicing.
func TestStreaming(t *testing.T) {
	p := Params{Min: 1 << 10, Avg: 6 << 10, Max: 24 << 10}
	c := mustNew(t, testKey(7), p)
	data := randBytes(7, 3<<20)
	want := boundaries(t, c, data)
	r := rand.New(rand.NewPCG(7, 7))
	var got []int
	var pending []byte
	pos, fed := 0, 0
	for {
		atEOF := fed == len(data)
		n := c.Cut(pending, atEOF)
		if n == 0 {
			if atEOF {
				break
			}
			k := min(1+r.IntN(5000), len(data)-fed)
			pending = append(pending, data[fed:fed+k]...)
			fed += k
			continue
		}
		if !bytes.Equal(pending[:n], data[pos:pos+n]) {
			t.Fatal("pending buffer corrupted")
		}
		pos += n
		got = append(got, pos)
		pending = pending[n:]
	}
	if !slices.Equal(got, want) {
		t.Fatalf("streaming gave %d slices, one buffer %d (first difference at %d)",
			len(got), len(want), firstDiff(got, want))
	}
}

func firstDiff(a, b []int) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	return min(len(a), len(b))
}

// TestShiftResistance inserts bytes near the start of a 20 MiB buffer; the
// boundaries after the edit must resynchronise.
func TestShiftResistance(t *testing.T) {
	c := mustNew(t, testKey(8), DefaultParams())
	data := randBytes(8, 20<<20)
	const at, ins = 1000, 37
	edited := slices.Concat(data[:at], randBytes(9, ins), data[at:])
	before := boundaries(t, c, data)
	after := map[int]bool{}
	for _, e := range boundaries(t, c, edited) {
		after[e-ins] = true
	}
	kept, total := 0, 0
	for _, e := range before {
		if e > at+c.p.Max && e < len(data) {
			total++
			if after[e] {
				kept++
			}
		}
	}
	t.Logf("%d of %d later boundaries unchanged", kept, total)
	if total < 50 || kept < total*95/100 {
		t.Fatalf("only %d of %d later boundaries survived the insertion", kept, total)
	}
}

// TestMeanLength checks that cutProbability calibrates the threshold.
func TestMeanLength(t *testing.T) {
	data := randBytes(10, 64<<20)
	cases := []struct {
		p   Params
		tol float64 // relative; the sampling error is ~4% for the defaults
	}{
		{DefaultParams(), 0.10},
		{Params{Min: 1 << 10, Avg: 4 << 10, Max: 16 << 10}, 0.03},
	}
	for _, tc := range cases {
		ends := boundaries(t, mustNew(t, testKey(11), tc.p), data)
		mean := float64(len(data)) / float64(len(ends))
		t.Logf("%+v: %d slices, mean %.0f (%.2f%% off Avg)", tc.p, len(ends), mean,
			100*(mean/float64(tc.p.Avg)-1))
		if mean < float64(tc.p.Avg)*(1-tc.tol) || mean > float64(tc.p.Avg)*(1+tc.tol) {
			t.Errorf("%+v: mean slice length %.0f not within %.0f%% of Avg", tc.p, mean, 100*tc.tol)
		}
	}
}

func TestKeysDiffer(t *testing.T) {
	p := Params{Min: 2 << 10, Avg: 8 << 10, Max: 32 << 10}
	data := randBytes(12, 8<<20)
	a := boundaries(t, mustNew(t, testKey(13), p), data)
	b := map[int]bool{}
	for _, e := range boundaries(t, mustNew(t, testKey(14), p), data) {
		b[e] = true
	}
	common := 0
	for _, e := range a[:len(a)-1] {
		if b[e] {
			common++
		}
	}
	// Independent keys share a boundary only by coincidence: a boundary of
	// one key is also one of the other with probability about 1/Avg.
	t.Logf("%d of %d boundaries shared between two keys", common, len(a)-1)
	if common > len(a)/20 {
		t.Fatalf("%d of %d boundaries shared between two keys", common, len(a))
	}
}

// TestGoldenCuts pins the cut points of one key: any change to the key
// derivation, digest, mix, PRF or thresholds moves them, and that breaks
// dedup against existing stores, so it must be a deliberate new version.
func TestGoldenCuts(t *testing.T) {
	data := randBytes(20, 2<<20)
	got := boundaries(t, mustNew(t, testKey(20), DefaultParams()), data)
	want := []int{85535, 551291, 638812, 841784, 968087, 1044330, 1240467, 1513986}
	if !slices.Equal(got[:len(want)], want) {
		t.Fatalf("cut points changed:\n got %v\nwant %v", got[:len(want)], want)
	}
}

// TestCandidate checks Candidate against a naive scan of every window, and
// Cut against Candidate: a slice ends at the first candidate at least Min
// bytes after its start, or is forced at Max.
func TestCandidate(t *testing.T) {
	p := Params{Min: 200, Avg: 700, Max: 3000}
	c := mustNew(t, testKey(3), p)
	data := randBytes(3, 1<<16)
	if n := c.Candidate(data[:WindowSize-1]); n != 0 {
		t.Fatalf("Candidate of %d bytes = %d, want 0", WindowSize-1, n)
	}
	var scratch [16]byte
	found := 0
	for pos := 0; ; {
		want := 0
		for n := WindowSize; pos+n <= len(data); n++ {
			h := buzhash64.NewFromUint64Array(c.table)
			_, _ = h.Write(data[pos+n-WindowSize : pos+n])
			if c.isCut(h.Sum64(), &scratch) {
				want = n
				break
			}
		}
		if got := c.Candidate(data[pos:]); got != want {
			t.Fatalf("at %d: Candidate = %d, naive = %d", pos, got, want)
		}
		if want == 0 {
			break
		}
		found++
		pos += want - WindowSize + 1 // the next window ends after this one
	}
	if found < 20 {
		t.Fatalf("only %d candidates in %d bytes", found, len(data))
	}
	for pos := 0; pos < len(data); pos += 97 {
		want := min(p.Max, len(data)-pos)
		if pos+p.Min <= len(data) {
			if n := c.Candidate(data[pos+p.Min-WindowSize:]); n > 0 && p.Min-WindowSize+n < p.Max {
				want = p.Min - WindowSize + n
			}
		}
		if got := c.Cut(data[pos:], true); got != want {
			t.Fatalf("at %d: Cut = %d, first candidate after Min = %d", pos, got, want)
		}
	}
}
