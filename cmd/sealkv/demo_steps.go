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
	"sync"
	"time"

	"github.com/sealkv/kv"
)

// putTree puts the demo's plan under key.
func (d *demo) putTree(ctx context.Context, key string) (time.Duration, error) {
	t := &treePut{db: d.db, plan: d.plan, key: keyJoin(key), jobs: d.f.jobs, meter: &meter{}}
	start := time.Now()
	_, err := t.run(ctx)
	return time.Since(start), err
}

func (d *demo) putFirst(ctx context.Context) error {
	took, err := d.putTree(ctx, demoCopy1)
	if err != nil {
		return err
	}
	s := d.db.Stats()
	d.say("%d files + %d directories, %s in %s: %s", d.plan.files, d.plan.dirs, fmtBytes(d.plan.bytes), fmtDur(took), fmtRate(d.plan.bytes, took))
	d.say("store: %d data, %d unique slices; logical %s, unique %s, stored %s", s.Data, s.Slices, fmtBytes(s.LogicalBytes), fmtBytes(s.UniqueBytes), fmtBytes(s.StoredBytes))
	d.say("dedup ratio %.2f (logical / unique); stored / logical %.2f (zstd, sealing, %d+%d Reed-Solomon shards)",
		ratio(s.LogicalBytes, s.UniqueBytes), ratio(s.StoredBytes, s.LogicalBytes), kv.DefaultDataShards, kv.DefaultParityShards)
	return nil
}

func (d *demo) putSecond(ctx context.Context) error {
	before := d.db.Stats()
	took, err := d.putTree(ctx, demoCopy2)
	if err != nil {
		return err
	}
	s := d.db.Stats()
	d.say("%d files + %d directories, %s in %s: %s", d.plan.files, d.plan.dirs, fmtBytes(d.plan.bytes), fmtDur(took), fmtRate(d.plan.bytes, took))
	d.say("logical bytes %s -> %s; stored bytes %s -> %s (%+d bytes)", fmtBytes(before.LogicalBytes), fmtBytes(s.LogicalBytes),
		fmtBytes(before.StoredBytes), fmtBytes(s.StoredBytes), s.StoredBytes-before.StoredBytes)
	d.say("every slice was already stored: only names and references were written; dedup ratio %.2f", ratio(s.LogicalBytes, s.UniqueBytes))
	return nil
}

// pickEdited picks the planned file closest to 2 MiB: big enough for
// several slices.
func (d *demo) pickEdited() *entry {
	var best *entry
	dist := func(e *entry) int64 { return max(e.size-2<<20, 2<<20-e.size) }
	for _, e := range d.plan.entries {
		if !e.dir && (best == nil || dist(e) < dist(best)) {
			best = e
		}
	}
	return best
}

func (d *demo) newVersion(ctx context.Context) error {
	e := d.pickEdited()
	d.edited = keyJoin(demoCopy1)(e.rel)
	d.editedDir = keyJoin(demoCopy1)(parentRel(e.rel))
	orig, err := os.ReadFile(filepath.Join(d.plan.root, filepath.FromSlash(e.rel)))
	if err != nil {
		return err
	}
	before := d.db.Stats()
	edited := append([]byte("// one line inserted by the sealkv demo\n"), orig...)
	data, err := d.db.Put(ctx, d.edited, bytes.NewReader(edited))
	if err != nil {
		return err
	}
	s := d.db.Stats()
	d.say("$ sealkv versions %s", d.edited)
	if err := d.a.printVersions(data); err != nil {
		return err
	}
	d.say("new unique slices: %d of the version's %d; stored bytes +%s", s.Slices-before.Slices, data.Content.NumSlices, fmtBytes(s.StoredBytes-before.StoredBytes))
	if data.Content.NumSlices > 1 {
		d.say("(content-defined chunking: an insertion changes only the slice around it, the others dedup)")
	}
	return nil
}

func (d *demo) children(ctx context.Context) error {
	d.say("$ sealkv ls --children %s", d.editedDir)
	n := 0
	for k, err := range d.db.Children(ctx, d.editedDir) {
		if err != nil {
			return err
		}
		if n < 8 {
			d.say("%s", k)
		}
		n++
	}
	if n > 8 {
		d.say("... %d children in all", n)
	}
	return nil
}

