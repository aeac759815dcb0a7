package main

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/spf13/cobra"

	"github.com/sealkv/kv"
)

const rmLong = `Rm deletes KEY and every slice no other Data references, and reports what
happened to the slices of its content: how many were deleted, and which were
kept because other Data (other keys, other versions) still reference them.

Rm refuses, changing nothing, when KEY has children (use -r to delete the
tree below it, children first) or older versions (run "sealkv prune KEY
--keep 0" first).`

func (a *app) rmCommand() *cobra.Command {
	var recursive bool
	c := &cobra.Command{
		Use:   "rm KEY",
		Short: "Delete a key (or a tree with -r) and the slices only it used",
		Long:  rmLong,
		Args:  usageArgs(cobra.ExactArgs(1)),
		RunE: func(c *cobra.Command, args []string) error {
			return a.withStore(false, func(db *kv.DB) error { return a.runRm(c, db, args[0], recursive) })
		},
	}
	c.Flags().BoolVarP(&recursive, "recursive", "r", false, "delete the children of KEY first, bottom-up")
	return c
}

func (a *app) runRm(c *cobra.Command, db *kv.DB, key string, recursive bool) error {
	keys := []string{key}
	if recursive {
		nodes, err := collectKeys(ctx(c), db, key)
		if err != nil {
			return err
		}
		if err := checkNoVersions(ctx(c), db, nodes); err != nil {
			return err
		}
		keys = nodes
	}
	var reports []reportJSON
	failed, err := "", error(nil)
	for i := len(keys) - 1; i >= 0 && err == nil; i-- {
		var r *kv.DeleteReport
		if r, err = db.Delete(ctx(c), keys[i]); err != nil {
			failed = keys[i]
		} else {
			reports = append(reports, toReportJSON(keys[i], r))
		}
	}
	if perr := a.printReports("deleted", reports); err == nil {
		err = perr
	}
	if err != nil {
		return refusal(ctx(c), db, failed, err)
	}
	return nil
}

// collectKeys lists key and the tree below it, parents before children.
func collectKeys(ctx context.Context, db *kv.DB, key string) ([]string, error) {
	keys := []string{key}
	if _, err := db.Stat(ctx, key); err != nil {
		return nil, err
	}
	for i := 0; i < len(keys); i++ {
		for child, err := range db.Children(ctx, keys[i]) {
			if err != nil {
				return nil, err
			}
			keys = append(keys, child)
		}
	}
	return keys, nil
}

// checkNoVersions refuses a tree delete, before anything is deleted, if
// a key in it has older versions.
func checkNoVersions(ctx context.Context, db *kv.DB, keys []string) error {
	for _, k := range keys {
		d, err := db.Stat(ctx, k)
		if err != nil {
			return err
		}
		if len(d.Versions) > 0 {
			return refusal(ctx, db, k, fmt.Errorf("%w: %q", kv.ErrHasVersions, k))
		}
	}
	return nil
}

// refusal turns ErrHasChildren and ErrHasVersions into a message with a
// hint on what to run.
func refusal(ctx context.Context, db *kv.DB, target string, err error) error {
	switch {
	case errors.Is(err, kv.ErrHasChildren):
		n := 0
		for range db.Children(ctx, target) {
			n++
		}
		return withHint(err, exitRefused, fmt.Sprintf("cannot delete %q: it has %d children", target, n), "use: sealkv rm -r "+shellQuote(target))
	case errors.Is(err, kv.ErrHasVersions):
		d, serr := db.Stat(ctx, target)
		n := 0
		if serr == nil {
			n = len(d.Versions)
		}
		return withHint(err, exitRefused, fmt.Sprintf("cannot delete %q: it has %d older versions", target, n), "run: sealkv prune "+shellQuote(target)+" --keep 0")
	}
	return err
}

// shellQuote quotes s for a POSIX shell if it needs it.
func shellQuote(s string) string {
	if s != "" && strings.IndexFunc(s, func(r rune) bool {
		return !(r == '/' || r == '.' || r == '-' || r == '_' || r == ':' || r == '@' || r == '+' ||
			('a' <= r && r <= 'z') || ('A' <= r && r <= 'Z') || ('0' <= r && r <= '9'))
	}) < 0 {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// printReports prints delete reports: JSON, or a line per key and the
// slices kept with who references them.
func (a *app) printReports(verb string, reports []reportJSON) error {
	if a.json {
		return a.writeJSON(nonNil(reports))
	}
	if a.quiet {
		return nil
	}
	for _, r := range reports {
		a.printReport(verb, r)
	}
	return nil
}

// maxKeptLines bounds the kept slices listed per key in text output.
const maxKeptLines = 10

func (a *app) printReport(verb string, r reportJSON) {
	fmt.Fprintf(a.stdout, "%s %s: %d slices deleted, %d kept\n", verb, r.Key, len(r.Deleted), len(r.Kept))
	for i, k := range r.Kept {
		if i == maxKeptLines {
			fmt.Fprintf(a.stdout, "  ... and %d more kept slices (see --json)\n", len(r.Kept)-i)
			break
		}
		fmt.Fprintf(a.stdout, "  kept slice %s, referenced by %s\n", shortID(k.Slice), strings.Join(k.ReferencedBy, ", "))
	}
}

func (a *app) pruneCommand() *cobra.Command {
	var keep int
	c := &cobra.Command{
		Use:   "prune KEY --keep N",
		Short: "Delete all but the N newest older versions of a key",
		Long: `Prune deletes the older versions of KEY except the N newest (the current
version is never deleted; --keep 0 leaves only it) and every slice only they
referenced, and reports like rm.`,
		Args: usageArgs(cobra.ExactArgs(1)),
		RunE: func(c *cobra.Command, args []string) error {
			if !c.Flags().Changed("keep") || keep < 0 {
				return usagef("prune needs --keep N (N >= 0 older versions to keep)")
			}
			return a.withStore(false, func(db *kv.DB) error {
				r, err := db.PruneVersions(ctx(c), args[0], keep)
				if err != nil {
					return err
				}
				return a.printReports("pruned", []reportJSON{toReportJSON(args[0], r)})
			})
		},
	}
	c.Flags().IntVar(&keep, "keep", 0, "older versions to keep (required)")
	return c
}
