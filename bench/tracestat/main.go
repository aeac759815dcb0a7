// Command tracestat summarizes an execution trace of a sealkv process
// (SEALKV_TRACE=FILE on bench/sealkvbench): how many Ps ran goroutines, and
// how many goroutines sat in syscalls, per time window; which syscalls took
// longest; and, with -long, every syscall longer than that. It is how
// docs/performance.md found a large Put's stalls around its table syncs.
//
//	go run . [-window 10ms] [-long 5ms] TRACE
//
// It lives in its own module so that the library does not depend on
// golang.org/x/exp.
package main

import (
	"flag"
	"fmt"
	"io"
	"log"
	"os"
	"sort"
	"strings"
	"time"

	"golang.org/x/exp/trace"
)

// goroutine is what tracestat remembers of one goroutine.
type goroutine struct {
	since trace.Time // when it entered its current state
	where string     // its innermost sealkv or Pebble frame when it last entered a syscall
}

// A window accumulates nanoseconds of goroutine time, by state.
type window [3]float64

// The states a window counts.
const (
	running = iota
	inSyscall
	inSync
)

func main() {
	width := flag.Duration("window", 100*time.Millisecond, "width of a time window")
	long := flag.Duration("long", 0, "print every syscall at least this long (0: none)")
	flag.Parse()
	if flag.NArg() != 1 {
		log.Fatal("usage: tracestat [-window D] [-long D] TRACE")
	}
	f, err := os.Open(flag.Arg(0))
	if err != nil {
		log.Fatal(err)
	}
	defer f.Close()
	r, err := trace.NewReader(f)
	if err != nil {
		log.Fatal(err)
	}
	var (
		gs          = map[trace.GoID]*goroutine{}
		windows     []window
		bySyscall   = map[string]float64{}
		first, last trace.Time
		w           = float64(width.Nanoseconds())
	)
	// add spreads [a, b) over the windows it covers, as time in state.
	add := func(a, b trace.Time, state int) {
		for t := a; t < b; {
			k := int(float64(t-first) / w)
			for len(windows) <= k {
				windows = append(windows, window{})
			}
			end := min(b, first+trace.Time(float64(k+1)*w))
			windows[k][state] += float64(end - t)
			t = end
		}
	}
	for {
		ev, err := r.ReadEvent()
		if err == io.EOF {
			break
		}
		if err != nil {
			log.Fatal(err)
		}
		if first == 0 {
			first = ev.Time()
		}
		last = ev.Time()
		if ev.Kind() != trace.EventStateTransition {
			continue
		}
		st := ev.StateTransition()
		if st.Resource.Kind != trace.ResourceGoroutine {
			continue
		}
		id := st.Resource.Goroutine()
		from, to := st.Goroutine()
		g := gs[id]
		if g == nil {
			g = &goroutine{since: ev.Time()}
			gs[id] = g
		}
		switch from {
		case trace.GoRunning:
			add(g.since, ev.Time(), running)
		case trace.GoSyscall:
			d := ev.Time() - g.since
			bySyscall[g.where] += float64(d)
			state := inSyscall
			if strings.HasSuffix(g.where, "Sync") || strings.HasSuffix(g.where, "SyncData") {
				state = inSync
			}
			add(g.since, ev.Time(), state)
			if *long > 0 && time.Duration(d) >= *long {
				fmt.Printf("syscall %8.1f–%8.1f ms (%5.1f ms) g%d %s\n", ms(g.since-first), ms(ev.Time()-first), ms(d), id, g.where)
			}
		}
		if to == trace.GoSyscall {
			g.where = innermost(ev.Stack())
		}
		g.since = ev.Time()
	}
	wall := last - first
	var ran float64
	for _, x := range windows {
		ran += x[running]
	}
	fmt.Printf("\n%.0f ms traced; goroutines ran %.2f Ps on average\n", ms(wall), ran/float64(wall))
	fmt.Printf("\n%9s  %7s  %12s  %12s\n", "window ms", "Ps run", "in syscalls", "in syncs")
	for k, x := range windows {
		fmt.Printf("%9.0f  %7.2f  %12.2f  %12.2f\n", float64(k)*w/1e6, x[running]/w, x[inSyscall]/w, x[inSync]/w)
	}
	type entry struct {
		where string
		ns    float64
	}
	var top []entry
	for k, v := range bySyscall {
		top = append(top, entry{k, v})
	}
	sort.Slice(top, func(i, j int) bool { return top[i].ns > top[j].ns })
	fmt.Printf("\ntime in syscalls, by innermost sealkv or Pebble frame:\n")
	for i, e := range top {
		if i == 15 {
			break
		}
		fmt.Printf("%8.0f ms  %s\n", e.ns/1e6, e.where)
	}
}

// innermost names a syscall by the innermost frame of sealkv or Pebble on
// its stack, or by the outermost frame when there is none.
func innermost(s trace.Stack) string {
	outer := "?"
	for f := range s.Frames() {
		if strings.Contains(f.Func, "sealkv") || strings.Contains(f.Func, "pebble") {
			return f.Func
		}
		outer = f.Func
	}
	return outer
}

func ms(t trace.Time) float64 { return float64(t) / 1e6 }
