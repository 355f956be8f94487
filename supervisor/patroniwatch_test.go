package supervisor

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/nodeha/nodeha/spilo"
)

func TestDecidePatroni(t *testing.T) {
	now := time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)
	ago := func(d time.Duration) time.Time { return now.Add(-d) }
	const dead = time.Minute
	cases := []struct {
		name    string
		seen    PatroniSeen
		restart bool
		since   time.Time // zero: not silent
		why     string
	}{
		{"busy but answering (starting, recovering, base backup)",
			PatroniSeen{Running: true, StartedAt: ago(time.Hour), LastAnswer: now}, false, time.Time{}, "answering"},
		{"answered recently",
			PatroniSeen{Running: true, StartedAt: ago(time.Hour), LastAnswer: ago(30 * time.Second)}, false, ago(30 * time.Second), "dead after 1m0s"},
		{"silent past the threshold since its last answer",
			PatroniSeen{Running: true, StartedAt: ago(time.Hour), LastAnswer: ago(61 * time.Second)}, true, ago(61 * time.Second), "has not answered for 1m1s since its last answer"},
		{"never answered, container young",
			PatroniSeen{Running: true, StartedAt: ago(30 * time.Second)}, false, ago(30 * time.Second), "since the container started"},
		{"never answered since start past the threshold",
			PatroniSeen{Running: true, StartedAt: ago(75 * time.Second)}, true, ago(75 * time.Second), "has not answered for 1m15s since the container started"},
		{"exactly at the threshold",
			PatroniSeen{Running: true, StartedAt: ago(dead)}, true, ago(dead), "NODEHA_PATRONI_DEAD_AFTER=1m0s"},
		{"answered in the previous container: the new one gets the full threshold",
			PatroniSeen{Running: true, StartedAt: ago(30 * time.Second), LastAnswer: ago(5 * time.Minute)}, false, ago(30 * time.Second), "since the container started"},
		{"restarted container silent past the threshold",
			PatroniSeen{Running: true, StartedAt: ago(61 * time.Second), LastAnswer: ago(5 * time.Minute)}, true, ago(61 * time.Second), "since the container started"},
		{"nodeha just started: no silence known before",
			PatroniSeen{Running: true, StartedAt: ago(time.Hour), Watching: ago(10 * time.Second)}, false, ago(10 * time.Second), "since nodeha started watching"},
		{"nodeha watched long enough",
			PatroniSeen{Running: true, StartedAt: ago(time.Hour), Watching: ago(2 * time.Minute)}, true, ago(2 * time.Minute), "since nodeha started watching"},
		{"fenced never",
			PatroniSeen{Running: true, Fenced: true, StartedAt: ago(time.Hour)}, false, time.Time{}, "fenced"},
		{"fenced and stopped never",
			PatroniSeen{Fenced: true, StartedAt: ago(time.Hour)}, false, time.Time{}, "fenced"},
		{"container not running is the runner's business",
			PatroniSeen{StartedAt: ago(time.Hour)}, false, time.Time{}, "not running"},
		{"no start known, never answered",
			PatroniSeen{Running: true}, false, time.Time{}, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s := tc.seen
			s.Now, s.DeadAfter = now, dead
			a := DecidePatroni(s)
			if a.Restart != tc.restart || !a.Since.Equal(tc.since) || !strings.Contains(a.Why, tc.why) {
				t.Errorf("DecidePatroni = %+v, want restart %v, since %v, why containing %q", a, tc.restart, tc.since, tc.why)
			}
		})
	}
	t.Run("threshold 0 turns it off", func(t *testing.T) {
		a := DecidePatroni(PatroniSeen{Running: true, StartedAt: ago(time.Hour), Now: now})
		if a.Restart || !a.Since.Equal(ago(time.Hour)) || !strings.Contains(a.Why, "the check is off") {
			t.Errorf("DecidePatroni with DeadAfter 0 = %+v, want no restart, the silence still known", a)
		}
	})
}

// fakeRunner refuses a second restart of one start, as spilo.Runner does.
type fakeRunner struct {
	st        spilo.ContainerStatus
	asked     time.Time
	reasons   []string
	recovered int
}

