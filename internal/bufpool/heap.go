//go:build !unix || race

package bufpool

// alloc allocates on the Go heap: the race detector sees only heap memory,
// and non-Unix systems have no portable mmap.
func alloc(n int) []byte { return make([]byte, n) }

// release leaves b to the garbage collector.
func release([]byte) {}
