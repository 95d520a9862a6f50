package apipool

import (
	"fmt"
	"math"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/apipool-ng/apipool/sharedstate"
	"github.com/apipool-ng/apipool/status"
)

// keyState is one key and everything that decides whether it may take a
// request now: requests in flight, the trial gate and the ramp after a
// cooldown, the provider's budget, the local limits, the cooldown, the
// disable and the circuit breaker.
//
// It is a state machine driven from outside. available says whether the
// key is free at a time and, if not, why and until when; reserve takes it
// for one attempt, all or nothing, as a reservation value; the
// reservation ends once, by cancel (never sent) or commit (the answer's
// verdict). Every method takes the time as an argument, as
// golang.org/x/time/rate does; nothing here reads a clock, but for the
// circuit breaker, whose timing is gobreaker's own (the wall clock: see
// BreakerSettings). What the pool does about a change (logs, the other
// replicas, the user's callbacks) is the Transport's, from the change
// values these methods return.
//
// Fields read on the request path are atomics: no pool-wide lock is taken
// per request.
type keyState struct {
	key    Key
	fp     string
	secret string
	// headerValue is the precomputed value slice for header injection,
	// shared read-only by every request (capacity == length, so an append
	// by a base transport copies).
	headerValue []string

	// pol is the pool's policy for its keys (cooldowns, disable retries,
	// the breaker's timeout), read only; wake tells a waiting request that
	// the key may have freed.
	pol  *config
	wake *waitQueue

	breaker         *keyBreaker
	breakerState    atomic.Int32 // BreakerState
	breakerOpenedAt atomic.Int64 // wall-clock ns when it last opened
	breakerPending  atomic.Bool

	cooldownUntil atomic.Int64 // pool-clock ns; 0 means none
	coolReason    atomic.Pointer[string]
	// gate admits one trial request after a cooldown or to a disabled
	// key whose retry time came, before any other (gateTrial, then
	// gateTrialOut while it is in flight).
	gate atomic.Int32
	// ramp, when not -1, caps the key's requests in flight after a trial
	// ended its cooldown (when the provider's headers tell nothing of its
	// budget): it doubles with each success, and is lifted at rampLift.
	ramp     atomic.Int64
	disabled atomic.Pointer[disableInfo]
	removed  atomic.Bool

	// inFlight is written by every request twice: on a cache line of its
	// own, so that the fields above, read by every request, are not
	// invalidated on the other CPUs by each write.
	_        [64]byte
	inFlight atomic.Int64
	_        [56]byte

	budget budget       // what the provider's rate-limit headers said (ratelimit.go)
	limits *localLimits // PerSecond, PerMinute, PerDay; nil without (limits.go)
	spend  *spendState  // Key.Budget's counts; nil without (budgets.go)
	learn  *learner     // the limit learned from 429s; nil when off (learn.go)

	// models is what Key.Models names; nil: every model (routing.go).
	models *modelSet
	// rests are the key's rests for one model each, under
	// WithCooldownScope(ScopeModel); nil when none. restMu serialises
	// their changes (rest).
	rests  atomic.Pointer[modelRests]
	restMu sync.Mutex

	attempts statusCounts // attempts by status, while metrics are on (telemetry.go)

	// With shared state: a daily-quota block leased from the store.
	leaseMu    sync.Mutex
	leaseDay   uint64
	leased     int
	leaseUntil time.Time
	leasing    chan struct{}  // closed when the block being leased is in
	limited    bool           // the key has a rate or daily limit
	loc        *time.Location // where the quota day starts
}

const (
	gateOpen int32 = iota
	gateTrial
	gateTrialOut
)

type disableInfo struct {
	reason  string
	at      time.Time
	retryAt time.Time    // when a trial request may test the key; zero: never by itself
	strikes int          // disables in a row, for the retry backoff
	prev    *disableInfo // the disable this one replaced (its own prev dropped), or nil
}

// hold is why a key cannot take a request now.
type hold uint8

const (
	holdNone hold = iota
	holdRemoved
	holdDisabled
	holdCooling
	holdTrial
	holdBreaker
	holdInFlight
	holdBudget
	holdRate
	holdDay
	holdLost
	holdModel // resting for the request's model (ScopeModel)
	// A budget of Key.Budget used up, in the order of budgetKinds.
	holdTokensPerMinute
	holdTokensPerDay
	holdCostPerDay
	holdCostPerMonth
)

var holdNames = [...]string{"free", "removed", "disabled", "cooling down", "trial in flight", "breaker open", "in-flight cap", "provider quota used up", "rate limit", "daily quota", "lost a race", "cooling down for the model",
	"token budget per minute used up", "token budget per day used up", "cost budget per day used up", "cost budget per month used up"}

func (h hold) String() string { return holdNames[h] }

// state is the KeyState a hold puts the key in.
func (h hold) state() KeyState {
	switch h {
	case holdDisabled:
		return KeyDisabled
	case holdCooling, holdBudget, holdModel:
		return KeyCooling
	case holdBreaker:
		return KeyBreakerOpen
	case holdTrial, holdInFlight, holdRate, holdDay, holdTokensPerMinute, holdTokensPerDay, holdCostPerDay, holdCostPerMonth:
		return KeyLimited
	}
	return KeyActive
}

