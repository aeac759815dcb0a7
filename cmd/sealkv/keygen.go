package main

import (
	"encoding/hex"
	"errors"
	"fmt"
	"os"

	"github.com/spf13/cobra"

	"github.com/sealkv/kv"
)

const keygenLong = `Keygen writes a new key file (mode 0600) to FILE, or to --keys /
$SEALKV_KEYS when FILE is not given. It never overwrites an existing file.

With --write-only it instead exports the write-only part of the existing key
file given by --keys to FILE: a holder of that file can put (and
deduplicate) into the store but can never read anything back.

Keep the full key file safe: without it nothing in the store can be read.`

func (a *app) keygenCommand() *cobra.Command {
	var writeOnly bool
	c := &cobra.Command{
		Use:   "keygen [FILE]",
		Short: "Create a key file, or export its write-only part",
		Long:  keygenLong,
		Example: `  sealkv keygen --keys ~/.sealkv.key
  sealkv keygen --keys ~/.sealkv.key --write-only ingest.key`,
		Args: usageArgs(cobra.MaximumNArgs(1)),
		RunE: func(c *cobra.Command, args []string) error {
			if writeOnly {
				return a.keygenWriteOnly(args)
			}
			return a.keygenNew(args)
		},
	}
	c.Flags().BoolVar(&writeOnly, "write-only", false, "export the write-only part of --keys to FILE")
	return c
}

func (a *app) keygenNew(args []string) error {
	out := ""
	if len(args) == 1 {
		out = args[0]
	} else {
		p, err := a.keysPath()
		if err != nil {
			return usagef("keygen needs FILE, --keys FILE or $SEALKV_KEYS")
		}
		out = p
	}
	k, err := kv.GenerateKeys()
	if err != nil {
		return err
	}
	return a.writeKeys(out, k)
}

func (a *app) keygenWriteOnly(args []string) error {
	if len(args) != 1 {
		return usagef("keygen --write-only needs FILE, the file to write")
	}
	k, _, err := a.loadKeys()
	if err != nil {
		return err
	}
	return a.writeKeys(args[0], k.WriteOnly())
}

// writeKeys writes k to a new file with mode 0600.
func (a *app) writeKeys(path string, k *kv.Keys) error {
	b, err := k.MarshalBinary()
	if err != nil {
		return err
	}
	if err := writeExclusive(path, b); err != nil {
		return err
	}
	fp := k.Fingerprint()
	kind := "full: can put and get"
	if !k.CanRead() {
		kind = "write-only: can put, cannot get"
	}
	if a.json {
		return a.writeJSON(map[string]any{"path": path, "fingerprint": hex.EncodeToString(fp[:]), "write_only": !k.CanRead()})
	}
	a.printf("wrote %s (%s), fingerprint %x\n", path, kind, fp[:8])
	return nil
}

// writeExclusive creates path with mode 0600 and writes b durably; it
// fails if path exists.
func writeExclusive(path string, b []byte) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if errors.Is(err, os.ErrExist) {
		return &cliError{code: exitRefused, msg: fmt.Sprintf("%s exists", path), hint: "keygen never overwrites a key file", err: err}
	}
	if err != nil {
		return unwrapPath(err)
	}
	_, err = f.Write(b)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(path)
	}
	return err
}
