package slicestore

import (
	"bytes"
	"errors"
	"io"
	"math/rand/v2"
	"path/filepath"
	"testing"

	"github.com/cockroachdb/pebble/v2/objstorage/objstorageprovider"
	"github.com/cockroachdb/pebble/v2/vfs"
)

// writeCounter counts the writes that reach a file, and fails them once
// fail is set.
type writeCounter struct {
	vfs.FS
	writes, closes int
	fail           error
}

func (c *writeCounter) Create(name string, cat vfs.DiskWriteCategory) (vfs.File, error) {
	f, err := c.FS.Create(name, cat)
	return &countedFile{File: f, c: c}, err
}

type countedFile struct {
	vfs.File
	c *writeCounter
}

func (f *countedFile) Close() error {
	f.c.closes++
	return f.File.Close()
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

// randomBytes returns n bytes from rng.
func randomBytes(rng *rand.Rand, n int) []byte {
	p := make([]byte, n)
	for i := range p {
		p[i] = byte(rng.Uint32())
	}
	return p
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
	block := func(n int) []byte { return randomBytes(rng, n) }

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
		want = append(want, p...) // before: Write may scribble on p (vfs.File allows it)
		if n, err := f.Write(p); n != len(p) || err != nil {
			t.Fatalf("Write(%d bytes) = %d, %v", len(p), n, err)
		}
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
	before := c.writes
	write(block(3 * writeBuffer)) // larger than the buffer: written directly
	if c.writes != before+1 {
		t.Fatalf("a write of 3 buffers reached the file in %d writes, want 1", c.writes-before)
	}
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
	closes := c.closes
	check("Close", f.Close)
	if err := f.Close(); !errors.Is(err, errClosed) || c.closes != closes+1 {
		t.Fatalf("a second Close: %v, and %d closes of the file, want errClosed and 1", err, c.closes-closes)
	}
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
	before = c.writes
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

// TestTableWriterFailureCloses checks that an sstable whose write fails is
// closed even though Pebble never reaches its Close: Pebble writes through
// vfs.NewSyncingFile, whose Close returns as soon as its Sync fails.
func TestTableWriterFailureCloses(t *testing.T) {
	for _, finish := range []bool{true, false} {
		c := &writeCounter{FS: vfs.NewMem()}
		f, err := keyspaceFS{FS: c}.Create("000001.sst", vfs.WriteCategoryUnspecified)
		if err != nil {
			t.Fatal(err)
		}
		// As objstorageprovider creates an sstable's Writable.
		w := objstorageprovider.NewFileWritable(vfs.NewSyncingFile(f, vfs.SyncingFileOptions{BytesPerSync: 512 << 10}))
		for range 100 {
			if err := w.Write(make([]byte, 600)); err != nil {
				t.Fatal(err)
			}
		}
		boom := errors.New("disk full")
		c.fail = boom
		if finish {
			if err := w.Finish(); !errors.Is(err, boom) {
				t.Fatalf("Finish after a failed write: %v, want %v", err, boom)
			}
		} else {
			w.Abort()
		}
		if c.closes != 1 {
			t.Fatalf("finish %v: the file was closed %d times, want once", finish, c.closes)
		}
	}
}

// TestChunkedReader checks that a file opened for sequential reads returns
// exactly what the file holds for reads in order, backwards, across chunk
// boundaries, larger than a chunk, and at and past the end, and that it
// reads chunks only after chunkAfter small reads in a row.
func TestChunkedReader(t *testing.T) {
	size := 3*readChunk + 1234
	rng := rand.New(rand.NewPCG(1, 2))
	want := randomBytes(rng, size)
	name := filepath.Join(t.TempDir(), "f")
	w, err := vfs.Default.Create(name, vfs.WriteCategoryUnspecified)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write(want); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	fs := keyspaceFS{FS: vfs.Default, readahead: true}
	f, err := fs.Open(name, vfs.SequentialReadsOption)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	cr, ok := f.(*chunkedReader)
	if !ok {
		t.Fatalf("a sequential open returned %T, want *chunkedReader", f)
	}
	if g, err := fs.Open(name, vfs.RandomReadsOption); err != nil {
		t.Fatal(err)
	} else if _, ok := g.(*chunkedReader); ok {
		t.Fatal("a random-read open returned a chunkedReader")
	} else {
		g.Close()
	}

	read := func(off, n int) {
		t.Helper()
		p := make([]byte, n)
		got, err := f.ReadAt(p, int64(off))
		wantN := min(n, max(size-off, 0))
		if got != wantN || !bytes.Equal(p[:got], want[off:off+got]) {
			t.Fatalf("ReadAt(%d bytes at %d) = %d bytes (want %d), content equal %v", n, off, got, wantN, bytes.Equal(p[:got], want[off:off+got]))
		}
		if wantN < n && !errors.Is(err, io.EOF) || wantN == n && err != nil {
			t.Fatalf("ReadAt(%d bytes at %d): error %v", n, off, err)
		}
	}
	for off := 0; off < 600*chunkAfter; off += 600 { // a few blocks: read directly
		read(off, 600)
	}
	if cr.chunk != nil {
		t.Fatalf("a chunk after %d reads in a row, want none before %d", chunkAfter, chunkAfter+1)
	}
	for off := 600 * chunkAfter; off < size; off += 600 { // block by block, in order
		read(off, min(600, size-off))
	}
	if cr.chunk == nil {
		t.Fatal("no chunk after a whole file of reads in a row")
	}
	read(readChunk-10, 20)       // across a chunk boundary
	read(10, 20)                 // backwards
	read(readChunk/2, readChunk) // larger than a quarter chunk: direct
	read(size-100, 100)          // the last bytes
	read(size-50, 100)           // past the end
	read(size, 10)               // at the end
	for range 1000 {             // anywhere
		n := 1 + rng.IntN(readChunk/2)
		read(rng.IntN(size), n)
	}
}