// available is the one answer to "is the key free at now, and if not, why
// and until when": picking, waiting, NoKeyError and snapshots all come
// from it. A zero time means the key frees on an event (a request in
// flight ending), or never by itself.
func (k *keyState) available(now time.Time) (hold, time.Time) {
	if h, until := k.heldAt(now); h != holdNone {
		return h, until
	}
	if k.spend != nil {
		if i, until, ok := k.spend.held(now); ok {
			return holdTokensPerMinute + hold(i), until
		}
	}
	if k.gate.Load() == gateTrialOut {
		return holdTrial, time.Time{}
	}
	if k.breaker != nil && BreakerState(k.breakerState.Load()) == BreakerOpen {
		if left := k.breakerOpenLeft(); left > 0 {
			return holdBreaker, now.Add(left)
		}
	}
	if m := k.inFlightCap(); m > 0 && k.inFlight.Load() >= m {
		return holdInFlight, time.Time{}
	}
	if at, ok := k.budget.heldUntil(now); ok {
		return holdBudget, at
	}
	if k.limits != nil {
		if h, at := k.limits.freeAt(now); h != holdNone {
			return h, at
		}
	}
	if ll := k.learnedLimit(); ll != nil {
		if h, at := ll.sw.freeAt(now); h != holdNone {
			return h, at
		}
	}
	return holdNone, time.Time{}
}

// learnedLimit returns the limit learned for k, or nil.
func (k *keyState) learnedLimit() *learnedLimit {
	if k.learn == nil {
		return nil
	}
	return k.learn.limit.Load()
}

// heldAt reports whether k is removed, disabled or cooling down at now:
// the holds that no reservation may pass.
func (k *keyState) heldAt(now time.Time) (hold, time.Time) {
	if k.removed.Load() {
		return holdRemoved, time.Time{}
	}
	if d := k.disabled.Load(); d != nil {
		if d.retryAt.IsZero() || now.Before(d.retryAt) {
			return holdDisabled, d.retryAt
		}
	}
	if u := k.cooldownUntil.Load(); u > now.UnixNano() {
		return holdCooling, time.Unix(0, u).In(now.Location())
	}
	return holdNone, time.Time{}
}

// breakerOpenLeft returns how long k's open breaker stays open. It is the
// one reading of the wall clock in a key's state: the breaker's timing is
// gobreaker's, which reads time.Now itself.
func (k *keyState) breakerOpenLeft() time.Duration {
	return time.Duration(k.breakerOpenedAt.Load() + int64(k.pol.breaker.timeout()) - time.Now().UnixNano())
}

// reservation is one attempt's hold on a key, taken by keyState.reserve:
// an in-flight slot, the trial when one was due, one request of the
// provider's budget and of the local limits, and the breaker's
// permission. It ends once: cancel when the attempt is never sent, commit
// with the answer's verdict. The in-flight slot outlives a commit: it is
// freed by keyState.release when the answer's body is done with.
type reservation struct {
	k      *keyState
	at     time.Time     // when it was taken
	trial  bool          // the attempt is the key's trial (gate)
	full   bool          // it took the budget and the limits
	lrn    *learnedLimit // the learned limit it took, if any
	pinned bool          // a probe's: its key whatever its state (pin)
	// counted: the answer's rate-limit headers took its request into the
	// budget's count (Transport.learnBudget); else commit settles it.
	counted bool
	ticket  breakerTicket
}

// reserve takes k for one attempt at now: an in-flight slot, the trial
// when one is due, the provider's budget, the local rate and daily limits
// and the breaker's permission. It takes all of them or, when one
// refuses, gives back what it took and reports which refused.
func (k *keyState) reserve(now time.Time) (reservation, hold) {
	if m := k.inFlightCap(); m > 0 {
		for {
			n := k.inFlight.Load()
			if n >= m {
				return reservation{}, holdInFlight
			}
			if k.inFlight.CompareAndSwap(n, n+1) {
				break
			}
		}
	} else {
		k.inFlight.Add(1)
	}
	r := reservation{k: k, at: now}
	if h, _ := k.heldAt(now); h != holdNone {
		r.cancel()
		return reservation{}, h
	}
	if k.spend != nil {
		if i, _, ok := k.spend.held(now); ok {
			r.cancel()
			return reservation{}, holdTokensPerMinute + hold(i)
		}
	}
	if k.budget.expire(now) {
		k.gate.CompareAndSwap(gateOpen, gateTrial) // a new window: one request learns its count first
	}
	if g := k.gate.Load(); g != gateOpen || k.disabled.Load() != nil {
		if !k.gate.CompareAndSwap(gateTrial, gateTrialOut) {
			r.cancel()
			return reservation{}, holdTrial
		}
		r.trial = true
	}
	if !k.budget.take(now) {
		r.cancel()
		return reservation{}, holdBudget
	}
	if k.limits != nil && !k.limits.reserve(now) {
		k.budget.giveBack()
		r.cancel()
		return reservation{}, holdRate
	}
	r.full = true
	if ll := k.learnedLimit(); ll != nil {
		if !ll.sw.reserve(now) {
			r.cancel()
			return reservation{}, holdRate
		}
		r.lrn = ll
	}
	tk, ok := k.allow()
	if !ok {
		r.cancel()
		return reservation{}, holdBreaker
	}
	r.ticket = tk
	return r, holdNone
}

