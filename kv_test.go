package kv

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"io"
	mrand "math/rand/v2"
	"testing"
)

var ctx = context.Background()

// small slice sizes keep tests fast while crossing many slice boundaries.
func smallOpts(k *Keys) *Options {
	return &Options{Keys: k, MinSliceSize: 1 << 10, AvgSliceSize: 4 << 10, MaxSliceSize: 16 << 10}
}

func newKeys(t testing.TB) *Keys {
	t.Helper()
	k, err := GenerateKeys()
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func openDB(t testing.TB, dir string, o *Options) *DB {
	t.Helper()
	db, err := Open(dir, o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

func randBytes(n int) []byte {
	b := make([]byte, n)
	rand.Read(b)
	return b
}

func mustPut(t testing.TB, db *DB, key string, b []byte, opts ...PutOption) *Data {
	t.Helper()
	d, err := db.Put(ctx, key, bytes.NewReader(b), opts...)
	if err != nil {
		t.Fatalf("Put %q: %v", key, err)
	}
	return d
}

func get(t testing.TB, db *DB, key string) []byte {
	t.Helper()
	r, err := db.Get(ctx, key)
	if err != nil {
		t.Fatalf("Get %q: %v", key, err)
	}
	defer r.Close()
	b, err := io.ReadAll(r)
	if err != nil {
		t.Fatalf("read %q: %v", key, err)
	}
	return b
}

func TestRoundTripSizes(t *testing.T) {
	db := openDB(t, t.TempDir(), smallOpts(newKeys(t)))
	min, avg, max := 1<<10, 4<<10, 16<<10
	for _, n := range []int{0, 1, min - 1, min, min + 1, avg, max - 1, max, max + 1, 3*max + 7, 1 << 20} {
		b := randBytes(n)
		d := mustPut(t, db, "k", b)
		if d.Content.OriginalSize != int64(n) {
			t.Fatalf("size %d: OriginalSize %d", n, d.Content.OriginalSize)
		}
		if got := get(t, db, "k"); !bytes.Equal(got, b) {
			t.Fatalf("size %d: round trip mismatch (got %d bytes)", n, len(got))
		}
	}
}

func TestReadAtSeek(t *testing.T) {
	db := openDB(t, t.TempDir(), smallOpts(newKeys(t)))
	b := randBytes(3 << 20)
	mustPut(t, db, "k", b)
	r, err := db.Get(ctx, "k")
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	rng := mrand.New(mrand.NewPCG(1, 2))
	for range 300 {
		off := rng.Int64N(int64(len(b)) + 10)
		n := rng.IntN(40 << 10)
		p := make([]byte, n)
		got, err := r.ReadAt(p, off)
		want := max(0, min(n, len(b)-int(off)))
		if got != want || (got < n && !errors.Is(err, io.EOF)) || (got == n && err != nil) {
			t.Fatalf("ReadAt(%d, %d) = %d, %v; want %d", n, off, got, err, want)
		}
		if !bytes.Equal(p[:got], b[min(int(off), len(b)):min(int(off)+got, len(b))]) {
			t.Fatalf("ReadAt(%d, %d): wrong bytes", n, off)
		}
		if _, err := r.Seek(off, io.SeekStart); err != nil {
			t.Fatal(err)
		}
		q := make([]byte, n)
		m, _ := io.ReadFull(r, q)
		if m != want || !bytes.Equal(q[:m], p[:got]) {
			t.Fatalf("Seek+Read at %d: %d bytes, want %d", off, m, want)
		}
	}
}
