package kv

import (
	"bufio"
	"bytes"
	"encoding/hex"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// The kill test runs a workload in a child process (this test binary,
// re-executed with TestKillHelper) and SIGKILLs it at random moments: no
// deferred function, no Close, no flush of anything that was not synced.
//
// The child logs to an acknowledgement file, fsynced line by line:
//
//	B <op> <key> [versions]    before an operation ("begin")
//	A U <key> <cid> <version>  after Put returned: the version is durable
//	A P <key> <versions>       after PruneVersions removed these versions
//	A D <key>                  after Delete removed the key
//	A X                        the operation begun changed nothing
//
// An operation begun and not acknowledged was in flight when the child
// died. After each kill the parent reopens the store (recovery runs),
// checks invariants I1 and I2 and the stats, reads every version of every
// Data and hashes its bytes against its ContentID (invariants), checks that
// every acknowledged version is there with its acknowledged ContentID (so
// it read back bit for bit) unless a later acknowledged operation removed
// it, and that the operation in flight took effect entirely or not at all
// (I3, I4). It then appends the outcome of
// that operation to the file, so the model stays exact.

const killHelperEnv = "SEALKV_KILL_HELPER"

// TestKill kills the child SEALKV_KILLS times (default 50; 10 with
// -short). It fails if that takes more than SEALKV_KILL_TIME (default 3m).
func TestKill(t *testing.T) {
	kills := envInt("SEALKV_KILLS", 50)
	if testing.Short() {
		kills = 10
	}
	budget := 3 * time.Minute
	if v, err := time.ParseDuration(os.Getenv("SEALKV_KILL_TIME")); err == nil {
		budget = v
	}
	dir := t.TempDir()
	store, ackPath, keyPath := filepath.Join(dir, "store"), filepath.Join(dir, "acks"), filepath.Join(dir, "keys")
	keys := newKeys(t)
	kb, err := keys.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyPath, kb, 0o600); err != nil {
		t.Fatal(err)
	}
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, 1))
	start := time.Now()
	n := 0
	var acked, inflight int
	for n < kills {
		if time.Since(start) > budget {
			t.Fatalf("only %d kills in %v", n, budget)
		}
		var out bytes.Buffer
		cmd := exec.Command(os.Args[0], "-test.run=^TestKillHelper$", "-test.count=1")
		cmd.Env = append(os.Environ(), killHelperEnv+"=1", "SEALKV_KILL_STORE="+store, "SEALKV_KILL_ACKS="+ackPath,
			"SEALKV_KILL_KEYS="+keyPath, "SEALKV_KILL_SEED="+strconv.FormatUint(rng.Uint64(), 10))
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		// Random moments: most during the workload, some during process
		// start-up, Open and recovery.
		time.Sleep(time.Duration(20+rng.IntN(800)) * time.Millisecond)
		_ = cmd.Process.Signal(syscall.SIGKILL)
		err := cmd.Wait()
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
			// The child ended by itself: that is a failure it reports.
			t.Fatalf("child ended before the kill: %v\n%s", err, tail(out.Bytes(), 4000))
		}
		n++
		m, err := readAcks(ackPath)
		if err != nil {
			t.Fatal(err)
		}
		res, err := checkKilled(keys, store, m)
		if err != nil {
			t.Fatalf("after kill %d (in flight: %q): %v\nchild output:\n%s", n, m.inflight, err, tail(out.Bytes(), 4000))
		}
		if m.inflight != "" {
			inflight++
		}
		acked = m.acks
		if err := resolve(ackPath, res); err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("%d kills in %v (%d with an operation in flight), %d operations acknowledged",
		n, time.Since(start).Round(time.Second), inflight, acked)
}

// TestKillHelper is the child of TestKill; it does nothing in a normal run.
func TestKillHelper(t *testing.T) {
	if os.Getenv(killHelperEnv) == "" {
		t.Skip("child of TestKill")
	}
	if err := killChild(); err != nil {
		fmt.Fprintln(os.Stderr, "child:", err)
		os.Exit(3)
	}
	os.Exit(0)
}

