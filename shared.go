package apipool

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/apipool-ng/apipool/sharedstate"
)

// WithSharedState shares key state with the other replicas of a service
// through s (see package sharedstate): cooldowns, disabled keys, limits
// learned from 429s (WithLimitLearning), and limits that hold across
// replicas, learned ones among them; and, when s is a sharedstate.Spender (redisstate
// is), what the keys spent against their budgets (Key.Budget). Close stops
// the sharing.
func WithSharedState(s sharedstate.Store) Option {
	return optionFunc(func(c *config) error {
		if s == nil {
			return &ConfigError{Field: "WithSharedState", Reason: "nil shared state"}
		}
		c.shared = s
		return nil
	})
}

// sharedTakeTimeout bounds one Take: longer, and the store counts as
// failing (local limits decide meanwhile).
const sharedTakeTimeout = 250 * time.Millisecond

// sharedQueueSize bounds the local changes waiting to be published; when
// it is full, new changes are dropped and counted (the state they carry is
// still applied locally).
const sharedQueueSize = 4096

// sharedSync runs a pool's side of a sharedstate.Store: it applies the other
// replicas' changes, publishes this one's, and takes shared limits.
type sharedSync struct {
	t      *Transport
	s      sharedstate.Store
	queue  chan sharedstate.Change
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	faulty atomic.Bool // the last call to the store failed
	// While faulty, Take is skipped (local limits decide) until
	// nextTake, wall-clock ns: one request probes the store per backoff.
	nextTake  atomic.Int64
	takeFail  atomic.Int32  // Takes failed in a row
	takeTime  atomic.Int64  // how long rate-limited Takes take, ns (noteTake)
	errors    atomic.Uint64 // failed calls to the store
	dropped   atomic.Uint64 // changes not published: the queue was full
	synced    atomic.Bool   // a Watch delivered the whole state (sharedstate.Synced)
	lastErrMu sync.Mutex
	lastErr   error

	// held is, per key, the disable and the cooldown this pool holds
	// that the store holds too, as far as the pool knows: the store
	// acknowledged them (Publish) or delivered them (Watch). A replay that
	// no longer lists one means it was enabled meanwhile (reconcile). A
	// disable or cooldown made here and not yet acknowledged is not in
	// it. heldMu guards it.
	heldMu sync.Mutex
	held   map[*keyState]heldState
	// watches numbers the Watch calls. A heldState's seq is its value
	// when the store was known to hold the state: one below a Watch's
	// number was in the store before that Watch began.
	watches atomic.Uint64
}

// heldState is a key's disable and cooldown that the store holds: the
// disable in force (compared by identity) and the cooldown's deadline
// (pool-clock ns), each with the Watch number when it was known (see
// sharedSync.watches).
type heldState struct {
	disable    *disableInfo
	disableSeq uint64
	cool       int64
	coolSeq    uint64
}

func (t *Transport) startShared(s sharedstate.Store) {
	ctx, cancel := context.WithCancel(context.Background())
	sh := &sharedSync{t: t, s: s, queue: make(chan sharedstate.Change, sharedQueueSize), ctx: ctx, cancel: cancel}
	t.shared = sh
	sh.wg.Add(2)
	go sh.watchLoop()
	go sh.publishLoop()
}

