package metrics_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nodeha/nodeha/embedetcd"
	"github.com/nodeha/nodeha/endpoint"
	"github.com/nodeha/nodeha/health"
	"github.com/nodeha/nodeha/metrics"
	"github.com/nodeha/nodeha/spilo"
	"github.com/nodeha/nodeha/trust"
)

const patroniText = `# HELP patroni_version Patroni semver without periods.
# TYPE patroni_version gauge
patroni_version{scope="demo",name="pg1"} 40007
# HELP patroni_primary Value is 1 if this node is the leader, 0 otherwise.
# TYPE patroni_primary gauge
patroni_primary{scope="demo",name="pg1"} 1
`

func report() health.Report {
	exit, one := 143, 1
	return health.Report{
		Healthy: false, Reasons: []string{"patroni: synchronous mode but no synchronous standby yet"},
		ReasonCodes: []string{"no_sync_standby"},
		Name:        "pg1", Scope: "demo", Address: "10.0.0.1", Version: "v1.2.3",
		Etcd:      &embedetcd.Status{HasQuorum: true, Leader: true, Members: []string{"pg1", "pg2", "pg3"}, Voters: 3},
		Container: spilo.ContainerStatus{Running: true, Restarts: 2, LastExitCode: &exit, StartedAt: time.Unix(1700000000, 0)},
		Patroni:   &health.Patroni{Reachable: true, Role: "master", State: "running", Timeline: 3, LagBytes: 0, SyncStandbys: &one},
		Endpoints: []endpoint.Stats{{Name: "rw", Open: 4, Accepted: 10, BytesToServer: 100, BytesToClient: 2000, RoutingChanges: 1,
			Target: endpoint.Target{Member: "pg1", Addr: "10.0.0.1:5432"}}},
	}
}

func scrape(t *testing.T, c *http.Client, url string) string {
	t.Helper()
	resp, err := c.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		t.Fatalf("GET %s: %d %s", url, resp.StatusCode, b)
	}
	return string(b)
}

