package spilo_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	cerrdefs "github.com/containerd/errdefs"

	"github.com/nodeha/nodeha/spilo"
)

// startRunner starts a runner on d for a spec rendered from args, with a
// short reconcile interval. The runner is closed, leaving the container,
// when the test ends.
func startRunner(t *testing.T, d *fakeDocker, interval time.Duration, args ...string) (*spilo.Runner, *spilo.Spec) {
	t.Helper()
	spec, _ := renderSpec(t, testConfig(t, append([]string{"--container-name=pg"}, args...)...))
	log, _ := testLogger(t)
	r := spilo.NewRunner(d, spec, log)
	r.Interval = interval
	r.Start(context.Background())
	t.Cleanup(func() { r.Close(spilo.LeaveRunning) })
	return r, spec
}

// newTestRunner is a runner on d, not yet started, for tests that set its
// hooks first; it is closed, leaving the container, when the test ends.
func newTestRunner(t *testing.T, d *fakeDocker) (*spilo.Runner, *syncBuffer) {
	t.Helper()
	spec, _ := renderSpec(t, testConfig(t, "--container-name=pg"))
	log, buf := testLogger(t)
	r := spilo.NewRunner(d, spec, log)
	r.Interval = 50 * time.Millisecond
	t.Cleanup(func() { r.Close(spilo.LeaveRunning) })
	return r, buf
}

func waitReady(t *testing.T, r *spilo.Runner) {
	t.Helper()
	select {
	case <-r.Ready():
	case <-time.After(15 * time.Second):
		t.Fatalf("runner not ready; status %+v", r.Status())
	}
}

func TestRunnerCreatesMissingContainer(t *testing.T) {
	d := newFakeDocker()
	r, spec := startRunner(t, d, 50*time.Millisecond)
	waitReady(t, r)

	c, ok := d.container("pg")
	if !ok {
		t.Fatal("no container named pg")
	}
	if got, want := d.Calls(), []string{"create pg", "start " + c.id}; !slices.Equal(got, want) {
		t.Errorf("calls = %q, want %q", got, want)
	}
	if c.config.Image != spec.Config.Image || c.config.Labels[spilo.LabelSpecHash] != spec.Hash {
		t.Errorf("created image %q, hash label %q; want %q, %q", c.config.Image, c.config.Labels[spilo.LabelSpecHash], spec.Config.Image, spec.Hash)
	}
	waitFor(t, "status running", func() bool { return r.Status().Running })
	st := r.Status()
	if st.ID != c.id || st.State != "running" || st.SpecHash != spec.Hash || st.Restarts != 0 || st.LastExitCode != nil {
		t.Errorf("status = %+v", st)
	}
}

func TestRunnerAdoptsMatchingContainer(t *testing.T) {
	d := newFakeDocker()
	spec, _ := renderSpec(t, testConfig(t, "--container-name=pg"))
	id := d.add("pg", spec.Hash, true)

	r, _ := startRunner(t, d, 20*time.Millisecond)
	waitReady(t, r)
	// Let several reconciles pass: none of them may touch the container.
	waitFor(t, "five reconciles", func() bool { return d.Inspects() >= 5 })
	if calls := d.Calls(); len(calls) != 0 {
		t.Errorf("adopting a matching running container made calls %q, want none", calls)
	}
	st := r.Status()
	if st.ID != id || !st.Running || st.Restarts != 0 {
		t.Errorf("status = %+v, want the adopted container %s running", st, id)
	}
}

func TestRunnerRecreatesChangedContainer(t *testing.T) {
	d := newFakeDocker()
	oldID := d.add("pg", "0123456789abcdef", true)

	r, spec := startRunner(t, d, 50*time.Millisecond, "--stop-timeout=150s")
	waitReady(t, r)

	c, ok := d.container("pg")
	if !ok || c.id == oldID {
		t.Fatalf("container pg not replaced (found %v, id %s)", ok, c.id)
	}
	if c.config.Labels[spilo.LabelSpecHash] != spec.Hash || !c.state.Running {
		t.Errorf("new container: hash %q running %v; want %q running", c.config.Labels[spilo.LabelSpecHash], c.state.Running, spec.Hash)
	}
	want := []string{"stop " + oldID + " 150", "remove " + oldID, "create pg", "start " + c.id}
	if got := d.Calls(); !slices.Equal(got, want) {
		t.Errorf("calls = %q, want %q", got, want)
	}
}

