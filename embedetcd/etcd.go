// Package embedetcd owns this host's etcd member, embedded in the nodeha
// process (go.etcd.io/etcd/server/v3/embed): bootstrapping a new cluster
// from the peer list, restarting from an existing data directory even while
// the other peers are down, auto-compaction, and the member's health.
//
// Usage:
//
//	m, err := embedetcd.Start(embedetcd.ConfigFrom(cfg), log)
//	select { case <-m.Ready(): case err := <-m.Err(): }
//	defer m.Close()
package embedetcd

import (
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"strings"
	"sync"
	"time"

	"go.etcd.io/etcd/client/pkg/v3/transport"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"
	"go.etcd.io/etcd/server/v3/etcdserver/api/v3client"
	"go.uber.org/zap"

	"github.com/nodeha/nodeha/config"
	"github.com/nodeha/nodeha/trust"
)

// Config is what the member needs.
type Config struct {
	// Name is the member name: this host's advertise address, so that every
	// host derives the same initial cluster from the same peer list.
	Name       string
	Dir        string
	Advertise  string
	Peers      []string
	ClientPort int
	PeerPort   int
	Token      string
	Heartbeat  time.Duration
	Election   time.Duration
	Compaction string
	// TLS is the member's certificates: peer and client traffic are mutual
	// TLS with the cluster CA, and no client port answers without a client
	// certificate of that CA. Nil serves plain HTTP (unit tests only).
	TLS *trust.Files
	// InitialCluster, when set, is an existing cluster this member joins
	// (from Join); otherwise the member bootstraps a new cluster of Peers.
	InitialCluster string
	// ForceNewCluster restarts the member from its data as a one-member
	// cluster (nodeha recover, after a quorum loss).
	ForceNewCluster bool
}

// ConfigFrom derives the member's config from nodeha's settings.
func ConfigFrom(c *config.Config) Config {
	return Config{
		Name:       c.AdvertiseIP.String(),
		Dir:        c.EtcdDir(),
		Advertise:  c.AdvertiseIP.String(),
		Peers:      c.Peers,
		ClientPort: c.EtcdClientPort,
		PeerPort:   c.EtcdPeerPort,
		Token:      "nodeha-" + c.Scope,
		Heartbeat:  c.EtcdHeartbeat,
		Election:   c.EtcdElection,
		Compaction: c.EtcdCompaction,
		TLS:        ptr(c.TLSFiles()),
	}
}

func ptr[T any](v T) *T { return &v }

// Scheme is the URL scheme of the member's client and peer URLs.
func (c Config) Scheme() string {
	if c.TLS == nil {
		return "http"
	}
	return "https"
}

// Member is a running embedded etcd member.
type Member struct {
	etcd       *embed.Etcd
	closeOnce  sync.Once
	clientOnce sync.Once
	client     *clientv3.Client
	// Restarted is true when the member came up from an existing data dir.
	Restarted bool
}

func mustURL(scheme, host string, port int) url.URL {
	return url.URL{Scheme: scheme, Host: config.HostPort(host, port)}
}

// HasData reports whether dir holds an etcd member's WAL.
func HasData(dir string) bool { return config.HasEtcdData(dir) }

// Start starts the member. With an existing data dir the member restarts
// from it (the peer list is then only informative); otherwise it bootstraps
// a new cluster with every peer.
func Start(c Config, log *slog.Logger) (*Member, error) {
	ec := embed.NewConfig()
	ec.Name = c.Name
	ec.Dir = c.Dir
	scheme := c.Scheme()
	peer := mustURL(scheme, c.Advertise, c.PeerPort)
	ec.ListenPeerUrls = []url.URL{peer}
	ec.AdvertisePeerUrls = []url.URL{peer}
	// The HTTP/JSON gateway that Patroni's etcd3 backend talks to stays on
	// the client URLs (never set ListenClientHttpUrls).
	ec.ListenClientUrls = []url.URL{mustURL(scheme, c.Advertise, c.ClientPort), mustURL(scheme, "127.0.0.1", c.ClientPort)}
	ec.AdvertiseClientUrls = []url.URL{mustURL(scheme, c.Advertise, c.ClientPort)}
	if f := c.TLS; f != nil {
		// Loopback too: any local user could otherwise rewrite Patroni's
		// dynamic configuration (archive_command) and run commands as
		// postgres on every host.
		ec.ClientTLSInfo = transport.TLSInfo{CertFile: f.Cert, KeyFile: f.Key, TrustedCAFile: f.CA, ClientCertAuth: true}
		ec.PeerTLSInfo = transport.TLSInfo{CertFile: f.Cert, KeyFile: f.Key, TrustedCAFile: f.CA, ClientCertAuth: true}
	}
	var ic []string
	for _, p := range c.Peers {
		u := mustURL(scheme, p, c.PeerPort)
		ic = append(ic, p+"="+u.String())
	}
	ec.InitialCluster = strings.Join(ic, ",")
	ec.InitialClusterToken = c.Token
	ec.ClusterState = embed.ClusterStateFlagNew
	if c.InitialCluster != "" {
		ec.InitialCluster = c.InitialCluster
		ec.ClusterState = embed.ClusterStateFlagExisting
	}
	ec.ForceNewCluster = c.ForceNewCluster
	ec.TickMs = uint(c.Heartbeat / time.Millisecond)
	ec.ElectionMs = uint(c.Election / time.Millisecond)
	// Nothing else compacts this etcd: without it the database grows to its
	// quota and raises NOSPACE.
	// Unset, every request is "expensive" and logged as a warning.
	ec.WarningUnaryRequestDuration = embed.DefaultWarningUnaryRequestDuration
	ec.AutoCompactionMode = embed.CompactorModePeriodic
	ec.AutoCompactionRetention = c.Compaction
	ec.ZapLoggerBuilder = embed.NewZapLoggerBuilder(zap.New(NewSlogCore(log.With("component", "etcd"), zap.WarnLevel)))

	if err := os.MkdirAll(c.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("embedetcd: create %s: %w", c.Dir, err)
	}
	m := &Member{Restarted: HasData(c.Dir)}
	e, err := embed.StartEtcd(ec)
	// A member that joins checks its member list against the one of the
	// first peer that answers, which may not have applied this host's
	// addition yet ("member count is unequal"): that peer catches up within
	// moments, so the start is tried again for a while.
	for wait := 0; err != nil && c.InitialCluster != "" && !m.Restarted && strings.Contains(err.Error(), "member count is unequal") && wait < 20; wait++ {
		log.Info("etcd: a peer has not applied this host's addition yet; starting again", "err", firstLine(err))
		time.Sleep(500 * time.Millisecond)
		e, err = embed.StartEtcd(ec)
	}
	if err != nil {
		return nil, fmt.Errorf("embedetcd: start member %s: %w", c.Name, err)
	}
	m.etcd = e
	switch {
	case m.Restarted:
		log.Info("etcd member restarting from its data dir", "dir", c.Dir, "name", c.Name)
	case c.InitialCluster != "":
		log.Info("etcd member joining an existing cluster", "initial_cluster", ec.InitialCluster)
	default:
		log.Info("etcd member bootstrapping a new cluster", "initial_cluster", ec.InitialCluster)
	}
	return m, nil
}

