// Package clock is apipool's one source of time: the [Clock] interface that
// every apipool package needing the time accepts (the transport's
// apipool.WithClock, recorder/memory's WithClock, dashboard's WithClock,
// the Clock field of recorder/sql's and recorder/clickhouse's Config),
// and [System], the system's clock, which they use by default.
//
// A test gives them a fake Clock so that nothing sleeps and event times are
// fixed. The package imports nothing of apipool's, so that every package
// of the module can import it.
package clock

import (
	"sync/atomic"
	"time"
)

// Clock is a source of time. It must be safe for concurrent use.
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

// System is the system's clock, the default of every apipool package. Its
// zero value is ready to use.
//
// Its Now reads the monotonic clock alone and adds the time since a
// wall-clock reading taken at most a second before: on a virtual machine's
// clock (kvm-clock), time.Now took 54 ns where this takes 36. Durations
// between its readings are the monotonic clock's, exactly; its wall time
// follows a step of the system clock (an NTP correction) within a second.
type System struct{}

// Now returns the current time, with a monotonic clock reading.
func (System) Now() time.Time {
	if a := wallAnchor.Load(); a != nil {
		if d := time.Since(*a); d >= 0 && d < anchorLife {
			return a.Add(d)
		}
	}
	now := time.Now()
	wallAnchor.Store(&now)
	return now
}

// wallAnchor is the latest time.Now reading of System.Now, which it renews
// after anchorLife.
var wallAnchor atomic.Pointer[time.Time]

const anchorLife = time.Second

// NewTimer returns a *time.Timer's channel and Stop.
func (System) NewTimer(d time.Duration) Timer { return systemTimer{time.NewTimer(d)} }

type systemTimer struct{ t *time.Timer }

func (t systemTimer) C() <-chan time.Time { return t.t.C }
func (t systemTimer) Stop() bool          { return t.t.Stop() }
