package kv

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"
)

// fuzzStore is a small store built once per process: a few Data sharing
// slices, several versions, one value large enough to be ingested as an
// sstable, the rest in the write-ahead logs.
type fuzzStore struct {
	dir     string
	keys    *Keys
	files   []string                     // relative paths, sorted
	content map[string]map[uint64][]byte // key -> version -> ClearText
}

func buildFuzzStore(dir string) (*fuzzStore, error) {
	keys, err := GenerateKeys()
	if err != nil {
		return nil, err
	}
	fsx := &fuzzStore{dir: dir, keys: keys, content: map[string]map[uint64][]byte{}}
	db, err := Open(dir, &Options{Keys: keys, MinSliceSize: 4 << 10, AvgSliceSize: 16 << 10, MaxSliceSize: 64 << 10, Compression: CompressionNone, Logger: quietLogger})
	if err != nil {
		return nil, err
	}
	shared := pseudoRandom(1, 100<<10)
	puts := []struct {
		key string
		b   []byte
	}{
		{"a", append(append([]byte(nil), shared...), pseudoRandom(2, 30<<10)...)},
		{"a", append(append([]byte(nil), shared...), pseudoRandom(3, 50<<10)...)},
		{"b", append(pseudoRandom(4, 20<<10), shared...)},
		{"c", pseudoRandom(5, 3600<<10)}, // with parity over 4 MiB: ingested as an sstable
		{"a", pseudoRandom(6, 10)},
		{"d", nil},
		{"b", append(append([]byte(nil), shared[:60<<10]...), pseudoRandom(7, 200<<10)...)},
	}
	for _, p := range puts {
		d, err := db.Put(ctx, p.key, bytes.NewReader(p.b))
		if err != nil {
			return nil, err
		}
		if fsx.content[p.key] == nil {
			fsx.content[p.key] = map[uint64][]byte{}
		}
		fsx.content[p.key][d.Content.Version] = p.b
	}
	if err := db.Close(); err != nil {
		return nil, err
	}
	err = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		fsx.files = append(fsx.files, rel)
		return nil
	})
	sort.Strings(fsx.files)
	return fsx, err
}

// FuzzStoreDir damages a copy of a small store: the input is a list of
// 6-byte edits (file index, big-endian offset, XOR mask) applied to its
// files. Open may fail, Get and Scrub may fail, but nothing may panic and
// no read may return bytes other than those that were put.
//
//	go test -run XXX -fuzz FuzzStoreDir -fuzztime 5m .
func FuzzStoreDir(f *testing.F) {
	// Each fuzzing worker process builds its own store (fresh keys and
	// sessions, the same layout), so an input names files by index and
	// offsets, which carry over.
	s, err := buildFuzzStore(f.TempDir())
	if err != nil {
		f.Fatal(err)
	}
	if !slices.ContainsFunc(s.files, func(p string) bool { return strings.HasPrefix(p, "slices/") && strings.HasSuffix(p, ".sst") }) {
		f.Fatalf("no sstable in the slice keyspace: %v", s.files)
	}
	for i := range s.files {
		for _, off := range []uint32{100, 0xffffffff} {
			f.Add(edit(nil, i, off, 0x01))
		}
	}
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, in []byte) { checkDamagedStore(t, s, in) })
}

// checkDamagedStore applies the edits in to a copy of s and checks what a
// DB on it does.
func checkDamagedStore(t *testing.T, s *fuzzStore, in []byte) {
	dir := t.TempDir()
	files := map[string][]byte{}
	for _, rel := range s.files {
		b, err := os.ReadFile(filepath.Join(s.dir, rel))
		if err != nil {
			t.Fatal(err)
		}
		files[rel] = b
	}
	for ; len(in) >= 6; in = in[6:] {
		rel := s.files[int(in[0])%len(s.files)]
		b := files[rel]
		if len(b) == 0 || in[5] == 0 {
			continue
		}
		b[int(binary.BigEndian.Uint32(in[1:5]))%len(b)] ^= in[5]
	}
	for rel, b := range files {
		p := filepath.Join(dir, rel)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	db, err := Open(dir, &Options{Keys: s.keys, Logger: quietLogger})
	if err != nil {
		return
	}
	defer db.Close()
	for key, versions := range s.content {
		for v, want := range versions {
			r, err := db.GetVersion(ctx, key, v)
			if err != nil {
				continue
			}
			got, err := io.ReadAll(r)
			r.Close()
			if !bytes.Equal(got, want[:min(len(got), len(want))]) || (err == nil && len(got) != len(want)) {
				t.Fatalf("%q version %d: read %d bytes that differ from the %d put (err %v)", key, v, len(got), len(want), err)
			}
		}
	}
	for k, err := range db.List(ctx, "") {
		if err == nil && s.content[k] == nil {
			t.Fatalf("List yields %q, which was never put", k)
		}
	}
	_, _ = db.Scrub(ctx, ScrubOptions{Repair: true})
	// After a repair, reads are still exact or errors.
	for key, versions := range s.content {
		vs := slices.Collect(func(yield func(uint64) bool) {
			for v := range versions {
				if !yield(v) {
					return
				}
			}
		})
		for _, v := range vs {
			r, err := db.GetVersion(ctx, key, v)
			if err != nil {
				continue
			}
			got, err := io.ReadAll(r)
			r.Close()
			if want := versions[v]; !bytes.Equal(got, want[:min(len(got), len(want))]) || (err == nil && len(got) != len(want)) {
				t.Fatalf("after Scrub: %q version %d: wrong bytes (err %v)", key, v, err)
			}
		}
	}
	if err := db.Close(); err != nil && !errors.Is(err, ErrClosed) {
		t.Logf("Close: %v", err)
	}
}

// edit appends one 6-byte edit to in.
func edit(in []byte, file int, off uint32, mask byte) []byte {
	in = append(in, byte(file))
	in = binary.BigEndian.AppendUint32(in, off)
	return append(in, mask)
}
