// Package bufpool recycles the large byte buffers of the Put and Get
// pipelines. Each slice moves through several slice-sized buffers (block,
// compressed, sealed, shards, ClearText), and allocating them fresh costs
// more in zeroing and garbage collection than the crypto does.
//
// Buffers of at least LargeSize bytes live outside the Go heap (mmap) on
// Unix: the garbage collector lets the heap grow to twice its live size, and
// counting these buffers as live doubled sealkv's peak RSS. Peak RSS of the
// bench driver, heap buffers → mapped ones: 1 GiB Put 73 → 50 MiB, 1 GiB Get
// 56 → 48 MiB, 8 GiB Get 88 → 62 MiB. Like Pebble's block cache, they are
// managed by hand: Get hands a buffer to one owner, Put takes it back, and a
// bounded free list keeps some for reuse. Under the race detector, which
// cannot see memory outside the heap, they are ordinary heap buffers.
//
// Sizes are rounded up to a power of two. Finer classes (a quarter power of
// two) waste fewer bytes per buffer but reuse worse across the varying slice
// sizes: a 1 GiB Put measured 97 MiB peak RSS with them against 81 MiB with
// powers of two.
package bufpool

import (
	"math/bits"
	"sync"
)

// minSize is the smallest class; smaller buffers are rounded up to it.
const minSize = 1 << 10

// LargeSize is the smallest buffer kept outside the Go heap.
const LargeSize = 64 << 10

// maxFree bounds the bytes of large buffers kept free for reuse; beyond it
// a returned buffer is unmapped.
const maxFree = 16 << 20

var small [64]sync.Pool

// class returns the size class of n: buffers of that class hold 1<<class bytes.
func class(n int) int { return bits.Len(uint(max(n, minSize) - 1)) }

// Get returns a buffer of length n with arbitrary contents. The caller owns
// it until it passes it to Put, and must not use it afterwards.
func Get(n int) []byte {
	c := class(n)
	if 1<<c >= LargeSize {
		return large.get(c)[:n]
	}
	if p, ok := small[c].Get().(*[]byte); ok {
		return (*p)[:n]
	}
	return make([]byte, n, 1<<c)
}

// Put recycles b, which must start where a buffer from Get starts (any
// length); the caller must not use it afterwards. Other buffers are left to
// the garbage collector.
func Put(b []byte) {
	c := class(cap(b))
	if cap(b) < minSize || cap(b) != 1<<c {
		return
	}
	if 1<<c >= LargeSize {
		large.put(b[:cap(b)], c)
		return
	}
	b = b[:0]
	small[c].Put(&b)
}

// Outstanding returns how many large buffers Get has handed out that have
// not come back through Put. Those outside the Go heap are freed only by
// Put, so a count that grows across operations that should each return
// what they take is a leak; tests check it.
func Outstanding() int {
	large.mu.Lock()
	defer large.mu.Unlock()
	return len(large.owned)
}

// pool is the free list of large buffers. Buffers it did not hand out are
// ignored by put, so a heap buffer can never be unmapped.
type pool struct {
	mu    sync.Mutex
	owned map[*byte]bool // first byte of every buffer handed out
	free  [64][][]byte
	bytes int // in free
}

var large = pool{owned: map[*byte]bool{}}

func (p *pool) get(c int) []byte {
	p.mu.Lock()
	if n := len(p.free[c]); n > 0 {
		b := p.free[c][n-1]
		p.free[c] = p.free[c][:n-1]
		p.bytes -= len(b)
		p.owned[&b[0]] = true
		p.mu.Unlock()
		return b
	}
	p.mu.Unlock()
	b := alloc(1 << c)
	p.mu.Lock()
	p.owned[&b[0]] = true
	p.mu.Unlock()
	return b
}

func (p *pool) put(b []byte, c int) {
	p.mu.Lock()
	if !p.owned[&b[0]] {
		p.mu.Unlock()
		return // not ours (or returned twice): leave it alone
	}
	delete(p.owned, &b[0])
	if p.bytes+len(b) <= maxFree {
		p.free[c] = append(p.free[c], b)
		p.bytes += len(b)
		p.mu.Unlock()
		return
	}
	p.mu.Unlock()
	release(b)
}
