package patroni_test

import (
	"bufio"
	"context"
	"encoding/json"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nodeha/nodeha/patroni"
)

// Bodies as Patroni 3.0.1 (spilo-15:3.0-p1) and 4.0 serve them.
const (
	primaryStatus30 = `{
  "state": "running",
  "postmaster_start_time": "2023-09-25 08:12:31.482533+00:00",
  "role": "master",
  "server_version": 150004,
  "xlog": {"location": 117440512},
  "timeline": 2,
  "replication": [
    {"usename": "replicator", "application_name": "pg-node-2", "client_addr": "10.26.235.206",
     "state": "streaming", "sync_state": "async", "sync_priority": 0},
    {"usename": "replicator", "application_name": "pg-node-3", "client_addr": "10.26.235.75",
     "state": "streaming", "sync_state": "async", "sync_priority": 0}
  ],
  "dcs_last_seen": 1695629551,
  "database_system_identifier": "7282630914523062301",
  "patroni": {"version": "3.0.1", "scope": "postgres-patroni-cb5o3izc"}
}`
	replicaStatus40 = `{
  "state": "running",
  "postmaster_start_time": "2024-11-02 10:00:01.000001+00:00",
  "role": "replica",
  "server_version": 170002,
  "xlog": {"received_location": 50331808, "replayed_location": 50331800,
           "replayed_timestamp": "2024-11-02 10:05:00.1+00:00", "paused": false},
  "timeline": 1,
  "replication_state": "streaming",
  "dcs_last_seen": 1730541901,
  "database_system_identifier": "7432630914523062301",
  "patroni": {"version": "4.0.4", "scope": "orders", "name": "pg-node-2"}
}`
	stoppedStatus = `{"state": "stopped", "role": "replica", "dcs_last_seen": 1695629551,
  "patroni": {"version": "3.0.1", "scope": "postgres-patroni-cb5o3izc"}}`
	cluster30 = `{
  "members": [
    {"name": "pg-node-1", "role": "leader", "state": "running", "api_url": "http://10.26.235.157:8008/patroni",
     "host": "10.26.235.157", "port": 5432, "timeline": 2},
    {"name": "pg-node-2", "role": "replica", "state": "streaming", "api_url": "http://10.26.235.206:8008/patroni",
     "host": "10.26.235.206", "port": 5432, "timeline": 2, "lag": 16384},
    {"name": "pg-node-3", "role": "replica", "state": "stopped", "api_url": "http://10.26.235.75:8008/patroni",
     "host": "10.26.235.75", "port": 5432, "lag": "unknown"}
  ],
  "scope": "postgres-patroni-cb5o3izc"
}`
)

func serve(t *testing.T, routes map[string]route) *patroni.Client {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rt, ok := routes[r.URL.Path]
		if !ok || r.Method != http.MethodGet {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(rt.code)
		w.Write([]byte(rt.body))
	}))
	t.Cleanup(srv.Close)
	return patroni.New(srv.URL, nil)
}

type route = struct {
	code int
	body string
}

