package memory

import (
	"math"

	"github.com/apipool-ng/apipool/recorder"
)

// consumed is what an event says it consumed, as recorder.Event has it: each
// value negative when not known.
type consumed struct {
	in, out, cached int64
	units, cost     float64
}

// amount returns v, or -1 ("not known") when v is NaN or infinite, as
// the other stores keep such values: a sum holds finite values only.
func amount(v float64) float64 {
	if v >= 0 && v <= math.MaxFloat64 {
		return v
	}
	return -1
}

// tokensKnown reports whether the event's tokens are known: its input and
// output tokens both (the cached ones are a part of the input, which
// some APIs do not report).
func (u *consumed) tokensKnown() bool { return u.in >= 0 && u.out >= 0 }

// known reports whether any value is known: only then does the event
// take room in the sums.
func (u *consumed) known() bool {
	return u.in >= 0 || u.out >= 0 || u.cached >= 0 || u.units >= 0 || u.cost >= 0
}

// sumEntry is what the events of one status slot in one minute consumed:
// the sums of the values known, and the number of events whose tokens,
// units and cost are known (the others are the minute's events less
// those).
type sumEntry struct {
	t                      int64 // the minute
	in, out, cached        int64
	units, cost            float64
	tokensN, unitsN, costN uint32
	slot                   uint8
}

func (s *sumEntry) add(u *consumed) {
	if u.in >= 0 {
		s.in += u.in
	}
	if u.out >= 0 {
		s.out += u.out
	}
	if u.cached >= 0 {
		s.cached += u.cached
	}
	if u.tokensKnown() {
		s.tokensN++
	}
	if u.units >= 0 {
		s.units += u.units
		s.unitsN++
	}
	if u.cost >= 0 {
		s.cost += u.cost
		s.costN++
	}
}

// addTo adds s to t.
func (s *sumEntry) addTo(t *known) {
	t.in += s.in
	t.out += s.out
	t.cached += s.cached
	t.units += s.units
	t.cost += s.cost
	t.tokensN += int64(s.tokensN)
	t.unitsN += int64(s.unitsN)
	t.costN += int64(s.costN)
}

// known accumulates sums for a query.
type known struct {
	in, out, cached        int64
	units, cost            float64
	tokensN, unitsN, costN int64
}

// totals returns the recorder.Totals of events events whose known values
// are k.
func (k *known) totals(events int64) recorder.Totals {
	return recorder.Totals{
		Events:      events,
		InputTokens: k.in, OutputTokens: k.out, CachedTokens: k.cached,
		TokensUnknown: events - k.tokensN,
		Units:         k.units, UnitsUnknown: events - k.unitsN,
		Cost: k.cost, CostUnknown: events - k.costN,
	}
}

// sumRing holds the sums of the minutes of the retention, sorted by time
// then slot: only the minutes and slots with an event that said what it
// consumed take room.
type sumRing struct{ ring[sumEntry] }

// lower returns the index of the first entry at or after (t, slot).
func (r *sumRing) lower(t int64, slot uint8) int {
	lo, hi := 0, r.n
	for lo < hi {
		m := int(uint(lo+hi) >> 1)
		if e := r.at(m); e.t < t || e.t == t && e.slot < slot {
			lo = m + 1
		} else {
			hi = m
		}
	}
	return lo
}

// add adds u to the sums of slot in minute t.
func (r *sumRing) add(t int64, slot uint8, u *consumed) {
	if r.n > 0 {
		e := r.at(r.n - 1)
		if e.t == t && e.slot == slot {
			e.add(u)
			return
		}
		if e.t < t || e.t == t && e.slot < slot {
			r.push(sumEntry{t: t, slot: slot})
			r.at(r.n - 1).add(u)
			return
		}
	}
	i := r.lower(t, slot)
	if i >= r.n || r.at(i).t != t || r.at(i).slot != slot {
		r.insert(i, sumEntry{t: t, slot: slot})
	}
	r.at(i).add(u)
}

// expire drops the minutes before t.
func (r *sumRing) expire(t int64) {
	if r.n > 0 && r.at(0).t < t {
		r.dropFront(r.lower(t, 0))
	}
}

// sum adds the sums of the minutes [lo, hi) that the filter selects to k.
func (r *sumRing) sum(lo, hi int64, f *filter, k *known) {
	for i := r.lower(lo, 0); i < r.n; i++ {
		e := r.at(i)
		if e.t >= hi {
			break
		}
		if f.has[e.slot] {
			e.addTo(k)
		}
	}
}
