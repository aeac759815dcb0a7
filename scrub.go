package kv

import (
	"context"
	"errors"
	"fmt"

	"github.com/cockroachdb/pebble/v2"

	"github.com/sealkv/kv/internal/bufpool"
	"github.com/sealkv/kv/internal/record"
	"github.com/sealkv/kv/internal/slicestore"
)

// ScrubOptions configure Scrub.
type ScrubOptions struct {
	// Repair rewrites bad or missing shards rebuilt from the good ones.
	Repair bool
	// Progress, if set, is called after each slice with the number of
	// slices checked and the number there were when Scrub started.
	Progress func(done, total int64)
}

// ScrubReport is what Scrub found.
type ScrubReport struct {
	// SlicesChecked is the number of slices whose shards were read.
	SlicesChecked int
	ShardsBad     int // missing or failing their checksum
	// ShardsRepaired is the number of bad shards rewritten (with Repair).
	ShardsRepaired int
	// Unreadable are the slices with fewer than k good shards or, with
	// readable Keys, that failed authentication or the SliceID check.
	Unreadable []SliceID
}

// Scrub reads every shard of every slice, verifies it and, with Repair,
// rewrites the bad ones from parity. With readable Keys it also opens each
// slice and checks its plaintext against its SliceID; slices failing that
// are marked bad so the next Put of their content replaces them, and a
// slice marked bad (by a read that failed) that Scrub finds whole, or
// repairs in full, is unmarked. A slice whose shards cannot be fetched
// (ErrUnavailable: failure domains of the SliceStore not answering) stops
// Scrub with that error: it cannot tell damage from an outage then.
func (db *DB) Scrub(ctx context.Context, opts ScrubOptions) (_ *ScrubReport, err error) {
	done, err := db.enterCtx(ctx)
	if err != nil {
		return nil, err
	}
	defer done()
	defer catch(&err)
	total := db.Stats().Slices
	rep := &ScrubReport{}
	err = db.eachKey([]byte{record.PrefixSlice}, func(k, v []byte) error {
		if err := ctx.Err(); err != nil {
			return err
		}
		rec, err := record.DecodeSlice(v)
		if err != nil || len(k) != 65 {
			return fmt.Errorf("%w: slice record %x: %v", ErrCorrupt, k, err)
		}
		if err := db.scrubSlice(ctx, SliceID(k[1:]), rec, opts.Repair, rep); err != nil {
			return err
		}
		rep.SlicesChecked++
		if opts.Progress != nil {
			opts.Progress(int64(rep.SlicesChecked), total)
		}
		return nil
	})
	return rep, err
}

// scrubSlice checks one slice. Scrub walks the records as they were when
// it began, so a slice that fails is counted only if it still has the
// record rec: a Delete or a reseal since then removed or replaced its
// shards, which is no damage.
func (db *DB) scrubSlice(ctx context.Context, id SliceID, rec *record.Slice, repair bool, rep *ScrubReport) error {
	sealed, bad, rebuilt, err := db.readSealed(ctx, &id, rec, true)
	if (len(bad) > 0 || errors.Is(err, ErrCorrupt)) && db.moved(&id, rec) {
		return nil
	}
	rep.ShardsBad += len(bad)
	if errors.Is(err, ErrCorrupt) {
		db.unreadable(&id, rec, rep)
		return nil
	}
	if err != nil {
		return err
	}
	if db.keys.CanRead() {
		s, err := db.readSession(rec.Session)
		if errors.Is(err, ErrCorrupt) { // no session record: no reading it, as in readSlice
			db.unreadable(&id, rec, rep)
			return nil
		}
		if err != nil {
			return err
		}
		clear, err := db.openSealed(s, &id, rec, sealed)
		if err != nil {
			db.unreadable(&id, rec, rep)
			return nil
		}
		bufpool.Put(clear)
	}
	whole := len(bad) == 0
	if repair && len(bad) > 0 {
		n, err := db.repair(&id, rec, bad, rebuilt)
		rep.ShardsRepaired += n
		if err != nil {
			// Keep scrubbing: one unwritable shard must not hide the rest.
			db.opts.Logger.Warn("sealkv: repair failed", "slice", id.String(), "error", err)
		}
		whole = err == nil && n == len(bad)
	}
	if whole && rec.Bad && db.keys.CanRead() {
		return db.clearBad(&id, rec)
	}
	return nil
}

// clearBad removes the bad mark of a slice Scrub has just found whole: all
// k+m shards good, or the bad ones rewritten (durably: PutShard returns
// once they are, so a crash cannot leave the mark gone and the shards
// not), and the slice opened and checked against its SliceID. The next
// Put of its content then deduplicates instead of sealing it anew. Only a
// mark that was there before Scrub read the shards (rec.Bad) is removed,
// and only while the slice still has the record rec. With write-only Keys
// the mark stays: it may stand for a failed authentication or SliceID
// check, which shard checksums do not see.
func (db *DB) clearBad(id *SliceID, rec *record.Slice) error {
	db.mu.Lock()
	defer db.mu.Unlock()
	cur, err := sliceRecord(db.meta, id)
	if err != nil || cur == nil || cur.Session != rec.Session || cur.Ctr != rec.Ctr || !cur.Bad {
		return err
	}
	cur.Bad = false
	if err := db.meta.Set(record.SliceKey((*[64]byte)(id)), cur.Encode(), pebble.Sync); err != nil {
		return err
	}
	db.opts.Logger.Info("sealkv: slice found whole; its bad mark is removed", "slice", id.String())
	return nil
}

// unreadable marks the slice bad, so the next Put of its content
// replaces it, and reports it, unless it no longer has the record rec: a
// Delete or a reseal since its shards were read is no damage.
func (db *DB) unreadable(id *SliceID, rec *record.Slice, rep *ScrubReport) {
	if db.moved(id, rec) {
		return
	}
	db.markBad(id, rec)
	rep.Unreadable = append(rep.Unreadable, *id)
}

// repair writes rebuilt shards back, unless the slice was deleted or
// replaced meanwhile (checked under db.mu so no orphan shard is written).
func (db *DB) repair(id *SliceID, rec *record.Slice, bad []int, rebuilt [][]byte) (int, error) {
	db.mu.Lock()
	defer db.mu.Unlock()
	cur, err := sliceRecord(db.meta, id)
	if err != nil || cur == nil || cur.Session != rec.Session || cur.Ctr != rec.Ctr {
		return 0, err
	}
	loc := slicestore.Location{Session: rec.Session, Ctr: rec.Ctr}
	var done []int
	var errs error
	for _, idx := range bad {
		// Go on past a shard that cannot be written (its domain down):
		// the others may be, and each one rewritten is one more loss
		// the slice survives.
		if err := db.slices.PutShard(context.Background(), loc, idx, rebuilt[idx]); err != nil {
			errs = errors.Join(errs, fmt.Errorf("sealkv: repairing slice %s shard %d: %w", id, idx, err))
			continue
		}
		done = append(done, idx)
	}
	if len(done) > 0 {
		db.opts.Logger.Info("sealkv: repaired shards", "slice", id.String(), "shards", done)
	}
	return len(done), errs
}
