// Package metrics serves a host's Prometheus metrics on one HTTP port: one
// scrape gives the host.
//
//   - nodeha's own (nodeha_*): the health verdict and its reasons, the
//     container (running, restarts, last exit, fence), the failover
//     assist's actions, the client endpoints, PostgreSQL's archiver;
//   - the embedded etcd member's (etcd_*: leader changes, proposals, WAL
//     fsync latency, database size) and the Go runtime's and process's
//     (go_*, process_*), from the default registry etcd registers with;
//   - Patroni's own /metrics for this host (patroni_*), fetched from the
//     local REST API at scrape time.
//
// On a loopback address it is plain HTTP; on any other it is HTTPS with the
// host's certificate from the cluster CA, and every scraper must show a
// certificate of the metrics readers' CA (trust.IssueMetricsReader).
//
// Usage:
//
//	g := metrics.Gatherer(metrics.Sources{Report: node.Report, ...})
//	srv, err := metrics.Listen("127.0.0.1:9272", nil, g)
//	defer srv.Close()
package metrics

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"

	"github.com/nodeha/nodeha/health"
	"github.com/nodeha/nodeha/patroni"
)

// Archive is PostgreSQL's archiver as pg_stat_archiver reports it.
type Archive struct {
	Archived, Failed int64
	LastArchived     time.Time // zero: never
	LastFailed       time.Time // zero: never
}

// Sources are where a scrape's values come from. Each is called once per
// scrape; nil ones are left out.
type Sources struct {
	// Report is the host's health report (what GET /health serves).
	Report func(context.Context) health.Report
	// Assists counts the failover assist's lock releases by cause.
	Assists func() map[string]int64
	// Archive reads the archiver's counters; nil, nil when this host does
	// not archive (not the primary, or archive_mode off).
	Archive func(context.Context) (*Archive, error)
	// Patroni fetches Patroni's own /metrics (the text format).
	Patroni func(context.Context) ([]byte, error)
}

// scrapeTimeout bounds what a scrape waits for (Prometheus's default scrape
// timeout is 10 s).
const scrapeTimeout = 5 * time.Second

// Gatherer is every metric of the host.
func Gatherer(src Sources) prometheus.Gatherer {
	reg := prometheus.NewRegistry()
	reg.MustRegister(&collector{src: src})
	g := prometheus.Gatherers{reg, prometheus.DefaultGatherer}
	if src.Patroni != nil {
		g = append(g, patroniGatherer(src.Patroni))
	}
	return g
}

// patroniGatherer parses Patroni's metrics as they come.
func patroniGatherer(fetch func(context.Context) ([]byte, error)) prometheus.Gatherer {
	return prometheus.GathererFunc(func() ([]*dto.MetricFamily, error) {
		ctx, cancel := context.WithTimeout(context.Background(), scrapeTimeout)
		defer cancel()
		b, err := fetch(ctx)
		if err != nil {
			// nodeha_patroni_up says so; the scrape goes on without them.
			return nil, nil
		}
		var p expfmt.TextParser
		mfs, err := p.TextToMetricFamilies(bytes.NewReader(b))
		if err != nil {
			return nil, fmt.Errorf("metrics: Patroni's /metrics: %w", err)
		}
		out := make([]*dto.MetricFamily, 0, len(mfs))
		for _, mf := range mfs {
			out = append(out, mf)
		}
		return out, nil
	})
}

// Reason codes: what nodeha_unhealthy_reason labels each reason of the
// health verdict with (see supervisor.Verdict). Every code is exported,
// 0 or 1, so an alert on one never meets a missing series.
var ReasonCodes = []string{
	"etcd_no_quorum", "etcd_learner",
	"container_fenced", "container_not_running",
	"patroni_not_answering", "postgres_not_running", "patroni_role", "no_sync_standby",
	"archive_failing",
}

