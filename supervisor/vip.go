package supervisor

import (
	"context"
	"net/netip"
	"sync/atomic"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/nodeha/nodeha/config"
	"github.com/nodeha/nodeha/dcs"
	"github.com/nodeha/nodeha/health"
	"github.com/nodeha/nodeha/vip"
)

// newVIP checks NODEHA_VIP's interface before anything is written.
func newVIP(cfg *config.Config) (*vip.VIP, error) {
	if cfg.VIP == "" {
		return nil, nil
	}
	p := netip.MustParsePrefix(cfg.VIP) // Validate checked it
	iface := cfg.VIPInterface
	if iface == "" {
		var err error
		if iface, err = vip.InterfaceOf(cfg.AdvertiseIP); err != nil {
			return nil, config.Problem("VIP_INTERFACE", "vip-interface", "not set, and %v", err)
		}
	}
	v, err := vip.New(p, iface)
	if err != nil {
		return nil, config.Problem("VIP_INTERFACE", "vip-interface", "%v", err)
	}
	return v, nil
}

// vipHolder keeps the floating address on this host exactly while it may
// take writes: the leader key in etcd is this member's, this member's
// etcd has quorum (a cut-off host lets go within an election timeout),
// and its container is not fenced. Driven by the leader key's watch and a
// 500 ms tick.
type vipHolder struct {
	v       *vip.VIP
	held    atomic.Bool
	changes atomic.Int64
	lastErr atomic.Pointer[string]
}

// wantVIP is the rule, a pure function.
func wantVIP(leaderKey, self string, quorum, fenced bool) bool {
	return leaderKey == self && quorum && !fenced
}

func (n *Node) holdVIP(ctx context.Context) {
	h := n.vip
	etcd := n.member.Client()
	// A nodeha restarted (an upgrade) finds the address where it left it:
	// kept while this host stays the primary, released otherwise.
	if present, err := h.v.Present(); err == nil {
		h.held.Store(present)
	}
	leader := ""
	read := func() {
		rctx, cancel := context.WithTimeout(ctx, time.Second)
		defer cancel()
		resp, err := etcd.Get(rctx, dcs.Leader(n.cfg.Scope), clientv3.WithSerializable())
		switch {
		case err != nil:
		case len(resp.Kvs) == 0:
			leader = ""
		default:
			leader = string(resp.Kvs[0].Value)
		}
	}
	wch := etcd.Watch(clientv3.WithRequireLeader(ctx), dcs.Leader(n.cfg.Scope))
	tick := time.NewTicker(500 * time.Millisecond)
	defer tick.Stop()
	for {
		quorum := n.member.Status().HasQuorum
		if !quorum {
			leader = "" // no lease can be trusted without quorum
		}
		h.set(ctx, wantVIP(leader, n.cfg.Name, quorum, n.runner.Status().Fenced != ""), n)
		select {
		case <-ctx.Done():
			return
		case wr, ok := <-wch:
			if !ok || wr.Err() != nil {
				wch = etcd.Watch(clientv3.WithRequireLeader(ctx), dcs.Leader(n.cfg.Scope))
			}
			read()
		case <-tick.C:
			read()
		}
	}
}

// set holds or releases the address when that changes (and retries a
// failure on the next round).
func (h *vipHolder) set(ctx context.Context, want bool, n *Node) {
	if want == h.held.Load() && h.lastErr.Load() == nil {
		return
	}
	var err error
	if want {
		err = h.v.Hold()
	} else {
		err = h.v.Release()
	}
	if err != nil {
		msg := err.Error()
		h.lastErr.Store(&msg)
		n.log.Warn("floating address", "address", h.v.Prefix, "hold", want, "err", err)
		return
	}
	h.lastErr.Store(nil)
	if want != h.held.Swap(want) {
		h.changes.Add(1)
		n.log.Info("floating address", "address", h.v.Prefix, "interface", h.v.Iface.Name, "held", want)
	}
}

// status for the health report.
func (h *vipHolder) status() *health.VIP {
	if h == nil {
		return nil
	}
	s := &health.VIP{Address: h.v.Prefix.String(), Interface: h.v.Iface.Name, Held: h.held.Load(), Changes: h.changes.Load()}
	if e := h.lastErr.Load(); e != nil {
		s.Error = *e
	}
	return s
}
