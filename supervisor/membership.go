package supervisor

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/nodeha/nodeha/config"
	"github.com/nodeha/nodeha/dcs"
	"github.com/nodeha/nodeha/embedetcd"
	"github.com/nodeha/nodeha/failover"
	"github.com/nodeha/nodeha/internal/atomicfile"
	"github.com/nodeha/nodeha/patroni"
	"github.com/nodeha/nodeha/spilo"
)

// leftFile marks a host that left with `nodeha leave`: `nodeha run` refuses
// to start there until `nodeha join` brings it back.
func leftFile(cfg *config.Config) string { return filepath.Join(cfg.DataDir, "left") }

// checkNotLeft refuses to run a host that left, unless it joins again.
func checkNotLeft(cfg *config.Config) error {
	b, err := os.ReadFile(leftFile(cfg))
	if err != nil || cfg.Join {
		return nil
	}
	return config.Problem("DATA_DIR", "data-dir", "this host left its cluster (%s: %s); to come back run `nodeha join --peers HOST` (or install with --join)", leftFile(cfg), strings.TrimSpace(string(b)))
}

// members does the membership operations of one running node.
type members struct {
	cfg       *config.Config
	member    *embedetcd.Member
	etcd      *clientv3.Client // in-process
	clientTLS *tls.Config
	runner    *spilo.Runner
	pc        *patroni.Client
	log       *slog.Logger
}

// register records this host's name and address (see hostKey), retrying
// until it is written or ctx is done.
func (m *members) register(ctx context.Context) {
	for {
		pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		_, err := m.etcd.Put(pctx, dcs.Host(m.cfg.Scope, m.cfg.Name), m.cfg.AdvertiseIP.String())
		cancel()
		if err == nil || ctx.Err() != nil {
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(2 * time.Second):
		}
	}
}

// peersClient is a network client to the other voting members (a member
// that removes itself must not ask itself).
func (m *members) peersClient() (*clientv3.Client, error) {
	var endpoints []string
	for _, a := range m.member.OtherAddresses() {
		endpoints = append(endpoints, "https://"+config.HostPort(a, m.cfg.EtcdClientPort))
	}
	if len(endpoints) == 0 {
		return nil, errors.New("there is no other member to ask")
	}
	return dcs.NewClient(endpoints, m.clientTLS, 5*time.Second)
}