// killChild runs the workload until it is killed.
func killChild() error {
	kb, err := os.ReadFile(os.Getenv("SEALKV_KILL_KEYS"))
	if err != nil {
		return err
	}
	keys, err := ParseKeys(kb)
	if err != nil {
		return err
	}
	seed, _ := strconv.ParseUint(os.Getenv("SEALKV_KILL_SEED"), 10, 64)
	rng := rand.New(rand.NewPCG(seed, 2))
	acks, err := os.OpenFile(os.Getenv("SEALKV_KILL_ACKS"), os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		return err
	}
	log := func(format string, args ...any) error {
		if _, err := fmt.Fprintf(acks, format+"\n", args...); err != nil {
			return err
		}
		return acks.Sync()
	}
	db, err := Open(os.Getenv("SEALKV_KILL_STORE"), killOpts(keys))
	if err != nil {
		return err
	}
	// Shared content is derived from fixed seeds, so every child (and every
	// version) shares slices with the others.
	pool := make([][]byte, 4)
	for i := range pool {
		pool[i] = pseudoRandom(uint64(i), (i+1)*150<<10)
	}
	large := pseudoRandom(99, 6<<20) // over 4 MiB: the sstable-ingest path
	for {
		key := fmt.Sprintf("k%d", rng.IntN(8))
		switch op := rng.IntN(20); {
		case op < 11:
			var b []byte
			for range rng.IntN(3) {
				b = append(b, pool[rng.IntN(len(pool))]...)
			}
			switch rng.IntN(16) {
			case 0: // new content over 4 MiB: the sstable-ingest path
				b = append(b, pseudoRandom(rng.Uint64(), 9<<19)...)
			case 1: // deduplicated against earlier Puts (while referenced)
				b = append(b, large...)
			}
			b = append(b, pseudoRandom(rng.Uint64(), rng.IntN(100<<10))...)
			if err := log("B U %s", key); err != nil {
				return err
			}
			d, err := db.Put(ctx, key, bytes.NewReader(b))
			if err != nil {
				return fmt.Errorf("Put: %w", err)
			}
			if err := log("A U %s %x %d", key, d.Content.ContentID[:], d.Content.Version); err != nil {
				return err
			}
		case op < 16:
			keep := rng.IntN(2)
			d, err := db.Stat(ctx, key)
			if errors.Is(err, ErrNotFound) {
				continue
			}
			if err != nil {
				return err
			}
			vs := prunedVersions(d, keep)
			if vs == "" {
				continue
			}
			if err := log("B P %s %s", key, vs); err != nil {
				return err
			}
			if _, err := db.PruneVersions(ctx, key, keep); err != nil {
				return fmt.Errorf("PruneVersions: %w", err)
			}
			if err := log("A P %s %s", key, vs); err != nil {
				return err
			}
		default:
			if err := log("B D %s", key); err != nil {
				return err
			}
			_, err := db.Delete(ctx, key)
			switch {
			case err == nil:
				err = log("A D %s", key)
			case errors.Is(err, ErrNotFound) || errors.Is(err, ErrHasVersions):
				err = log("A X")
			default:
				return fmt.Errorf("Delete: %w", err)
			}
			if err != nil {
				return err
			}
		}
	}
}

// killOpts are the options of the child and of the parent's checks (the
// parent may be the first to open a store whose child died in Open).
func killOpts(keys *Keys) *Options {
	return &Options{Keys: keys, MinSliceSize: 16 << 10, AvgSliceSize: 64 << 10, MaxSliceSize: 256 << 10, Logger: quietLogger}
}

// pseudoRandom returns n bytes determined by seed.
func pseudoRandom(seed uint64, n int) []byte {
	r := rand.New(rand.NewPCG(seed, 0x5ea1))
	b := make([]byte, n)
	for i := 0; i < n; i += 8 {
		v := r.Uint64()
		for j := 0; j < 8 && i+j < n; j++ {
			b[i+j] = byte(v >> (8 * j))
		}
	}
	return b
}

// ackVersion is an acknowledged version of a key.
type ackVersion struct {
	version uint64
	cid     ContentID
}

// ackModel is what the acknowledgement file implies.
type ackModel struct {
	versions map[string][]ackVersion // acknowledged, not removed since
	acks     int
	inflight string   // "U key", "P key", "D key" or ""
	key      string   // of the operation in flight
	drop     []uint64 // versions PruneVersions in flight removes
}

// readAcks parses the acknowledgement file; a torn last line (the child was
// killed while writing it) is ignored.
func readAcks(path string) (*ackModel, error) {
	m := &ackModel{versions: map[string][]ackVersion{}}
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return m, nil
	}
	if err != nil {
		return nil, err
	}
	if i := bytes.LastIndexByte(b, '\n'); i >= 0 {
		b = b[:i+1]
	} else {
		b = nil
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 2 {
			return nil, fmt.Errorf("bad ack line %q", sc.Text())
		}
		switch {
		case f[0] == "B":
			m.inflight, m.key, m.drop = f[1]+" "+f[2], f[2], nil
			for _, v := range f[3:] {
				n, _ := strconv.ParseUint(v, 10, 64)
				m.drop = append(m.drop, n)
			}
			continue
		case f[1] == "U" && len(f) == 5:
			var v ackVersion
			cid, err := hex.DecodeString(f[3])
			if err != nil || len(cid) != len(v.cid) {
				return nil, fmt.Errorf("bad ack line %q", sc.Text())
			}
			copy(v.cid[:], cid)
			v.version, _ = strconv.ParseUint(f[4], 10, 64)
			vs := m.versions[f[2]]
			if len(vs) == 0 || vs[len(vs)-1].version != v.version {
				vs = append(vs, v)
			} else if vs[len(vs)-1].cid != v.cid {
				return nil, fmt.Errorf("%q version %d acknowledged with two ContentIDs", f[2], v.version)
			}
			m.versions[f[2]] = vs
		case f[1] == "P":
			drop := map[uint64]bool{}
			for _, v := range f[3:] {
				n, _ := strconv.ParseUint(v, 10, 64)
				drop[n] = true
			}
			m.versions[f[2]] = slices.DeleteFunc(m.versions[f[2]], func(v ackVersion) bool { return drop[v.version] })
		case f[1] == "D":
			delete(m.versions, f[2])
		case f[1] == "X":
		default:
			return nil, fmt.Errorf("bad ack line %q", sc.Text())
		}
		m.acks++
		m.inflight, m.key, m.drop = "", "", nil
	}
	return m, sc.Err()
}

