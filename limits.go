package apipool

import (
	"math"
	"sync"
	"time"
)

// localLimits are a key's PerSecond, PerMinute and PerDay limits, in this
// process. Each rate limit is a sliding window (see rateWindows): it never
// lets more than its count start in any window of its length, wherever
// the window starts (a token bucket would let twice the count through in
// the first window, a fixed window twice the count across a boundary).
// The daily quota counts the requests of each quota day. A reservation
// takes from all of them at once or from none, and can be cancelled.
type localLimits struct {
	mu      sync.Mutex
	windows []*slidingWindow
	perDay  int
	loc     *time.Location
	day     uint64 // the quota day of used
	used    int
}

func newLocalLimits(k Key, loc *time.Location) *localLimits {
	if k.PerSecond == 0 && k.PerMinute == 0 && k.PerDay == 0 {
		return nil
	}
	l := &localLimits{perDay: k.PerDay, loc: loc}
	for _, w := range rateWindows(k.PerSecond, k.PerMinute) {
		l.windows = append(l.windows, &slidingWindow{n: w.n, w: int64(w.w)})
	}
	return l
}

// window is one rate limit: at most n requests start in any interval of
// length w.
type window struct {
	n int
	w time.Duration
}

// rateWindows returns the sliding windows of the rate limits PerSecond p
// and PerMinute m, the same in this process and in a shared store:
//
//   - p >= 1: at most floor(p) requests in any second (a fraction is
//     dropped: 2.5 allows 2 a second, never 3);
//   - 0 < p < 1: at most one request in any 1/p seconds (0.5: one in any
//     two seconds);
//   - m > 0: at most m requests in any minute.
func rateWindows(p float64, m int) []window {
	var ws []window
	switch {
	case p >= 1:
		ws = append(ws, window{n: int(min(math.Floor(p), math.MaxInt32)), w: time.Second})
	case p > 0:
		// At most 146 years, so that a time plus the window never
		// overflows.
		w := time.Duration(min(float64(time.Second)/p, 1<<62))
		ws = append(ws, window{n: 1, w: w})
	}
	if m > 0 {
		ws = append(ws, window{n: m, w: time.Minute})
	}
	return ws
}

// freeAt says whether the limits allow a request at now, and if not,
// which holds it and until when.
func (l *localLimits) freeAt(now time.Time) (hold, time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.perDay > 0 && l.dayUsed(now) >= l.perDay {
		return holdDay, dayStart(dayIndex(now, l.loc)+1, l.loc)
	}
	ns := now.UnixNano()
	var at int64
	for _, w := range l.windows {
		if f := w.freeAt(ns); f > at {
			at = f
		}
	}
	if at > ns {
		return holdRate, time.Unix(0, at).In(now.Location())
	}
	return holdNone, time.Time{}
}

// reserve takes one request from every limit at now, or none.
func (l *localLimits) reserve(now time.Time) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.perDay > 0 && l.dayUsed(now) >= l.perDay {
		return false
	}
	ns := now.UnixNano()
	for _, w := range l.windows {
		if w.freeAt(ns) > ns {
			return false
		}
	}
	for _, w := range l.windows {
		w.push(ns)
	}
	if l.perDay > 0 {
		d := dayIndex(now, l.loc)
		if d != l.day {
			l.day, l.used = d, 0
		}
		l.used++
	}
	return true
}

// cancel gives back a reservation made at now.
func (l *localLimits) cancel(now time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	ns := now.UnixNano()
	for _, w := range l.windows {
		w.remove(ns)
	}
	if l.perDay > 0 && l.day == dayIndex(now, l.loc) && l.used > 0 {
		l.used--
	}
}

func (l *localLimits) dayUsed(now time.Time) int {
	if l.day != dayIndex(now, l.loc) {
		return 0
	}
	return l.used
}

// quotaLeft returns today's quota left, or -1 without a daily quota.
func (l *localLimits) quotaLeft(now time.Time) int64 {
	if l.perDay == 0 {
		return -1
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	return int64(l.perDay - l.dayUsed(now))
}

// slidingWindow remembers the times of the last n requests: a request is
// allowed when fewer than n fell within the last w nanoseconds. Its ring
// grows with use up to n entries.
type slidingWindow struct {
	n    int
	w    int64
	ring []int64 // circular, oldest at head
	head int
	size int
}

// freeAt returns the earliest time, at or after now, when a request fits.
func (s *slidingWindow) freeAt(now int64) int64 {
	if s.size < s.n {
		return now
	}
	if f := s.ring[s.head] + s.w; f > now {
		return f
	}
	return now
}

func (s *slidingWindow) push(now int64) {
	if s.size == s.n {
		// Full: the oldest falls out.
		s.ring[s.head] = now
		s.head = (s.head + 1) % len(s.ring)
		return
	}
	if s.size == len(s.ring) {
		grown := make([]int64, min(s.n, max(8, 2*len(s.ring))))
		for i := 0; i < s.size; i++ {
			grown[i] = s.ring[(s.head+i)%len(s.ring)]
		}
		s.ring, s.head = grown, 0
	}
	s.ring[(s.head+s.size)%len(s.ring)] = now
	s.size++
}

// remove takes out the newest entry equal to at.
func (s *slidingWindow) remove(at int64) {
	for i := s.size - 1; i >= 0; i-- {
		if s.ring[(s.head+i)%len(s.ring)] != at {
			continue
		}
		for j := i; j < s.size-1; j++ {
			s.ring[(s.head+j)%len(s.ring)] = s.ring[(s.head+j+1)%len(s.ring)]
		}
		s.size--
		return
	}
}

// dayIndex is the quota day of now in loc, in days since the epoch.
func dayIndex(now time.Time, loc *time.Location) uint64 {
	if loc == time.UTC {
		s := now.Unix()
		if s < 0 {
			return 0
		}
		return uint64(s / 86400)
	}
	_, off := now.In(loc).Zone()
	s := now.Unix() + int64(off)
	if s < 0 {
		return 0
	}
	return uint64(s / 86400)
}

// dayStart returns when quota day d starts in loc: its local midnight.
func dayStart(d uint64, loc *time.Location) time.Time {
	y, m, dd := time.Unix(int64(d)*86400, 0).UTC().Date()
	return time.Date(y, m, dd, 0, 0, 0, 0, loc)
}
