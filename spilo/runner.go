package spilo

import (
	"cmp"
	"context"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/api/types/events"
	"github.com/moby/moby/client"

	"github.com/nodeha/nodeha/internal/backoff"
)

// Docker is the part of the Docker Engine API the runner uses.
type Docker interface {
	ContainerInspect(ctx context.Context, id string, o client.ContainerInspectOptions) (client.ContainerInspectResult, error)
	ContainerCreate(ctx context.Context, o client.ContainerCreateOptions) (client.ContainerCreateResult, error)
	ContainerStart(ctx context.Context, id string, o client.ContainerStartOptions) (client.ContainerStartResult, error)
	ContainerStop(ctx context.Context, id string, o client.ContainerStopOptions) (client.ContainerStopResult, error)
	ContainerRemove(ctx context.Context, id string, o client.ContainerRemoveOptions) (client.ContainerRemoveResult, error)
	Events(ctx context.Context, o client.EventsListOptions) client.EventsResult
}

// CloseMode says what Close does with the container.
type CloseMode int

const (
	// StopContainer stops the container gracefully: Patroni shuts
	// PostgreSQL down and releases the leader key.
	StopContainer CloseMode = iota
	// LeaveRunning leaves the container and PostgreSQL running, for an
	// upgrade of nodeha itself; the next nodeha adopts it.
	LeaveRunning
)

// ContainerStatus is what the runner knows about its container.
type ContainerStatus struct {
	Name         string    `json:"name"`
	ID           string    `json:"id,omitempty"`
	State        string    `json:"state"`
	Running      bool      `json:"running"`
	StartedAt    time.Time `json:"started_at,omitzero"`
	SpecHash     string    `json:"spec_hash"`
	Restarts     int       `json:"restarts"`
	LastExitCode *int      `json:"last_exit_code,omitempty"`
	LastExitAt   time.Time `json:"last_exit_at,omitzero"`
	LastError    string    `json:"last_error,omitempty"`
	// Fenced says why nodeha keeps the container stopped (see Fence).
	Fenced string `json:"fenced,omitempty"`
	// NodehaRestarts counts the stops nodeha made to restart a running
	// container (see Restart); their starts count in Restarts too.
	NodehaRestarts    int       `json:"nodeha_restarts,omitempty"`
	LastRestartReason string    `json:"last_restart_reason,omitempty"`
	LastRestartAt     time.Time `json:"last_restart_at,omitzero"`
}

// Runner keeps one container matching a Spec running. It reconciles on
// Docker events for the container and on a ticker.
type Runner struct {
	docker Docker
	spec   *Spec
	log    *slog.Logger
	now    func() time.Time

	// Interval is the ticker period of the reconcile loop.
	Interval time.Duration
	// OnExit, when set, runs once per observed exit of the container,
	// before it is restarted (nodeha releases the leader lock there). A
	// stop for Restart is such an exit, seen once like any other: every
	// process of the container is gone then, and a hung Patroni killed at
	// the end of the stop timeout may have left its lock behind.
	OnExit func(ctx context.Context)
	// BeforeStart, when set, runs before every start of the container
	// (created or restarted); an error holds the start back, with backoff.
	// nodeha puts the host directories right there: Spilo's launch.sh
	// recreates a missing PGDATA as root (Patroni moves a failed
	// bootstrap's aside), and the next start would fail on it.
	BeforeStart func() error

	cancel  context.CancelFunc
	done    chan struct{}
	ready   chan struct{}
	errc    chan error
	trigger chan struct{}

	readyOnce sync.Once
	closeOnce sync.Once
	closeErr  error
	closed    atomic.Bool

	hang chan struct{}

	mu       sync.Mutex
	held     string    // Hold's reason: stopped like a fence, and by no one else released
	progress time.Time // start of the latest loop iteration
	busyTill time.Time // a long Docker call may legitimately run until then
	status   ContainerStatus
	lastExit string // FinishedAt of the last exit already counted
	retryAt  time.Time
	backoff  backoff.Backoff

	// restartFor is the start (StartedAt) of the container a Restart was
	// asked for, until a container with another start runs.
	restartFor    time.Time
	restartReason string
	// sick is set by Restart and cleared by Recovered: until then a
	// running container proves nothing, and its running 10 s does not
	// reset the backoff, so repeated restarts back off.
	sick bool
}

