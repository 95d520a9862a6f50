package apipool

import (
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/apipool-ng/apipool/sharedstate"
	"github.com/apipool-ng/apipool/status"
)

// budget is what the upstream's rate-limit headers last said of a key:
// the requests left in its window and when the window resets. While the
// reset is ahead, the pool lets no more requests go to the key than it has
// left (counting those in flight), and a key with none left waits for the
// reset as if cooling down, before any 429.
type budget struct {
	left  atomic.Int64 // requests left, less those sent since; -1: not known
	limit atomic.Int64 // the window's limit; -1: not known
	reset atomic.Int64 // pool-clock ns of the window's reset; 0: not known
	// window is the window's length as the answers tell it: the longest
	// time to a reset that one gave (ns); 0: not known.
	window atomic.Int64
}

func (b *budget) init() {
	b.left.Store(-1)
	b.limit.Store(-1)
}

// heldUntil reports whether the budget holds the key at now (none left
// before the reset), and until when.
func (b *budget) heldUntil(now time.Time) (time.Time, bool) {
	if b.left.Load() != 0 {
		return time.Time{}, false // some left, or not known
	}
	r := b.reset.Load()
	if r <= now.UnixNano() {
		return time.Time{}, false
	}
	return time.Unix(0, r).In(now.Location()), true
}

// take counts one request against the budget, when one is known and its
// window has not reset; false when none is left.
func (b *budget) take(now time.Time) bool {
	for {
		left := b.left.Load()
		if left < 0 {
			return true
		}
		if b.reset.Load() <= now.UnixNano() {
			// The window reset: the count is stale.
			if b.left.CompareAndSwap(left, -1) {
				return true
			}
			continue
		}
		if left == 0 {
			return false
		}
		if b.left.CompareAndSwap(left, left-1) {
			return true
		}
	}
}

// giveBack returns a request taken by take that was not sent.
func (b *budget) giveBack() {
	for {
		left := b.left.Load()
		if left < 0 || b.left.CompareAndSwap(left, left+1) {
			return
		}
	}
}

// set records an answer's view: remaining requests until reset, less
// the requests sent on the key after the one answered (after), which the
// upstream had not counted yet. An answer of the same window (a reset
// within 100ms of the known one) that left more than is known now came
// before the others: it does not raise the count; of two resets of the
// same window the later is kept, so that the key is never taken to reset
// before the upstream does.
func (b *budget) set(remaining, limit int64, reset time.Time, after int64, now time.Time) {
	left := max(remaining-max(after, 0), 0)
	r := reset.UnixNano()
	oldLeft, oldReset := b.left.Load(), b.reset.Load()
	if oldLeft >= 0 && oldReset > now.UnixNano() && r <= oldReset+int64(100*time.Millisecond) && r >= oldReset-int64(100*time.Millisecond) {
		if left >= oldLeft {
			if r > oldReset {
				b.reset.CompareAndSwap(oldReset, r)
			}
			return
		}
		r = max(r, oldReset)
	}
	b.reset.Store(r)
	b.limit.Store(limit)
	b.left.Store(left)
	if d := r - now.UnixNano(); limit > 0 && d > 0 {
		for w := b.window.Load(); d > w && !b.window.CompareAndSwap(w, d); w = b.window.Load() {
		}
	}
}

// renewable reports whether the budget can start its next window by
// itself (renew): the window's limit and length are known.
func (b *budget) renewable() bool { return b.limit.Load() > 0 && b.window.Load() > 0 }

// renew starts the window after the known one once it has reset, when
// the window's limit and length are known: the whole limit is left at
// once, until the reset one window later (or the first one after now).
// The first answers of the new window correct both (set). It reports
// whether the budget is renewed.
func (b *budget) renew(now time.Time) bool {
	r, nowNs := b.reset.Load(), now.UnixNano()
	lim, w := b.limit.Load(), b.window.Load()
	if lim <= 0 || w <= 0 || r <= 0 || r > nowNs {
		return false
	}
	next := r + ((nowNs-r)/w+1)*w
	if b.reset.CompareAndSwap(r, next) {
		b.left.Store(lim)
	}
	return true
}

// expire starts the next window once the known one has reset. With the
// window's limit and length known, the key has its whole limit again at
// once (renew): the provider said how many the window allows. Otherwise
// the count is forgotten, and expire reports true: the key's next request
// is then a trial, whose answer tells the new window's count.
func (b *budget) expire(now time.Time) bool {
	left := b.left.Load()
	if left < 0 || b.reset.Load() > now.UnixNano() || b.renew(now) {
		return false
	}
	return b.left.CompareAndSwap(left, -1)
}

