package main

import (
	"context"
	"fmt"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/nodeha/nodeha/internal/testcluster"
)

// Throughput is one pgbench round on a variant's primary.
type Throughput struct {
	Variant string  `json:"variant"`
	Clients int     `json:"clients"`
	Round   int     `json:"round"`
	TPS     float64 `json:"tps"`
	Seconds int     `json:"seconds"`
}

var (
	tpsLine     = regexp.MustCompile(`(?m)^tps = ([0-9.]+)`)
	latencyLine = regexp.MustCompile(`(?m)^latency average = ([0-9.]+) ms`)
)

// runPgbench measures what synchronous replication costs: pgbench's
// TPC-B-like transactions for seconds per round, on the primary (inside its
// Spilo container, over the local socket, so the network is the
// replication's only), at each client count, rounds times, the client
// counts interleaved so drift on a shared machine hits both alike.
func runPgbench(ctx context.Context, c *testcluster.Cluster, variant string, clients []int, rounds, seconds int, save func(Throughput)) error {
	leader, err := c.WaitWhole(ctx, 4*time.Minute)
	if err != nil {
		return err
	}
	pgbench := func(args ...string) (string, error) {
		return testcluster.Docker(ctx, append([]string{"exec", "-u", "postgres", leader.Spilo,
			"pgbench", "-h", "/var/run/postgresql", "-U", "postgres"}, args...)...)
	}
	if _, err := leader.Psql(ctx, "create database pgbench"); err != nil && !strings.Contains(err.Error(), "already exists") {
		return err
	}
	if out, err := pgbench("-i", "-q", "-s", "10", "pgbench"); err != nil {
		return fmt.Errorf("pgbench -i: %v\n%s", err, out)
	}
	if _, err := c.WaitWhole(ctx, 4*time.Minute); err != nil { // replicas caught up on the load
		return err
	}
	for r := 1; r <= rounds; r++ {
		for _, n := range clients {
			out, err := pgbench("-n", "-c", strconv.Itoa(n), "-j", strconv.Itoa(n), "-T", strconv.Itoa(seconds), "pgbench")
			if err != nil {
				return fmt.Errorf("pgbench -c %d: %v\n%s", n, err, out)
			}
			m := tpsLine.FindStringSubmatch(out)
			if m == nil {
				return fmt.Errorf("pgbench -c %d: no tps in its output:\n%s", n, out)
			}
			tps, _ := strconv.ParseFloat(m[1], 64)
			save(Throughput{Variant: variant, Clients: n, Round: r, TPS: tps, Seconds: seconds})
			fmt.Fprintf(os.Stderr, "%s pgbench -c %d round %d: %.0f tps\n", variant, n, r, tps)
		}
	}
	return nil
}

func printThroughput(w *os.File, rs []Throughput) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "clients\tvariant\trounds\ttps median\ttps min\ttps max\tvs nodeha-async\t")
	counts := distinct(rs, func(r Throughput) int { return r.Clients })
	for _, n := range counts {
		medians := map[string]float64{}
		for _, name := range variantNames() {
			var tps []float64
			for _, r := range rs {
				if r.Clients == n && r.Variant == name {
					tps = append(tps, r.TPS)
				}
			}
			if len(tps) == 0 {
				continue
			}
			med := quantile(tps, 0.5)
			medians[name] = med
			ratio := "-"
			async := "nodeha-async" // with archiving as this variant's
			if strings.HasSuffix(name, archiveSuffix) {
				async += archiveSuffix
			}
			if name != async && medians[async] > 0 {
				ratio = fmt.Sprintf("%.2fx", med/medians[async])
			}
			fmt.Fprintf(tw, "%d\t%s\t%d\t%.0f\t%.0f\t%.0f\t%s\t\n", n, name, len(tps), med, quantile(tps, 0), quantile(tps, 1), ratio)
		}
	}
	tw.Flush()
}

// distinct lists the values of key over rs, in first-seen order.
func distinct[T any](rs []T, key func(T) int) []int {
	var out []int
	for _, r := range rs {
		if k := key(r); !slices.Contains(out, k) {
			out = append(out, k)
		}
	}
	return out
}
