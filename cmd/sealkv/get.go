package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/sealkv/kv"
)

type getFlags struct {
	out       string
	recursive bool
	version   uint64
}

const getLong = `Get writes the content of KEY to stdout or, with -o, to a file. The
file is replaced only once the whole content has been read and synced: a
failed get leaves it as it was.

With -r it rebuilds the tree below KEY in the directory given by -o: KEY
becomes that directory and every child Data (see "sealkv ls --children") a
file or subdirectory in it, named by its key relative to its parent's key.
A Data with children, or whose content is a directory listing written by
"sealkv put", becomes a directory. Existing files are never overwritten.`

func (a *app) getCommand() *cobra.Command {
	var f getFlags
	c := &cobra.Command{
		Use:   "get KEY",
		Short: "Read a key to stdout, a file or a directory tree",
		Long:  getLong,
		Example: `  sealkv get report.pdf > report.pdf
  sealkv get --version 2 -o old.pdf report.pdf
  sealkv get -r photos -o /tmp/photos`,
		Args: usageArgs(cobra.ExactArgs(1)),
		RunE: func(c *cobra.Command, args []string) error { return a.runGet(c, args[0], &f) },
	}
	c.Flags().StringVarP(&f.out, "output", "o", "", "write to this file (or directory with -r) instead of stdout")
	c.Flags().BoolVarP(&f.recursive, "recursive", "r", false, "rebuild the tree below KEY in the -o directory")
	c.Flags().Uint64Var(&f.version, "version", 0, "read this version instead of the current one")
	return c
}

func (a *app) runGet(c *cobra.Command, key string, f *getFlags) error {
	if f.recursive && f.out == "" {
		return usagef("get -r needs -o DIR")
	}
	if f.recursive && f.version != 0 {
		return usagef("--version cannot be used with -r")
	}
	return a.withStore(false, func(db *kv.DB) error {
		if f.recursive {
			return a.getTree(c, db, key, f.out)
		}
		return a.getOne(c, db, key, f)
	})
}

// readErr explains ErrWriteOnly.
func (a *app) readErr(err error) error {
	if errors.Is(err, kv.ErrWriteOnly) {
		p, _ := a.keysPath()
		return &cliError{code: exitKeys, msg: fmt.Sprintf("key file %s is write-only: it can put but not read", p), hint: "use the full key file", err: err}
	}
	return err
}

func (a *app) open(c *cobra.Command, db *kv.DB, key string, version uint64) (*kv.Reader, error) {
	var r *kv.Reader
	var err error
	if version != 0 {
		r, err = db.GetVersion(ctx(c), key, version)
	} else {
		r, err = db.Get(ctx(c), key)
	}
	return r, a.readErr(err)
}

func (a *app) getOne(c *cobra.Command, db *kv.DB, key string, f *getFlags) error {
	r, err := a.open(c, db, key, f.version)
	if err != nil {
		return err
	}
	defer r.Close()
	if f.out == "" {
		_, err := a.copyOut(a.stdout, r)
		return err
	}
	out, err := createOutput(f.out)
	if err != nil {
		return unwrapPath(err)
	}
	start := time.Now()
	n, err := a.copyOut(out, r)
	if err != nil {
		return unwrapPath(out.abort(err))
	}
	if err := out.commit(); err != nil {
		return unwrapPath(err)
	}
	a.printf("%s: %s written to %s (%s)\n", key, fmtBytes(n), f.out, fmtDur(time.Since(start)))
	return nil
}

// copyOut copies r to w with a progress meter.
func (a *app) copyOut(w io.Writer, r *kv.Reader) (int64, error) {
	m := a.newMeter("get", r.Size(), true)
	n, err := io.Copy(m.writer(w), r)
	m.finish()
	return n, err
}

// node is one Data of a tree being read.
type node struct {
	key  string
	rel  string // path below the output directory
	size int64
	kids int
}