func TestRunnerRestartsContainerThatDies(t *testing.T) {
	d := newFakeDocker()
	// A long interval: only the die event can trigger the restart.
	r, _ := startRunner(t, d, time.Hour)
	waitReady(t, r)
	waitSubscribed(t, d)
	c, _ := d.container("pg")
	waitFor(t, "the runner to settle after create", func() bool { return d.Inspects() >= 2 })

	d.kill("pg", 137)
	waitFor(t, "one restart", func() bool { st := r.Status(); return st.Restarts == 1 && st.Running })

	st := r.Status()
	if st.LastExitCode == nil || *st.LastExitCode != 137 {
		t.Errorf("LastExitCode = %v, want 137", st.LastExitCode)
	}
	if st.LastExitAt.IsZero() {
		t.Error("LastExitAt not set")
	}
	if st.ID != c.id {
		t.Errorf("status ID = %s, want the same container %s", st.ID, c.id)
	}
	// Restarted in place: one create, one start at create, one restart.
	if got, want := d.Calls(), []string{"create pg", "start " + c.id, "start " + c.id}; !slices.Equal(got, want) {
		t.Errorf("calls = %q, want %q", got, want)
	}
}

func TestRunnerRestartsExitedContainerAndCountsExits(t *testing.T) {
	d := newFakeDocker()
	spec, _ := renderSpec(t, testConfig(t, "--container-name=pg"))
	id := d.add("pg", spec.Hash, false) // found exited, with exit code 1

	r, _ := startRunner(t, d, 50*time.Millisecond)
	waitReady(t, r)
	waitFor(t, "first restart", func() bool { return r.Status().Restarts == 1 })
	if st := r.Status(); st.LastExitCode == nil || *st.LastExitCode != 1 {
		t.Errorf("LastExitCode = %v, want 1 from the exited container", st.LastExitCode)
	}

	d.kill("pg", 3)
	waitFor(t, "second restart", func() bool { st := r.Status(); return st.Restarts == 2 && st.Running })
	if st := r.Status(); st.LastExitCode == nil || *st.LastExitCode != 3 {
		t.Errorf("LastExitCode = %v, want 3 from the last exit", st.LastExitCode)
	}
	if got, want := d.Calls(), []string{"start " + id, "start " + id}; !slices.Equal(got, want) {
		t.Errorf("calls = %q, want %q (no create: the container is reused)", got, want)
	}
}

func TestRunnerRetriesFailedCreate(t *testing.T) {
	d := newFakeDocker()
	d.createErr = errors.New("No such image: ghcr.io/zalando/spilo-15:3.0-p1")
	r, _ := startRunner(t, d, 50*time.Millisecond)

	waitFor(t, "the error in the status", func() bool { return r.Status().LastError != "" })
	if e := r.Status().LastError; !strings.Contains(e, `spilo: create container "pg"`) || !strings.Contains(e, "No such image") {
		t.Errorf("LastError = %q", e)
	}
	d.mu.Lock()
	d.createErr = nil
	d.mu.Unlock()
	waitReady(t, r)
	waitFor(t, "the error to clear", func() bool { return r.Status().LastError == "" })
	if n := d.count("create"); n < 2 {
		t.Errorf("%d creates, want a retry", n)
	}
}

func TestRunnerResubscribesToEvents(t *testing.T) {
	d := newFakeDocker()
	r, _ := startRunner(t, d, 50*time.Millisecond)
	waitReady(t, r)
	waitSubscribed(t, d)
	d.breakStreams()
	waitSubscribed(t, d) // again
}

func waitSubscribed(t *testing.T, d *fakeDocker) {
	t.Helper()
	select {
	case <-d.subscribed:
	case <-time.After(15 * time.Second):
		t.Fatal("the runner did not subscribe to container events")
	}
}

