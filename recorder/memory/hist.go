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

// hist counts the latencies of one time bucket and status class. It starts
// sparse: v lists the bins in use, sorted, each packed in 4 bytes as
// bin<<24 | count. It turns dense, v holding numBins counters (896 bytes),
// when more than maxSparse bins are in use or a count reaches 2^24-1. lo
// and hi bound the bins in use.
type hist struct {
	v      []uint32
	lo, hi uint8
}

// maxSparse is the number of bins a sparse histogram holds before it turns
// dense: 32 bins take 128 bytes, a seventh of a dense one.
const maxSparse = 32

const (
	sparseMax  = 1<<24 - 1 // the largest count of a sparse bin
	sparseMask = sparseMax
)

func newHist() *hist { return &hist{lo: numBins - 1} }

func (h *hist) dense() bool { return len(h.v) == numBins }

func (h *hist) add(bin int) {
	if uint8(bin) < h.lo {
		h.lo = uint8(bin)
	}
	if uint8(bin) > h.hi {
		h.hi = uint8(bin)
	}
	if h.dense() {
		if h.v[bin] != math.MaxUint32 {
			h.v[bin]++
		}
		return
	}
	i := 0
	for i < len(h.v) && int(h.v[i]>>24) < bin {
		i++
	}
	if i < len(h.v) && int(h.v[i]>>24) == bin {
		if h.v[i]&sparseMask < sparseMax {
			h.v[i]++
			return
		}
	} else if len(h.v) < maxSparse {
		h.v = append(h.v, 0)
		copy(h.v[i+1:], h.v[i:])
		h.v[i] = uint32(bin)<<24 | 1
		return
	}
	// Too many bins, or a full count: turn dense.
	d := make([]uint32, numBins)
	for _, e := range h.v {
		d[e>>24] = e & sparseMask
	}
	h.v = d
	h.v[bin]++
}

// clear empties h, keeping its memory for reuse.
func (h *hist) clear() {
	if h.dense() {
		if h.lo <= h.hi {
			clear(h.v[h.lo : int(h.hi)+1])
		}
	} else {
		h.v = h.v[:0]
	}
	h.lo, h.hi = numBins-1, 0
}

// hists is a free list of cleared histograms, which a key reuses as its
// buckets turn over, so that recording does not allocate at a steady rate.
// It keeps at most maxFree.
type hists []*hist

const maxFree = 8

func (f *hists) put(h *hist) {
	if len(*f) < maxFree {
		h.clear()
		*f = append(*f, h)
	}
}

func (f *hists) get() *hist {
	if n := len(*f); n > 0 {
		h := (*f)[n-1]
		(*f)[n-1] = nil
		*f = (*f)[:n-1]
		return h
	}
	return newHist()
}

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
// (Success, ReachLimit, and every other status), each made on its first
// event.
type histSet struct {
	h [numClasses]*hist
}

// add counts a latency of class in bin, taking a new histogram from free
// when the class has none; free may be nil.
func (s *histSet) add(class, bin int, free *hists) {
	h := s.h[class]
	if h == nil {
		if free != nil {
			h = free.get()
		} else {
			h = newHist()
		}
		s.h[class] = h
	}
	h.add(bin)
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
		if h == nil || classes&(1<<c) == 0 || h.lo > h.hi {
			continue
		}
		lo, hi := int(h.lo), int(h.hi)
		if h.dense() {
			for i, v := range h.v[lo : hi+1] {
				m.bins[lo+i] += uint64(v)
				m.n += uint64(v)
			}
		} else {
			for _, e := range h.v {
				n := uint64(e & sparseMask)
				m.bins[e>>24] += n
				m.n += n
			}
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
