// Package fakeclock is a manual clock for tests: time moves only when the
// test calls Advance, and timers fire then. It implements clock.Clock (and
// so a clock.Clock).
package fakeclock

import (
	"sync"
	"time"

	"github.com/apipool-ng/apipool/clock"
)

// Clock is a fake clock. Create it with New. Safe for concurrent use.
type Clock struct {
	mu     sync.Mutex
	now    time.Time
	timers []*Timer
	// waiters is signalled whenever a timer is created, so a test can
	// wait for a goroutine to block on the clock before advancing it.
	waiters chan struct{}
}

// New returns a clock that reads start.
func New(start time.Time) *Clock {
	return &Clock{now: start, waiters: make(chan struct{}, 1024)}
}

// Now returns the clock's time.
func (c *Clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

// Advance moves the clock forward by d and fires the timers due.
func (c *Clock) Advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	now := c.now
	var keep []*Timer
	var fire []*Timer
	for _, t := range c.timers {
		if !t.when.After(now) {
			fire = append(fire, t)
		} else {
			keep = append(keep, t)
		}
	}
	c.timers = keep
	c.mu.Unlock()
	for _, t := range fire {
		select {
		case t.ch <- now:
		default:
		}
	}
}

// Set moves the clock to t (forward only) and fires the timers due.
func (c *Clock) Set(t time.Time) {
	if d := t.Sub(c.Now()); d > 0 {
		c.Advance(d)
	}
}

// Timers returns how many timers wait to fire.
func (c *Clock) Timers() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.timers)
}

// TimerCreated returns a channel that receives once per timer created:
// a test waits on it to know a goroutine is blocked on the clock.
func (c *Clock) TimerCreated() <-chan struct{} { return c.waiters }

// Timer is a fake timer.
type Timer struct {
	c    *Clock
	when time.Time
	ch   chan time.Time
}

var _ clock.Clock = (*Clock)(nil)

// NewTimer returns a *Timer that fires when the clock reaches now+d.
func (c *Clock) NewTimer(d time.Duration) clock.Timer {
	c.mu.Lock()
	t := &Timer{c: c, when: c.now.Add(d), ch: make(chan time.Time, 1)}
	if d <= 0 {
		t.ch <- c.now
	} else {
		c.timers = append(c.timers, t)
	}
	c.mu.Unlock()
	select {
	case c.waiters <- struct{}{}:
	default:
	}
	return t
}

// C returns the channel the timer fires on.
func (t *Timer) C() <-chan time.Time { return t.ch }

// Stop stops the timer; it reports whether the timer was waiting.
func (t *Timer) Stop() bool {
	c := t.c
	c.mu.Lock()
	defer c.mu.Unlock()
	for i, x := range c.timers {
		if x == t {
			c.timers = append(c.timers[:i], c.timers[i+1:]...)
			return true
		}
	}
	return false
}
