package embedetcd

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"slices"
	"strings"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/nodeha/nodeha/config"
	"github.com/nodeha/nodeha/dcs"
)

// ErrForeignPeer is returned when a peer's certificate is not from the
// cluster CA: it is a host of another cluster (or not nodeha at all).
var ErrForeignPeer = errors.New("is not a host of this cluster")

// CheckPeer dials addr (host:port of an etcd client port) with TLS and
// checks that its certificate is from the cluster CA (clientTLS.RootCAs).
// The client certificate of clientTLS is offered only once the peer's
// chain has verified (Go's TLS client verifies the server before it sends
// a certificate), and nothing is sent after the handshake.
func CheckPeer(ctx context.Context, addr string, clientTLS *tls.Config) error {
	cfg := clientTLS.Clone()
	cfg.ServerName = hostOf(addr) // the peer is named by its address: an IP SAN
	d := tls.Dialer{NetDialer: &net.Dialer{Timeout: 3 * time.Second}, Config: cfg}
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		var ua x509.UnknownAuthorityError
		var cv *tls.CertificateVerificationError
		if errors.As(err, &ua) || errors.As(err, &cv) {
			return fmt.Errorf("peer %s %w: its certificate is not from the token's CA (nothing was sent to it)", addr, ErrForeignPeer)
		}
		return fmt.Errorf("peer %s: %w", addr, err)
	}
	return c.Close()
}

// CheckPeers runs CheckPeer on every peer (an address, or host:port when
// the port differs from port) and returns the https endpoints of those
// that are of the cluster, and the errors of the others. A foreign peer
// stops the checks: its error comes first and alone, since it means wrong
// peers or a wrong token.
func CheckPeers(ctx context.Context, peers []string, port int, clientTLS *tls.Config) (endpoints []string, errs []error) {
	for _, p := range peers {
		addr := p
		if _, _, err := net.SplitHostPort(p); err != nil {
			addr = net.JoinHostPort(p, fmt.Sprint(port))
		}
		err := CheckPeer(ctx, addr, clientTLS)
		switch {
		case errors.Is(err, ErrForeignPeer):
			return nil, []error{err}
		case err != nil:
			errs = append(errs, err)
		default:
			endpoints = append(endpoints, "https://"+addr)
		}
	}
	return endpoints, errs
}

func hostOf(hostport string) string {
	h, _, err := net.SplitHostPort(hostport)
	if err != nil {
		return hostport
	}
	return h
}

// ErrAddressTaken is returned when a live member of the cluster already
// uses the joining host's advertise address.
var ErrAddressTaken = errors.New("is a live member's address")

// JoinResult says how a joining member starts.
type JoinResult struct {
	// Added is the ID of the learner this join added (0: none): if the
	// member then fails to start, Abandon takes it back, or it would block
	// every later join ("too many learner members").
	Added uint64
	// endpoints are the peers that answered, for Abandon.
	endpoints []string
	clientTLS *tls.Config

	// InitialCluster is every member, this one included (name=peerURL).
	InitialCluster string
	// MovedAside is where a stale data dir was moved, if one was.
	MovedAside string
}

