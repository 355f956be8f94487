// Package faults injects the failures nodeha must survive into a
// testcluster (a killed container, a killed or cut-off host, a graceful
// stop, a planned switchover) while a writer and a probe watch, and
// measures what applications saw: the write pause, the time until the
// cluster is whole again, acknowledged rows lost and moments with two
// writable primaries. The benchmark (internal/cmd/bench) and the
// end-to-end fault suite share it.
package faults

import (
	"context"
	"fmt"
	"os/exec"
	"strings"
	"time"

	"github.com/nodeha/nodeha/internal/testcluster"
)

// Fault is one kind of failure of the primary's host.
type Fault struct {
	Name string
	// Inject breaks the primary's host h.
	Inject func(ctx context.Context, c *testcluster.Cluster, h *testcluster.Host) error
	// Heal repairs it (restart, reconnect), after writes resumed elsewhere.
	Heal func(ctx context.Context, c *testcluster.Cluster, h *testcluster.Host) error
}

// All is every fault, in the order the benchmark runs them.
var All = []Fault{
	{
		Name: "kill-container",
		Inject: func(ctx context.Context, c *testcluster.Cluster, h *testcluster.Host) error {
			_, err := testcluster.Docker(ctx, "kill", h.Spilo)
			return err
		},
		Heal: noop, // nodeha restarts it
	},
	{
		Name: "kill-host",
		Inject: func(ctx context.Context, c *testcluster.Cluster, h *testcluster.Host) error {
			// Every process of the host at once: nodeha, its etcd member,
			// the Spilo container, and the host's network stack.
			_, err := testcluster.Docker(ctx, "kill", h.Holder, h.Nodeha, h.Spilo)
			return err
		},
		Heal: func(ctx context.Context, c *testcluster.Cluster, h *testcluster.Host) error {
			if _, err := testcluster.Docker(ctx, "start", h.Holder); err != nil {
				return err
			}
			return h.StartNodeha(ctx)
		},
	},
	{
		Name: "partition",
		Inject: func(ctx context.Context, c *testcluster.Cluster, h *testcluster.Host) error {
			_, err := testcluster.Docker(ctx, "network", "disconnect", "-f", c.Network(), h.Holder)
			return err
		},
		Heal: func(ctx context.Context, c *testcluster.Cluster, h *testcluster.Host) error {
			_, err := testcluster.Docker(ctx, "network", "connect", "--ip", h.IP, c.Network(), h.Holder)
			return err
		},
	},
	{
		Name: "graceful-stop",
		Inject: func(ctx context.Context, c *testcluster.Cluster, h *testcluster.Host) error {
			return h.Signal(ctx, "TERM", false)
		},
		Heal: func(ctx context.Context, c *testcluster.Cluster, h *testcluster.Host) error {
			if _, err := testcluster.Docker(ctx, "wait", h.Nodeha); err != nil {
				return err
			}
			return h.StartNodeha(ctx)
		},
	},
	{
		Name: "switchover",
		Inject: func(ctx context.Context, c *testcluster.Cluster, h *testcluster.Host) error {
			out, err := exec.CommandContext(ctx, "docker", "exec", h.Nodeha, "/nodeha", "switchover").CombinedOutput()
			if err != nil {
				return fmt.Errorf("nodeha switchover: %v: %s", err, out)
			}
			return nil
		},
		Heal: noop,
	},
}

func noop(context.Context, *testcluster.Cluster, *testcluster.Host) error { return nil }

// ByName finds faults by name; "all" is every fault.
func ByName(names string) ([]Fault, error) {
	if names == "all" || names == "" {
		return All, nil
	}
	var out []Fault
	for _, n := range strings.Split(names, ",") {
		found := false
		for _, f := range All {
			if f.Name == n {
				out, found = append(out, f), true
			}
		}
		if !found {
			return nil, fmt.Errorf("unknown fault %q", n)
		}
	}
	return out, nil
}

// Result is one trial.
type Result struct {
	Variant   string    `json:"variant"`
	Fault     string    `json:"fault"`
	Trial     int       `json:"trial"`
	OldLeader string    `json:"old_leader"`
	NewLeader string    `json:"new_leader"`
	PauseMS   int64     `json:"write_pause_ms"`  // longest gap between acknowledged writes after the fault
	ResumeMS  int64     `json:"resume_ms"`       // fault to the first write acknowledged by a new primary (or the same, healed)
	WholeMS   int64     `json:"whole_ms"`        // fault to one leader with every replica streaming again
	Acked     int       `json:"acked"`           // acknowledged writes during the trial
	Lost      int       `json:"lost"`            // acknowledged writes missing afterwards
	Overlaps  []Overlap `json:"overlaps"`        // probe rounds with two writable hosts
	Error     string    `json:"error,omitempty"` // the trial could not complete
}

// Setup creates the application role and table the writer uses.
func Setup(ctx context.Context, leader *testcluster.Host, password string) error {
	// The password goes to psql's stdin as a SCRAM verifier: never in a
	// process's arguments, never in clear to the server.
	if err := leader.EnsureRole(ctx, "bench", password); err != nil {
		return err
	}
	for _, sql := range []string{
		"create table if not exists bench_writes (trial int, seq bigint, at timestamptz default clock_timestamp(), primary key (trial, seq))",
		"grant insert, select on bench_writes to bench",
	} {
		if _, err := leader.Psql(ctx, sql); err != nil {
			return err
		}
	}
	return nil
}

