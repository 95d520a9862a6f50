package apipool

import (
	"time"

	"github.com/apipool-ng/apipool/clock"
)

// Clock is the pool's source of time: cooldowns, quotas, waits and latency
// all read it. Tests inject a fake one (see WithClock) so that nothing
// sleeps. It must be safe for concurrent use. It is package clock's Clock,
// which every apipool package that needs the time accepts.
type Clock = clock.Clock

// Timer is the part of *time.Timer a Clock returns (package clock's Timer).
type Timer = clock.Timer

// after returns the pool clock's time now, given a reading start taken
// before. On the system clock (the default, clock.System) it reads the
// monotonic clock alone: time.Since costs one clock read where time.Now
// costs two.
func (t *Transport) after(start time.Time) time.Time {
	if _, sys := t.cfg.clock.(clock.System); sys {
		return start.Add(time.Since(start))
	}
	return t.cfg.clock.Now()
}
