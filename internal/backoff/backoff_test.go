package backoff_test

import (
	"testing"
	"time"

	"github.com/nodeha/nodeha/internal/backoff"
)

func TestDoublesUpToMax(t *testing.T) {
	b := backoff.Backoff{Min: time.Second, Max: 10 * time.Second}
	want := []time.Duration{1, 2, 4, 8, 10, 10, 10}
	for i, w := range want {
		if got := b.Next(); got != w*time.Second {
			t.Errorf("attempt %d: Next() = %v, want %v", i+1, got, w*time.Second)
		}
	}
}

func TestReset(t *testing.T) {
	b := backoff.Backoff{Min: 100 * time.Millisecond, Max: time.Minute}
	for range 5 {
		b.Next()
	}
	if got := b.Next(); got != 3200*time.Millisecond {
		t.Fatalf("sixth Next() = %v, want 3.2s", got)
	}
	b.Reset()
	if got := b.Next(); got != 100*time.Millisecond {
		t.Errorf("Next() after Reset = %v, want Min", got)
	}
	if got := b.Next(); got != 200*time.Millisecond {
		t.Errorf("second Next() after Reset = %v, want 2*Min", got)
	}
}

func TestJitterBounds(t *testing.T) {
	const jitter = 0.2
	b := backoff.Backoff{Min: time.Second, Max: 8 * time.Second, Jitter: jitter}
	base := []time.Duration{1, 2, 4, 8, 8}
	seen := map[time.Duration]bool{}
	for round := 0; round < 200; round++ {
		b.Reset()
		for i, d := range base {
			d *= time.Second
			got := b.Next()
			lo := time.Duration(float64(d) * (1 - jitter))
			if got < lo || got > d {
				t.Fatalf("round %d attempt %d: Next() = %v, want within [%v, %v]", round, i+1, got, lo, d)
			}
			if i == 0 {
				seen[got] = true
			}
		}
	}
	// 200 draws of a random delay are not all the same.
	if len(seen) < 10 {
		t.Errorf("only %d distinct first delays in 200 draws: no jitter", len(seen))
	}
}
