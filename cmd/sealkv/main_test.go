package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// bin is the sealkv binary built once for all tests.
var bin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "sealkv-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	bin = filepath.Join(dir, "sealkv")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "building sealkv: %v\n%s", err, out)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// env is a store and a key file for one test.
type env struct {
	t     *testing.T
	dir   string
	store string
	keys  string
	wrap  []string // command that runs the binary, given as its first argument
}

// result is one run of the binary.
type result struct {
	stdout, stderr string
	code           int
}

// newEnv makes a key file; the store is created by the first put.
func newEnv(t *testing.T) *env {
	t.Helper()
	dir := t.TempDir()
	e := &env{t: t, dir: dir, store: filepath.Join(dir, "store"), keys: filepath.Join(dir, "full.key")}
	e.ok("keygen")
	return e
}

// run runs sealkv with SEALKV_STORE and SEALKV_KEYS set to e's.
func (e *env) run(args ...string) result {
	e.t.Helper()
	return e.runIn(nil, args...)
}

// runIn is run with stdin.
func (e *env) runIn(stdin []byte, args ...string) result {
	e.t.Helper()
	cmd := e.command(args...)
	if stdin != nil {
		cmd.Stdin = bytes.NewReader(stdin)
	}
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		e.t.Fatalf("running sealkv %v: %v", args, err)
	}
	return result{stdout: out.String(), stderr: errb.String(), code: code}
}

// command is the command that runs sealkv args for e.
func (e *env) command(args ...string) *exec.Cmd {
	argv := append(append(append([]string{}, e.wrap...), bin), args...)
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = append(cleanEnv(), "SEALKV_STORE="+e.store, "SEALKV_KEYS="+e.keys)
	return cmd
}

// cleanEnv is the environment without SEALKV_ variables.
func cleanEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "SEALKV_") {
			env = append(env, kv)
		}
	}
	return env
}

// ok runs sealkv, requires exit 0 and returns stdout.
func (e *env) ok(args ...string) string {
	e.t.Helper()
	r := e.run(args...)
	if r.code != 0 {
		e.t.Fatalf("sealkv %s: exit %d\nstdout: %s\nstderr: %s", strings.Join(args, " "), r.code, r.stdout, r.stderr)
	}
	return r.stdout
}

// json runs sealkv with --json and decodes stdout into v.
func (e *env) json(v any, args ...string) {
	e.t.Helper()
	out := e.ok(append(args, "--json")...)
	if err := json.Unmarshal([]byte(out), v); err != nil {
		e.t.Fatalf("sealkv %s --json: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// fail runs sealkv, requires exit code want and one line on stderr
// starting with "sealkv: " and containing every string in has.
func (e *env) fail(want int, has []string, args ...string) result {
	e.t.Helper()
	r := e.run(args...)
	if r.code != want {
		e.t.Fatalf("sealkv %s: exit %d, want %d\nstderr: %s", strings.Join(args, " "), r.code, want, r.stderr)
	}
	checkErrorLine(e.t, r.stderr, has...)
	return r
}

// checkErrorLine requires stderr to be one "sealkv: " line containing has.
func checkErrorLine(t *testing.T, stderr string, has ...string) {
	t.Helper()
	lines := strings.Split(strings.TrimRight(stderr, "\n"), "\n")
	if len(lines) != 1 || !strings.HasPrefix(lines[0], "sealkv: ") {
		t.Fatalf("stderr is not one sealkv: line:\n%s", stderr)
	}
	for _, h := range has {
		if !strings.Contains(lines[0], h) {
			t.Errorf("stderr %q does not contain %q", lines[0], h)
		}
	}
}

// fileSizeLimit wraps runs so that the binary cannot write files larger
// than n*512 bytes (writes beyond fail with EFBIG), killing it after a
// minute should it hang.
func fileSizeLimit(n int) []string {
	return []string{"timeout", "-s", "KILL", "60", "sh", "-c", fmt.Sprintf(`ulimit -f %d && exec "$0" "$@"`, n)}
}

// writeFile writes b to dir/name, creating directories.
func writeFile(t *testing.T, dir, name string, b []byte) string {
	t.Helper()
	p := filepath.Join(dir, filepath.FromSlash(name))
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// pseudoRandom returns n reproducible incompressible bytes.
func pseudoRandom(seed, n int) []byte {
	b := make([]byte, n)
	x := uint64(seed)*0x9E3779B97F4A7C15 + 1
	for i := range b {
		x ^= x << 13
		x ^= x >> 7
		x ^= x << 17
		b[i] = byte(x)
	}
	return b
}
