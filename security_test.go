package kv

// Tests of the claims in SECURITY.md. Each test's comment names the claim
// it proves.

import (
	"bytes"
	"cmp"
	"crypto/ecdh"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	mrand "math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cloudflare/circl/kem/mlkem/mlkem1024"
	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/klauspost/compress/zstd"
	"github.com/zeebo/blake3"

	"github.com/sealkv/kv/internal/erasure"
	"github.com/sealkv/kv/internal/record"
	"github.com/sealkv/kv/internal/seal"
	"github.com/sealkv/kv/internal/slicestore"
)

// ---- helpers ----

// memOpts are smallOpts on an in-memory file system (fast syncs).
func memOpts(k *Keys, fs vfs.FS) *Options {
	o := smallOpts(k)
	o.fs, o.Logger = fs, quietLogger
	return o
}

func onlyRecord(t testing.TB, db *DB) (SliceID, *record.Slice) {
	t.Helper()
	recs := sliceRecords(t, db)
	if len(recs) != 1 {
		t.Fatalf("%d slice records, want 1", len(recs))
	}
	for id, rec := range recs {
		return id, rec
	}
	panic("unreachable")
}

func setRecord(t testing.TB, db *DB, id SliceID, v []byte) {
	t.Helper()
	if err := db.meta.Set(record.SliceKey((*[64]byte)(&id)), v, pebble.Sync); err != nil {
		t.Fatal(err)
	}
}

func loc(rec *record.Slice) slicestore.Location {
	return slicestore.Location{Session: rec.Session, Ctr: rec.Ctr}
}

func getShards(t testing.TB, db *DB, rec *record.Slice) [][]byte {
	t.Helper()
	sh, err := db.slices.Get(ctx, loc(rec), rec.K+rec.M)
	if err != nil {
		t.Fatal(err)
	}
	return sh
}

func dropShards(t testing.TB, db *DB, rec *record.Slice) {
	t.Helper()
	if err := db.slices.Delete(ctx, []slicestore.Location{loc(rec)}); err != nil {
		t.Fatal(err)
	}
}

func putShards(t testing.TB, db *DB, l slicestore.Location, shards [][]byte) {
	t.Helper()
	for i, s := range shards {
		if err := db.slices.PutShard(ctx, l, i, s); err != nil {
			t.Fatal(err)
		}
	}
}

// sealedBytes decodes the SealedSlice (GCM ciphertext ‖ tag) of rec.
func sealedBytes(t testing.TB, db *DB, id SliceID, rec *record.Slice) []byte {
	t.Helper()
	c, _ := erasure.New(rec.K, rec.M)
	sealed, _, _, err := c.Decode(id[:], getShards(t, db, rec), int(rec.SealedSize), false)
	if err != nil {
		t.Fatal(err)
	}
	return sealed
}

func encodeShards(t testing.TB, id SliceID, rec *record.Slice, sealed []byte) [][]byte {
	t.Helper()
	c, _ := erasure.New(rec.K, rec.M)
	sh, err := c.Encode(id[:], sealed)
	if err != nil {
		t.Fatal(err)
	}
	return sh
}

// readKey reads key in full. It fails the test if the bytes read are not a
// prefix of want (wrong bytes), or the error is not ErrCorrupt.
func readKey(t testing.TB, db *DB, key string, want []byte) error {
	t.Helper()
	r, err := db.Get(ctx, key)
	if err != nil {
		t.Fatalf("Get %q: %v", key, err)
	}
	defer r.Close()
	got, err := io.ReadAll(r)
	if !bytes.HasPrefix(want, got) || (err == nil && len(got) != len(want)) {
		t.Fatalf("read %q returned wrong bytes (%d of %d, err %v)", key, len(got), len(want), err)
	}
	if err != nil && !errors.Is(err, ErrCorrupt) {
		t.Fatalf("read %q: %v, want ErrCorrupt", key, err)
	}
	return err
}

// ---- 1. (key, nonce) uniqueness ----

type traced struct {
	sid [16]byte
	ctr uint64
	id  uint64 // SliceID prefix
	key [32]byte
}

type keyTrace struct {
	mu  sync.Mutex
	all []traced
}

func (tr *keyTrace) record(sid [16]byte, id *[64]byte, ctr uint64, key [32]byte) {
	e := traced{sid: sid, ctr: ctr, key: key}
	for _, b := range id[:8] {
		e.id = e.id<<8 | uint64(b)
	}
	tr.mu.Lock()
	tr.all = append(tr.all, e)
	tr.mu.Unlock()
}

// gateReader stops once after delivering `after` bytes until released, so
// a crash image can be taken with a Put in flight.
type gateReader struct {
	r                io.Reader
	after, n         int
	reached, release chan struct{}
	once             sync.Once
}

func (g *gateReader) Read(p []byte) (int, error) {
	if g.n >= g.after {
		g.once.Do(func() { close(g.reached); <-g.release })
	}
	n, err := g.r.Read(p)
	g.n += n
	return n, err
}

func seededBytes(seed uint64, n int) []byte {
	rng := mrand.NewChaCha8([32]byte{byte(seed), byte(seed >> 8), 1})
	b := make([]byte, n)
	_, _ = rng.Read(b)
	return b
}

