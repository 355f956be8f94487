package supervisor

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"sort"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/nodeha/nodeha/dcs"
	"github.com/nodeha/nodeha/embedetcd"
	"github.com/nodeha/nodeha/health"
	"github.com/nodeha/nodeha/patroni"
)

// statusTTL is how long a published host status outlives its host's last
// publication (every publishEvery).
const (
	publishEvery = 2 * time.Second
	statusTTL    = 10
)

// publishLoop keeps this host's status in etcd (dcs.HostStatus, on a lease),
// for the cluster view any host gives.
func publishLoop(ctx context.Context, etcd *clientv3.Client, scope, name string, report func(context.Context) health.Report, log *slog.Logger) {
	var lease clientv3.LeaseID
	tick := time.NewTicker(publishEvery)
	defer tick.Stop()
	for {
		rep := report(ctx)
		b, _ := json.Marshal(hostStatus(rep))
		pctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		if lease == 0 {
			if g, err := etcd.Grant(pctx, statusTTL); err == nil {
				lease = g.ID
			}
		} else if _, err := etcd.KeepAliveOnce(pctx, lease); err != nil {
			lease = 0 // expired (etcd was out of reach): a new one next time
		}
		if lease != 0 {
			if _, err := etcd.Put(pctx, dcs.HostStatus(scope, name), string(b), clientv3.WithLease(lease)); err != nil {
				log.Debug("publish status", "err", err)
			}
		}
		cancel()
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

func hostStatus(rep health.Report) health.HostStatus {
	s := health.HostStatus{
		Name: rep.Name, Address: rep.Address, Version: rep.Version, Time: rep.Time,
		Healthy: rep.Healthy, Reasons: rep.Reasons,
	}
	s.Container.State = rep.Container.State
	s.Container.Restarts = rep.Container.Restarts
	s.Container.NodehaRestarts = rep.Container.NodehaRestarts
	s.Container.LastExitCode = rep.Container.LastExitCode
	s.Container.Fenced = rep.Container.Fenced
	return s
}

// assistRecord is what the failover assist writes when it releases a lock.
type assistRecord struct {
	At     time.Time `json:"at"`
	Leader string    `json:"leader"`
	Why    string    `json:"why"`
}

// recordAssist notes that the assist released leader's lock, and why.
func recordAssist(ctx context.Context, etcd *clientv3.Client, scope, leader, why string) {
	b, _ := json.Marshal(assistRecord{At: time.Now().UTC(), Leader: leader, Why: why})
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	etcd.Put(ctx, dcs.Assist(scope), string(b))
}

// failoverRecorder watches the leader lock; when it passes from another
// member to this one, this host's nodeha writes the last failover: when,
// from whom, to whom, and why (the assist's reason when it released the
// old primary's lock, otherwise a handover by Patroni).
func failoverRecorder(ctx context.Context, etcd *clientv3.Client, scope, self string, log *slog.Logger) {
	last := ""
	if resp, err := etcd.Get(ctx, dcs.Leader(scope)); err == nil && len(resp.Kvs) == 1 {
		last = string(resp.Kvs[0].Value)
	}
	for ctx.Err() == nil {
		wch := etcd.Watch(ctx, dcs.Leader(scope))
		for wr := range wch {
			for _, ev := range wr.Events {
				if ev.Type != clientv3.EventTypePut {
					continue
				}
				leader := string(ev.Kv.Value)
				if leader != last && last != "" && leader == self {
					f := health.Failover{At: time.Now().UTC(), From: last, To: leader, Why: failoverWhy(ctx, etcd, scope, last)}
					b, _ := json.Marshal(f)
					pctx, cancel := context.WithTimeout(ctx, 2*time.Second)
					if _, err := etcd.Put(pctx, dcs.LastFailover(scope), string(b)); err != nil {
						log.Warn("record the failover", "err", err)
					}
					cancel()
					log.Info("this host is the new primary", "from", last, "why", f.Why)
				}
				last = leader
			}
		}
		select {
		case <-ctx.Done():
		case <-time.After(time.Second):
		}
	}
}

func failoverWhy(ctx context.Context, etcd *clientv3.Client, scope, old string) string {
	gctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	if resp, err := etcd.Get(gctx, dcs.Assist(scope)); err == nil && len(resp.Kvs) == 1 {
		var a assistRecord
		if json.Unmarshal(resp.Kvs[0].Value, &a) == nil && a.Leader == old && time.Since(a.At) < time.Minute {
			return "nodeha's failover assist released " + old + "'s lock: " + a.Why
		}
	}
	return old + " handed over or its lock expired (a switchover, a graceful stop, or Patroni's lease)"
}

// Cluster is GET /cluster.
func (n *Node) Cluster(ctx context.Context) (health.ClusterView, error) {
	if !n.gate.enter() {
		return health.ClusterView{}, errNodeStopping
	}
	defer n.gate.exit()
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	etcd, scope := n.member.Client(), n.cfg.Scope
	// Serializable reads: a view also when etcd has no quorum.
	in := clusterInput{Scope: scope, From: n.cfg.Name, Etcd: n.member.Members(), Statuses: map[string]health.HostStatus{}}
	if resp, err := etcd.Get(ctx, dcs.Leader(scope), clientv3.WithSerializable()); err == nil && len(resp.Kvs) == 1 {
		in.Leader = string(resp.Kvs[0].Value)
	}
	if resp, err := etcd.Get(ctx, dcs.HostStatuses(scope), clientv3.WithPrefix(), clientv3.WithSerializable()); err == nil {
		for _, kv := range resp.Kvs {
			var s health.HostStatus
			if json.Unmarshal(kv.Value, &s) == nil {
				in.Statuses[s.Name] = s
			}
		}
	}
	if resp, err := etcd.Get(ctx, dcs.LastFailover(scope), clientv3.WithSerializable()); err == nil && len(resp.Kvs) == 1 {
		var f health.Failover
		if json.Unmarshal(resp.Kvs[0].Value, &f) == nil {
			in.LastFailover = &f
		}
	}
	if cl, err := n.pc.Cluster(ctx); err == nil {
		in.Patroni = cl.Members
	} else if resp, err := etcd.Get(ctx, dcs.Members(scope), clientv3.WithPrefix(), clientv3.WithSerializable()); err == nil {
		// This host's Patroni does not answer: its members' keys say
		// roles and states (no lag).
		for _, kv := range resp.Kvs {
			m, err := dcs.ParseMember(kv.Value)
			if err != nil {
				continue
			}
			in.Patroni = append(in.Patroni, patroni.Member{
				Name: strings.TrimPrefix(string(kv.Key), dcs.Members(scope)), Role: m.Role, State: m.State, Host: m.Host(), Lag: -1,
			})
		}
	}
	return BuildClusterView(in), nil
}

// clusterInput is what the view is built from.
type clusterInput struct {
	Scope, From, Leader string
	Etcd                []embedetcd.MemberView
	Patroni             []patroni.Member
	Statuses            map[string]health.HostStatus // by member name
	LastFailover        *health.Failover
}

// BuildClusterView joins etcd's members, Patroni's and the statuses the
// hosts published into one view, and says whether the cluster is whole.
func BuildClusterView(in clusterInput) health.ClusterView {
	v := health.ClusterView{Scope: in.Scope, From: in.From, Leader: in.Leader, LastFailover: in.LastFailover}
	byName := map[string]*health.HostView{}
	var order []string
	host := func(name string) *health.HostView {
		if h, ok := byName[name]; ok {
			return h
		}
		h := &health.HostView{Name: name, LagBytes: -1}
		byName[name] = h
		order = append(order, name)
		return h
	}
	for _, m := range in.Patroni {
		h := host(m.Name)
		h.Address, h.Role, h.State, h.Timeline, h.LagBytes = m.Host, m.Role, m.State, m.Timeline, int64(m.Lag)
		if patroni.IsLeader(m.Role) {
			h.LagBytes = 0
		}
	}
	for name, s := range in.Statuses {
		h := host(name)
		st := s
		h.Status = &st
		if h.Address == "" {
			h.Address = s.Address
		}
	}
	for _, e := range in.Etcd {
		var h *health.HostView
		for _, name := range order {
			if byName[name].Address == e.Address {
				h = byName[name]
			}
		}
		if h == nil {
			h = host(e.Address)
			h.Address = e.Address
		}
		h.Etcd = "voter"
		if e.Learner {
			h.Etcd = "learner"
		}
		if e.Leader {
			h.Etcd += ",leader"
		}
	}
	sort.Strings(order)
	leaders := 0
	var problems []string
	for _, name := range order {
		h := byName[name]
		var why []string
		switch {
		case h.Role == "":
			why = append(why, "not a Patroni member")
		case patroni.IsLeader(h.Role):
			leaders++
		}
		if h.State != "" && h.State != "running" && h.State != "streaming" {
			why = append(why, "Patroni "+h.State)
		}
		switch {
		case h.Etcd == "":
			why = append(why, "not an etcd member")
		case strings.HasPrefix(h.Etcd, "learner"):
			why = append(why, "etcd learner, not yet a voter")
		}
		switch {
		case h.Status == nil:
			why = append(why, "no status from its nodeha (down or unreachable)")
		case !h.Status.Healthy:
			why = append(why, "unhealthy: "+strings.Join(h.Status.Reasons, "; "))
		}
		h.Healthy = len(why) == 0
		for _, w := range why {
			problems = append(problems, fmt.Sprintf("%s: %s", name, w))
		}
		v.Hosts = append(v.Hosts, *h)
	}
	switch {
	case leaders == 0:
		problems = append([]string{"no primary"}, problems...)
	case leaders > 1:
		problems = append([]string{fmt.Sprintf("%d primaries", leaders)}, problems...)
	}
	v.Problems = problems
	v.Whole = len(problems) == 0
	return v
}
