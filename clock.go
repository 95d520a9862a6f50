package apipool

import (
	"time"

	"github.com/apipool-ng/apipool/clock"
)

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