// NewRunner prepares a runner; Start begins reconciling.
func NewRunner(d Docker, spec *Spec, log *slog.Logger) *Runner {
	return &Runner{
		docker:   d,
		spec:     spec,
		log:      log.With("container", spec.Name),
		now:      time.Now,
		Interval: 5 * time.Second,
		done:     make(chan struct{}),
		ready:    make(chan struct{}),
		errc:     make(chan error, 1),
		trigger:  make(chan struct{}, 1),
		hang:     make(chan struct{}),
		status:   ContainerStatus{Name: spec.Name, SpecHash: spec.Hash, State: "unknown"},
		backoff:  backoff.Backoff{Min: 100 * time.Millisecond, Max: time.Minute, Jitter: 0.2},
	}
}

// Start runs the reconcile loop until Close.
func (r *Runner) Start(ctx context.Context) {
	ctx, r.cancel = context.WithCancel(ctx)
	go r.watch(ctx)
	go r.loop(ctx)
}

// Ready is closed once the container has been seen running.
func (r *Runner) Ready() <-chan struct{} { return r.ready }

// Err reports a fatal error of the loop (none today; kept for the
// lifecycle shape shared by every long-running part).
func (r *Runner) Err() <-chan error { return r.errc }

// Status returns a copy of the container's current status.
func (r *Runner) Status() ContainerStatus {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.status
}

// Close stops the reconcile loop, then (StopContainer) stops the container
// gracefully, giving Patroni the spec's stop timeout. Safe to call twice;
// the first mode wins.
func (r *Runner) Close(mode CloseMode) error {
	r.closeOnce.Do(func() {
		r.closed.Store(true)
		if r.cancel != nil {
			r.cancel()
			<-r.done
		}
		if mode == LeaveRunning {
			r.log.Info("leaving the container running")
			return
		}
		timeout := *r.spec.Config.StopTimeout
		ctx, cancel := context.WithTimeout(context.Background(), time.Duration(timeout+30)*time.Second)
		defer cancel()
		r.log.Info("stopping the container", "timeout_s", timeout)
		start := r.now()
		_, err := r.docker.ContainerStop(ctx, r.spec.Name, client.ContainerStopOptions{Timeout: &timeout})
		if err != nil && !cerrdefs.IsNotFound(err) {
			r.closeErr = fmt.Errorf("spilo: stop container %q: %w", r.spec.Name, err)
			return
		}
		r.log.Info("container stopped", "took", r.now().Sub(start).Round(time.Millisecond))
	})
	return r.closeErr
}

// Alive reports whether the reconcile loop is making progress: it began an
// iteration within the last within, or is inside a Docker call that may
// legitimately take longer (a graceful stop). The systemd watchdog is fed
// only while this holds.
func (r *Runner) Alive(within time.Duration) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	now := r.now()
	return now.Sub(r.progress) < within || now.Before(r.busyTill)
}

// Closed tells whether Close has been called: the container is no longer
// kept running.
func (r *Runner) Closed() bool { return r.closed.Load() }

// Hang makes the reconcile loop block until Close: a test hook for the
// watchdog (enabled with NODEHA_TEST_HOOKS).
func (r *Runner) Hang() {
	select {
	case <-r.hang:
	default:
		close(r.hang)
	}
}

// Fence stops the container and keeps it stopped, for reason, until
// Unfence. Its exit is not a crash: no restart, no OnExit.
func (r *Runner) Fence(reason string) {
	r.mu.Lock()
	r.status.Fenced = reason
	r.restartFor, r.restartReason = time.Time{}, "" // the fence stops it, and keeps it stopped
	r.mu.Unlock()
	r.Kick()
}

// Hold stops the container and keeps it stopped, like Fence, until
// Release, whatever Unfence says meanwhile: a restore holds every host's
// container while the failover assist's fence comes and goes.
func (r *Runner) Hold(reason string) {
	r.mu.Lock()
	r.held = reason
	r.restartFor, r.restartReason = time.Time{}, ""
	r.mu.Unlock()
	r.Kick()
}

