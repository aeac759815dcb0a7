// Command sealkv stores files and directory trees in a sealkv store:
// deduplicated, post-quantum encrypted, erasure coded and crash safe.
//
// Start with the demo, which needs no setup:
//
//	go run ./cmd/sealkv demo
//
// Everyday use names a store directory and a key file, by flag or
// environment:
//
//	export SEALKV_STORE=/var/lib/blobs SEALKV_KEYS=$HOME/.sealkv.key
//	sealkv keygen
//	sealkv put ./photos
//	sealkv ls -l photos/
//	sealkv get -r photos -o /tmp/photos
//
// Run "sealkv help" for every command and the exit codes.
package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// run executes the command line args and returns the exit code. A panic
// anywhere in the command's goroutine becomes one line on stderr and
// exitInternal, never a stack trace.
func run(args []string, stdout, stderr io.Writer) (code int) {
	defer func() {
		if r := recover(); r != nil {
			fmt.Fprintf(stderr, "sealkv: internal error (a bug, please report it): %s\n", oneLine(fmt.Sprint(r)))
			code = exitInternal
		}
	}()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	go func() {
		<-ctx.Done()
		stop() // a second interrupt ends the process at once
	}()
	a := newApp(stdout, stderr)
	root := a.rootCommand()
	root.SetArgs(args)
	if err := root.ExecuteContext(ctx); err != nil {
		code, line := describe(err)
		fmt.Fprintln(stderr, line)
		return code
	}
	return exitOK
}
