package apipool

import (
	"testing"
	"time"

	"github.com/apipool-ng/apipool/status"
)

// A key's state is driven alone here: no HTTP, no clock but the times
// each call is given.

var t0 = time.Date(2026, 12, 7, 12, 0, 0, 0, time.UTC)

// newTestKeyState returns the state of key k under the default policy,
// changed by opts.
func newTestKeyState(t *testing.T, k Key, opts ...Option) *keyState {
	t.Helper()
	cfg := defaultConfig()
	for _, o := range opts {
		if err := o.apply(&cfg); err != nil {
			t.Fatal(err)
		}
	}
	cfg.finish()
	tr := &Transport{cfg: cfg}
	return tr.newKeyState(k)
}

func mustReserve(t *testing.T, k *keyState, now time.Time) reservation {
	t.Helper()
	r, h := k.reserve(now)
	if h != holdNone {
		t.Fatalf("reserve at %v: held (%v)", now.Sub(t0), h)
	}
	return r
}

func wantHold(t *testing.T, k *keyState, now time.Time, want hold) time.Time {
	t.Helper()
	h, until := k.available(now)
	if h != want {
		t.Fatalf("available at +%v = %v, want %v", now.Sub(t0), h, want)
	}
	return until
}

// A refused reservation takes nothing: the limit that refused and every
// step before it are rolled back.
func TestReserveAllOrNothing(t *testing.T) {
	k := newTestKeyState(t, Key{ID: "a", Secret: "s", PerSecond: 1, MaxInFlight: 5})
	r := mustReserve(t, k, t0)
	if got := k.inFlight.Load(); got != 1 {
		t.Fatalf("in flight after one reservation = %d, want 1", got)
	}
	if _, h := k.reserve(t0); h != holdRate {
		t.Fatalf("second reservation in the same second: %v, want %v", h, holdRate)
	}
	if got := k.inFlight.Load(); got != 1 {
		t.Fatalf("in flight after a refused reservation = %d, want 1 (rolled back)", got)
	}
	r.commit(verdict{st: status.Success, at: t0})
	k.release()
	if got := k.inFlight.Load(); got != 0 {
		t.Fatalf("in flight after release = %d", got)
	}
	until := wantHold(t, k, t0.Add(500*time.Millisecond), holdRate)
	if !until.Equal(t0.Add(time.Second)) {
		t.Fatalf("rate hold until +%v, want +1s", until.Sub(t0))
	}
	mustReserve(t, k, t0.Add(time.Second))
}

// Cancel gives back every part: the same key can be reserved again at
// the same instant, under a limit of one.
func TestReservationCancelGivesBack(t *testing.T) {
	k := newTestKeyState(t, Key{ID: "a", Secret: "s", PerSecond: 1, PerDay: 10, MaxInFlight: 1})
	r := mustReserve(t, k, t0)
	wantHold(t, k, t0, holdInFlight)
	r.cancel()
	wantHold(t, k, t0, holdNone)
	if left := k.quotaLeft(t0); left != 10 {
		t.Fatalf("quota left after cancel = %d, want 10", left)
	}
	r = mustReserve(t, k, t0)
	r.cancel()
	r.cancel() // a second cancel is a no-op
	if got := k.inFlight.Load(); got != 0 {
		t.Fatalf("in flight after two cancels = %d, want 0", got)
	}
}

