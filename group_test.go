package kv

import (
	"bytes"
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sealkv/kv/internal/slicestore"
)

// stageSmall stages a small Put of b under key as DB.Put does, without
// committing it: it joins the DB's open group commit.
func stageSmall(t *testing.T, db *DB, key string, b []byte, opts ...PutOption) *staged {
	t.Helper()
	r := bytes.NewReader(b)
	po, err := putOpts(key, r, opts)
	if err != nil {
		t.Fatal(err)
	}
	s, err := db.stage(ctx, key, r, po, nil)
	if err != nil {
		t.Fatalf("stage %q: %v", key, err)
	}
	if s.p.grp == nil {
		t.Fatalf("small Put %q joined no group", key)
	}
	return s
}

// commitAll commits staged Puts concurrently, as their DB.Puts would.
func commitAll(db *DB, ss []*staged) ([]*Data, []error) {
	ds, errs := make([]*Data, len(ss)), make([]error, len(ss))
	var wg sync.WaitGroup
	for i, s := range ss {
		wg.Go(func() { ds[i], errs[i] = db.commitPut(s) })
	}
	wg.Wait()
	return ds, errs
}

// TestGroupCommit stages small Puts that join one group, two with the same
// content and one whose parent is deleted before the group commits: that
// one fails alone (ErrNotFound) and leaves nothing, the others commit, the
// shared slice is stored once, and the invariants hold.
func TestGroupCommit(t *testing.T) {
	keys := newKeys(t)
	db := openDB(t, t.TempDir(), smallOpts(keys))
	mustPut(t, db, "dir", nil)
	mustPut(t, db, "gone", nil)
	same, other := randBytes(3<<10), randBytes(10<<10)
	ss := []*staged{
		stageSmall(t, db, "a", same, WithParent("dir")),
		stageSmall(t, db, "b", other, WithParent("gone")),
		stageSmall(t, db, "c", same),
	}
	for _, s := range ss[1:] {
		if s.p.grp != ss[0].p.grp {
			t.Fatal("Puts staged while no group committed joined different groups")
		}
	}
	if _, err := db.Delete(ctx, "gone"); err != nil {
		t.Fatal(err)
	}
	before := db.Stats()
	ds, errs := commitAll(db, ss)
	if errs[0] != nil || errs[2] != nil {
		t.Fatalf("Puts with no fault failed: %v, %v", errs[0], errs[2])
	}
	if !errors.Is(errs[1], ErrNotFound) {
		t.Fatalf("Put under a deleted parent: %v, want ErrNotFound", errs[1])
	}
	if ds[0].Parent != "dir" || ds[0].Content.Version != 1 || ds[2].Content.Version != 1 || ds[0].Content.ContentID != ds[2].Content.ContentID {
		t.Fatalf("Data: %+v, %+v", ds[0], ds[2])
	}
	for _, k := range []string{"a", "c"} {
		if got := get(t, db, k); !bytes.Equal(got, same) {
			t.Fatalf("%q: wrong content", k)
		}
	}
	if _, err := db.Stat(ctx, "b"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Stat of the failed Put: %v", err)
	}
	after := db.Stats()
	n := int64(ds[0].Content.NumSlices) // stored once for a and c
	if n == 0 || after.Slices != before.Slices+n || after.Data != before.Data+2 {
		t.Fatalf("stats: slices %d → %d, data %d → %d; want +%d (shared by a and c), +2",
			before.Slices, after.Slices, before.Data, after.Data, n)
	}
	checkInvariants(t, db)
}

// TestGroupWaitsForStaging checks that a group commits only once every Put
// that joined it has staged or left: a member still sealing holds the
// commit, and one that fails lets it go.
func TestGroupWaitsForStaging(t *testing.T) {
	db := openDB(t, t.TempDir(), smallOpts(newKeys(t)))
	s := stageSmall(t, db, "a", randBytes(1<<10))
	g, _, _, _ := db.groups.join(db) // a Put of the same group, still sealing
	if g != s.p.grp {
		t.Fatal("joined another group")
	}
	done := make(chan error, 1)
	go func() {
		_, err := db.commitGrouped(s)
		done <- err
	}()
	select {
	case err := <-done:
		t.Fatalf("the group committed while a Put of it was sealing (err %v)", err)
	case <-time.After(100 * time.Millisecond):
	}
	db.groups.leave(g)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if got := db.Stats().Data; got != 1 {
		t.Fatalf("%d Data, want 1", got)
	}
	// The next Put forms a new group.
	mustPut(t, db, "b", randBytes(1<<10))
	checkInvariants(t, db)
}

// failingSyncStore makes every Group's Sync end, after its shards are
// durable, in a fatal engine error, as Pebble's Fatalf does (kv.go), and
// counts the shards deleted.
type failingSyncStore struct {
	slicestore.Store
	db      *DB
	deleted atomic.Int64
}

type failingSyncGroup struct {
	slicestore.Group
	s *failingSyncStore
}

func (s *failingSyncStore) NewGroup() slicestore.Group {
	return failingSyncGroup{s.Store.NewGroup(), s}
}

func (s *failingSyncStore) Delete(ctx context.Context, locs []slicestore.Location) error {
	s.deleted.Add(int64(len(locs)))
	return s.Store.Delete(ctx, locs)
}

func (g failingSyncGroup) Sync(ctx context.Context) error {
	if err := g.Group.Sync(ctx); err != nil {
		return err
	}
	f := &engineFailure{msg: "injected", commit: true}
	var err error = f
	g.s.db.failed.CompareAndSwap(nil, &err)
	panic(commitFailure{f})
}

// TestGroupLeaderFails checks that when a group's leader stops on a fatal
// engine error, every Put of the group returns ErrFailed and none undoes
// anything: whether its records were committed is unknown, so only the
// next Open may decide (found in review: the other Puts aborted, deleting
// shards that a commit already in the log could reference). The next Open
// then leaves a consistent store.
func TestGroupLeaderFails(t *testing.T) {
	dir := t.TempDir()
	keys := newKeys(t)
	fs := &failingSyncStore{}
	db, err := Open(dir, wrappedOpts(keys, func(s slicestore.Store) slicestore.Store {
		fs.Store = s
		return fs
	}))
	if err != nil {
		t.Fatal(err)
	}
	fs.db = db
	ss := []*staged{
		stageSmall(t, db, "a", randBytes(6<<10)),
		stageSmall(t, db, "b", randBytes(6<<10)),
	}
	_, errs := commitAll(db, ss)
	for i, err := range errs {
		if !errors.Is(err, ErrFailed) {
			t.Fatalf("Put %d: %v, want ErrFailed", i, err)
		}
	}
	if n := fs.deleted.Load(); n != 0 {
		t.Fatalf("%d shard locations deleted after a fatal error", n)
	}
	if err := db.Close(); !errors.Is(err, ErrFailed) {
		t.Fatalf("Close: %v, want ErrFailed", err)
	}
	db = openDB(t, dir, smallOpts(keys))
	checkInvariants(t, db)
}
