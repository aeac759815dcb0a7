// Package record encodes and decodes the meta keyspace's records and keys.
//
// Every value starts with a one-byte format tag so a record from a future
// format is refused instead of misread. Decoding never panics: damaged bytes
// give ErrCorrupt.
package record

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
)

// ErrCorrupt is returned for any value or key that does not decode.
var ErrCorrupt = errors.New("record: corrupt")

// Sizes shared with the rest of sealkv.
const (
	IDSize      = 64
	SessionSize = 16
	// ManifestIDSize is a session ID followed by a big-endian put number.
	ManifestIDSize = SessionSize + 8
)

// ManifestID names the slice list of one Put: the writer's session and the
// put's number within it. It also prefixes the put's slice counters.
type ManifestID [ManifestIDSize]byte

// encoder appends fields; decoder consumes them and remembers the first error.
type encoder struct{ b []byte }

func (e *encoder) u8(v byte)       { e.b = append(e.b, v) }
func (e *encoder) uv(v uint64)     { e.b = binary.AppendUvarint(e.b, v) }
func (e *encoder) iv(v int64)      { e.b = binary.AppendVarint(e.b, v) }
func (e *encoder) raw(v []byte)    { e.b = append(e.b, v...) }
func (e *encoder) str(v string)    { e.uv(uint64(len(v))); e.b = append(e.b, v...) }
func (e *encoder) u64(v uint64)    { e.b = binary.BigEndian.AppendUint64(e.b, v) }
func newEncoder(tag byte) *encoder { return &encoder{b: []byte{tag}} }
func (e *encoder) bytes() []byte   { return e.b }

type decoder struct {
	b   []byte
	err error
}

func newDecoder(b []byte, tag byte, what string) *decoder {
	d := &decoder{b: b}
	if len(b) == 0 || b[0] != tag {
		d.fail(what + ": unknown format")
		return d
	}
	d.b = b[1:]
	return d
}

func (d *decoder) fail(msg string) {
	if d.err == nil {
		d.err = fmt.Errorf("%w: %s", ErrCorrupt, msg)
	}
	d.b = nil
}

func (d *decoder) u8() byte {
	if len(d.b) < 1 {
		d.fail("short record")
		return 0
	}
	v := d.b[0]
	d.b = d.b[1:]
	return v
}

func (d *decoder) uv() uint64 {
	v, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.fail("bad varint")
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) iv() int64 {
	v, n := binary.Varint(d.b)
	if n <= 0 {
		d.fail("bad varint")
		return 0
	}
	d.b = d.b[n:]
	return v
}

// size decodes a non-negative length that must fit the remaining bytes at
// minimum elem bytes per element, so a forged length cannot force a huge
// allocation.
func (d *decoder) size(elem int) int {
	v := d.uv()
	if v > uint64(len(d.b)/max(elem, 1)) {
		d.fail("length out of range")
		return 0
	}
	return int(v)
}

func (d *decoder) nonneg() int64 {
	v := d.iv()
	if v < 0 {
		d.fail("negative size")
		return 0
	}
	return v
}

func (d *decoder) raw(dst []byte) {
	if len(d.b) < len(dst) {
		d.fail("short record")
		return
	}
	copy(dst, d.b)
	d.b = d.b[len(dst):]
}

func (d *decoder) u64() uint64 {
	var b [8]byte
	d.raw(b[:])
	return binary.BigEndian.Uint64(b[:])
}

func (d *decoder) str() string {
	n := d.size(1)
	s := string(d.b[:n])
	d.b = d.b[n:]
	return s
}

func (d *decoder) done() error {
	if d.err == nil && len(d.b) != 0 {
		d.fail("trailing bytes")
	}
	return d.err
}

// Record tags.
//
// The Config record's tag is the store's format: it is read first by Open,
// so bumping it refuses a store whose other records or keys would be
// misread. Format 1 (tag 0xC1) was an earlier development format. Format 2
// (tag 0xC2): reference keys carry a 32-byte SliceID prefix (RefIDSize)
// instead of the full SliceID, and ContentID is computed over the slice
// list.
const (
	tagConfig   = 0xC2
	tagConfigV1 = 0xC1 // format 1: refused, see DecodeConfig
	tagData     = 0xD1
	tagManifest = 0xA1
	tagChunk    = 0xB1
	tagSlice    = 0xE1
	tagStats    = 0xF1
	tagIntent   = 0x91
	tagSession  = 0x81
)

// Config is the store-wide configuration fixed at creation.
type Config struct {
	Fingerprint   [32]byte // identifies the Keys the store was made with
	Min, Avg, Max int64    // chunker parameters (dedup depends on them)
	Created       int64    // Unix nanoseconds
	Slices        SliceKind
}

// SliceKind says where a store keeps its shards.
type SliceKind byte

const (
	// SlicesUnknown: a Config written before the kind was recorded.
	SlicesUnknown SliceKind = iota
	// SlicesLocal: the Pebble slice keyspace in DIR/slices.
	SlicesLocal
	// SlicesExternal: a SliceStore given to Open.
	SlicesExternal
)

