package record

import (
	"encoding/binary"
	"strings"
	"unicode/utf8"
)

// Meta keyspace prefixes. Each kind of record lives under its own byte so a
// prefix scan never crosses kinds.
const (
	PrefixConfig   = 'C' // C                           -> Config
	PrefixStats    = 'T' // T                           -> Stats
	PrefixData     = 'd' // d key                       -> Data
	PrefixChild    = 'k' // k parent 0x00 child          -> (empty)
	PrefixManifest = 'v' // v manifestID                -> Manifest
	PrefixChunk    = 'c' // c manifestID offset(8)      -> chunk
	PrefixSlice    = 'r' // r sliceID                   -> Slice
	PrefixRef      = 'f' // f sliceID[:32] manifestID   -> (empty)
	PrefixSession  = 's' // s sessionID                 -> Session
	PrefixUnclean  = 'u' // u sessionID                 -> (empty) while open
	PrefixIntent   = 'i' // i seq(8)                    -> delete intent
	PrefixPinned   = 'p' // p sliceID                   -> (empty) kept only for a Put in flight
)

// ConfigKey and StatsKey are the singleton records.
var (
	ConfigKey = []byte{PrefixConfig}
	StatsKey  = []byte{PrefixStats}
)

func key(prefix byte, parts ...[]byte) []byte {
	n := 1
	for _, p := range parts {
		n += len(p)
	}
	k := make([]byte, 0, n)
	k = append(k, prefix)
	for _, p := range parts {
		k = append(k, p...)
	}
	return k
}

// DataKey is the key of Data k.
func DataKey(k string) []byte { return key(PrefixData, []byte(k)) }

// ChildKey is the index entry saying child's parent is parent. Keys never
// contain NUL, so the separator keeps one parent's children contiguous.
func ChildKey(parent, child string) []byte {
	return key(PrefixChild, []byte(parent), []byte{0}, []byte(child))
}

// ChildPrefix is the prefix of all of parent's child entries.
func ChildPrefix(parent string) []byte { return key(PrefixChild, []byte(parent), []byte{0}) }

// ManifestKey is the key of a manifest's owner record.
func ManifestKey(m ManifestID) []byte { return key(PrefixManifest, m[:]) }

// ChunkKey is the key of the manifest chunk whose first slice starts at
// ClearText offset off.
func ChunkKey(m ManifestID, off int64) []byte {
	return binary.BigEndian.AppendUint64(key(PrefixChunk, m[:]), uint64(off))
}

// ChunkPrefix is the prefix of all chunks of m.
func ChunkPrefix(m ManifestID) []byte { return key(PrefixChunk, m[:]) }

// SliceKey is the key of a slice record.
func SliceKey(id *[IDSize]byte) []byte { return key(PrefixSlice, id[:]) }

// RefIDSize is how many leading bytes of a SliceID a reference key carries.
// Reference keys are the one place the full 64-byte SliceID is cut short;
// the slice record key, manifest chunks and shard headers keep all of it.
// A 256-bit prefix loses nothing:
//
//   - BLAKE3's collision resistance is capped at 128 bits whatever the
//     output length, and 256 bits of output already give 128 bits;
//   - SliceIDs are keyed hashes, so nobody without the store's keys can
//     compute them, let alone search for two sharing a prefix;
//   - a prefix collision could only make a slice look referenced by the
//     other slice's manifests: it can keep an unreferenced slice alive,
//     never delete a referenced one.
//
// It saves 32 bytes of every reference key: on disk after compaction a
// slice's first reference drops from 75 to 40 bytes (docs/SCALE.md).
const RefIDSize = 32

// RefKey is the reference of manifest m to slice id: the first RefIDSize
// bytes of id, then m.
func RefKey(id *[IDSize]byte, m ManifestID) []byte {
	return key(PrefixRef, id[:RefIDSize], m[:])
}

// RefPrefix is the prefix of every reference to id (and to any slice whose
// ID shares its first RefIDSize bytes).
func RefPrefix(id *[IDSize]byte) []byte { return key(PrefixRef, id[:RefIDSize]) }

// RefManifest returns the manifest of a reference key.
func RefManifest(k []byte) (m ManifestID, ok bool) {
	if len(k) != 1+RefIDSize+ManifestIDSize || k[0] != PrefixRef {
		return m, false
	}
	copy(m[:], k[1+RefIDSize:])
	return m, true
}

// RefSlicePrefix returns the SliceID prefix of a reference key.
func RefSlicePrefix(k []byte) (p [RefIDSize]byte, ok bool) {
	if len(k) != 1+RefIDSize+ManifestIDSize || k[0] != PrefixRef {
		return p, false
	}
	copy(p[:], k[1:])
	return p, true
}

// PinnedKey marks a slice that a release kept only because a Put in flight
// pinned it: if that Put never commits, Open must release the slice.
func PinnedKey(id *[IDSize]byte) []byte { return key(PrefixPinned, id[:]) }

// SessionKey and UncleanKey are a session's records.
func SessionKey(s [SessionSize]byte) []byte { return key(PrefixSession, s[:]) }

// UncleanKey marks a session that has not closed cleanly.
func UncleanKey(s [SessionSize]byte) []byte { return key(PrefixUnclean, s[:]) }

// IntentKey is the key of delete intent seq.
func IntentKey(seq uint64) []byte {
	return binary.BigEndian.AppendUint64([]byte{PrefixIntent}, seq)
}

// PrefixEnd returns the smallest key greater than every key with prefix p.
func PrefixEnd(p []byte) []byte {
	end := append([]byte(nil), p...)
	for i := len(end) - 1; i >= 0; i-- {
		if end[i] != 0xff {
			end[i]++
			return end[:i+1]
		}
	}
	return nil
}

// NewManifestID builds the ManifestID of put number put of session s.
func NewManifestID(s [SessionSize]byte, put uint64) ManifestID {
	var m ManifestID
	copy(m[:], s[:])
	binary.BigEndian.PutUint64(m[SessionSize:], put)
	return m
}

// Split returns the session and put number of m.
func (m ManifestID) Split() (s [SessionSize]byte, put uint64) {
	copy(s[:], m[:SessionSize])
	return s, binary.BigEndian.Uint64(m[SessionSize:])
}

// ValidKey reports whether k is usable as a Data key: non-empty valid UTF-8,
// at most 4096 bytes, no NUL.
func ValidKey(k string) bool {
	return k != "" && len(k) <= 4096 && !strings.ContainsRune(k, 0) && validUTF8(k)
}

func validUTF8(s string) bool { return utf8.ValidString(s) }
