// Package erasure splits a SealedSlice into k data and m parity Reed-Solomon
// shards, each carrying its own checksum, and puts it back together from any
// k good shards.
//
// A shard's checksum covers the SliceID and the shard index as well as its
// bytes, so a store below that returns another slice's shard, or the right
// slice's shard at the wrong index, is caught like a flipped bit.
package erasure

import (
	"encoding/binary"
	"errors"
	"fmt"
	"sync"

	"github.com/cespare/xxhash/v2"
	"github.com/klauspost/reedsolomon"
)

// ChecksumSize is the length of the checksum that prefixes every shard.
const ChecksumSize = 8

// MaxShards bounds k+m; shard indexes are stored in one byte.
const MaxShards = 255

// ErrTooFewShards is returned when fewer than k shards pass their checksum.
var ErrTooFewShards = errors.New("erasure: fewer than k good shards")

// Coder encodes and decodes for one (k, m) layout. It is safe for
// concurrent use.
type Coder struct {
	k, m int
	enc  reedsolomon.Encoder // nil when m == 0
}

var coders sync.Map // [2]int -> *Coder

// New returns the Coder for k data and m parity shards.
func New(k, m int) (*Coder, error) {
	if k < 1 || m < 0 || k+m > MaxShards {
		return nil, fmt.Errorf("erasure: invalid layout %d+%d (need k >= 1, m >= 0, k+m <= %d)", k, m, MaxShards)
	}
	if c, ok := coders.Load([2]int{k, m}); ok {
		return c.(*Coder), nil
	}
	c := &Coder{k: k, m: m}
	if m > 0 {
		// One goroutine per call: Put and Get already code one slice
		// per worker, and splitting one slice's shards across goroutines
		// cost more than it saved even on an idle machine
		// (BenchmarkErasure, 2 cores, 3–4 runs each: encode-8+2 28.0–29.0
		// against 35.6–37.0 µs per 256 KiB with the default,
		// decode-2missing 66.6–71.5 against 82.0–87.2 µs).
		enc, err := reedsolomon.New(k, m, reedsolomon.WithMaxGoroutines(1))
		if err != nil {
			return nil, fmt.Errorf("erasure: %w", err)
		}
		c.enc = enc
	}
	coders.Store([2]int{k, m}, c)
	return c, nil
}

// ShardSize is the payload length of each shard of an n-byte SealedSlice.
func (c *Coder) ShardSize(n int) int { return max(1, (n+c.k-1)/c.k) }

// StoredSize is the number of bytes the k+m shards of an n-byte SealedSlice
// occupy, checksums included.
func (c *Coder) StoredSize(n int) int64 {
	return int64(c.k+c.m) * int64(ChecksumSize+c.ShardSize(n))
}

// Encode splits sealed into k+m shards, each ChecksumSize bytes of checksum
// followed by the payload. The shards share one allocation.
func (c *Coder) Encode(id []byte, sealed []byte) ([][]byte, error) {
	return c.EncodeInto(make([]byte, c.StoredSize(len(sealed))), id, sealed)
}

// EncodeInto is Encode with the shards placed in buf, which must hold
// StoredSize(len(sealed)) bytes; its previous contents do not matter.
func (c *Coder) EncodeInto(buf []byte, id []byte, sealed []byte) ([][]byte, error) {
	size := c.ShardSize(len(sealed))
	n := c.k + c.m
	if int64(len(buf)) < c.StoredSize(len(sealed)) {
		return nil, errors.New("erasure: buffer too small")
	}
	shards := make([][]byte, n)
	payload := make([][]byte, n)
	for i := range shards {
		shards[i] = buf[i*(ChecksumSize+size) : (i+1)*(ChecksumSize+size)]
		payload[i] = shards[i][ChecksumSize:]
		if i < c.k {
			// Zero the padding: buf may be recycled and must not carry
			// old bytes to disk.
			clear(payload[i][copy(payload[i], sealed[min(i*size, len(sealed)):]):])
		}
	}
	if c.enc != nil {
		if err := c.enc.Encode(payload); err != nil {
			return nil, fmt.Errorf("erasure: %w", err)
		}
	}
	for i := range shards {
		sum := Checksum(id, i, payload[i])
		copy(shards[i], sum[:])
	}
	return shards, nil
}

