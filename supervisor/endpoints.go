package supervisor

import (
	"context"

	"fmt"
	"net"
	"strconv"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/nodeha/nodeha/dcs"
	"github.com/nodeha/nodeha/endpoint"
	"github.com/nodeha/nodeha/patroni"
)

// endpoints are this host's client endpoints (NODEHA_RW_PORT,
// NODEHA_RO_PORT).
type endpoints struct {
	rw, ro           *endpoint.Route
	rwProxy, roProxy *endpoint.Proxy
	rwAddr, roAddr   string
}

// startEndpoints listens on the endpoint ports (a port in use fails the
// start) and starts the loops that route them.
func (n *Node) startEndpoints() error {
	cfg := n.cfg
	e := &endpoints{}
	n.endpoints = e
	var err error
	if cfg.RWPort != 0 {
		if e.rw, e.rwProxy, e.rwAddr, err = n.listenEndpoint("rw", cfg.RWPort, "RW_PORT", "rw-port"); err != nil {
			return err
		}
		n.goHelper(n.routeRW)
	}
	if cfg.ROPort != 0 {
		if e.ro, e.roProxy, e.roAddr, err = n.listenEndpoint("ro", cfg.ROPort, "RO_PORT", "ro-port"); err != nil {
			return err
		}
		n.goHelper(n.routeRO)
	}
	return nil
}

// listenEndpoint listens on port with a new route of that name.
func (n *Node) listenEndpoint(name string, port int, env, flag string) (*endpoint.Route, *endpoint.Proxy, string, error) {
	r := endpoint.NewRoute(name, n.log)
	addr := net.JoinHostPort(n.cfg.EndpointListen, strconv.Itoa(port))
	p, err := endpoint.Listen(addr, r)
	if err != nil {
		return nil, nil, "", fmt.Errorf("NODEHA_%s (--%s): %w", env, flag, err)
	}
	return r, p, addr, nil
}

// close stops the endpoints; their open connections are closed.
func (e *endpoints) close() {
	if e == nil {
		return
	}
	for _, p := range []*endpoint.Proxy{e.rwProxy, e.roProxy} {
		if p != nil {
			p.Close()
		}
	}
}

// stats for the health report.
func (e *endpoints) stats() []endpoint.Stats {
	if e == nil {
		return nil
	}
	var out []endpoint.Stats
	for _, r := range []struct {
		route *endpoint.Route
		addr  string
	}{{e.rw, e.rwAddr}, {e.ro, e.roAddr}} {
		if r.route != nil {
			st := r.route.Stats()
			st.Listen = r.addr
			out = append(out, st)
		}
	}
	return out
}

// routeRW points the read-write endpoint at the holder of etcd's leader
// key, at once on every change of the key (a watch) and every 500 ms. No
// quorum here (a host cut off from the majority knows no current
// primary), a fenced container, or no leader: no target, and the open
// connections are closed.
func (n *Node) routeRW(ctx context.Context) {
	select {
	case <-n.member.Ready():
	case <-ctx.Done():
		return
	}
	etcd, scope := n.member.Client(), n.cfg.Scope
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	changed := etcd.Watch(wctx, dcs.Leader(scope))
	tick := time.NewTicker(500 * time.Millisecond)
	defer tick.Stop()
	for {
		n.endpoints.rw.Set(rwTarget(ctx, etcd, scope, n.member.Status().HasQuorum, n.runner.Status().Fenced != ""))
		select {
		case <-ctx.Done():
			return
		case _, ok := <-changed:
			if !ok {
				changed = etcd.Watch(wctx, dcs.Leader(scope))
			}
		case <-tick.C:
		}
	}
}

// rwTarget is the current primary's PostgreSQL, or none.
func rwTarget(ctx context.Context, etcd *clientv3.Client, scope string, quorum, fenced bool) endpoint.Target {
	if !quorum || fenced {
		return endpoint.Target{}
	}
	ctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	resp, err := etcd.Get(ctx, dcs.Leader(scope), clientv3.WithSerializable())
	if err != nil || len(resp.Kvs) == 0 {
		return endpoint.Target{}
	}
	leader := string(resp.Kvs[0].Value)
	m, err := etcd.Get(ctx, dcs.Member(scope, leader), clientv3.WithSerializable())
	if err != nil || len(m.Kvs) == 0 {
		return endpoint.Target{}
	}
	v, err := dcs.ParseMember(m.Kvs[0].Value)
	if err != nil || v.PostgresAddr() == "" {
		return endpoint.Target{}
	}
	return endpoint.Target{Addr: v.PostgresAddr(), Member: leader}
}

// routeRO points the read-only endpoint at a healthy replica (this host's
// own when it is one), from Patroni's view of the cluster every second.
func (n *Node) routeRO(ctx context.Context) {
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		cl, err := n.pc.Cluster(cctx)
		cancel()
		switch {
		case err == nil:
			n.endpoints.ro.Set(roTarget(cl.Members, n.cfg.Name, int64(n.cfg.ROMaxLagBytes)))
		case n.endpoints.rw != nil:
			// This host's Patroni does not answer: the primary, as the
			// read-write endpoint knows it, is still a right answer.
			n.endpoints.ro.Set(n.endpoints.rw.Target())
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// roTarget picks a replica streaming within maxLag (this host first), else
// the primary.
func roTarget(members []patroni.Member, self string, maxLag int64) endpoint.Target {
	var best, leader *patroni.Member
	for i := range members {
		m := &members[i]
		addr := memberAddr(*m)
		if addr == "" {
			continue
		}
		switch {
		case patroni.IsLeader(m.Role) && m.State == "running":
			leader = m
		case patroni.IsReplica(m.Role) && (m.State == "streaming" || m.State == "running") && m.Lag >= 0 && int64(m.Lag) <= maxLag:
			if best == nil || m.Name == self {
				best = m
			}
		}
	}
	switch {
	case best != nil:
		return endpoint.Target{Addr: memberAddr(*best), Member: best.Name}
	case leader != nil:
		return endpoint.Target{Addr: memberAddr(*leader), Member: leader.Name}
	}
	return endpoint.Target{}
}

func memberAddr(m patroni.Member) string {
	if m.Host == "" || m.Port == 0 {
		return ""
	}
	return net.JoinHostPort(m.Host, strconv.Itoa(m.Port))
}