// stop ends the background work, waiting for it within ctx.
func (sh *sharedSync) stop(ctx context.Context) error {
	sh.cancel()
	done := make(chan struct{})
	go func() { sh.wg.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// fault records a failed call to the store; the first of an outage is
// logged, not every one.
func (sh *sharedSync) fault(op string, err error) {
	if err == nil || sh.ctx.Err() != nil {
		return
	}
	sh.errors.Add(1)
	sh.lastErrMu.Lock()
	sh.lastErr = err
	sh.lastErrMu.Unlock()
	if sh.faulty.CompareAndSwap(false, true) && sh.t.cfg.logger != nil {
		sh.t.cfg.logger.Warn("apipool: shared state unavailable; going on with local state", "op", op, "error", err.Error())
	}
}

// ok records a call to the store that worked.
func (sh *sharedSync) ok() {
	if sh.faulty.Load() && sh.faulty.CompareAndSwap(true, false) && sh.t.cfg.logger != nil {
		sh.t.cfg.logger.Info("apipool: shared state available again")
	}
}

// backoff returns the wait before the n-th retry: 50ms doubling to 5s.
func backoffDelay(n int) time.Duration {
	d := 50 * time.Millisecond << min(n, 7)
	return min(d, 5*time.Second)
}

func (sh *sharedSync) sleep(d time.Duration) bool {
	tm := time.NewTimer(d)
	defer tm.Stop()
	select {
	case <-tm.C:
		return true
	case <-sh.ctx.Done():
		return false
	}
}

func (sh *sharedSync) watchLoop() {
	defer sh.wg.Done()
	for n := 0; ; {
		applied := false
		watch := sh.watches.Add(1)
		// listed is what the replay lists, until Synced ends it.
		listed := map[string]listing{}
		err := sh.s.Watch(sh.ctx, func(c sharedstate.Change) {
			if !applied {
				applied = true
				sh.ok()
			}
			if listed != nil {
				switch c.Kind {
				case sharedstate.Disable:
					listed[c.KeyID] |= listedDisable
				case sharedstate.Cooldown:
					listed[c.KeyID] |= listedCooldown
				case sharedstate.Synced:
					sh.reconcile(listed, watch, c.Lost)
					listed = nil
				}
			}
			sh.t.applyShared(c)
		})
		if sh.ctx.Err() != nil {
			return
		}
		if applied {
			n = 0
		}
		if err == nil {
			err = errors.New("apipool: shared state watch ended")
		}
		sh.fault("watch", err)
		if !sh.sleep(backoffDelay(n)) {
			return
		}
		n++
	}
}

func (sh *sharedSync) publishLoop() {
	defer sh.wg.Done()
	for {
		var c sharedstate.Change
		select {
		case c = <-sh.queue:
		case <-sh.ctx.Done():
			return
		}
		for n := 0; ; n++ {
			ctx, cancel := context.WithTimeout(sh.ctx, 5*time.Second)
			err := sh.s.Publish(ctx, c)
			cancel()
			if err == nil {
				sh.ok()
				sh.stored(c)
				break
			}
			if errors.Is(err, sharedstate.ErrRejected) {
				sh.dropped.Add(1)
				break
			}
			sh.fault("publish", err)
			if !sh.sleep(backoffDelay(n)) {
				return
			}
		}
	}
}

// publish queues a local change for the other replicas.
func (t *Transport) publish(c sharedstate.Change) {
	sh := t.shared
	if sh == nil {
		return
	}
	select {
	case sh.queue <- c:
	default:
		sh.dropped.Add(1)
	}
}

// applyShared applies a change another replica made (or this one, echoed
// back), without publishing it again.
func (t *Transport) applyShared(c sharedstate.Change) {
	if c.Kind == sharedstate.Synced {
		t.shared.synced.Store(true)
		return
	}
	k, ok := t.keys.Load().byID[c.KeyID]
	if !ok {
		return
	}
	switch c.Kind {
	case sharedstate.Cooldown:
		k.cool(c.Until, reasonReplica)
		t.shared.stored(c)
	case sharedstate.Disable:
		reason := c.Reason
		if reason == "" {
			reason = "disabled by another replica"
		}
		at := c.At
		if at.IsZero() {
			at = t.cfg.clock.Now()
		}
		// The disable keeps the other replica's retry time; zero means for
		// good (pool.Disable, WithDisabledRetry(0, 0), or a store that
		// does not say).
		k.disableUntil(reason, at, c.Until)
		c.Reason, c.At = reason, at
		t.shared.stored(c)
	case sharedstate.Enable:
		t.enable(k, false)
	case sharedstate.Learned:
		// The latest learned limit wins (learner.adopt); a pool that does
		// not learn limits (WithLimitLearning(false)) ignores it.
		if k.learn != nil {
			now := t.cfg.clock.Now()
			at := c.At
			if at.IsZero() {
				at = now
			}
			k.learn.adopt(c.Limit, c.Window, at, now)
		}
	}
}

// listing is what a replay lists of a key.
type listing uint8

const (
	listedDisable listing = 1 << iota
	listedCooldown
)

// stored notes that the store holds c, a cooldown or disable that this
// pool published (Publish returned nil) or that Watch delivered, when k's
// state is still c's: the disable in force is the one c carries, or the
// cooldown ends at c.Until.
func (sh *sharedSync) stored(c sharedstate.Change) {
	k, ok := sh.t.keys.Load().byID[c.KeyID]
	if !ok {
		return
	}
	// Read after the store answered: a Watch numbered above seq began
	// after the store held c.
	seq := sh.watches.Load()
	sh.heldMu.Lock()
	defer sh.heldMu.Unlock()
	h := sh.held[k]
	switch c.Kind {
	case sharedstate.Disable:
		d := k.disabled.Load()
		if d == nil || d.reason != c.Reason || !d.at.Equal(c.At) || !d.retryAt.Equal(c.Until) {
			return
		}
		h.disable, h.disableSeq = d, seq
	case sharedstate.Cooldown:
		u := c.Until.UnixNano()
		if k.cooldownUntil.Load() != u {
			return
		}
		h.cool, h.coolSeq = u, seq
	default:
		return
	}
	if sh.held == nil {
		sh.held = make(map[*keyState]heldState)
	}
	sh.held[k] = h
}

// reconcile runs at the end of a replay (sharedstate.Synced) of Watch
// number watch, which listed listed. A key this pool holds disabled, or
// cooling down, by a disable or cooldown the store held before the Watch
// began (stored), and which the replay no longer lists, was enabled
// while the pool was not watching (the store keeps the later of two
// cooldowns, so one missing has ended or was cleared by an Enable): the
// disable or the cooldown ends here too. What this pool holds that the
// store never acknowledged stays. When the store lost its state (lost),
// a key missing says nothing: all stays, and what the store held is
// forgotten.
func (sh *sharedSync) reconcile(listed map[string]listing, watch uint64, lost bool) {
	sh.heldMu.Lock()
	defer sh.heldMu.Unlock()
	if lost {
		clear(sh.held)
		return
	}
	t := sh.t
	ks := t.keys.Load()
	now := t.cfg.clock.Now().UnixNano()
	for k, h := range sh.held {
		if ks.byID[k.key.ID] != k {
			delete(sh.held, k)
			continue
		}
		l := listed[k.key.ID]
		enabled, ended := false, false
		if h.disable != nil && h.disableSeq < watch && l&listedDisable == 0 {
			enabled = k.disabled.CompareAndSwap(h.disable, nil)
		}
		if h.cool > now && h.coolSeq < watch && l&listedCooldown == 0 {
			ended = k.cooldownUntil.CompareAndSwap(h.cool, 0)
		}
		if enabled || ended {
			if k.disabled.Load() == nil && k.cooldownUntil.Load() <= now {
				// As an Enable would: no trial first.
				k.gate.CompareAndSwap(gateTrial, gateOpen)
			}
			k.wake.wakeHead()
			if t.cfg.logger != nil {
				t.cfg.logger.Info("apipool: key enabled through another replica while this one was not watching", "key", k.key.ID, "disable_ended", enabled, "cooldown_ended", ended)
			}
		}
		if h.disable != nil && k.disabled.Load() != h.disable {
			h.disable = nil
		}
		if h.cool != 0 && (h.cool <= now || k.cooldownUntil.Load() != h.cool) {
			h.cool = 0
		}
		if h.disable == nil && h.cool == 0 {
			delete(sh.held, k)
		} else {
			sh.held[k] = h
		}
	}
}

// takeShared takes one request of k's shared limits, from a leased block
// when one is left. It reports false when the limits refuse; when the store
// fails, the local limits (already taken) decide.
//
// With rate limits, every request the store grants must be sent before the
// deadline the pool gives it (sharedstate.Limits.Lease after the Take's now), and the
// store counts it as sent then: so no window of PerSecond or PerMinute
// holds more than the limit across replicas, measured when requests are
// sent, however long the Take took. The deadline is a little more than
// the Take takes (sendSlack), and for a block leaseRate; a grant that
// comes back after it is not used.
func (t *Transport) takeShared(ctx context.Context, k *keyState, now time.Time) bool {
	sh := t.shared
	if sh.faulty.Load() {
		// While the store fails, one request per backoff probes it: the
		// one that moves nextTake past now. The others go on with the
		// local limits alone, without a round trip.
		next := sh.nextTake.Load()
		nowNs := now.UnixNano()
		if nowNs < next || !sh.nextTake.CompareAndSwap(next, nowNs+int64(backoffDelay(int(sh.takeFail.Load())))) {
			return true
		}
	}
	l := sharedstate.Limits{PerSecond: k.key.PerSecond, PerMinute: k.key.PerMinute, PerDay: k.key.PerDay}
	if ll := k.learnedLimit(); ll != nil {
		// The learned limit holds across the replicas too.
		l.PerSecond, l.PerMinute = ll.tighten(l.PerSecond, l.PerMinute)
	}
	if l.PerDay > 0 {
		l.Day = dayIndex(now, k.loc)
		l.DayEnd = dayStart(l.Day+1, k.loc)
	}
	// Lease a small block, so that most requests need no round trip: for a
	// daily quota alone, up to 16 requests that lapse with the day; with a
	// rate limit, up to a tenth of a second's worth (at most 16), which
	// lapse after leaseRate. The store counts a block's requests as sent
	// when they lapse, the latest they may go, so that no window holds
	// more than the limit across replicas; the price is that they count up
	// to leaseRate longer than they need to, and that a block not spent is
	// lost.
	n, valid := leaseSize(l)
	k.leaseMu.Lock()
	for {
		if k.leased > 0 && k.leaseDay == l.Day && now.Before(k.leaseUntil) {
			k.leased--
			k.leaseMu.Unlock()
			return true
		}
		if n == 1 || k.leasing == nil {
			break
		}
		// Another request of this replica is leasing a block: wait for it
		// rather than lease a second one that could go unused.
		ch := k.leasing
		k.leaseMu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return false
		}
		k.leaseMu.Lock()
	}
	if n > 1 {
		ch := make(chan struct{})
		k.leasing = ch
		defer func() {
			k.leaseMu.Lock()
			k.leasing = nil
			k.leaseMu.Unlock()
			close(ch)
		}()
	}
	k.leaseMu.Unlock()
	rated := l.PerSecond > 0 || l.PerMinute > 0
	for try := 0; ; try++ {
		takeAt := now
		if rated {
			// The deadline runs from the Take, not from the pick (a wait
			// for another request's block may lie between).
			takeAt = t.cfg.clock.Now()
			l.Lease = sh.sendSlack()
			if n > 1 {
				l.Lease = max(l.Lease, valid)
			}
		} else if n > 1 {
			l.Lease = valid
		}
		// The store gets sharedTakeTimeout: a store that hangs is a
		// failing store, even for callers whose own deadlines are shorter.
		tctx, cancel := context.WithTimeout(ctx, sharedTakeTimeout)
		got, retryAt, err := sh.s.Take(tctx, k.key.ID, l, takeAt, n)
		storeTimedOut := tctx.Err() != nil && ctx.Err() == nil
		cancel()
		if err == nil && rated {
			took := t.cfg.clock.Now().Sub(takeAt)
			sh.noteTake(took)
			if got > 0 && took >= l.Lease {
				// The grant came back after its deadline: the store
				// counted it as sent then, and it is lost. Once more,
				// with a deadline fitted to the Take just seen (the first
				// Take on a new connection is slow); a store late twice
				// in a row fails as one that errs.
				if try == 0 {
					continue
				}
				err = fmt.Errorf("apipool: shared state answered Take in %v, after the %v it was given", took, l.Lease)
				storeTimedOut = true
			}
		}
		if err != nil {
			if ctx.Err() == nil || storeTimedOut {
				sh.fault("take", err)
				fails := sh.takeFail.Add(1)
				sh.nextTake.Store(t.cfg.clock.Now().Add(backoffDelay(int(fails) - 1)).UnixNano())
			}
			return true
		}
		sh.takeFail.Store(0)
		sh.ok()
		if got <= 0 {
			if !retryAt.After(takeAt) {
				retryAt = takeAt.Add(time.Second)
			}
			k.cool(retryAt, reasonShared) // local only: the limit, not the key, is spent
			return false
		}
		if got > 1 {
			k.leaseMu.Lock()
			// Rate-limited blocks lapse a little before their deadline,
			// so that the last request picked is sent in time.
			until := takeAt.Add(l.Lease)
			if rated {
				until = until.Add(-minSendSlack)
			}
			if k.leased > 0 && k.leaseDay == l.Day && now.Before(k.leaseUntil) {
				// Another request leased a block meanwhile: keep both,
				// until the first lapses (the store counted its requests
				// as sent then).
				k.leased += got - 1
				if k.leaseUntil.Before(until) {
					until = k.leaseUntil
				}
			} else {
				k.leased = got - 1
			}
			k.leaseDay, k.leaseUntil = l.Day, until
			k.leaseMu.Unlock()
		}
		return true
	}
}

// minSendSlack and maxSendSlack bound sendSlack.
const (
	minSendSlack = 2 * time.Millisecond
	maxSendSlack = sharedTakeTimeout
)

// sendSlack returns the deadline to give the requests of a rate-limited
// Take: twice the time recent Takes took, plus minSendSlack, at most
// maxSendSlack. A request counts in the store's windows as sent at its
// deadline, up to this much later than it was: at a per-second limit
// kept busy, the slack is the share of the limit lost (1% for 10 ms).
func (sh *sharedSync) sendSlack() time.Duration {
	return min(2*time.Duration(sh.takeTime.Load())+minSendSlack, maxSendSlack)
}

// noteTake records how long a Take took, from its now to its answer on
// the pool's clock: the estimate rises at once to a slower Take, and
// decays by an eighth of the difference with each faster one.
func (sh *sharedSync) noteTake(d time.Duration) {
	for {
		old := sh.takeTime.Load()
		next := int64(d)
		if next < old {
			next = old - (old-next)/8
		}
		if sh.takeTime.CompareAndSwap(old, next) {
			return
		}
	}
}

// leaseRate is how long a block leased under a rate limit stays valid.
// The store counts the block's requests as sent at its end, so a window
// may count a request up to leaseRate longer than it needs to.
const leaseRate = 100 * time.Millisecond

// leaseSize returns how many requests of a key's shared limits to take
// from the store at once, and how long they stay valid.
func leaseSize(l sharedstate.Limits) (int, time.Duration) {
	rate := 0.0 // requests a second the tightest rate limit allows, 0 without
	for _, w := range rateWindows(l.PerSecond, l.PerMinute) {
		if r := float64(w.n) / w.w.Seconds(); rate == 0 || r < rate {
			rate = r
		}
	}
	if rate == 0 {
		return min(max(l.PerDay/100, 1), 16), 24 * time.Hour
	}
	n := min(max(int(rate/10), 1), 16)
	if l.PerDay > 0 {
		n = min(n, max(l.PerDay/100, 1))
	}
	return n, leaseRate
}

// SharedStateHealth is how a pool's sharing of key state fares.
type SharedStateHealth struct {
	// Available is false while calls to the store fail.
	Available bool
	// Errors counts the calls to the store that failed (a spend of the
	// budgets among them, when the store is a sharedstate.Spender);
	// Dropped, the local changes and spends not sent because their queue
	// was full (a spend not sent counts in this replica only), and the
	// failed spends dropped past the 512 kept to be sent again.
	Errors, Dropped uint64
	// LastError is the last failure, or nil.
	LastError error
	// Synced is true once a Watch of the store has delivered its whole
	// state (sharedstate.Synced): from then on the pool hears the other
	// replicas' changes as they are made.
	Synced bool
}

// SharedStateHealth reports how the sharing of key state fares; the zero
// value when the pool has no shared state.
func (t *Transport) SharedStateHealth() SharedStateHealth {
	sh := t.shared
	if sh == nil {
		return SharedStateHealth{}
	}
	sh.lastErrMu.Lock()
	defer sh.lastErrMu.Unlock()
	return SharedStateHealth{Available: !sh.faulty.Load(), Errors: sh.errors.Load(), Dropped: sh.dropped.Load(), LastError: sh.lastErr, Synced: sh.synced.Load()}
}