// Checksum is the checksum of shard index idx of the slice id: XXH64 over
// id, index and payload. It is there to find bit rot and misplaced shards
// cheaply; it is not a MAC and need not be: a store that forges shards with
// valid checksums can deny a read but never change its result, which the
// GCM tag and the SliceID check decide (an unkeyed cryptographic hash would
// be just as forgeable, at three times the cost).
func Checksum(id []byte, idx int, payload []byte) [ChecksumSize]byte {
	h := xxhash.New()
	h.Write(id)
	h.Write([]byte{byte(idx)})
	h.Write(payload)
	var sum [ChecksumSize]byte
	binary.LittleEndian.PutUint64(sum[:], h.Sum64())
	return sum
}

// Good reports whether shard (checksum and payload) is intact for index idx
// of slice id and has the expected payload size.
func Good(id []byte, idx int, shard []byte, size int) bool {
	if len(shard) != ChecksumSize+size {
		return false
	}
	sum := Checksum(id, idx, shard[ChecksumSize:])
	return string(sum[:]) == string(shard[:ChecksumSize])
}

// Decode verifies the given shards (nil for missing), rebuilds the missing
// and bad ones from any k good shards and returns the n-byte SealedSlice
// together with the indexes of the shards that were missing or bad. When
// repair is true the rebuilt shards (with checksums) are returned in
// rebuilt, indexed like shards; otherwise rebuilt is nil.
func (c *Coder) Decode(id []byte, shards [][]byte, n int, repair bool) (sealed []byte, bad []int, rebuilt [][]byte, err error) {
	return c.DecodeInto(nil, id, shards, n, repair)
}

// DecodeInto is Decode appending the SealedSlice to dst[:0] (reusing its
// memory when it holds n bytes).
func (c *Coder) DecodeInto(dst, id []byte, shards [][]byte, n int, repair bool) (sealed []byte, bad []int, rebuilt [][]byte, err error) {
	if len(shards) != c.k+c.m {
		return nil, nil, nil, fmt.Errorf("erasure: got %d shards, layout has %d", len(shards), c.k+c.m)
	}
	size := c.ShardSize(n)
	payload := make([][]byte, len(shards))
	good := 0
	for i, s := range shards {
		if s != nil && Good(id, i, s, size) {
			payload[i] = s[ChecksumSize:]
			good++
		} else {
			bad = append(bad, i)
		}
	}
	if good < c.k {
		return nil, bad, nil, ErrTooFewShards
	}
	if len(bad) > 0 && (repair || bad[0] < c.k) {
		if err := c.reconstruct(payload, repair); err != nil {
			return nil, bad, nil, err
		}
	}
	// Exactly n bytes, not the k payloads' padding too: a dst of n bytes
	// (a pooled buffer) is then always large enough and is the one used.
	sealed = dst[:0]
	for i := 0; i < c.k && len(sealed) < n; i++ {
		sealed = append(sealed, payload[i][:min(len(payload[i]), n-len(sealed))]...)
	}
	if repair && len(bad) > 0 {
		rebuilt = make([][]byte, len(shards))
		for _, i := range bad {
			sum := Checksum(id, i, payload[i])
			rebuilt[i] = append(sum[:], payload[i]...)
		}
	}
	return sealed[:n], bad, rebuilt, nil
}

func (c *Coder) reconstruct(payload [][]byte, all bool) error {
	if c.enc == nil {
		return ErrTooFewShards // unreachable: m == 0 means any bad shard leaves < k
	}
	var err error
	if all {
		err = c.enc.Reconstruct(payload)
	} else {
		err = c.enc.ReconstructData(payload)
	}
	if err != nil {
		return fmt.Errorf("erasure: %w", err)
	}
	return nil
}
