package memory

import (
	"context"
	"fmt"
	"time"

	"github.com/apipool-ng/apipool/recorder"
	"github.com/apipool-ng/apipool/status"
)

const (
	// MaxSeriesBuckets bounds the buckets of one key's series.
	MaxSeriesBuckets = 100_000
	// MaxSeriesTotal bounds the buckets of a series over all keys.
	MaxSeriesTotal = 10_000_000

	maxSec = int64(1) << 62 // bounds every second count used in arithmetic
)

// filter is a query's status filter resolved to status slots and histogram
// classes.
type filter struct {
	has     [numSlots]bool // the status slots selected
	classes uint8          // bit c selects histogram class c
}

func newFilter(f status.Status) (filter, error) {
	if f != status.Unknown && !f.Valid() {
		return filter{}, fmt.Errorf("%w: status %d is not defined", recorder.ErrBadQuery, uint8(f))
	}
	var fl filter
	for i, s := range slotStatus {
		fl.has[i] = s.Matches(f)
	}
	switch f {
	case status.Unknown:
		fl.classes = 1<<classSuccess | 1<<classLimit | 1<<classFailed
	case status.Success:
		fl.classes = 1 << classSuccess
	case status.ReachLimit:
		fl.classes = 1 << classLimit
	default:
		fl.classes = 1 << classFailed
	}
	return fl, nil
}

func (f *filter) sum64(c *[numSlots]uint64) int64 {
	var n uint64
	for i, v := range c {
		if f.has[i] {
			n += v
		}
	}
	return int64(n)
}

// window is a query's time range in whole Unix seconds, [a, b), with
// 0 <= a and b <= maxSec. An event counts when the second that holds it is
// in the window: Since <= Time < Until for bounds that are whole seconds.
type window struct{ a, b int64 }

func windowOf(q recorder.Query) window {
	w := window{0, maxSec}
	if !q.Since.IsZero() {
		w.a = min(max(ceilSec(q.Since), 0), maxSec)
	}
	if !q.Until.IsZero() {
		w.b = min(max(ceilSec(q.Until), 0), maxSec)
	}
	return w
}

// ceilSec returns the first whole Unix second at or after t.
func ceilSec(t time.Time) int64 {
	s := t.Unix()
	if t.Nanosecond() > 0 && s < maxSec {
		s++
	}
	return s
}

func floorDiv(a, b int64) int64 {
	q := a / b
	if a%b != 0 && (a < 0) != (b < 0) {
		q--
	}
	return q
}

// span is what a key holds at query time: the seconds [sLo, sHi] of its
// second ring and the minutes [mLo, mHi] of its minute ring, clipped to the
// store's retention. mLo > mHi when it holds nothing.
type span struct{ sLo, sHi, mLo, mHi int64 }

func (s *Store) spanOf(k *keyState, g int64) span {
	if k.newest < 0 || g < 0 {
		return span{1, 0, 1, 0}
	}
	retLo := g/60 - s.cfg.minutes + 1 // the first minute within the retention
	sp := span{
		sLo: max(k.newest-secondSlots+1, retLo*60),
		sHi: k.newest,
		mLo: max(k.newest/60-s.cfg.minutes+1, retLo),
		mHi: k.newest / 60,
	}
	return sp
}

// The counting model. An event whose second is in the key's second ring
// counts at that second; any other counts at the start of its minute. A
// query counts the events whose counting time is in its window. So windows
// whose bounds are whole minutes, or whole seconds in the second ring, are
// exact, and Series buckets always sum to the count over their range.

// secSum returns the events of the seconds [lo, hi) of the second ring.
func (k *keyState) secSum(sp *span, lo, hi int64, f *filter) int64 {
	lo, hi = max(lo, sp.sLo), min(hi, sp.sHi+1)
	if lo >= hi {
		return 0
	}
	return k.secs.sum(lo, hi, f)
}