func TestOneScrapeGivesTheHost(t *testing.T) {
	src := metrics.Sources{
		Report:  func(context.Context) health.Report { return report() },
		Assists: func() map[string]int64 { return map[string]int64{"host_unreachable": 1} },
		Archive: func(context.Context) (*metrics.Archive, error) {
			return &metrics.Archive{Archived: 7, Failed: 1, LastArchived: time.Unix(1700000100, 0)}, nil
		},
		Patroni: func(context.Context) ([]byte, error) { return []byte(patroniText), nil },
	}
	srv, err := metrics.Listen("127.0.0.1:0", nil, metrics.Gatherer(src), slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	body := scrape(t, http.DefaultClient, "http://"+srv.Addr().String()+"/metrics")
	for _, want := range []string{
		`nodeha_info{address="10.0.0.1",name="pg1",scope="demo",version="v1.2.3"} 1`,
		"nodeha_healthy 0",
		`nodeha_unhealthy_reason{reason="no_sync_standby"} 1`,
		`nodeha_unhealthy_reason{reason="etcd_no_quorum"} 0`,
		"nodeha_etcd_has_quorum 1",
		"nodeha_etcd_voters 3",
		"nodeha_container_restarts_total 2",
		"nodeha_container_last_exit_code 143",
		"nodeha_container_started_timestamp_seconds 1.7e+09",
		"nodeha_fenced 0",
		`nodeha_patroni_role{role="primary"} 1`, // Patroni 3's master, one name
		"nodeha_postgres_timeline 3",
		"nodeha_replication_lag_bytes 0",
		`nodeha_failover_assist_releases_total{cause="host_unreachable"} 1`,
		`nodeha_failover_assist_releases_total{cause="container_died"} 0`,
		`nodeha_endpoint_open_connections{endpoint="rw"} 4`,
		`nodeha_endpoint_bytes_total{direction="to_client",endpoint="rw"} 2000`,
		`nodeha_endpoint_target{endpoint="rw",member="pg1"} 1`,
		"nodeha_archive_archived_total 7",
		"nodeha_archive_last_archived_timestamp_seconds 1.7000001e+09",
		`patroni_primary{name="pg1",scope="demo"} 1`,
		"go_goroutines ", // the default registry (etcd's metrics live there)
	} {
		if !strings.Contains(body, want+"\n") && !strings.Contains(body, want) {
			t.Errorf("scrape lacks %q", want)
		}
	}
	if strings.Contains(body, "nodeha_archive_last_failed_timestamp_seconds") {
		t.Error("a time that never happened is exported")
	}
}

func TestScrapeWithoutPatroniOrPostgres(t *testing.T) {
	rep := report()
	rep.Patroni = &health.Patroni{LagBytes: -1}
	src := metrics.Sources{
		Report:  func(context.Context) health.Report { return rep },
		Archive: func(context.Context) (*metrics.Archive, error) { return nil, errors.New("connection refused") },
		Patroni: func(context.Context) ([]byte, error) { return nil, errors.New("connection refused") },
	}
	srv, err := metrics.Listen("127.0.0.1:0", nil, metrics.Gatherer(src), slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	body := scrape(t, http.DefaultClient, "http://"+srv.Addr().String()+"/metrics")
	for _, want := range []string{"nodeha_patroni_up 0", `nodeha_scrape_error{source="archiver"} 1`} {
		if !strings.Contains(body, want) {
			t.Errorf("scrape lacks %q", want)
		}
	}
	for _, not := range []string{"patroni_primary", "nodeha_patroni_role", "nodeha_replication_lag_bytes"} {
		if strings.Contains(body, not) {
			t.Errorf("scrape has %q with Patroni down", not)
		}
	}
}

// Off loopback: HTTPS, and only a metrics reader's certificate scrapes.
// That certificate is refused by a server of the cluster CA (etcd's, the
// REST API's), so it opens nothing else.
func TestReadersOnlyOffLoopback(t *testing.T) {
	id, err := trust.FromToken(trust.GenerateToken())
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	hostCrt, hostKey, err := id.Issue("pg1", nil, trust.ServerAndClient)
	if err != nil {
		t.Fatal(err)
	}
	write := func(name string, b []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	// A server certificate for 127.0.0.1 (the test dials it).
	srvCrt, srvKey, err := id.Issue("pg1", mustAddrs("127.0.0.1"), trust.ServerAndClient)
	if err != nil {
		t.Fatal(err)
	}
	tc, err := metrics.ServerTLS(write("s.crt", srvCrt), write("s.key", srvKey), id.ReadersPool())
	if err != nil {
		t.Fatal(err)
	}
	src := metrics.Sources{Report: func(context.Context) health.Report { return report() }}
	srv, err := metrics.Listen("127.0.0.1:0", tc, metrics.Gatherer(src), slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	url := "https://" + srv.Addr().String() + "/metrics"

	rdCrt, rdKey, err := id.IssueMetricsReader("prometheus")
	if err != nil {
		t.Fatal(err)
	}
	client := func(crt, key []byte) *http.Client {
		cfg := &tls.Config{RootCAs: id.CAPool()}
		if crt != nil {
			kp, err := tls.X509KeyPair(crt, key)
			if err != nil {
				t.Fatal(err)
			}
			cfg.Certificates = []tls.Certificate{kp}
		}
		return &http.Client{Transport: &http.Transport{TLSClientConfig: cfg}, Timeout: 5 * time.Second}
	}
	if body := scrape(t, client(rdCrt, rdKey), url); !strings.Contains(body, "nodeha_healthy") {
		t.Error("a metrics reader's scrape lacks nodeha_healthy")
	}
	for name, c := range map[string]*http.Client{
		"no certificate":               client(nil, nil),
		"a host's certificate":         client(hostCrt, hostKey),
		"another cluster's reader":     client(otherReader(t)),
		"plain HTTP to the TLS server": http.DefaultClient,
	} {
		u := url
		if name == "plain HTTP to the TLS server" {
			u = "http://" + srv.Addr().String() + "/metrics"
		}
		if resp, err := c.Get(u); err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if strings.Contains(string(b), "nodeha_healthy") {
				t.Errorf("%s scraped the metrics", name)
			}
		}
	}

	// The reader's certificate against a server that trusts the cluster
	// CA, as etcd does: refused.
	etcdLike := &tls.Config{Certificates: []tls.Certificate{mustPair(t, srvCrt, srvKey)}, ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: id.CAPool()}
	ln, err := tls.Listen("tcp", "127.0.0.1:0", etcdLike)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.(*tls.Conn).Handshake()
			c.Close()
		}
	}()
	conn, err := tls.Dial("tcp", ln.Addr().String(), &tls.Config{RootCAs: id.CAPool(), Certificates: []tls.Certificate{mustPair(t, rdCrt, rdKey)}})
	if err == nil {
		_, err = conn.Read(make([]byte, 1)) // TLS 1.3: the server's verdict comes after the handshake
		conn.Close()
	}
	if err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Errorf("a server of the cluster CA took the metrics reader's certificate (err %v)", err)
	}
	c, _ := x509.ParseCertificate(mustPair(t, rdCrt, rdKey).Certificate[0])
	if life := time.Until(c.NotAfter); life > trust.MetricsReaderLifetime || life < trust.MetricsReaderLifetime-time.Hour {
		t.Errorf("reader valid for %v, want %v", life, trust.MetricsReaderLifetime)
	}
}
