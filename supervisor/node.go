package supervisor

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"github.com/nodeha/nodeha/backup"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/moby/moby/client"

	"github.com/nodeha/nodeha/config"
	"github.com/nodeha/nodeha/embedetcd"
	"github.com/nodeha/nodeha/failover"
	"github.com/nodeha/nodeha/health"
	"github.com/nodeha/nodeha/metrics"
	"github.com/nodeha/nodeha/patroni"
	"github.com/nodeha/nodeha/spilo"
	"github.com/nodeha/nodeha/trust"
)

// Node is one host's nodeha, the one owner of its lifecycle:
//
//	n, err := New(ctx, cfg, log, notify) // preflight: checks, writes nothing
//	err = n.Start(ctx)                    // the host's files, etcd, the container, the socket
//	err = n.Wait(ctx, detach)             // until stopped, detached, left or failed
//	err = n.Close()                       // the shutdown order (see Close)
//
// Socket actions never drive the lifecycle themselves: a leave is a request
// that Wait carries out, and the actions that use etcd pass a gate that
// Close shuts before the member goes.
type Node struct {
	cfg    *config.Config
	log    *slog.Logger
	notify Notifier
	spec   *spilo.Spec
	file   []byte // the rendered postgres.yml
	dc     *client.Client
	bk     *backups // nil without a backup target

	clientTLS *tls.Config
	member    *embedetcd.Member
	runner    *spilo.Runner
	pc        *patroni.Client
	pw        *patroniWatch
	mem       *members
	hs        *health.Server
	endpoints *endpoints
	metrics   *metrics.Server
	// lastReport is the latest report built for the loops and metrics
	// (see recentReport).
	lastReport atomic.Pointer[health.Report]
	vip        *vipHolder // nil without NODEHA_VIP
	assists    assistCounts

	// Helpers that use the etcd member stop before it closes (a read on a
	// closed member panics).
	bg      context.Context
	stopBG  context.CancelFunc
	helpers sync.WaitGroup

	leaves chan leaveRequest
	// leaveFn does a leave (members.Leave; a test replaces it).
	leaveFn func(context.Context) (string, error)
	leaving atomic.Bool // a leave is under way: the watchdog is fed meanwhile
	gate    gate
	mode    spilo.CloseMode // how Close treats the container
	closed  sync.Once
	started bool
}

type leaveRequest struct{ reply chan leaveResult }

type leaveResult struct {
	msg string
	err error
}

// leaveTimeout bounds a whole leave (switchover, PostgreSQL's stop, the
// membership changes): the watchdog is fed during it, so it must end.
const leaveTimeout = 5 * time.Minute

// New checks everything that can fail on bad input or a missing part
// (the socket, postgres.yml, the Docker engine and the image, a host that
// left, a join's peers and name) and writes nothing to the host.
func New(ctx context.Context, cfg *config.Config, log *slog.Logger, notify Notifier) (*Node, error) {
	n := &Node{cfg: cfg, log: log, notify: notify, leaves: make(chan leaveRequest), mode: spilo.StopContainer}
	if err := health.CheckFree(cfg.Socket); err != nil {
		return nil, err
	}
	file, err := spilo.Render(cfg)
	if err != nil {
		return nil, err
	}
	n.file = file
	if err := checkNotLeft(cfg); err != nil {
		return nil, err
	}
	if err := checkLocalAddress(cfg.AdvertiseIP); err != nil {
		return nil, err
	}
	if v, err := newVIP(cfg); err != nil {
		return nil, err
	} else if v != nil {
		n.vip = &vipHolder{v: v}
	}
	dc, err := NewDocker(ctx, cfg)
	if err != nil {
		return nil, err
	}
	if err := spilo.EnsureImage(ctx, dc, cfg.Image, log); err != nil {
		dc.Close()
		return nil, err
	}
	n.dc = dc
	n.spec = spilo.NewSpec(cfg, file)
	if cfg.Backup != nil {
		arch, err := backup.New(cfg.Backup)
		if err != nil {
			dc.Close()
			return nil, err
		}
		n.bk = &backups{arch: arch, log: log}
	}
	if cfg.Join && !embedetcd.HasData(cfg.EtcdDir()) {
		// A join to a host of another cluster, or under a taken name, is
		// refused before this host writes anything.
		if err := preflightJoin(ctx, cfg, log); err != nil {
			dc.Close()
			return nil, err
		}
	}
	return n, nil
}

