// Package failover owns nodeha's help to Patroni when a primary is gone:
// releasing the leader lock as soon as that provably loses no acknowledged
// commit, instead of waiting for the lock's lease to expire.
// ReleaseDecision is the rule (and its argument); everything here obeys it.
//
// Two cases, both off with NODEHA_FAILOVER_ASSIST=false:
//
//   - This host's Spilo container died while its Patroni held the leader
//     lock. Every process of the container is dead, so PostgreSQL there
//     accepts no writes. In synchronous mode the lock is deleted before the
//     container is restarted, and the synchronous standby is promoted at
//     once; in asynchronous mode the container restarts in place and its
//     Patroni resumes with the lock, as in the recipe.
//   - The primary's host stopped answering at the TCP level on both its
//     Patroni REST port and its etcd peer port for Threshold
//     (loop_wait + 2*retry_timeout: the bound Patroni's own rule puts on
//     ttl). A primary cut off from the etcd majority demotes itself within
//     loop_wait + retry_timeout, so by then it no longer accepts writes. In
//     synchronous mode the lock is deleted from the majority side (guarded
//     by the state decided on) and its lease revoked; in asynchronous mode
//     the lease decides. A host that is up but whose Patroni hangs still
//     answers TCP, and is left to the lease.
package failover

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"syscall"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/nodeha/nodeha/dcs"
)

// Watcher revokes the lease of a primary whose host is gone.
type Watcher struct {
	Client    *clientv3.Client
	Scope     string
	Self      string        // this host's member name: never judged by itself
	Threshold time.Duration // unreachable this long before the lock goes
	Interval  time.Duration
	Ports     []int // TCP ports that prove the host is up (REST API, etcd peer)
	Log       *slog.Logger
	// Answers reports whether host is up; nil means a TCP probe of Ports.
	Answers func(ctx context.Context, host string) bool
	// Released, when set, is told of every lock the watcher released.
	Released func(ctx context.Context, leader, why string)

	mu   sync.Mutex
	seen map[string]time.Time // leader host -> last time it answered
	kept string               // the leader last left to its lease (logged once)
}

// Run watches until ctx is done.
func (w *Watcher) Run(ctx context.Context) {
	w.seen = map[string]time.Time{}
	tick := time.NewTicker(w.Interval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		w.check(ctx)
	}
}

func (w *Watcher) check(ctx context.Context) {
	// A local (serializable) read: it answers during an etcd election,
	// and the decision is re-checked by etcd when revoking (needs quorum).
	gctx, cancel := context.WithTimeout(ctx, time.Second)
	resp, err := w.Client.Get(gctx, dcs.Leader(w.Scope), clientv3.WithSerializable())
	cancel()
	if err != nil || len(resp.Kvs) == 0 {
		return
	}
	kv := resp.Kvs[0]
	leader := string(kv.Value)
	if leader == w.Self || kv.Lease == 0 {
		return
	}
	host, err := w.memberHost(ctx, leader)
	if err != nil {
		return
	}
	now := time.Now()
	w.mu.Lock()
	last, known := w.seen[host]
	w.mu.Unlock()
	probe := w.Answers
	if probe == nil {
		probe = func(ctx context.Context, host string) bool { return Reachable(ctx, host, w.Ports) }
	}
	if !known || probe(ctx, host) {
		w.kept = ""
		w.mu.Lock()
		w.seen[host] = now
		w.mu.Unlock()
		return
	}
	if now.Sub(last) < w.Threshold {
		return
	}
	rctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	// A linearizable read: only the majority side decides.
	r, err := ReadReplication(rctx, w.Client, w.Scope)
	if err != nil {
		return
	}
	if ok, why := ReleaseDecision(r, leader); !ok || r.Lease != clientv3.LeaseID(kv.Lease) {
		if w.kept != leader {
			w.Log.Warn("failover assist: primary host unreachable; leaving its lock to the lease", "leader", leader, "host", host, "why", why)
			w.kept = leader
		}
		return
	}
	// The lock goes only if nothing changed since the decision; the
	// lease's revocation then also removes the dead member's key.
	tr, err := w.Client.Txn(rctx).If(r.guard(w.Scope)...).Then(clientv3.OpDelete(dcs.Leader(w.Scope))).Commit()
	if err != nil || !tr.Succeeded {
		w.Log.Warn("failover assist: release the leader lock", "leader", leader, "err", err)
		return
	}
	if _, err := w.Client.Revoke(rctx, r.Lease); err != nil {
		w.Log.Warn("failover assist: revoke the dead primary's lease", "leader", leader, "err", err)
	}
	w.Log.Warn("failover assist: primary host unreachable; released its leader lock",
		"leader", leader, "host", host, "unreachable_for", now.Sub(last).Round(time.Millisecond))
	if w.Released != nil {
		w.Released(ctx, leader, fmt.Sprintf("its host %s did not answer for %v", host, now.Sub(last).Round(100*time.Millisecond)))
	}
	w.mu.Lock()
	delete(w.seen, host)
	w.mu.Unlock()
}

// memberHost reads the leader's address from its Patroni member key.
func (w *Watcher) memberHost(ctx context.Context, name string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	resp, err := w.Client.Get(ctx, dcs.Member(w.Scope, name), clientv3.WithSerializable())
	if err != nil || len(resp.Kvs) == 0 {
		return "", fmt.Errorf("failover: member %s: not found", name)
	}
	m, err := dcs.ParseMember(resp.Kvs[0].Value)
	if err != nil {
		return "", err
	}
	if m.APIHost() == "" {
		return "", fmt.Errorf("failover: member %s: api_url %q", name, m.APIURL)
	}
	return m.APIHost(), nil
}

// answers reports whether host's kernel answers TCP on any port: an
// accepted or refused connection both prove the host is up (even with its
// processes stuck or dead), so only a dead or cut-off host fails this.
// Reachable reports whether host answers on any of ports at the TCP level:
// a connection accepted or refused is a live kernel, only silence is not.
func Reachable(ctx context.Context, host string, ports []int) bool {
	ok := make(chan bool, len(ports))
	for _, p := range ports {
		go func() {
			var d net.Dialer
			cctx, cancel := context.WithTimeout(ctx, 400*time.Millisecond)
			defer cancel()
			c, err := d.DialContext(cctx, "tcp", net.JoinHostPort(host, fmt.Sprint(p)))
			if err == nil {
				c.Close()
			}
			ok <- err == nil || errors.Is(err, syscall.ECONNREFUSED)
		}()
	}
	answered := false
	for range ports {
		answered = <-ok || answered
	}
	return answered
}
