package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sealkv/kv"
)

func TestKeygen(t *testing.T) {
	e := newEnv(t)
	info, err := os.Stat(e.keys)
	if err != nil {
		t.Fatal(err)
	}
	if info.Mode().Perm() != 0o600 {
		t.Errorf("key file mode %v, want 0600", info.Mode().Perm())
	}
	before, _ := os.ReadFile(e.keys)
	e.fail(exitRefused, []string{"exists", "never overwrites"}, "keygen")
	if after, _ := os.ReadFile(e.keys); !bytes.Equal(before, after) {
		t.Fatal("keygen changed an existing key file")
	}

	wo := filepath.Join(e.dir, "wo.key")
	var out struct {
		WriteOnly   bool   `json:"write_only"`
		Fingerprint string `json:"fingerprint"`
	}
	e.json(&out, "keygen", "--write-only", wo)
	if !out.WriteOnly || len(out.Fingerprint) != 64 {
		t.Errorf("write-only export: %+v", out)
	}
	if info, err := os.Stat(wo); err != nil || info.Mode().Perm() != 0o600 {
		t.Fatalf("write-only key file: %v %v", info, err)
	}
	e.fail(exitRefused, []string{"exists"}, "keygen", "--write-only", wo)

	src := writeFile(t, e.dir, "a.txt", []byte("hello"))
	e.ok("put", src, "--key", "a")
	e.keys = wo
	e.ok("put", src, "--key", "b") // write-only keys can put
	e.fail(exitKeys, []string{"write-only", "full key file"}, "get", "a")
}

func TestPutGetRoundTrip(t *testing.T) {
	e := newEnv(t)
	src := filepath.Join(e.dir, "tree")
	files := map[string][]byte{
		"top.txt":              []byte("top\n"),
		"empty":                {},
		"sub/big.bin":          pseudoRandom(1, 700<<10), // several slices
		"sub/deeper/x.go":      []byte("package x\n"),
		"sub/deeper/ünïcode ✓": []byte("names are UTF-8"),
		"other/copy.bin":       pseudoRandom(1, 700<<10), // dedups with big.bin
	}
	for name, b := range files {
		writeFile(t, src, name, b)
	}
	if err := os.MkdirAll(filepath.Join(src, "emptydir"), 0o755); err != nil {
		t.Fatal(err)
	}
	var put struct {
		Files, Dirs int
		Items       []putResult
	}
	e.json(&put, "put", src, "--key", "t")
	if put.Files != len(files) || put.Dirs != 5 {
		t.Errorf("put: %d files, %d dirs; want %d, 5", put.Files, put.Dirs, len(files))
	}

	out := filepath.Join(e.dir, "out")
	e.ok("get", "-r", "t", "-o", out)
	compareTrees(t, src, out)
	e.fail(exitRefused, []string{"exists"}, "get", "-r", "t", "-o", out)

	// a single file: default key, stdout, -o, stdin
	if got := e.ok("get", "t/sub/deeper/x.go"); got != "package x\n" {
		t.Errorf("get to stdout: %q", got)
	}
	e.ok("get", "t/sub/big.bin", "-o", filepath.Join(e.dir, "big.out"))
	if b, _ := os.ReadFile(filepath.Join(e.dir, "big.out")); !bytes.Equal(b, files["sub/big.bin"]) {
		t.Error("get -o: content differs")
	}
	r := e.runIn([]byte("from stdin"), "put", "-", "--key", "in", "--parent", "t")
	if r.code != 0 || e.ok("get", "in") != "from stdin" {
		t.Fatalf("stdin put: %+v", r)
	}
	e.fail(exitUsage, []string{"--key"}, "put", "-")
}

// compareTrees requires the regular files and directories below a and b
// to be equal.
func compareTrees(t *testing.T, a, b string) {
	t.Helper()
	list := func(root string) map[string]string {
		m := map[string]string{}
		filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
			if err != nil {
				t.Fatal(err)
			}
			rel, _ := filepath.Rel(root, p)
			if d.IsDir() {
				m[rel] = "dir"
				return nil
			}
			body, err := os.ReadFile(p)
			if err != nil {
				t.Fatal(err)
			}
			m[rel] = string(body)
			return nil
		})
		return m
	}
	ma, mb := list(a), list(b)
	if len(ma) != len(mb) {
		t.Errorf("trees differ: %d vs %d entries", len(ma), len(mb))
	}
	for k, v := range ma {
		if w, ok := mb[k]; !ok || w != v {
			t.Errorf("%s differs (present: %v)", k, ok)
		}
	}
}