// pin takes k for a probe's one attempt at now, whatever its state: an
// in-flight slot alone, no trial, limit or breaker.
func (k *keyState) pin(now time.Time) reservation {
	k.inFlight.Add(1)
	return reservation{k: k, at: now, pinned: true}
}

// cancel gives back everything r took, for an attempt never sent. The
// caller flushes the breaker's changes (Transport.flushBreaker).
func (r *reservation) cancel() {
	k := r.k
	if k == nil {
		return
	}
	r.ticket.finish(k, errBreakerExcluded)
	if r.full {
		if k.limits != nil {
			k.limits.cancel(r.at)
		}
		if r.lrn != nil {
			r.lrn.sw.cancel(r.at)
		}
		k.budget.giveBack()
	}
	if r.trial {
		k.gate.CompareAndSwap(gateTrialOut, gateTrial)
	}
	*r = reservation{}
	k.release()
}

// stale reports whether k was cooled down by its upstream or disabled
// since r was taken (another request's answer, another replica): the
// attempt must not go out with it. A disabled key's own trial is not
// stale, nor a probe's reservation, nor one taken before a shared limit
// ran out (its request was granted: the cooldown is for the next ones).
func (r *reservation) stale() bool {
	k := r.k
	if r.pinned {
		return false
	}
	return k.cooldownUntil.Load() > r.at.UnixNano() && k.coolReason.Load() != reasonShared || !r.trial && k.disabled.Load() != nil
}

// verdict is what one attempt's answer says of its key, decided by the
// Transport from the answer (status, Retry-After, the request's earlier
// attempts).
type verdict struct {
	st       status.Status
	at       time.Time // when the answer came
	excluded bool      // the caller's own deadline or cancel ended it: the breaker hears nothing
	// coolUntil is the cooldown's end, for a rate limit.
	coolUntil time.Time
	// scope, when set, is the model or resource a rate limit rests the
	// key for, instead of the whole key (ScopeModel).
	scope string
	// disable, when set, disables the key with this reason (a rejection).
	disable string
}

// change is what a commit changed in a key, for the Transport to log,
// publish to the other replicas and tell the user.
type change struct {
	cooled   bool          // the cooldown moved to the verdict's coolUntil
	rested   bool          // the key's rest for the verdict's scope moved to its coolUntil
	disabled *disableInfo  // the verdict's disable, when it disabled the key
	enabled  bool          // the trial's answer put a disabled key back in use
	learned  *learnedLimit // the limit the answer made the key learn, lower or raise
}

// commit applies the answer's verdict to r's key: a rate limit cools it
// down, a rejection disables it, the breaker hears the outcome, a trial's
// answer opens or closes its gate, a success grows the ramp. The
// in-flight slot stays held (keyState.release frees it).
func (r *reservation) commit(v verdict) change {
	k := r.k
	var ch change
	if r.full && !r.counted {
		k.budget.answered()
	}
	switch {
	case v.st == status.Success:
		if k.learn != nil && !r.pinned {
			ch.learned = k.learn.noteSuccess(r.at, v.at)
		}
	case v.st == status.ReachLimit:
		if v.scope != "" {
			if moved, ok := k.rest(v.scope, v.coolUntil, v.at); ok {
				ch.rested = moved // one model rests: the key learns no limit from it
				break
			}
		}
		// A refused raise of a learned limit needs no cooldown: the limit
		// it goes back to holds the key (learner.rateLimited).
		raise := false
		if k.learn != nil && !r.pinned && !k.budget.renewable() {
			raise, ch.learned = k.learn.rateLimited(r.at, v.at, v.coolUntil.Sub(v.at), r.lrn)
		}
		if !raise {
			ch.cooled = k.cool(v.coolUntil, reasonRateLimited)
		}
	case v.disable != "":
		if info, ok := k.disable(v.disable, v.at, false); ok {
			ch.disabled = info
		}
	}
	outcome := breakerOutcome(v.st)
	if v.excluded {
		outcome = errBreakerExcluded
	}
	r.ticket.finish(k, outcome)
	if r.trial {
		r.trial = false
		ch.enabled = k.endTrial(v.st, v.at)
	} else if v.st == status.Success && k.ramp.Load() > 0 {
		k.grow()
		k.wake.wakeHead()
	}
	return ch
}

// release frees one in-flight slot of k, and tells a waiting request.
func (k *keyState) release() {
	if k == nil {
		return
	}
	k.inFlight.Add(-1)
	k.wake.wakeHead()
}

// rampLift is the in-flight cap at which a key's ramp after a cooldown
// ends.
const rampLift = 64

// inFlightCap returns the key's cap on requests in flight now: the lower
// of MaxInFlight and its ramp; 0 for none.
func (k *keyState) inFlightCap() int64 {
	m := int64(k.key.MaxInFlight)
	if r := k.ramp.Load(); r > 0 && (m == 0 || r < m) {
		m = r
	}
	return m
}

