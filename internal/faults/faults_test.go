package faults

import (
	"testing"
	"time"
)

func TestResumedAt(t *testing.T) {
	t0 := time.Unix(1000, 0)
	at := func(ms int, host string) Ack {
		return Ack{At: t0.Add(time.Duration(ms) * time.Millisecond), Host: host}
	}
	cases := []struct {
		name     string
		acks     []Ack
		sameHost bool
		want     int // ms after t0, -1 = not resumed
	}{
		{"new primary", []Ack{at(-20, "a"), at(-10, "a"), at(5, "a"), at(250, "b"), at(260, "b")}, false, 250},
		{"fast failover, tiny gap", []Ack{at(-10, "a"), at(40, "b")}, true, 40},
		{"restart in place", []Ack{at(-10, "a"), at(3000, "a")}, true, 3000},
		{"still the old primary", []Ack{at(-10, "a"), at(5, "a"), at(10, "a")}, false, -1},
		{"old primary without a break", []Ack{at(-10, "a"), at(5, "a"), at(10, "a")}, true, -1},
		{"nothing after the fault", []Ack{at(-30, "a"), at(-10, "b")}, false, -1},
	}
	for _, tc := range cases {
		got, ok := resumedAt(tc.acks, t0, "a", tc.sameHost)
		switch {
		case tc.want < 0 && ok:
			t.Errorf("%s: resumed at %v, want not resumed", tc.name, got.Sub(t0))
		case tc.want >= 0 && (!ok || got.Sub(t0) != time.Duration(tc.want)*time.Millisecond):
			t.Errorf("%s: resumed %v at %v, want %dms", tc.name, ok, got.Sub(t0), tc.want)
		}
	}
}

func TestLongestGapAfter(t *testing.T) {
	t0 := time.Unix(1000, 0)
	at := func(ms int) Ack { return Ack{At: t0.Add(time.Duration(ms) * time.Millisecond)} }
	acks := []Ack{at(-5000), at(-4000), at(-10), at(1200), at(1300), at(1350)}
	if got := LongestGapAfter(acks, t0); got != 1210*time.Millisecond {
		t.Errorf("longest gap after t0 = %v, want 1.21s (the gap before t0 does not count)", got)
	}
}
