// Package supervisor wires one host's parts together: preflight checks,
// start order, the health model served on the socket, and the shutdown
// order. Everything long-running (etcd member, container runner, health
// server) has the embed lifecycle shape: start, ready, err, close.
package supervisor

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/moby/moby/client"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/nodeha/nodeha/config"
	"github.com/nodeha/nodeha/dcs"
	"github.com/nodeha/nodeha/embedetcd"
	"github.com/nodeha/nodeha/failover"
	"github.com/nodeha/nodeha/health"
	"github.com/nodeha/nodeha/patroni"
	"github.com/nodeha/nodeha/spilo"
)

// Version is set by main.
var Version = "dev"

// NewDocker connects to the Docker engine of cfg and checks that it answers.
func NewDocker(ctx context.Context, cfg *config.Config) (*client.Client, error) {
	dc, err := client.New(client.WithHost(cfg.DockerHost))
	if err != nil {
		return nil, fmt.Errorf("NODEHA_DOCKER_HOST (--docker-host): %q: %w", cfg.DockerHost, err)
	}
	pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if _, err := dc.Ping(pctx, client.PingOptions{NegotiateAPIVersion: true}); err != nil {
		dc.Close()
		return nil, fmt.Errorf("NODEHA_DOCKER_HOST (--docker-host): cannot reach the Docker engine at %s: %s", cfg.DockerHost, firstLine(err))
	}
	return dc, nil
}

func firstLine(err error) string {
	s := err.Error()
	for i, r := range s {
		if r == '\n' {
			return s[:i]
		}
	}
	return s
}

// Notifier is told about the service's state (systemd's sd_notify).
type Notifier interface {
	Ready()
	Stopping()
	Status(string)
	Watchdog()
	WatchdogInterval() time.Duration
}

func buildReport(ctx context.Context, cfg *config.Config, member *embedetcd.Member, runner *spilo.Runner, pc *patroni.Client, silentSince func() time.Time) health.Report {
	rep := health.Report{
		Name: cfg.Name, Scope: cfg.Scope, Address: cfg.AdvertiseIP.String(),
		Version: Version, Time: time.Now().UTC(),
	}
	es := member.Status()
	rep.Etcd = &es
	rep.Container = runner.Status()

	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	p := &health.Patroni{LagBytes: -1}
	rep.Patroni = p
	if st, err := pc.Status(ctx); err != nil {
		p.Error = err.Error()
		p.NotAnsweringSince = silentSince()
	} else {
		p.Reachable = true
		p.Role, p.State, p.Timeline = st.Role, st.State, st.Timeline
		p.PostmasterStartTime = st.PostmasterStartTime
		p.Version = st.Patroni.Version
		if cl, err := pc.Cluster(ctx); err == nil {
			syncStandbys := 0
			for _, m := range cl.Members {
				if m.Role == "sync_standby" {
					syncStandbys++
				}
				if m.Name == cfg.Name {
					p.LagBytes = int64(m.Lag)
					if patroni.IsLeader(m.Role) {
						p.LagBytes = 0
					}
				}
			}
			p.SyncStandbys = &syncStandbys
		}
	}

	// The cluster's mode, not this host's setting: it applies only when a
	// cluster is bootstrapped, and patronictl edit-config changes it.
	synchronous := cfg.Synchronous
	if mode, err := failover.SyncMode(ctx, member.Client(), cfg.Scope); err == nil && mode != "" {
		synchronous = mode != "off"
	}
	for _, r := range verdict(rep.Time, synchronous, es, rep.Container, p) {
		rep.Reasons = append(rep.Reasons, r.text)
		rep.ReasonCodes = append(rep.ReasonCodes, r.code)
	}
	rep.Healthy = len(rep.Reasons) == 0
	return rep
}