func firstLine(err error) string {
	s, _, _ := strings.Cut(err.Error(), "\n")
	if len(s) > 200 {
		s = s[:200] + "..."
	}
	return s
}

// Client is the in-process client of this member (no network, no TLS),
// one for the member's life: callers share it and do not close it (Close
// does).
func (m *Member) Client() *clientv3.Client {
	m.clientOnce.Do(func() { m.client = v3client.New(m.etcd.Server) })
	return m.client
}

// Ready is closed when the member has joined the cluster and serves
// requests (which needs a quorum).
func (m *Member) Ready() <-chan struct{} { return m.etcd.Server.ReadyNotify() }

// Err reports a fatal error of the member.
func (m *Member) Err() <-chan error { return m.etcd.Err() }

// Close stops the member. Safe to call twice.
func (m *Member) Close() {
	m.closeOnce.Do(func() {
		m.clientOnce.Do(func() {}) // no client made after this
		if m.client != nil {
			m.client.Close()
		}
		m.etcd.Close()
	})
}

// ID is the member's etcd ID.
func (m *Member) ID() uint64 { return uint64(m.etcd.Server.MemberID()) }

// OtherAddresses are the hosts of every other member's peer URLs, as this
// member last knew them (it answers without a quorum).
func (m *Member) OtherAddresses() []string {
	s := m.etcd.Server
	var out []string
	for _, mem := range s.Cluster().Members() {
		if mem.ID == s.MemberID() {
			continue
		}
		for _, p := range mem.PeerURLs {
			if u, err := url.Parse(p); err == nil {
				out = append(out, u.Hostname())
			}
		}
	}
	return out
}

// Status is the member's view of itself and the cluster.
type Status struct {
	ID        string   `json:"id"`
	Name      string   `json:"name"`
	Leader    bool     `json:"is_leader"`
	LeaderID  string   `json:"leader_id,omitempty"`
	Learner   bool     `json:"is_learner"`
	Members   []string `json:"members"`
	Voters    int      `json:"voters"`
	HasQuorum bool     `json:"has_quorum"`
	Ready     bool     `json:"ready"`
	// Removed: this member is no longer in the cluster's membership (it
	// left, or was removed); what it sees is not the cluster's.
	Removed bool `json:"removed,omitempty"`
}

// learner reports whether this member is a learner, and whether it is in
// the membership at all. (etcd's own IsLearner panics once the local
// member has been removed, which a leave does while helpers still ask.)
func (m *Member) learner() (learner, present bool) {
	s := m.etcd.Server
	if mem := s.Cluster().Member(s.MemberID()); mem != nil {
		return mem.IsLearner, true
	}
	return false, false
}

// Status reads the member's state from the running server.
func (m *Member) Status() Status {
	s := m.etcd.Server
	learner, present := m.learner()
	st := Status{ID: s.MemberID().String(), Name: m.etcd.Config().Name, Learner: learner, Removed: !present}
	select {
	case <-s.ReadyNotify():
		st.Ready = true
	default:
	}
	lead := s.Leader()
	if lead != 0 && present {
		st.LeaderID = lead.String()
		st.HasQuorum = true
	}
	st.Leader = lead == s.MemberID() && present
	for _, mem := range s.Cluster().Members() {
		st.Members = append(st.Members, mem.Name)
		if !mem.IsLearner {
			st.Voters++
		}
	}
	return st
}

// MemberView is one member as this member last knew it (no quorum needed).
type MemberView struct {
	ID      string `json:"id"`
	Name    string `json:"name"` // empty until a joined member has started
	Address string `json:"address"`
	Learner bool   `json:"learner"`
	Leader  bool   `json:"leader"`
}

// Members lists every member of the cluster as this member knows it.
func (m *Member) Members() []MemberView {
	s := m.etcd.Server
	lead := s.Leader()
	var out []MemberView
	for _, mem := range s.Cluster().Members() {
		v := MemberView{ID: mem.ID.String(), Name: mem.Name, Learner: mem.IsLearner, Leader: mem.ID == lead}
		for _, p := range mem.PeerURLs {
			if u, err := url.Parse(p); err == nil {
				v.Address = u.Hostname()
			}
		}
		out = append(out, v)
	}
	return out
}
