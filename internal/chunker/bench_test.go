package chunker

import (
	"testing"

	"github.com/chmduquesne/rollinghash/buzhash64"
)

const benchSize = 64 << 20

var benchData = func() func() []byte {
	var data []byte
	return func() []byte {
		if data == nil {
			data = randBytes(99, benchSize)
		}
		return data
	}
}()

// BenchmarkCut chunks 64 MiB of random data with the default params: with
// the vector code if this CPU runs it, and with the portable loop.
func BenchmarkCut(b *testing.B) {
	data := benchData()
	run := func(name string, vector bool) {
		c := mustNew(b, testKey(1), DefaultParams())
		c.vector = vector
		b.Run(name, func(b *testing.B) {
			b.SetBytes(int64(len(data)))
			for b.Loop() {
				for pos := 0; pos < len(data); {
					pos += c.Cut(data[pos:], true)
				}
			}
		})
	}
	if haveVector {
		run("vector", true)
	}
	run("portable", false)
}

// BenchmarkBuzhash64Package is the baseline: the rollinghash package's Roll
// over every byte plus a mask check (no Min skip, no keyed decision).
func BenchmarkBuzhash64Package(b *testing.B) {
	c := mustNew(b, testKey(1), DefaultParams())
	data := benchData()
	b.SetBytes(int64(len(data)))
	b.ResetTimer()
	cuts := 0
	for b.Loop() {
		h := buzhash64.NewFromUint64Array(c.table)
		_, _ = h.Write(data[:WindowSize])
		for _, x := range data[WindowSize:] {
			h.Roll(x)
			if h.Sum64()&(1<<17-1) == 0 {
				cuts++
			}
		}
	}
	sink = cuts
}

// BenchmarkCutPackageRoll is Cut's algorithm (Min skip, keyed mix, AES
// confirmation) with the digest rolled by the rollinghash package instead of
// the inlined loop: the difference to BenchmarkCut is the cost of the package.
func BenchmarkCutPackageRoll(b *testing.B) {
	c := mustNew(b, testKey(1), DefaultParams())
	data := benchData()
	b.SetBytes(int64(len(data)))
	b.ResetTimer()
	for b.Loop() {
		for pos := 0; pos < len(data); {
			pos += cutWithPackage(c, data[pos:])
		}
	}
}

// cutWithPackage is Cut(buf, true) with buzhash64.Roll as the digest.
func cutWithPackage(c *Chunker, buf []byte) int {
	end := min(len(buf), c.p.Max-1)
	if end >= c.p.Min {
		var scratch [16]byte
		h := buzhash64.NewFromUint64Array(c.table)
		_, _ = h.Write(buf[c.p.Min-WindowSize : c.p.Min])
		if c.isCut(h.Sum64(), &scratch) {
			return c.p.Min
		}
		for n := c.p.Min; n < end; n++ {
			h.Roll(buf[n])
			if c.isCut(h.Sum64(), &scratch) {
				return n + 1
			}
		}
	}
	return min(len(buf), c.p.Max)
}

// BenchmarkDigestOnly is the inlined roll with no decision at all.
func BenchmarkDigestOnly(b *testing.B) {
	c := mustNew(b, testKey(1), DefaultParams())
	data := benchData()
	b.SetBytes(int64(len(data)))
	b.ResetTimer()
	var d uint64
	for b.Loop() {
		d = c.prime(data[:WindowSize])
		out, in := data[:len(data)-WindowSize], data[WindowSize:]
		in = in[:len(out)]
		for i, x := range in {
			d = (d<<1 | d>>63) ^ c.table[out[i]] ^ c.table[x]
		}
	}
	sink = int(d)
}

// BenchmarkConfirm is one AES confirmation.
func BenchmarkConfirm(b *testing.B) {
	c := mustNew(b, testKey(1), DefaultParams())
	var scratch [16]byte
	hits := 0
	d := uint64(0)
	for b.Loop() {
		d++
		if c.confirm(d, &scratch) {
			hits++
		}
	}
	sink = hits
}

var sink int

// BenchmarkCutPrefilterRate measures Cut with other splits of the same cut
// probability between the keyed mix pre-filter and AES: the name is the
// pre-filter pass rate, i.e. the fraction of hashed positions that pay for an
// AES call. "mix-only" lets the mix decide alone (AES never runs in practice);
// "1/1" runs AES at every position.
// The shipped rate is prefilterRate = 1/64.
func BenchmarkCutPrefilterRate(b *testing.B) {
	base := mustNew(b, testKey(1), DefaultParams())
	q := cutProbability(base.p)
	data := benchData()
	for _, rc := range []struct {
		name string
		rate float64
	}{{"mix-only", q}, {"1/1024", 1.0 / 1024}, {"1/256", 1.0 / 256}, {"1/64", 1.0 / 64}, {"1/16", 1.0 / 16}, {"1/4", 1.0 / 4}, {"1/1", 1}} {
		b.Run(rc.name, func(b *testing.B) {
			c := *base
			c.t1, c.t2 = toThreshold(rc.rate), toThreshold(q/rc.rate)
			b.SetBytes(int64(len(data)))
			for b.Loop() {
				for pos := 0; pos < len(data); {
					pos += c.Cut(data[pos:], true)
				}
			}
		})
	}
}
