package sql

import (
	"math"
	"math/bits"
	"time"
)

// Latencies are kept in two forms: latency_us, whole microseconds, and
// latency_bin, a log-linear histogram bin (the bins of recorder/memory):
// one bin per microsecond below 16µs, then 8 bins per power of two up to
// 2^30µs (about 17m54s); longer latencies fall in the last bin, 223. The
// rollup counts events per bin, and quantiles are computed from the bins,
// reported as the bin's midpoint: within 6.25% of the exact value (1µs
// below 16µs). The bins are part of the schema: they never change.
const (
	histExact = 16
	histSub   = 8
	histTopE  = 30
	numBins   = histExact + (histTopE-4)*histSub
)

// binOf returns the bin of a latency.
func binOf(d time.Duration) int {
	if d <= 0 {
		return 0
	}
	v := uint64(d / time.Microsecond)
	if v < histExact {
		return int(v)
	}
	e := bits.Len64(v) - 1
	if e >= histTopE {
		return numBins - 1
	}
	return histExact + (e-4)*histSub + int(v>>(e-3)&(histSub-1))
}

// binValue is the latency reported for bin i: its lower bound for the
// exact bins, its midpoint above.
func binValue(i int) time.Duration {
	if i < histExact {
		return time.Duration(i) * time.Microsecond
	}
	e := 4 + (i-histExact)/histSub
	m := (i - histExact) % histSub
	w := int64(1) << (e - 3)
	lo := (histSub + int64(m)) * w
	return time.Duration(lo)*time.Microsecond + time.Duration(w)*time.Microsecond/2
}

// hist counts events per bin.
type hist struct {
	bins [numBins]int64
	n    int64
}

func (h *hist) add(bin int, n int64) {
	bin = min(max(bin, 0), numBins-1)
	h.bins[bin] += n
	h.n += n
}

// quantile returns the nearest-rank q-quantile.
func (h *hist) quantile(q float64) time.Duration {
	if h.n == 0 {
		return 0
	}
	rank := max(int64(math.Ceil(q*float64(h.n))), 1)
	var cum int64
	for i, c := range h.bins {
		cum += c
		if cum >= rank {
			return binValue(i)
		}
	}
	return binValue(numBins - 1)
}
