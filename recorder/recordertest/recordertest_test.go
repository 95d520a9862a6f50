package recordertest

import (
	"context"
	"errors"
	"fmt"
	"math"
	"os"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/apipool-ng/apipool/recorder"
	"github.com/apipool-ng/apipool/status"
)

// exactStore keeps every event and answers exactly, as a store with a
// database behind it would. broken names a deliberate bug, to check that the
// suite catches it.
type exactStore struct {
	mu      sync.Mutex
	evs     []recorder.Event
	pending []recorder.Event // recorded, not yet flushed
	closed  bool
	dropped uint64
	interp  bool // interpolated quantiles instead of nearest rank
	broken  string
}

func (s *exactStore) Record(e recorder.Event) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		if s.broken != "closeNotCounted" {
			s.dropped++
		}
		return
	}
	if s.broken == "emptyKeyLost" && e.KeyID == "" {
		return
	}
	if s.broken == "minuteOnly" {
		e.Time = e.Time.Truncate(time.Minute)
	}
	s.pending = append(s.pending, e)
}

func (s *exactStore) Flush(context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.broken != "flushIgnored" {
		s.evs = append(s.evs, s.pending...)
		s.pending = nil
	}
	return nil
}

func (s *exactStore) Dropped() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.dropped
}

func (s *exactStore) Close(context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = true
	return nil
}

func (s *exactStore) check(ctx context.Context) error {
	if s.closed && s.broken != "openAfterClose" {
		return recorder.ErrClosed
	}
	if s.broken == "ignoresContext" {
		return nil
	}
	return ctx.Err()
}

func (s *exactStore) match(e recorder.Event, q recorder.Query) bool {
	if s.broken == "exactStatus" && q.Status != status.Unknown && e.Status != q.Status {
		return false
	}
	if s.broken == "modelIgnored" {
		q.Model = ""
	}
	if s.broken == "clientIgnored" {
		q.Client = ""
	}
	return matches(e, q)
}

func (s *exactStore) TotalsBy(ctx context.Context, q recorder.Query, by recorder.GroupBy) (map[string]recorder.Totals, error) {
	if err := q.Check(); err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.check(ctx); err != nil {
		return nil, err
	}
	if s.broken == "groupByKeyOnly" {
		by = recorder.ByKey
	}
	var evs []recorder.Event
	for _, e := range s.evs {
		if !s.match(e, q) {
			continue
		}
		switch s.broken {
		case "unknownAsZero": // -1 read as a known 0
			e.InputTokens, e.OutputTokens, e.CachedTokens = max(e.InputTokens, 0), max(e.OutputTokens, 0), max(e.CachedTokens, 0)
			e.Units, e.Cost = max(e.Units, 0), max(e.Cost, 0)
		case "zeroAsUnknown": // a known 0 counted as unknown
			if e.Units == 0 {
				e.Units = -1
			}
		case "cachedMakesUnknown":
			if e.CachedTokens < 0 {
				e.InputTokens = -1
			}
		}
		evs = append(evs, e)
	}
	out := wantTotals(evs, recorder.Query{}, by)
	if s.broken == "unknownSummed" { // -1 added to the cost's sum
		for _, e := range evs {
			if e.Cost < 0 {
				t := out[groupName(e, by)]
				t.Cost += e.Cost
				out[groupName(e, by)] = t
			}
		}
	}
	return out, nil
}

func (s *exactStore) UsageByKey(ctx context.Context, q recorder.Query) (map[string]int64, error) {
	if err := q.Check(); err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.check(ctx); err != nil {
		return nil, err
	}
	out := map[string]int64{}
	if s.broken == "zeroKeys" {
		for _, e := range s.evs {
			out[e.KeyID] += 0
		}
	}
	for _, e := range s.evs {
		if s.match(e, q) {
			out[e.KeyID]++
		}
	}
	return out, nil
}

func (s *exactStore) UsageCount(ctx context.Context, q recorder.Query) (int64, error) {
	if err := q.Check(); err != nil {
		return 0, err
	}
	m, err := s.UsageByKey(ctx, q)
	var n int64
	for _, v := range m {
		n += v
	}
	if s.broken == "countOffByOne" && n > 0 {
		n++
	}
	return n, err
}