// TestNoKeyNonceReuse proves SECURITY.md "No (key, nonce) pair repeats":
// across ≥ 1,000,000 sealed slices (SEALKV_NONCE_SLICES) written by five
// writer sessions, no AES-256-GCM key is used twice (the nonce is fixed,
// so this is the (key, nonce) claim), and no (session, counter) repeats.
// Sessions: A (crashed with a Put in flight), B and C (two opens of the
// same crash image: a "replayed" store, e.g. a restored VM snapshot), D
// (reopen of A's store after a clean close) and E (a second DB value
// sealing concurrently with D's Puts through its own session). B, C and
// D seal the same content (same SliceIDs) in the same order, so they
// use identical (SliceID, counter) pairs: only the session key separates
// them. Every slice key used by real Puts is traced at seal.Session.Seal;
// most slices are sealed by calling the session directly with the
// counter scheme Put uses (put number from db.puts << 32 | sequence),
// interleaved with real Puts (64-byte minimum slices).
func TestNoKeyNonceReuse(t *testing.T) {
	target := envInt("SEALKV_NONCE_SLICES", 1_000_000)
	tr := &keyTrace{all: make([]traced, 0, target+target/8)}
	sealTrace = tr.record
	t.Cleanup(func() { sealTrace = nil })
	keys := newKeys(t)
	opts := func(fs vfs.FS) *Options {
		return &Options{Keys: keys, MinSliceSize: 64, AvgSliceSize: 256, MaxSliceSize: 1024, DataShards: 1, ParityShards: NoParity,
			Compression: CompressionNone, Concurrency: 2, Logger: quietLogger, fs: fs}
	}
	const sessions = 5
	perSession := target/sessions + 1
	var ids [16][64]byte // direct seals reuse a few SliceIDs: uniqueness must come from counters and sessions
	for i := range ids {
		ids[i] = [64]byte(seededBytes(uint64(1000+i), 64))
	}
	payload := make([]byte, 16)
	var recorded [][2]any // (session, ctr) of the slice records each store holds at the end
	// run does real Puts of the content from seed, then seals directly until
	// the session has sealed n slices.
	run := func(db *DB, seed uint64, n int) {
		t.Helper()
		start := tr.count(db.writer.Load().ID)
		for i := range 8 {
			mustPut(t, db, fmt.Sprintf("real-%d", i), seededBytes(seed+uint64(i), 512<<10))
		}
		for tr.count(db.writer.Load().ID)-start < n {
			num := db.writer.Load().puts.Add(1)
			for seq := uint64(0); seq < 50_000; seq++ {
				db.writer.Load().Seal(nil, payload, &ids[seq%16], num<<32|seq, 0)
			}
		}
		for _, rec := range sliceRecords(t, db) {
			recorded = append(recorded, [2]any{rec.Session, rec.Ctr})
		}
	}

	// A: crash with a Put in flight; two identical crash images.
	fsA := vfs.NewCrashableMem()
	dbA, err := Open("/db", opts(fsA))
	if err != nil {
		t.Fatal(err)
	}
	g := &gateReader{r: bytes.NewReader(seededBytes(7, 1<<20)), after: 512 << 10, reached: make(chan struct{}), release: make(chan struct{})}
	putErr := make(chan error, 1)
	go func() { _, err := dbA.Put(ctx, "inflight", g); putErr <- err }()
	<-g.reached
	time.Sleep(20 * time.Millisecond) // let the workers seal what was cut
	imgB := fsA.CrashClone(vfs.CrashCloneCfg{})
	imgC := fsA.CrashClone(vfs.CrashCloneCfg{})
	close(g.release)
	if err := <-putErr; err != nil {
		t.Fatal(err)
	}
	run(dbA, 100, perSession)
	if err := dbA.Close(); err != nil {
		t.Fatal(err)
	}

	// B and C: the same crash image opened twice (recovery, new sessions).
	for _, img := range []vfs.FS{imgB, imgC} {
		db, err := Open("/db", opts(img))
		if err != nil {
			t.Fatal(err)
		}
		run(db, 200, perSession)
		db.Close()
	}

	// D and E: A's store reopened; E is a second DB value on a copy, sealing
	// concurrently with D.
	fsE := vfs.NewCrashableMem()
	dbD, err := Open("/db", opts(fsA))
	if err != nil {
		t.Fatal(err)
	}
	dbE, err := Open("/db", opts(fsE))
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Go(func() { run(dbE, 300, perSession) })
	run(dbD, 200, perSession)
	wg.Wait()
	dbD.Close()
	dbE.Close()

	all := tr.all
	if len(all) < target {
		t.Fatalf("only %d slices sealed", len(all))
	}
	sids := map[[16]byte]int{}
	for _, e := range all {
		sids[e.sid]++
	}
	if len(sids) != sessions {
		t.Fatalf("%d sessions, want %d", len(sids), sessions)
	}
	// Same (SliceID, counter) in several sessions: the case that relies on
	// the session key alone.
	type idCtr struct{ id, ctr uint64 }
	pairs := map[idCtr]map[[16]byte]bool{}
	for _, e := range all {
		p := idCtr{e.id, e.ctr}
		if pairs[p] == nil {
			pairs[p] = map[[16]byte]bool{}
		}
		pairs[p][e.sid] = true
	}
	shared := 0
	for _, s := range pairs {
		if len(s) >= 3 {
			shared++
		}
	}
	if shared < target/10 {
		t.Fatalf("only %d (SliceID, counter) pairs sealed in ≥ 3 sessions", shared)
	}
	pairs = nil
	// (session, counter) unique.
	slices.SortFunc(all, func(a, b traced) int {
		return cmp.Or(bytes.Compare(a.sid[:], b.sid[:]), cmp.Compare(a.ctr, b.ctr))
	})
	for i := 1; i < len(all); i++ {
		if all[i].sid == all[i-1].sid && all[i].ctr == all[i-1].ctr {
			t.Fatalf("session %x counter %#x sealed twice", all[i].sid, all[i].ctr)
		}
	}
	// Every stored slice was sealed through the traced path.
	for _, r := range recorded {
		sid, ctr := r[0].([16]byte), r[1].(uint64)
		if _, ok := slices.BinarySearchFunc(all, traced{sid: sid, ctr: ctr}, func(a, b traced) int {
			return cmp.Or(bytes.Compare(a.sid[:], b.sid[:]), cmp.Compare(a.ctr, b.ctr))
		}); !ok {
			t.Fatalf("stored slice (%x, %#x) was not traced", sid, ctr)
		}
	}
	// Keys unique.
	slices.SortFunc(all, func(a, b traced) int { return bytes.Compare(a.key[:], b.key[:]) })
	for i := 1; i < len(all); i++ {
		if all[i].key == all[i-1].key {
			t.Fatalf("AES key used twice: (%x, %#x) and (%x, %#x)", all[i].sid, all[i].ctr, all[i-1].sid, all[i-1].ctr)
		}
	}
	t.Logf("%d slices sealed in %d sessions (%d by real Puts; %d stored records checked against the trace), %d (SliceID, counter) pairs used in ≥ 3 sessions: every key distinct",
		len(all), len(sids), len(all)-tr.direct(), len(recorded), shared)
}

func (tr *keyTrace) count(sid [16]byte) int {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	n := 0
	for i := len(tr.all) - 1; i >= 0; i-- {
		if tr.all[i].sid == sid {
			n++
		}
	}
	return n
}

// direct estimates the directly sealed slices (payload seals have 16
// SliceIDs from a fixed pool; real slices have their own).
func (tr *keyTrace) direct() int {
	pool := map[uint64]bool{}
	for i := range 16 {
		id := seededBytes(uint64(1000+i), 8)
		var v uint64
		for _, b := range id {
			v = v<<8 | uint64(b)
		}
		pool[v] = true
	}
	n := 0
	for _, e := range tr.all {
		if pool[e.id] {
			n++
		}
	}
	return n
}

// ---- 2. tampering ----

