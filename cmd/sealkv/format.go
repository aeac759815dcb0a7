package main

import (
	"fmt"
	"time"

	"github.com/sealkv/kv"
)

// fmtBytes prints n in binary units: "12.3 MiB".
func fmtBytes(n int64) string {
	const unit = 1024
	if n < unit && n > -unit {
		return fmt.Sprintf("%d B", n)
	}
	v, i := float64(n), -1
	for (v >= unit || v <= -unit) && i < 5 {
		v /= unit
		i++
	}
	return fmt.Sprintf("%.1f %ciB", v, "KMGTPE"[i])
}

// fmtRate prints n bytes per d as "123.4 MiB/s".
func fmtRate(n int64, d time.Duration) string {
	if d <= 0 {
		return "-"
	}
	return fmtBytes(int64(float64(n)/d.Seconds())) + "/s"
}

// fmtDur rounds d for humans.
func fmtDur(d time.Duration) string {
	switch {
	case d < time.Millisecond:
		return d.Round(time.Microsecond).String()
	case d < time.Second:
		return d.Round(time.Millisecond).String()
	}
	return d.Round(10 * time.Millisecond).String()
}

// ratio is a/b, or 0 when b is 0.
func ratio(a, b int64) float64 {
	if b == 0 {
		return 0
	}
	return float64(a) / float64(b)
}

// shortID is the first 16 hex digits of an ID.
func shortID(s string) string {
	if len(s) > 16 {
		return s[:16]
	}
	return s
}

// contentJSON is a ContentMeta in --json output.
type contentJSON struct {
	Version    uint64    `json:"version"`
	Size       int64     `json:"size"`
	StoredSize int64     `json:"stored_size"`
	Slices     int       `json:"slices"`
	Created    time.Time `json:"created"`
	ContentID  string    `json:"content_id"`
	Current    bool      `json:"current"`
}

func toContentJSON(m kv.ContentMeta, current bool) contentJSON {
	return contentJSON{Version: m.Version, Size: m.OriginalSize, StoredSize: m.StorageSize, Slices: m.NumSlices, Created: m.Created, ContentID: m.ContentID.String(), Current: current}
}

// allVersions lists d's versions oldest first, the current one last.
func allVersions(d *kv.Data) []contentJSON {
	out := make([]contentJSON, 0, len(d.Versions)+1)
	for _, m := range d.Versions {
		out = append(out, toContentJSON(m, false))
	}
	return append(out, toContentJSON(d.Content, true))
}

// dataJSON is a Data in ls -l --json output.
type dataJSON struct {
	Key        string    `json:"key"`
	Parent     string    `json:"parent,omitempty"`
	Size       int64     `json:"size"`
	StoredSize int64     `json:"stored_size"`
	Slices     int       `json:"slices"`
	Versions   int       `json:"versions"`
	Version    uint64    `json:"version"`
	Modified   time.Time `json:"modified"`
}

func toDataJSON(d *kv.Data) dataJSON {
	c := d.Content
	return dataJSON{Key: d.Key, Parent: d.Parent, Size: c.OriginalSize, StoredSize: c.StorageSize, Slices: c.NumSlices, Versions: len(d.Versions) + 1, Version: c.Version, Modified: c.Created}
}

// statsJSON is kv.Stats with the derived ratios.
type statsJSON struct {
	Data         int64   `json:"data"`
	Versions     int64   `json:"versions"`
	Slices       int64   `json:"slices"`
	LogicalBytes int64   `json:"logical_bytes"`
	UniqueBytes  int64   `json:"unique_bytes"`
	StoredBytes  int64   `json:"stored_bytes"`
	DedupRatio   float64 `json:"dedup_ratio"`
	StoredRatio  float64 `json:"stored_per_unique"`
	Reduction    float64 `json:"logical_per_stored"`
}

func toStatsJSON(s kv.Stats) statsJSON {
	return statsJSON{
		Data: s.Data, Versions: s.Versions, Slices: s.Slices,
		LogicalBytes: s.LogicalBytes, UniqueBytes: s.UniqueBytes, StoredBytes: s.StoredBytes,
		DedupRatio:  ratio(s.LogicalBytes, s.UniqueBytes),
		StoredRatio: ratio(s.StoredBytes, s.UniqueBytes),
		Reduction:   ratio(s.LogicalBytes, s.StoredBytes),
	}
}

// reportJSON is a DeleteReport in --json output.
type reportJSON struct {
	Key     string     `json:"key"`
	Deleted []string   `json:"deleted"`
	Kept    []keptJSON `json:"kept"`
}

type keptJSON struct {
	Slice        string   `json:"slice"`
	ReferencedBy []string `json:"referenced_by"`
}

func toReportJSON(key string, r *kv.DeleteReport) reportJSON {
	out := reportJSON{Key: key, Deleted: []string{}, Kept: []keptJSON{}}
	for _, id := range r.Deleted {
		out.Deleted = append(out.Deleted, id.String())
	}
	for _, k := range r.Kept {
		out.Kept = append(out.Kept, keptJSON{Slice: k.ID.String(), ReferencedBy: k.ReferencedBy})
	}
	return out
}