// checkLocalAddress refuses an advertise address that is not this host's:
// etcd could not listen on it, and a join under another host's address
// would pose as that host.
func checkLocalAddress(ip netip.Addr) error {
	ln, err := net.Listen("tcp", net.JoinHostPort(ip.String(), "0"))
	if err != nil {
		return config.Problem("ADVERTISE", "advertise", "%s is not an address of this host (%v)", ip, errors.Unwrap(errors.Unwrap(err)))
	}
	return ln.Close()
}

// Start writes the host's files (token, TLS, directories), joins when
// asked, and starts the etcd member, the container's runner, the helpers
// and the socket. On error, what started is closed (Close is still safe).
func (n *Node) Start(ctx context.Context) (err error) {
	cfg, log := n.cfg, n.log
	defer func() {
		if err != nil {
			n.mode = spilo.LeaveRunning // a container nodeha did not start stays as it is
			n.Close()
		}
	}()
	if cfg.ReplaceIdentity {
		// What an earlier, failed start stored binds nothing (no etcd or
		// PostgreSQL data): kept aside, replaced by the given token's.
		for _, p := range []string{cfg.TokenFile(), cfg.TLSFiles().Dir} {
			aside, err := embedetcd.MoveAside(p, "replaced")
			if err != nil {
				return err
			}
			if aside != "" {
				log.Warn("this host stored another cluster's token but never formed anything with it; moved aside (kept)", "path", aside)
			}
		}
	}
	// The token first: the CA and the passwords derive from it, and a host
	// that has once stored one keeps it (see config.ResolveToken).
	if err := trust.WriteToken(cfg.TokenFile(), cfg.Token); err != nil {
		return err
	}
	if cfg.TokenGenerated {
		log.Warn("generated a new cluster token: other hosts join with it; `nodeha token show` prints it", "file", cfg.TokenFile(), "ca", cfg.Identity.Short())
	}
	if err := spilo.PrepareHost(cfg, n.file); err != nil {
		return err
	}
	ec := embedetcd.ConfigFrom(cfg)
	f := cfg.TLSFiles()
	if n.clientTLS, err = cfg.Identity.ClientTLS(f.Cert, f.Key); err != nil {
		return err
	}
	var joined embedetcd.JoinResult
	if cfg.Join {
		if joined, err = join(ctx, cfg, &ec, n.clientTLS, log); err != nil {
			if aerr := joined.Abandon(context.WithoutCancel(ctx)); aerr != nil {
				log.Error("join: could not take back the learner this host added; remove it with `nodeha remove`", "id", fmt.Sprintf("%x", joined.Added), "err", aerr)
			}
			return err
		}
	}
	if n.member, err = embedetcd.Start(ec, log); err != nil {
		// A learner that never starts would block every later join.
		if aerr := joined.Abandon(context.WithoutCancel(ctx)); aerr != nil {
			log.Error("join: could not take back the learner this host added; remove it with `nodeha remove`", "id", fmt.Sprintf("%x", joined.Added), "err", aerr)
		} else if joined.Added != 0 {
			log.Warn("join: this host's member failed to start; took back the learner it added", "id", fmt.Sprintf("%x", joined.Added))
		}
		return err
	}
	n.bg, n.stopBG = context.WithCancel(ctx)
	n.runner = spilo.NewRunner(n.dc, n.spec, log)
	n.runner.BeforeStart = func() error {
		if err := spilo.EnsureDirs(cfg); err != nil {
			return err
		}
		return spilo.RemoveStaleSockets(cfg)
	}
	if cfg.FailoverAssist {
		n.startFailoverAssist()
	}
	n.runner.Start(context.WithoutCancel(ctx))
	n.started = true

	n.pc = patroni.New(patroni.URL(config.HostPort("127.0.0.1", cfg.RestAPIPort), n.clientTLS), n.clientTLS)
	// A running container whose Patroni is gone is a dead node that only
	// nodeha notices. Watched also with the check off, for the report.
	n.pw = &patroniWatch{
		ping: n.pc.Ping, runner: n.runner, deadAfter: cfg.PatroniDeadAfter,
		interval: 2 * time.Second, log: log, now: time.Now,
	}
	n.goHelper(n.pw.run)
	if err := n.startEndpoints(); err != nil {
		return err
	}
	if err := n.startMetrics(); err != nil {
		return err
	}
	if n.vip != nil {
		n.goHelper(func(ctx context.Context) {
			select {
			case <-n.member.Ready():
				n.holdVIP(ctx)
			case <-ctx.Done():
			}
		})
	}
	n.mem = &members{cfg: cfg, member: n.member, etcd: n.member.Client(), clientTLS: n.clientTLS, runner: n.runner, pc: n.pc, log: log}
	n.leaveFn = n.mem.Leave
	acts := health.Actions{Leave: n.Leave, Remove: n.Remove, Snapshot: n.Snapshot, Cluster: n.Cluster, Backup: n.Backup, Restore: n.Restore}
	if cfg.TestHooks {
		acts.Hang = n.runner.Hang
	}
	if n.hs, err = health.ListenGroup(cfg.Socket, cfg.SocketGID, n.Report, acts); err != nil {
		return err
	}
	for _, w := range config.AccountClashes(cfg.PostgresUID, cfg.PostgresGID, nil, nil) {
		log.Warn(w)
	}
	log.Info("nodeha running", "name", cfg.Name, "address", cfg.AdvertiseIP, "socket", cfg.Socket, "spec_hash", n.spec.Hash)

	// READY once the etcd member serves and the socket answers.
	n.goHelper(func(ctx context.Context) {
		select {
		case <-n.member.Ready():
			log.Info("etcd member ready", "status", n.member.Status())
			n.notify.Ready()
			n.mem.register(ctx)
			warnLocalArchive(ctx, n.member.Client(), cfg.Scope, log)
		case <-ctx.Done():
		}
	})
	n.goHelper(func(ctx context.Context) { statusLoop(ctx, n.notify, n.recentReport) })
	// This host's status for the cluster view, and the failover record.
	n.goHelper(func(ctx context.Context) {
		select {
		case <-n.member.Ready():
			publishLoop(ctx, n.member.Client(), cfg.Scope, cfg.Name, n.recentReport, log)
		case <-ctx.Done():
		}
	})
	n.goHelper(func(ctx context.Context) {
		select {
		case <-n.member.Ready():
			failoverRecorder(ctx, n.member.Client(), cfg.Scope, cfg.Name, log)
		case <-ctx.Done():
		}
	})
	// A learner (a host that joined) promotes itself once caught up.
	n.goHelper(func(ctx context.Context) {
		select {
		case <-n.member.Ready():
			n.member.Promote(ctx, n.clientTLS, log)
		case <-ctx.Done():
		}
	})
	// Restores run on every host, with or without a backup target here.
	n.goHelper(func(ctx context.Context) {
		select {
		case <-n.member.Ready():
			n.restoreLoop(ctx)
		case <-ctx.Done():
		}
	})
	if n.bk != nil {
		n.goHelper(func(ctx context.Context) {
			select {
			case <-n.member.Ready():
				n.backupLoop(ctx)
			case <-ctx.Done():
			}
		})
	}
	if cfg.EtcdSnapshotInterval > 0 {
		n.goHelper(func(ctx context.Context) {
			snapshotLoop(ctx, n.member, cfg.EtcdSnapshotInterval, cfg.SnapshotDir(), cfg.EtcdSnapshotRetain, log)
		})
	}
	if wd := n.notify.WatchdogInterval(); wd > 0 {
		n.goHelper(func(ctx context.Context) {
			watchdog(ctx, n.notify, func() bool { return n.alive(wd) }, wd, log)
		})
	}
	return nil
}