var (
	descInfo      = desc("nodeha_info", "The host: its member name, cluster scope, address and nodeha version (always 1).", "name", "scope", "address", "version")
	descHealthy   = desc("nodeha_healthy", "1 when the host is healthy (GET /health answers 200), 0 otherwise.")
	descReason    = desc("nodeha_unhealthy_reason", "1 for each reason the host is unhealthy, by code.", "reason")
	descQuorum    = desc("nodeha_etcd_has_quorum", "1 when the embedded etcd member knows a leader (its cluster has quorum).")
	descEtcdLead  = desc("nodeha_etcd_is_leader", "1 when the embedded etcd member is the etcd leader.")
	descLearner   = desc("nodeha_etcd_is_learner", "1 while the embedded etcd member is a learner (joining).")
	descMembers   = desc("nodeha_etcd_members", "etcd members, voters and learners, as this member sees them.")
	descVoters    = desc("nodeha_etcd_voters", "etcd voting members, as this member sees them.")
	descRunning   = desc("nodeha_container_running", "1 when the Spilo container runs.")
	descRestarts  = desc("nodeha_container_restarts_total", "Starts of the Spilo container after the first since nodeha started.")
	descNRestarts = desc("nodeha_container_nodeha_restarts_total", "Restarts nodeha made of a running Spilo container whose Patroni did not answer.")
	descLastExit  = desc("nodeha_container_last_exit_code", "The exit code of the Spilo container's last exit.")
	descStarted   = desc("nodeha_container_started_timestamp_seconds", "When the Spilo container last started (Unix time).")
	descFenced    = desc("nodeha_fenced", "1 while nodeha keeps this host's Spilo container stopped: a primary cut off from the majority.")
	descPatroniUp = desc("nodeha_patroni_up", "1 when the local Patroni REST API answers.")
	descRole      = desc("nodeha_patroni_role", "1 for this member's current role (primary, replica, ...; Patroni 3's master is primary).", "role")
	descPGRunning = desc("nodeha_postgres_running", "1 when Patroni reports PostgreSQL running (or streaming).")
	descTimeline  = desc("nodeha_postgres_timeline", "PostgreSQL's timeline.")
	descLag       = desc("nodeha_replication_lag_bytes", "This member's replication lag as the cluster sees it (0 on the primary; absent when unknown).")
	descSync      = desc("nodeha_sync_standbys", "Synchronous standbys in the cluster.")
	descAssists   = desc("nodeha_failover_assist_releases_total", "Leader locks the failover assist released, by cause.", "cause")
	descEPOpen    = desc("nodeha_endpoint_open_connections", "Client connections open through an endpoint.", "endpoint")
	descEPAcc     = desc("nodeha_endpoint_accepted_connections_total", "Client connections an endpoint accepted.", "endpoint")
	descEPRef     = desc("nodeha_endpoint_refused_connections_total", "Client connections an endpoint closed at once: no target, or the target did not answer.", "endpoint")
	descEPBytes   = desc("nodeha_endpoint_bytes_total", "Bytes an endpoint forwarded, by direction (to_server, to_client).", "endpoint", "direction")
	descEPChanges = desc("nodeha_endpoint_routing_changes_total", "Times an endpoint's target changed.", "endpoint")
	descEPClosed  = desc("nodeha_endpoint_closed_on_change_total", "Client connections closed because their endpoint's target changed.", "endpoint")
	descEPTarget  = desc("nodeha_endpoint_target", "1 for the member an endpoint sends new connections to.", "endpoint", "member")
	descArchived  = desc("nodeha_archive_archived_total", "WAL segments PostgreSQL archived (pg_stat_archiver, primary only).")
	descArchFail  = desc("nodeha_archive_failed_total", "Failed attempts to archive a WAL segment (pg_stat_archiver, primary only).")
	descArchLast  = desc("nodeha_archive_last_archived_timestamp_seconds", "When the last WAL segment was archived (Unix time; primary only).")
	descArchFLast = desc("nodeha_archive_last_failed_timestamp_seconds", "When archiving last failed (Unix time; primary only).")
	descBkLast    = desc("nodeha_backup_last_success_timestamp_seconds", "When the newest base backup in the archive finished (Unix time; with NODEHA_BACKUP_TARGET).")
	descArchFailg = desc("nodeha_archive_failing", "1 while this host's latest attempt to archive WAL failed (with NODEHA_BACKUP_TARGET).")
	descVIP       = desc("nodeha_vip_held", "1 while this host holds the floating address (NODEHA_VIP).", "address")
	descScrapeErr = desc("nodeha_scrape_error", "1 for each source this scrape could not read, by source.", "source")
)

func desc(name, help string, labels ...string) *prometheus.Desc {
	return prometheus.NewDesc(name, help, labels, nil)
}

// collector turns the sources into nodeha_* metrics at scrape time.
type collector struct{ src Sources }

// Describe: the collector is unchecked (its series depend on the host).
func (c *collector) Describe(chan<- *prometheus.Desc) {}

func (c *collector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), scrapeTimeout)
	defer cancel()
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	counter := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, v, labels...)
	}
	if c.src.Report != nil {
		collectReport(c.src.Report(ctx), gauge, counter)
	}
	if c.src.Assists != nil {
		got := c.src.Assists()
		for _, cause := range AssistCauses {
			counter(descAssists, float64(got[cause]), cause)
		}
	}
	if c.src.Archive != nil {
		a, err := c.src.Archive(ctx)
		gauge(descScrapeErr, b2f(err != nil), "archiver")
		if a != nil {
			counter(descArchived, float64(a.Archived))
			counter(descArchFail, float64(a.Failed))
			if !a.LastArchived.IsZero() {
				gauge(descArchLast, unix(a.LastArchived))
			}
			if !a.LastFailed.IsZero() {
				gauge(descArchFLast, unix(a.LastFailed))
			}
		}
	}
}

// AssistCauses are the causes nodeha_failover_assist_releases_total
// counts.
var AssistCauses = []string{"container_died", "host_unreachable"}

type emit func(d *prometheus.Desc, v float64, labels ...string)

