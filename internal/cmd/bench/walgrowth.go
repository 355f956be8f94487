package main

import (
	"context"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"sigs.k8s.io/yaml"

	"github.com/nodeha/nodeha/cli"
	"github.com/nodeha/nodeha/internal/faults"
	"github.com/nodeha/nodeha/internal/testcluster"
	"github.com/nodeha/nodeha/spilo"
)

// WALGrowth is how fast the primary's local WAL archive (the recipe's
// archive_command: cp into DATA/wal_archive) grows under the fault
// benchmark's writer (one connection inserting as fast as it is answered).
type WALGrowth struct {
	Seconds      float64 `json:"seconds"`
	Rows         int     `json:"rows"`
	ArchiveBytes int64   `json:"archive_bytes"` // growth of wal_archive/ on the primary's host
	Segments     int     `json:"segments"`      // files added
	WALBytes     int64   `json:"wal_bytes"`     // WAL written meanwhile (pg_current_wal_lsn), what the archive takes in whole segments
}

func runWALGrowth(ctx context.Context, c *testcluster.Cluster, d time.Duration) (WALGrowth, error) {
	leader, err := c.WaitWhole(ctx, 4*time.Minute)
	if err != nil {
		return WALGrowth{}, err
	}
	dir := filepath.Join(leader.Dir, "postgresql", "wal_archive")
	size := func() (int64, int) {
		var n int64
		files := 0
		filepath.WalkDir(dir, func(_ string, e fs.DirEntry, err error) error {
			if err == nil && e.Type().IsRegular() {
				if fi, err := e.Info(); err == nil {
					n += fi.Size()
					files++
				}
			}
			return nil
		})
		return n, files
	}
	ca, err := c.CAFile()
	if err != nil {
		return WALGrowth{}, err
	}
	w, err := faults.NewWriter(cli.DSN(strings.Split(c.Peers(), ","), 5432, "bench", "postgres", false, ca), benchPassword, 1)
	if err != nil {
		return WALGrowth{}, err
	}
	// Let archiving catch up with the formation first.
	leader.Psql(ctx, "select pg_switch_wal()")
	time.Sleep(5 * time.Second)
	b0, f0 := size()
	lsn0, err := leader.Psql(ctx, "select pg_current_wal_lsn()")
	if err != nil {
		return WALGrowth{}, err
	}
	wctx, stop := context.WithTimeout(ctx, d)
	defer stop()
	start := time.Now()
	w.Run(wctx)
	secs := time.Since(start).Seconds()
	time.Sleep(5 * time.Second) // the last full segments archived
	b1, f1 := size()
	wal, err := leader.Psql(ctx, "select pg_wal_lsn_diff(pg_current_wal_lsn(), '"+lsn0+"')::bigint")
	if err != nil {
		return WALGrowth{}, err
	}
	g := WALGrowth{Seconds: secs, Rows: len(w.Acks()), ArchiveBytes: b1 - b0, Segments: f1 - f0}
	fmt.Sscan(wal, &g.WALBytes)
	return g, nil
}

func printWALGrowth(w io.Writer, g WALGrowth) {
	mib := float64(g.ArchiveBytes) / (1 << 20)
	wal := float64(g.WALBytes) / (1 << 20)
	fmt.Fprintf(w, "local WAL archive under the benchmark's writer: %d rows in %.0f s (%.0f rows/s); WAL written %.1f MiB: %.1f MiB/min, %.1f GiB/day; wal_archive/ grew %.0f MiB (%d whole segments)\n",
		g.Rows, g.Seconds, float64(g.Rows)/g.Seconds, wal, wal/g.Seconds*60, wal/g.Seconds*86400/1024, mib, g.Segments)
}

// recipeArchiveCommand is the seed recipe's archive_command.
const recipeArchiveCommand = "test ! -f /var/lib/postgresql/data/wal_archive/%f && cp %p /var/lib/postgresql/data/wal_archive/%f"

// withRecipeArchive writes an overlay into dir: base's (a file, or none)
// with the recipe's archive_command for a new cluster.
func withRecipeArchive(base, dir string) (string, error) {
	doc := map[string]any{}
	if base != "" {
		b, err := os.ReadFile(base)
		if err != nil {
			return "", err
		}
		if err := yaml.Unmarshal(b, &doc); err != nil {
			return "", fmt.Errorf("%s: %w", base, err)
		}
	}
	spilo.Merge(doc, map[string]any{"bootstrap": map[string]any{"dcs": map[string]any{"postgresql": map[string]any{
		"parameters": map[string]any{"archive_command": recipeArchiveCommand}}}}})
	b, err := yaml.Marshal(doc)
	if err != nil {
		return "", err
	}
	p := filepath.Join(dir, "overlay-recipe-archive.yml")
	return p, os.WriteFile(p, b, 0o644)
}