// TestSealedRecordBitFlips proves "flipping any single bit of a sealed
// record gives ErrCorrupt, never wrong bytes": every bit of the slice
// record in meta; every bit of every stored shard (no parity: the shard
// checksum catches it; with parity it is repaired and the exact bytes
// come back); and every bit of the GCM ciphertext and tag with the shard
// checksums recomputed (as an attacker who can write the storage would),
// which the GCM tag catches (seal.ErrTag). The only record bits that can
// read back the exact bytes are the Bad marker and the parity count M
// (layout hints that do not change what is decrypted); no bit gives wrong
// bytes.
func TestSealedRecordBitFlips(t *testing.T) {
	keys := newKeys(t)
	want := randBytes(300) // one slice
	t.Run("record", func(t *testing.T) {
		db := openDB(t, "/db", memOpts(keys, vfs.NewMem()))
		mustPut(t, db, "a", want)
		id, rec := onlyRecord(t, db)
		orig := rec.Encode()
		var corrupt, exact, undecodable int
		for bit := range 8 * len(orig) {
			v := bytes.Clone(orig)
			v[bit/8] ^= 1 << (bit % 8)
			setRecord(t, db, id, v)
			err := readKey(t, db, "a", want)
			f, derr := record.DecodeSlice(v)
			harmless := derr == nil && f.Session == rec.Session && f.Ctr == rec.Ctr && f.Commit == rec.Commit &&
				f.Flags == rec.Flags && f.OriginalSize == rec.OriginalSize && f.SealedSize == rec.SealedSize && f.K == rec.K
			switch {
			case err != nil:
				corrupt++
			case harmless:
				exact++
			default:
				t.Fatalf("bit %d: record %+v read without error", bit, f)
			}
			if derr != nil {
				undecodable++
			}
		}
		setRecord(t, db, id, orig)
		if err := readKey(t, db, "a", want); err != nil {
			t.Fatal(err)
		}
		t.Logf("%d record bits: %d ErrCorrupt (%d undecodable), %d exact bytes (Bad marker / parity count), 0 wrong", 8*len(orig), corrupt, undecodable, exact)
	})
	t.Run("shards", func(t *testing.T) {
		for _, parity := range []int{NoParity, 2} {
			o := memOpts(keys, vfs.NewMem())
			o.ParityShards = parity
			db := openDB(t, "/db", o)
			mustPut(t, db, "a", want)
			id, rec := onlyRecord(t, db)
			shards := getShards(t, db, rec)
			var corrupt, exact, bits int
			for i, sh := range shards {
				for bit := range 8 * len(sh) {
					b := bytes.Clone(sh)
					b[bit/8] ^= 1 << (bit % 8)
					if err := db.slices.PutShard(ctx, loc(rec), i, b); err != nil {
						t.Fatal(err)
					}
					if readKey(t, db, "a", want) != nil {
						corrupt++
					} else {
						exact++
					}
					bits++
				}
				if err := db.slices.PutShard(ctx, loc(rec), i, sh); err != nil {
					t.Fatal(err)
				}
			}
			setRecord(t, db, id, rec.Encode()) // clear the Bad marks
			if parity == NoParity && corrupt != bits || parity > 0 && exact != bits {
				t.Fatalf("m=%d: %d of %d flips corrupt, %d exact", max(parity, 0), corrupt, bits, exact)
			}
			t.Logf("k=%d m=%d: %d shard bits flipped: %d ErrCorrupt, %d repaired from parity, 0 wrong", rec.K, rec.M, bits, corrupt, exact)
		}
	})
	t.Run("ciphertext", func(t *testing.T) {
		o := memOpts(keys, vfs.NewMem())
		o.ParityShards = NoParity
		db := openDB(t, "/db", o)
		mustPut(t, db, "a", want)
		id, rec := onlyRecord(t, db)
		sealed := sealedBytes(t, db, id, rec)
		for bit := range 8 * len(sealed) {
			s := bytes.Clone(sealed)
			s[bit/8] ^= 1 << (bit % 8)
			putShards(t, db, loc(rec), encodeShards(t, id, rec, s))
			if err := readKey(t, db, "a", want); !errors.Is(err, seal.ErrTag) {
				t.Fatalf("ciphertext bit %d: %v, want the GCM tag to fail", bit, err)
			}
		}
		t.Logf("%d ciphertext+tag bits flipped with valid shard checksums: all ErrCorrupt (GCM tag)", 8*len(sealed))
	})
}

// TestSwappedSliceRecords proves "swapping two slices' records gives
// ErrCorrupt": with the records swapped, the shard checksums (which bind
// the SliceID) fail; with the shards' checksums also recomputed for the
// swapped SliceIDs, the key commitment fails (seal.ErrCommitment), since
// the per-slice key is derived from the SliceID.
func TestSwappedSliceRecords(t *testing.T) {
	db := openDB(t, "/db", memOpts(newKeys(t), vfs.NewMem()))
	want := randBytes(60 << 10)
	d := mustPut(t, db, "a", want)
	if d.Content.NumSlices < 2 {
		t.Fatalf("%d slices", d.Content.NumSlices)
	}
	var ids []SliceID
	recs := sliceRecords(t, db)
	for id := range recs {
		ids = append(ids, id)
	}
	a, b := ids[0], ids[1]
	ra, rb := recs[a], recs[b]
	setRecord(t, db, a, rb.Encode())
	setRecord(t, db, b, ra.Encode())
	if err := readKey(t, db, "a", want); err == nil {
		t.Fatal("swapped records read")
	}
	// Attacker also fixes the shard checksums.
	putShards(t, db, loc(rb), encodeShards(t, a, rb, sealedBytes(t, db, b, rb)))
	putShards(t, db, loc(ra), encodeShards(t, b, ra, sealedBytes(t, db, a, ra)))
	setRecord(t, db, a, rb.Encode()) // reading marked them bad; unmark
	setRecord(t, db, b, ra.Encode())
	err := readKey(t, db, "a", want)
	if !errors.Is(err, seal.ErrCommitment) {
		t.Fatalf("swapped records with valid checksums: %v, want key commitment failure", err)
	}
	t.Logf("swapped: %v", err)
}

// TestResealedUnderOtherSession proves "a record re-sealed under another
// session's key is rejected by the key commitment check before
// decryption": a writer holding session S2 seals the same slice (a valid
// GCM ciphertext under its own key) and stores it, with its commitment,
// where the record claims session S1, or claims S2 with another counter.
// Both reads fail with seal.ErrCommitment, which seal.Session.Open returns
// before any AES operation on the ciphertext (internal/seal
// TestOpenChecksCommitmentFirst). The same forged bytes under their true
// (session, counter) read fine: only the binding rejects them.
func TestResealedUnderOtherSession(t *testing.T) {
	keys := newKeys(t)
	fs := vfs.NewMem()
	db1, err := Open("/db", memOpts(keys, fs))
	if err != nil {
		t.Fatal(err)
	}
	want := randBytes(300)
	mustPut(t, db1, "a", want)
	id, rec := onlyRecord(t, db1)
	db1.Close()
	db := openDB(t, "/db", memOpts(keys, fs))
	if db.writer.Load().ID == rec.Session {
		t.Fatal("same session after reopen")
	}
	ctr2 := uint64(1)<<63 | 5
	sealed2, commit2 := db.writer.Load().Seal(nil, want, (*[64]byte)(&id), ctr2, rec.Flags)
	for _, c := range []struct {
		name    string
		session [16]byte
		ctr     uint64
		want    error
	}{
		{"claims the first session", rec.Session, rec.Ctr, seal.ErrCommitment},
		{"claims its session with another counter", db.writer.Load().ID, rec.Ctr, seal.ErrCommitment},
		{"its true session and counter (control)", db.writer.Load().ID, ctr2, nil},
	} {
		forged := *rec
		forged.Session, forged.Ctr, forged.Commit, forged.SealedSize = c.session, c.ctr, commit2, int64(len(sealed2))
		putShards(t, db, loc(&forged), encodeShards(t, id, &forged, sealed2))
		setRecord(t, db, id, forged.Encode())
		err := readKey(t, db, "a", want)
		if c.want == nil && err != nil || c.want != nil && !errors.Is(err, c.want) {
			t.Fatalf("%s: %v, want %v", c.name, err, c.want)
		}
	}
}

