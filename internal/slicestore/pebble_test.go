package slicestore

import (
	"bytes"
	"errors"
	"io"
	"math/rand/v2"
	"path/filepath"
	"testing"

	"github.com/cockroachdb/pebble/v2/vfs"
)

// TestChunkedReader checks that a file opened for sequential reads returns
// exactly what the file holds for reads in order, backwards, across chunk
// boundaries, larger than a chunk, and at and past the end, and that it
// reads chunks only after chunkAfter small reads in a row.
func TestChunkedReader(t *testing.T) {
	size := 3*readChunk + 1234
	want := make([]byte, size)
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range want {
		want[i] = byte(rng.Uint32())
	}
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
