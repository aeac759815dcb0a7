package main

import (
	"fmt"
	"iter"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/sealkv/kv"
)

type lsFlags struct {
	children string
	long     bool
}

const lsLong = `Ls lists the keys that start with PREFIX (every key without one), or with
--children KEY the keys whose parent is KEY, in byte order.

With -l each key shows its current size, the size its slices take in the
store (shards and parity; slices shared with other keys counted in full),
its slice count, how many versions it has and when the current one was put.
The footer gives the store's dedup ratio (see "sealkv stats").`

func (a *app) lsCommand() *cobra.Command {
	var f lsFlags
	c := &cobra.Command{
		Use:   "ls [PREFIX]",
		Short: "List keys by prefix or the children of a key",
		Long:  lsLong,
		Args:  usageArgs(cobra.MaximumNArgs(1)),
		RunE: func(c *cobra.Command, args []string) error {
			prefix := ""
			if len(args) == 1 {
				prefix = args[0]
			}
			if prefix != "" && f.children != "" {
				return usagef("give PREFIX or --children KEY, not both")
			}
			return a.withStore(false, func(db *kv.DB) error { return a.runLs(c, db, prefix, &f) })
		},
	}
	c.Flags().StringVar(&f.children, "children", "", "list the children of this key")
	c.Flags().BoolVarP(&f.long, "long", "l", false, "show sizes, versions and dates")
	return c
}

func (a *app) runLs(c *cobra.Command, db *kv.DB, prefix string, f *lsFlags) error {
	var keys iter.Seq2[string, error]
	if f.children != "" {
		keys = db.Children(ctx(c), f.children)
	} else {
		keys = db.List(ctx(c), prefix)
	}
	if !f.long {
		return a.lsShort(keys)
	}
	var rows []dataJSON
	for k, err := range keys {
		if err != nil {
			return err
		}
		d, err := db.Stat(ctx(c), k)
		if err != nil {
			return err
		}
		rows = append(rows, toDataJSON(d))
	}
	if a.json {
		return a.writeJSON(nonNil(rows))
	}
	return a.lsLongText(rows, db.Stats())
}

func (a *app) lsShort(keys iter.Seq2[string, error]) error {
	var out []string
	for k, err := range keys {
		if err != nil {
			return err
		}
		if !a.json {
			fmt.Fprintln(a.stdout, k)
		}
		out = append(out, k)
	}
	if a.json {
		return a.writeJSON(nonNil(out))
	}
	return nil
}

func (a *app) lsLongText(rows []dataJSON, s kv.Stats) error {
	tw := tabwriter.NewWriter(a.stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "SIZE\tSTORED\tSLICES\tVERSIONS\tMODIFIED\t  KEY")
	var size, stored int64
	for _, r := range rows {
		size += r.Size
		stored += r.StoredSize
		fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%s\t  %s\n", fmtBytes(r.Size), fmtBytes(r.StoredSize), r.Slices, r.Versions, r.Modified.Format("2006-01-02 15:04:05"), r.Key)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	a.printf("%d keys, %s; store dedup ratio %.2f (%s logical in %s of unique slices)\n",
		len(rows), fmtBytes(size), ratio(s.LogicalBytes, s.UniqueBytes), fmtBytes(s.LogicalBytes), fmtBytes(s.UniqueBytes))
	return nil
}

// nonNil makes an empty list print as [] in JSON.
func nonNil[T any](s []T) []T {
	if s == nil {
		return []T{}
	}
	return s
}

func (a *app) versionsCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "versions KEY",
		Short: "List the versions of a key",
		Long: `Versions lists every version of KEY, oldest first, the current one last:
version number, size, stored size, slice count, creation time and the first
16 hex digits of the ContentID (equal IDs mean equal content).`,
		Args: usageArgs(cobra.ExactArgs(1)),
		RunE: func(c *cobra.Command, args []string) error {
			return a.withStore(false, func(db *kv.DB) error {
				d, err := db.Stat(ctx(c), args[0])
				if err != nil {
					return err
				}
				return a.printVersions(d)
			})
		},
	}
}

func (a *app) printVersions(d *kv.Data) error {
	vs := allVersions(d)
	if a.json {
		return a.writeJSON(vs)
	}
	tw := tabwriter.NewWriter(a.stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "VERSION\tSIZE\tSTORED\tSLICES\tCREATED\tCONTENT")
	for _, v := range vs {
		cur := ""
		if v.Current {
			cur = " (current)"
		}
		fmt.Fprintf(tw, "%d\t%s\t%s\t%d\t%s\t%s%s\n", v.Version, fmtBytes(v.Size), fmtBytes(v.StoredSize), v.Slices, v.Created.Format("2006-01-02 15:04:05.000"), shortID(v.ContentID), cur)
	}
	return tw.Flush()
}