// ---- 3. bad records are replaced ----

// TestBadRecordIsReplaced proves "a record that fails verification is
// replaced by the next Put of the same content; a bad writer cannot poison
// a SliceID for good":
//   - a record with a valid commitment but a ciphertext of other content
//     (a malicious writer's own session) is not detectable without reading:
//     a Put dedups against it, the next Get fails with ErrCorrupt and marks
//     it bad, and the Put after that reseals it; all Data then read back;
//   - a record whose commitment does not verify (forged or damaged record,
//     missing session, or a writer whose write-only keys carry a wrong
//     X25519 public key) is replaced by the next Put with readable keys,
//     without any Get in between (the dedup-hit commitment check).
func TestBadRecordIsReplaced(t *testing.T) {
	keys := newKeys(t)
	want := randBytes(300)
	t.Run("valid commitment, wrong content, after a Get", func(t *testing.T) {
		db := openDB(t, "/db", memOpts(keys, vfs.NewMem()))
		mustPut(t, db, "a", want)
		id, rec := onlyRecord(t, db)
		bad := *rec
		bad.Ctr = 1<<63 | 1
		forged, commit := db.writer.Load().Seal(nil, randBytes(300), (*[64]byte)(&id), bad.Ctr, rec.Flags)
		bad.Commit, bad.SealedSize = commit, int64(len(forged))
		putShards(t, db, loc(&bad), encodeShards(t, id, &bad, forged))
		setRecord(t, db, id, bad.Encode())
		dropShards(t, db, rec)    // the good record is gone; so are its shards
		mustPut(t, db, "b", want) // dedups: nothing to see without reading
		if err := readKey(t, db, "a", want); err == nil {
			t.Fatal("forged slice read")
		}
		if _, r := onlyRecord(t, db); !r.Bad {
			t.Fatal("not marked bad")
		}
		mustPut(t, db, "c", want)
		for _, k := range []string{"a", "b", "c"} {
			if err := readKey(t, db, k, want); err != nil {
				t.Fatalf("%q after reseal: %v", k, err)
			}
		}
		checkInvariants(t, db)
	})
	for _, c := range []struct {
		name  string
		forge func(*record.Slice)
	}{
		{"forged commitment, no Get", func(r *record.Slice) { rand.Read(r.Commit[:]) }},
		{"missing session, no Get", func(r *record.Slice) { rand.Read(r.Session[:]) }},
		{"unknown flag, no Get", func(r *record.Slice) { r.Flags |= 1 << 6 }},
	} {
		t.Run(c.name, func(t *testing.T) {
			db := openDB(t, "/db", memOpts(keys, vfs.NewMem()))
			mustPut(t, db, "a", want)
			id, rec := onlyRecord(t, db)
			bad := *rec
			c.forge(&bad)
			setRecord(t, db, id, bad.Encode())
			if loc(&bad) != loc(rec) {
				dropShards(t, db, rec)
			}
			mustPut(t, db, "b", want)
			if _, r := onlyRecord(t, db); r.Bad || r.Session != db.writer.Load().ID {
				t.Fatalf("record not replaced: %+v", r)
			}
			for _, k := range []string{"a", "b"} {
				if err := readKey(t, db, k, want); err != nil {
					t.Fatalf("%q: %v", k, err)
				}
			}
			checkInvariants(t, db)
		})
	}
	t.Run("writer with a wrong X25519 key, no Get", func(t *testing.T) {
		fs := vfs.NewMem()
		wrong := keys.WriteOnly()
		x, _ := ecdh.X25519().GenerateKey(rand.Reader)
		wrong.xpk = x.PublicKey()
		dbw, err := Open("/db", memOpts(wrong, fs))
		if err != nil {
			t.Fatal(err)
		}
		mustPut(t, dbw, "a", want)
		dbw.Close()
		db := openDB(t, "/db", memOpts(keys, fs))
		mustPut(t, db, "b", want)
		for _, k := range []string{"a", "b"} {
			if err := readKey(t, db, k, want); err != nil {
				t.Fatalf("%q: %v", k, err)
			}
		}
		checkInvariants(t, db)
	})
}

// ---- 4. stores with different keys ----

type storeView struct {
	cid  ContentID
	ids  map[SliceID]bool
	cuts []int64
	ct   map[[32]byte]bool // BLAKE3 of every shard
}