// Verdict lists why a node is unhealthy; none means healthy: etcd has a
// leader and this member votes, the container runs, and Patroni runs
// PostgreSQL as leader or replica (in synchronous mode, a leader needs a
// synchronous standby). now is the report's time.
func Verdict(now time.Time, synchronous bool, es embedetcd.Status, c spilo.ContainerStatus, p *health.Patroni) []string {
	var texts []string
	for _, r := range verdict(now, synchronous, es, c, p) {
		texts = append(texts, r.text)
	}
	return texts
}

// reason is one reason of the verdict: its text, and its code for metrics
// (metrics.ReasonCodes).
type reason struct{ code, text string }

func verdict(now time.Time, synchronous bool, es embedetcd.Status, c spilo.ContainerStatus, p *health.Patroni) []reason {
	var reasons []reason
	switch {
	case !es.HasQuorum:
		reasons = append(reasons, reason{"etcd_no_quorum", "etcd: no quorum (no leader known)"})
	case es.Learner:
		reasons = append(reasons, reason{"etcd_learner", "etcd: member is still a learner"})
	}
	switch {
	case c.Fenced != "":
		reasons = append(reasons, reason{"container_fenced", fmt.Sprintf("container %s fenced: %s", c.Name, c.Fenced)})
	case !c.Running:
		reasons = append(reasons, reason{"container_not_running", fmt.Sprintf("container %s: %s", c.Name, c.State)})
	}
	switch {
	case !p.Reachable:
		r := "patroni: REST API not answering"
		if !p.NotAnsweringSince.IsZero() {
			r += " for " + now.Sub(p.NotAnsweringSince).Round(time.Second).String()
		}
		if n := c.NodehaRestarts; n > 0 {
			r += fmt.Sprintf(", container restarted by nodeha %d %s", n, plural(n, "time", "times"))
		}
		reasons = append(reasons, reason{"patroni_not_answering", r})
	case p.State != "running" && p.State != "streaming": // Patroni 4 says streaming for replicas
		reasons = append(reasons, reason{"postgres_not_running", "patroni: PostgreSQL is " + p.State})
	case !patroni.IsLeader(p.Role) && !patroni.IsReplica(p.Role):
		reasons = append(reasons, reason{"patroni_role", "patroni: role " + p.Role})
	case synchronous && len(es.Members) > 1 && patroni.IsLeader(p.Role) && p.SyncStandbys != nil && *p.SyncStandbys == 0:
		// (A one-host cluster has no one to be synchronous with: Patroni
		// commits alone, and that is all it can be.)
		// Patroni promotes only a synchronous standby: without one, losing
		// this host stops writes until it is back.
		reasons = append(reasons, reason{"no_sync_standby", "patroni: synchronous mode but no synchronous standby yet"})
	}
	return reasons
}

func plural(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}

