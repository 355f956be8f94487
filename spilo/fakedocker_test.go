package spilo_test

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"maps"
	"strings"
	"sync"
	"testing"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/api/types/events"
	"github.com/moby/moby/client"

	"github.com/nodeha/nodeha/spilo"
)

// fakeDocker is an in-memory Docker engine implementing spilo.Docker. It
// keeps containers by name, records every call that changes something,
// and sends container events to every subscriber.
type fakeDocker struct {
	mu         sync.Mutex
	containers map[string]*fakeContainer // by name
	nextID     int
	calls      []string // "create NAME", "start ID", "stop ID TIMEOUT", "remove ID"
	inspects   int
	subs       []fakeSub
	subscribed chan struct{} // one value per Events call

	// Errors to return, when set.
	createErr, stopErr error
}

type fakeContainer struct {
	id, name string
	config   container.Config
	state    container.State
}

type fakeSub struct {
	msgs chan events.Message
	errs chan error
}

func newFakeDocker() *fakeDocker {
	return &fakeDocker{containers: map[string]*fakeContainer{}, subscribed: make(chan struct{}, 100)}
}

func notFound(id string) error {
	return fmt.Errorf("no such container: %s: %w", id, cerrdefs.ErrNotFound)
}

// lookup finds a container by name or ID; f.mu must be held.
func (f *fakeDocker) lookup(id string) *fakeContainer {
	if c, ok := f.containers[strings.TrimPrefix(id, "/")]; ok {
		return c
	}
	for _, c := range f.containers {
		if c.id == id {
			return c
		}
	}
	return nil
}

// add puts a container there as if a previous nodeha had created it.
func (f *fakeDocker) add(name, specHash string, running bool) string {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.nextID++
	c := &fakeContainer{
		id:     fmt.Sprintf("old%061d", f.nextID),
		name:   name,
		config: container.Config{Image: "ghcr.io/zalando/spilo-15:3.0-p1", Labels: map[string]string{spilo.LabelSpecHash: specHash}},
	}
	if running {
		c.state = container.State{Status: container.StateRunning, Running: true, StartedAt: time.Now().Add(-time.Hour).Format(time.RFC3339Nano), FinishedAt: "0001-01-01T00:00:00Z"}
	} else {
		c.state = container.State{Status: container.StateExited, ExitCode: 1, StartedAt: time.Now().Add(-time.Hour).Format(time.RFC3339Nano), FinishedAt: time.Now().Add(-time.Minute).Format(time.RFC3339Nano)}
	}
	f.containers[name] = c
	return c.id
}

// kill makes the container exit with code, as the engine would report it.
func (f *fakeDocker) kill(name string, code int) {
	f.mu.Lock()
	c := f.containers[name]
	c.state.Status, c.state.Running, c.state.Pid = container.StateExited, false, 0
	c.state.ExitCode = code
	c.state.FinishedAt = time.Now().Format(time.RFC3339Nano)
	f.mu.Unlock()
	f.emit(events.ActionDie, name)
}

func (f *fakeDocker) emit(action events.Action, name string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, s := range f.subs {
		select {
		case s.msgs <- events.Message{Type: events.ContainerEventType, Action: action, Actor: events.Actor{Attributes: map[string]string{"name": name}}}:
		default:
		}
	}
}

// breakStreams ends every event stream with an error.
func (f *fakeDocker) breakStreams() {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, s := range f.subs {
		s.errs <- fmt.Errorf("unexpected EOF")
	}
	f.subs = nil
}

func (f *fakeDocker) record(format string, args ...any) {
	f.calls = append(f.calls, fmt.Sprintf(format, args...))
}

// Calls returns the calls that changed something, in order.
func (f *fakeDocker) Calls() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.calls...)
}

func (f *fakeDocker) count(prefix string) int {
	n := 0
	for _, c := range f.Calls() {
		if strings.HasPrefix(c, prefix) {
			n++
		}
	}
	return n
}

func (f *fakeDocker) Inspects() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.inspects
}

// container returns a copy of the named container, or false.
func (f *fakeDocker) container(name string) (fakeContainer, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	c, ok := f.containers[name]
	if !ok {
		return fakeContainer{}, false
	}
	cp := *c
	cp.config.Labels = maps.Clone(c.config.Labels)
	return cp, true
}