// grow doubles k's ramp after a success, and lifts it at rampLift.
func (k *keyState) grow() {
	for {
		r := k.ramp.Load()
		if r < 0 {
			return
		}
		next := 2 * r
		if next >= rampLift {
			next = -1
		}
		if k.ramp.CompareAndSwap(r, next) {
			return
		}
	}
}

// endTrial opens or closes k's gate after its trial request's answer st,
// which came at now. It reports whether the answer put a disabled key
// back in use.
func (k *keyState) endTrial(st status.Status, now time.Time) (enabled bool) {
	next := gateTrial
	switch st {
	case status.Success, status.ClientError, status.Failed:
		// The upstream took the key: a disabled key is back in use.
		next = gateOpen
		if d := k.disabled.Load(); d != nil && k.disabled.CompareAndSwap(d, nil) {
			enabled = true
		}
		if _, held := k.budget.heldUntil(now); held {
			next = gateTrial
		}
		if left, _, _ := k.budget.view(now); left < 0 && st == status.Success && k.ramp.Load() == 0 && k.learnedLimit() == nil {
			// Out of a cooldown with no budget or learned limit: let
			// requests in a few more at a time, doubling with each success.
			k.ramp.Store(2)
		} else {
			k.ramp.Store(-1)
		}
	}
	k.gate.CompareAndSwap(gateTrialOut, next)
	k.wake.wakeHead()
	return enabled
}

var (
	reasonRateLimited = ptr("rate limited by the upstream")
	reasonShared      = ptr("shared limit reached")
	reasonReplica     = ptr("cooled down by another replica")
)

func ptr(s string) *string { return &s }

// cool extends the key's cooldown to until, unless it already ends later,
// and makes the key's next request a trial. It reports whether the
// deadline moved.
func (k *keyState) cool(until time.Time, why *string) bool {
	u := until.UnixNano()
	k.gate.CompareAndSwap(gateOpen, gateTrial)
	k.ramp.Store(0) // ramp up again after the trial
	for {
		old := k.cooldownUntil.Load()
		if old >= u {
			return false
		}
		if k.cooldownUntil.CompareAndSwap(old, u) {
			k.coolReason.Store(why)
			return true
		}
	}
}

// modelRests are a key's rests for one model or resource each
// (WithCooldownScope(ScopeModel)), at most maxModelRests. A value is never
// changed once stored: rest stores a new one.
type modelRests struct {
	end  int64 // the latest until of list, pool-clock ns
	list []modelRest
}

type modelRest struct {
	scope string
	until int64 // pool-clock ns
}

// restedFor reports whether k rests for model at at (pool-clock ns), and
// until when. Once every rest is over, it drops them.
func (k *keyState) restedFor(model string, at int64) (int64, bool) {
	rs := k.rests.Load()
	if rs == nil {
		return 0, false
	}
	if rs.end <= at {
		k.rests.CompareAndSwap(rs, nil)
		return 0, false
	}
	for i := range rs.list {
		if r := &rs.list[i]; r.until > at && r.scope == model {
			return r.until, true
		}
	}
	return 0, false
}

// rest makes k rest for scope (a model or a resource) until until, unless
// it already rests for it longer, dropping the rests over at now. It
// reports whether the rest moved; ok is false, and nothing changes, when
// k already rests for maxModelRests other scopes: the caller then cools
// the whole key.
func (k *keyState) rest(scope string, until, now time.Time) (moved, ok bool) {
	u, n := until.UnixNano(), now.UnixNano()
	if u <= n {
		return false, true
	}
	k.restMu.Lock()
	defer k.restMu.Unlock()
	next := &modelRests{}
	found := false
	if old := k.rests.Load(); old != nil {
		next.list = make([]modelRest, 0, len(old.list)+1)
		for _, r := range old.list {
			if r.until <= n {
				continue // over
			}
			if r.scope == scope {
				if r.until >= u {
					return false, true
				}
				found, r.until = true, u
			}
			next.list = append(next.list, r)
		}
	}
	if !found {
		if len(next.list) >= maxModelRests {
			return false, false
		}
		next.list = append(next.list, modelRest{scope: strings.Clone(scope), until: u})
	}
	for _, r := range next.list {
		next.end = max(next.end, r.until)
	}
	k.rests.Store(next)
	return true, true
}

// disable takes k out of use at now. Unless permanent, a trial request
// tests it again after a backoff that doubles with each disable in a row
// (WithDisabledRetry). It returns the disable now in force, and whether
// it is this call's (false: the key was disabled for good already).
func (k *keyState) disable(reason string, now time.Time, permanent bool) (*disableInfo, bool) {
	var info *disableInfo
	for {
		old := k.disabled.Load()
		if old != nil && old.retryAt.IsZero() {
			return old, false // disabled for good already
		}
		info = &disableInfo{reason: reason, at: now, strikes: 1}
		if old != nil {
			prev := *old
			prev.prev = nil
			info.strikes, info.prev = old.strikes+1, &prev
		}
		if !permanent && k.pol.disabledRetryMin > 0 {
			d := k.pol.disabledRetryMin << min(info.strikes-1, 30)
			if d <= 0 || d > k.pol.disabledRetryMax {
				d = k.pol.disabledRetryMax
			}
			info.retryAt = now.Add(d)
		}
		if k.disabled.CompareAndSwap(old, info) {
			break
		}
	}
	k.gate.CompareAndSwap(gateOpen, gateTrial)
	return info, true
}