// statusLoop keeps systemd's STATUS line at the node's role and health.
func statusLoop(ctx context.Context, notify Notifier, report func(context.Context) health.Report) {
	tick := time.NewTicker(5 * time.Second)
	defer tick.Stop()
	for {
		rep := report(ctx)
		notify.Status(StatusLine(rep))
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// StatusLine is the one-line summary shown by `systemctl status`.
func StatusLine(rep health.Report) string {
	role := "no patroni"
	if p := rep.Patroni; p != nil && p.Reachable {
		role = p.Role + ", " + p.State
	}
	if rep.Healthy {
		return "healthy: " + role
	}
	return "unhealthy: " + role + ": " + strings.Join(rep.Reasons, "; ")
}

// watchdog pings systemd at half the interval, but only while alive says
// the node makes progress (its reconcile loop runs, or a leave, bounded by
// leaveTimeout, is under way): a hung loop gets the service restarted.
func watchdog(ctx context.Context, notify Notifier, alive func() bool, interval time.Duration, log *slog.Logger) {
	tick := time.NewTicker(interval / 2)
	defer tick.Stop()
	warned := false
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		if alive() {
			notify.Watchdog()
			warned = false
		} else if !warned {
			log.Error("reconcile loop is not making progress; withholding the systemd watchdog ping")
			warned = true
		}
	}
}

// join adds this host to the existing cluster of cfg.Peers (see
// embedetcd.Join) and points ec at it. A host with etcd data whose peers
// do not answer restarts from its data, as without NODEHA_JOIN: a whole
// cluster restarting at once must come back.
func join(ctx context.Context, cfg *config.Config, ec *embedetcd.Config, clientTLS *tls.Config, log *slog.Logger) (embedetcd.JoinResult, error) {
	peers := cfg.OtherPeers()
	if len(peers) == 0 {
		return embedetcd.JoinResult{}, config.Problem("PEERS", "peers", "joining needs the address of at least one host of the cluster other than this one")
	}
	jctx, cancel := context.WithTimeout(ctx, 10*time.Minute)
	defer cancel()
	res, err := embedetcd.Join(jctx, *ec, peers, clientTLS, func(ctx context.Context, cli *clientv3.Client) error {
		return checkName(ctx, cli, cfg)
	}, log)
	switch {
	case errors.Is(err, embedetcd.ErrForeignPeer), errors.Is(err, errDuplicateName), errors.Is(err, embedetcd.ErrAddressTaken):
		return res, err
	case err != nil && embedetcd.HasData(ec.Dir):
		// Only with the data still in place: a join that moved it aside
		// (this host was removed) has nothing to restart from.
		log.Warn("join: no answer from the cluster; restarting from this host's etcd data", "err", err)
		return embedetcd.JoinResult{}, nil
	case err != nil:
		return res, fmt.Errorf("join: %w", err)
	}
	if res.MovedAside != "" {
		log.Warn("join: this host's old etcd data was moved aside, not deleted", "dir", res.MovedAside)
	}
	if err := os.Remove(leftFile(cfg)); err == nil {
		log.Info("join: this host had left the cluster; it is back")
	}
	ec.InitialCluster = res.InitialCluster
	return res, nil
}

var errDuplicateName = errors.New("member name taken")

// checkName refuses a Patroni member name that another host of the
// cluster uses: two Patronis with one name would fight over one key.
func checkName(ctx context.Context, cli *clientv3.Client, cfg *config.Config) error {
	gctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	resp, err := cli.Get(gctx, dcs.Member(cfg.Scope, cfg.Name))
	if err != nil {
		return fmt.Errorf("join: read Patroni's member %s: %w", cfg.Name, err)
	}
	if len(resp.Kvs) == 0 {
		return nil
	}
	m, _ := dcs.ParseMember(resp.Kvs[0].Value)
	if m.Host() == cfg.AdvertiseIP.String() {
		return nil // this host, before
	}
	return config.Problem("NAME", "name", "%w: Patroni member %q is another host's (%s); give this host another name, or `nodeha remove %s` if that host is gone for good", errDuplicateName, cfg.Name, m.ConnURL, cfg.Name)
}

// preflightJoin checks, with a certificate that lives only in memory, that
// every peer that answers is of the token's cluster and that this host's
// name is free.
func preflightJoin(ctx context.Context, cfg *config.Config, log *slog.Logger) error {
	clientTLS, err := cfg.Identity.EphemeralClientTLS("preflight-" + cfg.Name)
	if err != nil {
		return err
	}
	endpoints, errs := embedetcd.CheckPeers(ctx, cfg.OtherPeers(), cfg.EtcdClientPort, clientTLS)
	for _, err := range errs {
		if errors.Is(err, embedetcd.ErrForeignPeer) {
			return config.Problem("PEERS", "peers", "%w", err)
		}
		log.Warn("join: peer does not answer", "err", err)
	}
	if len(endpoints) == 0 {
		return nil // Join waits for them
	}
	cli, err := dcs.NewClient(endpoints, clientTLS, 5*time.Second)
	if err != nil {
		return err
	}
	defer cli.Close()
	return checkName(ctx, cli, cfg)
}
