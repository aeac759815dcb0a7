package kv

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"math"
	"sync"

	"github.com/sealkv/kv/internal/slicestore"
)

// errGroupAbandoned is what the Puts of a commit group get when its leader
// stopped without committing it (a panic, which its own Put reports).
var errGroupAbandoned = errors.New("sealkv: the group commit of this Put did not finish")

// A putGroup is a group commit of the small Puts of DB.Put that run at the
// same time. A Put whose ClearText fits in its first block joins the DB's
// open group when it is numbered; once its slices are sealed, it waits
// until no group is committing, and the first of a group to find none
// commits the whole group: its shards with one synced write
// (slicestore.Group), then its records in one meta batch with one sync.
// Puts that arrive meanwhile form the next group. A lone Put is a group of
// one.
//
// Before, each small Put committed its own shards and then its own records,
// and waited for a sync of each keyspace's log in a row; Pebble shared a
// sync among the Puts that happened to wait for it at the same moment.
type putGroup struct {
	slices  slicestore.Group
	staging int       // joined Puts still sealing; guarded by groups.mu
	ready   []*staged // guarded by groups.mu until the group closes
	done    bool      // results are set
	ds      []*Data   // results, by index in ready
	errs    []error
}

// groups is the DB's state of group commits.
type groups struct {
	mu         sync.Mutex
	cond       *sync.Cond  // a group's staging count fell to 0, or a commit ended
	open       *putGroup   // the group new small Puts join, nil if none
	committing bool        // a group is committing
	block      numberBlock // put numbers of every group, in turn
}

// join adds a small Put to the open group and gives it a put number, both
// at once, so that no later group takes a smaller number: each group's
// Puts then hold a range of numbers of their own and its slices never
// overlap another group's.
func (gs *groups) join(db *DB) (*putGroup, *writerSession, uint64, error) {
	gs.mu.Lock()
	defer gs.mu.Unlock()
	ws, num, err := gs.block.take(db)
	if err != nil {
		return nil, nil, 0, err
	}
	if gs.open == nil {
		gs.open = &putGroup{slices: db.slices.NewGroup()}
	}
	gs.open.staging++
	return gs.open, ws, num, nil
}

// leave takes a Put that failed before its commit out of its group.
func (gs *groups) leave(g *putGroup) {
	gs.mu.Lock()
	defer gs.mu.Unlock()
	if g.staging--; g.staging == 0 {
		gs.cond.Broadcast()
	}
}

// commitGrouped commits the staged Put s with its group and returns its
// result. It waits for the group's commit, or runs it, whatever ctx says:
// the Put's slices are stored, and the group's other Puts depend on it.
func (db *DB) commitGrouped(s *staged) (*Data, error) {
	gs, g := &db.groups, s.p.grp
	gs.mu.Lock()
	defer gs.mu.Unlock()
	i := len(g.ready)
	g.ready = append(g.ready, s)
	if g.staging--; g.staging == 0 {
		gs.cond.Broadcast()
	}
	for !g.done && gs.committing {
		gs.cond.Wait()
	}
	if !g.done {
		db.lead(g)
	}
	return g.ds[i], g.errs[i]
}

// lead commits g, one group at a time. gs.mu is held on entry and on
// return, not while the group commits.
//
// (Letting the next group make its slices durable while this one commits
// its records made groups smaller and the Puts slower: 100,000 × 4 KiB
// Puts, 64 in flight, 4 alternated pairs, slower in all 4, median +1.75 s.)
func (db *DB) lead(g *putGroup) {
	gs := &db.groups
	gs.committing = true
	if gs.open == g { // close the group to new Puts
		gs.open = nil
	}
	for g.staging > 0 {
		gs.cond.Wait()
	}
	g.ds, g.errs = make([]*Data, len(g.ready)), make([]error, len(g.ready))
	gs.mu.Unlock()
	finished := false
	defer func() { // also when a panic unwinds (see catch)
		gs.mu.Lock()
		if !finished {
			// The outcome is unknown (the meta batch may be in the log):
			// nothing may be undone; the next Open recovers.
			for j, s := range g.ready {
				g.errs[j] = cmp.Or(db.failure(), errGroupAbandoned)
				s.committed = true
			}
		}
		g.done, gs.committing = true, false
		gs.cond.Broadcast()
	}()
	err := g.slices.Sync(context.Background())
	if err != nil {
		err = fmt.Errorf("sealkv: syncing slices: %w", err)
		for j := range g.errs {
			g.errs[j] = err
		}
	} else {
		db.commitEach(g.ready, g.ds, g.errs)
	}
	finished = true
}

// commitEach commits ss together, their slices being durable, and sets
// each one's result in ds and errs. If that commit fails before it is
// written (a parent deleted since a Put checked it), each Put commits on
// its own, so that one Put's error is not the others'.
func (db *DB) commitEach(ss []*staged, ds []*Data, errs []error) {
	all, err := db.commitPuts(ss)
	if err == nil || len(ss) == 1 || ss[0].committed {
		for i := range ss {
			if all != nil {
				ds[i] = all[i]
			}
			errs[i] = err
		}
		return
	}
	for i, s := range ss {
		one, err := db.commitPuts([]*staged{s})
		if one != nil {
			ds[i] = one[0]
		}
		errs[i] = err
	}
}

// numberBlock hands out put numbers from blocks of slicestore.GroupBlock
// reserved from a writer session's put numbers for one user alone (a
// Batch's small Puts, or the group commits), so that the slices of its Puts
// never share a block with those of other Puts. Its owner serializes calls.
type numberBlock struct {
	ws         *writerSession // the session of the block
	next, last uint64         // numbers left in the block reserved last: [next, last)
}

// take returns the next number and its session, reserving a new block if
// needed, in a new session if the current one has no whole block left.
func (nb *numberBlock) take(db *DB) (*writerSession, uint64, error) {
	for nb.next == nb.last {
		const n = slicestore.GroupBlock
		ws := db.writer.Load()
		cur := ws.puts.Load()
		start := (cur/n + 1) * n
		if start > math.MaxUint32 {
			// The session's last numbers (fewer than a block) go to
			// Puts that take one at a time.
			if err := db.nextSession(ws); err != nil {
				return nil, 0, err
			}
			continue
		}
		if ws.puts.CompareAndSwap(cur, start+n-1) {
			nb.ws, nb.next, nb.last = ws, start, start+n
		}
	}
	nb.next++
	return nb.ws, nb.next - 1, nil
}
