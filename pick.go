package apipool

import (
	"context"
	"runtime"
	"sync"
	"sync/atomic"
	"time"
)

// takeKey returns a reservation of the key for the request's next attempt
// (Transport.reserve), waiting for one to free up when none is free now. Waiting
// requests take keys in arrival order: only the first in the pool's wait
// queue looks, and when it has a key the next one looks. It returns a
// *NoKeyError when no key will free up within the wait allowed (the
// request's context deadline and WithMaxWait), or the context's error.
func (c *call) takeKey(ctx context.Context) (reservation, error) {
	t := c.t
	if c.pinned != nil {
		c.now = t.cfg.clock.Now()
		return c.pinned.pin(c.now), nil // a probe's request: its key, once, whatever its state
	}
	for {
		c.now = t.cfg.clock.Now()
		if t.closed.Load() {
			return reservation{}, ErrClosed
		}
		if c.waiter == nil && t.waiters.empty() || c.waiter != nil && t.waiters.isHead(c.waiter) {
			if r, ok := c.tryPick(ctx); ok {
				if c.waiter != nil {
					t.waiters.leave(c.waiter) // and the next in line looks
					c.waiter = nil
				}
				return r, nil
			}
		}
		if t.keys.Load() != c.ks {
			// AddKey or RemoveKey changed the keys since this call looked:
			// look again at the pool's keys now.
			c.refreshKeys()
			continue
		}
		nk := c.noKeyError()
		// The wait budget is WithMaxWait of time spent waiting (for keys,
		// and in backoffs), not of time spent in attempts.
		limit := c.now.Add(t.cfg.maxWait - c.waited)
		byDeadline := false
		if dl, ok := ctx.Deadline(); ok {
			if pdl := c.now.Add(time.Until(dl)); pdl.Before(limit) {
				limit, byDeadline = pdl, true
			}
		}
		// Wait only when a key will free up in time: at a known time
		// within the limit, or when a request in flight ends.
		willFree := nk.eventBound || !nk.RetryAt.IsZero() && !nk.RetryAt.After(limit)
		if !c.now.Before(limit) || !willFree {
			if byDeadline && (!c.now.Before(limit) || !nk.RetryAt.IsZero()) {
				nk.ctxErr = context.DeadlineExceeded // the request's deadline ends the wait
			}
			return reservation{}, nk
		}
		if c.waiter == nil {
			if !c.hasWaited {
				c.hasWaited = true
				t.waits.Add(1)
			}
			c.waiter = t.waiters.join()
			continue // look once more from the queue: a key may have freed meanwhile
		}
		// Wait until the earliest known time a key frees up; when a key is
		// free now (the head of the queue takes it and wakes the next) or
		// frees on an event, until a wake, with a poll in case the event
		// tells no one (a selector's choice, a breaker's half-open slot).
		d := limit.Sub(c.now)
		if nk.RetryAt.After(c.now) {
			d = min(d, nk.RetryAt.Sub(c.now)) // the earliest known time, even while others free on an event
		}
		if nk.eventBound || !nk.RetryAt.After(c.now) {
			// A wake is expected soon (a key is free now, or frees when a
			// request in flight ends): give it a moment before arming a
			// timer.
			if c.yieldForWake() {
				continue
			}
			d = min(d, headPoll)
		}
		d = max(d, time.Millisecond)
		waitEvent(c.reqSpan, d, "no key available")
		if err := c.waitFor(ctx, d); err != nil {
			nk.ctxErr = err // both the pool's reasons and the context's error
			return reservation{}, nk
		}
	}
}

// yieldForWake yields the processor a few times, and reports whether the
// call was woken meanwhile: a trial or a request in flight that ends at
// once then costs no timer.
func (c *call) yieldForWake() bool {
	for range 8 {
		runtime.Gosched()
		select {
		case <-c.waiter.ch:
			return true
		default:
		}
	}
	return false
}

// headPoll bounds how long the first waiting request waits without
// looking again.
const headPoll = 250 * time.Millisecond

