package main

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/sealkv/kv"
)

type putFlags struct {
	key    string
	prefix string
	parent string
	jobs   int
}

const putLong = `Put stores a file, stdin ("-", needs --key) or a directory tree.

Keys: by default a file's key is its path as given, cleaned, with '/'
separators ("./a//b.txt" becomes "a/b.txt"). --prefix P puts P in front of
that (a leading '/' of an absolute path is dropped). --key K names the file,
or the root of a tree, explicitly.

A directory tree is stored as one Data per file and per directory; every
entry is a child of its directory's Data (kv.WithParent), keyed
"<directory key>/<name>". A directory's content is a small listing: the
line "sealkv directory v1" and then one line per entry, subdirectories with
a trailing '/'. Symlinks and special files are skipped, and so are the
store and the key file if they lie in the tree; file modes and times are
not stored.

Putting content equal to a key's current version adds no version; other
content becomes a new version (see "sealkv versions").`

func (a *app) putCommand() *cobra.Command {
	var f putFlags
	c := &cobra.Command{
		Use:   "put PATH|-",
		Short: "Store a file, stdin or a directory tree",
		Long:  putLong,
		Example: `  sealkv put report.pdf
  sealkv put --prefix backup/ ./photos
  tar c /etc | sealkv put --key etc.tar -`,
		Args: usageArgs(cobra.ExactArgs(1)),
		RunE: func(c *cobra.Command, args []string) error { return a.runPut(c, args[0], &f) },
	}
	c.Flags().StringVar(&f.key, "key", "", "key of the file or of the tree's root")
	c.Flags().StringVar(&f.prefix, "prefix", "", "prefix put in front of the default keys")
	c.Flags().StringVar(&f.parent, "parent", "", "make the file or the tree's root a child of this existing key")
	c.Flags().IntVarP(&f.jobs, "jobs", "j", 8, "files put concurrently")
	return c
}

// rootKey is the key of what is put from arg.
func (f *putFlags) rootKey(arg string) (string, error) {
	if f.key != "" && f.prefix != "" {
		return "", usagef("use --key or --prefix, not both")
	}
	if f.key != "" {
		return f.key, nil
	}
	if arg == "-" {
		return "", usagef("put - (stdin) needs --key")
	}
	k := path.Clean(filepath.ToSlash(arg))
	if f.prefix != "" {
		k = f.prefix + strings.TrimLeft(k, "/")
	}
	return k, nil
}

func (a *app) runPut(c *cobra.Command, arg string, f *putFlags) error {
	key, err := f.rootKey(arg)
	if err != nil {
		return err
	}
	if arg == "-" {
		return a.withStore(true, func(db *kv.DB) error { return a.putStdin(c, db, key, f.parent) })
	}
	p, err := planArg(ctx(c), arg, a.avoid())
	if err != nil {
		return err
	}
	return a.withStore(true, func(db *kv.DB) error {
		m := a.newMeter("put", p.bytes, true)
		t := &treePut{db: db, plan: p, key: keyJoin(key), parent: f.parent, jobs: f.jobs, meter: m}
		start := time.Now()
		res, err := t.run(ctx(c))
		m.finish()
		if err != nil {
			return err
		}
		return a.putSummary(p, res, time.Since(start), db.Stats())
	})
}

// avoid returns the store and the key file, which a tree put must not
// store: the store grows while it is walked, and the key file would put
// the secret keys among the data they protect.
func (a *app) avoid() []avoid {
	var out []avoid
	add := func(name, what string) {
		if info, err := os.Stat(name); err == nil {
			out = append(out, avoid{info, what})
		}
	}
	dir, _ := a.storeDir()
	add(dir, "the store itself")
	keys, _ := a.keysPath()
	add(keys, "the key file")
	return out
}

// planArg plans what "put arg" stores, following a symlink given as arg.
func planArg(ctx context.Context, arg string, avoid []avoid) (*plan, error) {
	info, err := os.Stat(arg)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, &cliError{code: exitNotFound, msg: unwrapPath(err).Error(), err: err}
	}
	if err != nil {
		return nil, unwrapPath(err) // a name too long, say: not "not found"
	}
	if !info.IsDir() {
		if !info.Mode().IsRegular() {
			return nil, fmt.Errorf("%s is not a regular file or directory", arg)
		}
		return &plan{root: arg, entries: []*entry{{size: info.Size()}}, files: 1, bytes: info.Size()}, nil
	}
	root, err := filepath.EvalSymlinks(arg)
	if err != nil {
		return nil, err
	}
	return planTree(ctx, root, 0, avoid...)
}

func (a *app) putStdin(c *cobra.Command, db *kv.DB, key, parent string) error {
	var opts []kv.PutOption
	if parent != "" {
		opts = append(opts, kv.WithParent(parent))
	}
	m := a.newMeter("put", -1, true)
	start := time.Now()
	d, err := db.Put(ctx(c), key, m.reader(os.Stdin), opts...)
	m.finish()
	if err != nil {
		return err
	}
	p := &plan{files: 1, bytes: d.Content.OriginalSize}
	return a.putSummary(p, []putResult{resultOf(d, false, start)}, time.Since(start), db.Stats())
}

// putSummary prints the results (all of them with --json).
func (a *app) putSummary(p *plan, res []putResult, took time.Duration, s kv.Stats) error {
	changed := 0
	for _, r := range res {
		if !r.Unchanged {
			changed++
		}
	}
	if a.json {
		skipped := []string{}
		for _, sk := range p.skipped {
			skipped = append(skipped, sk.name)
		}
		return a.writeJSON(map[string]any{
			"items": res, "files": p.files, "dirs": p.dirs, "bytes": p.bytes,
			"new_versions": changed, "skipped": skipped, "seconds": took.Seconds(), "stats": toStatsJSON(s),
		})
	}
	for _, sk := range p.skipped {
		if !a.quiet { // -q prints no warnings
			fmt.Fprintf(a.stderr, "sealkv: skipped %s (%s)\n", sk.name, sk.why)
		}
	}
	if len(res) == 1 && !a.quiet {
		r := res[0]
		state := fmt.Sprintf("version %d", r.Version)
		if r.Unchanged {
			state += ", unchanged"
		}
		fmt.Fprintf(a.stdout, "%s: %s, %s in %d slices (%s)\n", r.Key, fmtBytes(r.Size), state, r.Slices, fmtDur(took))
		return nil
	}
	a.printf("put %d files, %d directories, %s in %s (%s); %d new versions, %d unchanged\n",
		p.files, p.dirs, fmtBytes(p.bytes), fmtDur(took), fmtRate(p.bytes, took), changed, len(res)-changed)
	a.printf("store: %s logical, %s stored, dedup ratio %.2f\n", fmtBytes(s.LogicalBytes), fmtBytes(s.StoredBytes), ratio(s.LogicalBytes, s.UniqueBytes))
	return nil
}