func TestRunnerCloseStopsContainer(t *testing.T) {
	d := newFakeDocker()
	r, _ := startRunner(t, d, 50*time.Millisecond, "--stop-timeout=150s")
	waitReady(t, r)

	if err := r.Close(spilo.StopContainer); err != nil {
		t.Fatal(err)
	}
	if c, _ := d.container("pg"); c.state.Running {
		t.Error("container still running after Close(StopContainer)")
	}
	// Stopped by name, with the spec's timeout so Patroni can shut down.
	if n := d.count("stop pg 150"); n != 1 {
		t.Errorf("calls = %q, want one stop of pg with timeout 150", d.Calls())
	}
	if err := r.Close(spilo.StopContainer); err != nil {
		t.Errorf("second Close = %v", err)
	}
	if n := d.count("stop"); n != 1 {
		t.Errorf("%d stops after closing twice, want 1", n)
	}
}

func TestRunnerCloseLeaveRunning(t *testing.T) {
	d := newFakeDocker()
	r, _ := startRunner(t, d, 50*time.Millisecond)
	waitReady(t, r)

	if err := r.Close(spilo.LeaveRunning); err != nil {
		t.Fatal(err)
	}
	// The first mode wins.
	if err := r.Close(spilo.StopContainer); err != nil {
		t.Fatal(err)
	}
	if n := d.count("stop"); n != 0 {
		t.Errorf("calls = %q, want no stop", d.Calls())
	}
	if c, _ := d.container("pg"); !c.state.Running {
		t.Error("container stopped by Close(LeaveRunning)")
	}
}

func TestRunnerCloseErrors(t *testing.T) {
	spec, _ := renderSpec(t, testConfig(t, "--container-name=pg"))
	log, _ := testLogger(t)

	// Nothing to stop is not an error.
	d := newFakeDocker()
	if err := spilo.NewRunner(d, spec, log).Close(spilo.StopContainer); err != nil {
		t.Errorf("Close with no container = %v, want nil", err)
	}

	d = newFakeDocker()
	d.add("pg", spec.Hash, true)
	d.stopErr = fmt.Errorf("engine gone: %w", cerrdefs.ErrUnavailable)
	err := spilo.NewRunner(d, spec, log).Close(spilo.StopContainer)
	if err == nil || !strings.Contains(err.Error(), `spilo: stop container "pg"`) || !cerrdefs.IsUnavailable(err) {
		t.Errorf("Close = %v, want the wrapped stop error", err)
	}
}

func TestRunnerRecreatesRemovedContainer(t *testing.T) {
	d := newFakeDocker()
	r, _ := startRunner(t, d, 50*time.Millisecond)
	waitReady(t, r)
	first, _ := d.container("pg")

	// docker rm -f behind the runner's back.
	d.mu.Lock()
	delete(d.containers, "pg")
	d.mu.Unlock()
	d.emit("destroy", "pg")

	waitFor(t, "a new container", func() bool {
		c, ok := d.container("pg")
		return ok && c.id != first.id && c.state.Running
	})
	if n := d.count("create pg"); n != 2 {
		t.Errorf("calls = %q, want a second create", d.Calls())
	}
}

func TestRunnerFenceStopsAndHoldsTheContainerUntilUnfenced(t *testing.T) {
	d := newFakeDocker()
	var exits int
	spec, _ := renderSpec(t, testConfig(t, "--container-name=pg"))
	log, _ := testLogger(t)
	r := spilo.NewRunner(d, spec, log)
	r.Interval = 50 * time.Millisecond
	r.OnExit = func(context.Context) { exits++ }
	r.Start(context.Background())
	t.Cleanup(func() { r.Close(spilo.LeaveRunning) })
	waitReady(t, r)
	c, _ := d.container("pg")

	r.Fence("cut off")
	waitFor(t, "the fenced container to stop", func() bool { st := r.Status(); return !st.Running && st.State == "fenced" })
	time.Sleep(500 * time.Millisecond) // ten reconcile ticks
	if st := r.Status(); st.Running || st.Restarts != 0 || st.Fenced != "cut off" {
		t.Fatalf("fenced container restarted or fence lost: %+v", st)
	}
	if exits != 0 {
		t.Error("a fenced stop ran OnExit (it is not a crash)")
	}

	r.Unfence()
	waitFor(t, "the container to start again", func() bool { st := r.Status(); return st.Running && st.Fenced == "" })
	if got, want := d.Calls(), []string{"create pg", "start " + c.id, "stop " + c.id + " 3", "start " + c.id}; !slices.Equal(got, want) {
		t.Errorf("calls = %q, want %q", got, want)
	}
}

