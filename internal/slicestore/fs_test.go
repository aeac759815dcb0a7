package slicestore

import (
	"bytes"
	"errors"
	"io"
	"math/rand/v2"
	"testing"

	"github.com/cockroachdb/pebble/v2/vfs"
)

// writeCounter counts the writes that reach a file, and fails them once
// fail is set.
type writeCounter struct {
	vfs.FS
	writes int
	fail   error
}

func (c *writeCounter) Create(name string, cat vfs.DiskWriteCategory) (vfs.File, error) {
	f, err := c.FS.Create(name, cat)
	return &countedFile{File: f, c: c}, err
}

type countedFile struct {
	vfs.File
	c *writeCounter
}

func (f *countedFile) Write(p []byte) (int, error) {
	if f.c.fail != nil {
		return 0, f.c.fail
	}
	f.c.writes++
	return f.File.Write(p)
}

// size is the length of the file named name as the underlying FS sees it.
func size(t *testing.T, fs vfs.FS, name string) int64 {
	t.Helper()
	fi, err := fs.Stat(name)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Size()
}

func readAll(fs vfs.FS, name string) ([]byte, error) {
	f, err := fs.Open(name)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return io.ReadAll(f)
}

// TestTableWriter checks that sstables are written in writeBuffer-sized
// writes, that every byte written before a Sync, SyncTo, Stat or Close has
// reached the file when it returns, that other files are written as they
// come, and that a failed write fails every later use of the file.
func TestTableWriter(t *testing.T) {
	mem := vfs.NewMem()
	c := &writeCounter{FS: mem}
	fs := keyspaceFS{FS: c}
	rng := rand.New(rand.NewPCG(3, 4))
	block := func(n int) []byte {
		p := make([]byte, n)
		for i := range p {
			p[i] = byte(rng.Uint32())
		}
		return p
	}

	f, err := fs.Create("000001.sst", vfs.WriteCategoryUnspecified)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := f.(*tableWriter); !ok {
		t.Fatalf("Create of an sstable returned %T, want *tableWriter", f)
	}
	var want []byte
	write := func(p []byte) {
		t.Helper()
		if n, err := f.Write(p); n != len(p) || err != nil {
			t.Fatalf("Write(%d bytes) = %d, %v", len(p), n, err)
		}
		want = append(want, p...)
	}
	for range 1000 { // shards of small Puts, each a block of ~600 bytes
		write(block(600))
	}
	if c.writes > len(want)/writeBuffer || size(t, mem, "000001.sst") >= int64(len(want)) {
		t.Fatalf("%d writes, %d of %d bytes in the file before a sync; want at most %d writes and bytes held back",
			c.writes, size(t, mem, "000001.sst"), len(want), len(want)/writeBuffer)
	}
	check := func(op string, call func() error) {
		t.Helper()
		if err := call(); err != nil {
			t.Fatalf("%s: %v", op, err)
		}
		if got := size(t, mem, "000001.sst"); got != int64(len(want)) {
			t.Fatalf("after %s the file holds %d bytes, want %d", op, got, len(want))
		}
	}
	check("SyncTo", func() error { _, err := f.SyncTo(int64(len(want))); return err })
	write(block(3 * writeBuffer)) // a large Put's shard: written directly
	write(block(10))
	check("Stat", func() error {
		fi, err := f.Stat()
		if err == nil && fi.Size() != int64(len(want)) {
			err = errors.New("wrong size")
		}
		return err
	})
	write(block(100))
	check("Sync", f.Sync)
	write(block(100))
	check("Close", f.Close)
	if got, err := readAll(mem, "000001.sst"); err != nil || !bytes.Equal(got, want) {
		t.Fatalf("the file's bytes differ from those written (%d against %d bytes, %v)", len(got), len(want), err)
	}
	if _, err := f.Write([]byte{1}); err == nil {
		t.Fatal("Write after Close succeeded")
	}

	// Not an sstable: every write reaches the file at once.
	g, err := fs.Create("000002.log", vfs.WriteCategoryUnspecified)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := g.(*tableWriter); ok {
		t.Fatal("Create of a log returned a tableWriter")
	}
	before := c.writes
	if _, err := g.Write(block(600)); err != nil || c.writes != before+1 || size(t, mem, "000002.log") != 600 {
		t.Fatalf("a log write: %v, %d writes reached the file, want 1", err, c.writes-before)
	}
	g.Close()

	// A failed write is sticky: the next Sync reports it.
	h, err := fs.Create("000003.sst", vfs.WriteCategoryUnspecified)
	if err != nil {
		t.Fatal(err)
	}
	boom := errors.New("disk full")
	c.fail = boom
	if _, err := h.Write(block(600)); err != nil {
		t.Fatalf("a buffered write failed: %v", err)
	}
	if err := h.Sync(); !errors.Is(err, boom) {
		t.Fatalf("Sync after a failed write: %v, want %v", err, boom)
	}
	c.fail = nil
	if _, err := h.Write(block(600)); !errors.Is(err, boom) {
		t.Fatalf("Write after a failed write: %v, want %v", err, boom)
	}
	if err := h.Close(); !errors.Is(err, boom) {
		t.Fatalf("Close after a failed write: %v, want %v", err, boom)
	}
}
