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
//
// What is left is the fewest requests left that an answer of the window
// said (floor), less the requests sent since whose answers have not come
// (out): each answer's count takes in every request the upstream had
// counted when it answered, whichever order the requests reached it in,
// and those that had not reached it yet are still out. (Taken less the
// requests sent after it, an answer that reached the upstream after a
// later request was counted short by that request: a wave of requests
// sent together, answered out of order, could leave the key held with
// requests left.) An answer without a count of its own (no headers, an
// error) lowers the floor by its request instead.
type budget struct {
	// fo packs floor and out, so that a request is taken against both at
	// once: the high 32 bits hold floor+1 (0: not known, before the first
	// answer of a window), the low 32 bits out.
	fo    atomic.Int64
	limit atomic.Int64 // the window's limit; -1: not known
	reset atomic.Int64 // pool-clock ns of the window's reset; 0: not known
	// window is the window's length as the answers tell it: the longest
	// time to a reset that one gave (ns); 0: not known.
	window atomic.Int64
}

// maxFloor bounds a floor, so that it fits its 32 bits.
const maxFloor = 1<<31 - 2

func packBudget(floor, out int64) int64 { return (min(floor, maxFloor)+1)<<32 | out }

func unpackBudget(v int64) (floor, out int64) { return v>>32 - 1, v & (1<<32 - 1) }

func (b *budget) init() {
	b.fo.Store(packBudget(-1, 0))
	b.limit.Store(-1)
}

// setFloor sets the floor to f (-1: not known), keeping out.
func (b *budget) setFloor(f int64) {
	for {
		v := b.fo.Load()
		_, o := unpackBudget(v)
		if b.fo.CompareAndSwap(v, packBudget(f, o)) {
			return
		}
	}
}

// heldUntil reports whether the budget holds the key at now (none left
// before the reset), and until when.
func (b *budget) heldUntil(now time.Time) (time.Time, bool) {
	if f, o := unpackBudget(b.fo.Load()); f < 0 || f > o {
		return time.Time{}, false // some left, or not known
	}
	r := b.reset.Load()
	if r <= now.UnixNano() {
		return time.Time{}, false
	}
	return time.Unix(0, r).In(now.Location()), true
}

// take counts one request out against the budget; false when a count is
// known, its window has not reset, and none is left.
func (b *budget) take(now time.Time) bool {
	for {
		v := b.fo.Load()
		f, o := unpackBudget(v)
		if f >= 0 && b.reset.Load() <= now.UnixNano() {
			// The window reset: the count is stale.
			b.fo.CompareAndSwap(v, packBudget(-1, o))
			continue
		}
		if f >= 0 && f <= o {
			return false
		}
		if b.fo.CompareAndSwap(v, packBudget(f, o+1)) {
			return true
		}
	}
}

// giveBack returns a request taken by take that was not sent.
func (b *budget) giveBack() { b.settle(false) }

// answered settles a request taken by take whose answer brought no count
// (set did not take it in): it is no longer out, and it lowers the floor,
// the upstream having counted it.
func (b *budget) answered() { b.settle(true) }

func (b *budget) settle(counted bool) {
	for {
		v := b.fo.Load()
		f, o := unpackBudget(v)
		if counted && f > 0 {
			f--
		}
		if b.fo.CompareAndSwap(v, packBudget(f, max(o-1, 0))) {
			return
		}
	}
}

// set records an answer's count: remaining requests until reset. own
// says that the answer's request is out (taken by take, not yet settled):
// the count takes it in, and it is out no more. An answer of the same
// window (a reset within 100ms of the known one) lowers the floor, never
// raises it; of two resets of the same window the later is kept, so that
// the key is never taken to reset before the upstream does. An answer of
// another window starts it.
func (b *budget) set(remaining, limit int64, reset time.Time, own bool, now time.Time) {
	r := reset.UnixNano()
	for {
		v := b.fo.Load()
		f, o := unpackBudget(v)
		oldReset := b.reset.Load()
		same := f >= 0 && oldReset > now.UnixNano() && r <= oldReset+int64(100*time.Millisecond) && r >= oldReset-int64(100*time.Millisecond)
		nf := max(remaining, 0)
		if same {
			nf = min(f, nf)
		}
		if own {
			o = max(o-1, 0)
		}
		if !b.fo.CompareAndSwap(v, packBudget(nf, o)) {
			continue
		}
		if !same {
			b.reset.Store(r)
		} else if r > oldReset {
			b.reset.CompareAndSwap(oldReset, r)
		}
		break
	}
	b.limit.Store(limit)
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
		b.setFloor(lim)
	}
	return true
}

// expire starts the next window once the known one has reset. With the
// window's limit and length known, the key has its whole limit again at
// once (renew): the provider said how many the window allows. Otherwise
// the count is forgotten, and expire reports true: the key's next request
// is then a trial, whose answer tells the new window's count.
func (b *budget) expire(now time.Time) bool {
	v := b.fo.Load()
	f, o := unpackBudget(v)
	if f < 0 || b.reset.Load() > now.UnixNano() || b.renew(now) {
		return false
	}
	return b.fo.CompareAndSwap(v, packBudget(-1, o))
}

// view returns what a snapshot shows: remaining (floor less out), limit
// and reset, or -1, -1 and zero when not known (or the window has reset).
func (b *budget) view(now time.Time) (int64, int64, time.Time) {
	f, o := unpackBudget(b.fo.Load())
	r := b.reset.Load()
	if f < 0 || r <= now.UnixNano() {
		return -1, -1, time.Time{}
	}
	return max(f-o, 0), b.limit.Load(), time.Unix(0, r).In(now.Location())
}

// resetSlack is how long after a request's send a relative reset in its
// answer counts from, at the latest (learnBudget).
const resetSlack = 50 * time.Millisecond

// learnBudget reads the rate-limit headers of the answer to r's attempt
// into its key's budget (see status.ParseBudget), unless
// WithProviderBudget turned it off; the count takes r's request in
// (reservation.counted), when r took it out of the budget. With a scope
// (WithCooldownScope(ScopeModel)) the headers are the scope's: a budget
// used up rests the key for scope until the reset, and the key's own
// budget is left as it was.
func (t *Transport) learnBudget(r *reservation, h http.Header, now time.Time, scope string) {
	k := r.k
	if !t.cfg.steer || len(h) == 0 {
		return
	}
	// A relative reset ("reset in 0.42s") counts from when the upstream
	// counted the request, somewhere between its send and its answer;
	// providers count a request as it arrives. Counted from the answer,
	// a slow answer (an LLM's, seconds) would hold the key that much past
	// the reset; counted from the send, a request sent at the reset could
	// arrive a little before it. So it counts from resetSlack after the
	// send, or from the answer when that came sooner.
	from := now
	if !r.at.IsZero() && now.Sub(r.at) > resetSlack {
		from = r.at.Add(resetSlack)
	}
	var b status.Budget
	if t.cfg.budgetParser != nil {
		b = t.cfg.budgetParser(h, from)
	} else {
		b = status.ParseBudget(h, from)
	}
	w := b.Requests
	if tok := b.Tokens; tok.Known && tok.Remaining == 0 && tok.Reset.After(now) {
		// A token budget used up holds the key as a request budget would.
		w = tok
	}
	if !w.Known || w.Reset.IsZero() {
		return
	}
	// Absolute resets (Unix seconds, RFC 3339) are the upstream's clock,
	// taken as ours.
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
	own := r.full && !r.counted
	k.budget.set(w.Remaining, w.Limit, reset, own, now)
	r.counted = r.counted || own
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