func (s *exactStore) LatencyByKey(ctx context.Context, q recorder.Query) (map[string]recorder.Latency, error) {
	if err := q.Check(); err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.check(ctx); err != nil {
		return nil, err
	}
	ls := map[string][]time.Duration{}
	for _, e := range s.evs {
		if s.match(e, q) || (s.broken == "latencyIgnoresStatus" && q.Status == status.Success && e.Status.Matches(status.Unknown) && matches(e, recorder.Query{Since: q.Since, Until: q.Until, KeyID: q.KeyID})) {
			ls[e.KeyID] = append(ls[e.KeyID], e.Latency)
		}
	}
	out := map[string]recorder.Latency{}
	for k, l := range ls {
		slices.Sort(l)
		out[k] = recorder.Latency{Count: int64(len(l)), P50: s.quantile(l, 0.5), P90: s.quantile(l, 0.9), P99: s.quantile(l, 0.99)}
		if s.broken == "p99IsP90" {
			out[k] = recorder.Latency{Count: int64(len(l)), P50: s.quantile(l, 0.5), P90: s.quantile(l, 0.9), P99: s.quantile(l, 0.9)}
		}
	}
	return out, nil
}

func (s *exactStore) quantile(sorted []time.Duration, q float64) time.Duration {
	if !s.interp {
		return sorted[max(int(math.Ceil(q*float64(len(sorted))))-1, 0)]
	}
	pos := q * float64(len(sorted)-1)
	i := int(pos)
	if i+1 >= len(sorted) {
		return sorted[i]
	}
	return sorted[i] + time.Duration((pos-float64(i))*float64(sorted[i+1]-sorted[i]))
}

func (s *exactStore) Series(ctx context.Context, q recorder.Query, step time.Duration) (map[string][]recorder.Bucket, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.check(ctx); err != nil {
		return nil, err
	}
	if step == 0 {
		step = time.Minute
	}
	if q.Since.IsZero() || q.Until.IsZero() || !q.Until.After(q.Since) || (s.broken != "lenientStep" && (step < time.Second || step%time.Second != 0)) {
		return nil, fmt.Errorf("%w: bad range or step", recorder.ErrBadQuery)
	}
	if step < time.Second {
		step = time.Second
	}
	if q.Until.Sub(q.Since)/step >= 100_000 || q.Until.Sub(q.Since) == math.MaxInt64 {
		return nil, fmt.Errorf("%w: too many buckets", recorder.ErrBadQuery)
	}
	st := int64(step / time.Second)
	first := floorDiv(q.Since.Unix(), st) * st
	if s.broken == "zeroTimeAlignment" {
		first = q.Since.Truncate(step).Unix()
	}
	last := floorDiv(q.Until.Add(-time.Nanosecond).Unix(), st) * st
	out := map[string][]recorder.Bucket{}
	for _, e := range s.evs {
		qq := q
		if s.broken == "noClipping" {
			qq.Since = time.Unix(first, 0)
		}
		if !s.match(e, qq) {
			continue
		}
		bs := out[e.KeyID]
		if bs == nil {
			bs = make([]recorder.Bucket, (last-first)/st+1)
			for i := range bs {
				bs[i].Start = time.Unix(first+int64(i)*st, 0)
			}
			out[e.KeyID] = bs
		}
		if i := floorDiv(e.Time.Unix()-first, st); i >= 0 && i < int64(len(bs)) {
			bs[i].Count++
		}
	}
	if s.broken == "noEmptyBuckets" {
		for k, bs := range out {
			out[k] = slices.DeleteFunc(bs, func(b recorder.Bucket) bool { return b.Count == 0 })
		}
	}
	return out, nil
}

func TestExactStores(t *testing.T) {
	for _, interp := range []bool{false, true} {
		t.Run(fmt.Sprint("interpolated=", interp), func(t *testing.T) {
			Run(t, func(t *testing.T) Store { return &exactStore{interp: interp} })
		})
	}
	t.Run("recent base", func(t *testing.T) {
		RunBase(t, time.Now().Truncate(time.Hour).Add(-10*time.Hour), func(t *testing.T) Store { return &exactStore{} })
	})
}

