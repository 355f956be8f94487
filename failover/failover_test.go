package failover_test

import (
	"context"
	"io"
	"log/slog"
	"net"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/nodeha/nodeha/dcs"
	"github.com/nodeha/nodeha/embedetcd"
	"github.com/nodeha/nodeha/failover"
)

func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.3:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// etcd starts a real one-member etcd and returns an in-process client.
func etcd(t *testing.T) *clientv3.Client {
	t.Helper()
	m, err := embedetcd.Start(embedetcd.Config{
		Name: "127.0.0.3", Dir: filepath.Join(t.TempDir(), "etcd"), Advertise: "127.0.0.3",
		Peers: []string{"127.0.0.3"}, ClientPort: freePort(t), PeerPort: freePort(t), Token: "t",
		Heartbeat: 50 * time.Millisecond, Election: 500 * time.Millisecond, Compaction: "1h",
	}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(m.Close)
	select {
	case <-m.Ready():
	case <-time.After(20 * time.Second):
		t.Fatal("etcd not ready")
	}
	return m.Client()
}

// patroniLock writes what Patroni writes: a member key and the leader key
// on one lease.
func patroniLock(t *testing.T, cli *clientv3.Client, scope, name, host string) clientv3.LeaseID {
	t.Helper()
	ctx := context.Background()
	l, err := cli.Grant(ctx, 30)
	if err != nil {
		t.Fatal(err)
	}
	member := `{"conn_url":"postgres://` + host + `:5432/postgres","api_url":"http://` + host + `:8008/patroni","state":"running","role":"master"}`
	if _, err := cli.Put(ctx, "/service/"+scope+"/members/"+name, member, clientv3.WithLease(l.ID)); err != nil {
		t.Fatal(err)
	}
	if _, err := cli.Put(ctx, dcs.Leader(scope), name, clientv3.WithLease(l.ID)); err != nil {
		t.Fatal(err)
	}
	return l.ID
}

func leader(t *testing.T, cli *clientv3.Client, scope string) string {
	t.Helper()
	r, err := cli.Get(context.Background(), dcs.Leader(scope))
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Kvs) == 0 {
		return ""
	}
	return string(r.Kvs[0].Value)
}

// setReplication writes what Patroni keeps about replication: the dynamic
// configuration's synchronous_mode (mode is its JSON: true, false, "quorum",
// or "" for no configuration) and the /sync key (sync is its JSON; "" for
// none).
func setReplication(t *testing.T, cli *clientv3.Client, scope, mode, sync string) {
	t.Helper()
	ctx := context.Background()
	if mode != "" {
		if _, err := cli.Put(ctx, dcs.Config(scope), `{"ttl":20,"loop_wait":1,"synchronous_mode":`+mode+`}`); err != nil {
			t.Fatal(err)
		}
	}
	if sync != "" {
		if _, err := cli.Put(ctx, dcs.Sync(scope), sync); err != nil {
			t.Fatal(err)
		}
	}
}

func TestReleaseDecision(t *testing.T) {
	sync := func(leader string, standbys ...string) failover.Replication {
		return failover.Replication{Leader: leader, Mode: "on", SyncLeader: leader, SyncStandbys: standbys}
	}
	for _, c := range []struct {
		name string
		r    failover.Replication
		want bool
	}{
		{"no lock", failover.Replication{Mode: "on"}, false},
		{"another member's lock", sync("pg2", "pg1"), false},
		{"asynchronous", failover.Replication{Leader: "pg1", Mode: "off"}, false},
		{"asynchronous with a stale /sync key", failover.Replication{Leader: "pg1", Mode: "off", SyncLeader: "pg1", SyncStandbys: []string{"pg2"}}, false},
		{"synchronous, no standby recorded", sync("pg1"), false},
		{"synchronous, /sync written for another primary", failover.Replication{Leader: "pg1", Mode: "on", SyncLeader: "pg2", SyncStandbys: []string{"pg3"}}, false},
		{"synchronous with a standby", sync("pg1", "pg2"), true},
		{"synchronous with two standbys", sync("pg1", "pg2", "pg3"), true},
		{"quorum with a standby", failover.Replication{Leader: "pg1", Mode: "quorum", SyncLeader: "pg1", SyncStandbys: []string{"pg2"}}, true},
	} {
		got, why := failover.ReleaseDecision(c.r, "pg1")
		if got != c.want || why == "" {
			t.Errorf("%s: release %v (%q), want %v", c.name, got, why, c.want)
		}
	}
}