// Client is how a trial's writer reaches the cluster: the connection
// string for role bench, given the trial's primary before the fault.
type Client func(leader *testcluster.Host) string

// MultiHost is a client with libpq's multi-host string (every host, with
// target_session_attrs=read-write): dsn as it is.
func MultiHost(dsn string) Client { return func(*testcluster.Host) string { return dsn } }

// OneEndpoint is a client that knows one host's address only and goes
// through its read-write endpoint, as psql -h HOST -p 5433 would: a host
// that is not the trial's primary (so the fault does not take the
// client's only address away). endpointDSN builds the string for a host.
func OneEndpoint(c *testcluster.Cluster, endpointDSN func(ip string) string) Client {
	return func(leader *testcluster.Host) string {
		for _, h := range c.Hosts {
			if h != leader {
				return endpointDSN(h.IP)
			}
		}
		return endpointDSN(leader.IP)
	}
}

// Run runs one trial of f against c, the writer connecting as client says.
func Run(ctx context.Context, c *testcluster.Cluster, f Fault, client Client, password, variant string, trial int) Result {
	r := Result{Variant: variant, Fault: f.Name, Trial: trial}
	leader, err := c.WaitWhole(ctx, 3*time.Minute)
	if err != nil {
		r.Error = "before the fault: " + err.Error()
		return r
	}
	if err := c.WaitHealthy(ctx, 2*time.Minute); err != nil {
		r.Error = "before the fault: " + err.Error()
		return r
	}
	r.OldLeader = leader.Name
	// A settled cluster: the primary's container has run for 12 s. One that
	// dies younger restarts after a doubled delay (Docker's rule, nodeha's
	// runner), so trials back to back would measure the crash-loop backoff
	// of the trial before, not the fault.
	if out, err := testcluster.Docker(ctx, "inspect", "-f", "{{.State.StartedAt}}", leader.Spilo); err == nil {
		if started, err := time.Parse(time.RFC3339Nano, out); err == nil {
			sleep(ctx, time.Until(started.Add(12*time.Second)))
		}
	}

	w, err := NewWriter(client(leader), password, trial)
	if err != nil {
		r.Error = err.Error()
		return r
	}
	probe := &Probe{Cluster: c, Interval: 200 * time.Millisecond}
	lctx, stopLoad := context.WithCancel(ctx)
	wdone, pdone := make(chan struct{}), make(chan struct{})
	go func() { w.Run(lctx); close(wdone) }()
	go func() { probe.Run(lctx); close(pdone) }()
	stop := func() { stopLoad(); <-wdone; <-pdone }

	// Steady writes on the old primary first.
	deadline := time.Now().Add(30 * time.Second)
	for len(w.Acks()) < 20 && time.Now().Before(deadline) {
		sleep(ctx, 100*time.Millisecond)
	}
	sleep(ctx, time.Second)

	t0 := time.Now()
	if err := f.Inject(ctx, c, leader); err != nil {
		stop()
		r.Error = "inject: " + err.Error()
		return r
	}
	// Writes resume: the first ack after t0 from another host, or (a
	// container restarted in place) from the same host after a break.
	resumed := false
	for d := time.Now().Add(3 * time.Minute); time.Now().Before(d) && !resumed; sleep(ctx, 50*time.Millisecond) {
		if at, ok := resumedAt(w.Acks(), t0, leader.IP, f.Name == "kill-container"); ok {
			r.ResumeMS = at.Sub(t0).Milliseconds()
			resumed = true
		}
	}
	if !resumed {
		r.Error = "writes did not resume within 3m"
	}
	if err := f.Heal(ctx, c, leader); err != nil && r.Error == "" {
		r.Error = "heal: " + err.Error()
	}
	newLeader, err := c.WaitWhole(ctx, 4*time.Minute)
	if err != nil {
		if r.Error == "" {
			r.Error = "after the fault: " + err.Error()
		}
	} else {
		r.WholeMS = time.Since(t0).Milliseconds()
		r.NewLeader = newLeader.Name
	}
	sleep(ctx, 500*time.Millisecond)
	stop()

	acks := w.Acks()
	r.Acked = len(acks)
	r.PauseMS = LongestGapAfter(acks, t0).Milliseconds()
	r.Overlaps = probe.Overlaps()
	counter := newLeader
	if counter == nil {
		// Not whole (a replica cannot follow, say): the rows that count
		// are still the ones the only primary has.
		if st := c.Observe(ctx); len(st.Leaders) == 1 {
			counter = st.Leaders[0]
		}
	}
	if counter != nil {
		lost, err := Missing(ctx, counter, trial, acks)
		if err != nil && r.Error == "" {
			r.Error = "count rows: " + err.Error()
		}
		r.Lost = lost
	}
	return r
}

// resumedAt finds the first write acknowledged after t0 by a host other
// than old, or, when sameHost may resume, by old after a break of at least
// 100 ms (its container restarted in place).
func resumedAt(acks []Ack, t0 time.Time, old string, sameHost bool) (time.Time, bool) {
	for i := 1; i < len(acks); i++ {
		if !acks[i].At.After(t0) {
			continue
		}
		if acks[i].Host != old || sameHost && acks[i].At.Sub(acks[i-1].At) >= 100*time.Millisecond {
			return acks[i].At, true
		}
	}
	return time.Time{}, false
}
