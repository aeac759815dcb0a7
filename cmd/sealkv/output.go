package main

import (
	"errors"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
)

// output is the file "get -o" writes. A regular file, or a new one, is
// written to a temporary file in the same directory and renamed over the
// target only once complete and synced, so a failed or interrupted get
// neither leaves a partial file nor destroys the file that was there.
// Anything else (/dev/null, a FIFO, a terminal, /dev/stdout) is written
// in place.
type output struct {
	*os.File
	dst string // rename target; "" when writing in place
}

// createOutput opens the output for the -o target name.
func createOutput(name string) (*output, error) {
	info, err := os.Stat(name)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return createTempFor(name, 0)
	case err != nil:
		return nil, err
	case info.IsDir():
		return nil, fmt.Errorf("%s is a directory", name)
	case !info.Mode().IsRegular() || namesDescriptor(name):
		f, err := os.OpenFile(name, os.O_WRONLY|os.O_TRUNC, 0)
		return &output{File: f}, err
	}
	// Replace the file a symlink points to, not the symlink, as writing
	// through it did.
	target, err := filepath.EvalSymlinks(name)
	if err != nil {
		return nil, err
	}
	return createTempFor(target, info.Mode().Perm())
}

// namesDescriptor reports whether name is below /dev or /proc, where
// /dev/stdout or /proc/self/fd/1 name an open descriptor, a shell's
// redirection to a file say: renaming over that file would bypass it.
func namesDescriptor(name string) bool {
	abs, err := filepath.Abs(name)
	return err == nil && (strings.HasPrefix(abs, "/dev/") || strings.HasPrefix(abs, "/proc/"))
}

// createTempFor creates a temporary file beside dst with mode perm, or
// with 0666 less the umask, as os.Create would, when perm is 0.
func createTempFor(dst string, perm fs.FileMode) (*output, error) {
	for range 100 {
		tmp := filepath.Join(filepath.Dir(dst), fmt.Sprintf(".sealkv-get-%08x.tmp", rand.Uint32()))
		f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o666)
		if errors.Is(err, fs.ErrExist) {
			continue
		}
		var pe *fs.PathError
		if errors.As(err, &pe) {
			// Name the file asked for, not the temporary one.
			return nil, &fs.PathError{Op: "create", Path: dst, Err: pe.Err}
		}
		if err != nil {
			return nil, err
		}
		o := &output{File: f, dst: dst}
		if perm != 0 {
			if err := f.Chmod(perm); err != nil {
				return nil, o.abort(err)
			}
		}
		return o, nil
	}
	return nil, fmt.Errorf("cannot create a temporary file beside %s", dst)
}

// commit syncs the temporary file and renames it into place; on failure
// it removes it.
func (o *output) commit() error {
	if o.dst == "" {
		return o.Close()
	}
	err := o.Sync()
	if cerr := o.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(o.Name(), o.dst)
	}
	if err != nil {
		os.Remove(o.Name())
	}
	return err
}

// abort closes the output and removes the temporary file, leaving the
// target as it was. It returns err, naming the target rather than the
// temporary file if it is a *fs.PathError about it.
func (o *output) abort(err error) error {
	o.Close()
	if o.dst == "" {
		return err
	}
	os.Remove(o.Name())
	var pe *fs.PathError
	if errors.As(err, &pe) && pe.Path == o.Name() {
		return &fs.PathError{Op: pe.Op, Path: o.dst, Err: pe.Err}
	}
	return err
}
