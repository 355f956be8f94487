// Package dcs is the one place for the etcd key layout nodeha shares with
// Patroni and the values it reads there: Patroni's keys under
// /service/SCOPE (its etcd3 backend with the default namespace) and
// nodeha's own under /nodeha/SCOPE. It also makes the one kind of network
// etcd client nodeha uses (mutual TLS, bounded dial).
package dcs

import (
	"crypto/tls"
	"encoding/json"
	"fmt"
	"net"
	"net/url"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

// Patroni's keys.

// Leader is Patroni's leader lock: its value is the leader's member name.
func Leader(scope string) string { return "/service/" + scope + "/leader" }

// Member is Patroni's key of member name (a JSON MemberValue).
func Member(scope, name string) string { return Members(scope) + name }

// Members is the prefix of every member key.
func Members(scope string) string { return "/service/" + scope + "/members/" }

// Config is Patroni's dynamic configuration (JSON).
func Config(scope string) string { return "/service/" + scope + "/config" }

// Sync is Patroni's record of the synchronous standbys (JSON).
func Sync(scope string) string { return "/service/" + scope + "/sync" }

// nodeha's keys.

// Host maps a host's member name to its address, for `nodeha remove NAME`
// after the host's Patroni keys have expired. No lease: it lasts until the
// host leaves or is removed.
func Host(scope, name string) string { return Hosts(scope) + name }

// Hosts is the prefix of every Host key.
func Hosts(scope string) string { return "/nodeha/" + scope + "/hosts/" }

// MemberValue is what nodeha reads of a Patroni member key.
type MemberValue struct {
	ConnURL string `json:"conn_url"`
	APIURL  string `json:"api_url"`
	Role    string `json:"role"`
	State   string `json:"state"`
}

// ParseMember decodes a member key's value.
func ParseMember(b []byte) (MemberValue, error) {
	var m MemberValue
	if err := json.Unmarshal(b, &m); err != nil {
		return m, fmt.Errorf("dcs: member value: %w", err)
	}
	return m, nil
}

// Host is the host of the member's PostgreSQL connection URL ("" when
// there is none).
func (m MemberValue) Host() string {
	u, err := url.Parse(m.ConnURL)
	if err != nil {
		return ""
	}
	return u.Hostname()
}

// PostgresAddr is host:port of the member's PostgreSQL ("" when unknown).
func (m MemberValue) PostgresAddr() string {
	u, err := url.Parse(m.ConnURL)
	if err != nil || u.Hostname() == "" {
		return ""
	}
	port := u.Port()
	if port == "" {
		port = "5432"
	}
	return net.JoinHostPort(u.Hostname(), port)
}

// APIHost is the host of the member's REST API URL ("" when there is none).
func (m MemberValue) APIHost() string {
	u, err := url.Parse(m.APIURL)
	if err != nil {
		return ""
	}
	return u.Hostname()
}

// NewClient is a network etcd client to endpoints (https URLs) with the
// cluster's client TLS; dialTimeout bounds each connection attempt.
func NewClient(endpoints []string, clientTLS *tls.Config, dialTimeout time.Duration) (*clientv3.Client, error) {
	cli, err := clientv3.New(clientv3.Config{Endpoints: endpoints, TLS: clientTLS, DialTimeout: dialTimeout, Logger: zap.NewNop()})
	if err != nil {
		return nil, fmt.Errorf("etcd client: %w", err)
	}
	return cli, nil
}

// HostStatus is where a host's nodeha publishes its own state (with a
// lease: it goes when the host stops publishing).
func HostStatus(scope, name string) string { return HostStatuses(scope) + name }

// HostStatuses is the prefix of every HostStatus key.
func HostStatuses(scope string) string { return "/nodeha/" + scope + "/status/" }

// LastFailover records the last change of primary, written by the new
// primary's nodeha.
func LastFailover(scope string) string { return "/nodeha/" + scope + "/last-failover" }

// Assist records the last leader lock nodeha's failover assist released,
// and why, for the failover record.
func Assist(scope string) string { return "/nodeha/" + scope + "/assist" }

// Restore is the key of the cluster's restore request (nodeha restore).
func Restore(scope string) string { return "/nodeha/" + scope + "/restore" }

// RestoreAck is where a host says it has stopped for restore id.
func RestoreAck(scope, name string) string { return RestoreAcks(scope) + name }

// RestoreAcks is the prefix of every RestoreAck key.
func RestoreAcks(scope string) string { return "/nodeha/" + scope + "/restore-ack/" }

// Patroni is the prefix of every key Patroni keeps for scope.
func Patroni(scope string) string { return "/service/" + scope + "/" }