// Release ends a Hold.
func (r *Runner) Release() {
	r.mu.Lock()
	r.held = ""
	r.retryAt = time.Time{}
	r.mu.Unlock()
	r.Kick()
}

// Unfence lets the container start again at once.
func (r *Runner) Unfence() {
	r.mu.Lock()
	r.status.Fenced = ""
	r.retryAt = time.Time{}
	r.mu.Unlock()
	r.Kick()
}

// Restart asks the reconcile loop to stop the running container gracefully
// (the spec's stop timeout) and start it again after the backoff: the same
// container, not a new one. Exits and restarts are counted once, as for a
// crash; NodehaRestarts and LastRestartReason say nodeha did it. It refuses
// (false) when the container is fenced or not running (a stopped one is
// the reconcile loop's business), or when a restart of this same start is
// already asked for.
func (r *Runner) Restart(reason string) bool {
	r.mu.Lock()
	st := r.status
	if st.Fenced != "" || !st.Running || st.StartedAt.IsZero() || st.StartedAt.Equal(r.restartFor) {
		r.mu.Unlock()
		return false
	}
	r.restartFor, r.restartReason, r.sick = st.StartedAt, reason, true
	r.mu.Unlock()
	r.Kick()
	return true
}

// Recovered tells the runner that what a Restart was for is healed
// (Patroni answers again): running counts as healthy again, so 10 s of it
// resets the backoff.
func (r *Runner) Recovered() {
	r.mu.Lock()
	r.sick = false
	r.mu.Unlock()
}

// Kick asks for a reconcile now.
func (r *Runner) Kick() {
	select {
	case r.trigger <- struct{}{}:
	default:
	}
}

func (r *Runner) loop(ctx context.Context) {
	defer close(r.done)
	tick := time.NewTicker(r.Interval)
	defer tick.Stop()
	for {
		select {
		case <-r.hang:
			r.log.Warn("reconcile loop hung on purpose (test hook)")
			<-ctx.Done()
			return
		default:
		}
		r.mu.Lock()
		r.progress = r.now()
		r.mu.Unlock()
		wait := r.reconcile(ctx)
		var retry <-chan time.Time
		var t *time.Timer
		if wait > 0 {
			t = time.NewTimer(wait)
			retry = t.C
		}
		select {
		case <-ctx.Done():
		case <-r.trigger:
		case <-tick.C:
		case <-retry:
		}
		if t != nil {
			t.Stop()
		}
		if ctx.Err() != nil {
			return
		}
	}
}

// watch turns Docker events about the container into reconcile triggers,
// resubscribing when the stream breaks.
func (r *Runner) watch(ctx context.Context) {
	f := make(client.Filters).Add("type", string(events.ContainerEventType)).Add("container", r.spec.Name)
	for ctx.Err() == nil {
		res := r.docker.Events(ctx, client.EventsListOptions{Filters: f})
	stream:
		for {
			select {
			case <-ctx.Done():
				return
			case m := <-res.Messages:
				switch m.Action {
				case events.ActionDie, events.ActionOOM, events.ActionDestroy, events.ActionStop, events.ActionStart:
					r.log.Debug("docker event", "action", m.Action)
					r.Kick()
				}
			case err := <-res.Err:
				if ctx.Err() == nil {
					r.log.Warn("docker event stream ended; resubscribing", "err", err)
				}
				break stream
			}
		}
		select {
		case <-ctx.Done():
		case <-time.After(time.Second):
			r.Kick() // events may have been missed
		}
	}
}

// ContainerSeen is what one reconcile observes: the container Docker
// reports and what the runner remembers.
type ContainerSeen struct {
	Missing    bool   // Docker has no container of the spec's name
	HasState   bool   // Docker reported the container's state
	SpecHash   string // the container's spec label
	Running    bool
	Created    bool // created, never started: no exit to count
	StartedAt  time.Time
	FinishedAt string
	Fenced     string    // why nodeha keeps it stopped ("" when not fenced)
	RestartFor time.Time // the start of the container a Restart was asked for
	LastExit   string    // FinishedAt of the last exit already counted
	RetryAt    time.Time // when a stopped container may start again
	Now        time.Time
}

