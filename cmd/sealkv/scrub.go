package main

import (
	"context"
	"fmt"
	"strings"

	"github.com/spf13/cobra"

	"github.com/sealkv/kv"
)

// runScrub calls db.Scrub and converts its report.
func runScrub(ctx context.Context, db *kv.DB, repair bool, progress func(done, total int64)) (*scrubResult, error) {
	rep, err := db.Scrub(ctx, kv.ScrubOptions{Repair: repair, Progress: progress})
	if rep == nil {
		return nil, err
	}
	res := &scrubResult{SlicesChecked: rep.SlicesChecked, ShardsBad: rep.ShardsBad, ShardsRepaired: rep.ShardsRepaired, Unreadable: []string{}}
	for _, id := range rep.Unreadable {
		res.Unreadable = append(res.Unreadable, id.String())
	}
	return res, err
}

func (a *app) scrubCommand() *cobra.Command {
	var repair bool
	c := &cobra.Command{
		Use:   "scrub",
		Short: "Check every shard of every slice; rewrite bad ones with --repair",
		Long: `Scrub reads every shard of every slice and checks its checksum. With
--repair it rebuilds bad shards from the good ones (any k of k+m suffice) and
rewrites them. Slices with fewer than k good shards are listed as unreadable
and make scrub exit with code 7.`,
		Args: usageArgs(cobra.NoArgs),
		RunE: func(c *cobra.Command, _ []string) error {
			return a.withStore(false, func(db *kv.DB) error { return a.runScrubCmd(c, db, repair) })
		},
	}
	c.Flags().BoolVar(&repair, "repair", false, "rewrite bad shards from parity")
	return c
}

func (a *app) runScrubCmd(c *cobra.Command, db *kv.DB, repair bool) error {
	m := a.newMeter("scrub", -1, false)
	res, err := runScrub(ctx(c), db, repair, m.set)
	m.finish()
	if err != nil {
		return err
	}
	if a.json {
		if err := a.writeJSON(res); err != nil {
			return err
		}
	} else if !a.quiet {
		a.printScrub(res)
	}
	if len(res.Unreadable) > 0 {
		return &cliError{code: exitCorrupt, msg: fmt.Sprintf("%d slices are unreadable", len(res.Unreadable)), hint: "putting their content again replaces them"}
	}
	return nil
}

// scrubResult is a kv.ScrubReport in CLI form.
type scrubResult struct {
	SlicesChecked  int      `json:"slices_checked"`
	ShardsBad      int      `json:"shards_bad"`
	ShardsRepaired int      `json:"shards_repaired"`
	Unreadable     []string `json:"unreadable"`
}

// printScrub prints a scrub report as text.
func (a *app) printScrub(r *scrubResult) {
	fmt.Fprintf(a.stdout, "%d slices checked, %d bad shards, %d repaired, %d unreadable slices\n", r.SlicesChecked, r.ShardsBad, r.ShardsRepaired, len(r.Unreadable))
	if len(r.Unreadable) > 0 {
		short := make([]string, len(r.Unreadable))
		for i, id := range r.Unreadable {
			short[i] = shortID(id)
		}
		fmt.Fprintf(a.stdout, "unreadable: %s\n", strings.Join(short, ", "))
	}
}