func TestEvents(t *testing.T) {
	evs := Events(Base)
	if len(evs) != 585 {
		t.Errorf("%d events, the documentation says 585", len(evs))
	}
	newest := evs[0].Time
	seen := map[status.Status]bool{}
	for _, e := range evs {
		if e.Time.After(newest) {
			newest = e.Time
		}
		seen[e.Status] = true
		if e.Time.Before(Base) {
			t.Errorf("event before the base: %+v", e)
		}
	}
	if want := Base.Add(newestOffset); !newest.Equal(want) {
		t.Errorf("the newest event is at %v, want %v", newest, want)
	}
	for _, st := range status.All {
		if !seen[st] {
			t.Errorf("no event of status %v", st)
		}
	}
	if !slices.Equal(Events(Base), evs) {
		t.Error("Events is not deterministic")
	}
	// Second-resolution windows must lie within two minutes of the newest
	// event, as the package documentation promises.
	for _, w := range windows(Base) {
		for _, b := range []time.Time{w.since, w.until} {
			if b.IsZero() || b.Unix()%60 == 0 {
				continue
			}
			if b.Nanosecond() != 0 || newest.Sub(b) > 2*time.Minute {
				t.Errorf("window %q: bound %v is not a whole second within 2 minutes of %v", w.name, b, newest)
			}
		}
	}
}

func TestQuantileOK(t *testing.T) {
	ls := []time.Duration{10, 20, 30, 40}
	for i := range ls {
		ls[i] *= time.Second
	}
	for _, c := range []struct {
		got time.Duration
		q   float64
		ok  bool
	}{
		{20 * time.Second, 0.5, true},  // nearest rank
		{25 * time.Second, 0.5, true},  // interpolated
		{30 * time.Second, 0.5, true},  // the element at q*n
		{33 * time.Second, 0.5, true},  // within 10%
		{34 * time.Second, 0.5, false}, // beyond
		{17 * time.Second, 0.5, false},
		{40 * time.Second, 0.99, true},
		{30 * time.Second, 0.99, true}, // the lower neighbour, as numpy's "lower"
		{26 * time.Second, 0.99, false},
	} {
		if _, _, ok := quantileOK(c.got, ls, c.q); ok != c.ok {
			t.Errorf("quantileOK(%v, q=%v) = %v, want %v", c.got, c.q, ok, c.ok)
		}
	}
}

// brokenStores are the bugs the suite must catch.
var brokenStores = []string{
	"countOffByOne", "exactStatus", "zeroKeys", "emptyKeyLost", "minuteOnly",
	"p99IsP90", "latencyIgnoresStatus", "zeroTimeAlignment", "noClipping",
	"noEmptyBuckets", "lenientStep", "ignoresContext", "openAfterClose",
	"closeNotCounted", "flushIgnored",
	"modelIgnored", "clientIgnored", "unknownAsZero", "unknownSummed", "zeroAsUnknown", "cachedMakesUnknown", "groupByKeyOnly",
}

// TestBrokenStores runs the suite on each broken store in a child process
// and expects it to fail.
func TestBrokenStores(t *testing.T) {
	if os.Getenv("RECORDERTEST_BROKEN") != "" {
		t.Skip("in the child")
	}
	for _, b := range brokenStores {
		t.Run(b, func(t *testing.T) {
			cmd := exec.Command(os.Args[0], "-test.run=^TestBrokenChild$", "-test.count=1")
			cmd.Env = append(os.Environ(), "RECORDERTEST_BROKEN="+b)
			out, err := cmd.CombinedOutput()
			var ee *exec.ExitError
			if !errors.As(err, &ee) || !strings.Contains(string(out), "--- FAIL: TestBrokenChild") {
				t.Errorf("the suite passed a store with bug %q (%v):\n%s", b, err, out)
			}
		})
	}
}

func TestBrokenChild(t *testing.T) {
	b := os.Getenv("RECORDERTEST_BROKEN")
	if b == "" {
		t.Skip("run by TestBrokenStores")
	}
	Run(t, func(t *testing.T) Store { return &exactStore{broken: b} })
}
