package apipool

import "time"

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

type realClock struct{}

func (realClock) Now() time.Time                 { return time.Now() }
func (realClock) NewTimer(d time.Duration) Timer { return realTimer{time.NewTimer(d)} }

type realTimer struct{ t *time.Timer }

func (t realTimer) C() <-chan time.Time { return t.t.C }
func (t realTimer) Stop() bool          { return t.t.Stop() }
