package kv

import (
	"math/bits"
	"sync"
)

// Buffers of the Put pipeline are recycled through power-of-two size
// classes: a Put moves its whole ClearText through several slice-sized
// buffers (slice, compressed, sealed, shards), and allocating them fresh
// costs more in zeroing and GC than the crypto does.
var bufPools [33]sync.Pool

func bufClass(n int) int { return bits.Len(uint(max(n, 1) - 1)) }

// getBuf returns a buffer of length n with arbitrary contents.
func getBuf(n int) []byte {
	c := bufClass(n)
	if p, ok := bufPools[c].Get().(*[]byte); ok {
		return (*p)[:n]
	}
	return make([]byte, n, 1<<c)
}

// putBuf recycles b; the caller must not use it afterwards.
func putBuf(b []byte) {
	c := cap(b)
	if c == 0 || c&(c-1) != 0 || bufClass(c) >= len(bufPools) {
		return // not from getBuf
	}
	b = b[:0]
	bufPools[bufClass(c)].Put(&b)
}