// tryPick asks the selector for a free key and reserves it. It looks
// tier by tier (Key.Tier), lowest first: the selector sees the keys of one
// tier eligible at a time, and the next tier is asked when none of the
// tier's keys is free. A key that loses the race for its reservation is
// set aside for this look, and the selector asked again; keys this
// request already tried are taken only when no other key of any tier is
// free. A request of a session (WithSessions) takes its session's key
// first, when that key is eligible, whatever its tier.
func (c *call) tryPick(ctx context.Context) (reservation, bool) {
	t := c.t
	c.refreshKeys()
	c.lost.clear()
	var pinned *keyState // the session's key
	if c.rt != nil && c.rt.hasSess {
		pinned = t.sessions.get(c.rt.sess)
	}
	for pass := 0; pass < 2; pass++ {
		c.skipTried = pass == 0
		if pass == 1 && c.tried.empty() {
			break
		}
		if pinned != nil {
			c.cand.look(c.ks, -1)
			if i := c.ks.index(pinned); i >= 0 && c.eligible(i) {
				if r, ok := t.reserve(ctx, pinned, c.now); ok {
					return r, true
				}
				c.lost.set(i)
			}
		}
		for tier := range c.ks.tiers {
			c.cand.look(c.ks, tier)
			for tries := c.cand.lo; tries <= c.cand.hi; tries++ {
				i := t.selector.Pick(&c.cand)
				// The built-in selectors return only keys that Candidates
				// found eligible; a Selector of the caller's is checked.
				if i < 0 || i >= len(c.ks.keys) || !t.ownSelector && !c.eligible(i) {
					break
				}
				if r, ok := t.reserve(ctx, c.ks.keys[i], c.now); ok {
					if pinned != r.k && c.rt != nil && c.rt.hasSess {
						t.sessions.set(c.rt.sess, r.k) // the session moves to its new key
					}
					return r, true
				}
				c.lost.set(i)
			}
		}
	}
	return reservation{}, false
}

// reserve takes key k at now (keyState.reserve) and, with shared state,
// one request of its shared limits (its learned limit among them); all or
// nothing.
func (t *Transport) reserve(ctx context.Context, k *keyState, now time.Time) (reservation, bool) {
	r, h := k.reserve(now)
	if h == holdNone && t.shared != nil && (k.limited || r.lrn != nil) && !t.takeShared(ctx, k, now) {
		r.cancel()
		h = holdRate
	}
	if h != holdNone {
		t.flushBreaker(k)
		return reservation{}, false
	}
	return r, true
}

// eligible reports whether key i may be picked in the current look: of
// the tier looked at, serving the request's model, not tried (in the
// first pass) nor lost in this look, and free.
func (c *call) eligible(i int) bool {
	if i < c.cand.lo || i >= c.cand.hi || c.skipTried && c.tried.has(i) || c.lost.has(i) {
		return false
	}
	if c.rt != nil && c.rt.serves != nil && !c.rt.serves.has(i) {
		return false
	}
	k := c.ks.keys[i]
	h, _ := k.available(c.now)
	return h == holdNone && !c.modelRested(k, c.now.UnixNano())
}

// anyFree reports whether some key is free now, tried or not.
func (c *call) anyFree() bool {
	for _, k := range c.ks.keys {
		if h, _ := k.available(c.now); h == holdNone {
			return true
		}
	}
	return false
}

// noKeyError says, per key, why none is free now and when one may be.
// The keys that do not serve the request's model are left out.
func (c *call) noKeyError() *NoKeyError {
	e := &NoKeyError{Keys: len(c.ks.keys), Held: make([]KeyHold, 0, len(c.ks.keys))}
	for i, k := range c.ks.keys {
		if c.rt != nil && c.rt.serves != nil && !c.rt.serves.has(i) {
			e.Keys--
			continue
		}
		h, at := k.available(c.now)
		if h == holdNone && c.rt != nil && c.rt.model != "" {
			if u, ok := k.restedFor(c.rt.model, c.now.UnixNano()); ok {
				h, at = holdModel, time.Unix(0, u).In(c.now.Location())
			}
		}
		switch h {
		case holdRemoved:
			continue
		case holdNone:
			h = holdLost // free, yet every look lost it: it may be free again at once
			if c.lost.has(i) || !c.tried.has(i) {
				at = c.now
			}
		}
		switch h.state() {
		case KeyDisabled:
			e.Disabled++
		case KeyCooling:
			e.Cooling++
		case KeyBreakerOpen:
			e.BreakerOpen++
		case KeyLimited:
			e.Limited++
		}
		if h == holdInFlight || h == holdTrial || h == holdLost && at.IsZero() {
			e.eventBound = true
		}
		if !at.IsZero() && (e.RetryAt.IsZero() || at.Before(e.RetryAt)) {
			e.RetryAt = at
		}
		e.Held = append(e.Held, KeyHold{KeyID: k.key.ID, State: h.state(), Reason: h.String(), Until: at})
	}
	return e
}

