package slicestore

import (
	"context"
	"errors"
	"iter"
)

// ErrUnavailable, wrapped in an error from Store.Get, says that some of the
// shards returned with it as nil may exist but could not be fetched (a
// failure domain did not answer). The shards returned are still good to use.
var ErrUnavailable = errors.New("slicestore: shards unavailable")

// Header is a slice's back-pointer in a Store: where the slice is and its
// SliceID.
type Header struct {
	Location Location
	ID       [64]byte
}

// Store keeps the shards of SealedSlices. The kv package exports it as
// kv.SliceStore so that the slice keyspace can live elsewhere than the
// local Pebble instance (an object store, a cluster).
//
// Slices are addressed by Location, the writer's session and counter, not
// by SliceID: locations are ordered by write time (so a local store can
// append without rewriting) and never reused, so a location is written once
// and a replaced slice never overwrites its predecessor in place.
type Store interface {
	// NewWriter starts collecting the slices of one Put.
	NewWriter() Writer
	// Get returns the first n shards of the slice at l. A missing or
	// unreadable shard is nil: the caller verifies checksums and rebuilds
	// from parity. If some were nil only because they could not be fetched
	// (their domain did not answer), Get returns the shards together with
	// an error wrapping ErrUnavailable: with too few shards that is an
	// outage, which the caller must not take for damage. Any other error
	// means the store itself failed, and the shards are nil. The shards
	// returned are the caller's: it overwrites and recycles their memory,
	// so a store must not return memory it keeps.
	Get(ctx context.Context, l Location, n int) ([][]byte, error)
	// PutShard durably writes one shard (repair).
	PutShard(ctx context.Context, l Location, idx int, shard []byte) error
	// Delete durably removes every shard of the slices at locs. Deleting
	// what is not there is not an error.
	Delete(ctx context.Context, locs []Location) error
	// Headers yields, in location order, the location and SliceID of every
	// slice written in session sid: recovery uses them to find shards
	// whose Put never committed. If it cannot list them all (the store
	// failed, or too many failure domains did not answer), it yields an
	// error last, with a zero Header: recovery then keeps the session for
	// the next Open to list again, since a header it did not see leaks
	// that slice's shards for good.
	Headers(ctx context.Context, sid [16]byte) iter.Seq2[Header, error]
	// NewGroup starts collecting the slices of many Puts that are made
	// durable together (kv.Batch, and group commits of small DB.Puts).
	NewGroup() Group
	// Close releases the store.
	Close() error
}

// Writer collects the slices of one Put, in increasing Location order.
type Writer interface {
	// Add queues the shards of the slice id at l. It returns how many of
	// the slices added so far (counting from the first Add) are durable;
	// slices become durable in the order they were added. The caller
	// publishes a slice only once it is durable. Add must not retain
	// shards after it returns: the caller reuses their memory.
	Add(ctx context.Context, l Location, id *[64]byte, shards [][]byte) (durable int, err error)
	// Flush makes every slice added durable; a Group's Writer may instead
	// hand them to its Group, which makes them durable at Sync.
	Flush(ctx context.Context) error
	// Abort drops what has not been made durable.
	Abort()
}

var _ Store = (*Pebble)(nil)

// GroupBlock is how many put numbers a Group's Puts reserve at a time: a
// Group that writes its slices as one sorted table splits it at block
// boundaries, so that its tables never overlap the slices of Puts outside
// the group, whose put numbers lie in other blocks.
const GroupBlock = 1024

// Group collects the slices of the small Puts of one kv.Batch, or of one
// group commit of DB.Puts, and makes them durable together, so they share
// one write instead of one each.
type Group interface {
	// NewWriter starts a Writer for one Put of the group, whose put
	// number must come from a block the group's Puts reserved (see
	// GroupBlock). Its Flush hands the slices to the group.
	NewWriter() Writer
	// Sync makes every slice the group's Writers have flushed durable.
	// After Sync the group takes no more slices.
	Sync(ctx context.Context) error
}
