package record

import (
	"bytes"
	"errors"
	"testing"
)

func sample() (c Config, d Data, m Manifest, refs []SliceRef, s Slice, st Stats, locs []Location, ss Session) {
	c = Config{Min: 1, Avg: 2, Max: 3, Created: 4}
	c.Fingerprint[0] = 9
	d = Data{Parent: "p", NextVersion: 3, Versions: []Version{{Version: 1, OriginalSize: 5, NumSlices: 1}, {Version: 2}}}
	m = Manifest{Key: "k", Version: 2}
	refs = []SliceRef{{Size: 7}, {Size: 1 << 20}}
	s = Slice{Ctr: 1 << 40, Flags: 1, OriginalSize: 10, SealedSize: 26, K: 8, M: 2, Bad: true}
	st = Stats{Data: 1, Versions: 2, Slices: 3, LogicalBytes: 4, UniqueBytes: 5, StoredBytes: 6}
	locs = []Location{{Ctr: 5}}
	ss = Session{KEM: 1, Ciphertext: []byte("ct")}
	return
}

func TestRoundTrip(t *testing.T) {
	c, d, m, refs, s, st, locs, ss := sample()
	if got, err := DecodeConfig(c.Encode()); err != nil || *got != c {
		t.Fatalf("config: %v", err)
	}
	if got, err := DecodeData(d.Encode()); err != nil || !bytes.Equal(got.Encode(), d.Encode()) {
		t.Fatalf("data: %v", err)
	}
	if got, err := DecodeManifest(m.Encode()); err != nil || *got != m {
		t.Fatalf("manifest: %v", err)
	}
	if got, err := DecodeChunk(EncodeChunk(refs)); err != nil || len(got) != 2 || got[1] != refs[1] {
		t.Fatalf("chunk: %v", err)
	}
	if got, err := DecodeSlice(s.Encode()); err != nil || *got != s {
		t.Fatalf("slice: %v", err)
	}
	if got, err := DecodeStats(st.Encode()); err != nil || *got != st {
		t.Fatalf("stats: %v", err)
	}
	if got, err := DecodeIntent(EncodeIntent(locs)); err != nil || got[0] != locs[0] {
		t.Fatalf("intent: %v", err)
	}
	if got, err := DecodeSession(ss.Encode()); err != nil || !bytes.Equal(got.Ciphertext, ss.Ciphertext) {
		t.Fatalf("session: %v", err)
	}
}

// decoders are all record decoders, each re-encoding what it accepted.
var decoders = map[string]func([]byte) ([]byte, error){
	"config": func(b []byte) ([]byte, error) { r, err := DecodeConfig(b); return enc(r, err) },
	"data":   func(b []byte) ([]byte, error) { r, err := DecodeData(b); return enc(r, err) },
	"manifest": func(b []byte) ([]byte, error) {
		r, err := DecodeManifest(b)
		return enc(r, err)
	},
	"chunk": func(b []byte) ([]byte, error) {
		r, err := DecodeChunk(b)
		if err != nil {
			return nil, err
		}
		return EncodeChunk(r), nil
	},
	"slice": func(b []byte) ([]byte, error) { r, err := DecodeSlice(b); return enc(r, err) },
	"stats": func(b []byte) ([]byte, error) { r, err := DecodeStats(b); return enc(r, err) },
	"intent": func(b []byte) ([]byte, error) {
		r, err := DecodeIntent(b)
		if err != nil {
			return nil, err
		}
		return EncodeIntent(r), nil
	},
	"session": func(b []byte) ([]byte, error) { r, err := DecodeSession(b); return enc(r, err) },
}

func enc[T interface{ Encode() []byte }](r T, err error) ([]byte, error) {
	if err != nil {
		return nil, err
	}
	return r.Encode(), nil
}

// FuzzDecode feeds arbitrary bytes to every decoder: none may panic or
// allocate without bound, errors must wrap ErrCorrupt, and whatever is
// accepted must re-encode to a value that decodes the same way.
func FuzzDecode(f *testing.F) {
	c, d, m, refs, s, st, locs, ss := sample()
	for _, b := range [][]byte{c.Encode(), d.Encode(), m.Encode(), EncodeChunk(refs), s.Encode(), st.Encode(), EncodeIntent(locs), ss.Encode()} {
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		for name, dec := range decoders {
			again, err := dec(b)
			if err != nil {
				if !errors.Is(err, ErrCorrupt) {
					t.Fatalf("%s: error not ErrCorrupt: %v", name, err)
				}
				continue
			}
			twice, err := dec(again)
			if err != nil || !bytes.Equal(again, twice) {
				t.Fatalf("%s: accepted value does not re-encode stably: %v", name, err)
			}
		}
	})
}
