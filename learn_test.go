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
