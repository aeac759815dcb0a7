package slicestore

import (
	"errors"
	"io"
	"strings"
	"sync"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/sealkv/kv/internal/bufpool"
)

// keyspaceFS is a keyspace's file system: the given one, with sstables
// written in large writes (Create) and, for compactions, read in large reads
// (Open).
type keyspaceFS struct {
	vfs.FS
	readahead bool // ignore RandomReadsOption (see Open)
}

// TableFS returns fs with sstables written in large writes and read in
// large reads by compactions, as the slice keyspace's are; for the meta
// keyspace, whose blocks are 4 KiB. Unlike the slice keyspace's, its
// sstables keep Pebble's FADV_RANDOM: its reads are point lookups.
func TableFS(fs vfs.FS) vfs.FS { return keyspaceFS{FS: fs} }

// Open, with readahead set, keeps the kernel's readahead on for sstables,
// which Pebble opens with FADV_RANDOM. Pebble's own readahead is per
// iterator, and every slice read is a fresh iterator over a few shards, so it
// never ramps up; but a Put's slices lie one after the other in its sstables
// and a Reader reads them in that order, which is what the kernel's
// readahead detects. Cold 1 GiB Gets, 5 runs each, alternating: median
// 1.19 s with it, 1.49 s without.
//
// A file opened for sequential reads (a compaction's input) reads ahead in
// user space too: see chunkedReader.
func (fs keyspaceFS) Open(name string, opts ...vfs.OpenOption) (vfs.File, error) {
	keep := make([]vfs.OpenOption, 0, len(opts))
	sequential := false
	for _, o := range opts {
		sequential = sequential || o == vfs.SequentialReadsOption
		if o != vfs.RandomReadsOption || !fs.readahead {
			keep = append(keep, o)
		}
	}
	f, err := fs.FS.Open(name, keep...)
	if err != nil || !sequential {
		return f, err
	}
	return &chunkedReader{File: f}, nil
}

// readChunk is what a chunkedReader reads at a time, and chunkAfter how
// many small reads in a row, each starting where the last ended, come first.
const (
	readChunk  = 256 << 10
	chunkAfter = 8
)

// chunkedReader serves runs of small sequential ReadAts from one
// readChunk-sized read of the bytes at and after them. Pebble opens a
// compaction's input files for sequential reads and then reads them a block
// at a time, and in this keyspace a block is one shard: a compaction of
// small Puts' shards made one pread per ~600 bytes. The 100,000-file tree
// with each Put durable (its shards go through a memtable, a flush and a
// compaction) spent 3.5 s of a 32 s CPU profile in them. An iterator that
// has read 256 KiB in order is switched to such a file too, e.g. near the
// end of a large slice's shards, which is why chunks start only after
// chunkAfter reads in a row: a slice read then never pays for a chunk.
// sstables are immutable, so a chunk never goes stale.
type chunkedReader struct {
	vfs.File
	mu    sync.Mutex
	chunk []byte // the file's bytes [off, off+len(chunk))
	off   int64
	next  int64 // where the last read ended
	run   int   // small reads in a row that started where the one before ended
}

