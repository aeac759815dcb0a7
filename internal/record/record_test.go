package record

import (
	"bytes"
	"errors"
	"strings"
	"testing"
)

func sample() (c Config, d Data, m Manifest, refs []SliceRef, s Slice, st Stats, locs []Location, ss Session) {
	c = Config{Min: 1, Avg: 2, Max: 3, Created: 4, Slices: SlicesExternal}
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

// TestConfigOldFormat checks that a Config of format 1 (before reference
// keys carried a SliceID prefix) is refused with a clear error, not misread.
func TestConfigOldFormat(t *testing.T) {
	c, _, _, _, _, _, _, _ := sample()
	b := c.Encode()
	if b[0] != tagConfig || tagConfig == tagConfigV1 {
		t.Fatalf("config tag %#x", b[0])
	}
	b[0] = tagConfigV1
	got, err := DecodeConfig(b)
	if err == nil || got != nil {
		t.Fatalf("format 1 config accepted: %+v", got)
	}
	if !errors.Is(err, ErrCorrupt) || !errors.Is(err, ErrOldFormat) {
		t.Fatalf("error does not wrap ErrCorrupt and ErrOldFormat: %v", err)
	}
	for _, want := range []string{"earlier development format", "re-created"} {
		if !strings.Contains(err.Error(), want) {
			t.Fatalf("error %q does not say %q", err, want)
		}
	}
	// Any other tag is an unknown format.
	b[0] = 0xC3
	if _, err := DecodeConfig(b); !errors.Is(err, ErrCorrupt) || errors.Is(err, ErrOldFormat) {
		t.Fatalf("unknown tag: %v", err)
	}
}

// TestConfigSliceKind checks that a Config written before the slice kind
// was recorded decodes as SlicesUnknown, and that an unknown kind is
// refused.
func TestConfigSliceKind(t *testing.T) {
	c, _, _, _, _, _, _, _ := sample()
	b := c.Encode()
	legacy := c
	legacy.Slices = SlicesUnknown
	if lb := legacy.Encode(); !bytes.Equal(lb, b[:len(b)-1]) {
		t.Fatalf("a Config without the kind encodes as %x, want %x", lb, b[:len(b)-1])
	}
	if got, err := DecodeConfig(b[:len(b)-1]); err != nil || *got != legacy {
		t.Fatalf("config without the kind: %+v, %v", got, err)
	}
	for _, k := range []byte{0, 3} {
		if _, err := DecodeConfig(append(b[:len(b)-1:len(b)-1], k)); !errors.Is(err, ErrCorrupt) {
			t.Fatalf("kind %d: %v", k, err)
		}
	}
}

// TestRefKey checks that reference keys carry the first RefIDSize bytes of
// the SliceID and decode back.
func TestRefKey(t *testing.T) {
	var id [IDSize]byte
	for i := range id {
		id[i] = byte(i + 1)
	}
	m := NewManifestID([SessionSize]byte{7}, 42)
	k := RefKey(&id, m)
	if len(k) != 1+RefIDSize+ManifestIDSize || k[0] != PrefixRef {
		t.Fatalf("ref key %x", k)
	}
	if p := RefPrefix(&id); !bytes.HasPrefix(k, p) || !bytes.Equal(p[1:], id[:RefIDSize]) {
		t.Fatalf("ref prefix %x of key %x", p, k)
	}
	if got, ok := RefManifest(k); !ok || got != m {
		t.Fatalf("manifest %x, %v", got, ok)
	}
	if p, ok := RefSlicePrefix(k); !ok || !bytes.Equal(p[:], id[:RefIDSize]) {
		t.Fatalf("slice prefix %x, %v", p, ok)
	}
	for _, bad := range [][]byte{k[:len(k)-1], append(k, 0), append([]byte{PrefixSlice}, k[1:]...)} {
		if _, ok := RefManifest(bad); ok {
			t.Fatalf("RefManifest accepted %x", bad)
		}
		if _, ok := RefSlicePrefix(bad); ok {
			t.Fatalf("RefSlicePrefix accepted %x", bad)
		}
	}
}
