package main

import (
	"bufio"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/nodeha/nodeha/internal/testcluster"
	"github.com/nodeha/nodeha/trust"
)

// metricsPort is the bench cluster's NODEHA_METRICS_LISTEN port (every
// address: HTTPS, a metrics reader's certificate).
const metricsPort = 9272

// Memory is nodeha's resident memory on a host that is not the primary,
// idle and then holding Conns client connections through its read-write
// endpoint, its metrics scraped every second all along.
type Memory struct {
	Host        string  `json:"host"`
	Conns       int     `json:"conns"`
	IdleMB      float64 `json:"idle_mb"`      // median of the samples before
	LoadedMB    float64 `json:"loaded_mb"`    // median with the connections open
	AfterMB     float64 `json:"after_mb"`     // median once they are closed
	OpenSeen    float64 `json:"open_seen"`    // nodeha_endpoint_open_connections{endpoint="rw"} meanwhile
	Goroutines  [3]int  `json:"goroutines"`   // go_goroutines idle, loaded, after
	PerConnKB   float64 `json:"per_conn_kb"`  // (loaded - idle) / conns
	SampleEvery string  `json:"sample_every"` // the sampling period
	Samples     int     `json:"samples_each"` // samples per phase
	MetricsScr  int     `json:"metrics_scrapes"`
}

// runMemory opens n TCP connections to another host's read-write endpoint
// (each forwarded to the primary, whose PostgreSQL waits for a startup
// packet: nodeha's cost per connection does not depend on what flows) and
// samples that host's nodeha: VmRSS from /proc (the machine sees the
// container's process), goroutines from its metrics.
func runMemory(ctx context.Context, c *testcluster.Cluster, n int) (Memory, error) {
	leader, err := c.WaitWhole(ctx, 4*time.Minute)
	if err != nil {
		return Memory{}, err
	}
	var h *testcluster.Host
	for _, x := range c.Hosts {
		if x != leader {
			h = x
			break
		}
	}
	scrape, err := metricsScraper(c, h)
	if err != nil {
		return Memory{}, err
	}
	m := Memory{Host: h.Name, Conns: n, SampleEvery: "1s", Samples: 10}
	phase := func() (float64, int, error) {
		var rss []float64
		g := 0
		for i := 0; i < m.Samples; i++ {
			body, err := scrape(ctx)
			if err != nil {
				return 0, 0, err
			}
			m.MetricsScr++
			g = int(metricValue(body, "go_goroutines"))
			r, err := nodehaRSS(ctx, h)
			if err != nil {
				return 0, 0, err
			}
			rss = append(rss, r)
			time.Sleep(time.Second)
		}
		return quantile(rss, 0.5), g, nil
	}
	time.Sleep(10 * time.Second) // settled after the start
	if m.IdleMB, m.Goroutines[0], err = phase(); err != nil {
		return m, err
	}
	var conns []net.Conn
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	for i := 0; i < n; i++ {
		c, err := net.DialTimeout("tcp", net.JoinHostPort(h.IP, "5433"), 5*time.Second)
		if err != nil {
			return m, fmt.Errorf("connection %d: %w", i+1, err)
		}
		conns = append(conns, c)
	}
	time.Sleep(3 * time.Second)
	if body, err := scrape(ctx); err == nil {
		m.OpenSeen = metricValue(body, `nodeha_endpoint_open_connections{endpoint="rw"}`)
	}
	if m.LoadedMB, m.Goroutines[1], err = phase(); err != nil {
		return m, err
	}
	for _, c := range conns {
		c.Close()
	}
	conns = nil
	time.Sleep(5 * time.Second)
	if m.AfterMB, m.Goroutines[2], err = phase(); err != nil {
		return m, err
	}
	m.PerConnKB = (m.LoadedMB - m.IdleMB) * 1024 / float64(n)
	return m, nil
}

// nodehaRSS is VmRSS of h's nodeha process, in MiB.
func nodehaRSS(ctx context.Context, h *testcluster.Host) (float64, error) {
	pid, err := testcluster.Docker(ctx, "inspect", "-f", "{{.State.Pid}}", h.Nodeha)
	if err != nil {
		return 0, err
	}
	f, err := os.Open("/proc/" + strings.TrimSpace(pid) + "/status")
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			kb, err := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 64)
			return kb / 1024, err
		}
	}
	return 0, fmt.Errorf("no VmRSS for pid %s", pid)
}

// metricsScraper scrapes h's metrics port as Prometheus would, with a
// metrics reader's certificate of the cluster.
func metricsScraper(c *testcluster.Cluster, h *testcluster.Host) (func(context.Context) (string, error), error) {
	id, err := trust.FromToken(c.Token)
	if err != nil {
		return nil, err
	}
	crt, key, err := id.IssueMetricsReader("bench")
	if err != nil {
		return nil, err
	}
	kp, err := tls.X509KeyPair(crt, key)
	if err != nil {
		return nil, err
	}
	hc := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: id.CAPool(), Certificates: []tls.Certificate{kp}},
	}}
	url := fmt.Sprintf("https://%s:%d/metrics", h.IP, metricsPort)
	return func(ctx context.Context) (string, error) {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		resp, err := hc.Do(req)
		if err != nil {
			return "", err
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		if resp.StatusCode != 200 {
			return "", fmt.Errorf("GET %s: %d", url, resp.StatusCode)
		}
		return string(b), err
	}, nil
}

// metricValue is the value of the series written exactly as name (with
// its labels) in a scrape; 0 when absent.
func metricValue(body, name string) float64 {
	re := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(name) + ` (\S+)$`)
	if m := re.FindStringSubmatch(body); m != nil {
		v, _ := strconv.ParseFloat(m[1], 64)
		return v
	}
	return 0
}

func printMemory(w io.Writer, m Memory) {
	fmt.Fprintf(w, "nodeha on %s (not the primary), metrics scraped every %s (%d scrapes), %d samples per phase (medians):\n",
		m.Host, m.SampleEvery, m.MetricsScr, m.Samples)
	fmt.Fprintf(w, "  idle:                           %.1f MiB RSS, %d goroutines\n", m.IdleMB, m.Goroutines[0])
	fmt.Fprintf(w, "  %d client connections open:    %.1f MiB RSS, %d goroutines (endpoint reports %.0f open); %.1f KiB per connection\n",
		m.Conns, m.LoadedMB, m.Goroutines[1], m.OpenSeen, m.PerConnKB)
	fmt.Fprintf(w, "  closed again:                   %.1f MiB RSS, %d goroutines\n", m.AfterMB, m.Goroutines[2])
}
