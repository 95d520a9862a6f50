package apipool

import (
	"sync"
	"sync/atomic"
	"time"
)

// A key whose upstream sends no rate-limit headers still tells the pool
// its limit: a 429 that comes after n successes within the window the
// Retry-After suggests. The pool then paces the key to what it learned, a
// sliding window of n requests (learnedLimit), so that the key is not
// sent the requests the upstream would refuse; the limit tightens on each
// further 429 and relaxes by one after 16n successes without one, a wait
// that doubles each time a raise is refused (up to 512n), so that a limit
// found exactly is probed ever more rarely. A raise refused at its own
// request costs that request alone: the old limit comes back without a
// cooldown (refusedRaise).
// WithLimitLearning turns it off.
//
// With shared state (WithSharedState), each limit a key learns, lowers or
// raises is published (sharedstate.Learned), and every replica adopts the
// latest (learner.adopt): the one set last, to the millisecond, and at the
// same millisecond the lower. The limit then holds across the replicas
// together: Take counts it in the store's windows (learnedLimit.tighten).

// okLogSize is how many of a key's latest successes it remembers, and the
// largest limit it can learn.
const okLogSize = 256

// relaxAfter is how many windows' worth of successes without a 429 raise
// a learned limit by one.
const relaxAfter = 16

// learner is what a key remembers to learn its limit: the send times of
// its latest successes, and the limit learned so far.
type learner struct {
	okAt  [okLogSize]atomic.Int64 // send times (ns) of the latest successes, a ring
	okN   atomic.Uint64           // successes noted
	limit atomic.Pointer[learnedLimit]
	// shift doubles the successes a raise waits for, once for each raise
	// that the upstream refused (up to maxRelaxShift), so that a limit
	// found exactly is probed ever more rarely.
	shift atomic.Uint32

	mu sync.Mutex // serialises learning and relaxing
}

// maxRelaxShift caps the doubling of the wait for a raise: at most
// relaxAfter<<maxRelaxShift windows' worth of successes.
const maxRelaxShift = 5

// learnedLimit is a limit the pool learned for a key: at most n requests
// start in any window of length w. It never changes: a new one replaces it.
type learnedLimit struct {
	n       int
	relaxed bool // it is a raise (relax) of the limit before: a 429 at it means the old one was the limit
	w       time.Duration
	sw      *localLimits // the sliding window that enforces it
	setAt   int64        // when it was learned (ns): requests sent before did not obey it
	okSince uint64       // learner.okN when it was set: relax counts from here
	// at is when it was set, raised or adopted (ns): the time of its
	// sharedstate.Learned change, by which the latest wins among replicas.
	at int64
}

// newLearnedLimit returns the limit of n in any w, learned at setAt; the
// requests prev (nil: none) let through stay counted in its window.
func newLearnedLimit(n int, w time.Duration, setAt int64, okN uint64, prev *learnedLimit) *learnedLimit {
	sw := &slidingWindow{n: n, w: int64(w)}
	if prev != nil && prev.w == w {
		old := prev.sw
		old.mu.Lock()
		ow := old.windows[0]
		for i := max(ow.size-n, 0); i < ow.size; i++ { // the newest n, oldest first
			sw.push(ow.ring[(ow.head+i)%len(ow.ring)])
		}
		old.mu.Unlock()
	}
	return &learnedLimit{n: n, w: w, setAt: setAt, okSince: okN, sw: &localLimits{windows: []*slidingWindow{sw}}}
}

// noteSuccess records a success whose request was sent at at, answered at
// now, and relaxes the learned limit after enough successes without a 429.
// It returns the raised limit, or nil when it raised none.
func (l *learner) noteSuccess(at, now time.Time) *learnedLimit {
	i := l.okN.Add(1)
	l.okAt[(i-1)%okLogSize].Store(at.UnixNano())
	if ll := l.limit.Load(); ll != nil && ll.n < okLogSize && i-ll.okSince >= uint64(relaxAfter*ll.n)<<l.shift.Load() {
		l.mu.Lock()
		defer l.mu.Unlock()
		if l.limit.Load() == ll {
			up := newLearnedLimit(ll.n+1, ll.w, ll.setAt, i, ll)
			up.relaxed = true
			up.at = changeTime(now, ll)
			l.limit.Store(up)
			return up
		}
	}
	return nil
}

// changeTime returns the time (ns) of a change at now to the limit old
// (nil: none): now, or the first millisecond after old's when now is not
// past it (the replicas' clocks may disagree), so that the change wins
// over old on every replica (learner.adopt).
func changeTime(now time.Time, old *learnedLimit) int64 {
	ns := now.UnixNano()
	if old != nil {
		if next := (old.at/1e6 + 1) * 1e6; ns < next {
			return next
		}
	}
	return ns
}