// minuteCount returns the events of minute m that count in the window w.
func (k *keyState) minuteCount(sp *span, m int64, w window, f *filter) int64 {
	start := m * 60
	n := k.secSum(sp, max(w.a, start), min(w.b, start+60), f)
	if start < sp.sLo && start >= w.a && start < w.b {
		// The events of the minute older than the second ring count at
		// its start.
		n += k.mins.sum(m, m+1, f) - k.secSum(sp, start, start+60, f)
	}
	return n
}

// count returns the key's events in the window. k.mu is held.
func (k *keyState) count(sp *span, w window, f *filter) int64 {
	if sp.mLo > sp.mHi || w.a >= w.b {
		return 0
	}
	var n int64
	// Whole minutes in the window count in full: from the minute ring, or
	// the hour counts for whole hours.
	f0 := max((w.a+59)/60, sp.mLo)
	f1 := min(w.b/60, sp.mHi+1)
	for m := f0; m < f1; {
		if m%60 == 0 && m+60 <= f1 {
			if e := k.hourHists.get(m / 60); e != nil && e.n != nil {
				n += f.sum64(e.n)
			}
			m += 60
			continue
		}
		end := min(f1, (m/60+1)*60)
		n += k.mins.sum(m, end, f)
		m = end
	}
	// The minutes that hold a bound but are not whole in the window.
	ma, mb := w.a/60, w.b/60
	if w.a%60 != 0 && ma >= sp.mLo && ma <= sp.mHi {
		n += k.minuteCount(sp, ma, w, f)
	}
	if w.b%60 != 0 && (mb != ma || w.a%60 == 0) && mb >= sp.mLo && mb <= sp.mHi {
		n += k.minuteCount(sp, mb, w, f)
	}
	return n
}

// points calls fn with every counting time in the window and its count.
// k.mu is held.
func (k *keyState) points(sp *span, w window, f *filter, fn func(sec, n int64)) {
	if sp.mLo > sp.mHi || w.a >= w.b {
		return
	}
	if lo, hi := max(w.a, sp.sLo), min(w.b, sp.sHi+1); lo < hi {
		k.secs.each(lo, hi, f, func(t, n int64) {
			if n != 0 {
				fn(t, n)
			}
		})
	}
	m0 := max((w.a+59)/60, sp.mLo)
	m1 := min((w.b+59)/60, sp.mHi+1, (sp.sLo+59)/60)
	if m0 < m1 {
		k.mins.each(m0, m1, f, func(m, n int64) {
			if m*60+59 >= sp.sLo {
				n -= k.secSum(sp, m*60, m*60+60, f)
			}
			if n != 0 {
				fn(m*60, n)
			}
		})
	}
}

// latency merges into mg the histograms that cover the key's events in the
// window: minute histograms where the key has them, else hour histograms,
// which may hold events of the hour outside the window. k.mu is held.
func (k *keyState) latency(sp *span, w window, f *filter, mg *merged) {
	if sp.mLo > sp.mHi || w.a >= w.b {
		return
	}
	lo := max(w.a/60, sp.mLo)
	hi := min((w.b-1)/60, sp.mHi)
	firstMinHist := sp.mHi - minuteHistSlots + 1
	for h := lo / 60; h <= hi/60; h++ {
		a, b := max(h*60, lo), min(h*60+59, hi)
		if b-a+1 < 60 && a >= firstMinHist {
			for m := a; m <= b; m++ {
				if e := k.minHists.get(m); e != nil {
					mg.addSet(&e.hs, f.classes)
				}
			}
			continue
		}
		if e := k.hourHists.get(h); e != nil {
			mg.addSet(&e.hs, f.classes)
		}
	}
}

// part is a series selected by a query, and what it holds.
type part struct {
	k  *keyState
	sp span
}

// group is the series of one key that a query selects, locked: the
// answers for the key add up theirs.
type group []part

func (g group) count(w window, f *filter) int64 {
	var n int64
	for i := range g {
		n += g[i].k.count(&g[i].sp, w, f)
	}
	return n
}

func (g group) latency(w window, f *filter, mg *merged) {
	for i := range g {
		g[i].k.latency(&g[i].sp, w, f, mg)
	}
}

// selects reports whether a query selects the series id.
func selects(q *recorder.Query, id seriesID) bool {
	return (q.Model == "" || q.Model == id.model) && (q.Client == "" || q.Client == id.client)
}

