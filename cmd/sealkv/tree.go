package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sealkv/kv"
)

// dirMagic starts the content of a directory's Data. A directory is stored
// as a small listing: this line, then one line per entry put with it, in
// byte order, subdirectories with a trailing '/'. The listing records what
// the directory held when it was put; the tree itself is the Data's
// Children, which "get -r" follows. A Data without children is rebuilt as
// a directory only if its content starts with dirMagic.
const dirMagic = "sealkv directory v1\n"

// entry is one file or directory of a local tree to put.
type entry struct {
	rel   string // slash-separated path below the root; "" is the root
	dir   bool
	size  int64
	names []string // directories: entry names, subdirectories with '/'
}

// listing is the content stored for directory e.
func (e *entry) listing() []byte {
	var b strings.Builder
	b.WriteString(dirMagic)
	for _, n := range e.names {
		b.WriteString(n)
		b.WriteByte('\n')
	}
	return []byte(b.String())
}

// plan is a local tree in walk order: every directory before its entries.
type plan struct {
	root    string
	entries []*entry
	files   int
	dirs    int
	bytes   int64 // file bytes
	skipped []skip
}

// skip is a path the plan leaves out, and why.
type skip struct{ name, why string }

// avoid is a file or directory a tree put must not store: the store
// itself, which it is writing, or the key file.
type avoid struct {
	info os.FileInfo
	what string
}

// planTree walks root. Symlinks and other non-regular files are skipped,
// and so are the paths in avoid. With limit > 0 the walk stops before the
// file that would exceed limit bytes, so the plan is the tree's first files
// in lexical order. The walk stops when ctx ends (Ctrl-C during the scan of
// a large tree).
func planTree(ctx context.Context, root string, limit int64, avoid ...avoid) (*plan, error) {
	p := &plan{root: root}
	byRel := map[string]*entry{}
	err := filepath.WalkDir(root, func(name string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		if what := avoided(d, avoid); what != "" {
			p.skipped = append(p.skipped, skip{name, what})
			if d.IsDir() {
				return fs.SkipDir
			}
			return nil
		}
		rel, err := filepath.Rel(root, name)
		if err != nil {
			return err
		}
		rel = filepath.ToSlash(rel)
		if rel == "." {
			rel = ""
		}
		e, stop, err := p.entryFor(name, rel, d, limit)
		if err != nil || stop {
			return err
		}
		if e == nil {
			return nil
		}
		p.add(e, byRel)
		return nil
	})
	if err == fs.SkipAll {
		err = nil
	}
	return p, err
}

// avoided says which of avoid d is, or "".
func avoided(d fs.DirEntry, avoid []avoid) string {
	if len(avoid) == 0 {
		return ""
	}
	info, err := d.Info()
	if err != nil {
		return ""
	}
	for _, a := range avoid {
		if os.SameFile(info, a.info) {
			return a.what
		}
	}
	return ""
}

// entryFor makes the entry for one walked path; nil for skipped files.
func (p *plan) entryFor(name, rel string, d fs.DirEntry, limit int64) (*entry, bool, error) {
	if d.IsDir() {
		return &entry{rel: rel, dir: true}, false, nil
	}
	if !d.Type().IsRegular() {
		p.skipped = append(p.skipped, skip{name, "not a regular file or directory"})
		return nil, false, nil
	}
	info, err := d.Info()
	if err != nil {
		return nil, false, err
	}
	if limit > 0 && p.bytes+info.Size() > limit {
		return nil, true, fs.SkipAll
	}
	return &entry{rel: rel, size: info.Size()}, false, nil
}

// add appends e and lists it in its directory.
func (p *plan) add(e *entry, byRel map[string]*entry) {
	p.entries = append(p.entries, e)
	if e.dir {
		p.dirs++
		byRel[e.rel] = e
	} else {
		p.files++
		p.bytes += e.size
	}
	if e.rel == "" {
		return
	}
	parent := byRel[parentRel(e.rel)]
	name := path.Base(e.rel)
	if e.dir {
		name += "/"
	}
	parent.names = append(parent.names, name)
}

// parentRel is the rel of the directory holding rel.
func parentRel(rel string) string {
	if i := strings.LastIndexByte(rel, '/'); i >= 0 {
		return rel[:i]
	}
	return ""
}

// namer maps a rel path to its Data key.
type namer func(rel string) string

// keyJoin names entries below a root key: root + "/" + rel.
func keyJoin(root string) namer {
	return func(rel string) string {
		switch {
		case rel == "":
			return root
		case strings.HasSuffix(root, "/"):
			return root + rel
		}
		return root + "/" + rel
	}
}