// alive tells the watchdog whether the node makes progress: its reconcile
// loop ran within wd, or a leave (which closes that loop on purpose, and is
// bounded by leaveTimeout) is under way.
func (n *Node) alive(wd time.Duration) bool {
	return n.leaving.Load() || n.runner.Alive(wd)
}

func (n *Node) goHelper(f func(context.Context)) {
	n.helpers.Add(1)
	go func() { defer n.helpers.Done(); f(n.bg) }()
}

// startFailoverAssist wires the dead-container lock release, the dead
// primary host watcher and the fence (NODEHA_FAILOVER_ASSIST).
func (n *Node) startFailoverAssist() {
	cfg, log, etcd := n.cfg, n.log, n.member.Client()
	n.runner.OnExit = func(ctx context.Context) {
		ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
		released, why, err := failover.ReleaseDeadLock(ctx, etcd, cfg.Scope, cfg.Name)
		switch {
		case err != nil:
			log.Warn("failover assist: could not release the leader lock of the dead container", "err", err)
		case released:
			log.Warn("failover assist: container died holding the leader lock; released it so the synchronous standby takes over now", "why", why)
			recordAssist(ctx, etcd, cfg.Scope, cfg.Name, "its Spilo container died")
			n.assists.add("container_died")
		default:
			log.Info("failover assist: container died; restarting it in place", "lock", why)
		}
	}
	w := &failover.Watcher{
		Client: etcd, Scope: cfg.Scope, Self: cfg.Name, Log: log,
		Threshold: time.Duration(cfg.LoopWait+2*cfg.RetryTimeout) * time.Second,
		Interval:  500 * time.Millisecond,
		Ports:     []int{cfg.RestAPIPort, cfg.EtcdPeerPort},
		Released: func(ctx context.Context, leader, why string) {
			recordAssist(ctx, etcd, cfg.Scope, leader, why)
			n.assists.add("host_unreachable")
		},
	}
	n.goHelper(w.Run)
	fence := &failover.Fence{
		Client: etcd, Scope: cfg.Scope, Self: cfg.Name, Peers: n.member.OtherAddresses, Log: log,
		After:    time.Duration(cfg.LoopWait+cfg.RetryTimeout) * time.Second,
		Interval: 500 * time.Millisecond,
		Ports:    []int{cfg.RestAPIPort, cfg.EtcdPeerPort},
		Stop:     n.runner.Fence, Start: n.runner.Unfence,
		// Raft's own view (etcd runs with CheckQuorum: a cut-off leader
		// steps down within an election timeout): no read that would
		// queue and flood the log while cut off.
		Quorum: func(context.Context) bool { return n.member.Status().HasQuorum },
	}
	n.goHelper(fence.Run)
}

