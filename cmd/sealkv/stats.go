package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/sealkv/kv"
)

func (a *app) statsCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "stats",
		Short: "Show the store's totals and dedup ratio",
		Long: `Stats shows the store's totals: Data entries, versions, unique slices,
logical bytes (every version of every key), unique bytes (each slice once)
and stored bytes (shards with parity and checksums, after compression).

The dedup ratio is logical / unique; stored / unique shows compression and
parity; logical / stored is the overall reduction.`,
		Args: usageArgs(cobra.NoArgs),
		RunE: func(c *cobra.Command, _ []string) error {
			return a.withStore(false, func(db *kv.DB) error { return a.printStats(db.Stats()) })
		},
	}
}

func (a *app) printStats(s kv.Stats) error {
	j := toStatsJSON(s)
	if a.json {
		return a.writeJSON(j)
	}
	fmt.Fprintf(a.stdout, "data          %d\n", s.Data)
	fmt.Fprintf(a.stdout, "versions      %d\n", s.Versions)
	fmt.Fprintf(a.stdout, "slices        %d\n", s.Slices)
	fmt.Fprintf(a.stdout, "logical       %s (%d bytes)\n", fmtBytes(s.LogicalBytes), s.LogicalBytes)
	fmt.Fprintf(a.stdout, "unique        %s (%d bytes)\n", fmtBytes(s.UniqueBytes), s.UniqueBytes)
	fmt.Fprintf(a.stdout, "stored        %s (%d bytes)\n", fmtBytes(s.StoredBytes), s.StoredBytes)
	fmt.Fprintf(a.stdout, "dedup ratio   %.2f  (logical / unique)\n", j.DedupRatio)
	fmt.Fprintf(a.stdout, "stored/unique %.2f  (compression, parity, checksums)\n", j.StoredRatio)
	fmt.Fprintf(a.stdout, "reduction     %.2f  (logical / stored)\n", j.Reduction)
	return nil
}
