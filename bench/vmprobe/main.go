//go:build unix

// Command vmprobe measures two properties of the machine that bound a large
// Put and that no library code can change (docs/performance.md, "where a
// large Put waits"):
//
//	vmprobe faults       the cost of a page fault on fresh anonymous memory,
//	                     against MAP_POPULATE and against touching it again
//	vmprobe stalls DIR   gaps in two threads spinning on the clock while a
//	                     goroutine writes 64 MiB files to DIR and fsyncs each
//
// On this project's VM a fault cost 9.7 µs, and during fsyncs both spinners
// lost their CPUs at once for 4–10 ms at a time.
package main

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"syscall"
	"time"
)

func main() {
	switch {
	case len(os.Args) == 2 && os.Args[1] == "faults":
		faults()
	case len(os.Args) == 3 && os.Args[1] == "stalls":
		stalls(os.Args[2])
	default:
		fmt.Fprintln(os.Stderr, "usage: vmprobe faults | vmprobe stalls DIR")
		os.Exit(2)
	}
}

// faults maps 2 MiB 200 times and writes one byte per 4 KiB page, with and
// without MAP_POPULATE, then rewrites one mapping 200 times.
func faults() {
	const size, rounds, page = 2 << 20, 200, 4096
	for _, populate := range []bool{false, true, false, true} {
		flags := syscall.MAP_ANON | syscall.MAP_PRIVATE
		if populate {
			flags |= syscall.MAP_POPULATE
		}
		start := time.Now()
		for range rounds {
			b, err := syscall.Mmap(-1, 0, size, syscall.PROT_READ|syscall.PROT_WRITE, flags)
			check(err)
			for i := 0; i < size; i += page {
				b[i] = 1
			}
			_ = syscall.Munmap(b)
		}
		per := time.Since(start) / rounds
		fmt.Printf("fresh 2 MiB mapping, populate=%-5v: %v (%.1f µs per page)\n", populate, per, float64(per.Nanoseconds())/1e3/(size/page))
	}
	b := make([]byte, size)
	start := time.Now()
	for r := range rounds {
		for i := 0; i < size; i += page {
			b[i] = byte(r)
		}
	}
	fmt.Printf("the same 2 MiB again: %v\n", time.Since(start)/rounds)
}

// stalls runs two spinners, each locked to its own thread, that record
// every gap of more than 2 ms between two readings of the clock, while six
// 64 MiB files are written in 256 KiB writes and synced one at a time.
func stalls(dir string) {
	type gap struct {
		spinner    int
		start, end time.Duration
	}
	t0 := time.Now()
	var (
		mu   sync.Mutex
		gaps []gap
		wg   sync.WaitGroup
		stop = make(chan struct{})
	)
	for s := range 2 {
		wg.Go(func() {
			runtime.LockOSThread()
			last := time.Since(t0)
			for i := 0; ; i++ {
				now := time.Since(t0)
				if now-last > 2*time.Millisecond {
					mu.Lock()
					gaps = append(gaps, gap{s, last, now})
					mu.Unlock()
				}
				last = now
				if i%1024 == 0 {
					select {
					case <-stop:
						return
					default:
					}
				}
			}
		})
	}
	buf := make([]byte, 256<<10)
	for i := range buf {
		buf[i] = byte(i)
	}
	for n := range 6 {
		name := filepath.Join(dir, fmt.Sprintf("vmprobe-%d", n))
		f, err := os.Create(name)
		check(err)
		for range 256 {
			_, err := f.Write(buf)
			check(err)
		}
		a := time.Since(t0)
		err = f.Sync()
		fmt.Printf("sync   %8.1f–%8.1f ms (err %v)\n", ms(a), ms(time.Since(t0)), err)
		_ = f.Close()
		_ = os.Remove(name)
		time.Sleep(50 * time.Millisecond)
	}
	close(stop)
	wg.Wait()
	for _, g := range gaps {
		fmt.Printf("gap    %8.1f–%8.1f ms (%5.1f) spinner %d\n", ms(g.start), ms(g.end), ms(g.end-g.start), g.spinner)
	}
}

func ms(d time.Duration) float64 { return float64(d) / 1e6 }

// check exits on an error: a probe that cannot map memory or write files
// has nothing to measure.
func check(err error) {
	if err != nil {
		fmt.Fprintln(os.Stderr, "vmprobe:", err)
		os.Exit(1)
	}
}