// view returns what a snapshot shows: remaining, limit and reset, or -1,
// -1 and zero when not known (or the window has reset).
func (b *budget) view(now time.Time) (int64, int64, time.Time) {
	left, r := b.left.Load(), b.reset.Load()
	if left < 0 || r <= now.UnixNano() {
		return -1, -1, time.Time{}
	}
	return left, b.limit.Load(), time.Unix(0, r).In(now.Location())
}

// learnBudget reads an answer's rate-limit headers into k's budget (see
// status.ParseBudget), unless WithProviderBudget turned it off; after
// is how many requests went out with k after the one answered. With a
// scope (WithCooldownScope(ScopeModel)) the headers are the scope's: a
// budget used up rests k for scope until the reset, and k's own budget is
// left as it was.
func (t *Transport) learnBudget(k *keyState, h http.Header, now time.Time, after int64, scope string) {
	if !t.cfg.steer || len(h) == 0 {
		return
	}
	var b status.Budget
	if t.cfg.budgetParser != nil {
		b = t.cfg.budgetParser(h, now)
	} else {
		b = status.ParseBudget(h, now)
	}
	w := b.Requests
	if tok := b.Tokens; tok.Known && tok.Remaining == 0 && tok.Reset.After(now) {
		// A token budget used up holds the key as a request budget would.
		w = tok
	}
	if !w.Known || w.Reset.IsZero() {
		return
	}
	// Relative resets count from now; absolute ones (Unix seconds, RFC
	// 3339) are the upstream's clock, taken as ours.
	reset := w.Reset
	if !reset.After(now) {
		return // an answer of a window that has reset already
	}
	if scope != "" {
		if w.Remaining > 0 {
			return
		}
		if _, ok := k.rest(scope, reset, now); ok {
			return
		}
		// The key rests for too many scopes already: the whole key rests.
	}
	k.budget.set(w.Remaining, w.Limit, reset, after, now)
	if w.Remaining == 0 {
		if !k.budget.renewable() {
			k.gate.CompareAndSwap(gateOpen, gateTrial) // after the reset, one request first
		}
		// The other replicas learn it as a cooldown until the reset.
		t.publish(sharedstate.Change{KeyID: k.key.ID, Kind: sharedstate.Cooldown, Until: reset, At: now})
	}
}

// RateLimitHeaderMode says what the rate-limit headers of a response the
// caller gets describe (WithRateLimitHeaders).
type RateLimitHeaderMode uint8

const (
	// RateLimitHeadersAsIs leaves them as the upstream sent them: they
	// describe the one key that answered. The default.
	RateLimitHeadersAsIs RateLimitHeaderMode = iota
	// RateLimitHeadersPool rewrites them to describe the pool: the
	// remaining count summed over the keys free now, the reset the
	// earliest. For SDKs that track limits from these headers and refuse
	// calls on their own (go-github), which would otherwise stop while
	// other keys are free.
	RateLimitHeadersPool
	// RateLimitHeadersRemove removes them.
	RateLimitHeadersRemove
)

// rateLimitHeaderPrefixes name the header families rewritten or removed.
var rateLimitHeaderPrefixes = [...]string{"X-Ratelimit-", "Ratelimit-", "Anthropic-Ratelimit-"}

func isRateLimitHeader(name string) bool {
	for _, p := range rateLimitHeaderPrefixes {
		if strings.HasPrefix(name, p) {
			return true
		}
	}
	return name == "Ratelimit" || name == "Ratelimit-Policy"
}

// rewriteRateLimitHeaders makes h's rate-limit headers describe the pool
// (RateLimitHeadersPool) or removes them.
func (t *Transport) rewriteRateLimitHeaders(h http.Header, now time.Time) {
	if h == nil {
		return
	}
	present := false
	for name := range h {
		if isRateLimitHeader(name) {
			present = true
			delete(h, name)
		}
	}
	if !present || t.cfg.rateLimitHeaders == RateLimitHeadersRemove {
		return
	}
	var remaining, limit int64
	var reset time.Time
	for _, k := range t.keys.Load().keys {
		left, lim, r := k.budget.view(now)
		if lim > 0 {
			limit += lim
		}
		if hd, until := k.available(now); hd != holdNone {
			if !until.IsZero() && (reset.IsZero() || until.Before(reset)) {
				reset = until
			}
			continue
		}
		if left < 0 {
			left = 1 // free, its count unknown: at least one
		}
		remaining += left
		if !r.IsZero() && (reset.IsZero() || r.Before(reset)) {
			reset = r
		}
	}
	if reset.IsZero() {
		reset = now.Add(time.Minute)
	}
	limit = max(limit, remaining)
	h.Set("X-Ratelimit-Limit", strconv.FormatInt(limit, 10))
	h.Set("X-Ratelimit-Remaining", strconv.FormatInt(remaining, 10))
	h.Set("X-Ratelimit-Used", strconv.FormatInt(limit-remaining, 10))
	h.Set("X-Ratelimit-Reset", strconv.FormatInt(reset.Unix()+1, 10))
}