// Docker's restart rule: the delay doubles while the container keeps dying
// young, and starts over once it has run 10 s, however rarely the loop
// looked at it in between.
func TestRunnerBackoffResetsAfterTenSecondsRunning(t *testing.T) {
	d := newFakeDocker()
	spec, _ := renderSpec(t, testConfig(t, "--container-name=pg"))
	log, buf := testLogger(t)
	r := spilo.NewRunner(d, spec, log)
	r.Interval = time.Hour // only events drive it, as between a bench's trials
	r.Start(context.Background())
	t.Cleanup(func() { r.Close(spilo.LeaveRunning) })
	waitReady(t, r)
	waitSubscribed(t, d)
	delays := func() []time.Duration { return restartDelays(t, buf) }
	for i := 1; i <= 4; i++ { // die young four times: 100, 200, 400, 800 ms (less jitter)
		d.kill("pg", 137)
		waitFor(t, "a restart", func() bool { st := r.Status(); return st.Restarts == i && st.Running })
	}
	got := delays()
	if len(got) != 4 || got[3] < 600*time.Millisecond {
		t.Fatalf("delays while dying young = %v, want four, doubling to about 800ms", got)
	}
	d.backdate("pg", time.Minute)
	d.kill("pg", 137)
	waitFor(t, "a restart", func() bool { st := r.Status(); return st.Restarts == 5 && st.Running })
	if got := delays(); len(got) != 5 || got[4] > 100*time.Millisecond {
		t.Fatalf("delay after a minute of running = %v, want the shortest again (100ms)", got)
	}
}

// restartDelays are the delays before each restart, as the runner logged
// them.
func restartDelays(t *testing.T, buf *syncBuffer) []time.Duration {
	t.Helper()
	var out []time.Duration
	for _, l := range strings.Split(buf.String(), "\n") {
		if _, v, ok := strings.Cut(l, "restart_in="); ok {
			d, err := time.ParseDuration(strings.Fields(v)[0])
			if err != nil {
				t.Fatalf("bad restart_in in %q", l)
			}
			out = append(out, d)
		}
	}
	return out
}

// waitStarted waits until the runner has seen the container running with
// a start older than ago (see fakeDocker.backdate), or any start if 0.
func waitStarted(t *testing.T, r *spilo.Runner, ago time.Duration) spilo.ContainerStatus {
	t.Helper()
	var st spilo.ContainerStatus
	waitFor(t, "the runner to see the container running", func() bool {
		st = r.Status()
		return st.Running && !st.StartedAt.IsZero() && time.Since(st.StartedAt) >= ago
	})
	return st
}

// A restart nodeha asks for (Patroni gone) stops the same container with
// the spec's stop timeout and starts it again: one exit, one restart, one
// OnExit, never two.
func TestRunnerRestartStopsAndStartsTheSameContainer(t *testing.T) {
	d := newFakeDocker()
	spec, _ := renderSpec(t, testConfig(t, "--container-name=pg", "--stop-timeout=150s"))
	log, buf := testLogger(t)
	r := spilo.NewRunner(d, spec, log)
	r.Interval = 50 * time.Millisecond
	var exits atomic.Int32
	r.OnExit = func(context.Context) { exits.Add(1) }
	r.Start(context.Background())
	t.Cleanup(func() { r.Close(spilo.LeaveRunning) })
	waitReady(t, r)
	first := waitStarted(t, r, 0)
	c, _ := d.container("pg")

	if !r.Restart("patroni gone") {
		t.Fatal("Restart of a running container refused")
	}
	if r.Restart("patroni gone") {
		t.Error("a second Restart of the same start was accepted")
	}
	waitFor(t, "the restart", func() bool {
		st := r.Status()
		return st.Restarts == 1 && st.Running && st.StartedAt.After(first.StartedAt)
	})
	st := r.Status()
	if st.NodehaRestarts != 1 || st.LastRestartReason != "patroni gone" || st.LastRestartAt.IsZero() {
		t.Errorf("status = %+v, want one nodeha restart for %q", st, "patroni gone")
	}
	if got, want := d.Calls(), []string{"create pg", "start " + c.id, "stop " + c.id + " 150", "start " + c.id}; !slices.Equal(got, want) {
		t.Errorf("calls = %q, want %q", got, want)
	}
	if n := exits.Load(); n != 1 {
		t.Errorf("OnExit ran %d times, want once", n)
	}
	if strings.Contains(buf.String(), "container exited") {
		t.Error("a restart nodeha asked for was logged as a crash")
	}
	time.Sleep(200 * time.Millisecond) // a few reconciles: nothing more happens
	if n := d.count("stop"); n != 1 {
		t.Errorf("calls = %q, want one stop", d.Calls())
	}
	// The new start may be restarted in its turn.
	if !r.Restart("patroni gone again") {
		t.Error("Restart of the new start refused")
	}
}