// keysOf returns the keys a query selects, or an error.
func (s *Store) keysOf(ctx context.Context, q recorder.Query) (map[string]*keyEntry, error) {
	if s.closed.Load() {
		return nil, recorder.ErrClosed
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	s.flush()
	m := *s.keys.Load()
	if q.KeyID != "" {
		e := m[q.KeyID]
		if e == nil {
			return nil, nil
		}
		return map[string]*keyEntry{q.KeyID: e}, nil
	}
	return m, nil
}

// each calls fn for every selected key with its selected series, locked
// (in the order of keyEntry.series, so that two queries never wait on
// each other), checking ctx every 64 series.
func (s *Store) each(ctx context.Context, q recorder.Query, fn func(id string, g group)) error {
	keys, err := s.keysOf(ctx, q)
	if err != nil {
		return err
	}
	newest := s.newest.Load()
	i := 0
	var g group
	for id, e := range keys {
		g = g[:0]
		for _, k := range *e.series.Load() {
			if i++; i%64 == 0 {
				if err := ctx.Err(); err != nil {
					unlock(g)
					return err
				}
			}
			if selects(&q, k.id) {
				k.mu.Lock()
				g = append(g, part{k, s.spanOf(k, newest)})
			}
		}
		if len(g) > 0 {
			fn(id, g)
			unlock(g)
		}
	}
	return nil
}

func unlock(g group) {
	for _, p := range g {
		p.k.mu.Unlock()
	}
}

// UsageByKey returns the number of matching events per key. See the package
// documentation for the precision of windows.
func (s *Store) UsageByKey(ctx context.Context, q recorder.Query) (map[string]int64, error) {
	if err := q.Check(); err != nil {
		return nil, err
	}
	f, err := newFilter(q.Status)
	if err != nil {
		return nil, err
	}
	w := windowOf(q)
	out := map[string]int64{}
	err = s.each(ctx, q, func(id string, g group) {
		if n := g.count(w, &f); n > 0 {
			out[id] = n
		}
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// UsageCount returns the number of matching events.
func (s *Store) UsageCount(ctx context.Context, q recorder.Query) (int64, error) {
	if err := q.Check(); err != nil {
		return 0, err
	}
	f, err := newFilter(q.Status)
	if err != nil {
		return 0, err
	}
	w := windowOf(q)
	var n int64
	err = s.each(ctx, q, func(_ string, g group) {
		n += g.count(w, &f)
	})
	if err != nil {
		return 0, err
	}
	return n, nil
}

// LatencyByKey returns latency quantiles per key. Count is exact, as in
// UsageByKey; the quantiles are approximate, see the package documentation.
func (s *Store) LatencyByKey(ctx context.Context, q recorder.Query) (map[string]recorder.Latency, error) {
	if err := q.Check(); err != nil {
		return nil, err
	}
	f, err := newFilter(q.Status)
	if err != nil {
		return nil, err
	}
	w := windowOf(q)
	out := map[string]recorder.Latency{}
	mg := new(merged)
	err = s.each(ctx, q, func(id string, g group) {
		n := g.count(w, &f)
		if n <= 0 {
			return
		}
		mg.reset()
		g.latency(w, &f, mg)
		out[id] = recorder.Latency{Count: n, P50: mg.quantile(0.5), P90: mg.quantile(0.9), P99: mg.quantile(0.99)}
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// Series returns per key the count of matching events in buckets of step,
// aligned to multiples of step since the Unix epoch. The first and last
// buckets count only the events within [q.Since, q.Until). Keys without a
// matching event in the range are absent.
//
// Both bounds must be set and Until must be after Since; step must be a whole
// number of seconds (0 means a minute), and the range at most
// [MaxSeriesBuckets] steps; the result may hold at most [MaxSeriesTotal]
// buckets over all keys. Otherwise Series returns an error wrapping
// recorder.ErrBadQuery.
func (s *Store) Series(ctx context.Context, q recorder.Query, step time.Duration) (map[string][]recorder.Bucket, error) {
	outs, err := s.series(ctx, q, step, []status.Status{q.Status})
	if err != nil {
		return nil, err
	}
	return outs[0], nil
}

// seriesRange checks a series' bounds and step and returns its first
// bucket's start in Unix seconds, its step in seconds and its number of
// buckets.
func seriesRange(q recorder.Query, step time.Duration) (first, st, nb int64, err error) {
	switch {
	case q.Since.IsZero() || q.Until.IsZero():
		return 0, 0, 0, fmt.Errorf("%w: series needs both Since and Until", recorder.ErrBadQuery)
	case !q.Until.After(q.Since):
		return 0, 0, 0, fmt.Errorf("%w: Until %v is not after Since %v", recorder.ErrBadQuery, q.Until, q.Since)
	case step < time.Second || step%time.Second != 0:
		return 0, 0, 0, fmt.Errorf("%w: step %v is not a positive whole number of seconds", recorder.ErrBadQuery, step)
	}
	st = int64(step / time.Second)
	first = q.Since.Unix()
	last := q.Until.Unix() // the second of the last instant before Until
	if q.Until.Nanosecond() == 0 {
		last--
	}
	// Bounds within ±2^61 seconds keep last-first from overflowing.
	if first < -maxSec/2 || last > maxSec/2 {
		return 0, 0, 0, fmt.Errorf("%w: range out of bounds", recorder.ErrBadQuery)
	}
	first = floorDiv(first, st) * st
	nb = floorDiv(last, st) - floorDiv(first, st) + 1
	if nb > MaxSeriesBuckets {
		return 0, 0, 0, fmt.Errorf("%w: %d buckets of %v, more than %d", recorder.ErrBadQuery, nb, step, MaxSeriesBuckets)
	}
	return first, st, nb, nil
}

// series answers Series for each of statuses, one key at a time under its
// lock.
func (s *Store) series(ctx context.Context, q recorder.Query, step time.Duration, statuses []status.Status) ([]map[string][]recorder.Bucket, error) {
	if step == 0 {
		step = time.Minute
	}
	first, st, nb, err := seriesRange(q, step)
	if err != nil {
		return nil, err
	}
	fs := make([]filter, len(statuses))
	outs := make([]map[string][]recorder.Bucket, len(statuses))
	for i, f := range statuses {
		if fs[i], err = newFilter(f); err != nil {
			return nil, err
		}
		outs[i] = map[string][]recorder.Bucket{}
	}
	w := windowOf(q)
	var total int64
	var buf []int64
	err = s.each(ctx, q, func(id string, g group) {
		for fi := range fs {
			f := &fs[fi]
			if total > MaxSeriesTotal {
				return
			}
			if buf == nil {
				buf = make([]int64, nb)
			}
			hit := false
			for _, p := range g {
				k, sp := p.k, &p.sp
				if st >= 3600 {
					// Few buckets: count each, using the hour ring where it can.
					lo, hi := max(w.a, sp.mLo*60), min(w.b, sp.sHi+1)
					for t := lo; t < hi; {
						i := (t - first) / st
						end := min(first+(i+1)*st, hi)
						if n := k.count(sp, window{t, end}, f); n != 0 {
							buf[i] += n
							hit = true
						}
						t = end
					}
				} else {
					k.points(sp, w, f, func(sec, n int64) {
						if i := (sec - first) / st; i >= 0 && i < nb {
							buf[i] += n
							hit = true
						}
					})
				}
			}
			if !hit {
				continue
			}
			total += nb
			if total > MaxSeriesTotal {
				return
			}
			bs := make([]recorder.Bucket, nb)
			for i := range bs {
				bs[i] = recorder.Bucket{Start: time.Unix(first+int64(i)*st, 0).UTC(), Count: buf[i]}
			}
			outs[fi][id] = bs
			clear(buf)
		}
	})
	if err != nil {
		return nil, err
	}
	if total > MaxSeriesTotal {
		return nil, fmt.Errorf("%w: the series would hold more than %d buckets; select a key or a coarser step", recorder.ErrBadQuery, MaxSeriesTotal)
	}
	return outs, nil
}
