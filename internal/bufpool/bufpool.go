// Package bufpool recycles the large byte buffers of the Put and Get
// pipelines. Each slice moves through several slice-sized buffers (block,
// compressed, sealed, shards), and allocating them fresh costs more in
// zeroing and garbage collection than the crypto does; every byte a pool
// rounds up is also a byte of peak RSS, so sizes are rounded to a quarter
// power of two (at most 25% waste, ~10% on average) instead of a power of two.
package bufpool

import (
	"math/bits"
	"sync"
)

// steps is the number of size classes per power of two.
const steps = 4

// minSize is the smallest class; smaller buffers are rounded up to it.
const minSize = 1 << 10

var pools [64 * steps]sync.Pool

// class returns the size class of n and that class's capacity.
func class(n int) (int, int) {
	n = max(n, minSize)
	e := bits.Len(uint(n-1)) - 1 // 2^e < n <= 2^(e+1)
	// Classes between 2^e and 2^(e+1) are 2^e * (1 + s/steps), s = 1..steps.
	step := 1 << (e - 2)
	s := (n - 1 - (1 << e)) / step // 0..steps-1
	return e*steps + s, 1<<e + (s+1)*step
}

// Get returns a buffer of length n with arbitrary contents.
func Get(n int) []byte {
	c, size := class(n)
	if p, ok := pools[c].Get().(*[]byte); ok {
		return (*p)[:n]
	}
	return make([]byte, n, size)
}

// Put recycles b; the caller must not use it afterwards. Buffers whose
// capacity is not exactly a class size (not from Get) are left to the
// garbage collector.
func Put(b []byte) {
	if cap(b) < minSize {
		return
	}
	c, size := class(cap(b))
	if size != cap(b) {
		return
	}
	b = b[:0]
	pools[c].Put(&b)
}