// undisable takes back the disable info, when it is still the one in
// force, restoring the one it replaced. It reports whether it did, and
// whether the key is in use again.
func (k *keyState) undisable(info *disableInfo) (undone, enabled bool) {
	if info == nil || !k.disabled.CompareAndSwap(info, info.prev) {
		return false, false
	}
	k.wake.wakeHead()
	return true, info.prev == nil
}

// disableUntil applies a disable another replica made at at, with its
// retry time (zero: for good).
func (k *keyState) disableUntil(reason string, at, retryAt time.Time) {
	for {
		old := k.disabled.Load()
		if old != nil && (old.retryAt.IsZero() || !retryAt.IsZero() && !retryAt.After(old.retryAt)) {
			return // already disabled as long or longer
		}
		info := &disableInfo{reason: reason, at: at, retryAt: retryAt, strikes: 1}
		if old != nil {
			info.strikes = old.strikes + 1
		}
		if k.disabled.CompareAndSwap(old, info) {
			break
		}
	}
	k.gate.CompareAndSwap(gateOpen, gateTrial)
}

// enable puts k back in use and ends its cooldown. It reports whether k
// was disabled.
func (k *keyState) enable() bool {
	was := k.disabled.Swap(nil) != nil
	k.cooldownUntil.Store(0)
	k.gate.CompareAndSwap(gateTrial, gateOpen)
	k.wake.wakeHead()
	return was
}

// The Transport's side of a key's changes: logs, the other replicas, the
// user's callbacks.

// reportChange logs, publishes and alerts what a commit at at changed in
// k.
func (t *Transport) reportChange(k *keyState, ch change, v verdict) {
	if ch.cooled {
		if t.cfg.logger != nil {
			t.cfg.logger.Info("apipool: key rate limited, cooling down", "key", k.key.ID, "for", v.coolUntil.Sub(v.at).String())
		}
		t.publish(sharedstate.Change{KeyID: k.key.ID, Kind: sharedstate.Cooldown, Until: v.coolUntil, At: v.at})
		t.alertCooling(k, v.at, v.coolUntil)
	}
	if ch.rested && t.cfg.logger != nil {
		t.cfg.logger.Info("apipool: key rate limited for one model, resting for it", "key", k.key.ID, "model", v.scope, "for", v.coolUntil.Sub(v.at).String())
	}
	if ch.disabled != nil {
		t.logDisable(k, ch.disabled)
		t.publishDisable(k, ch.disabled)
		t.alertDisabled(k, ch.disabled)
	}
	if ll := ch.learned; ll != nil && t.shared != nil {
		t.publish(sharedstate.Change{KeyID: k.key.ID, Kind: sharedstate.Learned, Limit: ll.n, Window: ll.w, At: time.Unix(0, ll.at).In(v.at.Location())})
	}
	t.flushBreaker(k)
	if ch.enabled {
		if t.cfg.logger != nil {
			t.cfg.logger.Info("apipool: disabled key accepted again; back in use", "key", k.key.ID)
		}
		t.publish(sharedstate.Change{KeyID: k.key.ID, Kind: sharedstate.Enable, At: v.at})
		t.alertEnabled(k, v.at, "a trial request was accepted: the key is back in use")
	}
}

// cooldownUntil returns when a key that answered resp (a rate limit) at
// now may be used again: as long as the answer asks (an HTTP date taken
// relative to the answer's own Date), or the configured fallback, capped.
func (t *Transport) cooldownUntil(resp *http.Response, now time.Time) time.Time {
	var d time.Duration
	ok := false
	if resp != nil {
		ref := now
		if v := resp.Header.Get("Date"); v != "" {
			if dt, err := http.ParseTime(v); err == nil {
				ref = dt
			}
		}
		d, ok = status.RetryAfter(resp.Header, ref)
	}
	if !ok {
		d = t.cfg.cooldown
	}
	return now.Add(min(d, t.cfg.maxCooldown))
}

// disable takes k out of use (keyState.disable) and logs it; publish
// tells the other replicas, when the change is this replica's own.
func (t *Transport) disable(k *keyState, reason string, now time.Time, publish, permanent bool) *disableInfo {
	info, changed := k.disable(reason, now, permanent)
	if changed {
		t.logDisable(k, info)
		if publish {
			t.publishDisable(k, info)
		}
		t.alertDisabled(k, info)
	}
	return info
}

func (t *Transport) logDisable(k *keyState, info *disableInfo) {
	if t.cfg.logger != nil {
		t.cfg.logger.Warn("apipool: key disabled", "key", k.key.ID, "reason", info.reason, "retry_at", info.retryAt)
	}
}

func (t *Transport) publishDisable(k *keyState, info *disableInfo) {
	t.publish(sharedstate.Change{KeyID: k.key.ID, Kind: sharedstate.Disable, Reason: info.reason, At: info.at, Until: info.retryAt})
}