func viewOf(t *testing.T, db *DB, key string) storeView {
	t.Helper()
	d, err := getData(db.meta, key)
	if err != nil {
		t.Fatal(err)
	}
	v := d.Versions[len(d.Versions)-1]
	sv := storeView{cid: v.ContentID, ids: map[SliceID]bool{}, ct: map[[32]byte]bool{}}
	off := int64(0)
	err = db.eachKey(record.ChunkPrefix(v.Manifest), func(_, val []byte) error {
		refs, err := record.DecodeChunk(val)
		for _, r := range refs {
			sv.ids[SliceID(r.ID)] = true
			off += r.Size
			sv.cuts = append(sv.cuts, off)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, rec := range sliceRecords(t, db) {
		for _, sh := range getShards(t, db, rec) {
			sv.ct[blake3.Sum256(sh)] = true
		}
	}
	return sv
}

// mixedContent is random bytes followed by non-repeating text.
func mixedContent(n int) []byte {
	b := randBytes(n / 2)
	rng := mrand.New(mrand.NewPCG(5, 6))
	words := strings.Fields("the quick brown fox jumps over lazy dog sealkv slice chunk shard key nonce session")
	for len(b) < n {
		b = fmt.Appendf(b, "%d %s %s %x\n", rng.IntN(1e6), words[rng.IntN(len(words))], words[rng.IntN(len(words))], rng.Uint32())
	}
	return b[:n]
}

// TestDifferentKeysShareNothing proves "the same ClearText in two stores
// with different keys gives disjoint SliceIDs, different ContentIDs,
// different cut points and different ciphertexts" — and, as a control,
// that a second store with the same keys does share SliceIDs, ContentID
// and cut points (dedup is per key), but still no ciphertext (each Open
// seals under a new session).
func TestDifferentKeysShareNothing(t *testing.T) {
	content := mixedContent(2 << 20)
	k1 := newKeys(t)
	var views []storeView
	for _, k := range []*Keys{k1, newKeys(t), k1} {
		db := openDB(t, "/db", memOpts(k, vfs.NewMem()))
		mustPut(t, db, "x", content)
		views = append(views, viewOf(t, db, "x"))
	}
	a, b, a2 := views[0], views[1], views[2]
	if a.cid == b.cid {
		t.Fatal("same ContentID under different keys")
	}
	for id := range a.ids {
		if b.ids[id] {
			t.Fatal("shared SliceID under different keys")
		}
	}
	for h := range a.ct {
		if b.ct[h] || a2.ct[h] {
			t.Fatal("shared shard bytes")
		}
	}
	common := 0
	bc := map[int64]bool{}
	for _, c := range b.cuts[:len(b.cuts)-1] {
		bc[c] = true
	}
	for _, c := range a.cuts[:len(a.cuts)-1] {
		if bc[c] {
			common++
		}
	}
	if common*20 > len(a.cuts) {
		t.Fatalf("%d of %d cut points shared under different keys", common, len(a.cuts))
	}
	if a.cid != a2.cid || !slices.Equal(a.cuts, a2.cuts) || len(a.ids) != len(a2.ids) {
		t.Fatal("same keys, different SliceIDs/cuts (control)")
	}
	t.Logf("2 MiB mixed: %d and %d slices, %d common cut points, 0 common SliceIDs, 0 common shards", len(a.cuts), len(b.cuts), common)
}

// ---- 6. keys ----

// TestWriteOnlyKeysHoldNoDecapsulationKey proves "marshalled write-only
// keys contain no decapsulation secret" (no 16-byte window of the ML-KEM
// seed, the packed ML-KEM private key or the X25519 private key) and "a
// write-only DB cannot read": Get, GetVersion and decapsulating any other
// session fail with ErrWriteOnly.
func TestWriteOnlyKeysHoldNoDecapsulationKey(t *testing.T) {
	k := newKeys(t)
	wo := k.WriteOnly()
	enc, err := wo.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	// The packed ML-KEM decapsulation key is dk_PKE ‖ ek ‖ H(ek) ‖ z (FIPS
	// 203); dk_PKE and z are the secret parts.
	skb, _ := k.sk.MarshalBinary()
	dkPKE, z := skb[:1536], skb[len(skb)-32:]
	for _, secret := range [][]byte{k.seed, dkPKE, z, k.xsk.Bytes()} {
		for i := 0; i+16 <= len(secret); i++ {
			if bytes.Contains(enc, secret[i:i+16]) {
				t.Fatalf("write-only key file holds decapsulation key bytes")
			}
		}
	}
	if wo.seed != nil || wo.sk != nil || wo.xsk != nil || wo.CanRead() {
		t.Fatal("write-only Keys hold a decapsulation key")
	}
	if p, err := ParseKeys(enc); err != nil || p.CanRead() || p.xpk == nil || !p.xpk.Equal(k.xpk) || p.Fingerprint() != k.Fingerprint() {
		t.Fatalf("parse: %v", err)
	}
	fs := vfs.NewMem()
	full, err := Open("/db", memOpts(k, fs))
	if err != nil {
		t.Fatal(err)
	}
	mustPut(t, full, "a", randBytes(10<<10))
	sid := full.writer.Load().ID
	full.Close()
	db := openDB(t, "/db", memOpts(wo, fs))
	mustPut(t, db, "b", randBytes(10<<10))
	if _, err := db.Get(ctx, "a"); !errors.Is(err, ErrWriteOnly) {
		t.Fatalf("Get: %v", err)
	}
	if _, err := db.GetVersion(ctx, "b", 1); !errors.Is(err, ErrWriteOnly) {
		t.Fatalf("GetVersion: %v", err)
	}
	if _, err := db.readSession(sid); !errors.Is(err, ErrWriteOnly) {
		t.Fatalf("decapsulating another session: %v", err)
	}
}

// TestKeysNeverPrintedAnywhere proves "keys never appear in fmt or slog
// output", for every secret including the X25519 private key and the
// packed ML-KEM private key, through every verb, as a pointer, a value, a
// write-only copy, and inside other structs in exported and unexported
// fields (which fmt prints by reflection without calling Keys' methods;
// the secrets sit behind a pointer so only an address shows).
func TestKeysNeverPrintedAnywhere(t *testing.T) {
	k := newKeys(t)
	type wrapper struct {
		Exported   Keys
		unexported Keys
		ptr        *Keys
	}
	w := wrapper{Exported: *k, unexported: *k, ptr: k}
	wo := k.WriteOnly()
	var buf bytes.Buffer
	for _, h := range []slog.Handler{slog.NewJSONHandler(&buf, nil), slog.NewTextHandler(&buf, nil)} {
		slog.New(h).Info("keys", "k", k, "v", *k, "w", w, "wo", wo, "g", slog.Group("g", "k", k))
	}
	var out strings.Builder
	out.WriteString(buf.String())
	for _, verb := range []string{"%v", "%+v", "%#v", "%s", "%x", "%X", "%q", "%d"} {
		for _, arg := range []any{k, *k, w, &w, wo, *wo, []Keys{*k}, map[string]Keys{"k": *k}} {
			fmt.Fprintf(&out, verb+"\n", arg)
		}
	}
	fmt.Fprint(&out, k, *k, w, wo)
	fmt.Fprintln(&out, k, *k, w, wo)
	s := out.String()
	skb, _ := k.sk.MarshalBinary()
	for _, secret := range [][]byte{k.seed, k.secret[:], k.xsk.Bytes(), skb[:64]} {
		for _, enc := range []string{string(secret[:8]), hex.EncodeToString(secret[:8]), strings.ToUpper(hex.EncodeToString(secret[:8])),
			strings.Trim(fmt.Sprint(secret[:8]), "[]"), fmt.Sprintf("%#v", secret[:4])[8:]} {
			if i := strings.Index(s, enc); i >= 0 {
				t.Fatalf("secret leaked (%q) in output: %q", enc, s[max(0, i-300):i+50])
			}
		}
	}
	if !strings.Contains(s, "fingerprint") {
		t.Fatalf("unexpected output %.300q", s)
	}
}

// goldenV1 is a version-1 full key file with seed 0..63 and store secret
// 64..95, as written before the hybrid KEM existed.
func goldenV1(t *testing.T) []byte {
	b := append([]byte(keysMagic), 1, kindFull)
	for i := range 96 {
		b = append(b, byte(i))
	}
	sum := blake3.Sum256(b)
	return append(b, sum[:]...)
}

func withChecksum(b []byte) []byte {
	sum := blake3.Sum256(b)
	return append(bytes.Clone(b), sum[:]...)
}

// TestKeyFileVersions proves the key-file compatibility claims: version-1
// full files parse, keep their fingerprint (the value the version-1 code
// printed) and gain the X25519 key by derivation, and are still written as
// version 1; version-1 write-only files parse and round-trip byte for byte
// (identical to what the version-1 code wrote), but cannot start hybrid
// sessions (a clear ErrInvalidOptions, unless Options.KEM is
// KEMMLKEM1024); version-2 write-only files carry the X25519 public key;
// unknown versions and kind/version mismatches are rejected.
func TestKeyFileVersions(t *testing.T) {
	v1 := goldenV1(t)
	k, err := ParseKeys(v1)
	if err != nil {
		t.Fatal(err)
	}
	fp := k.Fingerprint()
	if got := hex.EncodeToString(fp[:]); got != "cedebd5f270789ddd5fdcb53e9301302b44773f90b5f936984ea2c49e742b27e" {
		t.Fatalf("fingerprint of a version-1 key file changed: %s", got)
	}
	if again, _ := k.MarshalBinary(); !bytes.Equal(again, v1) || k.xsk == nil || !k.xsk.Equal(seal.X25519FromSeed(k.seed)) {
		t.Fatal("full keys not written as version 1, or no X25519 key")
	}
	wo1 := withChecksum(append(append([]byte(keysMagic), 1, kindWriteOnly), append(k.publicKey(), k.secret[:]...)...))
	if h := blake3.Sum256(wo1); hex.EncodeToString(h[:]) != "748a72ea51d08ef54cf6fff18bff8d845a543c113111350c0244f82ef32b0de3" {
		t.Fatal("version-1 write-only encoding differs from what the version-1 code wrote")
	}
	p1, err := ParseKeys(wo1)
	if err != nil || p1.xpk != nil || p1.CanRead() || p1.Fingerprint() != fp {
		t.Fatalf("version-1 write-only: %v", err)
	}
	if again, _ := p1.MarshalBinary(); !bytes.Equal(again, wo1) {
		t.Fatal("version-1 write-only keys do not round-trip")
	}
	wo2, _ := k.WriteOnly().MarshalBinary()
	if wo2[len(keysMagic)] != 2 || len(wo2) != len(wo1)+32 {
		t.Fatalf("write-only keys written as version %d, %d bytes", wo2[len(keysMagic)], len(wo2))
	}
	for _, bad := range [][]byte{
		withChecksum(append(append([]byte(keysMagic), 2, kindFull), v1[len(keysMagic)+2:len(v1)-32]...)),        // full body as version 2
		withChecksum(append(append([]byte(keysMagic), 1, kindWriteOnly), wo2[len(keysMagic)+2:len(wo2)-32]...)), // v2 body as version 1
		withChecksum(append(append([]byte(keysMagic), 2, kindWriteOnly), wo1[len(keysMagic)+2:len(wo1)-32]...)), // v1 body as version 2
		withChecksum(append(append([]byte(keysMagic), 3, kindWriteOnly), wo2[len(keysMagic)+2:len(wo2)-32]...)), // unknown version
	} {
		if _, err := ParseKeys(bad); !errors.Is(err, ErrInvalidKeys) {
			t.Fatalf("accepted malformed key file: %v", err)
		}
	}
	// Version-1 write-only keys and hybrid sessions.
	fs := vfs.NewMem()
	full, err := Open("/db", memOpts(k, fs))
	if err != nil {
		t.Fatal(err)
	}
	full.Close()
	if _, err := Open("/db", memOpts(p1, fs)); !errors.Is(err, ErrInvalidOptions) || !strings.Contains(err.Error(), "X25519") {
		t.Fatalf("hybrid session with version-1 write-only keys: %v", err)
	}
	o := memOpts(p1, fs)
	o.KEM = KEMMLKEM1024
	db, err := Open("/db", o)
	if err != nil {
		t.Fatal(err)
	}
	b := randBytes(5000)
	mustPut(t, db, "a", b)
	db.Close()
	full = openDB(t, "/db", memOpts(k, fs))
	if !bytes.Equal(get(t, full, "a"), b) {
		t.Fatal("content from ML-KEM-only session unreadable")
	}
}

// TestSessionsOfBothKEMsOpen proves "stores created earlier still open":
// a store whose sessions were made with ML-KEM-1024 alone (KEM 1, byte for
// byte the version-1 construction, see internal/seal
// TestGoldenMLKEMSession) and later hybrid sessions (KEM 2) reads all of
// them; each session records its KEM; an unknown KEM option is refused.
func TestSessionsOfBothKEMsOpen(t *testing.T) {
	k := newKeys(t)
	fs := vfs.NewMem()
	want := map[string][]byte{}
	for i, kem := range []KEM{KEMMLKEM1024, KEMHybrid, KEMMLKEM1024, KEMHybrid} {
		o := memOpts(k, fs)
		o.KEM = kem
		db, err := Open("/db", o)
		if err != nil {
			t.Fatal(err)
		}
		key := fmt.Sprint("k", i)
		want[key] = randBytes(20 << 10)
		mustPut(t, db, key, want[key])
		db.Close()
	}
	db := openDB(t, "/db", memOpts(k, fs))
	for key, b := range want {
		if !bytes.Equal(get(t, db, key), b) {
			t.Fatalf("%q differs", key)
		}
	}
	kems := map[byte]int{}
	err := db.eachKey([]byte{record.PrefixSession}, func(_, v []byte) error {
		s, err := record.DecodeSession(v)
		if err == nil {
			kems[s.KEM]++
			if s.KEM == seal.KEMHybrid && len(s.Ciphertext) != seal.HybridCiphertextSize || s.KEM == seal.KEMMLKEM1024 && len(s.Ciphertext) != mlkem1024.CiphertextSize {
				return fmt.Errorf("KEM %d ciphertext of %d bytes", s.KEM, len(s.Ciphertext))
			}
		}
		return err
	})
	if err != nil || kems[seal.KEMMLKEM1024] != 2 || kems[seal.KEMHybrid] != 3 {
		t.Fatalf("sessions by KEM %v: %v", kems, err)
	}
	o := memOpts(k, vfs.NewMem())
	o.KEM = 7
	if _, err := Open("/db", o); !errors.Is(err, ErrInvalidOptions) {
		t.Fatalf("unknown KEM: %v", err)
	}
}

// TestV1StoreOnDisk opens a store and key files written by the version-1
// code (before hybrid sessions): SEALKV_V1_STORE names a directory with
// keys, keys.wo, content and store/ (content stored as "old"). The key
// files still parse, but the store is of format 1 (reference keys with the
// full SliceID), so Open refuses it, with either keys, with a clear error.
func TestV1StoreOnDisk(t *testing.T) {
	src := os.Getenv("SEALKV_V1_STORE")
	if src == "" {
		t.Skip("SEALKV_V1_STORE not set")
	}
	dir := t.TempDir()
	if err := os.CopyFS(dir, os.DirFS(src)); err != nil {
		t.Fatal(err)
	}
	read := func(name string) []byte {
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	k, err := ParseKeys(read("keys"))
	if err != nil {
		t.Fatal(err)
	}
	wo, err := ParseKeys(read("keys.wo"))
	if err != nil || wo.Fingerprint() != k.Fingerprint() {
		t.Fatal(err)
	}
	for _, keys := range []*Keys{wo, k} {
		o := smallOpts(keys)
		o.KEM = KEMMLKEM1024 // version-1 write-only keys have no X25519 key
		db, err := Open(filepath.Join(dir, "store"), o)
		if err == nil {
			db.Close()
			t.Fatal("format-1 store opened")
		}
		if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), "earlier development format of sealkv and must be re-created") {
			t.Fatalf("format-1 store: %v", err)
		}
	}
}

// ---- Padmé ----

// TestPadding proves the Padding option: padded slices read back exactly,
// carry FlagPadded (bound in the AAD), have a sealed size that is a Padmé
// length plus the tag (for incompressible data exactly
// PadmeLen(OriginalSize+1)+16); slices stored with and without padding
// coexist; and a validly sealed slice with malformed padding is
// ErrCorrupt (seal.ErrPadding).
func TestPadding(t *testing.T) {
	k := newKeys(t)
	fs := vfs.NewMem()
	want := map[string][]byte{}
	for _, padding := range []bool{true, false} {
		for _, comp := range []Compression{CompressionNone, CompressionZstd} {
			o := memOpts(k, fs)
			o.Padding, o.Compression = padding, comp
			db, err := Open("/db", o)
			if err != nil {
				t.Fatal(err)
			}
			for _, n := range []int{1, 100, 1000, 5000, 100 << 10} {
				key := fmt.Sprint(padding, comp, n)
				want[key] = append(randBytes(n/2), bytes.Repeat([]byte("abc"), n-n/2)[:n-n/2]...)
				mustPut(t, db, key, want[key])
			}
			for id, rec := range sliceRecords(t, db) {
				if rec.Session != db.writer.Load().ID {
					continue
				}
				inner := int(rec.SealedSize) - seal.Overhead
				if padded := rec.Flags&seal.FlagPadded != 0; padded != padding || padding && seal.PadmeLen(inner) != inner ||
					padding && comp == CompressionNone && inner != seal.PadmeLen(int(rec.OriginalSize)+1) {
					t.Fatalf("slice %s: padding %v, flags %b, sealed %d, original %d", id, padding, rec.Flags, rec.SealedSize, rec.OriginalSize)
				}
			}
			db.Close()
		}
	}
	db := openDB(t, "/db", memOpts(k, fs))
	for key, b := range want {
		if !bytes.Equal(get(t, db, key), b) {
			t.Fatalf("%q differs", key)
		}
	}
	checkInvariants(t, db)

	// Malformed padding under a valid seal.
	b := randBytes(300)
	mustPut(t, db, "m", b)
	recs := sliceRecords(t, db)
	id := db.sliceID(b)
	rec := *recs[id]
	body := append(bytes.Clone(b), 0x80, 0x01) // not canonical
	rec.Ctr, rec.Flags = 1<<63|9, seal.FlagPadded
	sealed, commit := db.writer.Load().Seal(nil, body, (*[64]byte)(&id), rec.Ctr, rec.Flags)
	rec.Commit, rec.SealedSize = commit, int64(len(sealed))
	putShards(t, db, loc(&rec), encodeShards(t, id, &rec, sealed))
	setRecord(t, db, id, rec.Encode())
	if err := readKey(t, db, "m", b); !errors.Is(err, seal.ErrPadding) {
		t.Fatalf("malformed padding: %v", err)
	}
}

// TestPadmeOverhead measures the stored-size cost of Options.Padding on a
// corpus: every regular file under the directories in SEALKV_PADME_DIRS
// (colon-separated), up to SEALKV_PADME_MIB MiB (default 1024), is Put
// into two stores with default options, one with Padding. It reports
// sealed bytes (ciphertext without parity) and stored bytes (shards with
// parity and checksums). Skipped unless SEALKV_PADME_DIRS is set, e.g.
//
//	SEALKV_PADME_DIRS=/usr/lib:/usr/share:$(go env GOROOT)/src go test -run TestPadmeOverhead -v -timeout 1h .
func TestPadmeOverhead(t *testing.T) {
	dirs := os.Getenv("SEALKV_PADME_DIRS")
	if dirs == "" {
		t.Skip("SEALKV_PADME_DIRS not set")
	}
	limit := int64(envInt("SEALKV_PADME_MIB", 1024)) << 20
	k := newKeys(t)
	dbs := [2]*DB{}
	for i := range dbs {
		o := &Options{Keys: k, Padding: i == 1, Logger: quietLogger, fs: vfs.NewMem()} // in memory: ~2.5 GiB of RAM per GiB
		dbs[i] = openDB(t, "/db", o)
	}
	var total, files int64
	var small [2]int64 // sealed bytes of single-slice files
	start := time.Now()
	for _, root := range strings.Split(dirs, ":") {
		_ = filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
			if err != nil || !d.Type().IsRegular() || total >= limit {
				return nil
			}
			b, err := os.ReadFile(path)
			if err != nil || len(b) == 0 {
				return nil
			}
			if int64(len(b)) > limit-total {
				b = b[:limit-total]
			}
			for i, db := range dbs {
				d := mustPut(t, db, path, b)
				if d.Content.NumSlices == 1 {
					small[i] += d.Content.StorageSize
				}
			}
			total += int64(len(b))
			files++
			return nil
		})
	}
	var sealed [2]int64
	for i, db := range dbs {
		for _, rec := range sliceRecords(t, db) {
			sealed[i] += rec.SealedSize
		}
	}
	s0, s1 := dbs[0].Stats(), dbs[1].Stats()
	pct := func(a, b int64) float64 { return 100 * float64(b-a) / float64(a) }
	t.Logf("%d files, %.1f MiB logical, %.1f MiB unique, %d slices, %.0f s", files, float64(total)/(1<<20), float64(s0.UniqueBytes)/(1<<20), s0.Slices, time.Since(start).Seconds())
	t.Logf("sealed bytes:  no padding %d, Padmé %d (+%.2f%%)", sealed[0], sealed[1], pct(sealed[0], sealed[1]))
	t.Logf("stored bytes:  no padding %d, Padmé %d (+%.2f%%)", s0.StoredBytes, s1.StoredBytes, pct(s0.StoredBytes, s1.StoredBytes))
	t.Logf("single-slice files, stored: no padding %d, Padmé %d (+%.2f%%)", small[0], small[1], pct(small[0], small[1]))
}

