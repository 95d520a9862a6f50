package apipool

import (
	"testing"
	"time"

	"github.com/apipool-ng/apipool/status"
)

// raised returns a key that learned n requests a second and then, after
// enough successes, raised it to n+1; at is a time past its last
// request's window.
func raised(t *testing.T, n int) (*keyState, time.Time) {
	t.Helper()
	k := newTestKeyState(t, Key{ID: "a", Secret: "s"})
	noteBurst(t, k, n, t0)
	rateLimit(k, t0.Add(time.Millisecond))
	at := t0.Add(2 * time.Second)
	for range relaxAfter {
		at = at.Add(time.Second)
		noteBurst(t, k, n, at)
	}
	if ll := k.learnedLimit(); ll == nil || ll.n != n+1 || !ll.relaxed {
		t.Fatalf("after %d successes: %+v, want a raise to %d", relaxAfter*n, ll, n+1)
	}
	return k, at.Add(2 * time.Second)
}

// A 429 to the request a raise let through (the key had sent its old
// limit in the window before it) puts the old limit back without a
// cooldown: that limit, counting the refused request, holds the key until
// its oldest request in the window is a window old, which a fixed or
// sliding window upstream has reset by. A cooldown for the Retry-After on
// top (the answer's time plus a second) would cost the key the start of
// its next window. A 429 under a limit that was not raised still cools
// the key down.
func TestRefusedRaiseNoCooldown(t *testing.T) {
	for _, order := range []string{"successes first", "429 first"} {
		t.Run(order, func(t *testing.T) {
			k, at := raised(t, 1)
			ok := mustReserve(t, k, at)
			probe := mustReserve(t, k, at.Add(20*time.Millisecond))
			if _, h := k.reserve(at.Add(30 * time.Millisecond)); h != holdRate {
				t.Fatalf("a third request in the second under the raised limit: %v, want %v", h, holdRate)
			}
			answered := at.Add(70 * time.Millisecond)
			refuse := func() {
				probe.commit(verdict{st: status.ReachLimit, at: answered, coolUntil: answered.Add(time.Second)})
				k.release()
			}
			if order == "429 first" {
				refuse() // the success's answer is not in yet: the limit's own count tells
			}
			ok.commit(verdict{st: status.Success, at: at.Add(50 * time.Millisecond)})
			k.release()
			if order == "successes first" {
				refuse()
			}
			if ll := k.learnedLimit(); ll.n != 1 || k.learn.shift.Load() != 1 {
				t.Fatalf("after the refused raise: limit %d, shift %d; want 1 and 1", ll.n, k.learn.shift.Load())
			}
			if h, _ := k.heldAt(answered); h != holdNone {
				t.Fatalf("after a refused raise the key is %v, want no cooldown", h)
			}
			// The old limit holds it, counting the refused request: free a
			// second after that request, 50 ms before the Retry-After ends.
			if until := wantHold(t, k, answered, holdRate); !until.Equal(at.Add(1020 * time.Millisecond)) {
				t.Fatalf("held until +%v, want +%v", until.Sub(at), 1020*time.Millisecond)
			}
			r := mustReserve(t, k, at.Add(1020*time.Millisecond))
			r.commit(verdict{st: status.Success, at: at.Add(1070 * time.Millisecond)})
			k.release()

			// A 429 under the limit put back (no raise) cools the key.
			next := at.Add(2100 * time.Millisecond)
			r = mustReserve(t, k, next)
			r.commit(verdict{st: status.ReachLimit, at: next.Add(50 * time.Millisecond), coolUntil: next.Add(1050 * time.Millisecond)})
			k.release()
			if h, until := k.heldAt(next.Add(60 * time.Millisecond)); h != holdCooling || !until.Equal(next.Add(1050*time.Millisecond)) {
				t.Fatalf("after a 429 under an unraised limit: %v until +%v, want a cooldown until +1.05s", h, until.Sub(next))
			}
		})
	}
}

// A 429 under a raised limit to a request that was not the raise's own
// (the key had sent less than its old limit in the window before it) is
// not a refused raise: the upstream lowered its limit, or counts requests
// of its own. The key cools down.
func TestRaisedLimitEarly429Cools(t *testing.T) {
	k, at := raised(t, 2)
	noteBurst(t, k, 1, at)
	r := mustReserve(t, k, at.Add(10*time.Millisecond)) // the second of the window, of 3
	end := at.Add(50 * time.Millisecond)
	r.commit(verdict{st: status.ReachLimit, at: end, coolUntil: end.Add(time.Second)})
	k.release()
	if h, _ := k.heldAt(end); h != holdCooling {
		t.Fatalf("after a 429 to a window's second request under a limit raised to 3: %v, want a cooldown", h)
	}
	if ll := k.learnedLimit(); ll.n != 2 {
		t.Fatalf("limit %d, want 2", ll.n)
	}
}

