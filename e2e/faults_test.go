//go:build e2e

package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nodeha/nodeha/cli"
	"github.com/nodeha/nodeha/internal/faults"
	"github.com/nodeha/nodeha/internal/testcluster"
)

// TestFaults runs one trial of every fault of the benchmark against a
// cluster with nodeha's defaults and synchronous replication, and asserts
// correctness, not timing: writes resume, the cluster converges to one
// leader with every replica streaming, no acknowledged row is lost, and no
// two hosts accept writes at the same moment.
func TestFaults(t *testing.T) {
	ctx := context.Background()
	c, err := testcluster.New(clusterOpts("f", 9, testcluster.Options{
		Hosts: 3, BaseDir: t.TempDir(),
		Scope: "e2e-faults", Env: []string{"NODEHA_SYNCHRONOUS=true", fmt.Sprintf("NODEHA_METRICS_LISTEN=:%d", metricsPort)},
	}))
	if err != nil {
		t.Fatal(err)
	}
	c.Down(ctx, false)
	t.Cleanup(func() {
		if t.Failed() {
			for _, h := range c.Hosts {
				t.Logf("=== nodeha log of %s ===\n%s", h.Name, tail(h.Logs(ctx), 40))
				out := h.SpiloLogs(ctx, 40)
				t.Logf("=== spilo log of %s ===\n%s", h.Name, out)
			}
		}
		c.Down(ctx, false)
	})
	if err := c.Up(ctx); err != nil {
		t.Fatal(err)
	}
	leader := mustWhole(t, c, 4*time.Minute)
	if got := mustPsql(t, leader, "show synchronous_standby_names"); got == "" {
		t.Errorf("synchronous_standby_names is empty with NODEHA_SYNCHRONOUS=true")
	}
	const pw = "faults-pw"
	if err := faults.Setup(ctx, leader, pw); err != nil {
		t.Fatal(err)
	}
	ca, err := c.CAFile()
	if err != nil {
		t.Fatal(err)
	}
	multiHost := faults.MultiHost(cli.DSN(strings.Split(c.Peers(), ","), 5432, "bench", "postgres", false, ca))
	// A client that knows one host only, through its read-write endpoint
	// (no target_session_attrs).
	oneEndpoint := faults.OneEndpoint(c, func(ip string) string {
		return cli.EndpointDSN([]string{ip}, 5433, "bench", "postgres", ca)
	})

	// A real Prometheus scrapes the three hosts through the faults.
	prom := startPrometheus(t, c, addr(9, 90))
	t.Run("Metrics", func(t *testing.T) {
		checkScrape(t, prom, c, leader)
		checkReaderIsNoDoor(t, prom, leader)
	})

	// Each fault twice: the writer with the multi-host string, then
	// through one host's read-write endpoint.
	for i, f := range faults.All {
		for _, via := range []struct {
			name   string
			client faults.Client
			trial  int
		}{{f.Name, multiHost, i + 1}, {f.Name + "-via-endpoint", oneEndpoint, 100 + i + 1}} {
			t.Run(via.name, func(t *testing.T) {
				r := faults.Run(ctx, c, f, via.client, pw, "e2e", via.trial)
				t.Logf("%s: write pause %dms, resumed after %dms, whole after %dms, %d writes acknowledged",
					via.name, r.PauseMS, r.ResumeMS, r.WholeMS, r.Acked)
				if r.Error != "" {
					t.Fatal(r.Error)
				}
				if r.Lost != 0 {
					t.Errorf("%d of %d acknowledged rows lost", r.Lost, r.Acked)
				}
				if len(r.Overlaps) != 0 {
					t.Errorf("two hosts accepted writes at the same moment: %+v", r.Overlaps)
				}
				if r.Acked == 0 || r.WholeMS == 0 {
					t.Errorf("trial did not run: %+v", r)
				}
			})
		}
	}

	// A primary cut off from the others stops accepting writes: nodeha
	// fences it (stops its container) once it has been cut off for
	// loop_wait + retry_timeout, and after the heal it comes back as a
	// replica of the primary elected meanwhile, never as a second primary.
	t.Run("PartitionedPrimaryIsFenced", func(t *testing.T) {
		old := mustWhole(t, c, 3*time.Minute)
		if _, err := testcluster.Docker(ctx, "network", "disconnect", "-f", c.Network(), old.Holder); err != nil {
			t.Fatal(err)
		}
		healed := false
		heal := func() {
			if !healed {
				healed = true
				if _, err := testcluster.Docker(ctx, "network", "connect", "--ip", old.IP, c.Network(), old.Holder); err != nil {
					t.Fatal(err)
				}
			}
		}
		defer heal()
		eventually(t, 90*time.Second, func() error {
			rep, err := old.Health(ctx)
			if err != nil {
				return err
			}
			if rep.Container.Fenced == "" || rep.Container.Running {
				return fmt.Errorf("cut-off old primary %s: container %+v, want fenced and stopped", old.Name, rep.Container)
			}
			return nil
		})
		if out, err := old.Psql(ctx, "select 1"); err == nil {
			t.Fatalf("the fenced old primary %s still answers queries: %q", old.Name, out)
		}
		// The others elect a new primary.
		var newLeader *testcluster.Host
		eventually(t, 90*time.Second, func() error {
			st := c.Observe(ctx)
			for _, h := range st.Leaders {
				if h != old {
					newLeader = h
					return nil
				}
			}
			return fmt.Errorf("no new primary yet: leaders %v", st.Leaders)
		})
		heal()
		leader, err := c.WaitWhole(ctx, 3*time.Minute)
		if err != nil {
			t.Fatal(err)
		}
		if leader != newLeader {
			t.Fatalf("after the heal the primary is %s, want %s (elected while %s was cut off)", leader.Name, newLeader.Name, old.Name)
		}
		if rep, err := old.Health(ctx); err != nil || rep.Container.Fenced != "" || !rep.Container.Running {
			t.Fatalf("healed host %s: container %+v (%v), want running and not fenced", old.Name, rep.Container, err)
		}
	})

	// nodeha status --cluster during a failover (a dead primary host) and
	// after it: not whole while the host is down, naming it; then whole,
	// matching patronictl list and etcd's members on every host, with the
	// failover recorded.
	t.Run("StatusClusterThroughAFailover", func(t *testing.T) {
		old := mustWhole(t, c, 3*time.Minute)
		if _, err := testcluster.Docker(ctx, "kill", old.Holder, old.Nodeha, old.Spilo); err != nil {
			t.Fatal(err)
		}
		// The host comes back whatever happens here: later checks need it.
		restarted := false
		restart := func() {
			if restarted {
				return
			}
			restarted = true
			if _, err := testcluster.Docker(ctx, "start", old.Holder); err != nil {
				t.Fatal(err)
			}
			if err := old.StartNodeha(ctx); err != nil {
				t.Fatal(err)
			}
		}
		defer restart()
		var survivor *testcluster.Host
		for _, h := range c.Hosts {
			if h != old {
				survivor = h
				break
			}
		}
		eventually(t, 90*time.Second, func() error {
			v := clusterView(t, c, survivor, false)
			// The dead host is named by its Patroni member name or, once
			// its member key has expired, by its etcd member (its address).
			problems := strings.Join(v.Problems, "; ")
			if v.Whole || v.Leader == "" || v.Leader == old.Name || !(strings.Contains(problems, old.Name) || strings.Contains(problems, old.IP)) {
				return fmt.Errorf("during the failover, from %s: whole %v, leader %q, problems %v; want not whole, a new leader, %s named", survivor.Name, v.Whole, v.Leader, v.Problems, old.Name)
			}
			return nil
		})
		restart()
		leader := mustWhole(t, c, 3*time.Minute)
		eventually(t, time.Minute, func() error {
			for _, h := range c.Hosts {
				if v := clusterView(t, c, h, false); !v.Whole {
					return fmt.Errorf("%s: not whole yet: %v", h.Name, v.Problems)
				}
			}
			return nil
		})
		for _, h := range c.Hosts {
			v := clusterView(t, c, h, true)
			checkClusterView(t, c, h, v, leader)
			if f := v.LastFailover; f == nil || f.From != old.Name || f.To != leader.Name {
				t.Errorf("%s: last failover %+v, want from %s to %s", h.Name, f, old.Name, leader.Name)
			}
		}
	})

	// After the faults: every series the shipped alert rules and dashboard
	// use has been scraped, the assist's actions were counted, and the
	// host-down alert fires for a killed host.
	t.Run("MetricsAfterFaults", func(t *testing.T) {
		ctx := context.Background()
		have, err := prom.names(ctx)
		if err != nil {
			t.Fatal(err)
		}
		// Only scraped when archiving fails, which it never does here, or
		// with a backup target, which this cluster has not (TestBackup
		// checks it).
		conditional := []string{"nodeha_archive_last_failed_timestamp_seconds", "nodeha_backup_last_success_timestamp_seconds"}
		for _, n := range namesUsedIn(t, "monitoring/alerts.yml", "monitoring/grafana-dashboard.json") {
			// A histogram is stored as its _bucket, _sum and _count.
			if !slices.Contains(have, n) && !slices.Contains(have, n+"_bucket") && !slices.Contains(conditional, n) {
				t.Errorf("%s (used by the alert rules or the dashboard) was never scraped", n)
			}
		}
		// Every query of the dashboard runs on the real Prometheus, and
		// all but the archive-failure ones find data.
		var dash struct {
			Panels []struct {
				Title   string
				Targets []struct{ Expr string }
			}
		}
		b, err := os.ReadFile(filepath.Join(repoRoot, "monitoring", "grafana-dashboard.json"))
		if err != nil || json.Unmarshal(b, &dash) != nil {
			t.Fatalf("grafana-dashboard.json: %v", err)
		}
		vars := strings.NewReplacer("$job", "nodeha", "$scope", c.Opts.Scope, "$__rate_interval", "1m")
		queries, empty := 0, 0
		for _, p := range dash.Panels {
			for _, q := range p.Targets {
				queries++
				ss, err := prom.query(ctx, vars.Replace(q.Expr))
				if err != nil {
					t.Errorf("dashboard panel %q: %s: %v", p.Title, q.Expr, err)
				} else if len(ss) == 0 && !strings.Contains(q.Expr, "archive_failed") && !strings.Contains(q.Expr, "refused") {
					empty++
					t.Logf("dashboard panel %q: no data for %s", p.Title, q.Expr)
				}
			}
		}
		t.Logf("dashboard: %d queries, %d without data", queries, empty)
		ss, err := prom.query(ctx, "sum(max_over_time(nodeha_failover_assist_releases_total[1h]))")
		if err != nil || len(ss) != 1 || ss[0].Value < 1 {
			t.Errorf("failover assist releases counted across the faults: %v %v, want at least 1", ss, err)
		}
		leader := mustWhole(t, c, 3*time.Minute)
		var victim *testcluster.Host
		for _, h := range c.Hosts {
			if h != leader {
				victim = h
			}
		}
		if err := victim.Kill(ctx); err != nil {
			t.Fatal(err)
		}
		waitFiring(t, prom, "NodehaHostDown", victim, 3*time.Minute)
		if err := victim.Start(ctx); err != nil {
			t.Fatal(err)
		}
		mustWhole(t, c, 3*time.Minute)
	})
}