// A rate limit cools the key until the verdict's time; then one trial goes
// before any other request, and its success opens the key again.
func TestCommitRateLimitCoolsThenTrial(t *testing.T) {
	k := newTestKeyState(t, Key{ID: "a", Secret: "s"})
	r := mustReserve(t, k, t0)
	ch := r.commit(verdict{st: status.ReachLimit, at: t0, coolUntil: t0.Add(2 * time.Second)})
	k.release()
	if !ch.cooled {
		t.Fatal("a rate limit did not report a cooldown")
	}
	until := wantHold(t, k, t0.Add(time.Second), holdCooling)
	if !until.Equal(t0.Add(2 * time.Second)) {
		t.Fatalf("cooling until +%v, want +2s", until.Sub(t0))
	}
	at := t0.Add(2 * time.Second)
	trial := mustReserve(t, k, at)
	if !trial.trial {
		t.Fatal("the first reservation after a cooldown is not a trial")
	}
	wantHold(t, k, at, holdTrial)
	if _, h := k.reserve(at); h != holdTrial {
		t.Fatalf("a second reservation while the trial is out: %v, want %v", h, holdTrial)
	}
	trial.commit(verdict{st: status.Success, at: at})
	k.release()
	wantHold(t, k, at, holdNone)
	// No budget is known: the key ramps up (2, 4, ... in flight).
	a, b := mustReserve(t, k, at), mustReserve(t, k, at)
	if _, h := k.reserve(at); h != holdInFlight {
		t.Fatalf("third request in flight during the ramp: %v, want %v", h, holdInFlight)
	}
	a.cancel()
	b.cancel()
}

// A cancelled trial hands the trial to the next reservation.
func TestCancelledTrialStaysDue(t *testing.T) {
	k := newTestKeyState(t, Key{ID: "a", Secret: "s"})
	k.cool(t0, reasonRateLimited)
	r := mustReserve(t, k, t0)
	if !r.trial {
		t.Fatal("not a trial")
	}
	r.cancel()
	r = mustReserve(t, k, t0)
	if !r.trial {
		t.Fatal("the trial was lost with the cancelled reservation")
	}
}

// A reservation taken before the key cooled down is stale: its attempt
// must not go out.
func TestReservationStaleAfterCooldown(t *testing.T) {
	k := newTestKeyState(t, Key{ID: "a", Secret: "s"})
	early := mustReserve(t, k, t0)
	other := mustReserve(t, k, t0)
	if early.stale() {
		t.Fatal("stale before anything happened")
	}
	at := t0.Add(30 * time.Millisecond)
	other.commit(verdict{st: status.ReachLimit, at: at, coolUntil: at.Add(time.Second)})
	k.release()
	if !early.stale() {
		t.Fatal("a reservation taken before the key's cooldown began is not stale")
	}
	early.cancel()
	if got := k.inFlight.Load(); got != 0 {
		t.Fatalf("in flight = %d, want 0", got)
	}
	// A shared limit that ran out meanwhile cools the key for the next
	// requests, not for one already granted.
	k3 := newTestKeyState(t, Key{ID: "c", Secret: "s3"})
	granted := mustReserve(t, k3, t0)
	k3.cool(t0.Add(time.Second), reasonShared)
	if granted.stale() {
		t.Fatal("a reservation granted before its shared limit ran out is stale")
	}
	granted.cancel()
	// Disabled meanwhile: stale too.
	k2 := newTestKeyState(t, Key{ID: "b", Secret: "s2"})
	r := mustReserve(t, k2, t0)
	k2.disable("test", t0, true)
	if !r.stale() {
		t.Fatal("a reservation of a key disabled since is not stale")
	}
	r.cancel()
}

// A rejection disables the key; after the retry backoff a trial tests it,
// and the trial's success puts it back in use.
func TestCommitRejectionDisablesThenTrialEnables(t *testing.T) {
	k := newTestKeyState(t, Key{ID: "a", Secret: "s"}, WithDisabledRetry(time.Minute, time.Hour))
	r := mustReserve(t, k, t0)
	ch := r.commit(verdict{st: status.InvalidKey, at: t0, disable: "upstream answered 401"})
	k.release()
	if ch.disabled == nil || !ch.disabled.retryAt.Equal(t0.Add(time.Minute)) {
		t.Fatalf("disable = %+v, want one with a retry at +1m", ch.disabled)
	}
	until := wantHold(t, k, t0.Add(time.Second), holdDisabled)
	if !until.Equal(t0.Add(time.Minute)) {
		t.Fatalf("disabled until +%v", until.Sub(t0))
	}
	at := t0.Add(time.Minute)
	trial := mustReserve(t, k, at)
	if !trial.trial || trial.stale() {
		t.Fatalf("the retry of a disabled key: trial %v, stale %v; want a trial, not stale", trial.trial, trial.stale())
	}
	ch = trial.commit(verdict{st: status.Success, at: at})
	k.release()
	if !ch.enabled {
		t.Fatal("the trial's success did not report the key enabled")
	}
	wantHold(t, k, at, holdNone)
	// A second disable in a row backs off twice as long.
	r = mustReserve(t, k, at)
	ch = r.commit(verdict{st: status.InvalidKey, at: at, disable: "again"})
	k.release()
	_ = ch
}