// ContainerAction is what a reconcile does.
type ContainerAction int

const (
	Nothing        ContainerAction = iota
	Create                         // create and start the container
	Recreate                       // the spec changed: stop, remove, create
	StopFenced                     // a fenced container runs: stop it (short timeout)
	KeepFenced                     // a fenced container is stopped: record it, no restart
	StopForRestart                 // a Restart was asked for this very start
	CountExit                      // a new exit: count it, then start after the backoff
	WaitBackoff                    // stopped, its backoff not over
	StartAgain                     // stopped and the backoff is over: start the same container
	NoState                        // Docker said nothing of its state: retry
)

var actionNames = [...]string{"nothing", "create", "recreate", "stop-fenced", "keep-fenced", "stop-for-restart", "count-exit", "wait-backoff", "start-again", "no-state"}

func (a ContainerAction) String() string { return actionNames[a] }

// DecideContainer is the runner's decision, a pure function of what it
// saw: a missing container is created (unless fenced), a fenced one kept
// stopped, one of another spec recreated, a running one left alone (or
// stopped for an asked Restart of that start), a stopped one counted once
// and started again after the backoff.
func DecideContainer(s ContainerSeen, wantHash string) ContainerAction {
	switch {
	case s.Missing && s.Fenced != "":
		return Nothing
	case s.Missing:
		return Create
	case s.Fenced != "" && s.HasState && s.Running:
		return StopFenced
	case s.Fenced != "" && s.HasState:
		return KeepFenced
	case s.SpecHash != wantHash:
		return Recreate
	case !s.HasState:
		return NoState
	case s.Running && !s.RestartFor.IsZero() && s.StartedAt.Equal(s.RestartFor):
		return StopForRestart
	case s.Running:
		return Nothing
	case s.FinishedAt != s.LastExit && !s.Created:
		return CountExit
	case s.Now.Before(s.RetryAt):
		return WaitBackoff
	}
	return StartAgain
}

// reconcile observes the container, decides (DecideContainer) and acts.
// It returns how long to wait before retrying, or 0 to wait for the next
// event or tick.
func (r *Runner) reconcile(ctx context.Context) time.Duration {
	name := r.spec.Name
	res, err := r.docker.ContainerInspect(ctx, name, client.ContainerInspectOptions{})
	if err != nil && !cerrdefs.IsNotFound(err) {
		return r.fail(ctx, fmt.Errorf("spilo: inspect container %q: %w", name, err))
	}
	seen, c := r.observe(res, cerrdefs.IsNotFound(err))
	act := DecideContainer(seen, r.spec.Hash)
	switch act {
	case Create:
		r.setState("missing", false, "")
		return r.create(ctx)
	case Nothing:
		if seen.Missing {
			r.setState("missing", false, "")
			return 0
		}
		r.running(c, seen.StartedAt)
		return 0
	case StopFenced, KeepFenced:
		return r.fenced(ctx, c.ID, seen.Running, seen.FinishedAt, seen.Fenced)
	case Recreate:
		r.log.Info("container spec changed; recreating", "have", seen.SpecHash, "want", r.spec.Hash)
		if err := r.remove(ctx, c.ID); err != nil {
			return r.fail(ctx, err)
		}
		return r.create(ctx)
	case NoState:
		return r.fail(ctx, fmt.Errorf("spilo: inspect container %q: no state", name))
	case StopForRestart:
		r.running(c, seen.StartedAt)
		r.mu.Lock()
		reason := r.restartReason
		r.mu.Unlock()
		return r.restart(ctx, c.ID, reason)
	case CountExit:
		r.setObserved(c, seen.StartedAt)
		return r.countExit(ctx, c, seen.StartedAt)
	case WaitBackoff:
		r.setObserved(c, seen.StartedAt)
		return seen.RetryAt.Sub(seen.Now)
	}
	// StartAgain
	r.setObserved(c, seen.StartedAt)
	if err := r.beforeStart(); err != nil {
		return r.fail(ctx, err)
	}
	if _, err := r.docker.ContainerStart(ctx, c.ID, client.ContainerStartOptions{}); err != nil {
		return r.fail(ctx, fmt.Errorf("spilo: start container %q: %w", name, err))
	}
	r.mu.Lock()
	r.status.Restarts++
	r.mu.Unlock()
	r.log.Info("container restarted", "restarts", r.Status().Restarts)
	return time.Second // look again soon
}