func TestReleaseDeadLock(t *testing.T) {
	ctx := context.Background()
	for _, c := range []struct {
		name, mode, sync string
		member           string
		released         bool
	}{
		{"another member's lock", "true", `{"leader":"pg1","sync_standby":"pg2"}`, "pg2", false},
		{"no configuration (asynchronous)", "", "", "pg1", false},
		{"asynchronous", "false", "", "pg1", false},
		{"synchronous, no standby (Patroni 3)", "true", `{"leader":"pg1","sync_standby":null}`, "pg1", false},
		{"synchronous with a standby (Patroni 3)", "true", `{"leader":"pg1","sync_standby":"pg2"}`, "pg1", true},
		{"synchronous \"on\" with a standby (Patroni 4)", `"on"`, `{"leader":"pg1","sync_standby":"pg2","quorum":0}`, "pg1", true},
	} {
		t.Run(c.name, func(t *testing.T) {
			cli := etcd(t)
			patroniLock(t, cli, "s", "pg1", "10.0.0.1")
			setReplication(t, cli, "s", c.mode, c.sync)
			released, why, err := failover.ReleaseDeadLock(ctx, cli, "s", c.member)
			if err != nil || released != c.released || why == "" {
				t.Fatalf("released %v (%q, %v), want %v", released, why, err, c.released)
			}
			if want := map[bool]string{true: "", false: "pg1"}[c.released]; leader(t, cli, "s") != want {
				t.Fatalf("leader %q after the decision, want %q", leader(t, cli, "s"), want)
			}
		})
	}
}

func TestWatcherRevokesOnlyAfterThresholdOfSilence(t *testing.T) {
	cli := etcd(t)
	patroniLock(t, cli, "s", "pg1", "10.0.0.1")
	setReplication(t, cli, "s", "true", `{"leader":"pg1","sync_standby":"pg2"}`)
	var up atomic.Bool
	up.Store(true)
	w := &failover.Watcher{
		Client: cli, Scope: "s", Self: "pg2", Threshold: 1500 * time.Millisecond, Interval: 50 * time.Millisecond,
		Log: slog.New(slog.NewTextHandler(io.Discard, nil)),
		Answers: func(_ context.Context, host string) bool {
			if host != "10.0.0.1" {
				t.Errorf("probed %q, want the leader's host from its member key", host)
			}
			return up.Load()
		},
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go w.Run(ctx)

	// A host that answers keeps its lock however long.
	time.Sleep(2 * time.Second)
	if leader(t, cli, "s") != "pg1" {
		t.Fatal("lock released while the primary's host answered")
	}
	// Silent, but not yet for the threshold: kept.
	up.Store(false)
	silent := time.Now()
	time.Sleep(700 * time.Millisecond)
	if leader(t, cli, "s") != "pg1" {
		t.Fatalf("lock released after %v of silence, threshold 1.5s", time.Since(silent))
	}
	deadline := time.Now().Add(5 * time.Second)
	for leader(t, cli, "s") != "" {
		if time.Now().After(deadline) {
			t.Fatal("lock of a silent primary host not released")
		}
		time.Sleep(50 * time.Millisecond)
	}
	// Silence is counted from the last answer, at most one interval before.
	if d := time.Since(silent); d < 1500*time.Millisecond-w.Interval {
		t.Errorf("released after %v, before the threshold", d)
	}
}

func TestWatcherNeverJudgesItself(t *testing.T) {
	cli := etcd(t)
	patroniLock(t, cli, "s", "pg1", "10.0.0.1")
	w := &failover.Watcher{
		Client: cli, Scope: "s", Self: "pg1", Threshold: 100 * time.Millisecond, Interval: 20 * time.Millisecond,
		Log:     slog.New(slog.NewTextHandler(io.Discard, nil)),
		Answers: func(context.Context, string) bool { return false },
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	w.Run(ctx)
	if leader(t, cli, "s") != "pg1" {
		t.Fatal("a watcher released its own host's lock")
	}
}

// In asynchronous mode a silent primary host keeps its lock until the lease
// expires, as without nodeha: a replica may lack its last commits, and the
// host may come back within the lease.
func TestWatcherLeavesAnAsynchronousPrimaryToTheLease(t *testing.T) {
	cli := etcd(t)
	patroniLock(t, cli, "s", "pg1", "10.0.0.1")
	setReplication(t, cli, "s", "false", "")
	w := &failover.Watcher{
		Client: cli, Scope: "s", Self: "pg2", Threshold: 100 * time.Millisecond, Interval: 20 * time.Millisecond,
		Log:     slog.New(slog.NewTextHandler(io.Discard, nil)),
		Answers: func(context.Context, string) bool { return false },
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	w.Run(ctx)
	if leader(t, cli, "s") != "pg1" {
		t.Fatal("the lock of an asynchronous primary was released before its lease expired")
	}
}
