package failover

import (
	"context"
	"log/slog"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/nodeha/nodeha/dcs"
)

// Fence stops this host's PostgreSQL when the host is cut off while its
// Patroni holds the leader lock, and lets it start again once the etcd
// majority is back.
//
// Why: Patroni 3.0.2 (the seed's Spilo image, Debian bookworm) renews its
// leader key after a lost session with an unconditional put
// (patroni/patroni#2689, fixed in 3.0.3). An old primary whose Patroni
// still believes it holds the lock when its network heals overwrites the
// key of the primary elected meanwhile and promotes itself again: the new
// primary's acknowledged writes are lost and its replicas cannot follow.
// The benchmark's partition fault shows it with the seed's timings. A
// fenced container's Patroni is gone; the one started after the heal has
// no stale view and follows the new leader (pg_rewind).
//
// The host is cut off when its etcd member has no quorum and no other host
// answers at the TCP level (see Reachable). Both must hold: an etcd
// outage with the hosts reachable is what Patroni's failsafe_mode keeps the
// primary running through, and nodeha leaves that alone. Fencing after
// After (loop_wait + retry_timeout) costs no availability: by then Patroni
// has demoted the primary itself, and the majority side promotes no one
// before loop_wait + 2*retry_timeout (Watcher.Threshold) or the lease.
type Fence struct {
	Client *clientv3.Client
	Scope  string
	Self   string          // this host's member name
	Peers  func() []string // the other hosts' addresses, now
	After  time.Duration
	// Interval between checks.
	Interval time.Duration
	Log      *slog.Logger

	// Stop fences the container (stops it, keeps it stopped); Start lifts
	// the fence.
	Stop  func(reason string)
	Start func()

	// Quorum reports whether the local etcd member serves linearizable
	// reads; nil means a linearizable read of the leader key.
	Quorum func(ctx context.Context) bool
	// Answers reports whether host is up; nil means Watcher-style TCP
	// probes of Ports.
	Answers func(ctx context.Context, host string) bool
	Ports   []int

	cutSince time.Time // zero while not cut off
	fenced   bool
}

// Run checks until ctx is done.
func (f *Fence) Run(ctx context.Context) {
	tick := time.NewTicker(f.Interval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		f.Check(ctx, time.Now())
	}
}

// Check is one round at time now: Run calls it every Interval.
func (f *Fence) Check(ctx context.Context, now time.Time) {
	quorum := f.quorum(ctx)
	if f.fenced {
		if !quorum {
			return
		}
		// Our Patroni is stopped, so our lock may go where ReleaseDecision
		// allows (synchronous mode); otherwise our Patroni, started again,
		// finds its own lock and resumes, as after a restart.
		rctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		released, _, err := ReleaseDeadLock(rctx, f.Client, f.Scope, f.Self)
		cancel()
		if err != nil {
			f.Log.Warn("fence: etcd majority back but the leader lock could not be checked; staying fenced", "err", err)
			return
		}
		f.fenced, f.cutSince = false, time.Time{}
		f.Log.Warn("fence: etcd majority back; starting PostgreSQL again", "released_own_lock", released)
		f.Start()
		return
	}
	if quorum || f.anyPeerAnswers(ctx) || !f.holdsLock(ctx) {
		f.cutSince = time.Time{}
		return
	}
	if f.cutSince.IsZero() {
		f.cutSince = now
		return
	}
	if cut := now.Sub(f.cutSince); cut >= f.After {
		f.fenced = true
		reason := "primary cut off from every peer and the etcd majority for " + cut.Round(100*time.Millisecond).String()
		f.Log.Warn("fence: stopping PostgreSQL until the etcd majority is back", "reason", reason)
		f.Stop(reason)
	}
}

func (f *Fence) quorum(ctx context.Context) bool {
	if f.Quorum != nil {
		return f.Quorum(ctx)
	}
	qctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	_, err := f.Client.Get(qctx, dcs.Leader(f.Scope), clientv3.WithCountOnly())
	return err == nil
}

// holdsLock reads the local member's (possibly stale) view of the leader
// key: what this host's Patroni last saw.
func (f *Fence) holdsLock(ctx context.Context) bool {
	gctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	resp, err := f.Client.Get(gctx, dcs.Leader(f.Scope), clientv3.WithSerializable())
	return err == nil && len(resp.Kvs) == 1 && string(resp.Kvs[0].Value) == f.Self
}

func (f *Fence) anyPeerAnswers(ctx context.Context) bool {
	probe := f.Answers
	if probe == nil {
		probe = func(ctx context.Context, host string) bool { return Reachable(ctx, host, f.Ports) }
	}
	for _, p := range f.Peers() {
		if probe(ctx, p) {
			return true
		}
	}
	return false
}