func (f *fakeDocker) ContainerInspect(ctx context.Context, id string, _ client.ContainerInspectOptions) (client.ContainerInspectResult, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.inspects++
	c := f.lookup(id)
	if c == nil {
		return client.ContainerInspectResult{}, notFound(id)
	}
	cfg := c.config
	cfg.Labels = maps.Clone(c.config.Labels)
	st := c.state
	return client.ContainerInspectResult{Container: container.InspectResponse{
		ID: c.id, Name: "/" + c.name, Image: cfg.Image, State: &st, Config: &cfg,
	}}, nil
}

func (f *fakeDocker) ContainerCreate(ctx context.Context, o client.ContainerCreateOptions) (client.ContainerCreateResult, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.record("create %s", o.Name)
	if f.createErr != nil {
		return client.ContainerCreateResult{}, f.createErr
	}
	if f.lookup(o.Name) != nil {
		return client.ContainerCreateResult{}, fmt.Errorf("container name %q is already in use: %w", o.Name, cerrdefs.ErrConflict)
	}
	f.nextID++
	c := &fakeContainer{id: fmt.Sprintf("new%061d", f.nextID), name: o.Name, config: *o.Config}
	c.config.Labels = maps.Clone(o.Config.Labels)
	c.state = container.State{Status: container.StateCreated, StartedAt: "0001-01-01T00:00:00Z", FinishedAt: "0001-01-01T00:00:00Z"}
	f.containers[o.Name] = c
	return client.ContainerCreateResult{ID: c.id}, nil
}

func (f *fakeDocker) ContainerStart(ctx context.Context, id string, _ client.ContainerStartOptions) (client.ContainerStartResult, error) {
	f.mu.Lock()
	f.record("start %s", id)
	c := f.lookup(id)
	if c == nil {
		f.mu.Unlock()
		return client.ContainerStartResult{}, notFound(id)
	}
	c.state.Status, c.state.Running, c.state.Pid = container.StateRunning, true, 4242
	c.state.StartedAt = time.Now().Format(time.RFC3339Nano)
	name := c.name
	f.mu.Unlock()
	f.emit(events.ActionStart, name)
	return client.ContainerStartResult{}, nil
}

func (f *fakeDocker) ContainerStop(ctx context.Context, id string, o client.ContainerStopOptions) (client.ContainerStopResult, error) {
	f.mu.Lock()
	timeout := -1
	if o.Timeout != nil {
		timeout = *o.Timeout
	}
	f.record("stop %s %d", id, timeout)
	if f.stopErr != nil {
		f.mu.Unlock()
		return client.ContainerStopResult{}, f.stopErr
	}
	c := f.lookup(id)
	if c == nil {
		f.mu.Unlock()
		return client.ContainerStopResult{}, notFound(id)
	}
	c.state.Status, c.state.Running, c.state.Pid, c.state.ExitCode = container.StateExited, false, 0, 0
	c.state.FinishedAt = time.Now().Format(time.RFC3339Nano)
	name := c.name
	f.mu.Unlock()
	f.emit(events.ActionDie, name)
	f.emit(events.ActionStop, name)
	return client.ContainerStopResult{}, nil
}

func (f *fakeDocker) ContainerRemove(ctx context.Context, id string, _ client.ContainerRemoveOptions) (client.ContainerRemoveResult, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.record("remove %s", id)
	c := f.lookup(id)
	if c == nil {
		return client.ContainerRemoveResult{}, notFound(id)
	}
	if c.state.Running {
		return client.ContainerRemoveResult{}, fmt.Errorf("cannot remove a running container: %w", cerrdefs.ErrConflict)
	}
	delete(f.containers, c.name)
	return client.ContainerRemoveResult{}, nil
}

func (f *fakeDocker) Events(ctx context.Context, _ client.EventsListOptions) client.EventsResult {
	s := fakeSub{msgs: make(chan events.Message, 16), errs: make(chan error, 1)}
	f.mu.Lock()
	f.subs = append(f.subs, s)
	f.mu.Unlock()
	f.subscribed <- struct{}{}
	return client.EventsResult{Messages: s.msgs, Err: s.errs}
}

// syncBuffer collects a test's log; it is printed only when the test fails.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func testLogger(t *testing.T) (*slog.Logger, *syncBuffer) {
	buf := &syncBuffer{}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("log:\n%s", buf)
		}
	})
	return slog.New(slog.NewTextHandler(buf, &slog.HandlerOptions{Level: slog.LevelDebug})), buf
}

// waitFor polls cond until it holds, failing the test after a deadline.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// backdate makes the running container look started ago.
func (f *fakeDocker) backdate(name string, ago time.Duration) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.containers[name].state.StartedAt = time.Now().Add(-ago).Format(time.RFC3339Nano)
}