// Join makes this host a member of the cluster whose client ports are
// peers (addresses, or host:port when a port differs from c.ClientPort): it checks every peer's CA before sending anything, then adds
// itself as a learner (unless the cluster already lists it, unstarted). A
// data dir left by an earlier membership is moved aside (kept), never
// deleted. The member then starts with ClusterState existing and promotes
// itself once caught up (Member.Promote).
// check, when not nil, runs on the cluster before this host is added; its
// error stops the join.
func Join(ctx context.Context, c Config, peers []string, clientTLS *tls.Config, check func(context.Context, *clientv3.Client) error, log *slog.Logger) (JoinResult, error) {
	var res JoinResult
	endpoints, errs := CheckPeers(ctx, peers, c.ClientPort, clientTLS)
	if len(errs) > 0 && errors.Is(errs[0], ErrForeignPeer) {
		return res, errs[0]
	}
	if len(endpoints) == 0 {
		return res, fmt.Errorf("embedetcd: join: no peer answers: %w", errors.Join(errs...))
	}
	cli, err := dcs.NewClient(endpoints, clientTLS, 5*time.Second)
	if err != nil {
		return res, fmt.Errorf("embedetcd: join: %w", err)
	}
	defer cli.Close()
	if check != nil {
		if err := check(ctx, cli); err != nil {
			return res, err
		}
	}

	selfURL := mustURL(c.Scheme(), c.Advertise, c.PeerPort)
	self := selfURL.String()
	for attempt := 0; ; attempt++ {
		members, err := memberList(ctx, cli)
		switch {
		case err != nil && ctx.Err() == nil && errors.Is(err, context.DeadlineExceeded) && attempt < 30:
			log.Warn("etcd: listing the cluster's members timed out; retrying", "err", err)
			continue
		case err != nil:
			return res, err
		}
		var me *memberInfo
		for i := range members {
			if slices.Contains(members[i].peerURLs, self) {
				me = &members[i]
			}
		}
		hasData := HasData(c.Dir)
		switch {
		case me != nil && me.started && hasData:
			// Already a member (joined before): restart from the data dir.
			res.InitialCluster = initialCluster(members)
			return res, nil
		case me != nil && me.started:
			// The cluster knows a member at our address that ran, but our
			// data is gone. Replaced only when it does not answer: one that
			// does is another host (a wrong NODEHA_ADVERTISE), and removing
			// it would take a live voter out of the cluster.
			if alive := liveMember(ctx, me.clientURLs, clientTLS); alive != "" {
				return res, config.Problem("ADVERTISE", "advertise", "%s %w (etcd member %x answers at %s) and this host has no etcd data: is the address this host's own?", c.Advertise, ErrAddressTaken, me.id, alive)
			}
			log.Warn("etcd: the cluster lists a member at this address but this host has no etcd data; removing it to join afresh", "id", fmt.Sprintf("%x", me.id))
			rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			_, err := cli.MemberRemove(rctx, me.id)
			cancel()
			if err != nil && ctx.Err() == nil && !errors.Is(err, context.DeadlineExceeded) {
				return res, fmt.Errorf("embedetcd: join: remove the stale member at %s: %w", self, err)
			}
			continue
		case me != nil:
			// Added as a learner before, never started (a join that was
			// interrupted): start as that member.
			res.Added, res.endpoints, res.clientTLS = me.id, endpoints, clientTLS
			if hasData {
				if res.MovedAside, err = MoveAside(c.Dir, "stale"); err != nil {
					return res, err
				}
			}
			res.InitialCluster = initialCluster(members)
			return res, nil
		}
		if hasData && res.MovedAside == "" {
			// This host was a member of this cluster once and has been
			// removed (or the cluster was recovered without it).
			if res.MovedAside, err = MoveAside(c.Dir, "stale"); err != nil {
				return res, err
			}
			log.Warn("etcd: this host's old member data is not part of the cluster any more; moved it aside (kept)", "dir", res.MovedAside)
		}
		// Each call has its own deadline: a lost answer (the member that
		// got the request changing its own membership) is retried, and the
		// next list shows whether the add went through.
		actx, cancel := context.WithTimeout(ctx, 10*time.Second)
		_, err = cli.MemberAddAsLearner(actx, []string{self})
		cancel()
		switch {
		case ctx.Err() != nil:
			return res, ctx.Err()
		case errors.Is(err, context.DeadlineExceeded), is(err, rpctypes.ErrGRPCTimeout),
			is(err, rpctypes.ErrGRPCTimeoutDueToConnectionLost), is(err, rpctypes.ErrGRPCTimeoutDueToLeaderFail):
			// The cluster is busy with another change (another host joining
			// or being promoted): the add may or may not have gone through.
			log.Warn("etcd: adding this host as a learner timed out; looking again", "peer_url", self, "err", err)
		case err == nil:
			log.Info("etcd: added this host as a learner", "peer_url", self)
			continue // list again: the answer to the add has no names
		case is(err, rpctypes.ErrGRPCTooManyLearners), is(err, rpctypes.ErrGRPCUnhealthy):
			// Another host is joining right now: one learner at a time.
			if attempt == 0 || attempt%10 == 0 {
				log.Info("etcd: another member is joining; waiting for its promotion", "err", err)
			}
		case is(err, rpctypes.ErrGRPCPeerURLExist):
			continue
		default:
			return res, fmt.Errorf("embedetcd: join: add learner %s: %w", self, err)
		}
		select {
		case <-ctx.Done():
			return res, ctx.Err()
		case <-time.After(time.Second):
		}
	}
}