// A learned limit heard from another replica (sharedstate.Learned) is
// adopted when it is the latest: set later, to the millisecond, or at the
// same millisecond and lower. A limit this pool does not learn (a window
// other than a second or a minute, below 1, above okLogSize) is ignored.
// The key's own changes after it are stamped later than it, so that they
// win on every replica.
func TestAdoptLatestWins(t *testing.T) {
	k := newTestKeyState(t, Key{ID: "a", Secret: "s"})
	l := k.learn
	at := t0.Add(500 * time.Microsecond)
	for _, c := range []struct {
		n    int
		w    time.Duration
		at   time.Time
		want int // the limit held after
	}{
		{10, time.Second, at, 10},
		{12, time.Second, t0.Add(900 * time.Microsecond), 10}, // same ms, higher
		{10, time.Second, t0.Add(900 * time.Microsecond), 10}, // same ms, the same (an echo)
		{9, time.Second, t0.Add(100 * time.Microsecond), 9},   // same ms, lower
		{20, time.Second, t0.Add(-time.Second), 9},            // older
		{11, 90 * time.Second, t0.Add(time.Second), 9},        // not a window it learns
		{0, time.Second, t0.Add(time.Second), 9},
		{okLogSize + 1, time.Second, t0.Add(time.Second), 9},
		{10, time.Second, t0.Add(time.Second), 10}, // later: a raise
	} {
		l.adopt(c.n, c.w, c.at, t0.Add(2*time.Second))
		if ll := k.learnedLimit(); ll == nil || ll.n != c.want {
			t.Fatalf("after adopting %d in %v at +%v: %+v, want %d", c.n, c.w, c.at.Sub(t0), ll, c.want)
		}
	}
	if ll := k.learnedLimit(); !ll.relaxed || l.shift.Load() != 0 {
		t.Fatalf("a later limit one higher adopted: relaxed %v, shift %d; want a raise, shift 0", ll.relaxed, l.shift.Load())
	}
	// Lowered from a raise, elsewhere: the next raise waits twice as long,
	// as when the raise is refused here.
	l.adopt(9, time.Second, t0.Add(2*time.Second), t0.Add(time.Second))
	if l.shift.Load() != 1 {
		t.Fatalf("shift %d after a raise lowered elsewhere, want 1", l.shift.Load())
	}
	// A change here with a clock behind the one that set the limit held
	// is stamped a millisecond after it.
	held := k.learnedLimit()
	behind := t0.Add(1100 * time.Millisecond)
	noteBurst(t, k, 3, behind)
	rateLimit(k, behind.Add(time.Millisecond)) // a 429 under the limit: lowered by one
	ll := k.learnedLimit()
	if ll == held || ll.n != 8 || ll.at != held.at+int64(time.Millisecond) {
		t.Fatalf("a 429 at a clock behind: limit %d at +%v, want 8 at +%v", ll.n, time.Duration(ll.at-t0.UnixNano()), time.Duration(held.at-t0.UnixNano())+time.Millisecond)
	}
}

// learnedLimit.tighten: a learned limit lowers the configured limit of
// its window, or sets it when there is none; it never raises one.
func TestLearnedTighten(t *testing.T) {
	for _, c := range []struct {
		n     int
		w     time.Duration
		p     float64
		m     int
		wantP float64
		wantM int
	}{
		{10, time.Second, 0, 0, 10, 0},
		{10, time.Second, 100, 60, 10, 60},
		{10, time.Second, 5, 0, 5, 0},
		{10, time.Second, 0.5, 0, 0.5, 0},
		{2, time.Second, 2.5, 0, 2, 0},
		{100, time.Minute, 0, 0, 0, 100},
		{100, time.Minute, 3, 1000, 3, 100},
		{100, time.Minute, 0, 50, 0, 50},
	} {
		ll := &learnedLimit{n: c.n, w: c.w}
		if p, m := ll.tighten(c.p, c.m); p != c.wantP || m != c.wantM {
			t.Errorf("%d in %v over PerSecond %v, PerMinute %d: %v, %d; want %v, %d", c.n, c.w, c.p, c.m, p, m, c.wantP, c.wantM)
		}
	}
}