func (f *chunkedReader) ReadAt(p []byte, off int64) (int, error) {
	if len(p) > readChunk/4 {
		return f.File.ReadAt(p, off)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	end := off + int64(len(p))
	if off == f.next {
		f.run++
	} else {
		f.run = 0
	}
	f.next = end
	if off >= f.off && end <= f.off+int64(len(f.chunk)) {
		return copy(p, f.chunk[off-f.off:]), nil
	}
	if f.run <= chunkAfter {
		return f.File.ReadAt(p, off)
	}
	if f.chunk == nil {
		f.chunk = make([]byte, readChunk)
	}
	n, err := f.File.ReadAt(f.chunk[:cap(f.chunk)], off)
	f.chunk, f.off = f.chunk[:n], off
	if errors.Is(err, io.EOF) && end <= off+int64(n) {
		err = nil // the chunk ran past the end of the file, p did not
	}
	return copy(p, f.chunk), err
}

// writeBuffer is the size of the writes a tableWriter makes.
const writeBuffer = 256 << 10

// Create returns sstables as tableWriters. Pebble writes an sstable through
// a 4 KiB bufio.Writer, and its blocks are small: one shard in the slice
// keyspace, 4 KiB in the meta keyspace. A memtable flush of small Puts'
// shards made one write(2) per 4 KiB, and a large Put's table two per shard
// (the block, then the rest of the 4 KiB buffer with the next block's
// start). Other files (the write-ahead log, the manifest) are written as
// Pebble writes them.
func (fs keyspaceFS) Create(name string, category vfs.DiskWriteCategory) (vfs.File, error) {
	f, err := fs.FS.Create(name, category)
	if err != nil || !strings.HasSuffix(name, ".sst") {
		return f, err
	}
	return &tableWriter{File: f, buf: bufpool.Get(writeBuffer)[:0]}, nil
}

// tableWriter gathers an sstable's writes into writeBuffer-sized ones. What
// it holds is written out before any other use of the file, so a Sync,
// SyncTo, Stat or Close sees every byte written before it: nothing is
// durable or visible later than Pebble expects, only written to the kernel
// in fewer calls. An sstable is read only once it is finished (synced and
// closed), so no reader misses what a tableWriter holds. Its buffer comes
// from bufpool, outside the Go heap: with sync.Pool's 256 KiB heap buffers,
// which the collector drops every other cycle, 1 GiB Puts spent more system
// CPU than with none (higher in 5 of 6 alternated pairs; most likely
// faulting in fresh pages, not traced), not less.
type tableWriter struct {
	vfs.File
	buf []byte // what is held; nil once f is closed or failed
	err error  // why f is unusable: the first failed write, or errClosed
}

func (f *tableWriter) Write(p []byte) (int, error) {
	if len(f.buf)+len(p) > cap(f.buf) || f.err != nil {
		if err := f.flush(); err != nil {
			return 0, err
		}
	}
	if len(p) >= cap(f.buf) {
		n, err := f.File.Write(p)
		if err != nil {
			f.fail(err)
		}
		return n, err
	}
	f.buf = append(f.buf, p...)
	return len(p), nil
}

// flush writes out what f holds.
func (f *tableWriter) flush() error {
	if f.err == nil && len(f.buf) > 0 {
		if _, err := f.File.Write(f.buf); err != nil {
			f.fail(err)
		} else {
			f.buf = f.buf[:0]
		}
	}
	return f.err
}

// fail makes err sticky and closes f at once. Pebble closes an sstable
// through vfs.syncingFile, whose Close returns when its Sync fails without
// closing the file beneath; after a failed write every Sync fails, so
// waiting for a Close would leak the file and the buffer.
func (f *tableWriter) fail(err error) {
	f.err = err
	_ = f.release()
}

// release returns the buffer and closes the file.
func (f *tableWriter) release() error {
	bufpool.Put(f.buf)
	f.buf = nil
	return f.File.Close()
}

// Close writes out what f holds and closes the file; after a failed write
// (the file is closed already) it returns that write's error.
func (f *tableWriter) Close() error {
	if err := f.flush(); err != nil {
		return err
	}
	f.err = errClosed
	return f.release()
}

func (f *tableWriter) Sync() error {
	if err := f.flush(); err != nil {
		return err
	}
	return f.File.Sync()
}

func (f *tableWriter) SyncData() error {
	if err := f.flush(); err != nil {
		return err
	}
	return f.File.SyncData()
}

func (f *tableWriter) SyncTo(length int64) (bool, error) {
	if err := f.flush(); err != nil {
		return false, err
	}
	return f.File.SyncTo(length)
}

func (f *tableWriter) Stat() (vfs.FileInfo, error) {
	if err := f.flush(); err != nil {
		return nil, err
	}
	return f.File.Stat()
}

func (f *tableWriter) Preallocate(off, length int64) error {
	if err := f.flush(); err != nil {
		return err
	}
	return f.File.Preallocate(off, length)
}

func (f *tableWriter) WriteAt(p []byte, off int64) (int, error) {
	if err := f.flush(); err != nil {
		return 0, err
	}
	return f.File.WriteAt(p, off)
}

func (f *tableWriter) Read(p []byte) (int, error) {
	if err := f.flush(); err != nil {
		return 0, err
	}
	return f.File.Read(p)
}

func (f *tableWriter) ReadAt(p []byte, off int64) (int, error) {
	if err := f.flush(); err != nil {
		return 0, err
	}
	return f.File.ReadAt(p, off)
}

var errClosed = errors.New("slicestore: write to a closed sstable")