// Abandon removes the learner this join added, for a member that failed
// to start. It does nothing when the join added none.
func (r JoinResult) Abandon(ctx context.Context) error {
	if r.Added == 0 {
		return nil
	}
	cli, err := dcs.NewClient(r.endpoints, r.clientTLS, 5*time.Second)
	if err != nil {
		return fmt.Errorf("embedetcd: remove learner %x: %w", r.Added, err)
	}
	defer cli.Close()
	rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if _, err := cli.MemberRemove(rctx, r.Added); err != nil && !is(err, rpctypes.ErrGRPCMemberNotFound) {
		return fmt.Errorf("embedetcd: remove learner %x: %w", r.Added, err)
	}
	return nil
}

// liveMember returns the first of a member's client URLs that answers a
// TLS handshake ("" when none does).
func liveMember(ctx context.Context, clientURLs []string, clientTLS *tls.Config) string {
	for _, cu := range clientURLs {
		u, err := url.Parse(cu)
		if err != nil {
			continue
		}
		err = CheckPeer(ctx, u.Host, clientTLS)
		if err == nil || errors.Is(err, ErrForeignPeer) {
			return u.Host
		}
	}
	return ""
}

type memberInfo struct {
	id         uint64
	peerURLs   []string
	clientURLs []string
	started    bool
}

func memberList(ctx context.Context, cli *clientv3.Client) ([]memberInfo, error) {
	lctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	resp, err := cli.MemberList(lctx)
	if err != nil {
		return nil, fmt.Errorf("embedetcd: join: list members: %w", err)
	}
	var out []memberInfo
	for _, m := range resp.Members {
		out = append(out, memberInfo{id: m.ID, peerURLs: m.PeerURLs, clientURLs: m.ClientURLs, started: m.Name != "" && len(m.ClientURLs) > 0})
	}
	return out, nil
}

// initialCluster names every member by the host of its peer URL: nodeha's
// members are named by address, and a member that has not started yet has
// no name in the list.
func initialCluster(members []memberInfo) string {
	var ic []string
	for _, m := range members {
		for _, p := range m.peerURLs {
			u, err := url.Parse(p)
			if err != nil {
				continue
			}
			ic = append(ic, u.Hostname()+"="+p)
		}
	}
	return strings.Join(ic, ",")
}

// Promote makes this learner a voting member once it has caught up,
// retrying until it succeeds or ctx is done. A voting member returns at
// once.
func (m *Member) Promote(ctx context.Context, clientTLS *tls.Config, log *slog.Logger) error {
	s := m.etcd.Server
	for {
		if learner, present := m.learner(); !learner || !present {
			return nil
		}
		var endpoints []string
		for _, mem := range s.Cluster().Members() {
			if mem.ID != s.MemberID() && !mem.IsLearner {
				endpoints = append(endpoints, mem.ClientURLs...)
			}
		}
		if len(endpoints) > 0 {
			err := promoteOnce(ctx, endpoints, clientTLS, uint64(s.MemberID()))
			switch {
			case err == nil:
				log.Info("etcd: promoted this learner to a voting member")
				return nil
			case is(err, rpctypes.ErrGRPCLearnerNotReady):
				// not caught up yet (test first: the description of
				// ErrGRPCMemberNotLearner is a prefix of this one's)
			case is(err, rpctypes.ErrGRPCMemberNotLearner):
				return nil
			default:
				log.Debug("etcd: promote", "err", err)
			}
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Second):
		}
	}
}

func promoteOnce(ctx context.Context, endpoints []string, clientTLS *tls.Config, id uint64) error {
	cli, err := dcs.NewClient(endpoints, clientTLS, 3*time.Second)
	if err != nil {
		return err
	}
	defer cli.Close()
	pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	_, err = cli.MemberPromote(pctx, id)
	return err
}

// is matches an etcd error by its description, however the client wrapped
// it (gRPC status or rpctypes.EtcdError).
func is(err, want error) bool {
	return err != nil && strings.Contains(err.Error(), rpctypes.ErrorDesc(want))
}