// Leave takes this host out of the cluster: a switchover first when it is
// the primary, then its container stops, its Patroni and etcd members go,
// and nodeha exits. Nothing is deleted. Only the node's owner calls it
// (Node.Wait), one at a time.
func (m *members) Leave(ctx context.Context) (string, error) {
	fail := func(err error) (string, error) { return "", fmt.Errorf("leave: %w", err) }
	cfg := m.cfg
	st := m.member.Status()
	switch {
	case !st.HasQuorum:
		return fail(errors.New("etcd has no quorum: the cluster cannot take a membership change now"))
	case st.Voters <= 1 && !st.Learner:
		return fail(errors.New("this is the cluster's only voting member; there is nothing to leave"))
	}
	var steps []string
	if leader, _ := currentLeader(ctx, m.etcd, cfg.Scope); leader == cfg.Name {
		sctx, cancel := context.WithTimeout(ctx, 90*time.Second)
		err := m.pc.Switchover(sctx, "postgres", cfg.RestAPIPassword, cfg.Name, "")
		if err == nil {
			err = waitLeaderOther(sctx, m.etcd, cfg.Scope, cfg.Name)
		}
		cancel()
		if err != nil {
			return fail(fmt.Errorf("switchover before leaving: %w", err))
		}
		l, _ := currentLeader(ctx, m.etcd, cfg.Scope)
		steps = append(steps, "switched over to "+l)
		m.log.Info("leave: switched over", "new_primary", l)
	}
	// The container stops for good (Patroni shuts PostgreSQL down cleanly).
	if err := m.runner.Close(spilo.StopContainer); err != nil {
		return fail(err)
	}
	steps = append(steps, "stopped container "+cfg.ContainerName)
	dctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	var err error
	_, err = m.etcd.Delete(dctx, dcs.Member(cfg.Scope, cfg.Name))
	if err == nil {
		_, err = m.etcd.Delete(dctx, dcs.Host(cfg.Scope, cfg.Name))
	}
	cancel()
	if err != nil {
		return fail(fmt.Errorf("remove Patroni member %s: %w", cfg.Name, err))
	}
	steps = append(steps, "removed Patroni member "+cfg.Name)
	id := m.member.ID()
	err = markLeft(cfg, func() error {
		cli, err := m.peersClient()
		if err != nil {
			return err
		}
		defer cli.Close()
		rctx, cancel := context.WithTimeout(ctx, 20*time.Second)
		defer cancel()
		if _, err := cli.MemberRemove(rctx, id); err != nil {
			return fmt.Errorf("remove etcd member %x: %w", id, err)
		}
		return nil
	})
	if err != nil {
		return fail(err)
	}
	steps = append(steps, fmt.Sprintf("removed etcd member %x", id))
	// The backup target's credentials and key go with the host: a host
	// that left has no business with the archive (a join writes them again).
	if err := spilo.RemoveBackupSecrets(cfg); err != nil {
		m.log.Warn("leave: could not delete the backup settings", "err", err)
	} else if cfg.Backup != nil {
		steps = append(steps, "deleted the backup credentials given to the container")
	}
	m.log.Warn("left the cluster", "steps", strings.Join(steps, "; "))
	return fmt.Sprintf("%s left the cluster: %s.\nNothing was deleted: PostgreSQL's data is in %s, etcd's old data in %s.\nTo come back: nodeha join --peers HOST (the old etcd data is then moved aside).",
		cfg.Name, strings.Join(steps, "; "), cfg.PostgresDir, cfg.EtcdDir()), nil
}

// markLeft marks this host as having left (DATA_DIR/left) around remove,
// the step that takes it out of etcd. The mark goes first, so that a crash
// right after the removal still finds it; when remove fails the mark is
// taken back: a host that is still a member must start as one.
func markLeft(cfg *config.Config, remove func() error) error {
	if err := atomicfile.WriteFile(leftFile(cfg), []byte("left at "+time.Now().UTC().Format(time.RFC3339)+"\n"), 0o600); err != nil {
		return err
	}
	if err := remove(); err != nil {
		os.Remove(leftFile(cfg))
		return err
	}
	return nil
}