// checkKilled reopens the store and checks it against the model. It returns
// the acknowledgement line resolving the operation in flight ("" if none).
func checkKilled(keys *Keys, dir string, m *ackModel) (string, error) {
	db, err := Open(dir, killOpts(keys))
	if err != nil {
		return "", fmt.Errorf("reopen: %w", err)
	}
	defer db.Close()
	if err := invariants(db); err != nil {
		return "", err
	}
	for key, want := range m.versions {
		if len(want) == 0 {
			continue
		}
		d, err := db.Stat(ctx, key)
		if err != nil {
			if errors.Is(err, ErrNotFound) && m.inflight == "D "+key {
				continue // the Delete in flight went through; checked below
			}
			return "", fmt.Errorf("acknowledged %q: %w", key, err)
		}
		have := map[uint64]ContentID{}
		for _, v := range append(d.Versions, d.Content) {
			have[v.Version] = v.ContentID
		}
		for _, v := range want {
			cid, ok := have[v.version]
			if !ok {
				if m.inflight == "P "+key && slices.Contains(m.drop, v.version) {
					continue // the PruneVersions in flight went through
				}
				return "", fmt.Errorf("acknowledged %q version %d is gone", key, v.version)
			}
			if cid != v.cid {
				return "", fmt.Errorf("%q version %d has ContentID %x, acknowledged %x", key, v.version, cid[:8], v.cid[:8])
			}
			// Its bytes: invariants above read every version of every
			// Data and hashed them against their ContentIDs.
		}
	}
	return resolution(db, m)
}

// resolution checks the operation in flight took effect entirely or not at
// all and returns the line that records which.
func resolution(db *DB, m *ackModel) (string, error) {
	if m.inflight == "" {
		return "", nil
	}
	d, err := db.Stat(ctx, m.key)
	if err != nil && !errors.Is(err, ErrNotFound) {
		return "", err
	}
	switch m.inflight[0] {
	case 'U': // any outcome is valid; a committed version need not be recorded
		return "A X", nil
	case 'D':
		if d == nil && len(m.versions[m.key]) > 0 {
			return "A D " + m.key, nil
		}
		return "A X", nil
	case 'P':
		if d == nil {
			return "", fmt.Errorf("PruneVersions of %q in flight removed the key", m.key)
		}
		have := map[uint64]bool{}
		for _, v := range d.Versions {
			have[v.Version] = true
		}
		gone := 0
		for _, v := range m.drop {
			if !have[v] {
				gone++
			}
		}
		switch gone {
		case 0:
			return "A X", nil
		case len(m.drop):
			s := make([]string, len(m.drop))
			for i, v := range m.drop {
				s[i] = strconv.FormatUint(v, 10)
			}
			return "A P " + m.key + " " + strings.Join(s, " "), nil
		default:
			return "", fmt.Errorf("PruneVersions of %q in flight removed %d of %d versions", m.key, gone, len(m.drop))
		}
	}
	return "", fmt.Errorf("unknown operation in flight %q", m.inflight)
}

// resolve drops a torn last line and appends line, durably.
func resolve(path, line string) error {
	b, err := os.ReadFile(path)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	keep := bytes.LastIndexByte(b, '\n') + 1
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE, 0o644)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := f.Truncate(int64(keep)); err != nil {
		return err
	}
	if line != "" {
		if _, err := f.WriteAt([]byte(line+"\n"), int64(keep)); err != nil {
			return err
		}
	}
	return f.Sync()
}

func tail(b []byte, n int) []byte {
	if len(b) > n {
		return b[len(b)-n:]
	}
	return b
}

// prunedVersions lists, space-separated, the versions PruneVersions(keep)
// drops from d; "" if none. The kill and fault logs record it before the
// call so a replay knows which versions may be gone.
func prunedVersions(d *Data, keep int) string {
	var drop []string
	for i := 0; i < len(d.Versions)-keep; i++ {
		drop = append(drop, strconv.FormatUint(d.Versions[i].Version, 10))
	}
	return strings.Join(drop, " ")
}
