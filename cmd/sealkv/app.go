package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/sealkv/kv"
)

// app holds the global flags and the output streams of one invocation.
type app struct {
	stdout, stderr io.Writer

	storeFlag string
	keysFlag  string
	json      bool
	quiet     bool
}

func newApp(stdout, stderr io.Writer) *app {
	return &app{stdout: stdout, stderr: stderr}
}

const rootLong = `sealkv keeps files and directory trees in a store that is deduplicated,
encrypted at rest (ML-KEM-1024 + AES-256-GCM), erasure coded (8 data + 2
parity shards per slice) and crash safe.

Try it first, without any setup:
  sealkv demo

The store directory comes from --store or $SEALKV_STORE, the key file from
--keys or $SEALKV_KEYS (create one with "sealkv keygen"). A key file made with
"keygen --write-only" can put but never read.

Listings and reports print JSON with --json. Progress bars appear on stderr
only when it is a terminal, and never with -q.

` + exitCodesHelp

// rootCommand builds the command tree.
func (a *app) rootCommand() *cobra.Command {
	root := &cobra.Command{
		Use:           "sealkv",
		Short:         "Encrypted, deduplicated, self-repairing blob store",
		Long:          rootLong,
		Args:          usageArgs(cobra.NoArgs),
		RunE:          func(c *cobra.Command, _ []string) error { return c.Help() },
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetOut(a.stdout)
	root.SetErr(a.stderr)
	root.SetFlagErrorFunc(func(c *cobra.Command, err error) error {
		return usagef("%v (see: %s --help)", err, c.CommandPath())
	})
	pf := root.PersistentFlags()
	pf.StringVar(&a.storeFlag, "store", "", "store directory (default $SEALKV_STORE)")
	pf.StringVar(&a.keysFlag, "keys", "", "key file (default $SEALKV_KEYS)")
	pf.BoolVar(&a.json, "json", false, "print listings and reports as JSON")
	pf.BoolVarP(&a.quiet, "quiet", "q", false, "print no summaries, progress or warnings")
	for _, c := range a.commands() {
		root.AddCommand(c)
	}
	return root
}

// commands lists the subcommands.
func (a *app) commands() []*cobra.Command {
	return []*cobra.Command{
		a.keygenCommand(), a.putCommand(), a.getCommand(), a.lsCommand(),
		a.versionsCommand(), a.rmCommand(), a.pruneCommand(), a.scrubCommand(),
		a.statsCommand(), a.demoCommand(), a.panicCommand(),
	}
}

// panicCommand is a hidden command that panics, so tests can check that a
// panic ends in one line and exit code 2.
func (a *app) panicCommand() *cobra.Command {
	return &cobra.Command{
		Use:    "internal-panic",
		Hidden: true,
		Args:   usageArgs(cobra.NoArgs),
		RunE:   func(*cobra.Command, []string) error { panic("test panic") },
	}
}

// usageArgs makes an argument validator return usage errors.
func usageArgs(v cobra.PositionalArgs) cobra.PositionalArgs {
	return func(c *cobra.Command, args []string) error {
		if err := v(c, args); err != nil {
			return usagef("%v (see: %s --help)", err, c.CommandPath())
		}
		return nil
	}
}

func (a *app) storeDir() (string, error) {
	dir := a.storeFlag
	if dir == "" {
		dir = os.Getenv("SEALKV_STORE")
	}
	if dir == "" {
		return "", usagef("no store: use --store DIR or set SEALKV_STORE")
	}
	return dir, nil
}

func (a *app) keysPath() (string, error) {
	p := a.keysFlag
	if p == "" {
		p = os.Getenv("SEALKV_KEYS")
	}
	if p == "" {
		return "", &cliError{code: exitKeys, msg: "no key file: use --keys FILE or set SEALKV_KEYS", hint: "create one with: sealkv keygen --keys FILE"}
	}
	return p, nil
}

// loadKeys reads and parses the key file.
func (a *app) loadKeys() (*kv.Keys, string, error) {
	path, err := a.keysPath()
	if err != nil {
		return nil, "", err
	}
	b, err := readKeyFile(path)
	if err != nil {
		return nil, path, &cliError{code: exitKeys, msg: fmt.Sprintf("reading key file: %v", unwrapPath(err)), err: err}
	}
	k, err := kv.ParseKeys(b)
	if err != nil {
		return nil, path, &cliError{code: exitKeys, msg: fmt.Sprintf("key file %s: %v", path, err), err: err}
	}
	return k, path, nil
}

// maxKeyFile bounds what loadKeys reads: key files are a few KiB, and a
// mistaken --keys (/dev/zero, a large file) must not fill memory.
const maxKeyFile = 64 << 10

// readKeyFile reads the key file at path, refusing one over maxKeyFile.
func readKeyFile(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxKeyFile+1))
	if err == nil && len(b) > maxKeyFile {
		err = fmt.Errorf("%s: larger than %d KiB, not a sealkv key file", path, maxKeyFile>>10)
	}
	return b, err
}

// unwrapPath keeps a PathError's message short: "open X: no such file".
func unwrapPath(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return fmt.Errorf("%s %s: %w", pe.Op, pe.Path, pe.Err)
	}
	return err
}

// openStore opens the store with the key file. Unless create is set the
// store must already exist, so that a mistyped --store does not create an
// empty store and report "not found".
func (a *app) openStore(create bool) (*kv.DB, error) {
	dir, err := a.storeDir()
	if err != nil {
		return nil, err
	}
	keys, keyPath, err := a.loadKeys()
	if err != nil {
		return nil, err
	}
	if _, err := os.Stat(filepath.Join(dir, "meta")); !create && err != nil {
		return nil, &cliError{code: exitNotFound, msg: fmt.Sprintf("no store at %s", dir), hint: "a store is created by the first put", err: err}
	}
	db, err := kv.Open(dir, &kv.Options{Keys: keys, Logger: a.logger()})
	switch {
	case errors.Is(err, kv.ErrLocked), errors.Is(err, syscall.EWOULDBLOCK):
		// EWOULDBLOCK: the library does not yet map every lock failure
		// Pebble reports to ErrLocked.
		return nil, &cliError{code: exitLocked, msg: fmt.Sprintf("store %s is locked by another process", dir), hint: "only one process can use a store at a time", err: err}
	case errors.Is(err, kv.ErrWrongKeys):
		return nil, &cliError{code: exitKeys, msg: fmt.Sprintf("wrong keys for this store: key file %s does not belong to store %s", keyPath, dir), err: err}
	case err != nil:
		return nil, err
	}
	return db, nil
}

// withStore runs fn with an open store and closes it after.
func (a *app) withStore(create bool, fn func(db *kv.DB) error) error {
	db, err := a.openStore(create)
	if err != nil {
		return err
	}
	err = fn(db)
	if cerr := db.Close(); err == nil {
		err = cerr
	}
	return err
}

// logger sends library warnings to stderr, one short line each and each
// only once, or only errors with -q.
func (a *app) logger() *slog.Logger {
	level := slog.LevelWarn
	if a.quiet {
		level = slog.LevelError
	}
	return slog.New(newLineHandler(a.stderr, level, true))
}

// printf prints a summary line unless -q.
func (a *app) printf(format string, args ...any) {
	if !a.quiet {
		fmt.Fprintf(a.stdout, format, args...)
	}
}

// writeJSON prints v as indented JSON on stdout.
func (a *app) writeJSON(v any) error {
	enc := json.NewEncoder(a.stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// ctx returns the command's context.
func ctx(c *cobra.Command) context.Context {
	if c.Context() != nil {
		return c.Context()
	}
	return context.Background()
}