// adopt takes the limit of n in any w that another replica learned at at
// (sharedstate.Learned), when it is later than the one held: set later, to
// the millisecond, or at the same millisecond and lower. now is this
// replica's time: requests it sent before did not obey the limit. The
// requests the held limit let through stay counted when the window is the
// same. A raise by one in the same window may be refused as this
// replica's own raises are (refusedRaise); a limit lowered from a raise
// doubles the wait for the next raise, as here. It reports whether it took
// the limit.
func (l *learner) adopt(n int, w time.Duration, at, now time.Time) bool {
	if n < 1 || n > okLogSize || w != time.Second && w != time.Minute {
		return false // not a limit this pool learns
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	old := l.limit.Load()
	if old != nil {
		om, nm := old.at/1e6, at.UnixMilli()
		if nm < om || nm == om && n >= old.n {
			return false
		}
	}
	nl := newLearnedLimit(n, w, now.UnixNano(), l.okN.Load(), old)
	nl.at = at.UnixNano()
	if old != nil && old.w == w {
		nl.relaxed = n == old.n+1 // a raise: refused, the old limit comes back
		if n < old.n && old.relaxed && l.shift.Load() < maxRelaxShift {
			l.shift.Add(1)
		}
	}
	l.limit.Store(nl)
	return true
}

// tighten returns the key's limits p (PerSecond) and m (PerMinute) with the
// learned limit ll applied: the smaller of the two for its window. A
// learned limit never raises a configured one.
func (ll *learnedLimit) tighten(p float64, m int) (float64, int) {
	switch ll.w {
	case time.Second:
		if p == 0 || float64(ll.n) < p {
			p = float64(ll.n)
		}
	case time.Minute:
		if m == 0 || ll.n < m {
			m = ll.n
		}
	}
	return p, m
}

// learnWindow returns the window a Retry-After of d suggests: a second or
// a minute, the first that holds d; false beyond a minute. A longer wait
// is a quota of hours or days: its successes say nothing of a rate, and a
// rate learned from them would hold the key back long after the reset.
func learnWindow(d time.Duration) (time.Duration, bool) {
	for _, w := range [...]time.Duration{time.Second, time.Minute} {
		if d <= w {
			return w, true
		}
	}
	return 0, false
}

// rateLimited learns from a 429, which came at now, to a request sent at
// sent under the learned limit lrn (nil: none), whose Retry-After was d:
// the successes sent within the window before it are the key's limit. A
// request sent under a learned limit and refused lowers the limit by one;
// one sent before the limit was learned (the same burst) can only raise
// it, as its successes come in.
//
// It reports whether the 429 refused a raise (refusedRaise): the key then
// needs no cooldown, the limit it goes back to holds it; and the limit it
// set, or nil when it set none.
func (l *learner) rateLimited(sent, now time.Time, d time.Duration, lrn *learnedLimit) (raise bool, set *learnedLimit) {
	w, ok := learnWindow(d)
	if !ok {
		return false, nil
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	total := l.okN.Load()
	from, to := sent.Add(-w).UnixNano(), sent.UnixNano()
	n := 0
	for j := uint64(0); j < min(total, okLogSize); j++ {
		if at := l.okAt[(total-1-j)%okLogSize].Load(); at > from && at <= to {
			n++
		}
	}
	old := l.limit.Load()
	if old != nil && old.w == w && old.relaxed && to >= old.setAt && refusedRaise(old, lrn, n, from, to) {
		raise = true
	}
	switch {
	case raise:
		n = old.n - 1 // the limit before the raise
		if l.shift.Load() < maxRelaxShift {
			l.shift.Add(1) // the raise found the limit: probe it more rarely
		}
	case n == 0:
		// No success in the window: the 429 tells nothing of the rate (a
		// quota used up elsewhere, a daily limit): the cooldown alone.
		return false, nil
	case n >= okLogSize:
		return false, nil // more than it can count: not learned
	case old != nil && old.w == w && to < old.setAt:
		if n <= old.n {
			return false, nil // the burst that taught it: nothing new
		}
	case old != nil && old.w == w:
		// Refused under the learned limit: it is one too high. (The count
		// may be short: answers of the same burst may not be in yet.)
		n = max(old.n-1, 1)
		if old.relaxed && l.shift.Load() < maxRelaxShift {
			l.shift.Add(1) // the raise found the limit: probe it more rarely
		}
	}
	set = newLearnedLimit(n, w, now.UnixNano(), total, old)
	set.at = changeTime(now, old)
	l.limit.Store(set)
	return raise, set
}

// refusedRaise reports whether a 429 under the raised limit ll, to a
// request sent at to under lrn after ok successes sent in (from, to], was
// the raise's own request: the key had sent the whole limit before the
// raise (ll.n-1) in the window before it, by its successes or by the
// requests its limit let through. The limit before the raise is then
// known to hold: it goes back to it, and that limit, which counts the
// refused request too, holds the key until the oldest of its requests in
// the window is a window old. That is no earlier than the upstream's own
// reset, for a fixed window of at most w (its window started at or before
// that request) as for a sliding one; a cooldown for the Retry-After on
// top would only cost the key the requests of its next window (a
// Retry-After rounded up to a whole second runs into it).
func refusedRaise(ll, lrn *learnedLimit, ok int, from, to int64) bool {
	if ok >= ll.n-1 {
		return true
	}
	if lrn != ll {
		return false
	}
	// The requests ll let through, this one among them.
	sw := ll.sw.windows[0]
	ll.sw.mu.Lock()
	defer ll.sw.mu.Unlock()
	sent := 0
	for i := range sw.size {
		if at := sw.ring[(sw.head+i)%len(sw.ring)]; at > from && at <= to {
			sent++
		}
	}
	return sent >= ll.n
}