// TestNewSessionWhenPutNumbersRunOut proves the counter limit stated in
// SECURITY.md and how a DB lives past it: a session seals under put
// numbers 1 … 2^32-1 only (ctr = put << 32 | seq must not wrap, or counters
// and slice locations would repeat), so the Put that needs one more, a
// large one taking numbers one at a time or a small one wanting a block of
// them (group commit, Batch), begins a new session, once however many Puts
// find the old one spent. Close marks every session clean, and everything
// reads back after a reopen.
func TestNewSessionWhenPutNumbersRunOut(t *testing.T) {
	k := newKeys(t)
	fs := vfs.NewMem()
	o := memOpts(k, fs)
	var logs bytes.Buffer
	o.Logger = slogText(&logs)
	db, err := Open("/db", o)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string][]byte{}
	put := func(key string, n int) {
		want[key] = randBytes(n)
		mustPut(t, db, key, want[key])
	}
	exhaust := func() *writerSession {
		ws := db.writer.Load()
		ws.puts.Store(1<<32 - 2)
		return ws
	}
	large := 300 << 10 // past the first block: numbered one at a time

	first := exhaust()
	put("large-last", large) // put number 2^32-1
	put("large-next", large)
	recs := sliceRecords(t, db)
	for id := range viewOf(t, db, "large-next").ids {
		if recs[id].Session == first.ID {
			t.Fatal("a large Put past put number 2^32-1 sealed in the spent session")
		}
	}

	exhaust()
	put("grouped", 3000) // no whole block left
	exhaust()
	b := db.NewBatch()
	for _, key := range []string{"batch-a", "batch-b"} {
		want[key] = randBytes(3000)
		if err := b.Put(ctx, key, bytes.NewReader(want[key])); err != nil {
			t.Fatal(err)
		}
	}
	if err := b.Commit(ctx); err != nil {
		t.Fatal(err)
	}

	exhaust() // many Puts at once find it spent
	var wg sync.WaitGroup
	for i := range 16 {
		key, n := fmt.Sprintf("concurrent-%d", i), 3000
		if i%2 == 0 {
			n = large
		}
		b := randBytes(n)
		want[key] = b
		wg.Go(func() {
			if _, err := db.Put(ctx, key, bytes.NewReader(b)); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	if len(db.sessions) != 5 {
		t.Fatalf("%d sessions begun, want 5: one at Open and one each time the numbers ran out", len(db.sessions))
	}
	checkInvariants(t, db) // one unclean marker per session while open
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	db = openDB(t, "/db", o)
	if strings.Contains(logs.String(), "recovered unclean session") {
		t.Fatalf("Close left a session unclean:\n%s", logs.String())
	}
	for key, b := range want {
		if !bytes.Equal(get(t, db, key), b) {
			t.Fatalf("%s differs after reopening", key)
		}
	}
	checkInvariants(t, db)
}

// TestParseKeysRefusesLowOrderX25519 checks that a write-only key file whose
// X25519 public key is a low-order point (all zeros here; the checksum is
// recomputed, so only a crafted file has one) is refused as ErrInvalidKeys
// instead of failing every session later. (Found in review.)
func TestParseKeysRefusesLowOrderX25519(t *testing.T) {
	wo, err := newKeys(t).WriteOnly().MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ParseKeys(wo); err != nil {
		t.Fatalf("a sound write-only key file: %v", err)
	}
	body := bytes.Clone(wo[:len(wo)-keysChecksum])
	x := len(keysMagic) + 2 + mlkem1024.PublicKeySize
	clear(body[x : x+seal.X25519Size])
	sum := blake3.Sum256(body)
	if _, err := ParseKeys(append(body, sum[:]...)); !errors.Is(err, ErrInvalidKeys) {
		t.Fatalf("ParseKeys of a low-order X25519 key: %v, want ErrInvalidKeys", err)
	}
}

// TestCloseWipesSessionKeys checks that Close zeroes the session keys the
// DB held, its writer session's and those it decapsulated to read: a
// closed DB that stays reachable keeps no way to open its slices.
// (Hardening found in review; SECURITY.md, "Key memory".)
func TestCloseWipesSessionKeys(t *testing.T) {
	k := newKeys(t)
	fs := vfs.NewMem()
	db := openDB(t, "/db", memOpts(k, fs))
	mustPut(t, db, "a", randBytes(3000))
	db.Close()
	db = openDB(t, "/db", memOpts(k, fs))
	if got := get(t, db, "a"); len(got) != 3000 { // decapsulates the first session
		t.Fatal("a differs")
	}
	var held []*seal.Session
	db.opened.Range(func(_, v any) bool { held = append(held, v.(*seal.Session)); return true })
	writer := db.writer.Load().Session
	if len(held) == 0 || writer.Key == ([32]byte{}) {
		t.Fatal("no session key held before Close: the test does not test what it says")
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	for _, s := range append(held, writer) {
		if s.Key != ([32]byte{}) {
			t.Fatalf("session %x: key not zeroed by Close", s.ID)
		}
	}
}

// TestCloseWipesRacingSessionKeys checks that Close zeroes every session key
// readSession handed out, also when several reads of one session missed the
// cache at once: each derived its own copy of the key, and the copies that
// lost the race to db.opened were dropped without being zeroed. (The race
// needs two cores: with GOMAXPROCS=1 this passes without the fix.)
func TestCloseWipesRacingSessionKeys(t *testing.T) {
	k := newKeys(t)
	fs := vfs.NewMem()
	var sids [][seal.SessionIDSize]byte
	for range 8 { // each Open begins a session with its record
		db := openDB(t, "/db", memOpts(k, fs))
		sids = append(sids, db.writer.Load().ID)
		db.Close()
	}
	db := openDB(t, "/db", memOpts(k, fs))
	var (
		mu   sync.Mutex
		held []*seal.Session
		wg   sync.WaitGroup
	)
	start := make(chan struct{})
	for _, sid := range sids {
		for range 8 {
			wg.Go(func() {
				<-start
				s, err := db.readSession(sid)
				if err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				held = append(held, s)
				mu.Unlock()
			})
		}
	}
	close(start)
	wg.Wait()
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	for _, s := range held {
		if s.Key != ([32]byte{}) {
			t.Fatalf("session %x: a key readSession returned was not zeroed by Close", s.ID)
		}
	}
}

// TestDecompressBoundsOutput checks that a compressed slice body which
// expands far past the slice's recorded size (a forged frame) fails without
// allocating what it expands to.
func TestDecompressBoundsOutput(t *testing.T) {
	e, err := zstd.NewWriter(nil)
	if err != nil {
		t.Fatal(err)
	}
	bomb := e.EncodeAll(make([]byte, 64<<20), nil) // 64 MiB of zeros in a few KiB
	e.Close()
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	if _, err := decompress(bomb, 4<<10); err == nil {
		t.Fatal("a frame expanding past the slice's size decompressed")
	}
	runtime.ReadMemStats(&after)
	if grew := after.TotalAlloc - before.TotalAlloc; grew > 16<<20 {
		t.Fatalf("decompressing a 4 KiB slice allocated %d MiB", grew>>20)
	}
}