// Wait runs until ctx is cancelled (the container is then stopped by
// Close), detach is closed (it is left running, for an upgrade of nodeha),
// this host has left the cluster, or a part fails. Cancellation is a clean
// exit. Leave requests are carried out here, one at a time.
func (n *Node) Wait(ctx context.Context, detach <-chan struct{}) error {
	log := n.log
	for {
		select {
		case <-ctx.Done():
			select {
			case <-detach: // an upgrade asked first; a stop right behind it must not undo it
				n.mode = spilo.LeaveRunning
				log.Info("detaching: PostgreSQL keeps running; the next nodeha adopts it")
			default:
				log.Info("stopping: PostgreSQL will be stopped cleanly, then etcd")
			}
			return nil
		case <-detach:
			n.mode = spilo.LeaveRunning
			log.Info("detaching: PostgreSQL keeps running; the next nodeha adopts it")
			return nil
		case req := <-n.leaves:
			msg, err := n.leave()
			req.reply <- leaveResult{msg, err}
			switch {
			case err == nil:
				n.mode = spilo.LeaveRunning // stopped already
				return nil
			case n.runner.Closed():
				// The container was stopped for the leave, which then
				// failed: this host is still a member. nodeha exits so that
				// its service manager starts it again, container included.
				n.mode = spilo.LeaveRunning
				return fmt.Errorf("leave failed after PostgreSQL was stopped; this host is still a member and nodeha exits so that its restart brings PostgreSQL back: %w", err)
			}
		case err := <-n.memberErr():
			err = fmt.Errorf("etcd: %w", err)
			log.Error("fatal", "err", err)
			return err
		case err := <-n.socketErr():
			log.Error("fatal", "err", err)
			return err
		}
	}
}

func (n *Node) memberErr() <-chan error {
	if n.member == nil {
		return nil
	}
	return n.member.Err()
}

func (n *Node) socketErr() <-chan error {
	if n.hs == nil {
		return nil
	}
	return n.hs.Err()
}

// leave runs a leave with its own deadline: the request that asked for it
// may go away (a Ctrl-C on the CLI) without stopping it halfway.
func (n *Node) leave() (string, error) {
	n.leaving.Store(true)
	defer n.leaving.Store(false)
	ctx, cancel := context.WithTimeout(context.Background(), leaveTimeout)
	defer cancel()
	return n.leaveFn(ctx)
}

// Leave is POST /leave: it asks Wait to take this host out of the cluster
// and waits for the outcome, or for ctx (the leave goes on without it).
func (n *Node) Leave(ctx context.Context) (string, error) {
	if n.leaving.Load() {
		return "", errors.New("leave: already leaving")
	}
	req := leaveRequest{reply: make(chan leaveResult, 1)}
	select {
	case n.leaves <- req:
	case <-ctx.Done():
		return "", ctx.Err()
	case <-n.gate.done():
		return "", errNodeStopping
	}
	select {
	case r := <-req.reply:
		return r.msg, r.err
	case <-ctx.Done():
		return "", fmt.Errorf("leave: no longer waiting (%w); the leave goes on: see `nodeha status` and the log", ctx.Err())
	}
}

var errNodeStopping = errors.New("nodeha is stopping")

// Remove is POST /remove.
func (n *Node) Remove(ctx context.Context, name string, force bool) (string, error) {
	if !n.gate.enter() {
		return "", errNodeStopping
	}
	defer n.gate.exit()
	// Not the request's context: a client gone halfway must not leave a
	// host half removed.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
	defer cancel()
	return n.mem.Remove(ctx, name, force)
}

