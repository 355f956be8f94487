package spilo_test

import (
	"testing"
	"time"

	"github.com/nodeha/nodeha/spilo"
)

func TestDecideContainer(t *testing.T) {
	now := time.Date(2026, 12, 3, 8, 0, 0, 0, time.UTC)
	start := now.Add(-time.Minute)
	running := spilo.ContainerSeen{HasState: true, SpecHash: "h1", Running: true, StartedAt: start, Now: now}
	exited := spilo.ContainerSeen{HasState: true, SpecHash: "h1", StartedAt: start, FinishedAt: "t2", LastExit: "t1", Now: now}
	with := func(s spilo.ContainerSeen, f func(*spilo.ContainerSeen)) spilo.ContainerSeen { f(&s); return s }
	cases := []struct {
		name string
		seen spilo.ContainerSeen
		want spilo.ContainerAction
	}{
		{"missing", spilo.ContainerSeen{Missing: true, Now: now}, spilo.Create},
		{"missing and fenced: stays missing", spilo.ContainerSeen{Missing: true, Fenced: "cut off", Now: now}, spilo.Nothing},
		{"running as specified", running, spilo.Nothing},
		{"running, other spec", with(running, func(s *spilo.ContainerSeen) { s.SpecHash = "h0" }), spilo.Recreate},
		{"running, no spec label", with(running, func(s *spilo.ContainerSeen) { s.SpecHash = "" }), spilo.Recreate},
		{"fenced and running", with(running, func(s *spilo.ContainerSeen) { s.Fenced = "cut off" }), spilo.StopFenced},
		{"fenced, other spec: still only stopped", with(running, func(s *spilo.ContainerSeen) { s.Fenced = "cut off"; s.SpecHash = "h0" }), spilo.StopFenced},
		{"fenced and stopped", with(exited, func(s *spilo.ContainerSeen) { s.Fenced = "cut off" }), spilo.KeepFenced},
		{"no state", spilo.ContainerSeen{SpecHash: "h1", Now: now}, spilo.NoState},
		{"restart asked for this start", with(running, func(s *spilo.ContainerSeen) { s.RestartFor = start }), spilo.StopForRestart},
		{"restart asked for an earlier start: done", with(running, func(s *spilo.ContainerSeen) { s.RestartFor = start.Add(-time.Hour) }), spilo.Nothing},
		{"a new exit", exited, spilo.CountExit},
		{"created, never started: no exit to count", with(exited, func(s *spilo.ContainerSeen) { s.Created = true; s.FinishedAt = "0001-01-01T00:00:00Z" }), spilo.StartAgain},
		{"exit counted, backoff running", with(exited, func(s *spilo.ContainerSeen) { s.LastExit = "t2"; s.RetryAt = now.Add(time.Second) }), spilo.WaitBackoff},
		{"exit counted, backoff over", with(exited, func(s *spilo.ContainerSeen) { s.LastExit = "t2"; s.RetryAt = now.Add(-time.Millisecond) }), spilo.StartAgain},
	}
	for _, tc := range cases {
		if got := spilo.DecideContainer(tc.seen, "h1"); got != tc.want {
			t.Errorf("%s: %v, want %v", tc.name, got, tc.want)
		}
	}
}
