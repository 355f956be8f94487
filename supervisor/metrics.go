package supervisor

import (
	"context"
	"crypto/tls"
	"fmt"
	"path/filepath"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/nodeha/nodeha/config"
	"github.com/nodeha/nodeha/metrics"
)

// startMetrics serves the host's metrics on NODEHA_METRICS_LISTEN (a port
// in use fails the start): plain HTTP on loopback, otherwise HTTPS that
// asks every scraper for a metrics reader's certificate.
func (n *Node) startMetrics() error {
	cfg := n.cfg
	if cfg.MetricsListen == "off" {
		return nil
	}
	ap, err := config.ParseListen(cfg.MetricsListen)
	if err != nil {
		return fmt.Errorf("NODEHA_METRICS_LISTEN (--metrics-listen): %w", err)
	}
	var tlsConfig *tls.Config
	if !ap.Addr().IsLoopback() {
		f := cfg.TLSFiles()
		if tlsConfig, err = metrics.ServerTLS(f.Cert, f.Key, cfg.Identity.ReadersPool()); err != nil {
			return err
		}
	}
	g := metrics.Gatherer(metrics.Sources{
		Report:  n.recentReport,
		Assists: n.assists.snapshot,
		Archive: n.archive,
		Patroni: n.pc.Metrics,
	})
	if n.metrics, err = metrics.Listen(cfg.MetricsListen, tlsConfig, g, n.log); err != nil {
		return fmt.Errorf("NODEHA_METRICS_LISTEN (--metrics-listen): %w", err)
	}
	n.log.Info("metrics served", "address", n.metrics.Addr().String(), "tls", tlsConfig != nil)
	return nil
}

// assistCounts counts the failover assist's lock releases by cause
// (metrics.AssistCauses).
type assistCounts struct {
	mu sync.Mutex
	n  map[string]int64
}

func (a *assistCounts) add(cause string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.n == nil {
		a.n = map[string]int64{}
	}
	a.n[cause]++
}

func (a *assistCounts) snapshot() map[string]int64 {
	a.mu.Lock()
	defer a.mu.Unlock()
	out := make(map[string]int64, len(a.n))
	for k, v := range a.n {
		out[k] = v
	}
	return out
}

// archive reads PostgreSQL's archiver over the local socket (trusted for
// postgres; its directory is root's and the container's alone). A host
// that does not archive (a replica, or archive_mode off) has nothing to say.
func (n *Node) archive(ctx context.Context) (*metrics.Archive, error) {
	if st := n.runner.Status(); !st.Running {
		return nil, nil
	}
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	dsn := fmt.Sprintf("host=%s port=%d user=postgres dbname=postgres connect_timeout=2 application_name=nodeha-metrics",
		filepath.Join(n.cfg.SpiloDir(), "postgresql"), n.cfg.PostgresPort)
	conn, err := pgconn.Connect(ctx, dsn)
	if err != nil {
		return nil, fmt.Errorf("archiver: %w", err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	// Text results, read here: pgconn alone, not pgx's type system, keeps
	// the binary small. Times as Unix seconds.
	rs, err := conn.Exec(ctx, `SELECT pg_is_in_recovery(), current_setting('archive_mode'),
		archived_count, failed_count,
		coalesce(extract(epoch from last_archived_time), 0), coalesce(extract(epoch from last_failed_time), 0)
		FROM pg_stat_archiver`).ReadAll()
	if err != nil {
		return nil, fmt.Errorf("archiver: %w", err)
	}
	if len(rs) != 1 || len(rs[0].Rows) != 1 || len(rs[0].Rows[0]) != 6 {
		return nil, fmt.Errorf("archiver: unexpected result")
	}
	row := rs[0].Rows[0]
	recovery, mode := string(row[0]) == "t", string(row[1])
	if mode == "off" || (recovery && mode != "always") {
		return nil, nil
	}
	var a metrics.Archive
	var last [2]float64
	for i, dst := range []any{&a.Archived, &a.Failed, &last[0], &last[1]} {
		if _, err := fmt.Sscan(string(row[2+i]), dst); err != nil {
			return nil, fmt.Errorf("archiver: column %d: %w", 2+i, err)
		}
	}
	if last[0] > 0 {
		a.LastArchived = time.Unix(0, int64(last[0]*1e9))
	}
	if last[1] > 0 {
		a.LastFailed = time.Unix(0, int64(last[1]*1e9))
	}
	return &a, nil
}
