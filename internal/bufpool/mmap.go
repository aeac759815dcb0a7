//go:build unix && !race

package bufpool

import "syscall"

// alloc maps n bytes of anonymous memory outside the Go heap.
func alloc(n int) []byte {
	b, err := syscall.Mmap(-1, 0, n, syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_ANON|syscall.MAP_PRIVATE)
	if err != nil {
		return make([]byte, n) // out of address space: the heap still works
	}
	return b
}

// release unmaps a buffer from alloc. A heap buffer (alloc's fallback)
// makes Munmap fail harmlessly, and the collector frees it.
func release(b []byte) { _ = syscall.Munmap(b) }
