//go:build e2e

package e2e

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nodeha/nodeha/internal/testcluster"
)

// metricsPort is what the metrics suites set NODEHA_METRICS_LISTEN to: every
// address, so HTTPS with a metrics reader's certificate.
const metricsPort = 9272

// prometheus is a real Prometheus (Debian's, from the host test image) on
// the cluster's network, scraping every host's metrics port over HTTPS
// with a certificate from `nodeha metrics-cert`, with the shipped alert
// rules loaded.
type prometheus struct {
	base  string // http://IP:9090
	certs string // the reader's certificate, key and the cluster CA
}

// startPrometheus runs Prometheus at address ip of c's network.
func startPrometheus(t *testing.T, c *testcluster.Cluster, ip string) *prometheus {
	t.Helper()
	ctx := context.Background()
	dir := t.TempDir()
	certs := filepath.Join(dir, "certs")
	// The reader's certificate, made as an operator would: on the
	// machine, with the cluster's token.
	if out, err := runBin(ctx, []string{"NODEHA_TOKEN=" + c.Token, "NODEHA_DATA_DIR=" + filepath.Join(dir, "nodeha")},
		"metrics-cert", "--out", certs); err != nil {
		t.Fatal(err)
	} else if !strings.Contains(out, "prometheus.key (0600)") {
		t.Fatalf("metrics-cert said:\n%s", out)
	}
	if fi, err := os.Stat(filepath.Join(certs, "prometheus.key")); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("prometheus.key: %v %v, want mode 0600", fi.Mode(), err)
	}
	var targets []string
	for _, h := range c.Hosts {
		targets = append(targets, fmt.Sprintf("%q", fmt.Sprintf("%s:%d", h.IP, metricsPort)))
	}
	cfg := fmt.Sprintf(`global:
  scrape_interval: 3s
  scrape_timeout: 3s
  evaluation_interval: 3s
rule_files: [/prom/alerts.yml]
scrape_configs:
  - job_name: nodeha
    scheme: https
    tls_config:
      ca_file: /prom/certs/nodeha-ca.crt
      cert_file: /prom/certs/prometheus.crt
      key_file: /prom/certs/prometheus.key
    static_configs:
      - targets: [%s]
`, strings.Join(targets, ", "))
	if err := os.WriteFile(filepath.Join(dir, "prometheus.yml"), []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	rules, err := os.ReadFile(filepath.Join(repoRoot, "monitoring", "alerts.yml"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "alerts.yml"), rules, 0o644); err != nil {
		t.Fatal(err)
	}
	name := c.Opts.Prefix + "-prometheus"
	testcluster.Docker(ctx, "rm", "-f", name)
	t.Cleanup(func() { testcluster.Docker(context.Background(), "rm", "-f", name) })
	if _, err := testcluster.Docker(ctx, "run", "-d", "--name", name, "--network", c.Network(), "--ip", ip,
		"-v", dir+":/prom:ro", "--entrypoint", "/usr/bin/prometheus", hostImage,
		"--config.file=/prom/prometheus.yml", "--storage.tsdb.path=/tmp/prometheus",
		"--web.listen-address=:9090"); err != nil {
		t.Fatal(err)
	}
	p := &prometheus{base: "http://" + ip + ":9090", certs: certs}
	eventually(t, time.Minute, func() error {
		_, err := p.query(ctx, "up")
		return err
	})
	return p
}

// sample is one series of an instant query.
type sample struct {
	Metric map[string]string
	Value  float64
}

func (p *prometheus) get(ctx context.Context, path string, v any) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, p.base+path, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var env struct {
		Status string          `json:"status"`
		Error  string          `json:"error"`
		Data   json.RawMessage `json:"data"`
	}
	if err := json.Unmarshal(b, &env); err != nil {
		return fmt.Errorf("prometheus %s: %v: %s", path, err, b)
	}
	if env.Status != "success" {
		return fmt.Errorf("prometheus %s: %s", path, env.Error)
	}
	return json.Unmarshal(env.Data, v)
}