func (f *fakeRunner) Status() spilo.ContainerStatus { return f.st }
func (f *fakeRunner) Recovered()                    { f.recovered++ }
func (f *fakeRunner) Restart(reason string) bool {
	if f.st.Fenced != "" || !f.st.Running || f.st.StartedAt.Equal(f.asked) {
		return false
	}
	f.asked = f.st.StartedAt
	f.reasons = append(f.reasons, reason)
	return true
}

func TestPatroniWatch(t *testing.T) {
	t0 := time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)
	now := t0
	var pingErr error
	fr := &fakeRunner{st: spilo.ContainerStatus{Running: true, StartedAt: t0}}
	var buf bytes.Buffer
	w := &patroniWatch{
		ping:   func(context.Context) error { return pingErr },
		runner: fr, deadAfter: time.Minute, log: slog.New(slog.NewTextHandler(&buf, nil)),
		now: func() time.Time { return now }, watching: t0,
	}
	at := func(d time.Duration) {
		t.Helper()
		now = t0.Add(d)
		w.poll(context.Background())
	}
	warnings := func() int { return strings.Count(buf.String(), "level=WARN") }

	// Busy Patroni answers: never restarted, however long.
	for d := time.Duration(0); d <= time.Hour; d += 10 * time.Minute {
		at(d)
	}
	if len(fr.reasons) != 0 || fr.recovered == 0 || !w.notAnsweringSince().IsZero() {
		t.Fatalf("answering Patroni: restarts %q, recovered %d, silent since %v", fr.reasons, fr.recovered, w.notAnsweringSince())
	}

	// Gone: restarted once the threshold passed since its last answer.
	pingErr = errors.New("connection refused")
	at(time.Hour + 30*time.Second)
	if len(fr.reasons) != 0 || !w.notAnsweringSince().Equal(t0.Add(time.Hour)) {
		t.Fatalf("after 30s of silence: restarts %q, silent since %v", fr.reasons, w.notAnsweringSince())
	}
	at(time.Hour + 61*time.Second)
	at(time.Hour + 63*time.Second) // the runner is still at it: refused, no second warning
	if len(fr.reasons) != 1 || !strings.Contains(fr.reasons[0], "since its last answer") || warnings() != 1 {
		t.Fatalf("after 61s of silence: restarts %q, %d warnings; log:\n%s", fr.reasons, warnings(), buf.String())
	}

	// The new container gets the full threshold to bring Patroni up.
	fr.st.StartedAt = t0.Add(time.Hour + 70*time.Second)
	at(time.Hour + 100*time.Second)
	if len(fr.reasons) != 1 || !w.notAnsweringSince().Equal(fr.st.StartedAt) {
		t.Fatalf("30s into the new container: restarts %q, silent since %v", fr.reasons, w.notAnsweringSince())
	}
	at(time.Hour + 131*time.Second)
	if len(fr.reasons) != 2 || !strings.Contains(fr.reasons[1], "since the container started") || warnings() != 2 {
		t.Fatalf("61s into the new container: restarts %q, %d warnings", fr.reasons, warnings())
	}

	// Fenced, or not running: left to the runner.
	fr.st.StartedAt = t0.Add(2 * time.Hour)
	fr.st.Fenced = "cut off"
	at(3 * time.Hour)
	fr.st.Fenced, fr.st.Running = "", false
	at(4 * time.Hour)
	if len(fr.reasons) != 2 || !w.notAnsweringSince().IsZero() {
		t.Fatalf("fenced or stopped container: restarts %q, silent since %v", fr.reasons, w.notAnsweringSince())
	}

	// Back: the runner hears it, the silence is over.
	fr.st.Running = true
	pingErr = nil
	before := fr.recovered
	at(5 * time.Hour)
	if fr.recovered != before+1 || !w.notAnsweringSince().IsZero() {
		t.Errorf("answering again: recovered %d (was %d), silent since %v", fr.recovered, before, w.notAnsweringSince())
	}
}