func collectReport(r health.Report, gauge, counter emit) {
	gauge(descInfo, 1, r.Name, r.Scope, r.Address, r.Version)
	gauge(descHealthy, b2f(r.Healthy))
	active := map[string]bool{}
	for _, code := range r.ReasonCodes {
		active[code] = true
	}
	for _, code := range ReasonCodes {
		gauge(descReason, b2f(active[code]), code)
	}
	if e := r.Etcd; e != nil {
		gauge(descQuorum, b2f(e.HasQuorum))
		gauge(descEtcdLead, b2f(e.Leader))
		gauge(descLearner, b2f(e.Learner))
		gauge(descMembers, float64(len(e.Members)))
		gauge(descVoters, float64(e.Voters))
	}
	c := r.Container
	gauge(descRunning, b2f(c.Running))
	counter(descRestarts, float64(c.Restarts))
	counter(descNRestarts, float64(c.NodehaRestarts))
	if c.LastExitCode != nil {
		gauge(descLastExit, float64(*c.LastExitCode))
	}
	if !c.StartedAt.IsZero() {
		gauge(descStarted, unix(c.StartedAt))
	}
	gauge(descFenced, b2f(c.Fenced != ""))
	if p := r.Patroni; p != nil {
		gauge(descPatroniUp, b2f(p.Reachable))
		if p.Reachable {
			gauge(descRole, 1, RoleName(p.Role))
			gauge(descPGRunning, b2f(p.State == "running" || p.State == "streaming"))
			gauge(descTimeline, float64(p.Timeline))
			if p.LagBytes >= 0 {
				gauge(descLag, float64(p.LagBytes))
			}
			if p.SyncStandbys != nil {
				gauge(descSync, float64(*p.SyncStandbys))
			}
		}
	}
	if v := r.VIP; v != nil {
		gauge(descVIP, b2f(v.Held), v.Address)
	}
	if b := r.Backup; b != nil {
		gauge(descArchFailg, b2f(b.Failing))
		if !b.LastBackupAt.IsZero() {
			gauge(descBkLast, unix(b.LastBackupAt))
		}
	}
	for _, e := range r.Endpoints {
		gauge(descEPOpen, float64(e.Open), e.Name)
		counter(descEPAcc, float64(e.Accepted), e.Name)
		counter(descEPRef, float64(e.Refused), e.Name)
		counter(descEPBytes, float64(e.BytesToServer), e.Name, "to_server")
		counter(descEPBytes, float64(e.BytesToClient), e.Name, "to_client")
		counter(descEPChanges, float64(e.RoutingChanges), e.Name)
		counter(descEPClosed, float64(e.ClosedOnChange), e.Name)
		if e.Target.Member != "" {
			gauge(descEPTarget, 1, e.Name, e.Target.Member)
		}
	}
}

// RoleName is Patroni's role with both generations' names for the leader
// made one: master (Patroni 3) and primary (Patroni 4) are "primary".
func RoleName(role string) string {
	if patroni.IsLeader(role) {
		return "primary"
	}
	return role
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

func unix(t time.Time) float64 { return float64(t.UnixNano()) / 1e9 }

// Server serves GET /metrics.
type Server struct {
	srv  *http.Server
	ln   net.Listener
	errc chan error
}

// Listen serves g on addr (host:port), over TLS when tlsConfig is given.
func Listen(addr string, tlsConfig *tls.Config, g prometheus.Gatherer, log *slog.Logger) (*Server, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("metrics: %w", err)
	}
	if tlsConfig != nil {
		ln = tls.NewListener(ln, tlsConfig)
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(g, promhttp.HandlerOpts{
		// A scrape the scraper gave up on fails every family it had
		// left: a line each, so only at debug level.
		ErrorLog:      slog.NewLogLogger(log.Handler(), slog.LevelDebug),
		ErrorHandling: promhttp.ContinueOnError,
		// One scrape at a time: a scrape reads etcd, Patroni and
		// PostgreSQL; a crowd of scrapers must not multiply that.
		MaxRequestsInFlight: 1,
		Timeout:             2 * scrapeTimeout,
	}))
	s := &Server{
		srv: &http.Server{
			Handler: mux, ReadHeaderTimeout: 5 * time.Second, IdleTimeout: time.Minute,
			ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelDebug),
		},
		ln: ln, errc: make(chan error, 1),
	}
	go func() {
		if err := s.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.errc <- fmt.Errorf("metrics: %w", err)
		}
	}()
	return s, nil
}

// Addr is the address the server listens on.
func (s *Server) Addr() net.Addr { return s.ln.Addr() }

// Err reports a server that stopped on its own.
func (s *Server) Err() <-chan error { return s.errc }

// Close stops the server; open scrapes end.
func (s *Server) Close() error { return s.srv.Close() }

// ServerTLS is the TLS config of a metrics port off loopback: the host's
// certificate, and a client certificate from readers (the metrics readers'
// CA) required of every scraper.
func ServerTLS(certFile, keyFile string, readers *x509.CertPool) (*tls.Config, error) {
	kp, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, fmt.Errorf("metrics: %w", err)
	}
	return &tls.Config{
		Certificates: []tls.Certificate{kp},
		ClientAuth:   tls.RequireAndVerifyClientCert,
		ClientCAs:    readers,
		MinVersion:   tls.VersionTLS12,
	}, nil
}