// query runs an instant query.
func (p *prometheus) query(ctx context.Context, expr string) ([]sample, error) {
	var data struct {
		Result []struct {
			Metric map[string]string `json:"metric"`
			Value  [2]any            `json:"value"`
		} `json:"result"`
	}
	if err := p.get(ctx, "/api/v1/query?query="+url.QueryEscape(expr), &data); err != nil {
		return nil, err
	}
	var out []sample
	for _, r := range data.Result {
		s, _ := r.Value[1].(string)
		v, _ := strconv.ParseFloat(s, 64)
		out = append(out, sample{r.Metric, v})
	}
	return out, nil
}

// names is every metric name Prometheus has stored.
func (p *prometheus) names(ctx context.Context) ([]string, error) {
	var out []string
	err := p.get(ctx, "/api/v1/label/__name__/values", &out)
	return out, err
}

// alert is one of Prometheus's active alerts.
type alert struct {
	Labels map[string]string `json:"labels"`
	State  string            `json:"state"`
}

func (p *prometheus) alerts(ctx context.Context) ([]alert, error) {
	var data struct {
		Alerts []alert `json:"alerts"`
	}
	err := p.get(ctx, "/api/v1/alerts", &data)
	return data.Alerts, err
}

// instance is h's scrape target.
func instance(h *testcluster.Host) string { return fmt.Sprintf("%s:%d", h.IP, metricsPort) }

// byInstance maps a query's series by instance.
func byInstance(ss []sample) map[string]float64 {
	m := map[string]float64{}
	for _, s := range ss {
		m[s.Metric["instance"]] = s.Value
	}
	return m
}

// checkScrape: the series one scrape of each host gives, with sane values,
// as Prometheus stored them.
func checkScrape(t *testing.T, p *prometheus, c *testcluster.Cluster, leader *testcluster.Host) {
	ctx := context.Background()
	each := func(expr string, want float64) error {
		ss, err := p.query(ctx, expr)
		if err != nil {
			return err
		}
		got := byInstance(ss)
		for _, h := range c.Hosts {
			if v, ok := got[instance(h)]; !ok || v != want {
				return fmt.Errorf("%s on %s: %v (present %v), want %v; all: %v", expr, h.Name, v, ok, want, got)
			}
		}
		return nil
	}
	only := func(expr string, h *testcluster.Host) error {
		ss, err := p.query(ctx, expr)
		if err != nil {
			return err
		}
		if len(ss) != 1 || ss[0].Metric["instance"] != instance(h) {
			return fmt.Errorf("%s: %v, want one series, of %s (%s)", expr, ss, h.Name, instance(h))
		}
		return nil
	}
	eventually(t, 2*time.Minute, func() error {
		for _, e := range []struct {
			expr string
			want float64
		}{
			{`up{job="nodeha"}`, 1},
			{"nodeha_healthy", 1},
			{`sum by (instance) (nodeha_unhealthy_reason)`, 0},
			{"nodeha_etcd_has_quorum", 1},
			{"nodeha_etcd_voters", float64(len(c.Hosts))},
			{"nodeha_container_running", 1},
			{"nodeha_patroni_up", 1},
			{"nodeha_postgres_running", 1},
			{"nodeha_fenced", 0},
			{`count by (instance) (nodeha_info{scope="` + c.Opts.Scope + `"})`, 1},
			{"etcd_server_has_leader", 1},                               // the embedded member's own
			{"patroni_postgres_running", 1},                             // Patroni's own
			{`nodeha_endpoint_open_connections{endpoint="rw"} >= 0`, 0}, // present on every host
			{`nodeha_replication_lag_bytes >= 0`, 0},
		} {
			if strings.HasSuffix(e.expr, ">= 0") {
				ss, err := p.query(ctx, e.expr)
				if err != nil {
					return err
				}
				if len(ss) != len(c.Hosts) {
					return fmt.Errorf("%s: %d series, want %d", e.expr, len(ss), len(c.Hosts))
				}
				continue
			}
			if err := each(e.expr, e.want); err != nil {
				return err
			}
		}
		for _, expr := range []string{`nodeha_patroni_role{role="primary"} == 1`, "patroni_primary == 1",
			"nodeha_archive_archived_total >= 0"} {
			if err := only(expr, leader); err != nil {
				return err
			}
		}
		ss, err := p.query(ctx, "etcd_mvcc_db_total_size_in_bytes > 0")
		if err != nil || len(ss) != len(c.Hosts) {
			return fmt.Errorf("etcd_mvcc_db_total_size_in_bytes > 0: %v %v", ss, err)
		}
		ss, err = p.query(ctx, "process_resident_memory_bytes")
		if err != nil || len(ss) != len(c.Hosts) {
			return fmt.Errorf("process_resident_memory_bytes: %v %v", ss, err)
		}
		for _, s := range ss {
			t.Logf("nodeha resident memory on %s: %.1f MB", s.Metric["instance"], s.Value/1e6)
		}
		return nil
	})
}

