package main

import (
	"fmt"
	"io"
	"os"
	"time"

	"github.com/schollz/progressbar/v3"
	"golang.org/x/term"
)

// meter shows progress on stderr when it is a terminal; otherwise, and
// with -q or when nil, it does nothing.
type meter struct {
	bar *progressbar.ProgressBar
}

// stderrIsTerminal reports whether the process's stderr is a terminal.
func stderrIsTerminal() bool {
	return term.IsTerminal(int(os.Stderr.Fd()))
}

// newMeter starts a bar of total units (-1 if unknown); bytes selects byte
// units and a rate.
func (a *app) newMeter(desc string, total int64, bytes bool) *meter {
	if a.quiet || a.stderr != io.Writer(os.Stderr) || !stderrIsTerminal() {
		return &meter{}
	}
	opts := []progressbar.Option{
		progressbar.OptionSetWriter(os.Stderr),
		progressbar.OptionSetDescription(desc),
		progressbar.OptionSetWidth(30),
		progressbar.OptionThrottle(100 * time.Millisecond),
		progressbar.OptionShowCount(),
		progressbar.OptionSetPredictTime(true),
		progressbar.OptionShowElapsedTimeOnFinish(),
		progressbar.OptionOnCompletion(func() { fmt.Fprintln(os.Stderr) }),
	}
	if bytes {
		opts = append(opts, progressbar.OptionShowBytes(true), progressbar.OptionUseIECUnits(true))
	} else {
		opts = append(opts, progressbar.OptionShowIts(), progressbar.OptionSetItsString("slices"))
	}
	return &meter{bar: progressbar.NewOptions64(total, opts...)}
}

// add counts n more units.
func (m *meter) add(n int64) {
	if m != nil && m.bar != nil {
		_ = m.bar.Add64(n)
	}
}

// set sets the done count and the total.
func (m *meter) set(done, total int64) {
	if m != nil && m.bar != nil {
		if m.bar.GetMax64() != total {
			m.bar.ChangeMax64(total)
		}
		_ = m.bar.Set64(done)
	}
}

// finish completes the bar.
func (m *meter) finish() {
	if m != nil && m.bar != nil {
		_ = m.bar.Finish()
	}
}

// reader wraps r so reads advance the meter.
func (m *meter) reader(r io.Reader) io.Reader {
	if m == nil || m.bar == nil {
		return r
	}
	return &countingReader{r: r, m: m}
}

type countingReader struct {
	r io.Reader
	m *meter
}

// Read reads from the wrapped reader and counts the bytes.
func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.m.add(int64(n))
	return n, err
}

// writer wraps w so writes advance the meter.
func (m *meter) writer(w io.Writer) io.Writer {
	if m == nil || m.bar == nil {
		return w
	}
	return io.MultiWriter(w, m.bar)
}