// observe turns an inspect result and the runner's memory into what
// DecideContainer takes.
func (r *Runner) observe(res client.ContainerInspectResult, missing bool) (ContainerSeen, container.InspectResponse) {
	r.mu.Lock()
	seen := ContainerSeen{
		Missing: missing, Fenced: cmp.Or(r.held, r.status.Fenced), RestartFor: r.restartFor,
		LastExit: r.lastExit, RetryAt: r.retryAt, Now: r.now(),
	}
	r.mu.Unlock()
	c := res.Container
	if missing {
		return seen, c
	}
	if c.Config != nil {
		seen.SpecHash = c.Config.Labels[LabelSpecHash]
	}
	if st := c.State; st != nil {
		seen.HasState = true
		seen.Running = st.Running
		seen.Created = st.Status == container.StateCreated
		seen.StartedAt, _ = time.Parse(time.RFC3339Nano, st.StartedAt)
		seen.FinishedAt = st.FinishedAt
	}
	return seen, c
}

// setObserved records the container's state in the status.
func (r *Runner) setObserved(c container.InspectResponse, started time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.status.ID = c.ID
	r.status.State = string(c.State.Status)
	r.status.Running = c.State.Running
	r.status.StartedAt = started
}

// running is the bookkeeping of a running container: ready, a Restart
// done once a new start runs, and the backoff reset after 10 s of health.
func (r *Runner) running(c container.InspectResponse, started time.Time) {
	r.setObserved(c, started)
	r.readyOnce.Do(func() {
		r.log.Info("container running", "id", short(c.ID), "started_at", started)
		close(r.ready)
	})
	r.mu.Lock()
	defer r.mu.Unlock()
	r.status.LastError = ""
	if !r.restartFor.IsZero() && !started.Equal(r.restartFor) {
		r.restartFor, r.restartReason = time.Time{}, "" // started again: done
	}
	if !r.sick && r.now().Sub(started) > 10*time.Second {
		r.backoff.Reset()
	}
}

// countExit counts an exit once (its code and time, OnExit) and schedules
// the start after the backoff; it returns the wait.
func (r *Runner) countExit(ctx context.Context, c container.InspectResponse, started time.Time) time.Duration {
	st := c.State
	r.mu.Lock()
	r.lastExit = st.FinishedAt
	code := st.ExitCode
	r.status.LastExitCode = &code
	r.status.LastExitAt, _ = time.Parse(time.RFC3339Nano, st.FinishedAt)
	// Docker's rule: a container that ran 10 s or more before it died
	// starts over at the shortest delay. Judged from the container's own
	// times, not from whether a reconcile happened to see it running that
	// long (one every Interval would miss most). A container that is sick
	// (see Restart) ran, but not well.
	if ran := r.status.LastExitAt.Sub(started); !r.sick && !started.IsZero() && ran >= 10*time.Second {
		r.backoff.Reset()
	}
	r.retryAt = r.now().Add(r.backoff.Next())
	restartIn := r.retryAt.Sub(r.now()).Round(time.Millisecond)
	forRestart := !r.restartFor.IsZero() && started.Equal(r.restartFor)
	r.mu.Unlock()
	if forRestart {
		r.log.Info("container stopped for a restart", "exit_code", code, "restart_in", restartIn)
	} else {
		r.log.Warn("container exited", "exit_code", code, "oom_killed", st.OOMKilled, "restart_in", restartIn)
	}
	if r.OnExit != nil {
		r.OnExit(ctx)
	}
	r.mu.Lock()
	wait := r.retryAt.Sub(r.now())
	r.mu.Unlock()
	return max(wait, time.Millisecond)
}