// versionedEnv is a store with docs/f in three versions ("one", "two!",
// "three") and docs/g ("three").
func versionedEnv(t *testing.T) *env {
	e := newEnv(t)
	f := filepath.Join(e.dir, "f.txt")
	for i, body := range []string{"one", "two!", "three"} {
		writeFile(t, e.dir, "f.txt", []byte(body))
		var p struct{ Items []putResult }
		e.json(&p, "put", f, "--key", "docs/f")
		if p.Items[0].Version != uint64(i+1) || p.Items[0].Unchanged {
			t.Fatalf("put %d: %+v", i, p.Items[0])
		}
	}
	var same struct{ Items []putResult }
	e.json(&same, "put", f, "--key", "docs/f")
	if !same.Items[0].Unchanged || same.Items[0].Version != 3 {
		t.Errorf("equal content: %+v", same.Items[0])
	}
	e.ok("put", f, "--key", "docs/g")
	return e
}

func TestVersionsAndLs(t *testing.T) {
	e := versionedEnv(t)
	var vs []contentJSON
	e.json(&vs, "versions", "docs/f")
	if len(vs) != 3 || vs[0].Version != 1 || vs[0].Size != 3 || !vs[2].Current || vs[2].Size != 5 || len(vs[2].ContentID) != 128 {
		t.Errorf("versions: %+v", vs)
	}
	if got := e.ok("get", "--version", "2", "docs/f"); got != "two!" {
		t.Errorf("get --version 2: %q", got)
	}
	e.fail(exitNotFound, []string{"not found"}, "get", "--version", "9", "docs/f")

	var keys []string
	e.json(&keys, "ls", "docs/")
	if strings.Join(keys, ",") != "docs/f,docs/g" {
		t.Errorf("ls: %v", keys)
	}
	var long []dataJSON
	e.json(&long, "ls", "-l", "docs/f")
	if len(long) != 1 || long[0].Versions != 3 || long[0].Size != 5 || long[0].Slices != 1 || long[0].StoredSize == 0 {
		t.Errorf("ls -l: %+v", long)
	}
	if out := e.ok("ls", "-l"); !strings.Contains(out, "docs/g") || !strings.Contains(out, "dedup ratio") {
		t.Errorf("ls -l text:\n%s", out)
	}
}

func TestStatsAndPrune(t *testing.T) {
	e := versionedEnv(t)
	var st statsJSON
	e.json(&st, "stats")
	if st.Data != 2 || st.Versions != 4 || st.LogicalBytes != 3+4+5+5 {
		t.Errorf("stats: %+v", st)
	}

	var pr []reportJSON
	e.json(&pr, "prune", "docs/f", "--keep", "1")
	if len(pr) != 1 || len(pr[0].Deleted) != 1 {
		t.Errorf("prune --keep 1: %+v", pr)
	}
	var vs []contentJSON
	e.json(&vs, "versions", "docs/f")
	if len(vs) != 2 || vs[0].Version != 2 {
		t.Errorf("versions after prune: %+v", vs)
	}
	e.fail(exitUsage, []string{"--keep"}, "prune", "docs/f")
	e.json(&st, "stats")
	if st.Versions != 3 || st.LogicalBytes != 4+5+5 {
		t.Errorf("stats after prune: %+v", st)
	}
}