// waitFor waits d on the pool's clock, until the call is woken (it is in
// the wait queue), or until ctx ends.
func (c *call) waitFor(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	start := c.t.cfg.clock.Now()
	tm := c.t.cfg.clock.NewTimer(d)
	defer tm.Stop()
	var woken <-chan struct{}
	if c.waiter != nil {
		woken = c.waiter.ch
	}
	select {
	case <-tm.C():
	case <-woken:
	case <-ctx.Done():
		return ctx.Err()
	}
	c.waited += c.t.cfg.clock.Now().Sub(start)
	return nil
}

// sleep waits d on the pool's clock, or until ctx is done.
func (c *call) sleep(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	c.waited += d
	tm := c.t.cfg.clock.NewTimer(d)
	defer tm.Stop()
	select {
	case <-tm.C():
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// refreshKeys moves the call onto the pool's current keys when AddKey or
// RemoveKey changed them since the call last looked, keeping its record
// of the keys it tried.
func (c *call) refreshKeys() {
	ks := c.t.keys.Load()
	if ks == c.ks {
		return
	}
	old, tried := c.ks, c.tried
	c.ks, c.cand.ks = ks, ks
	if c.rt != nil {
		c.rt.serves = ks.servedBy(c.rt.model)
	}
	c.tried = keyBits{}
	for i, k := range old.keys {
		if tried.has(i) {
			if j := ks.index(k); j >= 0 {
				c.tried.set(j)
			}
		}
	}
}

// keyBits is a set of key indexes: 0..63 without allocating.
type keyBits struct {
	lo   uint64
	more *[]uint64 // keys 64 and up, when the pool is that large
}

func (b *keyBits) set(i int) {
	if i < 0 {
		return
	}
	if i < 64 {
		b.lo |= 1 << uint(i)
		return
	}
	w := i/64 - 1
	if b.more == nil {
		b.more = new([]uint64)
	}
	for len(*b.more) <= w {
		*b.more = append(*b.more, 0)
	}
	(*b.more)[w] |= 1 << uint(i%64)
}

func (b *keyBits) has(i int) bool {
	if i < 64 {
		return b.lo&(1<<uint(i)) != 0
	}
	w := i/64 - 1
	return b.more != nil && w < len(*b.more) && (*b.more)[w]&(1<<uint(i%64)) != 0
}

func (b *keyBits) empty() bool {
	if b.lo != 0 {
		return false
	}
	if b.more != nil {
		for _, w := range *b.more {
			if w != 0 {
				return false
			}
		}
	}
	return true
}

func (b *keyBits) clear() {
	b.lo = 0
	if b.more != nil {
		clear(*b.more)
	}
}

// waitQueue holds the requests waiting for a key, in arrival order. Only
// its head looks for a key; events that may free a key wake the head.
type waitQueue struct {
	n    atomic.Int32
	mu   sync.Mutex
	list []*waiter
}

type waiter struct {
	ch chan struct{} // buffered: a wake is never lost
}

func (q *waitQueue) empty() bool { return q.n.Load() == 0 }

func (q *waitQueue) join() *waiter {
	w := &waiter{ch: make(chan struct{}, 1)}
	q.mu.Lock()
	q.list = append(q.list, w)
	q.n.Store(int32(len(q.list)))
	q.mu.Unlock()
	return w
}

func (q *waitQueue) isHead(w *waiter) bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	return len(q.list) > 0 && q.list[0] == w
}

// leave removes w; when it was the head, the new head is woken.
func (q *waitQueue) leave(w *waiter) {
	q.mu.Lock()
	wasHead := len(q.list) > 0 && q.list[0] == w
	for i, o := range q.list {
		if o == w {
			copy(q.list[i:], q.list[i+1:])
			q.list[len(q.list)-1] = nil
			q.list = q.list[:len(q.list)-1]
			break
		}
	}
	q.n.Store(int32(len(q.list)))
	var next *waiter
	if wasHead && len(q.list) > 0 {
		next = q.list[0]
	}
	q.mu.Unlock()
	if next != nil {
		next.wake()
	}
}

// wakeHead wakes the first waiting request, if any.
func (q *waitQueue) wakeHead() {
	if q.n.Load() == 0 {
		return
	}
	q.mu.Lock()
	var head *waiter
	if len(q.list) > 0 {
		head = q.list[0]
	}
	q.mu.Unlock()
	if head != nil {
		head.wake()
	}
}

// wakeAll wakes every waiting request (the pool closes).
func (q *waitQueue) wakeAll() {
	q.mu.Lock()
	l := append([]*waiter(nil), q.list...)
	q.mu.Unlock()
	for _, w := range l {
		w.wake()
	}
}

func (w *waiter) wake() {
	select {
	case w.ch <- struct{}{}:
	default:
	}
}