func TestStatusPatroni30Primary(t *testing.T) {
	c := serve(t, map[string]route{"/patroni": {200, primaryStatus30}})
	st, err := c.Status(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if st.State != "running" || st.Role != "master" || st.Timeline != 2 || st.Server != 150004 {
		t.Errorf("status = %+v", st)
	}
	if st.Xlog.Location != 117440512 {
		t.Errorf("xlog.location = %d", st.Xlog.Location)
	}
	if st.Patroni.Version != "3.0.1" || st.Patroni.Scope != "postgres-patroni-cb5o3izc" {
		t.Errorf("patroni = %+v", st.Patroni)
	}
	if st.PostmasterStartTime != "2023-09-25 08:12:31.482533+00:00" {
		t.Errorf("postmaster_start_time = %q", st.PostmasterStartTime)
	}
	if !patroni.IsLeader(st.Role) {
		t.Errorf("IsLeader(%q) = false", st.Role)
	}
}

func TestStatusPatroni40Replica(t *testing.T) {
	c := serve(t, map[string]route{"/patroni": {200, replicaStatus40}})
	st, err := c.Status(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if st.Role != "replica" || st.Xlog.ReceivedLocation != 50331808 || st.Xlog.ReplayedLocation != 50331800 || st.Patroni.Version != "4.0.4" {
		t.Errorf("status = %+v", st)
	}
	if patroni.IsLeader(st.Role) || !patroni.IsReplica(st.Role) {
		t.Errorf("role %q: IsLeader %v, IsReplica %v", st.Role, patroni.IsLeader(st.Role), patroni.IsReplica(st.Role))
	}
}

// Patroni answers 503 while PostgreSQL is down, with a body worth reading.
func TestStatusDecodes503Body(t *testing.T) {
	c := serve(t, map[string]route{"/patroni": {503, stoppedStatus}})
	st, err := c.Status(context.Background())
	if err != nil {
		t.Fatalf("Status on 503 = %v, want the body decoded", err)
	}
	if st.State != "stopped" {
		t.Errorf("state = %q, want stopped", st.State)
	}
}

func TestStatusErrors(t *testing.T) {
	c := serve(t, map[string]route{"/patroni": {502, "<html>bad gateway</html>"}})
	_, err := c.Status(context.Background())
	if err == nil || !strings.Contains(err.Error(), "GET /patroni") || !strings.Contains(err.Error(), "502") {
		t.Errorf("Status on a non-JSON answer = %v, want an error naming the path and status", err)
	}

	srv := httptest.NewServer(http.NotFoundHandler())
	url := srv.URL
	srv.Close()
	if _, err := patroni.New(url, nil).Status(context.Background()); err == nil || !strings.Contains(err.Error(), "patroni: GET /patroni") {
		t.Errorf("Status with no server = %v", err)
	}
}

// Ping counts any HTTP answer as Patroni being there, and only silence
// (refused, or accepted but never answered) as gone.
func TestPing(t *testing.T) {
	for _, code := range []int{200, 503} {
		c := serve(t, map[string]route{"/liveness": {code, ""}})
		if err := c.Ping(context.Background()); err != nil {
			t.Errorf("Ping answered %d = %v, want nil", code, err)
		}
	}
	if err := serve(t, nil).Ping(context.Background()); err != nil {
		t.Errorf("Ping answered 404 = %v, want nil", err)
	}

	// Patroni's own way: a bare status line, no headers, then close.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	hung := make(chan struct{})
	t.Cleanup(func() { close(hung) })
	var bare atomic.Bool
	bare.Store(true)
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			if bare.Load() {
				bufio.NewReader(conn).ReadString('\n')
				conn.Write([]byte("HTTP/1.0 503 Service Unavailable\r\n\r\n"))
				conn.Close()
				continue
			}
			go func() { <-hung; conn.Close() }() // a hung Patroni: accepts, never answers
		}
	}()
	c := patroni.New("http://"+ln.Addr().String(), nil)
	if err := c.Ping(context.Background()); err != nil {
		t.Errorf("Ping with a bare status line = %v, want nil", err)
	}
	bare.Store(false)
	c.HTTP.Timeout = 200 * time.Millisecond
	start := time.Now()
	if err := c.Ping(context.Background()); err == nil || !strings.Contains(err.Error(), "patroni: GET /liveness") {
		t.Errorf("Ping to a hung Patroni = %v, want a timeout", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("Ping to a hung Patroni took %v, want the client's timeout", d)
	}

	srv := httptest.NewServer(http.NotFoundHandler())
	url := srv.URL
	srv.Close()
	if err := patroni.New(url, nil).Ping(context.Background()); err == nil {
		t.Error("Ping with nothing listening = nil, want an error")
	}
}

func TestCluster(t *testing.T) {
	c := serve(t, map[string]route{"/cluster": {200, cluster30}})
	cl, err := c.Cluster(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(cl.Members) != 3 {
		t.Fatalf("members = %+v", cl.Members)
	}
	want := []struct {
		name, role, host string
		lag              patroni.Lag
	}{
		{"pg-node-1", "leader", "10.26.235.157", 0},
		{"pg-node-2", "replica", "10.26.235.206", 16384},
		{"pg-node-3", "replica", "10.26.235.75", -1},
	}
	for i, w := range want {
		m := cl.Members[i]
		if m.Name != w.name || m.Role != w.role || m.Host != w.host || m.Lag != w.lag {
			t.Errorf("member %d = %+v, want %+v", i, m, w)
		}
	}
	if !patroni.IsLeader(cl.Members[0].Role) {
		t.Errorf("the /cluster leader role %q is not a leader", cl.Members[0].Role)
	}
}

func TestLag(t *testing.T) {
	for in, want := range map[string]patroni.Lag{
		`0`:         0,
		`33554432`:  33554432,
		`"unknown"`: -1,
	} {
		var l patroni.Lag
		if err := json.Unmarshal([]byte(in), &l); err != nil || l != want {
			t.Errorf("Lag from %s = %d, %v; want %d", in, l, err, want)
		}
	}
}

func TestRoles(t *testing.T) {
	for role, leader := range map[string]bool{
		"master": true, "primary": true, "leader": true,
		"replica": false, "sync_standby": false, "standby_leader": false, "": false, "uninitialized": false,
	} {
		if got := patroni.IsLeader(role); got != leader {
			t.Errorf("IsLeader(%q) = %v, want %v", role, got, leader)
		}
	}
	for role, replica := range map[string]bool{
		"replica": true, "sync_standby": true, "standby_leader": true, "master": false, "primary": false,
	} {
		if got := patroni.IsReplica(role); got != replica {
			t.Errorf("IsReplica(%q) = %v, want %v", role, got, replica)
		}
	}
}