func (d *demo) deletes(ctx context.Context) error {
	if err := d.expectRefused(ctx, d.editedDir, kv.ErrHasChildren); err != nil {
		return err
	}
	if err := d.expectRefused(ctx, d.edited, kv.ErrHasVersions); err != nil {
		return err
	}
	d.say("$ sealkv prune %s --keep 0", d.edited)
	r, err := d.db.PruneVersions(ctx, d.edited, 0)
	if err != nil {
		return err
	}
	d.a.printReport("pruned", toReportJSON(d.edited, r))
	d.say("$ sealkv rm %s", d.edited)
	if r, err = d.db.Delete(ctx, d.edited); err != nil {
		return err
	}
	d.a.printReport("deleted", toReportJSON(d.edited, r))
	return nil
}

// expectRefused deletes key and shows the refusal the CLI would print.
func (d *demo) expectRefused(ctx context.Context, key string, want error) error {
	d.say("$ sealkv rm %s", key)
	_, err := d.db.Delete(ctx, key)
	if !errors.Is(err, want) {
		return fmt.Errorf("delete %s: want %v, got %v", key, want, err)
	}
	code, line := describe(refusal(ctx, d.db, key, err))
	d.say("%s", line)
	d.say("(refused with exit code %d; nothing was changed)", code)
	return nil
}

func (d *demo) bigFile(ctx context.Context) error {
	info, err := os.Stat(d.big)
	if err != nil {
		return err
	}
	f, err := os.Open(d.big)
	if err != nil {
		return err
	}
	defer f.Close()
	start := time.Now()
	data, err := d.db.Put(ctx, demoBig, f)
	if err != nil {
		return err
	}
	took := time.Since(start)
	d.say("%s (%s) as %q", d.big, fmtBytes(info.Size()), demoBig)
	d.say("put %s in %s: %s, %d slices, %s stored", fmtBytes(info.Size()), fmtDur(took), fmtRate(info.Size(), took), data.Content.NumSlices, fmtBytes(data.Content.StorageSize))
	start = time.Now()
	if err := d.verify(ctx, demoBig, fileSource(d.big)); err != nil {
		return err
	}
	took = time.Since(start)
	d.say("get %s in %s: %s, byte for byte identical", fmtBytes(info.Size()), fmtDur(took), fmtRate(info.Size(), took))
	return nil
}

// source opens the expected content of a key.
type source func() (io.ReadCloser, error)

func fileSource(path string) source {
	return func() (io.ReadCloser, error) { return os.Open(path) }
}

func bytesSource(b []byte) source {
	return func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(b)), nil }
}

// verify reads key fully and compares it with want.
func (d *demo) verify(ctx context.Context, key string, want source) error {
	r, err := d.db.Get(ctx, key)
	if err != nil {
		return err
	}
	defer r.Close()
	w, err := want()
	if err != nil {
		return err
	}
	defer w.Close()
	if err := sameBytes(r, w); err != nil {
		return fmt.Errorf("%s: %w", key, err)
	}
	return nil
}

// sameBytes compares two streams.
func sameBytes(got, want io.Reader) error {
	a, b := make([]byte, 1<<20), make([]byte, 1<<20)
	for off := int64(0); ; {
		n, errA := io.ReadFull(got, a)
		m, errB := io.ReadFull(want, b)
		if n != m || !bytes.Equal(a[:n], b[:m]) {
			return fmt.Errorf("content differs near byte %d", off)
		}
		off += int64(n)
		endA := errA == io.EOF || errA == io.ErrUnexpectedEOF
		endB := errB == io.EOF || errB == io.ErrUnexpectedEOF
		switch {
		case errA != nil && !endA:
			return errA
		case errB != nil && !endB:
			return errB
		case endA || endB:
			return nil
		}
	}
}

