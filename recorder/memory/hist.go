package memory

import (
	"math"
	"math/bits"
	"time"
)

// The latency histogram is log-linear over whole microseconds: one bin per
// microsecond below 16µs, then 8 linear bins per power of two up to 2^30µs
// (about 17m54s); longer latencies fall in the last bin. Reporting a bin by
// its midpoint is within 1/16 (6.25%) of any latency in it, and within 1µs
// below 16µs.
const (
	histExact = 16 // bins 0..15 hold 0..15µs exactly
	histSub   = 8  // linear bins per power of two above
	histTopE  = 30 // the bins end at 2^histTopE µs
	numBins   = histExact + (histTopE-4)*histSub
)

// hist counts latencies in numBins bins; 896 bytes, a Go size class.
type hist [numBins]uint32

// binOf returns the bin of a latency.
func binOf(d time.Duration) int {
	if d <= 0 {
		return 0
	}
	v := uint64(d / time.Microsecond)
	if v < histExact {
		return int(v)
	}
	e := bits.Len64(v) - 1 // v is in [2^e, 2^(e+1)), e >= 4
	if e >= histTopE {
		return numBins - 1
	}
	return histExact + (e-4)*histSub + int(v>>(e-3)&(histSub-1))
}

// binRange returns the latencies [lo, hi) that bin i holds (the last bin also
// holds everything above).
func binRange(i int) (lo, hi time.Duration) {
	if i < histExact {
		return time.Duration(i) * time.Microsecond, time.Duration(i+1) * time.Microsecond
	}
	e := 4 + (i-histExact)/histSub
	m := (i - histExact) % histSub
	w := int64(1) << (e - 3)
	lo = time.Duration((histSub+int64(m))*w) * time.Microsecond
	return lo, lo + time.Duration(w)*time.Microsecond
}

// binValue is the latency reported for bin i: its lower bound for the exact
// bins, its midpoint above.
func binValue(i int) time.Duration {
	lo, hi := binRange(i)
	if i < histExact {
		return lo
	}
	return lo + (hi-lo)/2
}

// histSet holds a time bucket's histograms, one per class of status
// (Success, ReachLimit, and every other status), each allocated on its first
// event and kept, cleared, when the bucket is reused. lo and hi bound the
// bins in use, so that merging skips the empty ends.
type histSet struct {
	h      [numClasses]*hist
	lo, hi [numClasses]uint8
}

func (s *histSet) add(class, bin int) {
	h := s.h[class]
	if h == nil {
		h = new(hist)
		s.h[class] = h
		s.lo[class], s.hi[class] = numBins-1, 0
	}
	if h[bin] != math.MaxUint32 {
		h[bin]++
	}
	if uint8(bin) < s.lo[class] {
		s.lo[class] = uint8(bin)
	}
	if uint8(bin) > s.hi[class] {
		s.hi[class] = uint8(bin)
	}
}

func (s *histSet) clear() {
	for c, h := range s.h {
		if h != nil && s.lo[c] <= s.hi[c] {
			clear(h[s.lo[c] : int(s.hi[c])+1])
		}
		s.lo[c], s.hi[c] = numBins-1, 0
	}
}

// merged accumulates histograms for a quantile query.
type merged struct {
	bins   [numBins]uint64
	n      uint64
	lo, hi int
}

func (m *merged) reset() {
	if m.lo <= m.hi {
		clear(m.bins[m.lo : m.hi+1])
	}
	m.n, m.lo, m.hi = 0, numBins, -1
}

// addSet adds the classes of s selected by the bit mask classes.
func (m *merged) addSet(s *histSet, classes uint8) {
	for c, h := range s.h {
		if h == nil || classes&(1<<c) == 0 || s.lo[c] > s.hi[c] {
			continue
		}
		lo, hi := int(s.lo[c]), int(s.hi[c])
		for i, v := range h[lo : hi+1] {
			m.bins[lo+i] += uint64(v)
			m.n += uint64(v)
		}
		m.lo = min(m.lo, lo)
		m.hi = max(m.hi, hi)
	}
}

// quantile returns the nearest-rank q-quantile: the value of the bin holding
// the ceil(q*n)-th smallest latency. It returns 0 when m is empty.
func (m *merged) quantile(q float64) time.Duration {
	if m.n == 0 {
		return 0
	}
	rank := uint64(math.Ceil(q * float64(m.n)))
	rank = max(rank, 1)
	var cum uint64
	for i := m.lo; i <= m.hi; i++ {
		cum += m.bins[i]
		if cum >= rank {
			return binValue(i)
		}
	}
	return binValue(m.hi)
}