// fenced keeps a fenced container stopped. The stop is short: the
// PostgreSQL there must stop accepting writes, and no client can reach it.
func (r *Runner) fenced(ctx context.Context, id string, running bool, finishedAt, reason string) time.Duration {
	if !running {
		r.mu.Lock()
		r.lastExit = finishedAt // not a crash: no restart, no OnExit
		r.status.State, r.status.Running = "fenced", false
		r.mu.Unlock()
		return 0
	}
	timeout := 3
	r.mu.Lock()
	r.busyTill = r.now().Add(time.Duration(timeout+30) * time.Second)
	r.mu.Unlock()
	r.log.Warn("fencing: stopping the container", "reason", reason)
	if _, err := r.docker.ContainerStop(ctx, id, client.ContainerStopOptions{Timeout: &timeout}); err != nil && !cerrdefs.IsNotFound(err) {
		return r.fail(ctx, fmt.Errorf("spilo: stop fenced container %q: %w", r.spec.Name, err))
	}
	return 50 * time.Millisecond
}

// restart stops the container for a Restart; the exit is then seen, and
// the container started again, as for any exit.
func (r *Runner) restart(ctx context.Context, id, reason string) time.Duration {
	timeout := *r.spec.Config.StopTimeout
	r.mu.Lock()
	r.busyTill = r.now().Add(time.Duration(timeout+30) * time.Second)
	r.mu.Unlock()
	r.log.Info("stopping the container for a restart", "reason", reason, "timeout_s", timeout)
	if _, err := r.docker.ContainerStop(ctx, id, client.ContainerStopOptions{Timeout: &timeout}); err != nil && !cerrdefs.IsNotFound(err) {
		return r.fail(ctx, fmt.Errorf("spilo: stop container %q for a restart: %w", r.spec.Name, err))
	}
	r.mu.Lock()
	r.status.NodehaRestarts++
	r.status.LastRestartReason = reason
	r.status.LastRestartAt = r.now()
	r.mu.Unlock()
	return 50 * time.Millisecond
}

func (r *Runner) create(ctx context.Context) time.Duration {
	res, err := r.docker.ContainerCreate(ctx, client.ContainerCreateOptions{
		Name: r.spec.Name, Config: r.spec.Config, HostConfig: r.spec.HostConfig,
	})
	if err != nil {
		return r.fail(ctx, fmt.Errorf("spilo: create container %q: %w", r.spec.Name, err))
	}
	for _, w := range res.Warnings {
		r.log.Warn("docker", "warning", w)
	}
	if err := r.beforeStart(); err != nil {
		return r.fail(ctx, err)
	}
	if _, err := r.docker.ContainerStart(ctx, res.ID, client.ContainerStartOptions{}); err != nil {
		return r.fail(ctx, fmt.Errorf("spilo: start container %q: %w", r.spec.Name, err))
	}
	r.log.Info("container created and started", "id", short(res.ID), "image", r.spec.Config.Image, "spec_hash", r.spec.Hash)
	return time.Second
}

func (r *Runner) beforeStart() error {
	if r.BeforeStart == nil {
		return nil
	}
	return r.BeforeStart()
}

// remove stops (gracefully) and removes an outdated container. Only the
// container goes: its data lives in host directories.
func (r *Runner) remove(ctx context.Context, id string) error {
	timeout := *r.spec.Config.StopTimeout
	r.mu.Lock()
	r.busyTill = r.now().Add(time.Duration(timeout+30) * time.Second)
	r.mu.Unlock()
	if _, err := r.docker.ContainerStop(ctx, id, client.ContainerStopOptions{Timeout: &timeout}); err != nil && !cerrdefs.IsNotFound(err) {
		return fmt.Errorf("spilo: stop container %q: %w", r.spec.Name, err)
	}
	if _, err := r.docker.ContainerRemove(ctx, id, client.ContainerRemoveOptions{}); err != nil && !cerrdefs.IsNotFound(err) {
		return fmt.Errorf("spilo: remove container %q: %w", r.spec.Name, err)
	}
	return nil
}

func (r *Runner) fail(ctx context.Context, err error) time.Duration {
	if ctx.Err() != nil {
		return 0
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.status.LastError = err.Error()
	d := r.backoff.Next()
	r.log.Error("reconcile failed", "err", err, "retry_in", d.Round(time.Millisecond))
	return d
}

func (r *Runner) setState(state string, running bool, id string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.status.State, r.status.Running, r.status.ID = state, running, id
}

func short(id string) string {
	if len(id) > 12 {
		return id[:12]
	}
	return id
}