func (d *demo) corrupt(ctx context.Context) error {
	if err := d.db.Close(); err != nil {
		return err
	}
	d.db = nil
	sst, size, err := largestSST(filepath.Join(d.storeDir(), "slices"))
	if err != nil {
		return err
	}
	off := size / 2
	if err := flipByte(sst, off); err != nil {
		return err
	}
	d.say("closed the store; flipped byte %d of %s (%s, the largest sstable of the slice keyspace)", off, filepath.Base(sst), fmtBytes(size))
	if err := d.open(); err != nil {
		return err
	}
	d.logs.take()
	n, total, took, err := d.verifyAll(ctx)
	if err != nil {
		return err
	}
	d.say("reopened; read back %d keys holding every live slice, %s in %s (%s): every byte identical", n, fmtBytes(total), fmtDur(took), fmtRate(total, took))
	if !d.showLogs() {
		d.say("no read needed the damaged shard (reads take the data shards; parity only when one is bad); scrub checks them all")
	}
	return nil
}

// showLogs prints what the library logged since the last call, equal
// lines once with their count, and says whether there was anything.
func (d *demo) showLogs() bool {
	logs := strings.TrimSpace(d.logs.take())
	if logs == "" {
		return false
	}
	var order []string
	count := map[string]int{}
	for _, l := range strings.Split(logs, "\n") {
		if count[l] == 0 {
			order = append(order, l)
		}
		count[l]++
	}
	for _, l := range order {
		times := ""
		if count[l] > 1 {
			times = fmt.Sprintf(" [%d times]", count[l])
		}
		d.say("library log%s: %s", times, l)
	}
	return true
}

// largestSST finds the largest .sst file in dir.
func largestSST(dir string) (string, int64, error) {
	names, err := filepath.Glob(filepath.Join(dir, "*.sst"))
	if err != nil {
		return "", 0, err
	}
	best, size := "", int64(-1)
	for _, n := range names {
		if info, err := os.Stat(n); err == nil && info.Size() > size {
			best, size = n, info.Size()
		}
	}
	if best == "" {
		return "", 0, fmt.Errorf("no sstable in %s", dir)
	}
	return best, size, nil
}

// flipByte inverts the byte at off of the file at path, durably.
func flipByte(path string, off int64) error {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	b := make([]byte, 1)
	if _, err := f.ReadAt(b, off); err != nil {
		return err
	}
	b[0] ^= 0xFF
	if _, err := f.WriteAt(b, off); err != nil {
		return err
	}
	return f.Sync()
}

// expected lists the keys that together hold every live slice, with
// their expected content: the first tree (copy2 holds the same slices),
// copy2's copy of the edited file (its first version's slices) and the
// large file.
func (d *demo) expected() map[string]source {
	want := map[string]source{demoBig: fileSource(d.big)}
	name := keyJoin(demoCopy1)
	for _, e := range d.plan.entries {
		key := name(e.rel)
		switch {
		case key == d.edited:
			want[keyJoin(demoCopy2)(e.rel)] = fileSource(filepath.Join(d.plan.root, filepath.FromSlash(e.rel)))
		case e.dir:
			want[key] = bytesSource(e.listing())
		default:
			want[key] = fileSource(filepath.Join(d.plan.root, filepath.FromSlash(e.rel)))
		}
	}
	return want
}

// verifyAll reads every key back, d.f.jobs at a time, and compares it
// with its source.
func (d *demo) verifyAll(ctx context.Context) (int, int64, time.Duration, error) {
	want := d.expected()
	var total int64
	var mu sync.Mutex
	var firstErr error
	keys := make(chan string)
	var wg sync.WaitGroup
	start := time.Now()
	for range max(1, d.f.jobs) {
		wg.Go(func() {
			for k := range keys {
				err := d.verify(ctx, k, want[k])
				st, serr := d.db.Stat(ctx, k)
				mu.Lock()
				if err = errors.Join(err, serr); err != nil && firstErr == nil {
					firstErr = err
				}
				if serr == nil {
					total += st.Content.OriginalSize
				}
				mu.Unlock()
			}
		})
	}
	for k := range want {
		keys <- k
	}
	close(keys)
	wg.Wait()
	return len(want), total, time.Since(start), firstErr
}

func (d *demo) scrub(ctx context.Context) error {
	for _, repair := range []bool{true, false} {
		d.say("$ sealkv scrub%s", map[bool]string{true: " --repair", false: ""}[repair])
		res, err := runScrub(ctx, d.db, repair, nil)
		if err != nil {
			return err
		}
		d.a.printScrub(res)
		if d.showLogs() && !repair {
			d.say("(the repaired shard's old copy stays in its sstable until Pebble rewrites it; scans still trip over its checksum)")
		}
	}
	return nil
}
