package kv

import (
	"context"
	"encoding/binary"
	"fmt"

	"github.com/cockroachdb/pebble/v2"

	"github.com/sealkv/kv/internal/record"
	"github.com/sealkv/kv/internal/slicestore"
)

// recover brings the store back to a state where invariants I1–I4 hold
// after a crash: Deletes whose meta batch committed get their shards
// removed, every session that did not close cleanly has its unfinished
// Puts rolled back, and slices kept only for Puts in flight are released.
func (db *DB) recover() error {
	db.mu.Lock()
	defer db.mu.Unlock()
	if err := db.finishIntents(); err != nil {
		return err
	}
	var unclean [][16]byte
	err := db.eachKey([]byte{record.PrefixUnclean}, func(k, _ []byte) error {
		if len(k) == 17 {
			unclean = append(unclean, [16]byte(k[1:]))
		}
		return nil
	})
	if err != nil {
		return err
	}
	for _, sid := range unclean {
		listed, err := db.recoverSession(sid)
		if err != nil {
			return fmt.Errorf("session %x: %w", sid, err)
		}
		if !listed {
			continue // the session stays unclean: the next Open lists it again
		}
		if err := db.meta.Delete(record.UncleanKey(sid), pebble.Sync); err != nil {
			return err
		}
		db.opts.Logger.Info("sealkv: recovered unclean session", "session", fmt.Sprintf("%x", sid))
	}
	return db.releasePinned()
}

// releasePinned decides again the slices that releases kept only for Puts
// in flight (record.PinnedKey). Those Puts have ended, by commit, abort or
// crash, so the slices are deleted unless a manifest now references them.
func (db *DB) releasePinned() error {
	rel := db.newRelease()
	defer rel.close()
	n := 0
	err := db.eachKey([]byte{record.PrefixPinned}, func(k, _ []byte) error {
		if len(k) == 1+record.IDSize {
			rel.candidate(SliceID(k[1:]))
		}
		n++
		return rel.b.Delete(k, nil)
	})
	if err != nil || n == 0 {
		return err
	}
	_, err = db.finishLocked(rel)
	return db.afterCommit(rel, err)
}

// finishIntents removes the shards named by committed delete intents.
func (db *DB) finishIntents() error {
	return db.eachKey([]byte{record.PrefixIntent}, func(k, v []byte) error {
		if len(k) == 9 {
			db.intents = max(db.intents, binary.BigEndian.Uint64(k[1:]))
		}
		locs, err := record.DecodeIntent(v)
		if err != nil {
			return fmt.Errorf("%w: intent: %v", ErrCorrupt, err)
		}
		sl := make([]slicestore.Location, len(locs))
		for i, l := range locs {
			sl[i] = slicestore.Location(l)
		}
		if err := db.slices.Delete(context.Background(), sl); err != nil {
			// The shards are garbage either way; the intent stays and the
			// next Open tries again. Failing Open would lock the store out
			// over space that is merely not yet reclaimed.
			db.opts.Logger.Warn("sealkv: could not remove deleted shards; will retry at next Open", "error", err)
			return nil
		}
		return db.meta.Delete(k, pebble.Sync)
	})
}

// recoverSession rolls back the Puts session sid left unfinished: their
// manifests are released, and every slice it wrote that no record points
// to, or that nothing references, is removed. It reports whether the slice
// store listed all of the session's slices: if not, the shards of those
// it missed stay until a later Open lists them (failing Open would lock
// the store out over space not yet reclaimed, as in finishIntents).
func (db *DB) recoverSession(sid [16]byte) (listed bool, _ error) {
	rel := db.newRelease()
	defer rel.close()
	prefix := append([]byte{record.PrefixManifest}, sid[:]...)
	err := db.eachKey(prefix, func(k, v []byte) error {
		m, err := record.DecodeManifest(v)
		if err != nil {
			return fmt.Errorf("%w: manifest: %v", ErrCorrupt, err)
		}
		if m.Version == 0 && len(k) == 1+record.ManifestIDSize {
			return rel.manifest(record.ManifestID(k[1:]))
		}
		return nil
	})
	if err != nil {
		return false, err
	}
	listed = true
	for h, err := range db.slices.Headers(context.Background(), sid) {
		if err != nil {
			db.opts.Logger.Warn("sealkv: could not list the slices of an unclean session; will retry at next Open",
				"session", fmt.Sprintf("%x", sid), "error", err)
			listed = false
			break
		}
		id := SliceID(h.ID)
		rec, err := sliceRecord(db.meta, &id)
		if err != nil {
			return false, err
		}
		if rec == nil || rec.Session != h.Location.Session || rec.Ctr != h.Location.Ctr {
			rel.drops = append(rel.drops, h.Location)
			continue
		}
		rel.candidate(id)
	}
	// If only removing the shards failed, the next Open retries the intent,
	// as finishIntents does.
	_, err = db.finishLocked(rel)
	return listed, db.afterCommit(rel, err)
}

// eachKey calls fn for every meta key with prefix, on a snapshot.
func (db *DB) eachKey(prefix []byte, fn func(k, v []byte) error) error {
	it, err := db.meta.NewIter(&pebble.IterOptions{LowerBound: prefix, UpperBound: record.PrefixEnd(prefix)})
	if err != nil {
		return err
	}
	defer it.Close()
	for it.First(); it.Valid(); it.Next() {
		v, err := it.ValueAndErr()
		if err != nil {
			return err
		}
		if err := fn(append([]byte(nil), it.Key()...), append([]byte(nil), v...)); err != nil {
			return err
		}
	}
	return it.Error()
}
