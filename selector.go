package apipool

import (
	"math/rand/v2"
	"sort"
	"strings"
	"sync/atomic"
)

// Strategy names a built-in way of picking a key. The zero value is
// RoundRobin.
type Strategy int

const (
	// RoundRobin takes the keys in turn, skipping those not eligible; a
	// skipped key's turns are spread evenly over the others.
	RoundRobin Strategy = iota
	// Random takes an eligible key at random, as apipool-ng does.
	Random
	// Weighted takes an eligible key at random in proportion to
	// Key.Weight.
	Weighted
	// LeastInFlight takes the eligible key with the fewest requests in
	// flight, ties in turn. Above 32 keys it compares three eligible keys
	// taken at random rather than all of them.
	LeastInFlight
	// MostQuotaLeft takes the eligible key with the most quota left: the
	// lesser of its daily quota left and the requests its provider's
	// rate-limit headers say are left in the current window (a key with
	// neither counts as unlimited), ties in turn.
	// Above 32 keys it compares three eligible keys taken at random.
	MostQuotaLeft
)

var strategyNames = [...]string{"round-robin", "random", "weighted", "least-in-flight", "most-quota-left"}

func (s Strategy) valid() bool { return s >= 0 && int(s) < len(strategyNames) }

// String returns the strategy's name, such as "round-robin".
func (s Strategy) String() string {
	if s.valid() {
		return strategyNames[s]
	}
	return "unknown strategy"
}

// ParseStrategy returns the strategy with the given name (as String
// spells it), or a *ConfigError.
func ParseStrategy(name string) (Strategy, error) {
	for i, n := range strategyNames {
		if n == name {
			return Strategy(i), nil
		}
	}
	return 0, &ConfigError{Field: "strategy", Reason: "unknown strategy " + quote(name) + "; want one of " + strings.Join(strategyNames[:], ", ")}
}

// Selector picks the key for one attempt. Pick returns an index i in
// [0, c.Len()) for which c.Eligible(i) is true, or -1 when there is none.
// The pool checks the pick again when it takes the key (limits may be
// reached in between) and calls Pick again if needed. Pick is called
// concurrently from many goroutines; it must not block.
//
// In a pool with tiers (Key.Tier), Pick is asked once per tier, lowest
// first, until it returns a key: Len and the indexes cover every key of
// the pool, in the pool's order (by tier, then as given), but Eligible is
// true only for keys of the tier looked at (Candidates.Tier,
// KeyInfo.Tier); -1 passes the request on to the next tier. A request of
// a session (WithSessions) takes its session's key, when eligible,
// before Pick is asked.
type Selector interface {
	Pick(c *Candidates) int
}

// KeyInfo is what a Selector may know of a key.
type KeyInfo struct {
	KeyID     string
	Weight    int
	InFlight  int64
	QuotaLeft int64 // today's quota left, or -1 when the key has no daily quota
	Tier      int   // Key.Tier
}

// Candidates is the pool as one attempt sees it. Its methods are cheap and
// safe to call from Pick only.
type Candidates struct {
	ks   *keySet
	call *call
	// lo and hi bound the keys of the tier looked at (keys[lo:hi]); tier
	// is that tier, nil when the pool has one tier only (or the look is
	// at every tier): the built-in selectors then use their own turns.
	lo, hi int
	tier   *keyTier
}

// look sets the keys a look considers: those of ks's tier i, or every
// key for -1.
func (c *Candidates) look(ks *keySet, i int) {
	c.tier = nil
	if i < 0 {
		c.lo, c.hi = 0, len(ks.keys)
		return
	}
	t := &ks.tiers[i]
	c.lo, c.hi = t.lo, t.hi
	if len(ks.tiers) > 1 {
		c.tier = t
	}
}

// Len returns the number of keys, eligible or not.
func (c *Candidates) Len() int { return len(c.ks.keys) }

// Tier returns the tier Pick is asked for (Key.Tier): only its keys can
// be eligible.
func (c *Candidates) Tier() int {
	if c.lo < c.hi {
		return c.ks.keys[c.lo].key.Tier
	}
	return 0
}

// Eligible reports whether key i may be used for this attempt: of the
// tier looked at, serving the request's model (Key.Models), not
// disabled, removed, cooling down (for the request's model too, under
// ScopeModel), with its breaker open, at a limit, nor (while another key
// of any tier is eligible) already tried by this request.
func (c *Candidates) Eligible(i int) bool {
	if i < 0 || i >= len(c.ks.keys) {
		return false
	}
	return c.call.eligible(i)
}

// Info returns what a Selector may know of key i.
func (c *Candidates) Info(i int) KeyInfo {
	k := c.ks.keys[i]
	return KeyInfo{KeyID: k.key.ID, Weight: k.weight(), InFlight: k.inFlight.Load(), QuotaLeft: k.quotaLeft(c.call.now), Tier: k.key.Tier}
}

// turns returns the counter of the built-in selectors' turns: own, or the
// tier's in a pool with tiers.
func (c *Candidates) turns(own *atomic.Uint64) *atomic.Uint64 {
	if c.tier != nil {
		return &c.tier.next
	}
	return own
}