// enable puts k back in use and ends its cooldown; publish tells the
// other replicas. It reports whether k was disabled.
func (t *Transport) enable(k *keyState, publish bool) bool {
	was := k.enable()
	if publish {
		t.publish(sharedstate.Change{KeyID: k.key.ID, Kind: sharedstate.Enable, At: t.cfg.clock.Now()})
	}
	return was
}

// keySet is an immutable snapshot of the pool's keys; adding or removing
// a key publishes a new one.
// The keys are in the pool's order: by tier (Key.Tier), and in the order
// they were given within a tier.
type keySet struct {
	keys        []*keyState
	byID        map[string]*keyState
	pos         map[*keyState]int
	secrets     map[string]struct{}
	cumWeight   []int64
	totalWeight int64
	// tiers are the keys' tiers, lowest first; one for a pool without
	// tiers, whose look at the keys is today's (tryPick).
	tiers []keyTier
	// models maps models to the keys that serve them; nil when no key
	// lists Models (routing.go).
	models *modelIndex
}

// keyTier is one tier of a keySet: keys[lo:hi].
type keyTier struct {
	tier, lo, hi int
	_            [40]byte
	next         atomic.Uint64 // the built-in selectors' turns in the tier
	_            [56]byte
}

func newKeySet(keys []*keyState) *keySet {
	byTier := func(a, b *keyState) int { return a.key.Tier - b.key.Tier }
	if !slices.IsSortedFunc(keys, byTier) {
		keys = slices.Clone(keys)
		slices.SortStableFunc(keys, byTier)
	}
	ks := &keySet{keys: keys, byID: make(map[string]*keyState, len(keys)), pos: make(map[*keyState]int, len(keys)),
		secrets: make(map[string]struct{}, len(keys)), cumWeight: make([]int64, len(keys))}
	n := 0
	for i, k := range keys {
		ks.byID[k.key.ID] = k
		ks.pos[k] = i
		ks.secrets[k.secret] = struct{}{}
		ks.totalWeight += int64(k.weight())
		ks.cumWeight[i] = ks.totalWeight
		if i == 0 || k.key.Tier != keys[i-1].key.Tier {
			n++
		}
		if k.models != nil && ks.models == nil {
			ks.models = new(modelIndex)
		}
	}
	ks.tiers = make([]keyTier, 0, max(n, 1))
	for i, k := range keys {
		if i == 0 || k.key.Tier != keys[i-1].key.Tier {
			ks.tiers = append(ks.tiers, keyTier{tier: k.key.Tier, lo: i})
		}
		ks.tiers[len(ks.tiers)-1].hi = i + 1
	}
	if len(ks.tiers) == 0 {
		ks.tiers = append(ks.tiers, keyTier{})
	}
	return ks
}

// index returns k's position in the set, or -1.
func (ks *keySet) index(k *keyState) int {
	if i, ok := ks.pos[k]; ok {
		return i
	}
	return -1
}

func (k *keyState) weight() int {
	if k.key.Weight <= 0 {
		return 1
	}
	return k.key.Weight
}

// checkKey checks one key for this pool (validateKey, and Models only
// with WithModel); i is its index for error messages, or -1.
func (t *Transport) checkKey(k Key, i int) error {
	if err := validateKey(k, i); err != nil {
		return err
	}
	if len(k.Models) > 0 && t.cfg.modelOf == nil {
		return &ConfigError{Field: keyField(k, i, "Models"), Reason: "the pool has no WithModel: no request has a model to match"}
	}
	if k.Budget.tokens() && t.cfg.usage == nil {
		return &ConfigError{Field: keyField(k, i, "Budget"), Reason: "a token budget needs WithUsage: the pool reads no answer's tokens without it"}
	}
	if k.Budget.cost() && t.cfg.prices == nil {
		return &ConfigError{Field: keyField(k, i, "Budget"), Reason: "a cost budget needs WithUsage with a price table: the pool knows no answer's cost without one"}
	}
	if _, any := t.cfg.prices.Lookup(""); k.Budget.cost() && t.cfg.modelOf == nil && !any {
		return &ConfigError{Field: keyField(k, i, "Budget"), Reason: `a cost budget needs WithModel, or a "*" price for every model: the price table is by model, and without WithModel no request has one`}
	}
	return nil
}

// keyField names field f of key k, the i-th given (-1: given alone).
func keyField(k Key, i int, f string) string {
	if i < 0 {
		return "Key(" + strconv.Quote(k.ID) + ")." + f
	}
	return fmt.Sprintf("keys[%d].%s", i, f)
}

