package failover_test

import (
	"context"
	"io"
	"log/slog"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nodeha/nodeha/failover"
)

func TestFenceStopsACutOffPrimaryAndStartsItWhenTheMajorityIsBack(t *testing.T) {
	for _, synchronous := range []bool{true, false} {
		t.Run(map[bool]string{true: "synchronous", false: "asynchronous"}[synchronous], func(t *testing.T) {
			fenceCutOffPrimary(t, synchronous)
		})
	}
}

func fenceCutOffPrimary(t *testing.T, synchronous bool) {
	cli := etcd(t)
	ctx := context.Background()
	patroniLock(t, cli, "s", "pg1", "127.0.0.9")
	if synchronous {
		setReplication(t, cli, "s", "true", `{"leader":"pg1","sync_standby":"pg2"}`)
	}
	var quorum, peerUp atomic.Bool
	quorum.Store(true)
	var stopped, started int
	var reason string
	f := &failover.Fence{
		Client: cli, Scope: "s", Self: "pg1", Peers: func() []string { return []string{"10.0.0.2", "10.0.0.3"} },
		After: 5 * time.Second, Log: slog.New(slog.NewTextHandler(io.Discard, nil)),
		Stop:    func(r string) { stopped++; reason = r },
		Start:   func() { started++ },
		Quorum:  func(context.Context) bool { return quorum.Load() },
		Answers: func(_ context.Context, host string) bool { return peerUp.Load() && host == "10.0.0.3" },
	}
	t0 := time.Now()
	at := func(d time.Duration) { f.Check(ctx, t0.Add(d)) }

	// Healthy, then an etcd outage with the peers reachable (failsafe_mode's
	// case): never fenced.
	at(0)
	quorum.Store(false)
	peerUp.Store(true)
	at(time.Second)
	at(10 * time.Second)
	if stopped != 0 {
		t.Fatalf("fenced while a peer answers: %q", reason)
	}

	// Cut off: fenced only after After.
	peerUp.Store(false)
	at(11 * time.Second)
	at(15 * time.Second)
	if stopped != 0 {
		t.Fatal("fenced before After")
	}
	at(16 * time.Second)
	if stopped != 1 || reason == "" {
		t.Fatalf("not fenced after After: stopped %d", stopped)
	}
	at(30 * time.Second)
	if stopped != 1 || started != 0 {
		t.Fatalf("fence changed while still cut off: stopped %d started %d", stopped, started)
	}

	// The majority is back. Synchronous: our own (stale) lock goes before
	// Patroni starts, and the synchronous standby takes over. Asynchronous:
	// it stays, and our Patroni resumes with it.
	quorum.Store(true)
	at(31 * time.Second)
	if started != 1 {
		t.Fatal("not started again once the majority is back")
	}
	l := leader(t, cli, "s")
	if synchronous && l != "" {
		t.Fatalf("the fenced primary's own lock was not released before its Patroni started: leader %q", l)
	}
	if !synchronous && l != "pg1" {
		t.Fatalf("an asynchronous primary's lock was released: leader %q", l)
	}
}

func TestFenceLeavesAReplicaAlone(t *testing.T) {
	cli := etcd(t)
	patroniLock(t, cli, "s", "pg2", "127.0.0.9")
	stopped := 0
	f := &failover.Fence{
		Client: cli, Scope: "s", Self: "pg1", Peers: func() []string { return []string{"10.0.0.2"} },
		After: time.Second, Log: slog.New(slog.NewTextHandler(io.Discard, nil)),
		Stop: func(string) { stopped++ }, Start: func() {},
		Quorum:  func(context.Context) bool { return false },
		Answers: func(context.Context, string) bool { return false },
	}
	t0 := time.Now()
	for i := range 10 {
		f.Check(context.Background(), t0.Add(time.Duration(i)*time.Second))
	}
	if stopped != 0 {
		t.Fatal("a cut-off replica was fenced; only a primary must be")
	}
}