// putResult is what put did to one entry.
type putResult struct {
	Key       string `json:"key"`
	Dir       bool   `json:"dir,omitempty"`
	Size      int64  `json:"size"`
	Version   uint64 `json:"version"`
	Stored    int64  `json:"stored_size"`
	Slices    int    `json:"slices"`
	Unchanged bool   `json:"unchanged"`
}

// treePut puts a plan into a store.
type treePut struct {
	db     *kv.DB
	plan   *plan
	key    namer
	parent string // parent of the root, or ""
	jobs   int
	meter  *meter
}

// run puts the directories level by level, so every parent exists before
// its entries, then the files; each group with t.jobs Puts in flight
// (Pebble groups their commits). Results are in plan order.
func (t *treePut) run(ctx context.Context) ([]putResult, error) {
	res := make([]putResult, len(t.plan.entries))
	var levels [][]int
	var files []int
	for i, e := range t.plan.entries {
		if !e.dir {
			files = append(files, i)
			continue
		}
		d := depth(e.rel)
		for len(levels) <= d {
			levels = append(levels, nil)
		}
		levels[d] = append(levels[d], i)
	}
	for _, idx := range append(levels, files) {
		if err := t.putAll(ctx, idx, res); err != nil {
			return nil, err
		}
	}
	return res, nil
}

// depth is 0 for the root, 1 for its entries and so on.
func depth(rel string) int {
	if rel == "" {
		return 0
	}
	return strings.Count(rel, "/") + 1
}

// putAll puts the entries at idx of the plan concurrently. A panic in a
// worker is raised again here, in the command's goroutine, where run
// turns it into one line and exitInternal; in the worker it would end the
// process with a stack trace.
func (t *treePut) putAll(ctx context.Context, idx []int, res []putResult) error {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	next := make(chan int)
	var wg sync.WaitGroup
	var panicked atomic.Pointer[workerPanic]
	for range max(1, min(t.jobs, len(idx))) {
		wg.Go(func() {
			for i := range next {
				r, err := t.putRecover(ctx, t.plan.entries[i])
				if p, ok := err.(*workerPanic); ok {
					panicked.CompareAndSwap(nil, p)
				}
				if err != nil {
					cancel(err)
					continue
				}
				res[i] = r
			}
		})
	}
	for _, i := range idx {
		if ctx.Err() != nil {
			break
		}
		next <- i
	}
	close(next)
	wg.Wait()
	if p := panicked.Load(); p != nil {
		panic(p.value)
	}
	return context.Cause(ctx)
}

// workerPanic is a panic recovered in a put worker.
type workerPanic struct{ value any }

// Error describes the panic.
func (p *workerPanic) Error() string { return fmt.Sprintf("panic: %v", p.value) }

// putRecover is putEntry with a panic returned as a *workerPanic, so that
// the worker goes on draining the queue and putAll does not block.
func (t *treePut) putRecover(ctx context.Context, e *entry) (r putResult, err error) {
	defer func() {
		if v := recover(); v != nil {
			err = &workerPanic{value: v}
		}
	}()
	return t.putEntry(ctx, e)
}

func (t *treePut) parentOf(e *entry) string {
	if e.rel == "" {
		return t.parent
	}
	return t.key(parentRel(e.rel))
}

// putEntry puts a directory's listing or a file's content.
func (t *treePut) putEntry(ctx context.Context, e *entry) (putResult, error) {
	if e.dir {
		return t.put(ctx, e, bytes.NewReader(e.listing()))
	}
	f, err := os.Open(filepath.Join(t.plan.root, filepath.FromSlash(e.rel)))
	if err != nil {
		return putResult{}, err
	}
	defer f.Close()
	return t.put(ctx, e, t.meter.reader(f))
}

func (t *treePut) put(ctx context.Context, e *entry, r io.Reader) (putResult, error) {
	var opts []kv.PutOption
	if p := t.parentOf(e); p != "" {
		opts = append(opts, kv.WithParent(p))
	}
	start := time.Now()
	d, err := t.db.Put(ctx, t.key(e.rel), r, opts...)
	if err != nil {
		return putResult{}, err
	}
	return resultOf(d, e.dir, start), nil
}

// resultOf describes the Data a Put returned. Content equal to the
// current version adds no version, so a current version created before
// the Put started means "unchanged".
func resultOf(d *kv.Data, dir bool, start time.Time) putResult {
	c := d.Content
	return putResult{Key: d.Key, Dir: dir, Size: c.OriginalSize, Version: c.Version, Stored: c.StorageSize, Slices: c.NumSlices, Unchanged: c.Created.Before(start)}
}