// checkReaderIsNoDoor: the reader's certificate scrapes, and nothing else
// takes it: etcd refuses it, as does the metrics port a client without it.
func checkReaderIsNoDoor(t *testing.T, p *prometheus, h *testcluster.Host) {
	read := func(name string) []byte {
		b, err := os.ReadFile(filepath.Join(p.certs, name))
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(read("nodeha-ca.crt"))
	kp, err := tls.X509KeyPair(read("prometheus.crt"), read("prometheus.key"))
	if err != nil {
		t.Fatal(err)
	}
	get := func(cfg *tls.Config, u string) (int, error) {
		c := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: cfg}}
		resp, err := c.Get(u)
		if err != nil {
			return 0, err
		}
		defer resp.Body.Close()
		io.Copy(io.Discard, resp.Body)
		return resp.StatusCode, nil
	}
	metricsURL := "https://" + instance(h) + "/metrics"
	if code, err := get(&tls.Config{RootCAs: pool, Certificates: []tls.Certificate{kp}}, metricsURL); err != nil || code != 200 {
		t.Errorf("the reader's scrape of %s: %d %v, want 200", metricsURL, code, err)
	}
	if code, err := get(&tls.Config{RootCAs: pool}, metricsURL); err == nil {
		t.Errorf("a scrape without a certificate answered %d", code)
	}
	if code, err := get(nil, "http://"+instance(h)+"/metrics"); err == nil && code == 200 {
		t.Errorf("plain HTTP to the metrics port answered 200")
	}
	// etcd's client port (the gateway Patroni uses) with the reader's
	// certificate: refused at the handshake.
	etcdURL := fmt.Sprintf("https://%s:2379/v3/maintenance/status", h.IP)
	if code, err := get(&tls.Config{RootCAs: pool, Certificates: []tls.Certificate{kp}}, etcdURL); err == nil {
		t.Errorf("etcd answered the metrics reader's certificate: %d", code)
	} else if !strings.Contains(err.Error(), "certificate") {
		t.Logf("etcd refused the reader: %v", err)
	}
}

// metricNames are the metric names an alert rule file or dashboard uses.
var metricName = regexp.MustCompile(`\b(?:nodeha|etcd|patroni|process|go)_[a-z0-9_]+`)

func namesUsedIn(t *testing.T, files ...string) []string {
	var out []string
	for _, f := range files {
		b, err := os.ReadFile(filepath.Join(repoRoot, f))
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range metricName.FindAllString(string(b), -1) {
			if !slices.Contains(out, m) {
				out = append(out, m)
			}
		}
	}
	slices.Sort(out)
	return out
}

// firing waits until alert name fires for h's instance.
func waitFiring(t *testing.T, p *prometheus, name string, h *testcluster.Host, timeout time.Duration) {
	eventually(t, timeout, func() error {
		as, err := p.alerts(context.Background())
		if err != nil {
			return err
		}
		for _, a := range as {
			if a.Labels["alertname"] == name && a.Labels["instance"] == instance(h) && a.State == "firing" {
				return nil
			}
		}
		return fmt.Errorf("%s not firing for %s: %v", name, instance(h), as)
	})
}
