package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/creack/pty"
)

func TestDemo(t *testing.T) {
	if testing.Short() {
		t.Skip("demo takes a few seconds")
	}
	e := &env{t: t}
	src := filepath.Join(t.TempDir(), "src")
	for i := range 40 {
		writeFile(t, src, fmt.Sprintf("pkg%d/f%02d.txt", i%4, i), pseudoRandom(i, 20<<10))
	}
	writeFile(t, src, "pkgz/mid.bin", pseudoRandom(99, 1<<20))
	big := writeFile(t, t.TempDir(), "big.bin", pseudoRandom(7, 6<<20))
	out := e.ok("demo", "--limit-mb", "2", "--source", src, "--big-file", big)
	for _, s := range []string{"[1] put the tree", "dedup ratio 2.00", "(current)", "refused with exit code 4", "slices deleted", "every byte identical", "1 repaired", "demo finished"} {
		if !strings.Contains(out, s) {
			t.Errorf("demo output lacks %q", s)
		}
	}
	if t.Failed() {
		t.Log(out)
	}
}

func TestScrub(t *testing.T) {
	e := newEnv(t)
	e.ok("put", writeFile(t, e.dir, "big", pseudoRandom(3, 6<<20)), "--key", "big")
	var clean scrubResult
	e.json(&clean, "scrub")
	if clean.SlicesChecked == 0 || clean.ShardsBad != 0 {
		t.Fatalf("scrub of a clean store: %+v", clean)
	}
	sst, size, err := largestSST(filepath.Join(e.store, "slices"))
	if err != nil {
		t.Fatal(err)
	}
	if err := flipByte(sst, size/2); err != nil {
		t.Fatal(err)
	}
	var rep scrubResult
	e.json(&rep, "scrub", "--repair")
	if rep.ShardsBad == 0 || rep.ShardsRepaired != rep.ShardsBad || len(rep.Unreadable) != 0 {
		t.Errorf("scrub --repair: %+v", rep)
	}
	e.json(&rep, "scrub")
	if rep.ShardsBad != 0 {
		t.Errorf("scrub after repair: %+v", rep)
	}
}

func TestProgressBar(t *testing.T) {
	e := newEnv(t)
	file := writeFile(t, e.dir, "f", pseudoRandom(5, 24<<20))

	// no terminal: nothing on stderr
	r := e.run("put", file, "--key", "plain")
	if r.code != 0 || r.stderr != "" {
		t.Fatalf("put without a terminal: exit %d, stderr %q", r.code, r.stderr)
	}

	stdout, bar := e.runOnTerminal("put", file, "--key", "tty")
	// the rate is in MiB/s or, on a fast machine, GiB/s
	if !strings.Contains(bar, "100%") || !strings.Contains(bar, "iB/s") || !strings.Contains(bar, "24 MiB") {
		t.Errorf("progress bar output lacks percentage, rate or total:\n%q", bar)
	}
	if !strings.Contains(stdout, "tty: 24.0 MiB") {
		t.Errorf("stdout: %q", stdout)
	}
}

// runOnTerminal runs sealkv with stderr on a pseudo-terminal and returns
// stdout and what was written to the terminal.
func (e *env) runOnTerminal(args ...string) (string, string) {
	e.t.Helper()
	ptmx, tty, err := pty.Open()
	if err != nil {
		e.t.Skipf("no pseudo-terminal: %v", err)
	}
	defer ptmx.Close()
	cmd := exec.Command(bin, args...)
	cmd.Env = append(cleanEnv(), "SEALKV_STORE="+e.store, "SEALKV_KEYS="+e.keys)
	var stdout bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, tty
	if err := cmd.Start(); err != nil {
		e.t.Fatal(err)
	}
	tty.Close()
	captured := make(chan string)
	go func() {
		b, _ := io.ReadAll(ptmx) // ends with EIO when the child exits
		captured <- string(b)
	}()
	if err := cmd.Wait(); err != nil {
		e.t.Fatalf("sealkv %v on a terminal: %v", args, err)
	}
	select {
	case out := <-captured:
		return stdout.String(), out
	case <-time.After(10 * time.Second):
		e.t.Fatal("reading the terminal did not end")
	}
	return "", ""
}

// TestJSONIsValid checks that every listing prints valid JSON, also when
// it is empty.
func TestJSONIsValid(t *testing.T) {
	e := newEnv(t)
	e.ok("put", writeFile(t, e.dir, "x", nil), "--key", "x")
	for _, args := range [][]string{{"ls"}, {"ls", "-l"}, {"ls", "nothing-here"}, {"ls", "--children", "x"}, {"versions", "x"}, {"stats"}, {"scrub"}, {"prune", "x", "--keep", "0"}} {
		out := e.ok(append(args, "--json")...)
		if !json.Valid([]byte(out)) {
			t.Errorf("%v --json: invalid JSON %q", args, out)
		}
	}
	if _, err := os.Stat(e.store); err != nil {
		t.Fatal(err)
	}
}
