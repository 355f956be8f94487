package main

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/nodeha/nodeha/internal/testcluster"
)

// PathThroughput is one pgbench round over one path to the primary.
type PathThroughput struct {
	Path    string  `json:"path"` // direct, endpoint (the primary's host), endpoint-other (another host's), haproxy (HAProxy in TCP mode at an address of its own)
	Mode    string  `json:"mode"` // tpcb or select
	Clients int     `json:"clients"`
	Round   int     `json:"round"`
	TPS     float64 `json:"tps"`
	// LatencyMS is pgbench's average latency.
	LatencyMS float64 `json:"latency_ms"`
}

var paths = []string{"direct", "endpoint", "endpoint-other", "haproxy"}

// runEndpointPgbench measures what the read-write endpoint costs: pgbench
// (TPC-B-like and select-only) from inside the primary's container, over
// TCP and TLS, as the bench role with its password, straight to
// PostgreSQL's port on the primary's address, through the primary host's
// own endpoint, and through another host's endpoint; rounds interleaved
// so drift on a shared machine hits every path alike.
//
// For scale, the same through HAProxy (Debian's, from haproxyImage; TCP
// mode, what autobase and Pigsty put in front of Patroni) in a container of
// its own on the cluster's network, forwarding to the primary: when
// HAProxy costs as much, the cost is the extra hop on this machine, not
// nodeha's forwarding.
func runEndpointPgbench(ctx context.Context, c *testcluster.Cluster, clients []int, rounds, seconds int, haproxyImage string, save func(PathThroughput)) error {
	leader, err := c.WaitWhole(ctx, 4*time.Minute)
	if err != nil {
		return err
	}
	var other *testcluster.Host
	for _, h := range c.Hosts {
		if h != leader {
			other = h
			break
		}
	}
	if _, err := leader.Psql(ctx, "create database pgbench owner bench"); err != nil && !strings.Contains(err.Error(), "already exists") {
		return err
	}
	pgbench := func(host string, port int, args ...string) (string, error) {
		base := []string{"exec", "-e", "PGPASSWORD=" + benchPassword, "-e", "PGSSLMODE=require", "-u", "postgres", leader.Spilo,
			"pgbench", "-h", host, "-p", strconv.Itoa(port), "-U", "bench"}
		return testcluster.Docker(ctx, append(append(base, args...), "pgbench")...)
	}
	if out, err := pgbench(leader.IP, 5432, "-i", "-q", "-s", "10"); err != nil {
		return fmt.Errorf("pgbench -i: %v\n%s", err, out)
	}
	if _, err := c.WaitWhole(ctx, 4*time.Minute); err != nil {
		return err
	}
	haproxyIP, stop, err := startHAProxy(ctx, c, haproxyImage, leader.IP)
	if err != nil {
		return err
	}
	defer stop()
	target := map[string]struct {
		host string
		port int
	}{"direct": {leader.IP, 5432}, "endpoint": {leader.IP, 5433}, "endpoint-other": {other.IP, 5433}, "haproxy": {haproxyIP, 5435}}
	for r := 1; r <= rounds; r++ {
		for _, mode := range []string{"tpcb", "select"} {
			for _, n := range clients {
				for _, p := range paths {
					args := []string{"-n", "-c", strconv.Itoa(n), "-j", strconv.Itoa(n), "-T", strconv.Itoa(seconds)}
					if mode == "select" {
						args = append(args, "-S")
					}
					out, err := pgbench(target[p].host, target[p].port, args...)
					if err != nil {
						return fmt.Errorf("pgbench %s %s -c %d: %v\n%s", p, mode, n, err, out)
					}
					m := tpsLine.FindStringSubmatch(out)
					if m == nil {
						return fmt.Errorf("pgbench: no tps in its output:\n%s", out)
					}
					tps, _ := strconv.ParseFloat(m[1], 64)
					lat := 0.0
					if l := latencyLine.FindStringSubmatch(out); l != nil {
						lat, _ = strconv.ParseFloat(l[1], 64)
					}
					save(PathThroughput{Path: p, Mode: mode, Clients: n, Round: r, TPS: tps, LatencyMS: lat})
					fmt.Fprintf(os.Stderr, "%s %s -c %d round %d: %.0f tps, %.3f ms\n", p, mode, n, r, tps, lat)
				}
			}
		}
	}
	return nil
}

func printPathThroughput(w *os.File, rs []PathThroughput) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "mode\tclients\tpath\trounds\ttps median\tvs direct\tlatency median ms\tadded ms\t")
	clients := distinct(rs, func(r PathThroughput) int { return r.Clients })
	for _, mode := range []string{"tpcb", "select"} {
		for _, n := range clients {
			var directTPS, directLat float64
			for _, p := range paths {
				var tps, lat []float64
				for _, r := range rs {
					if r.Mode == mode && r.Clients == n && r.Path == p {
						tps = append(tps, r.TPS)
						lat = append(lat, r.LatencyMS)
					}
				}
				if len(tps) == 0 {
					continue
				}
				mt, ml := quantile(tps, 0.5), quantile(lat, 0.5)
				ratio, added := "-", "-"
				if p == "direct" {
					directTPS, directLat = mt, ml
				} else if directTPS > 0 {
					ratio = fmt.Sprintf("%.2fx", mt/directTPS)
					added = fmt.Sprintf("%+.3f", ml-directLat)
				}
				fmt.Fprintf(tw, "%s\t%d\t%s\t%d\t%.0f\t%s\t%.3f\t%s\t\n", mode, n, p, len(tps), mt, ratio, ml, added)
			}
		}
	}
	tw.Flush()
}

// startHAProxy runs HAProxy in TCP mode on address .200 of c's network,
// forwarding port 5435 to primary:5432.
func startHAProxy(ctx context.Context, c *testcluster.Cluster, image, primary string) (string, func(), error) {
	pfx, err := netip.ParsePrefix(c.Opts.Subnet)
	if err != nil {
		return "", nil, err
	}
	a := pfx.Masked().Addr().As4()
	a[3] = 200
	ip := netip.AddrFrom4(a).String()
	cfg := fmt.Sprintf(`global
  maxconn 4000
defaults
  mode tcp
  timeout connect 2s
  timeout client 1h
  timeout server 1h
listen postgres
  bind :5435
  server primary %s:5432
`, primary)
	name := c.Opts.Prefix + "-haproxy"
	testcluster.Docker(ctx, "rm", "-f", name)
	if out, err := testcluster.Docker(ctx, "run", "-d", "--name", name, "--network", c.Network(), "--ip", ip,
		"--entrypoint", "sh", image, "-c", `printf '%s' "$1" > /tmp/haproxy.cfg && exec haproxy -f /tmp/haproxy.cfg`, "sh", cfg); err != nil {
		return "", nil, fmt.Errorf("haproxy: %v: %s", err, out)
	}
	stop := func() { testcluster.Docker(context.Background(), "rm", "-f", name) }
	for i := 0; i < 50; i++ {
		if conn, err := net.DialTimeout("tcp", net.JoinHostPort(ip, "5435"), time.Second); err == nil {
			conn.Close()
			return ip, stop, nil
		}
		time.Sleep(200 * time.Millisecond)
	}
	stop()
	return "", nil, fmt.Errorf("haproxy at %s:5435 does not answer", ip)
}