// Snapshot is POST /snapshot.
func (n *Node) Snapshot(ctx context.Context) (string, error) {
	if !n.gate.enter() {
		return "", errNodeStopping
	}
	defer n.gate.exit()
	return n.member.Snapshot(ctx, n.cfg.SnapshotDir(), n.cfg.EtcdSnapshotRetain)
}

// Report is GET /health.
func (n *Node) Report(ctx context.Context) health.Report {
	if !n.gate.enter() {
		return health.Report{
			Name: n.cfg.Name, Scope: n.cfg.Scope, Address: n.cfg.AdvertiseIP.String(),
			Version: Version, Time: time.Now().UTC(), Reasons: []string{errNodeStopping.Error()},
			Container: n.runner.Status(),
		}
	}
	defer n.gate.exit()
	rep := buildReport(ctx, n.cfg, n.member, n.runner, n.pc, n.pw.notAnsweringSince)
	rep.Endpoints = n.endpoints.stats()
	rep.VIP = n.vip.status()
	if b, r := n.backupReport(ctx, rep.Time); b != nil {
		rep.Backup = b
		if r != nil {
			rep.Reasons = append(rep.Reasons, r.text)
			rep.ReasonCodes = append(rep.ReasonCodes, r.code)
			rep.Healthy = false
		}
	}
	return rep
}

// recentReport is a report at most reportMaxAge old: the status line, the
// published status and the metrics share one observation (each report
// asks Patroni twice and etcd once) instead of each making its own. GET
// /health on the socket always builds a new one.
func (n *Node) recentReport(ctx context.Context) health.Report {
	if p := n.lastReport.Load(); p != nil && time.Since(p.Time) < reportMaxAge {
		return *p
	}
	rep := n.Report(ctx)
	n.lastReport.Store(&rep)
	return rep
}

// reportMaxAge: the published status (every 2 s) refreshes it.
const reportMaxAge = 3 * time.Second

// Close stops the node; it is idempotent. Shutdown order:
//  1. the gate: socket actions and reports that use etcd end, and new
//     ones are refused;
//  2. the helpers (failover and Patroni watchers, status, watchdog,
//     snapshot and endpoint routing loops), then the client endpoints,
//     their open connections closed, and the metrics port;
//  3. the runner: stop its loop, then (unless detaching, after a leave or
//     a failed start) stop the container, so Patroni deletes its leader
//     key while etcd still has this member and replicas take over at once;
//  4. the etcd member;
//  5. the health socket, last, so status answers until the end;
//  6. the Docker client.
func (n *Node) Close() error {
	var err error
	n.closed.Do(func() {
		n.notify.Stopping()
		n.notify.Status("stopping")
		n.gate.close()
		if n.stopBG != nil {
			n.stopBG()
		}
		n.helpers.Wait()
		n.endpoints.close()
		if n.vip != nil && n.vip.held.Load() && n.mode != spilo.LeaveRunning {
			// The container stops next and Patroni hands over (detached
			// for an upgrade, PostgreSQL stays the primary: so does the
			// address).
			if err := n.vip.v.Release(); err != nil {
				n.log.Warn("floating address", "err", err)
			}
		}
		if n.metrics != nil {
			n.metrics.Close()
		}
		if n.runner != nil && n.started {
			err = n.runner.Close(n.mode)
		}
		if n.member != nil {
			n.member.Close()
		}
		if n.hs != nil {
			n.hs.Close()
		}
		if n.dc != nil {
			n.dc.Close()
		}
	})
	return err
}

// Run is New, Start, Wait and Close: the node until ctx is cancelled or
// detach is closed. cfg must have been validated.
func Run(ctx context.Context, cfg *config.Config, log *slog.Logger, detach <-chan struct{}, notify Notifier) error {
	n, err := New(ctx, cfg, log, notify)
	if err != nil {
		return err
	}
	if err := n.Start(ctx); err != nil {
		return err
	}
	err = n.Wait(ctx, detach)
	return errors.Join(err, n.Close())
}

// gate lets calls that use the etcd member in until it is closed, and
// close waits for those inside.
type gate struct {
	mu     sync.RWMutex
	closed bool
	once   sync.Once
	ch     chan struct{}
}

func (g *gate) enter() bool {
	g.mu.RLock()
	if g.closed {
		g.mu.RUnlock()
		return false
	}
	return true
}

func (g *gate) exit() { g.mu.RUnlock() }

func (g *gate) close() {
	g.mu.Lock()
	g.closed = true
	g.mu.Unlock()
	close(g.done())
}

// done is closed once the gate is.
func (g *gate) done() chan struct{} {
	g.once.Do(func() { g.ch = make(chan struct{}) })
	return g.ch
}
