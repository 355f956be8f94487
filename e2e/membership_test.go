//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nodeha/nodeha/internal/faults"
	"github.com/nodeha/nodeha/internal/testcluster"
	"github.com/nodeha/nodeha/trust"
)

// TestMembership changes a running cluster's hosts with nodeha's own
// commands, every step on real hosts: grow 3 -> 4 with `nodeha join`, a
// host joining twice, shrink with `nodeha leave` on the primary under a
// writer, rejoin after leave, replace a host killed for good (`nodeha
// remove`, two fresh hosts joining at the same moment), and joins that
// must be refused.
func TestMembership(t *testing.T) {
	ctx := context.Background()
	c, err := testcluster.New(clusterOpts("m", 10, testcluster.Options{
		Hosts: 3, BaseDir: t.TempDir(),
		Scope: "e2e-members", Env: []string{"NODEHA_SYNCHRONOUS=true"},
	}))
	if err != nil {
		t.Fatal(err)
	}
	c.Down(ctx, false)
	var all []*testcluster.Host // every host ever started, for the logs
	t.Cleanup(func() {
		if t.Failed() {
			for _, h := range all {
				t.Logf("=== nodeha log of %s ===\n%s", h.Name, tail(h.Logs(ctx), 50))
			}
		}
		c.Down(ctx, false)
	})
	all = append(all, c.Hosts...)
	if err := c.Up(ctx); err != nil {
		t.Fatal(err)
	}
	leader := mustWhole(t, c, 4*time.Minute)
	if err := faults.Setup(ctx, leader, appPassword); err != nil {
		t.Fatal(err)
	}
	mustPsql(t, leader, "create table members_rows (v text)")
	mustPsql(t, leader, "insert into members_rows values ('before the changes')")

	// join starts a new host that joins through the first hosts.
	join := func(t *testing.T) *testcluster.Host {
		t.Helper()
		h := c.NewHost("NODEHA_JOIN=true")
		all = append(all, h)
		return h
	}
	// members checks that every host's etcd member sees n voting members.
	members := func(t *testing.T, n int) {
		t.Helper()
		eventually(t, 2*time.Minute, func() error {
			for _, h := range c.Hosts {
				rep, err := h.Health(ctx)
				if err != nil {
					return err
				}
				if e := rep.Etcd; e == nil || len(e.Members) != n || e.Voters != n || e.Learner {
					return fmt.Errorf("%s: etcd %+v, want %d voting members", h.Name, rep.Etcd, n)
				}
				if !rep.Healthy {
					return fmt.Errorf("%s: unhealthy: %v", h.Name, rep.Reasons)
				}
			}
			return nil
		})
	}
	// status runs `nodeha status` against h's socket.
	status := func(h *testcluster.Host) string {
		out, _ := exec.Command(nodehaBin, "status", "--socket", h.Socket()).CombinedOutput()
		return string(out)
	}
	// readsRow checks that h has the row written before any change.
	readsRow := func(t *testing.T, h *testcluster.Host) {
		t.Helper()
		eventually(t, time.Minute, func() error {
			got, err := h.Psql(ctx, "select v from members_rows")
			if err != nil || got != "before the changes" {
				return fmt.Errorf("%s reads %q (%v)", h.Name, got, err)
			}
			return nil
		})
	}

	t.Run("GrowToFour", func(t *testing.T) {
		start := time.Now()
		h4 := join(t)
		if err := h4.Start(ctx); err != nil {
			t.Fatal(err)
		}
		mustWhole(t, c, 3*time.Minute)
		t.Logf("pg4 joined: a streaming replica %.1fs after its nodeha started", time.Since(start).Seconds())
		readsRow(t, h4)
		members(t, 4)
		for _, h := range c.Hosts {
			if out := status(h); !strings.Contains(out, "4 voting of 4 members") {
				t.Errorf("nodeha status on %s does not show four members:\n%s", h.Name, out)
			}
		}
		if !strings.Contains(h4.Logs(ctx), "promoted this learner") {
			t.Error("pg4 did not join as a learner promoted when caught up")
		}
	})

	t.Run("JoinTwice", func(t *testing.T) {
		h4 := c.HostByName("pg4")
		pm := mustPsql(t, h4, "select pg_postmaster_start_time()")
		if err := h4.RecreateNodeha(ctx, "NODEHA_JOIN=true"); err != nil {
			t.Fatal(err)
		}
		members(t, 4)
		mustWhole(t, c, 2*time.Minute)
		if got := mustPsql(t, h4, "select pg_postmaster_start_time()"); got != pm {
			t.Errorf("joining again restarted PostgreSQL (%s, was %s)", got, pm)
		}
	})

	t.Run("LeaveOfThePrimaryUnderWrites", func(t *testing.T) {
		old := mustWhole(t, c, time.Minute)
		ca, err := c.CAFile()
		if err != nil {
			t.Fatal(err)
		}
		dsn := strings.TrimSpace(mustRun(t, "dsn", "--user", "bench", "--peers", strings.Join(ips(c.Hosts), ","), "--sslrootcert", ca))
		w, stopWriter := startWriter(t, dsn, 7001)
		t0 := time.Now()
		out, err := exec.Command(nodehaBin, "leave", "--socket", old.Socket()).CombinedOutput()
		t.Logf("nodeha leave on the primary %s (%.1fs):\n%s", old.Name, time.Since(t0).Seconds(), out)
		if err != nil {
			t.Fatal(err)
		}
		for _, want := range []string{"switched over to", "removed etcd member", "removed Patroni member " + old.Name, "Nothing was deleted"} {
			if !strings.Contains(string(out), want) {
				t.Errorf("leave says nothing about %q", want)
			}
		}
		c.Drop(old)
		if _, err := testcluster.Docker(ctx, "wait", old.Nodeha); err != nil {
			t.Fatal(err)
		}
		if code, _ := old.NodehaExitCode(ctx); code != 0 {
			t.Errorf("nodeha on %s exited %d after leave, want 0", old.Name, code)
		}
		leader := mustWhole(t, c, 2*time.Minute)
		eventually(t, 30*time.Second, func() error {
			if acks := w.Acks(); len(acks) == 0 || acks[len(acks)-1].At.Before(t0.Add(time.Second)) || time.Since(acks[len(acks)-1].At) > time.Second {
				return fmt.Errorf("writes have not resumed")
			}
			return nil
		})
		stopWriter()
		acks := w.Acks()
		t.Logf("write pause during leave of the primary: %.2fs (%d writes acknowledged)", faults.LongestGapAfter(acks, t0).Seconds(), len(acks))
		if lost, err := faults.Missing(ctx, leader, 7001, acks); err != nil || lost != 0 {
			t.Fatalf("%d acknowledged rows missing after the leave (%v)", lost, err)
		}
		members(t, 3)
		if _, err := os.Stat(filepath.Join(old.Dir, "postgresql", "pgdata", "PG_VERSION")); err != nil {
			t.Errorf("leave touched the PostgreSQL data of %s: %v", old.Name, err)
		}
		// Until it joins again, nodeha refuses to run it (with its own
		// settings, which name it among the peers).
		if err := old.RecreateNodeha(ctx, "NODEHA_PEERS="+strings.Join(append(ips(c.Hosts), old.IP), ",")); err != nil {
			t.Fatal(err)
		}
		testcluster.Docker(ctx, "wait", old.Nodeha)
		if logs := old.Logs(ctx); !strings.Contains(logs, "this host left its cluster") {
			t.Errorf("nodeha run on a host that left:\n%s", tail(logs, 10))
		}
	})

	t.Run("RejoinAfterLeave", func(t *testing.T) {
		var old *testcluster.Host
		for _, h := range all[:4] {
			if !slices.Contains(c.Hosts, h) {
				old = h
			}
		}
		if old == nil {
			t.Fatal("no host left in the step before")
		}
		if err := old.RecreateNodeha(ctx, "NODEHA_JOIN=true"); err != nil {
			t.Fatal(err)
		}
		c.Add(old)
		mustWhole(t, c, 3*time.Minute)
		members(t, 4)
		readsRow(t, old)
		if logs := old.Logs(ctx); !strings.Contains(logs, "moved aside") {
			t.Errorf("rejoin did not move the old etcd data aside:\n%s", tail(logs, 20))
		}
		if m, _ := filepath.Glob(filepath.Join(old.Dir, "nodeha", "etcd.stale-*")); len(m) != 1 {
			t.Errorf("stale etcd data dirs kept: %v, want one", m)
		}
	})

	t.Run("ReplaceADeadHost", func(t *testing.T) {
		leader := mustWhole(t, c, time.Minute)
		var dead *testcluster.Host
		for _, h := range c.Hosts {
			if h != leader {
				dead = h
			}
		}
		if err := dead.Kill(ctx); err != nil {
			t.Fatal(err)
		}
		c.Drop(dead)
		// Refused while it answers is covered by the unit of work below:
		// the dead host answers nothing.
		out := mustRun(t, "remove", dead.Name, "--socket", leader.Socket())
		t.Logf("nodeha remove %s: %s", dead.Name, out)
		if !strings.Contains(out, "removed etcd member") {
			t.Errorf("remove did not remove the etcd member: %s", out)
		}
		members(t, 3)
		if out, err := exec.Command(nodehaBin, "remove", leader.Name, "--socket", leader.Socket()).CombinedOutput(); err == nil {
			t.Errorf("remove of this host itself was accepted: %s", out)
		}

		// Two fresh hosts, new names, join at the same moment.
		a, b := join(t), join(t)
		start := time.Now()
		var wg sync.WaitGroup
		errs := make([]error, 2)
		for i, h := range []*testcluster.Host{a, b} {
			wg.Add(1)
			go func() { defer wg.Done(); errs[i] = h.Start(ctx) }()
		}
		wg.Wait()
		for _, err := range errs {
			if err != nil {
				t.Fatal(err)
			}
		}
		mustWhole(t, c, 4*time.Minute)
		t.Logf("%s and %s joined at once: streaming replicas %.1fs after start", a.Name, b.Name, time.Since(start).Seconds())
		members(t, 5)
		readsRow(t, a)
		readsRow(t, b)
	})

	t.Run("RefusedJoins", func(t *testing.T) {
		leader := mustWhole(t, c, time.Minute)
		before := mustHealth(t, leader).Etcd.Members
		for _, tc := range []struct {
			name, token, want string
		}{
			{"token of another cluster", trust.GenerateToken(), "is not a host of this cluster: its certificate is not from the token's CA"},
		} {
			t.Run(tc.name, func(t *testing.T) {
				h := c.NewHost("NODEHA_JOIN=true", "NODEHA_TOKEN="+tc.token)
				c.Drop(h)
				all = append(all, h)
				if err := os.MkdirAll(h.Dir, 0o755); err != nil {
					t.Fatal(err)
				}
				if err := h.Start(ctx); err != nil {
					t.Fatal(err)
				}
				testcluster.Docker(ctx, "wait", h.Nodeha)
				logs := h.Logs(ctx)
				if code, _ := h.NodehaExitCode(ctx); code == 0 || !strings.Contains(logs, tc.want) {
					t.Errorf("exit %d, log:\n%s", code, tail(logs, 10))
				}
				if ents, _ := os.ReadDir(filepath.Join(h.Dir, "nodeha")); len(ents) != 0 {
					t.Errorf("a refused join wrote into its data dir: %v", ents)
				}
				h.Kill(ctx)
			})
		}
		if after := mustHealth(t, leader).Etcd.Members; !slices.Equal(before, after) {
			t.Errorf("a refused join changed the membership: %v -> %v", before, after)
		}
	})
}

