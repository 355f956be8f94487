// Package backoff computes exponential retry delays with jitter, the way
// Docker's restart manager does (start small, double, cap, reset after a
// healthy stretch).
package backoff

import (
	"math/rand/v2"
	"time"
)

// Backoff is not safe for concurrent use.
type Backoff struct {
	Min, Max time.Duration
	// Jitter is the fraction (0..1) of each delay that is randomised.
	Jitter float64
	cur    time.Duration
}

// Next returns the delay before the next attempt and doubles the following one.
func (b *Backoff) Next() time.Duration {
	if b.cur < b.Min {
		b.cur = b.Min
	}
	d := b.cur
	b.cur *= 2
	if b.cur > b.Max {
		b.cur = b.Max
	}
	if b.Jitter > 0 {
		d = d - time.Duration(b.Jitter*float64(d)*rand.Float64())
	}
	return d
}

// Reset starts over at Min.
func (b *Backoff) Reset() { b.cur = 0 }