// Remove takes a dead host out of the cluster: its etcd member and its
// Patroni member. A host that still answers is refused unless force.
func (m *members) Remove(ctx context.Context, name string, force bool) (string, error) {
	cfg := m.cfg
	if name == "" {
		return "", errors.New("remove: give the member name of the host to remove")
	}
	if name == cfg.Name || name == cfg.AdvertiseIP.String() {
		return "", errors.New("remove: that is this host; run `nodeha leave` here instead")
	}
	gctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	addr := name
	if net.ParseIP(name) == nil {
		resp, err := m.etcd.Get(gctx, dcs.Host(cfg.Scope, name))
		if err != nil {
			return "", fmt.Errorf("remove: %w", err)
		}
		if len(resp.Kvs) == 1 {
			addr = string(resp.Kvs[0].Value)
		} else if a := patroniHost(gctx, m.etcd, cfg.Scope, name); a != "" {
			addr = a
		} else {
			return "", fmt.Errorf("remove: no host named %q in cluster %s (known: %s)", name, cfg.Scope, strings.Join(knownHosts(gctx, m.etcd, cfg.Scope), ", "))
		}
	}
	if addr == cfg.AdvertiseIP.String() {
		return "", fmt.Errorf("remove: %s is recorded at %s, this host's own address; run `nodeha leave` here to take this host out", name, addr)
	}
	if leader, _ := currentLeader(gctx, m.etcd, cfg.Scope); leader == name {
		return "", fmt.Errorf("remove: %s still holds the leader lock; wait for the failover (or switch over) first", name)
	}
	if !force {
		if failover.Reachable(ctx, addr, []int{cfg.RestAPIPort, cfg.EtcdPeerPort}) {
			return "", fmt.Errorf("remove: %s (%s) still answers: run `nodeha leave` on it, or remove it with --force", name, addr)
		}
	}
	var steps []string
	list, err := m.etcd.MemberList(gctx)
	if err != nil {
		return "", fmt.Errorf("remove: list etcd members: %w", err)
	}
	for _, mem := range list.Members {
		for _, p := range mem.PeerURLs {
			if u, err := url.Parse(p); err == nil && u.Hostname() == addr {
				if _, err := m.etcd.MemberRemove(gctx, mem.ID); err != nil {
					return "", fmt.Errorf("remove: etcd member %x (%s): %w", mem.ID, p, err)
				}
				steps = append(steps, fmt.Sprintf("removed etcd member %x (%s)", mem.ID, p))
			}
		}
	}
	for _, k := range []string{dcs.Member(cfg.Scope, name), dcs.Host(cfg.Scope, name)} {
		if resp, err := m.etcd.Delete(gctx, k); err != nil {
			return "", fmt.Errorf("remove: delete %s: %w", k, err)
		} else if resp.Deleted > 0 && strings.Contains(k, "/members/") {
			steps = append(steps, "removed Patroni member "+name)
		}
	}
	if len(steps) == 0 {
		return fmt.Sprintf("%s (%s) was not a member any more; nothing to do", name, addr), nil
	}
	m.log.Warn("removed a host", "name", name, "address", addr, "steps", strings.Join(steps, "; "))
	return fmt.Sprintf("removed %s (%s): %s", name, addr, strings.Join(steps, "; ")), nil
}

func currentLeader(ctx context.Context, kv clientv3.KV, scope string) (string, error) {
	resp, err := kv.Get(ctx, dcs.Leader(scope))
	if err != nil || len(resp.Kvs) == 0 {
		return "", err
	}
	return string(resp.Kvs[0].Value), nil
}

func waitLeaderOther(ctx context.Context, kv clientv3.KV, scope, self string) error {
	for {
		if l, err := currentLeader(ctx, kv, scope); err == nil && l != "" && l != self {
			return nil
		}
		select {
		case <-ctx.Done():
			return errors.New("no other primary took over in time")
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// patroniHost is the address in a Patroni member key's conn_url.
func patroniHost(ctx context.Context, kv clientv3.KV, scope, name string) string {
	resp, err := kv.Get(ctx, dcs.Member(scope, name))
	if err != nil || len(resp.Kvs) == 0 {
		return ""
	}
	m, _ := dcs.ParseMember(resp.Kvs[0].Value)
	return m.Host()
}

func knownHosts(ctx context.Context, kv clientv3.KV, scope string) []string {
	resp, err := kv.Get(ctx, dcs.Hosts(scope), clientv3.WithPrefix())
	if err != nil {
		return nil
	}
	var out []string
	for _, kv := range resp.Kvs {
		out = append(out, strings.TrimPrefix(string(kv.Key), dcs.Hosts(scope))+"="+string(kv.Value))
	}
	sort.Strings(out)
	return out
}

// snapshotLoop writes an etcd snapshot every interval, once the member is
// ready.
func snapshotLoop(ctx context.Context, member *embedetcd.Member, interval time.Duration, dir string, retain int, log *slog.Logger) {
	select {
	case <-member.Ready():
	case <-ctx.Done():
		return
	}
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		sctx, cancel := context.WithTimeout(ctx, time.Minute)
		path, err := member.Snapshot(sctx, dir, retain)
		cancel()
		if err != nil {
			log.Warn("etcd snapshot failed", "err", err)
			continue
		}
		log.Info("etcd snapshot written", "path", path, "retain", retain)
	}
}