// Undisable takes back exactly the disable it is given.
func TestUndisable(t *testing.T) {
	k := newTestKeyState(t, Key{ID: "a", Secret: "s"})
	info, ok := k.disable("first", t0, false)
	if !ok {
		t.Fatal("disable not applied")
	}
	if undone, enabled := k.undisable(info); !undone || !enabled {
		t.Fatalf("undisable = %v, %v; want true, true", undone, enabled)
	}
	if undone, _ := k.undisable(info); undone {
		t.Fatal("undisable applied twice")
	}
	// A key disabled for good stays so.
	k.disable("for good", t0, true)
	if _, ok := k.disable("later", t0, false); ok {
		t.Fatal("a key disabled for good was disabled again")
	}
}

// A caller's own cancel is not counted by the breaker; server errors are.
func TestCommitBreaker(t *testing.T) {
	k := newTestKeyState(t, Key{ID: "a", Secret: "s"}, WithBreaker(BreakerSettings{Failures: 2}))
	for range 3 {
		r := mustReserve(t, k, t0)
		r.commit(verdict{st: status.Canceled, at: t0, excluded: true})
		k.release()
	}
	wantHold(t, k, t0, holdNone)
	for range 2 {
		r := mustReserve(t, k, t0)
		r.commit(verdict{st: status.ServerError, at: t0})
		k.release()
	}
	wantHold(t, k, t0, holdBreaker)
	if _, h := k.reserve(t0); h == holdNone {
		t.Fatal("an open breaker let a reservation through")
	}
	if got := k.inFlight.Load(); got != 0 {
		t.Fatalf("in flight = %d after a refused reservation", got)
	}
}

// The provider's budget: none left holds the key until the reset, and a
// reservation past it is refused without taking anything.
func TestReserveProviderBudget(t *testing.T) {
	k := newTestKeyState(t, Key{ID: "a", Secret: "s"})
	k.budget.set(1, 10, t0.Add(time.Second), false, t0)
	r := mustReserve(t, k, t0)
	until := wantHold(t, k, t0, holdBudget)
	if !until.Equal(t0.Add(time.Second)) {
		t.Fatalf("budget hold until +%v", until.Sub(t0))
	}
	r.cancel()
	wantHold(t, k, t0, holdNone)
}

// With the provider's limit and window known from its headers, a reset
// gives the key its whole limit back at once: no trial request, no ramp.
func TestBudgetRenewsAtReset(t *testing.T) {
	k := newTestKeyState(t, Key{ID: "a", Secret: "s"})
	// The first answer of a window: 10 a window, 9 left, reset in 1s.
	k.budget.set(9, 10, t0.Add(time.Second), false, t0)
	for i := range 9 {
		r := mustReserve(t, k, t0)
		if r.trial {
			t.Fatalf("reservation %d is a trial", i)
		}
		r.commit(verdict{st: status.Success, at: t0})
		k.release()
	}
	until := wantHold(t, k, t0, holdBudget)
	if !until.Equal(t0.Add(time.Second)) {
		t.Fatalf("held until +%v, want +1s", until.Sub(t0))
	}
	next := t0.Add(time.Second)
	var rs []reservation
	for i := range 10 {
		r, h := k.reserve(next)
		if h != holdNone {
			t.Fatalf("reservation %d of the new window: %v, want the whole limit of 10 at once", i, h)
		}
		if r.trial {
			t.Fatalf("reservation %d of the new window is a trial", i)
		}
		rs = append(rs, r)
	}
	if _, h := k.reserve(next); h != holdBudget {
		t.Fatalf("an 11th reservation in a window of 10: %v, want %v", h, holdBudget)
	}
	if left, limit, reset := k.budget.view(next); left != 0 || limit != 10 || !reset.Equal(t0.Add(2*time.Second)) {
		t.Fatalf("budget %d of %d until +%v, want 0 of 10 until +2s", left, limit, reset.Sub(t0))
	}
	for _, r := range rs {
		r.cancel()
	}
	// Several windows later: the next reset is the first after now.
	later := t0.Add(5500 * time.Millisecond)
	if _, h := k.reserve(later); h != holdNone {
		t.Fatalf("after several windows: %v", h)
	}
	if _, _, reset := k.budget.view(later); !reset.Equal(t0.Add(6 * time.Second)) {
		t.Fatalf("reset +%v, want +6s", reset.Sub(t0))
	}
}

