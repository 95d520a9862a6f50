package memory

import (
	"math"
	"runtime"
	"sync"
	"sync/atomic"
)

// stripeEvents is how many events a stripe holds before they go into their
// keys' buckets.
const stripeEvents = 64

// pendingWindow is the span, in seconds, of the events the stripes hold
// together. The order in which events so close in time go into their keys
// makes no difference to what the keys hold (every tier keeps minutes
// beyond it), so holding them together is the same as counting them one at
// a time. Two seconds rather than one: events of processors that straddle
// a second's end do not send everything held at each event.
const pendingWindow = 2

// A stripe holds events recorded on one processor until they go into their
// keys' buckets together. Stripes are handed out by a sync.Pool, which
// keeps one per processor. Counting an event touches about ten cache lines
// of its key's buckets: counted one at a time, each event finds them gone
// from the CPU's caches (moved to another CPU that counted an event of the
// same key, or pushed out by the caller's own work between two events); a
// batch loads them once.
//
// The stripes hold the events of pendingWindow seconds of event time at
// most: an event outside them sends every stripe's events first (Record),
// as does a full stripe its own, and every query and counter all of them.
// So a query sees every event recorded before it, and events recorded one
// after the other are counted as if one at a time, in their order.
type stripe struct {
	mu   sync.Mutex
	n    int
	held atomic.Bool // n > 0, for flush to pass over an empty stripe without its lock
	ev   [stripeEvents]pendingEvent
	// ext holds the model, client and usage of the events that have any
	// (pendingEvent.ext), made for the first of them; anyExt says one is
	// held, for sendLocked to clear.
	ext    *[stripeEvents]pendingExt
	anyExt bool
	// recent holds the series of the events sent before, each at one of
	// two slots chosen by its key, model and client (recentSlots), so
	// that an event of one of them finds its series without the store's
	// map of keys and the key's list of series. A series it holds may
	// have been evicted since (lockKey looks it up again then; eviction
	// releases its buckets).
	recent [recentLen]recentSeries
}

// recentLen is the number of series a stripe remembers (stripe.recent).
const recentLen = 64

// recentSeries is a series a stripe sent events to.
type recentSeries struct {
	id seriesID
	ks *keyState
}

// recentSlots returns the two slots of series id in a stripe's recent
// series: from a mix of the lengths and of the first, middle and last
// bytes of its key, model and client, cheaper than hashing them whole.
func recentSlots(id *seriesID) (int, int) {
	const m = 0x9e3779b97f4a7c15
	h := sample(id.key)
	h = (h*m ^ sample(id.model)) * m
	h = (h ^ sample(id.client)) * m
	return int(h >> 58), int(h >> 52 & (recentLen - 1))
}

// findRecent returns the series id if the stripe remembers it, locked and
// not evicted; otherwise nil and the slot at which to remember it.
func (st *stripe) findRecent(id *seriesID) (*keyState, *recentSeries) {
	i, j := recentSlots(id)
	r := &st.recent[i]
	if r.ks == nil || !r.id.is(id) {
		if o := &st.recent[j]; o.ks != nil && o.id.is(id) {
			r = o
		} else if r.ks != nil {
			return nil, o // the second slot, as the first is in use
		} else {
			return nil, r
		}
	}
	ks := r.ks
	ks.mu.Lock()
	if ks.newest == evicted {
		ks.mu.Unlock()
		return nil, r
	}
	return ks, nil
}

// sample returns the length and three bytes of s.
func sample(s string) uint64 {
	n := len(s)
	if n == 0 {
		return 0
	}
	return uint64(n) | uint64(s[0])<<16 | uint64(s[n>>1])<<24 | uint64(s[n-1])<<32
}

// pendingEvent is what a stripe holds of one event: what Record computed
// from it, to count it in its series' buckets. An event without model,
// client or usage (an API without a usage reader) takes these 32 bytes
// alone; the others also their pendingExt.
type pendingEvent struct {
	key              string
	sec              int64
	slot, class, bin uint8
	ext              bool // the stripe's ext at the same index holds the rest
}

// pendingExt is the rest of an event that has a model, a client or usage.
type pendingExt struct {
	model, client string
	u             consumed
}

// stripes is a Store's set of stripes.
type stripes struct {
	pool sync.Pool
	mu   sync.Mutex                // serialises adding stripes
	all  atomic.Pointer[[]*stripe] // copy on write
	next atomic.Uint32
	max  int
	// lo is the first of the pendingWindow seconds of the events the
	// stripes hold.
	lo atomic.Int64
	// pick, in tests, chooses the stripe of each event in place of the
	// pool.
	pick func() *stripe
}