// Encode encodes c. The slice kind is an optional last byte, so a Config
// written before it existed still decodes (as SlicesUnknown).
func (c *Config) Encode() []byte {
	e := newEncoder(tagConfig)
	e.raw(c.Fingerprint[:])
	e.iv(c.Min)
	e.iv(c.Avg)
	e.iv(c.Max)
	e.iv(c.Created)
	if c.Slices != SlicesUnknown {
		e.u8(byte(c.Slices))
	}
	return e.bytes()
}

// ErrOldFormat is the reason a Config of an earlier development format is
// refused; the error DecodeConfig returns wraps both it and ErrCorrupt.
var ErrOldFormat = errors.New("the store was created by an earlier development format of sealkv and must be re-created")

// DecodeConfig decodes a Config. A Config of an earlier format is refused
// with an error wrapping ErrOldFormat (and ErrCorrupt): its store cannot be
// read by this version.
func DecodeConfig(b []byte) (*Config, error) {
	if len(b) > 0 && b[0] == tagConfigV1 {
		return nil, fmt.Errorf("%w: config: format 1: %w", ErrCorrupt, ErrOldFormat)
	}
	d := newDecoder(b, tagConfig, "config")
	c := &Config{}
	d.raw(c.Fingerprint[:])
	c.Min, c.Avg, c.Max, c.Created = d.nonneg(), d.nonneg(), d.nonneg(), d.iv()
	if len(d.b) > 0 {
		if c.Slices = SliceKind(d.u8()); c.Slices != SlicesLocal && c.Slices != SlicesExternal {
			d.fail("config: unknown slice store kind")
		}
	}
	return c, d.done()
}

// Version is one ContentMeta of a Data.
type Version struct {
	Version      uint64
	ContentID    [IDSize]byte
	OriginalSize int64
	StorageSize  int64
	NumSlices    int64
	Created      int64 // Unix nanoseconds
	Manifest     ManifestID
}

// Data is a named entry: its parent, the next version number to hand out
// and its versions, oldest first (the last one is current).
type Data struct {
	Parent      string
	NextVersion uint64
	Versions    []Version
}

// minVersionSize is the fewest bytes one encoded Version can take.
const minVersionSize = IDSize + ManifestIDSize + 5

// Encode encodes d.
func (d *Data) Encode() []byte {
	e := newEncoder(tagData)
	e.str(d.Parent)
	e.uv(d.NextVersion)
	e.uv(uint64(len(d.Versions)))
	for i := range d.Versions {
		v := &d.Versions[i]
		e.uv(v.Version)
		e.raw(v.ContentID[:])
		e.iv(v.OriginalSize)
		e.iv(v.StorageSize)
		e.iv(v.NumSlices)
		e.iv(v.Created)
		e.raw(v.Manifest[:])
	}
	return e.bytes()
}

// DecodeData decodes a Data.
func DecodeData(b []byte) (*Data, error) {
	d := newDecoder(b, tagData, "data")
	r := &Data{Parent: d.str(), NextVersion: d.uv()}
	n := d.size(minVersionSize)
	if n > 0 {
		r.Versions = make([]Version, n)
	}
	for i := 0; i < n && d.err == nil; i++ {
		v := &r.Versions[i]
		v.Version = d.uv()
		d.raw(v.ContentID[:])
		v.OriginalSize, v.StorageSize, v.NumSlices = d.nonneg(), d.nonneg(), d.nonneg()
		v.Created = d.iv()
		d.raw(v.Manifest[:])
	}
	if err := d.done(); err != nil {
		return nil, err
	}
	if len(r.Versions) == 0 {
		return nil, fmt.Errorf("%w: data without versions", ErrCorrupt)
	}
	return r, nil
}

// Manifest says whose slice list a ManifestID is: the Data key and, once the
// Put committed, its version (0 while the Put is in flight).
type Manifest struct {
	Key     string
	Version uint64
}

// Encode encodes m.
func (m *Manifest) Encode() []byte {
	e := newEncoder(tagManifest)
	e.str(m.Key)
	e.uv(m.Version)
	return e.bytes()
}

// DecodeManifest decodes a Manifest.
func DecodeManifest(b []byte) (*Manifest, error) {
	d := newDecoder(b, tagManifest, "manifest")
	m := &Manifest{Key: d.str(), Version: d.uv()}
	return m, d.done()
}

// SliceRef is one entry of a manifest chunk.
type SliceRef struct {
	ID   [IDSize]byte
	Size int64
}

// EncodeChunk encodes a run of a manifest's slice list.
func EncodeChunk(refs []SliceRef) []byte {
	e := newEncoder(tagChunk)
	e.uv(uint64(len(refs)))
	for i := range refs {
		e.raw(refs[i].ID[:])
		e.uv(uint64(refs[i].Size))
	}
	return e.bytes()
}

