package supervisor

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/nodeha/nodeha/spilo"
)

// PatroniSeen is what the Patroni watcher knows at one poll.
type PatroniSeen struct {
	Running   bool      // the container runs, as the runner last saw it
	Fenced    bool      // nodeha keeps it stopped on purpose
	StartedAt time.Time // the container's start
	// LastAnswer is when Patroni's REST API last answered (zero: never
	// since nodeha started).
	LastAnswer time.Time
	// Watching is when nodeha began to watch: it knows nothing of a
	// silence before, so it never acts on one at once after its own start.
	Watching  time.Time
	Now       time.Time
	DeadAfter time.Duration // 0: never restart
}

// PatroniAction is what to do about the container's Patroni.
type PatroniAction struct {
	Restart bool
	// Since is when the current silence began: the container's start,
	// Patroni's last answer or the start of the watch, whichever is
	// latest. Zero while Patroni answers or the container does not run.
	Since time.Time
	Why   string
}

// DecidePatroni decides whether a running container whose Patroni does not
// answer is dead: its REST API has not answered for DeadAfter since the
// container started or since its last answer. A busy Patroni (starting
// PostgreSQL, recovering, creating a replica) answers, so only one that is
// gone (runit gave up on it) or hung is restarted. A container that is not
// running is the runner's business, a fenced one is kept stopped.
func DecidePatroni(s PatroniSeen) PatroniAction {
	switch {
	case s.Fenced:
		return PatroniAction{Why: "container fenced"}
	case !s.Running:
		return PatroniAction{Why: "container not running"}
	}
	since, from := s.StartedAt, "since the container started"
	if s.LastAnswer.After(since) {
		since, from = s.LastAnswer, "since its last answer"
	}
	if s.Watching.After(since) {
		since, from = s.Watching, "since nodeha started watching"
	}
	if since.IsZero() || !s.Now.After(since) {
		return PatroniAction{Why: "answering"}
	}
	silent := s.Now.Sub(since).Round(time.Second)
	a := PatroniAction{Since: since}
	switch {
	case s.DeadAfter <= 0:
		a.Why = fmt.Sprintf("not answering for %v %s; the check is off", silent, from)
	case s.Now.Sub(since) < s.DeadAfter:
		a.Why = fmt.Sprintf("not answering for %v %s; dead after %v", silent, from, s.DeadAfter)
	default:
		a.Restart = true
		a.Why = fmt.Sprintf("Patroni's REST API has not answered for %v %s (NODEHA_PATRONI_DEAD_AFTER=%v)", silent, from, s.DeadAfter)
	}
	return a
}

// restarter is the part of the runner the Patroni watcher uses.
type restarter interface {
	Status() spilo.ContainerStatus
	Restart(reason string) bool
	Recovered()
}

// patroniWatch polls the local Patroni (observe), asks DecidePatroni
// (decide) and has the runner restart the container (act). The runner
// refuses a second restart of the same start, and the new start gives
// Patroni the full DeadAfter again.
type patroniWatch struct {
	ping      func(context.Context) error // one request to the REST API, with a timeout
	runner    restarter
	deadAfter time.Duration
	interval  time.Duration
	log       *slog.Logger
	now       func() time.Time

	mu         sync.Mutex
	watching   time.Time
	lastAnswer time.Time
	since      time.Time // the current silence's start; zero while answering
}

func (w *patroniWatch) run(ctx context.Context) {
	w.mu.Lock()
	w.watching = w.now()
	w.mu.Unlock()
	tick := time.NewTicker(w.interval)
	defer tick.Stop()
	for {
		w.poll(ctx)
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

func (w *patroniWatch) poll(ctx context.Context) {
	err := w.ping(ctx)
	if ctx.Err() != nil {
		return
	}
	// The container as seen after the ping: a ping that failed against a
	// container restarted meanwhile is judged by the new start.
	st := w.runner.Status()
	now := w.now()
	w.mu.Lock()
	if err == nil {
		w.lastAnswer = now
	}
	a := DecidePatroni(PatroniSeen{
		Running: st.Running, Fenced: st.Fenced != "", StartedAt: st.StartedAt,
		LastAnswer: w.lastAnswer, Watching: w.watching, Now: now, DeadAfter: w.deadAfter,
	})
	w.since = a.Since
	w.mu.Unlock()
	if err == nil {
		w.runner.Recovered()
		return
	}
	if a.Restart && w.runner.Restart(a.Why) {
		w.log.Warn("patroni gone: restarting the container", "reason", a.Why, "err", err, "nodeha_restarts", st.NodehaRestarts+1)
	}
}

// notAnsweringSince is when the current silence of Patroni began, zero
// while it answers (see PatroniAction.Since).
func (w *patroniWatch) notAnsweringSince() time.Time {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.since
}