func ips(hs []*testcluster.Host) []string {
	var out []string
	for _, h := range hs {
		out = append(out, h.IP)
	}
	return out
}

func mustRun(t *testing.T, args ...string) string {
	t.Helper()
	out, err := exec.Command(nodehaBin, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("nodeha %v: %v\n%s", args, err, out)
	}
	return string(out)
}

// TestQuorumLoss loses two of three hosts for good: the survivor has no
// etcd quorum, so no primary. `nodeha recover` there restarts its member
// as a one-member cluster from its own data, Patroni resumes with a
// writable primary, and the two others come back with `nodeha join`.
func TestQuorumLoss(t *testing.T) {
	ctx := context.Background()
	c, err := testcluster.New(clusterOpts("q", 11, testcluster.Options{
		Hosts: 3, BaseDir: t.TempDir(), Scope: "e2e-quorum",
	}))
	if err != nil {
		t.Fatal(err)
	}
	c.Down(ctx, false)
	hosts := append([]*testcluster.Host(nil), c.Hosts...)
	t.Cleanup(func() {
		if t.Failed() {
			for _, h := range hosts {
				t.Logf("=== nodeha log of %s ===\n%s", h.Name, tail(h.Logs(ctx), 40))
				t.Logf("=== spilo log of %s ===\n%s", h.Name, h.SpiloLogs(ctx, 60))
			}
		}
		c.Down(ctx, false)
	})
	if err := c.Up(ctx); err != nil {
		t.Fatal(err)
	}
	survivor := mustWhole(t, c, 4*time.Minute)
	mustPsql(t, survivor, "create table quorum_rows (v text)")
	mustPsql(t, survivor, "insert into quorum_rows values ('before the loss')")
	var dead []*testcluster.Host
	for _, h := range c.Hosts {
		if h != survivor {
			dead = append(dead, h)
		}
	}
	eventually(t, time.Minute, func() error { // both replicas have the row
		for _, h := range dead {
			if got, _ := h.Psql(ctx, "select count(*) from quorum_rows"); got != "1" {
				return fmt.Errorf("%s has not replayed the row", h.Name)
			}
		}
		return nil
	})
	for _, h := range dead {
		if err := h.Kill(ctx); err != nil {
			t.Fatal(err)
		}
		c.Drop(h)
	}
	// Without a quorum the survivor stops being a writable primary.
	eventually(t, time.Minute, func() error {
		if out, err := survivor.Psql(ctx, "select pg_is_in_recovery()"); err == nil && out == "f" {
			return fmt.Errorf("%s still accepts writes without an etcd quorum", survivor.Name)
		}
		return nil
	})
	if rep := mustHealth(t, survivor); rep.Healthy || rep.Etcd.HasQuorum {
		t.Fatalf("survivor healthy or with quorum after losing two of three: %+v", rep.Etcd)
	}

	// Refused while nodeha runs; then stop it and recover.
	if out, err := survivor.RunOnce(ctx, "recover"); err == nil || !strings.Contains(out, "stop nodeha first") {
		t.Errorf("recover with nodeha running: %v\n%s", err, out)
	}
	if _, err := testcluster.Docker(ctx, "stop", "-t", "180", survivor.Nodeha); err != nil {
		t.Fatal(err)
	}
	out, err := survivor.RunOnce(ctx, "recover")
	t.Logf("nodeha recover on %s:\n%s", survivor.Name, tail(out, 4))
	if err != nil || !strings.Contains(out, "one-member cluster") {
		t.Fatalf("recover: %v", err)
	}
	start := time.Now()
	if err := survivor.StartNodeha(ctx); err != nil {
		t.Fatal(err)
	}
	eventually(t, 3*time.Minute, func() error {
		if _, err := survivor.Psql(ctx, "insert into quorum_rows values ('after the recovery')"); err != nil {
			return fmt.Errorf("%s does not accept writes yet: %v", survivor.Name, err)
		}
		return nil
	})
	t.Logf("writable primary on %s %.1fs after nodeha started on the recovered member", survivor.Name, time.Since(start).Seconds())

	// The two others come back as new members, with their old etcd data
	// moved aside, and follow the survivor.
	for _, h := range dead {
		h.Extra = []string{"NODEHA_JOIN=true"}
		c.Add(h)
	}
	for _, h := range dead {
		if err := h.Start(ctx); err != nil {
			t.Fatal(err)
		}
	}
	leader := mustWhole(t, c, 4*time.Minute)
	if leader != survivor {
		t.Errorf("primary after the rejoin is %s, want the recovered %s", leader.Name, survivor.Name)
	}
	for _, h := range c.Hosts {
		eventually(t, time.Minute, func() error {
			if got, err := h.Psql(ctx, "select count(*) from quorum_rows"); err != nil || got != "2" {
				return fmt.Errorf("%s: %q rows (%v), want both", h.Name, got, err)
			}
			return nil
		})
	}
	for _, h := range dead {
		if m, _ := filepath.Glob(filepath.Join(h.Dir, "nodeha", "etcd.stale-*")); len(m) != 1 {
			t.Errorf("%s: stale etcd data dirs %v, want one kept", h.Name, m)
		}
	}
	// Two learners are promoted one after the other, each once caught up.
	eventually(t, time.Minute, func() error {
		if rep := mustHealth(t, survivor); len(rep.Etcd.Members) != 3 || rep.Etcd.Voters != 3 {
			return fmt.Errorf("after the rejoin etcd has %v (%d voters), want three", rep.Etcd.Members, rep.Etcd.Voters)
		}
		return nil
	})

	// The same loss again, recovered this time from an etcd snapshot taken
	// on demand (`nodeha snapshot`) rather than from the member's own data.
	out = mustRun(t, "snapshot", "--socket", survivor.Socket())
	snap := strings.TrimSpace(out)
	if st, err := os.Stat(snap); err != nil || st.Size() == 0 || !strings.HasPrefix(snap, filepath.Join(survivor.Dir, "nodeha", "snapshots")) {
		t.Fatalf("nodeha snapshot: %q (%v)", out, err)
	}
	for _, h := range dead {
		h.Kill(ctx)
		c.Drop(h)
	}
	if _, err := testcluster.Docker(ctx, "stop", "-t", "180", survivor.Nodeha); err != nil {
		t.Fatal(err)
	}
	out, err = survivor.RunOnce(ctx, "recover", "--from-snapshot", snap)
	if err != nil || !strings.Contains(out, "one-member cluster") || !strings.Contains(out, "moved aside") {
		t.Fatalf("recover --from-snapshot: %v\n%s", err, tail(out, 10))
	}
	if m, _ := filepath.Glob(filepath.Join(survivor.Dir, "nodeha", "etcd.before-restore-*")); len(m) != 1 {
		t.Errorf("the member's own data was not kept aside: %v", m)
	}
	start = time.Now()
	if err := survivor.StartNodeha(ctx); err != nil {
		t.Fatal(err)
	}
	eventually(t, 3*time.Minute, func() error {
		if _, err := survivor.Psql(ctx, "insert into quorum_rows values ('after the restore')"); err != nil {
			return fmt.Errorf("%s does not accept writes yet: %v", survivor.Name, err)
		}
		return nil
	})
	t.Logf("writable primary on %s %.1fs after nodeha started on the member restored from %s", survivor.Name, time.Since(start).Seconds(), filepath.Base(snap))
	if got := mustPsql(t, survivor, "select count(*) from quorum_rows"); got != "3" {
		t.Errorf("rows after the restore: %s, want 3", got)
	}
}
