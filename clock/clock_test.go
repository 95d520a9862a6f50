package clock

import (
	"testing"
	"time"
)

// System's readings lie between time.Now readings taken around
// them, on the monotonic clock (exactly) and on the wall clock (within
// the drift a second of NTP slewing could add), and a stale anchor is
// renewed.
func TestSystemFollowsTimeNow(t *testing.T) {
	const slack = 10 * time.Millisecond
	var clk System
	for i := range 1000 {
		var stale *time.Time
		if i == 500 {
			old := time.Now().Add(-2 * anchorLife)
			stale = &old
			wallAnchor.Store(stale)
		}
		before := time.Now()
		now := clk.Now()
		after := time.Now()
		if now.Before(before) || now.After(after) {
			t.Fatalf("reading %d: %v is not between %v and %v on the monotonic clock", i, now, before, after)
		}
		if w := now.Round(0); w.Before(before.Round(0).Add(-slack)) || w.After(after.Round(0).Add(slack)) {
			t.Fatalf("reading %d: wall time %v is not between %v and %v", i, w, before.Round(0), after.Round(0))
		}
		if a := wallAnchor.Load(); a == nil || a == stale {
			t.Fatalf("reading %d: the anchor %v was not renewed", i, a)
		}
	}
}

// A System timer fires once after its duration, and Stop stops one that
// has not fired.
func TestSystemTimer(t *testing.T) {
	var clk System
	start := time.Now()
	tm := clk.NewTimer(5 * time.Millisecond)
	if at := <-tm.C(); at.Sub(start) < 5*time.Millisecond {
		t.Fatalf("fired %v after it was made, want at least 5ms", at.Sub(start))
	}
	if tm.Stop() {
		t.Fatal("Stop of a fired timer reported it waiting")
	}
	if tm := clk.NewTimer(time.Hour); !tm.Stop() {
		t.Fatal("Stop of a waiting timer reported it fired")
	}
}
