// Package supervisor wires one host's parts together: preflight checks,
// start order, the health model served on the socket, and the shutdown
// order. Everything long-running (etcd member, container runner, health
// server) has the embed lifecycle shape: start, ready, err, close.
package supervisor

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/moby/moby/client"

	"github.com/nodeha/nodeha/config"
	"github.com/nodeha/nodeha/embedetcd"
	"github.com/nodeha/nodeha/health"
	"github.com/nodeha/nodeha/patroni"
	"github.com/nodeha/nodeha/spilo"
)

// Version is set by main.
var Version = "dev"

// NewDocker connects to the Docker engine of cfg and checks that it answers.
func NewDocker(ctx context.Context, cfg *config.Config) (*client.Client, error) {
	dc, err := client.New(client.WithHost(cfg.DockerHost), client.WithAPIVersionNegotiation())
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

// Run runs the node until ctx is cancelled (stop the container, then
// etcd) or detach is closed (leave the container running, for an upgrade of
// nodeha). cfg must have been validated. Cancellation is a clean exit.
func Run(ctx context.Context, cfg *config.Config, log *slog.Logger, detach <-chan struct{}) error {
	// Preflight: everything that can fail on bad input fails here, before
	// anything is written to disk.
	if err := health.CheckFree(cfg.Socket); err != nil {
		return err
	}
	file, err := spilo.Render(cfg)
	if err != nil {
		return err
	}
	dc, err := NewDocker(ctx, cfg)
	if err != nil {
		return err
	}
	defer dc.Close()
	if err := spilo.EnsureImage(ctx, dc, cfg.Image, log); err != nil {
		return err
	}
	spec := spilo.NewSpec(cfg, file)

	if err := spilo.PrepareHost(cfg, file); err != nil {
		return err
	}
	member, err := embedetcd.Start(embedetcd.ConfigFrom(cfg), log)
	if err != nil {
		return err
	}
	runner := spilo.NewRunner(dc, spec, log)
	runner.Start(context.WithoutCancel(ctx))

	pc := patroni.New("http://" + config.HostPort("127.0.0.1", cfg.RestAPIPort))
	report := func(ctx context.Context) health.Report {
		return buildReport(ctx, cfg, member, runner, pc)
	}
	hs, err := health.Listen(cfg.Socket, report)
	if err != nil {
		runner.Close(spilo.LeaveRunning)
		member.Close()
		return err
	}
	log.Info("nodeha running", "name", cfg.Name, "address", cfg.AdvertiseIP, "socket", cfg.Socket, "spec_hash", spec.Hash)

	go func() {
		select {
		case <-member.Ready():
			log.Info("etcd member ready", "status", member.Status())
		case <-ctx.Done():
		}
	}()

	mode := spilo.StopContainer
	var runErr error
	select {
	case <-ctx.Done():
		log.Info("stopping: PostgreSQL will be stopped cleanly, then etcd")
	case <-detach:
		mode = spilo.LeaveRunning
		log.Info("detaching: PostgreSQL keeps running; the next nodeha adopts it")
	case err := <-member.Err():
		runErr = fmt.Errorf("etcd: %w", err)
	case err := <-hs.Err():
		runErr = err
	}
	if runErr != nil {
		log.Error("fatal", "err", runErr)
	}

	// Shutdown order:
	//  1. the runner: stop its loop, then (unless detaching) stop the
	//     container, so Patroni deletes its leader key while etcd still has
	//     this member and replicas take over at once;
	//  2. the etcd member;
	//  3. the health socket, last, so status answers until the end.
	err = runner.Close(mode)
	member.Close()
	hs.Close()
	return errors.Join(runErr, err)
}

func buildReport(ctx context.Context, cfg *config.Config, member *embedetcd.Member, runner *spilo.Runner, pc *patroni.Client) health.Report {
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
	} else {
		p.Reachable = true
		p.Role, p.State, p.Timeline = st.Role, st.State, st.Timeline
		p.PostmasterStartTime = st.PostmasterStartTime
		p.Version = st.Patroni.Version
		if cl, err := pc.Cluster(ctx); err == nil {
			for _, m := range cl.Members {
				if m.Name == cfg.Name {
					p.LagBytes = int64(m.Lag)
					if patroni.IsLeader(m.Role) {
						p.LagBytes = 0
					}
				}
			}
		}
	}

	var reasons []string
	switch {
	case !es.HasQuorum:
		reasons = append(reasons, "etcd: no quorum (no leader known)")
	case es.Learner:
		reasons = append(reasons, "etcd: member is still a learner")
	}
	if !rep.Container.Running {
		reasons = append(reasons, fmt.Sprintf("container %s: %s", rep.Container.Name, rep.Container.State))
	}
	switch {
	case !p.Reachable:
		reasons = append(reasons, "patroni: REST API not answering")
	case p.State != "running":
		reasons = append(reasons, "patroni: PostgreSQL is "+p.State)
	case !patroni.IsLeader(p.Role) && !patroni.IsReplica(p.Role):
		reasons = append(reasons, "patroni: role "+p.Role)
	}
	rep.Reasons = reasons
	rep.Healthy = len(reasons) == 0
	return rep
}