func (ss *stripes) init() {
	ss.max = max(4, 2*runtime.GOMAXPROCS(0))
	ss.all.Store(&[]*stripe{})
	ss.lo.Store(math.MaxInt64 - pendingWindow) // no second is within: the first event sends (nothing)
	ss.pool.New = func() any { return ss.add() }
}

// add returns a new stripe, or an existing one once there are max: the
// pool drops what it holds at a garbage collection, and asks again.
func (ss *stripes) add() *stripe {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	all := *ss.all.Load()
	if len(all) >= ss.max {
		return all[int(ss.next.Add(1))%len(all)]
	}
	st := &stripe{}
	na := append(all[:len(all):len(all)], st)
	ss.all.Store(&na)
	return st
}

// admit makes room for an event of second sec among those held: when sec
// is outside their seconds, every stripe's events go into their keys
// first, so that Record's checks see every event recorded before.
func (s *Store) admit(sec int64) {
	if lo := s.stripes.lo.Load(); sec < lo || sec >= lo+pendingWindow {
		s.flush()
		s.stripes.lo.Store(max(sec-pendingWindow+1, min(sec, lo)))
	}
}

// hold holds one event in the calling processor's stripe, and sends the
// stripe's events to their keys when it is full.
func (s *Store) hold(p pendingEvent, x *pendingExt) {
	var st *stripe
	if s.stripes.pick != nil {
		st = s.stripes.pick()
	} else {
		st = s.stripes.pool.Get().(*stripe)
		defer s.stripes.pool.Put(st)
	}
	st.mu.Lock()
	if st.n == 0 {
		st.held.Store(true)
	}
	st.ev[st.n] = p
	if p.ext {
		if st.ext == nil {
			st.ext = new([stripeEvents]pendingExt)
		}
		st.ext[st.n] = *x
		st.anyExt = true
	}
	if st.n++; st.n == stripeEvents {
		s.sendLocked(st)
	}
	st.mu.Unlock()
}

// flush sends every stripe's events to their keys: queries and counters
// call it first, so that they see every event recorded before them.
func (s *Store) flush() {
	for _, st := range *s.stripes.all.Load() {
		if !st.held.Load() {
			continue
		}
		st.mu.Lock()
		s.sendLocked(st)
		st.mu.Unlock()
	}
}

// sendLocked counts the events st holds in their keys' buckets. st.mu is
// held.
func (s *Store) sendLocked(st *stripe) {
	var ks *keyState // locked while consecutive events are its series'
	var id seriesID
	for i := range st.ev[:st.n] {
		p := &st.ev[i]
		var x *pendingExt
		var u *consumed
		if p.ext {
			x = &st.ext[i]
			u = &x.u
		}
		sid := seriesID{key: p.key}
		if x != nil {
			sid.model, sid.client = x.model, x.client
		}
		if ks != nil && !id.is(&sid) {
			ks.mu.Unlock()
			ks = nil
		}
		if ks == nil {
			var r *recentSeries
			if ks, r = st.findRecent(&sid); ks == nil {
				if ks = s.lockKey(sid, p.sec); ks == nil {
					continue // dropped and counted
				}
				*r = recentSeries{sid, ks}
			}
			id = sid
		}
		if !ks.add(p.sec, int(p.slot), int(p.class), int(p.bin), u, &s.cfg) {
			s.tooOld.Add(1)
			continue
		}
		for g := s.newest.Load(); g < p.sec && !s.newest.CompareAndSwap(g, p.sec); {
			g = s.newest.Load()
		}
	}
	if ks != nil {
		ks.mu.Unlock()
	}
	clear(st.ev[:st.n]) // the key IDs
	if st.anyExt {
		clear(st.ext[:st.n]) // the models and clients
		st.anyExt = false
	}
	st.n = 0
	st.held.Store(false)
}

// lockKey returns the state of series id, locked, adding it when it is
// new. It returns nil, and counts a drop, when the store is closed or full.
func (s *Store) lockKey(id seriesID, sec int64) *keyState {
	ks := s.find(id)
	for {
		if ks == nil {
			if ks = s.addKey(id, sec); ks == nil {
				return nil
			}
		}
		ks.mu.Lock()
		if ks.newest != evicted {
			return ks
		}
		ks.mu.Unlock()
		ks = nil
	}
}

// discard drops the events the stripes hold (the store is closing).
func (s *Store) discard() {
	for _, st := range *s.stripes.all.Load() {
		st.mu.Lock()
		clear(st.ev[:st.n])
		if st.ext != nil {
			clear(st.ext[:st.n])
		}
		st.anyExt = false
		st.n = 0
		st.held.Store(false)
		clear(st.recent[:])
		st.mu.Unlock()
	}
}