func TestRm(t *testing.T) {
	e := newEnv(t)
	src := filepath.Join(e.dir, "d")
	writeFile(t, src, "a.txt", []byte("shared content"))
	writeFile(t, src, "sub/b.txt", []byte("b"))
	e.ok("put", src, "--key", "d")
	e.ok("put", filepath.Join(src, "a.txt"), "--key", "elsewhere") // same content, other key
	writeFile(t, src, "a.txt", []byte("new content"))
	e.ok("put", filepath.Join(src, "a.txt"), "--key", "d/a.txt")

	e.fail(exitRefused, []string{`cannot delete "d"`, "2 children", "use: sealkv rm -r d"}, "rm", "d")
	e.fail(exitRefused, []string{"1 older versions", "run: sealkv prune d/a.txt --keep 0"}, "rm", "d/a.txt")
	e.fail(exitRefused, []string{"d/a.txt", "prune"}, "rm", "-r", "d")
	e.ok("get", "d/sub/b.txt") // the refused rm -r deleted nothing
	e.fail(exitNotFound, []string{"not found"}, "rm", "nope")

	var pr []reportJSON
	e.json(&pr, "prune", "d/a.txt", "--keep", "0")
	if len(pr[0].Kept) != 1 || pr[0].Kept[0].ReferencedBy[0] != "elsewhere" || len(pr[0].Deleted) != 0 {
		t.Errorf("prune report: %+v", pr)
	}
	var reports []reportJSON
	e.json(&reports, "rm", "-r", "d")
	var order []string
	for _, r := range reports {
		order = append(order, r.Key)
	}
	// children first: sub/b.txt before sub, a.txt and sub before d
	if strings.Join(order, ",") != "d/sub/b.txt,d/sub,d/a.txt,d" {
		t.Errorf("rm -r order: %v", order)
	}
	e.fail(exitNotFound, []string{"not found"}, "get", "d/sub/b.txt")
	if e.ok("get", "elsewhere") != "shared content" {
		t.Error("rm -r removed a slice another key uses")
	}
	if out := e.ok("rm", "elsewhere"); !strings.Contains(out, "1 slices deleted") {
		t.Errorf("rm text report: %q", out)
	}
	var st statsJSON
	e.json(&st, "stats")
	if st.Data != 0 || st.Slices != 0 || st.StoredBytes != 0 {
		t.Errorf("stats after deleting everything: %+v", st)
	}
}

func TestKeyErrors(t *testing.T) {
	e := newEnv(t)
	e.ok("put", writeFile(t, e.dir, "a", []byte("a")), "--key", "a")

	other := newEnv(t)
	e.keys = other.keys
	e.fail(exitKeys, []string{"wrong keys", other.keys}, "ls")

	e.keys = writeFile(t, e.dir, "garbage.key", []byte("not a key file at all"))
	e.fail(exitKeys, []string{"invalid keys", "garbage.key"}, "ls")

	e.keys = filepath.Join(e.dir, "huge.key") // 1 GiB, sparse: read whole, it fills memory
	if err := os.WriteFile(e.keys, nil, 0o600); err != nil || os.Truncate(e.keys, 1<<30) != nil {
		t.Fatal("cannot create huge.key")
	}
	e.fail(exitKeys, []string{"reading key file", "larger than 64 KiB"}, "ls")

	e.keys = filepath.Join(e.dir, "missing.key")
	e.fail(exitKeys, []string{"reading key file", "no such file"}, "ls")

	e.keys = ""
	e.fail(exitKeys, []string{"no key file", "SEALKV_KEYS"}, "ls")
}

func TestLocked(t *testing.T) {
	e := newEnv(t)
	e.ok("put", writeFile(t, e.dir, "a", []byte("a")), "--key", "a")
	b, err := os.ReadFile(e.keys)
	if err != nil {
		t.Fatal(err)
	}
	keys, err := kv.ParseKeys(b)
	if err != nil {
		t.Fatal(err)
	}
	db, err := kv.Open(e.store, &kv.Options{Keys: keys})
	if err != nil {
		t.Fatal(err)
	}
	e.fail(exitLocked, []string{"locked by another process", e.store}, "get", "a")
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	if e.ok("get", "a") != "a" {
		t.Error("get after unlock")
	}
}

