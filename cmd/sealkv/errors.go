package main

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/sealkv/kv"
)

// Exit codes; exitCodesHelp documents them in --help.
const (
	exitOK          = 0
	exitError       = 1
	exitInternal    = 2
	exitNotFound    = 3
	exitRefused     = 4
	exitKeys        = 5
	exitLocked      = 6
	exitCorrupt     = 7
	exitUsage       = 64
	exitInterrupted = 130
)

const exitCodesHelp = `Exit codes:
  0    success
  1    error (I/O, invalid key name, ...)
  2    internal error (a bug in sealkv)
  3    not found (key, version, store, file)
  4    refused (data has children or older versions, file exists)
  5    key file problem (missing, invalid, wrong for this store, write-only)
  6    store locked by another process
  7    stored data corrupt and not repairable
  64   usage (unknown command, bad flag or argument)
  130  interrupted`

// cliError is an error with its exit code and an optional hint telling
// the user what to do.
type cliError struct {
	code int
	msg  string
	hint string
	err  error // cause, for errors.Is; may be nil
}

// Error is the message, or the cause's when there is none.
func (e *cliError) Error() string {
	if e.msg == "" && e.err != nil {
		return e.err.Error()
	}
	return e.msg
}

// Unwrap returns the cause.
func (e *cliError) Unwrap() error { return e.err }

// usagef returns a usage error.
func usagef(format string, args ...any) error {
	return &cliError{code: exitUsage, msg: fmt.Sprintf(format, args...)}
}

// withHint wraps err with an exit code, message and hint.
func withHint(err error, code int, msg, hint string) error {
	return &cliError{code: code, msg: msg, hint: hint, err: err}
}

// describe maps err to its exit code and the single line printed on stderr.
func describe(err error) (int, string) {
	code, hint := classify(err)
	msg := err.Error()
	if code == exitInterrupted {
		msg = "interrupted"
	}
	var ce *cliError
	if errors.As(err, &ce) {
		code, msg, hint = ce.code, ce.Error(), ce.hint
	}
	line := "sealkv: " + oneLine(strings.ReplaceAll(msg, "sealkv: ", ""))
	if hint != "" {
		line += "; " + hint
	}
	return code, line
}

// classify maps library errors that reach main without a cliError.
func classify(err error) (int, string) {
	switch {
	case errors.Is(err, context.Canceled):
		return exitInterrupted, ""
	case errors.Is(err, kv.ErrNotFound):
		return exitNotFound, ""
	case errors.Is(err, kv.ErrHasChildren):
		return exitRefused, "use: sealkv rm -r KEY"
	case errors.Is(err, kv.ErrHasVersions):
		return exitRefused, "run: sealkv prune KEY --keep 0"
	case errors.Is(err, kv.ErrInvalidKeys), errors.Is(err, kv.ErrWrongKeys), errors.Is(err, kv.ErrWriteOnly):
		return exitKeys, ""
	case errors.Is(err, kv.ErrLocked):
		return exitLocked, ""
	case errors.Is(err, kv.ErrUnavailable):
		return exitError, "shards could not be fetched (failure domains not answering); retry when they are back"
	case errors.Is(err, kv.ErrCorrupt):
		return exitCorrupt, ""
	}
	return exitError, ""
}

// oneLine folds a message onto one line.
func oneLine(s string) string {
	return strings.Join(strings.Fields(s), " ")
}
