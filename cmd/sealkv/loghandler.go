package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"regexp"
	"strings"
	"sync"
)

// lineHandler is a slog.Handler printing each record as one short line,
// "sealkv: warning: msg (key=value, ...)". Multi-line messages are cut at
// the first line and long values shortened, so a storage-engine error
// carrying a stack trace does not flood the terminal.
type lineHandler struct {
	mu    *sync.Mutex
	w     io.Writer
	level slog.Level
	attrs []slog.Attr
	seen  map[string]bool // lines printed; nil keeps repeats
}

// newLineHandler prints records at level and above to w; with once set,
// a line equal to one already printed is dropped.
func newLineHandler(w io.Writer, level slog.Level, once bool) *lineHandler {
	h := &lineHandler{mu: &sync.Mutex{}, w: w, level: level}
	if once {
		h.seen = map[string]bool{}
	}
	return h
}

// Enabled reports whether records at l are printed.
func (h *lineHandler) Enabled(_ context.Context, l slog.Level) bool { return l >= h.level }

// Handle prints r.
func (h *lineHandler) Handle(_ context.Context, r slog.Record) error {
	var parts []string
	add := func(a slog.Attr) bool {
		if a.Key != "component" {
			parts = append(parts, a.Key+"="+shorten(a.Value.String(), 40))
		}
		return true
	}
	for _, a := range h.attrs {
		add(a)
	}
	r.Attrs(add)
	line := fmt.Sprintf("sealkv: %s: %s", strings.ToLower(r.Level.String()), shortMessage(r.Message))
	if len(parts) > 0 {
		line += " (" + strings.Join(parts, ", ") + ")"
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.seen != nil {
		if h.seen[line] {
			return nil
		}
		h.seen[line] = true
	}
	_, err := fmt.Fprintln(h.w, line)
	return err
}

// WithAttrs returns a handler that adds as to every record.
func (h *lineHandler) WithAttrs(as []slog.Attr) slog.Handler {
	c := *h
	c.attrs = append(append([]slog.Attr(nil), h.attrs...), as...)
	return &c
}

// WithGroup ignores groups: lines stay flat.
func (h *lineHandler) WithGroup(string) slog.Handler { return h }

// pebbleBounds matches the escaped key bounds Pebble puts in corruption
// messages.
var pebbleBounds = regexp.MustCompile(`(?s); bounds: .*?; details: `)

// shortMessage keeps the first line of msg, without the "sealkv: " prefix
// and Pebble's binary key bounds, at most 200 characters.
func shortMessage(msg string) string {
	msg = pebbleBounds.ReplaceAllString(msg, ": ")
	msg, _, _ = strings.Cut(msg, "\n")
	msg = strings.TrimPrefix(msg, "sealkv: ")
	return shorten(msg, 200)
}

// shorten cuts s to n bytes, marking the cut.
func shorten(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}