func TestUsageAndInternalErrors(t *testing.T) {
	e := newEnv(t)
	e.fail(exitUsage, []string{"unknown command"}, "frobnicate")
	e.fail(exitUsage, []string{"unknown flag"}, "ls", "--frob")
	e.fail(exitUsage, []string{"accepts 1 arg"}, "get")
	e.fail(exitNotFound, []string{"no store at"}, "ls")
	e.store = ""
	e.fail(exitUsage, []string{"SEALKV_STORE"}, "ls")
	r := e.fail(exitInternal, []string{"internal error", "test panic"}, "internal-panic")
	if strings.Contains(r.stderr, "goroutine") {
		t.Errorf("panic printed a trace: %s", r.stderr)
	}
	help := e.ok("--help")
	for _, s := range []string{"Exit codes:", "64", "completion", "demo"} {
		if !strings.Contains(help, s) {
			t.Errorf("--help lacks %q", s)
		}
	}
	if out := e.ok("completion", "bash"); !strings.Contains(out, "bash completion") {
		t.Error("no bash completion")
	}
}

// limitedEnv is a store holding "big" (returned), 2 MiB, whose runs can
// write files of at most 512 KiB, so a get of big fails part way.
func limitedEnv(t *testing.T) (*env, []byte) {
	e := newEnv(t)
	big := pseudoRandom(2, 2<<20)
	e.ok("put", writeFile(t, e.dir, "big.src", big), "--key", "big")
	// Opening the store flushes the put's log now, not in a limited run.
	e.ok("ls")
	e.wrap = fileSizeLimit(1024)
	return e, big
}

// dirNames lists the names in dir.
func dirNames(t *testing.T, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, d := range ents {
		names = append(names, d.Name())
	}
	return names
}

func TestGetOutputFailureKeepsFile(t *testing.T) {
	e, big := limitedEnv(t)
	dir := filepath.Join(e.dir, "out")
	old := writeFile(t, dir, "old.txt", []byte("precious"))
	if err := os.Chmod(old, 0o640); err != nil {
		t.Fatal(err)
	}
	e.fail(exitError, []string{"write " + old + ": file too large"}, "get", "big", "-o", old)
	if b, _ := os.ReadFile(old); string(b) != "precious" {
		t.Errorf("a failed get -o left %d bytes in the existing file", len(b))
	}
	if names := dirNames(t, dir); len(names) != 1 {
		t.Errorf("a failed get -o left files behind: %v", names)
	}
	e.fail(exitError, []string{"file too large"}, "get", "big", "-o", filepath.Join(dir, "new.txt"))
	if names := dirNames(t, dir); len(names) != 1 {
		t.Errorf("a failed get -o left files behind: %v", names)
	}

	e.wrap = nil
	e.ok("get", "big", "-o", old)
	if b, _ := os.ReadFile(old); !bytes.Equal(b, big) {
		t.Error("get -o over an existing file: content differs")
	}
	if info, err := os.Stat(old); err != nil || info.Mode().Perm() != 0o640 {
		t.Errorf("get -o over an existing file: %v %v, want mode 0640", info, err)
	}
	if names := dirNames(t, dir); len(names) != 1 {
		t.Errorf("get -o left files behind: %v", names)
	}
	e.ok("get", "big", "-o", os.DevNull) // written in place, not renamed over
	stdoutToFile(t, e, "get", "big", "-o", "/dev/stdout")
}

