package memory

import (
	"math/rand/v2"
	"testing"
	"time"
)

func TestBins(t *testing.T) {
	if numBins != 224 {
		t.Errorf("numBins = %d, want 224 (a hist of 896 bytes, a Go size class)", numBins)
	}
	// The bins tile [0, 2^30µs) in order.
	var prev time.Duration
	for i := range numBins {
		lo, hi := binRange(i)
		if lo != prev || hi <= lo {
			t.Fatalf("bin %d = [%v, %v), previous ended at %v", i, lo, hi, prev)
		}
		prev = hi
		if binOf(lo) != i || binOf(hi-time.Nanosecond) != i {
			t.Fatalf("bin %d = [%v, %v), but binOf(lo) = %d, binOf(hi-1ns) = %d", i, lo, hi, binOf(lo), binOf(hi-time.Nanosecond))
		}
	}
	if want := time.Duration(1<<30) * time.Microsecond; prev != want {
		t.Errorf("the bins end at %v, want %v", prev, want)
	}
	for _, d := range []time.Duration{-time.Hour, -1, 0, 999} {
		if binOf(d) != 0 {
			t.Errorf("binOf(%v) = %d, want 0", d, binOf(d))
		}
	}
	for _, d := range []time.Duration{time.Hour, 1<<63 - 1} {
		if binOf(d) != numBins-1 {
			t.Errorf("binOf(%v) = %d, want the last bin", d, binOf(d))
		}
	}
}

// TestBinError checks the documented error: a latency reported by its bin
// is within 1/16 of it, or 1µs.
func TestBinError(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 1))
	worst := 0.0
	for range 100_000 {
		d := time.Duration(r.Int64N(int64(17 * time.Minute)))
		if r.IntN(2) == 0 {
			d = time.Duration(r.Int64N(int64(time.Millisecond)))
		}
		got := binValue(binOf(d))
		diff := got - d
		diff = max(diff, -diff)
		if diff > d/16+time.Microsecond {
			t.Fatalf("binValue(binOf(%v)) = %v, off by %v", d, got, diff)
		}
		if d >= 16*time.Microsecond {
			worst = max(worst, float64(diff)/float64(d))
		}
	}
	if worst > 1.0/16 || worst < 0.05 {
		t.Errorf("worst relative error %.4f, want just under 1/16", worst)
	}
}

func TestQuantile(t *testing.T) {
	var hs histSet
	for i := 1; i <= 100; i++ {
		for range i % 7 { // uneven weights
			hs.add(classSuccess, binOf(time.Duration(i)*time.Millisecond), nil)
		}
	}
	hs.add(classFailed, binOf(time.Hour), nil)
	var all []time.Duration
	for i := 1; i <= 100; i++ {
		for range i % 7 {
			all = append(all, time.Duration(i)*time.Millisecond)
		}
	}
	var m merged
	m.reset()
	m.addSet(&hs, 1<<classSuccess)
	if m.n != uint64(len(all)) {
		t.Fatalf("merged %d latencies, want %d", m.n, len(all))
	}
	for _, q := range []float64{0, 0.01, 0.5, 0.9, 0.99, 1} {
		rank := max(int(float64(len(all))*q+0.999999), 1)
		want := all[rank-1]
		if got := m.quantile(q); !within(got, want) {
			t.Errorf("quantile(%v) = %v, want %v", q, got, want)
		}
	}
	m.addSet(&hs, 1<<classFailed)
	if got := m.quantile(1); got < 17*time.Minute {
		t.Errorf("quantile(1) with an hour-long latency = %v, want the last bin", got)
	}
	for _, h := range hs.h {
		if h != nil {
			h.clear()
		}
	}
	m.reset()
	m.addSet(&hs, 7)
	if m.n != 0 || m.quantile(0.5) != 0 {
		t.Errorf("after clear: %d latencies, median %v", m.n, m.quantile(0.5))
	}
}

// TestHistSparseAndDense checks that a histogram counts the same whether it
// is sparse, turns dense on the way, or is reused after clear.
func TestHistSparseAndDense(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	var free hists
	for _, distinct := range []int{1, 5, maxSparse, maxSparse + 1, numBins} {
		for round := range 2 { // the second round reuses cleared histograms
			var want [numBins]uint64
			var hs histSet
			for range 2000 {
				bin := rng.IntN(distinct) * (numBins / distinct)
				want[bin]++
				hs.add(classLimit, bin, &free)
			}
			h := hs.h[classLimit]
			if dense := distinct > maxSparse; h.dense() != dense && round == 0 {
				t.Errorf("%d bins: dense = %v, want %v", distinct, h.dense(), dense)
			}
			var m merged
			m.reset()
			m.addSet(&hs, 1<<classLimit)
			if m.bins != want || m.n != 2000 {
				t.Fatalf("%d bins, round %d: merged counts differ", distinct, round)
			}
			free.put(h)
		}
	}
}

// TestHistFullSparseCount checks that a bin counted past what a sparse bin
// holds turns the histogram dense without losing a count.
func TestHistFullSparseCount(t *testing.T) {
	h := newHist()
	h.add(3)
	for range sparseMax + 1 {
		h.add(7)
	}
	if !h.dense() || h.v[7] != sparseMax+1 || h.v[3] != 1 {
		t.Fatalf("dense %v, bins 3 and 7 = %d, %d", h.dense(), h.v[3], h.v[7])
	}
}