// Repeated restarts back off although the container ran long each time
// (running proves nothing while Patroni is gone), until Recovered.
func TestRunnerRestartBacksOff(t *testing.T) {
	d := newFakeDocker()
	r, buf := newTestRunner(t, d)
	r.Start(context.Background())
	waitReady(t, r)
	restart := func(i int) {
		t.Helper()
		d.backdate("pg", time.Minute)
		waitStarted(t, r, 30*time.Second)
		if !r.Restart("patroni gone") {
			t.Fatalf("restart %d refused; status %+v", i, r.Status())
		}
		waitFor(t, "a restart", func() bool {
			st := r.Status()
			return st.Restarts == i && st.NodehaRestarts == i && st.Running && time.Since(st.StartedAt) < 30*time.Second
		})
	}
	for i := 1; i <= 4; i++ { // 100, 200, 400, 800 ms (less jitter)
		restart(i)
	}
	if got := restartDelays(t, buf); len(got) != 4 || got[3] < 600*time.Millisecond {
		t.Fatalf("delays of repeated restarts = %v, want four, doubling to about 800ms", got)
	}
	r.Recovered() // Patroni answers again: a minute of running resets it
	restart(5)
	if got := restartDelays(t, buf); len(got) != 5 || got[4] > 100*time.Millisecond {
		t.Fatalf("delay after recovering = %v, want the shortest again (100ms)", got)
	}
}

// Restart leaves alone what is not a running container: a fenced one, and
// one not running (the reconcile loop's business).
func TestRunnerRestartRefusesFencedOrStopped(t *testing.T) {
	d := newFakeDocker()
	spec, _ := renderSpec(t, testConfig(t, "--container-name=pg"))
	log, _ := testLogger(t)
	if spilo.NewRunner(d, spec, log).Restart("patroni gone") {
		t.Error("Restart accepted with no container seen running")
	}

	r, _ := startRunner(t, d, 50*time.Millisecond)
	waitReady(t, r)
	waitStarted(t, r, 0)
	r.Fence("cut off")
	waitFor(t, "the fence", func() bool { return r.Status().State == "fenced" })
	if r.Restart("patroni gone") {
		t.Error("Restart of a fenced container accepted")
	}
	time.Sleep(200 * time.Millisecond)
	if st := r.Status(); st.Running || st.NodehaRestarts != 0 {
		t.Errorf("fenced container touched: %+v", st)
	}
}

// BeforeStart runs before every start, the first and each restart; while it
// fails, the container is not started.
func TestRunnerBeforeStartRunsBeforeEveryStart(t *testing.T) {
	d := newFakeDocker()
	r, _ := newTestRunner(t, d)
	var calls, failing atomic.Int32
	failing.Store(1)
	r.BeforeStart = func() error {
		calls.Add(1)
		if failing.Load() == 1 {
			return errors.New("directories not ready")
		}
		return nil
	}
	r.Start(context.Background())

	waitFor(t, "two failed attempts", func() bool { return calls.Load() >= 2 })
	if n := d.count("start"); n != 0 {
		t.Fatalf("container started %d times while BeforeStart failed", n)
	}
	if st := r.Status(); !strings.Contains(st.LastError, "directories not ready") {
		t.Errorf("LastError = %q, want the BeforeStart error", st.LastError)
	}
	failing.Store(0)
	waitReady(t, r)
	waitFor(t, "status running", func() bool { return r.Status().Running })
	before, restarts := calls.Load(), r.Status().Restarts
	d.kill("pg", 1)
	waitFor(t, "one restart", func() bool { st := r.Status(); return st.Restarts == restarts+1 && st.Running })
	if calls.Load() <= before {
		t.Error("BeforeStart did not run before the restart")
	}
}
