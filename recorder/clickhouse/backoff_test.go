package clickhouse

import (
	"testing"
	"time"
)

func TestBackoffDelay(t *testing.T) {
	const minD, maxD = 100 * time.Millisecond, 10 * time.Second
	for attempt := 0; attempt < 100; attempt++ {
		d := maxD
		if attempt < 20 {
			d = min(maxD, minD<<attempt)
		}
		for _, u := range []float64{0, 0.5, 0.999999} {
			got := backoffDelay(attempt, minD, maxD, u)
			if got < d/2 || got > d {
				t.Errorf("attempt %d, u %v: %v not in [%v, %v]", attempt, u, got, d/2, d)
			}
		}
	}
	if got := backoffDelay(0, minD, maxD, 0); got != minD/2 {
		t.Errorf("first delay at u=0: %v", got)
	}
	if got := backoffDelay(1000, minD, maxD, 0.999999); got > maxD {
		t.Errorf("huge attempt: %v", got)
	}
}

func TestBackoffGrowsAndResets(t *testing.T) {
	b := newBackoff(10*time.Millisecond, time.Second)
	var last time.Duration
	for i := range 20 {
		d := b.next()
		if d < 5*time.Millisecond || d > time.Second {
			t.Fatalf("delay %d = %v out of bounds", i, d)
		}
		last = d
	}
	if last < 500*time.Millisecond {
		t.Errorf("after 20 failures the delay is %v, want at least half the max", last)
	}
	b.reset()
	if d := b.next(); d > 10*time.Millisecond {
		t.Errorf("after reset: %v", d)
	}
}