// DecodeChunk decodes a manifest chunk. Every slice must be non-empty.
func DecodeChunk(b []byte) ([]SliceRef, error) {
	d := newDecoder(b, tagChunk, "manifest chunk")
	n := d.size(IDSize + 1)
	refs := make([]SliceRef, n)
	for i := 0; i < n && d.err == nil; i++ {
		d.raw(refs[i].ID[:])
		s := d.uv()
		if s == 0 || s > math.MaxInt32 {
			d.fail("slice size out of range")
		}
		refs[i].Size = int64(s)
	}
	if err := d.done(); err != nil {
		return nil, err
	}
	return refs, nil
}

// Slice is the meta record of a SealedSlice: where its shards are, how it was
// sealed and how large it is.
type Slice struct {
	Session      [SessionSize]byte
	Ctr          uint64
	Commit       [32]byte
	Flags        byte
	OriginalSize int64
	SealedSize   int64
	K, M         int
	Bad          bool // failed verification on read; the next Put of it reseals
}

// Encode encodes s.
func (s *Slice) Encode() []byte {
	e := newEncoder(tagSlice)
	e.raw(s.Session[:])
	e.u64(s.Ctr)
	e.raw(s.Commit[:])
	e.u8(s.Flags)
	e.uv(uint64(s.OriginalSize))
	e.uv(uint64(s.SealedSize))
	e.u8(byte(s.K))
	e.u8(byte(s.M))
	var bad byte
	if s.Bad {
		bad = 1
	}
	e.u8(bad)
	return e.bytes()
}

// DecodeSlice decodes a Slice record.
func DecodeSlice(b []byte) (*Slice, error) {
	d := newDecoder(b, tagSlice, "slice")
	s := &Slice{}
	d.raw(s.Session[:])
	s.Ctr = d.u64()
	d.raw(s.Commit[:])
	s.Flags = d.u8()
	orig, sealed := d.uv(), d.uv()
	s.K, s.M = int(d.u8()), int(d.u8())
	bad := d.u8()
	if err := d.done(); err != nil {
		return nil, err
	}
	if orig == 0 || orig > math.MaxInt32 || sealed == 0 || sealed > math.MaxInt32 || s.K == 0 || s.K+s.M > 255 || bad > 1 {
		return nil, fmt.Errorf("%w: slice record out of range", ErrCorrupt)
	}
	s.OriginalSize, s.SealedSize, s.Bad = int64(orig), int64(sealed), bad == 1
	return s, nil
}

// Stats are the store's running totals, kept in the same batches as the
// changes they count.
type Stats struct {
	Data, Versions, Slices, LogicalBytes, UniqueBytes, StoredBytes int64
}

// Encode encodes s.
func (s *Stats) Encode() []byte {
	e := newEncoder(tagStats)
	for _, v := range []int64{s.Data, s.Versions, s.Slices, s.LogicalBytes, s.UniqueBytes, s.StoredBytes} {
		e.iv(v)
	}
	return e.bytes()
}

// DecodeStats decodes Stats.
func DecodeStats(b []byte) (*Stats, error) {
	d := newDecoder(b, tagStats, "stats")
	s := &Stats{}
	for _, p := range []*int64{&s.Data, &s.Versions, &s.Slices, &s.LogicalBytes, &s.UniqueBytes, &s.StoredBytes} {
		*p = d.nonneg()
	}
	return s, d.done()
}

// Location names the shards of one slice in the slice keyspace.
type Location struct {
	Session [SessionSize]byte
	Ctr     uint64
}

// EncodeIntent encodes the shard locations a committed Delete still has to
// remove from the slice keyspace.
func EncodeIntent(locs []Location) []byte {
	e := newEncoder(tagIntent)
	e.uv(uint64(len(locs)))
	for _, l := range locs {
		e.raw(l.Session[:])
		e.u64(l.Ctr)
	}
	return e.bytes()
}

// DecodeIntent decodes a delete intent.
func DecodeIntent(b []byte) ([]Location, error) {
	d := newDecoder(b, tagIntent, "intent")
	n := d.size(SessionSize + 8)
	locs := make([]Location, n)
	for i := 0; i < n && d.err == nil; i++ {
		d.raw(locs[i].Session[:])
		locs[i].Ctr = d.u64()
	}
	return locs, d.done()
}

// Session is the persisted part of a writer session.
type Session struct {
	KEM        byte   // 1 = ML-KEM-1024
	Ciphertext []byte // the encapsulation, decapsulated by readers
}

// Encode encodes s.
func (s *Session) Encode() []byte {
	e := newEncoder(tagSession)
	e.u8(s.KEM)
	e.str(string(s.Ciphertext))
	return e.bytes()
}

// DecodeSession decodes a Session.
func DecodeSession(b []byte) (*Session, error) {
	d := newDecoder(b, tagSession, "session")
	s := &Session{KEM: d.u8(), Ciphertext: []byte(d.str())}
	return s, d.done()
}