// validateKey checks one key; i is its index for error messages, or -1.
func validateKey(k Key, i int) error {
	field := func(f string) string { return keyField(k, i, f) }
	switch {
	case k.ID == "":
		return &ConfigError{Field: field("ID"), Reason: "empty ID"}
	case len(k.ID) > 256:
		return &ConfigError{Field: field("ID"), Reason: "longer than 256 bytes"}
	case !utf8.ValidString(k.ID):
		return &ConfigError{Field: field("ID"), Reason: "not valid UTF-8"}
	case k.Secret == "":
		return &ConfigError{Field: field("Secret"), Reason: "empty secret (key " + quote(k.ID) + ")"}
	case k.Secret == redacted:
		return &ConfigError{Field: field("Secret"), Reason: "the secret of key " + quote(k.ID) + " is " + redacted + ", what a Key's JSON holds in place of its secret: a key read back from that JSON has lost its secret"}
	case strings.TrimSpace(string(k.Secret)) != string(k.Secret):
		return &ConfigError{Field: field("Secret"), Reason: "the secret of key " + quote(k.ID) + " begins or ends with white space (a copy-paste slip?)"}
	case string(k.Secret) == k.ID:
		f := "Key.ID" // not field("ID"), which quotes the ID: the secret
		if i >= 0 {
			f = field("ID")
		}
		return &ConfigError{Field: f, Reason: "the ID is the secret itself; IDs appear in stats and spans"}
	case k.Weight < 0:
		return &ConfigError{Field: field("Weight"), Reason: fmt.Sprintf("negative weight %d", k.Weight)}
	case k.Weight > 1_000_000:
		return &ConfigError{Field: field("Weight"), Reason: fmt.Sprintf("weight %d above 1000000", k.Weight)}
	case k.MaxInFlight < 0:
		return &ConfigError{Field: field("MaxInFlight"), Reason: fmt.Sprintf("negative limit %d", k.MaxInFlight)}
	case k.PerSecond < 0 || math.IsNaN(k.PerSecond) || math.IsInf(k.PerSecond, 0):
		return &ConfigError{Field: field("PerSecond"), Reason: fmt.Sprintf("want a finite rate >= 0, got %v", k.PerSecond)}
	case k.PerSecond > 1e6:
		return &ConfigError{Field: field("PerSecond"), Reason: fmt.Sprintf("rate %v above 1000000", k.PerSecond)}
	case k.PerMinute < 0 || k.PerMinute > 10_000_000:
		return &ConfigError{Field: field("PerMinute"), Reason: fmt.Sprintf("want 0 to 10000000, got %d", k.PerMinute)}
	case k.PerDay < 0 || k.PerDay > math.MaxInt32:
		return &ConfigError{Field: field("PerDay"), Reason: fmt.Sprintf("want 0 to %d, got %d", math.MaxInt32, k.PerDay)}
	case k.Tier < 0:
		return &ConfigError{Field: field("Tier"), Reason: fmt.Sprintf("negative tier %d", k.Tier)}
	}
	if err := validateModels(k.Models, field("Models")); err != nil {
		return err
	}
	if err := k.Budget.validate(field("Budget")); err != nil {
		return err
	}
	for j := 0; j < len(k.Secret); j++ {
		if c := k.Secret[j]; c < ' ' || c == 0x7f {
			return &ConfigError{Field: field("Secret"), Reason: "contains a control character"}
		}
	}
	// An ID goes into logs, metrics' labels and reports: a line break
	// would forge lines in them.
	for j := 0; j < len(k.ID); j++ {
		if c := k.ID[j]; c < ' ' || c == 0x7f {
			return &ConfigError{Field: field("ID"), Reason: "contains a control character"}
		}
	}
	return nil
}

func (t *Transport) newKeyState(k Key) *keyState {
	ks := &keyState{key: k, secret: string(k.Secret), fp: Fingerprint(t.cfg.fingerprintKey, k.Secret), loc: t.cfg.quotaLoc,
		pol: &t.cfg, wake: &t.waiters}
	switch t.cfg.inject {
	case injectBearer:
		ks.headerValue = []string{"Bearer " + ks.secret}
	case injectHeader:
		ks.headerValue = []string{ks.secret}
	}
	ks.headerValue = ks.headerValue[:len(ks.headerValue):len(ks.headerValue)]
	ks.limits = newLocalLimits(k, t.cfg.quotaLoc)
	ks.spend = newSpendState(sharedstate.SpendKey, k.ID, k.Budget)
	ks.budget.init()
	ks.ramp.Store(-1)
	ks.breaker = newKeyBreaker(t.cfg.breaker, ks)
	ks.limited = k.PerSecond > 0 || k.PerMinute > 0 || k.PerDay > 0
	ks.key.Models = slices.Clone(k.Models) // the caller's slice may change
	ks.models = newModelSet(k.Models)
	if !t.cfg.noLearn {
		ks.learn = new(learner)
	}
	return ks
}

// quotaLeft returns today's quota left, or -1 without a daily quota.
func (k *keyState) quotaLeft(now time.Time) int64 {
	if k.limits == nil {
		return -1
	}
	return k.limits.quotaLeft(now)
}

// KeyState is a key's state in one word. It is the one vocabulary of key
// states: KeyStatus.State, KeyHold.State and the counters of NoKeyError
// (Disabled, Cooling, BreakerOpen, Limited) all use it.
type KeyState string