// collectTree lists the tree below key, parents before children.
func collectTree(ctx context.Context, db *kv.DB, key string) ([]node, error) {
	d, err := db.Stat(ctx, key)
	if err != nil {
		return nil, err
	}
	nodes := []node{{key: key, size: d.Content.OriginalSize}}
	for i := 0; i < len(nodes); i++ {
		for child, err := range db.Children(ctx, nodes[i].key) {
			if err != nil {
				return nil, err
			}
			rel, err := childPath(nodes[i].key, child)
			if err != nil {
				return nil, err
			}
			cd, err := db.Stat(ctx, child)
			if err != nil {
				return nil, err
			}
			nodes[i].kids++
			nodes = append(nodes, node{key: child, rel: filepath.Join(nodes[i].rel, rel), size: cd.Content.OriginalSize})
		}
	}
	return nodes, nil
}

// childPath is the local path of child below its parent's directory: the
// key relative to the parent's key, or its last element. Paths that would
// leave the output directory are refused.
func childPath(parent, child string) (string, error) {
	rel, ok := strings.CutPrefix(child, strings.TrimSuffix(parent, "/")+"/")
	if !ok {
		rel = child[strings.LastIndexByte(child, '/')+1:]
	}
	p := filepath.FromSlash(rel)
	if !filepath.IsLocal(p) {
		return "", fmt.Errorf("key %q cannot be written below %q: unsafe path %q", child, parent, rel)
	}
	return p, nil
}

func (a *app) getTree(c *cobra.Command, db *kv.DB, key, out string) error {
	nodes, err := collectTree(ctx(c), db, key)
	if err != nil {
		return a.readErr(err)
	}
	var total int64
	for _, n := range nodes {
		total += n.size
	}
	m := a.newMeter("get", total, true)
	start := time.Now()
	files, dirs := 0, 0
	for _, n := range nodes {
		isDir, err := a.getNode(c, db, n, out, m)
		if err != nil {
			m.finish()
			return fmt.Errorf("%s: %w", n.key, err)
		}
		if isDir {
			dirs++
		} else {
			files++
		}
	}
	m.finish()
	took := time.Since(start)
	if a.json {
		return a.writeJSON(map[string]any{"key": key, "output": out, "files": files, "dirs": dirs, "bytes": total, "seconds": took.Seconds()})
	}
	a.printf("got %d files, %d directories, %s into %s in %s (%s)\n", files, dirs, fmtBytes(total), out, fmtDur(took), fmtRate(total, took))
	return nil
}

// getNode writes one node below out and says whether it is a directory.
func (a *app) getNode(c *cobra.Command, db *kv.DB, n node, out string, m *meter) (bool, error) {
	r, err := a.open(c, db, n.key, 0)
	if err != nil {
		return false, err
	}
	defer r.Close()
	dst := filepath.Join(out, n.rel)
	head := make([]byte, min(r.Size(), int64(len(dirMagic))))
	if _, err := io.ReadFull(r, head); err != nil {
		return false, err
	}
	m.add(int64(len(head)))
	if n.kids > 0 || string(head) == dirMagic {
		m.add(r.Size() - int64(len(head)))
		return true, os.MkdirAll(dst, 0o755)
	}
	// A child's key can be more than one element below its parent's
	// ("p/x/y" under "p") with no Data for the directories between.
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return false, err
	}
	return false, writeNew(dst, io.MultiReader(bytes.NewReader(head), m.reader(r)))
}

// writeNew creates dst (never overwriting) with the bytes of r; if that
// fails, it removes dst.
func writeNew(dst string, r io.Reader) error {
	f, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if errors.Is(err, os.ErrExist) {
		return &cliError{code: exitRefused, msg: fmt.Sprintf("%s exists", dst), hint: "get never overwrites files; choose another -o directory", err: err}
	}
	if err != nil {
		return unwrapPath(err)
	}
	_, err = io.Copy(f, r)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(dst) // a partial file would pass for the whole one
	}
	return err
}