func newSelector(s Strategy) Selector {
	switch s {
	case Random:
		return randomSelector{}
	case Weighted:
		return weightedSelector{}
	case LeastInFlight:
		return &scanSelector{score: func(c *Candidates, i int) int64 { return -c.ks.keys[i].inFlight.Load() }}
	case MostQuotaLeft:
		return &scanSelector{score: func(c *Candidates, i int) int64 {
			k := c.ks.keys[i]
			q := k.quotaLeft(c.call.now)
			if q < 0 {
				q = 1 << 62
			}
			if r, _, _ := k.budget.view(c.call.now); r >= 0 && r < q {
				q = r // the provider's own count, when its headers tell it
			}
			return q
		}}
	default:
		return &roundRobin{}
	}
}

// probeFrom returns the first eligible index at or after start, wrapping
// within the keys looked at.
func probeFrom(c *Candidates, start int) int {
	lo, hi := c.lo, c.hi
	for j := 0; j < hi-lo; j++ {
		i := start + j
		if i >= hi {
			i -= hi - lo
		}
		if c.Eligible(i) {
			return i
		}
	}
	return -1
}

type roundRobin struct {
	_    [64]byte // keep the hot counter off its neighbours' cache line
	next atomic.Uint64
	_    [56]byte
}

// Pick takes the key the turn counter names; when that key is not
// eligible, it draws the next turn rather than taking the key's
// neighbour, so that a skipped key's turns spread evenly over the others
// (taking the neighbour would give it twice the others' share). After n
// draws without an eligible key it scans from the last.
func (r *roundRobin) Pick(c *Candidates) int {
	lo, n := c.lo, c.hi-c.lo
	if n <= 0 {
		return -1
	}
	next := c.turns(&r.next)
	var i int
	for range n {
		i = lo + int((next.Add(1)-1)%uint64(n))
		if c.Eligible(i) {
			return i
		}
	}
	return probeFrom(c, i)
}

type randomSelector struct{}

// Pick draws keys at random until one is eligible (n draws at most, then
// a scan): taking the neighbour of an ineligible key would double the
// neighbour's share.
func (randomSelector) Pick(c *Candidates) int {
	lo, n := c.lo, c.hi-c.lo
	if n <= 0 {
		return -1
	}
	i := 0
	for range n {
		i = lo + rand.IntN(n)
		if c.Eligible(i) {
			return i
		}
	}
	return probeFrom(c, i)
}

type weightedSelector struct{}

// Pick draws a key in proportion to the weights of the keys looked at
// (the tier's: weights apply within a tier).
func (weightedSelector) Pick(c *Candidates) int {
	lo, hi := c.lo, c.hi
	if hi <= lo {
		return -1
	}
	base := int64(0) // the weight of the keys before the tier
	if lo > 0 {
		base = c.ks.cumWeight[lo-1]
	}
	tw := c.ks.cumWeight[hi-1] - base
	if tw == 0 {
		return -1
	}
	// A few weighted draws first; then a weighted pass over the
	// eligible keys alone, so that ineligible heavy keys do not skew the
	// rest towards their neighbours.
	for try := 0; try < 3; try++ {
		r := base + rand.Int64N(tw)
		i := lo + sort.Search(hi-lo, func(j int) bool { return c.ks.cumWeight[lo+j] > r })
		if c.Eligible(i) {
			return i
		}
	}
	var total int64
	for i := lo; i < hi; i++ {
		if c.Eligible(i) {
			total += int64(c.ks.keys[i].weight())
		}
	}
	if total == 0 {
		return -1
	}
	r := rand.Int64N(total)
	for i := lo; i < hi; i++ {
		if c.Eligible(i) {
			r -= int64(c.ks.keys[i].weight())
			if r < 0 {
				return i
			}
		}
	}
	return -1
}

// scanSelector takes the eligible key of highest score, starting its scan
// at a rotating index so that ties are shared.
type scanSelector struct {
	_     [64]byte
	next  atomic.Uint64
	_     [56]byte
	score func(c *Candidates, i int) int64
}

// scanAll is the pool size up to which scanSelector compares every key;
// above it, it takes the better of a few random eligible keys (the "power
// of d choices"), which keeps load balanced at a constant cost per pick.
const scanAll = 32

func (s *scanSelector) Pick(c *Candidates) int {
	lo, hi := c.lo, c.hi
	n := hi - lo
	if n <= 0 {
		return -1
	}
	if n > scanAll {
		best, bestScore := -1, int64(0)
		for d := 0; d < 3; d++ {
			i := probeFrom(c, lo+rand.IntN(n))
			if i < 0 {
				return -1
			}
			if sc := s.score(c, i); best < 0 || sc > bestScore {
				best, bestScore = i, sc
			}
		}
		return best
	}
	// Ties go to the first key from a rotating start; the start is drawn
	// again when it is not eligible, so that ties spread evenly.
	next := c.turns(&s.next)
	start := lo
	for range n {
		start = lo + int((next.Add(1)-1)%uint64(n))
		if c.Eligible(start) {
			break
		}
	}
	best, bestScore := -1, int64(0)
	for j := 0; j < n; j++ {
		i := start + j
		if i >= hi {
			i -= n
		}
		if !c.Eligible(i) {
			continue
		}
		if sc := s.score(c, i); best < 0 || sc > bestScore {
			best, bestScore = i, sc
		}
	}
	return best
}