// noteBurst has k take n reservations at at and answers each with a
// success at at plus 10ms.
func noteBurst(t *testing.T, k *keyState, n int, at time.Time) {
	t.Helper()
	for range n {
		r := mustReserve(t, k, at)
		r.commit(verdict{st: status.Success, at: at.Add(10 * time.Millisecond)})
		k.release()
	}
}

// rateLimit has k take one reservation at at (whatever holds it) and
// answers it 429 with a Retry-After of one second.
func rateLimit(k *keyState, at time.Time) {
	r := reservation{k: k, at: at}
	k.inFlight.Add(1)
	end := at.Add(10 * time.Millisecond)
	r.commit(verdict{st: status.ReachLimit, at: end, coolUntil: end.Add(time.Second)})
	k.release()
}

// Without rate-limit headers, a 429 after n successes in the window its
// Retry-After suggests teaches the key its limit: n in any such window.
func TestLearnLimitFromBurst(t *testing.T) {
	k := newTestKeyState(t, Key{ID: "a", Secret: "s"})
	noteBurst(t, k, 10, t0)
	rateLimit(k, t0.Add(time.Millisecond))
	ll := k.learnedLimit()
	if ll == nil || ll.n != 10 || ll.w != time.Second {
		t.Fatalf("learned %+v, want 10 a second", ll)
	}
	// After the cooldown, the key takes 10 in any second, not 11.
	at := t0.Add(2 * time.Second)
	trial := mustReserve(t, k, at)
	trial.commit(verdict{st: status.Success, at: at})
	k.release()
	noteBurst(t, k, 9, at)
	if _, h := k.reserve(at.Add(500 * time.Millisecond)); h != holdRate {
		t.Fatalf("an 11th request within the second: %v, want %v", h, holdRate)
	}
	if h, until := k.available(at.Add(500 * time.Millisecond)); h != holdRate || !until.Equal(at.Add(time.Second)) {
		t.Fatalf("available = %v until +%v, want the rate limit until +1s", h, until.Sub(at))
	}
	r := mustReserve(t, k, at.Add(time.Second))
	r.cancel()
}

// A 429 to a request sent under the learned limit lowers it by one,
// whatever the count of successes says; 429s of the burst that taught it
// only raise it as their successes come in.
func TestLearnedLimitTightensAndRaises(t *testing.T) {
	k := newTestKeyState(t, Key{ID: "a", Secret: "s"})
	var burst []reservation
	for range 10 {
		burst = append(burst, mustReserve(t, k, t0))
	}
	ok := func(rs []reservation) {
		for i := range rs {
			rs[i].commit(verdict{st: status.Success, at: t0.Add(10 * time.Millisecond)})
			k.release()
		}
	}
	ok(burst[:4])
	rateLimit(k, t0.Add(time.Millisecond)) // learned 4: the other answers are not in yet
	if ll := k.learnedLimit(); ll == nil || ll.n != 4 {
		t.Fatalf("learned %+v, want 4 at first", ll)
	}
	ok(burst[4:]) // ... they come
	rateLimit(k, t0.Add(2*time.Millisecond))
	if ll := k.learnedLimit(); ll == nil || ll.n != 10 {
		t.Fatalf("learned %+v after the burst, want 10", ll)
	}
	later := t0.Add(5 * time.Second)
	noteBurst(t, k, 3, later) // a 429 after 3: the count is short, the limit was 10
	rateLimit(k, later.Add(time.Millisecond))
	if ll := k.learnedLimit(); ll.n != 9 {
		t.Fatalf("after a 429 under the limit: %d, want 9", ll.n)
	}
}