// stdoutToFile runs sealkv with stdout redirected to a file and requires
// the output to land in that file, not in one renamed over its name.
func stdoutToFile(t *testing.T, e *env, args ...string) {
	t.Helper()
	f, err := os.Create(filepath.Join(e.dir, "stdout"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	cmd := e.command(args...)
	var stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = f, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("sealkv %v: %v\n%s", args, err, stderr.String())
	}
	renamed, err := os.Stat(f.Name())
	if err != nil {
		t.Fatal(err)
	}
	if info, _ := f.Stat(); !os.SameFile(info, renamed) || info.Size() == 0 {
		t.Errorf("sealkv %v: the output went to a new file replacing stdout's", args)
	}
}

func TestGetTreeFailureRemovesPartialFile(t *testing.T) {
	e, _ := limitedEnv(t)
	e.fail(exitError, []string{"file too large"}, "get", "-r", "big", "-o", filepath.Join(e.dir, "tree"))
	if _, err := os.Lstat(filepath.Join(e.dir, "tree")); !os.IsNotExist(err) {
		t.Errorf("a failed get -r left a partial file: %v", err)
	}
}

func TestGetTreeKeyBelowMissingDirs(t *testing.T) {
	e := newEnv(t)
	e.ok("put", writeFile(t, e.dir, "p", []byte("p")), "--key", "p")
	e.ok("put", writeFile(t, e.dir, "y", []byte("deep")), "--key", "p/x/y", "--parent", "p")
	out := filepath.Join(e.dir, "out")
	e.ok("get", "-r", "p", "-o", out)
	if b, err := os.ReadFile(filepath.Join(out, "x", "y")); err != nil || string(b) != "deep" {
		t.Errorf("p/x/y: %q %v", b, err)
	}
}

// TestPutTreeAvoidsStoreAndKeys puts a directory holding the store and the
// key file: it stores neither (the store grows while it is walked, and the
// key file would put the secret keys among the data), and says so.
func TestPutTreeAvoidsStoreAndKeys(t *testing.T) {
	e := newEnv(t)
	e.ok("put", writeFile(t, e.dir, "a", []byte("a")), "--key", "a") // creates the store
	r := e.run("put", e.dir, "--key", "tree")
	if r.code != 0 {
		t.Fatalf("put of the tree holding the store: exit %d, stderr %q", r.code, r.stderr)
	}
	for _, want := range []string{"store (the store itself)", "full.key (the key file)"} {
		if !strings.Contains(r.stderr, want) {
			t.Errorf("stderr %q does not say %q", r.stderr, want)
		}
	}
	ls := e.ok("ls", "--children", "tree")
	if strings.Contains(ls, "store") || strings.Contains(ls, "full.key") || !strings.Contains(ls, "tree/a") {
		t.Errorf("children of tree:\n%s\nwant a, and neither the store nor the key file", ls)
	}
}

func TestQuietPrintsNoSkipWarnings(t *testing.T) {
	e := newEnv(t)
	src := filepath.Join(e.dir, "d")
	writeFile(t, src, "a", []byte("a"))
	if err := os.Symlink("a", filepath.Join(src, "link")); err != nil {
		t.Fatal(err)
	}
	if r := e.run("put", src); r.code != 0 || !strings.Contains(r.stderr, "skipped") {
		t.Errorf("put: exit %d, stderr %q; want a skip warning", r.code, r.stderr)
	}
	if r := e.run("-q", "put", src); r.code != 0 || r.stderr != "" {
		t.Errorf("put -q: exit %d, stderr %q; want none", r.code, r.stderr)
	}
}

func TestPutWorkerPanic(t *testing.T) {
	// A nil DB makes every Put panic; more entries than workers checks
	// that the queue does not block once they have.
	p := &plan{entries: []*entry{{dir: true}, {rel: "a", dir: true}, {rel: "b", dir: true}, {rel: "c", dir: true}}}
	tp := &treePut{plan: p, key: keyJoin("k"), jobs: 2}
	defer func() {
		if recover() == nil {
			t.Error("putAll did not raise the workers' panic")
		}
	}()
	tp.putAll(context.Background(), []int{0, 1, 2, 3}, make([]putResult, 4))
}

func TestPutPathErrors(t *testing.T) {
	e := newEnv(t)
	e.fail(exitNotFound, []string{"no such file"}, "put", filepath.Join(e.dir, "missing"))
	long := filepath.Join(e.dir, strings.Repeat("x", 300))
	e.fail(exitError, []string{"file name too long"}, "put", long)
}

// TestTreeScanStopsOnInterrupt checks that the scan of a tree before a put
// ends when its context does (Ctrl-C), with an error the CLI reports as an
// interruption, instead of walking the whole tree first. (It walked on.)
func TestTreeScanStopsOnInterrupt(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, dir, "a", []byte("a"))
	c, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := planTree(c, dir, 0)
	if err == nil {
		t.Fatal("planTree with its context ended walked the tree")
	}
	if code, _ := describe(err); code != exitInterrupted {
		t.Fatalf("planTree with its context ended: %v (exit %d), want exit %d", err, code, exitInterrupted)
	}
}