const (
	// KeyActive: the key may take a request.
	KeyActive KeyState = "active"
	// KeyCooling: the key rests until a known time, after a rate limit
	// or because its provider's quota for the window is used up.
	KeyCooling KeyState = "cooling"
	// KeyDisabled: the key was refused (an invalid key) or disabled by
	// Disable; a trial request, a passing probe or Enable puts it back.
	KeyDisabled KeyState = "disabled"
	// KeyBreakerOpen: the key's circuit breaker is open after failures.
	KeyBreakerOpen KeyState = "breaker-open"
	// KeyLimited: the key is at one of its own limits (Key.MaxInFlight,
	// PerSecond, PerMinute, PerDay, a learned limit), has used up one of
	// its budgets (Key.Budget: it rests until the budget's period ends),
	// or its one trial request is in flight.
	KeyLimited KeyState = "limited"
)

// KeyStatus is a key's state at one moment, for dashboards and tests
// (Transport.Snapshot). Its KeyHold says the key's state in one word and,
// when it cannot take a request now, why and until when: the same words
// NoKeyError.Held gives per key.
type KeyStatus struct {
	// KeyHold: KeyID, State (sums up the rest), Reason ("" when the key
	// can take a request now) and Until (when it is expected to free up;
	// zero when not held or not known).
	KeyHold
	Fingerprint string
	// CoolingUntil is when the key's cooldown ends, zero when not cooling
	// down; CoolingReason says why it cools down.
	CoolingUntil  time.Time
	CoolingReason string
	// Disabled is true while the key is disabled; DisabledRetryAt is when
	// a trial request tests it again, zero when only Enable or a probe
	// puts it back.
	Disabled        bool
	DisabledReason  string
	DisabledAt      time.Time
	DisabledRetryAt time.Time
	Breaker         BreakerState
	InFlight        int64
	QuotaLeft       int64 // today's quota left, or -1 without a daily quota
	Weight          int
	// ProviderRemaining is the key's requests left in its current window
	// as the upstream's rate-limit headers last said, or -1 when not
	// known; ProviderLimit the window's limit (-1 when not known);
	// ProviderReset when the window resets (zero when not known).
	ProviderRemaining int64
	ProviderLimit     int64
	ProviderReset     time.Time
	// LearnedLimit is the limit the pool learned from the key's 429s
	// (WithLimitLearning): at most LearnedLimit requests in any
	// LearnedWindow; 0 when none was learned.
	LearnedLimit  int
	LearnedWindow time.Duration
	// Tier is the key's tier (Key.Tier); Models the models it serves
	// (Key.Models), nil for all.
	Tier   int
	Models []string
	// ModelCooldowns are the models (or resources) the key rests for
	// under WithCooldownScope(ScopeModel), while it serves the others;
	// nil when none.
	ModelCooldowns []ModelCooldown
	// Budgets are the key's budgets (Key.Budget), each with what was
	// spent in its current period; nil when it has none. A budget used
	// up holds the key (Reason names it, Until is the period's end).
	Budgets []BudgetUse
}

// ModelCooldown is a key's rest for one model or resource.
type ModelCooldown struct {
	Model string
	Until time.Time
}

// snapshotKey reads the key's state at now (pool clock).
func (t *Transport) snapshotKey(k *keyState, now time.Time) KeyStatus {
	s := KeyStatus{
		KeyHold: KeyHold{KeyID: k.key.ID, State: KeyActive}, Fingerprint: k.fp,
		Breaker: BreakerClosed, InFlight: k.inFlight.Load(), QuotaLeft: k.quotaLeft(now), Weight: k.weight(),
	}
	if k.breaker != nil {
		s.Breaker = k.breaker.cb.State()
	}
	if u := k.cooldownUntil.Load(); u > now.UnixNano() {
		s.CoolingUntil = time.Unix(0, u)
		if r := k.coolReason.Load(); r != nil {
			s.CoolingReason = *r
		}
	}
	if d := k.disabled.Load(); d != nil {
		s.Disabled, s.DisabledReason, s.DisabledAt, s.DisabledRetryAt = true, d.reason, d.at, d.retryAt
	}
	s.ProviderRemaining, s.ProviderLimit, s.ProviderReset = k.budget.view(now)
	if ll := k.learnedLimit(); ll != nil {
		s.LearnedLimit, s.LearnedWindow = ll.n, ll.w
	}
	s.Tier, s.Models = k.key.Tier, slices.Clone(k.key.Models)
	if rs := k.rests.Load(); rs != nil {
		for _, r := range rs.list {
			if r.until > now.UnixNano() {
				s.ModelCooldowns = append(s.ModelCooldowns, ModelCooldown{Model: r.scope, Until: time.Unix(0, r.until).In(now.Location())})
			}
		}
	}
	if k.spend != nil {
		s.Budgets = k.spend.uses(now, k.loc)
	}
	h, until := k.available(now)
	if h != holdNone {
		s.Reason, s.Until = h.String(), until
	}
	switch {
	case s.Disabled:
		s.State = KeyDisabled
	case !s.CoolingUntil.IsZero():
		s.State = KeyCooling
	case h == holdBudget:
		s.State = KeyCooling
		s.CoolingUntil, s.CoolingReason = until, "provider quota used up"
	case s.Breaker == BreakerOpen:
		s.State = KeyBreakerOpen
	default:
		s.State = h.state()
	}
	return s
}