// After 16n successes without a 429 the limit rises by one; a raise the
// upstream refuses doubles the wait for the next. A new limit keeps
// counting the requests the old one let through.
func TestLearnedLimitRelaxes(t *testing.T) {
	k := newTestKeyState(t, Key{ID: "a", Secret: "s"})
	noteBurst(t, k, 2, t0)
	rateLimit(k, t0.Add(time.Millisecond))
	at := t0.Add(2 * time.Second)
	for i := range relaxAfter * 2 {
		at = at.Add(time.Second)
		noteBurst(t, k, 1, at)
		if i < relaxAfter*2-1 && k.learnedLimit().n != 2 {
			t.Fatalf("raised after %d successes, want %d", i+1, relaxAfter*2)
		}
	}
	if ll := k.learnedLimit(); ll.n != 3 || !ll.relaxed {
		t.Fatalf("after %d successes: %+v, want a raise to 3", relaxAfter*2, ll)
	}
	// The raise keeps the last second's request counted: two more fit, not three.
	// (at's own success is in the window.)
	a, b := mustReserve(t, k, at), mustReserve(t, k, at)
	if _, h := k.reserve(at); h != holdRate {
		t.Fatalf("a fourth request in the second after the raise: %v", h)
	}
	a.cancel()
	b.cancel()
	rateLimit(k, at) // the raise is refused
	if ll := k.learnedLimit(); ll.n != 2 || k.learn.shift.Load() != 1 {
		t.Fatalf("after the refused raise: limit %d, shift %d; want 2 and 1", ll.n, k.learn.shift.Load())
	}
}

// WithLimitLearning(false) learns nothing; nor does a 429 with no success
// before it, or a key steered by its headers.
func TestNoLearning(t *testing.T) {
	off := newTestKeyState(t, Key{ID: "a", Secret: "s"}, WithLimitLearning(false))
	noteBurst(t, off, 10, t0)
	rateLimit(off, t0)
	if off.learnedLimit() != nil {
		t.Fatal("learned with learning off")
	}
	cold := newTestKeyState(t, Key{ID: "b", Secret: "s"})
	rateLimit(cold, t0)
	if cold.learnedLimit() != nil {
		t.Fatal("learned from a 429 with no success before it")
	}
	steered := newTestKeyState(t, Key{ID: "c", Secret: "s"})
	steered.budget.set(0, 10, t0.Add(time.Second), false, t0)
	noteBurst(t, steered, 1, t0.Add(time.Second))
	rateLimit(steered, t0.Add(time.Second))
	if steered.learnedLimit() != nil {
		t.Fatal("learned for a key its headers steer")
	}
}

// A Retry-After beyond a minute (a quota of hours or days) teaches no
// rate: the key is not held back after the reset.
func TestNoLearningFromLongRetryAfter(t *testing.T) {
	k := newTestKeyState(t, Key{ID: "a", Secret: "s"})
	noteBurst(t, k, 5, t0)
	r := reservation{k: k, at: t0.Add(time.Millisecond)}
	k.inFlight.Add(1)
	end := t0.Add(10 * time.Millisecond)
	r.commit(verdict{st: status.ReachLimit, at: end, coolUntil: end.Add(30 * time.Minute)})
	k.release()
	if ll := k.learnedLimit(); ll != nil {
		t.Fatalf("learned %d in %v from a 30-minute Retry-After", ll.n, ll.w)
	}
}
