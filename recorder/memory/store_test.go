package memory

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"math"
	"math/rand/v2"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"
	"unsafe"

	"github.com/apipool-ng/apipool/clock"
	"github.com/apipool-ng/apipool/errdefs"
	"github.com/apipool-ng/apipool/recorder"
	"github.com/apipool-ng/apipool/status"
)

var (
	t0  = time.Date(2026, 1, 2, 3, 0, 0, 0, time.UTC)
	ctx = context.Background()
)

// clockFunc makes a function a clock.Clock, for tests that compute the
// time or count its readings. The store never asks for a timer.
type clockFunc func() time.Time

func (f clockFunc) Now() time.Time                     { return f() }
func (f clockFunc) NewTimer(time.Duration) clock.Timer { panic("the store asked for a timer") }

// mustNew returns New's store, failing tb on an error.
func mustNew(tb testing.TB, opts ...Option) *Store {
	tb.Helper()
	s, err := New(opts...)
	if err != nil {
		tb.Fatal(err)
	}
	return s
}

// newTest returns a store whose clock is far after t0.
func newTest(t *testing.T, opts ...Option) *Store {
	t.Helper()
	s := mustNew(t, append([]Option{WithClock(clockFunc(func() time.Time { return t0.Add(10000 * time.Hour) }))}, opts...)...)
	t.Cleanup(func() { s.Close(ctx) })
	return s
}

func ev(key string, at time.Duration, st status.Status) recorder.Event {
	return recorder.Event{Time: t0.Add(at), KeyID: key, Status: st, Latency: 100 * time.Millisecond}
}

func usage(t *testing.T, s *Store, q recorder.Query) map[string]int64 {
	t.Helper()
	m, err := s.UsageByKey(ctx, q)
	if err != nil {
		t.Fatalf("UsageByKey(%+v): %v", q, err)
	}
	return m
}

func TestRecordDoesNotAllocate(t *testing.T) {
	s := newTest(t)
	// Use every bucket of the rings once, so that every histogram exists.
	end := fill(s, 1)
	e := recorder.Event{Time: end, KeyID: "key-000", Status: status.Success, Latency: time.Second}
	sts := [...]status.Status{status.Success, status.ReachLimit, status.Timeout}
	i := 0
	allocs := testing.AllocsPerRun(5000, func() {
		// 10 events a second, into new seconds, minutes and hours.
		i++
		e.Time = end.Add(time.Duration(i) * 100 * time.Millisecond)
		e.Status = sts[i%len(sts)]
		s.Record(e)
	})
	if allocs != 0 {
		t.Errorf("Record allocates %v times per call", allocs)
	}
	// The same for the empty key, once it exists.
	s.Record(recorder.Event{Time: e.Time, Status: status.NoKeyAvailable})
	allocs = testing.AllocsPerRun(1000, func() {
		s.Record(recorder.Event{Time: e.Time, Status: status.NoKeyAvailable})
	})
	if allocs != 0 {
		t.Errorf("Record of a keyless event allocates %v times per call", allocs)
	}
	// AllocsPerRun runs the function once more, to warm up.
	if n := usage(t, s, recorder.Query{})[""]; n != 1002 {
		t.Errorf(`usage of key "" = %d, want 1002`, n)
	}
}

func TestOptions(t *testing.T) {
	for _, c := range []struct {
		in, want time.Duration
	}{
		{MinRetention, MinRetention},
		{time.Hour + time.Second, time.Hour + time.Minute},
		{48 * time.Hour, 48 * time.Hour},
		{MaxRetention, MaxRetention},
	} {
		if got := mustNew(t, WithRetention(c.in)).Retention(); got != c.want {
			t.Errorf("WithRetention(%v): Retention() = %v, want %v", c.in, got, c.want)
		}
	}
	if got := mustNew(t).Retention(); got != DefaultRetention {
		t.Errorf("default Retention() = %v, want %v", got, DefaultRetention)
	}
	s := mustNew(t, WithMaxKeys(1), WithMaxFuture(0))
	s.Record(recorder.Event{Time: time.Now().Add(-time.Minute), KeyID: "a"})
	if n, _ := s.UsageCount(ctx, recorder.Query{}); n != 1 {
		t.Errorf("UsageCount = %d, want 1", n)
	}
}

// Options out of their range, and nil options, are refused with a
// configuration error naming them, not clamped.
func TestOptionErrors(t *testing.T) {
	for _, c := range []struct {
		opt   Option
		field string
	}{
		{nil, "memory.options"},
		{WithRetention(0), "memory.WithRetention"},
		{WithRetention(-time.Hour), "memory.WithRetention"},
		{WithRetention(MinRetention - time.Second), "memory.WithRetention"},
		{WithRetention(MaxRetention + time.Minute), "memory.WithRetention"},
		{WithMaxKeys(0), "memory.WithMaxKeys"},
		{WithMaxKeys(-1), "memory.WithMaxKeys"},
		{WithMaxSeries(0), "memory.WithMaxSeries"},
		{WithMaxSeries(-3), "memory.WithMaxSeries"},
		{WithMaxFuture(-time.Second), "memory.WithMaxFuture"},
		{WithClock(nil), "memory.WithClock"},
	} {
		s, err := New(WithMaxKeys(5), c.opt)
		var ce *errdefs.ConfigError
		if s != nil || !errors.As(err, &ce) || !errors.Is(err, errdefs.ErrInvalidConfig) || ce.Field != c.field {
			t.Errorf("%s: New = %v, %v; want a *ConfigError naming it", c.field, s, err)
		}
	}
}

func TestCloseThenRecord(t *testing.T) {
	s := newTest(t)
	s.Record(ev("a", 0, status.Success))
	if err := s.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(ctx); err != nil {
		t.Errorf("second Close: %v", err)
	}
	for range 5 {
		s.Record(ev("a", time.Second, status.Success))
		s.Record(ev("new key", time.Second, status.Success))
	}
	if d := s.Dropped(); d != 10 {
		t.Errorf("Dropped() = %d, want 10", d)
	}
	if _, err := s.UsageByKey(ctx, recorder.Query{}); !errors.Is(err, recorder.ErrClosed) {
		t.Errorf("UsageByKey after Close: %v", err)
	}
	if _, err := s.Series(ctx, recorder.Query{}, 0); !errors.Is(err, recorder.ErrBadQuery) && !errors.Is(err, recorder.ErrClosed) {
		t.Errorf("Series after Close: %v", err)
	}
}

func TestTooOldAndTooNew(t *testing.T) {
	now := t0.Add(10 * time.Hour)
	s := mustNew(t, WithClock(clockFunc(func() time.Time { return now })), WithRetention(time.Hour))
	s.Record(ev("a", 10*time.Hour, status.Success))
	// Within the retention of the newest event, including a new key.
	s.Record(ev("a", 9*time.Hour+30*time.Minute, status.Success))
	s.Record(ev("b", 9*time.Hour+30*time.Minute, status.Success))
	// Out of it: the minute 9:00 is an hour before 10:00.
	s.Record(ev("a", 9*time.Hour+59*time.Second, status.Success))
	s.Record(ev("c", time.Hour, status.Success))
	s.Record(recorder.Event{Time: time.Unix(-1, 0), KeyID: "a"})
	s.Record(recorder.Event{KeyID: "a"}) // the zero time
	if got := s.TooOld(); got != 4 {
		t.Errorf("TooOld() = %d, want 4", got)
	}
	// Ahead of the clock: up to a minute is fine.
	s.Record(recorder.Event{Time: now.Add(time.Minute), KeyID: "a"})
	s.Record(recorder.Event{Time: now.Add(time.Minute + time.Second), KeyID: "a"})
	s.Record(recorder.Event{Time: now.Add(1000 * 24 * time.Hour), KeyID: "a"})
	s.Record(recorder.Event{Time: time.Unix(1<<62, 0), KeyID: "a"})
	if got := s.TooNew(); got != 3 {
		t.Errorf("TooNew() = %d, want 3", got)
	}
	if got, want := usage(t, s, recorder.Query{}), map[string]int64{"a": 3, "b": 1}; !maps.Equal(got, want) {
		t.Errorf("usage = %v, want %v: a wild event must not push the others out", got, want)
	}
	if s.Dropped() != 0 {
		t.Errorf("Dropped() = %d, want 0", s.Dropped())
	}
}

func TestRetentionMovesWithNewestEvent(t *testing.T) {
	s := newTest(t, WithRetention(time.Hour))
	s.Record(ev("a", 0, status.Success))
	s.Record(ev("b", 30*time.Minute, status.Success))
	if got := usage(t, s, recorder.Query{}); !maps.Equal(got, map[string]int64{"a": 1, "b": 1}) {
		t.Fatalf("usage = %v", got)
	}
	// An event of another key, 1h later: a's event is out of the retention,
	// b's is not.
	s.Record(ev("c", time.Hour, status.Success))
	if got, want := usage(t, s, recorder.Query{}), map[string]int64{"b": 1, "c": 1}; !maps.Equal(got, want) {
		t.Errorf("usage = %v, want %v", got, want)
	}
	s.Record(ev("c", 3*time.Hour, status.Success))
	if got, want := usage(t, s, recorder.Query{}), map[string]int64{"c": 1}; !maps.Equal(got, want) {
		t.Errorf("usage = %v, want %v", got, want)
	}
}

func TestMaxKeys(t *testing.T) {
	s := newTest(t, WithMaxKeys(2), WithRetention(time.Hour))
	s.Record(ev("a", 0, status.Success))
	s.Record(ev("b", 0, status.Success))
	s.Record(ev("c", 0, status.Success)) // full
	s.Record(ev("c", time.Second, status.Success))
	s.Record(ev("a", time.Second, status.Success)) // a known key is fine
	if d := s.Dropped(); d != 2 {
		t.Errorf("Dropped() = %d, want 2", d)
	}
	// b falls out of the retention: c may take its place.
	s.Record(ev("a", 2*time.Hour, status.Success))
	s.Record(ev("c", 2*time.Hour, status.Success))
	if got, want := usage(t, s, recorder.Query{}), map[string]int64{"a": 1, "c": 1}; !maps.Equal(got, want) {
		t.Errorf("usage = %v, want %v", got, want)
	}
	if d := s.Dropped(); d != 2 {
		t.Errorf("Dropped() = %d, want 2", d)
	}
	// Both in use: d is dropped, even after a rescan in a new minute.
	s.Record(ev("d", 2*time.Hour, status.Success))
	s.Record(ev("a", 2*time.Hour+time.Minute, status.Success))
	s.Record(ev("d", 2*time.Hour+time.Minute, status.Success))
	if d := s.Dropped(); d != 4 {
		t.Errorf("Dropped() = %d, want 4", d)
	}
}

// evm is ev with a model and a client.
func evm(key, model, client string, at time.Duration) recorder.Event {
	e := ev(key, at, status.Success)
	e.Model, e.Client = model, client
	return e
}

// TestMaxSeries: each key, model and client is a series; WithMaxSeries
// bounds them as WithMaxKeys bounds the keys, dropping and counting the
// events of a new one when full, and letting it take the place of series
// out of the retention.
func TestMaxSeries(t *testing.T) {
	s := newTest(t, WithMaxKeys(2), WithMaxSeries(3), WithRetention(time.Hour))
	s.Record(evm("a", "m1", "web", 0))
	s.Record(evm("a", "m2", "web", 0))
	s.Record(evm("b", "m1", "", 0))
	s.Record(evm("b", "m1", "cli", 0)) // a fourth series: dropped
	s.Record(evm("c", "", "", 0))      // a third key: dropped
	s.Record(evm("a", "m2", "web", time.Second))
	if d := s.Dropped(); d != 2 {
		t.Errorf("Dropped() = %d, want 2", d)
	}
	if got, want := usage(t, s, recorder.Query{}), map[string]int64{"a": 3, "b": 1}; !maps.Equal(got, want) {
		t.Errorf("usage = %v, want %v", got, want)
	}
	if got, want := usage(t, s, recorder.Query{Model: "m2"}), map[string]int64{"a": 2}; !maps.Equal(got, want) {
		t.Errorf("usage of m2 = %v, want %v", got, want)
	}
	// a's series of m1 and b's fall out of the retention: their places
	// go to new series, b's key to c. c's event is held in a stripe
	// counted before a's (as when recorded on another processor): its
	// retention is its own, not that of the older events counted.
	first, second := s.stripes.add(), s.stripes.add()
	var next *stripe
	s.stripes.pick = func() *stripe { return next }
	next = second
	s.Record(evm("a", "m2", "web", 2*time.Hour))
	s.Record(evm("a", "m3", "web", 2*time.Hour))
	next = first
	s.Record(evm("c", "m1", "cli", 2*time.Hour))
	if d := s.Dropped(); d != 2 {
		t.Errorf("Dropped() = %d, want 2", d)
	}
	if got, want := usage(t, s, recorder.Query{}), map[string]int64{"a": 2, "c": 1}; !maps.Equal(got, want) {
		t.Errorf("usage = %v, want %v", got, want)
	}
	for _, c := range []struct {
		q    recorder.Query
		want map[string]int64
	}{
		{recorder.Query{Model: "m1"}, map[string]int64{"c": 1}},
		{recorder.Query{Client: "web"}, map[string]int64{"a": 2}},
		{recorder.Query{KeyID: "a", Model: "m3", Client: "web"}, map[string]int64{"a": 1}},
		{recorder.Query{KeyID: "a", Model: "m3", Client: "cli"}, map[string]int64{}},
	} {
		if got := usage(t, s, c.q); !maps.Equal(got, c.want) {
			t.Errorf("usage(%+v) = %v, want %v", c.q, got, c.want)
		}
	}
}

// TestRecentSeries: a stripe's remembered series (stripe.recent) count
// every event in its own series, however many series share their slots,
// and one evicted since is looked up again: its buckets are released, and
// its events go to a new series or, when the store is full, are dropped.
func TestRecentSeries(t *testing.T) {
	s := newTest(t, WithMaxSeries(1), WithRetention(time.Hour))
	st := s.stripes.add()
	s.stripes.pick = func() *stripe { return st }
	s.Record(evm("a", "m1", "web", 0))
	s.flush()
	a := s.find(seriesID{"a", "m1", "web"})
	s.Record(evm("b", "m1", "web", 2*time.Hour)) // a is out of the retention: b takes its place
	s.flush()
	if a.newest != evicted || a.mins.buf != nil || a.hourHists.buf != nil {
		t.Errorf("evicted series: newest %d, room for %d minutes and %d hours; want evicted and none", a.newest, len(a.mins.buf), len(a.hourHists.buf))
	}
	s.Record(evm("a", "m1", "web", 2*time.Hour)) // remembered, evicted, and the store is full
	s.Record(evm("b", "m1", "web", 2*time.Hour+time.Second))
	if d := s.Dropped(); d != 1 {
		t.Errorf("Dropped() = %d, want 1", d)
	}
	if got, want := usage(t, s, recorder.Query{}), map[string]int64{"b": 2}; !maps.Equal(got, want) {
		t.Errorf("usage = %v, want %v", got, want)
	}

	// More series than slots, in fresh strings each time.
	s = newTest(t)
	st = s.stripes.add()
	s.stripes.pick = func() *stripe { return st }
	const n = 5 * recentLen
	for round := range 3 {
		for i := range n {
			s.Record(evm(fmt.Sprint("k", i%7), fmt.Sprint("m", i%5), fmt.Sprint("c", i), time.Duration(round)*time.Second))
		}
	}
	for i := range n {
		q := recorder.Query{KeyID: fmt.Sprint("k", i%7), Model: fmt.Sprint("m", i%5), Client: fmt.Sprint("c", i)}
		if got, want := usage(t, s, q), map[string]int64{q.KeyID: 3}; !maps.Equal(got, want) {
			t.Fatalf("usage(%+v) = %v, want %v", q, got, want)
		}
	}
}

// TestTotalsByMinute: TotalsBy counts each event at its minute's start,
// sums only the values known, and counts the others as unknown, a known
// zero being known.
func TestTotalsByMinute(t *testing.T) {
	s := newTest(t)
	add := func(at time.Duration, model string, in, out, cached int64, units, cost float64) {
		e := evm("k", model, "", at)
		e.InputTokens, e.OutputTokens, e.CachedTokens, e.Units, e.Cost = in, out, cached, units, cost
		s.Record(e)
	}
	add(10*time.Second, "m1", 100, 20, 0, -1, 0.5)
	add(20*time.Second, "m1", 0, 0, -1, -1, 0) // known zeros
	add(70*time.Second, "m2", -1, -1, -1, 2, -1)
	add(80*time.Second, "m2", 50, -1, 10, -1, -1)                  // output unknown: tokens unknown, input summed
	add(90*time.Second, "m3", -7, -1, -1, math.NaN(), math.Inf(1)) // not known, whatever the negative or odd value
	for _, c := range []struct {
		from, to time.Duration
		by       recorder.GroupBy
		want     map[string]recorder.Totals
	}{
		{0, 2 * time.Minute, recorder.ByKey, map[string]recorder.Totals{"k": {Events: 5, InputTokens: 150, OutputTokens: 20, CachedTokens: 10,
			TokensUnknown: 3, Units: 2, UnitsUnknown: 4, Cost: 0.5, CostUnknown: 3}}},
		{0, 2 * time.Minute, recorder.ByModel, map[string]recorder.Totals{
			"m1": {Events: 2, InputTokens: 100, OutputTokens: 20, UnitsUnknown: 2, Cost: 0.5},
			"m2": {Events: 2, InputTokens: 50, CachedTokens: 10, TokensUnknown: 2, Units: 2, UnitsUnknown: 1, CostUnknown: 2},
			"m3": {Events: 1, TokensUnknown: 1, UnitsUnknown: 1, CostUnknown: 1}}},
		{0, 2 * time.Minute, recorder.ByClient, map[string]recorder.Totals{"": {Events: 5, InputTokens: 150, OutputTokens: 20, CachedTokens: 10,
			TokensUnknown: 3, Units: 2, UnitsUnknown: 4, Cost: 0.5, CostUnknown: 3}}},
		// Bounds inside minutes: the events count at their minute's start.
		{15 * time.Second, 75 * time.Second, recorder.ByModel, map[string]recorder.Totals{
			"m2": {Events: 2, InputTokens: 50, CachedTokens: 10, TokensUnknown: 2, Units: 2, UnitsUnknown: 1, CostUnknown: 2},
			"m3": {Events: 1, TokensUnknown: 1, UnitsUnknown: 1, CostUnknown: 1}}},
		{0, 30 * time.Second, recorder.ByModel, map[string]recorder.Totals{
			"m1": {Events: 2, InputTokens: 100, OutputTokens: 20, UnitsUnknown: 2, Cost: 0.5}}},
		{2 * time.Minute, time.Hour, recorder.ByModel, map[string]recorder.Totals{}},
	} {
		q := recorder.Query{Since: t0.Add(c.from), Until: t0.Add(c.to)}
		got, err := s.TotalsBy(ctx, q, c.by)
		if err != nil || !maps.Equal(got, c.want) {
			t.Errorf("TotalsBy(%v to %v, %d) = %+v, %v; want %+v", c.from, c.to, c.by, got, err, c.want)
		}
	}
	if _, err := s.TotalsBy(ctx, recorder.Query{}, recorder.ByClient+1); !errors.Is(err, recorder.ErrBadQuery) {
		t.Errorf("TotalsBy(bad GroupBy) = %v, want ErrBadQuery", err)
	}
	if _, err := s.TotalsBy(ctx, recorder.Query{Status: status.Status(200)}, recorder.ByKey); !errors.Is(err, recorder.ErrBadQuery) {
		t.Errorf("TotalsBy(undefined status) = %v, want ErrBadQuery", err)
	}
}

func TestStatusSlots(t *testing.T) {
	s := newTest(t)
	for i, st := range []status.Status{status.Unknown, status.Success, status.Failed, status.ReachLimit,
		status.InvalidKey, status.ServerError, status.ClientError, status.Timeout, status.Canceled,
		status.NetworkError, status.NoKeyAvailable, status.Status(2), status.Status(18), status.Status(255)} {
		s.Record(ev("k", time.Duration(i)*time.Second, st))
	}
	for _, c := range []struct {
		f    status.Status
		want int64
	}{
		{status.Unknown, 14},
		{status.Success, 1},
		{status.ReachLimit, 1},
		// Every failure, and the undefined statuses (of class Failed), but
		// not Unknown.
		{status.Failed, 11},
		{status.InvalidKey, 1},
		{status.NoKeyAvailable, 1},
	} {
		if n, err := s.UsageCount(ctx, recorder.Query{Status: c.f}); err != nil || n != c.want {
			t.Errorf("UsageCount(status %v) = %d, %v; want %d", c.f, n, err, c.want)
		}
	}
	for _, f := range []status.Status{status.Status(2), status.Status(18), status.Status(255)} {
		if _, err := s.UsageCount(ctx, recorder.Query{Status: f}); !errors.Is(err, recorder.ErrBadQuery) {
			t.Errorf("UsageCount(status %d): %v, want ErrBadQuery", f, err)
		}
		if _, err := s.Series(ctx, recorder.Query{Since: t0, Until: t0.Add(time.Hour), Status: f}, 0); !errors.Is(err, recorder.ErrBadQuery) {
			t.Errorf("Series(status %d): %v, want ErrBadQuery", f, err)
		}
	}
}

func TestSeriesValidation(t *testing.T) {
	s := newTest(t)
	s.Record(ev("a", 0, status.Success))
	at := func(d time.Duration) time.Time { return t0.Add(d) }
	for _, c := range []struct {
		since, until time.Time
		step         time.Duration
		buckets      int // 0: an error wrapping ErrBadQuery
	}{
		{at(0), at(100_000 * time.Second), time.Second, 100_000},
		{at(0), at(100_000*time.Second + 1), time.Second, 0},
		{at(-time.Nanosecond), at(100_000*time.Second - time.Nanosecond), time.Second, 0},
		{at(-time.Nanosecond), at(99_999*time.Second - time.Nanosecond), time.Second, 100_000},
		{at(0), at(time.Hour), time.Minute, 60},
		{at(0), at(time.Hour), 0, 60},
		{at(time.Second), at(time.Hour + time.Second), time.Minute, 61},
		{at(0), at(time.Nanosecond), time.Minute, 1},
		{at(0), at(time.Hour), -time.Second, 0},
		{at(0), at(time.Hour), time.Second + 1, 0},
		{at(0), at(time.Hour), time.Millisecond, 0},
		{at(0), at(time.Hour), time.Duration(-1 << 63), 0},
		{at(0), at(time.Hour), time.Duration(1<<63 - 1), 0},
		{at(0), at(time.Hour), 1 << 62 / time.Second * time.Second, 1},
		{at(time.Hour), at(0), time.Minute, 0},
		{at(0), at(0), time.Minute, 0},
		{time.Time{}, at(0), time.Minute, 0},
		{at(0), time.Time{}, time.Minute, 0},
		{time.Unix(-1<<62, 0), time.Unix(1<<62, 0), 1 << 62 / time.Second * time.Second, 0},
		{time.Date(-5000, 1, 1, 0, 0, 0, 0, time.UTC), time.Date(-5000, 1, 2, 0, 0, 0, 0, time.UTC), time.Hour, 24},
		{time.Unix(1<<62-10, 0), time.Unix(1<<62, 0), time.Second, 0}, // out of range
		{time.Unix(1<<62, 0), time.Unix(1<<62+10, 0), time.Second, 0},
		// last-first would overflow.
		{time.Unix(-1<<62, 0), time.Unix(1<<62, 0), time.Second, 0},
		{time.Unix(-1<<62, 0), time.Unix(1<<62, 0), time.Hour, 0},
		{time.Unix(-1<<61, 0), time.Unix(1<<61, 0), time.Second, 0},
		{time.Unix(1<<61-10, 0), time.Unix(1<<61, 0), time.Second, 10},
		{time.Unix(-1<<63, 0), time.Unix(1<<63-1, 0), time.Second, 0},
		{time.Date(-292277022399, 1, 1, 0, 0, 0, 0, time.UTC), time.Date(292277026596, 1, 1, 0, 0, 0, 0, time.UTC), time.Minute, 0},
	} {
		got, err := s.Series(ctx, recorder.Query{Since: c.since, Until: c.until}, c.step)
		if c.buckets == 0 {
			if !errors.Is(err, recorder.ErrBadQuery) {
				t.Errorf("Series(%v, %v, %v) = %d keys, %v; want ErrBadQuery", c.since, c.until, c.step, len(got), err)
			}
			continue
		}
		if err != nil {
			t.Errorf("Series(%v, %v, %v): %v", c.since, c.until, c.step, err)
			continue
		}
		// The buckets show when the range holds a's event.
		if bs, ok := got["a"]; ok && len(bs) != c.buckets {
			t.Errorf("Series(%v, %v, %v) has %d buckets, want %d", c.since, c.until, c.step, len(bs), c.buckets)
		}
	}
}

// TestSeriesRandomBounds throws odd bounds and steps at Series: it must not
// panic, and its buckets must add up to UsageCount.
func TestSeriesRandomBounds(t *testing.T) {
	s := newTest(t)
	for i := range 500 {
		s.Record(ev(fmt.Sprint(i%3), time.Duration(i)*17*time.Second, status.All[i%len(status.All)]))
	}
	r := rand.New(rand.NewPCG(3, 4))
	times := func() time.Time {
		switch r.IntN(4) {
		case 0:
			return time.Unix(r.Int64()-1<<62, r.Int64N(1e9))
		case 1:
			return t0.Add(time.Duration(r.Int64N(int64(5 * time.Hour))))
		case 2:
			return t0.Add(time.Duration(r.Int64N(5*3600)) * time.Second)
		}
		return time.Time{}
	}
	ok := 0
	for range 2000 {
		q := recorder.Query{Since: times(), Until: times()}
		step := []time.Duration{time.Duration(r.Int64()), time.Duration(-r.Int64()), time.Duration(r.IntN(1000)) * time.Second,
			time.Second, time.Minute, 13 * time.Second, 0}[r.IntN(7)]
		got, err := s.Series(ctx, q, step)
		if err != nil {
			if !errors.Is(err, recorder.ErrBadQuery) {
				t.Fatalf("Series(%+v, %v): %v", q, step, err)
			}
			continue
		}
		ok++
		var sum int64
		for _, bs := range got {
			for _, b := range bs {
				sum += b.Count
			}
		}
		if n, err := s.UsageCount(ctx, q); err != nil || n != sum {
			t.Fatalf("Series(%+v, %v) sums to %d, UsageCount = %d, %v", q, step, sum, n, err)
		}
	}
	if ok < 100 {
		t.Errorf("only %d of the random series were valid", ok)
	}
}

func TestLatency(t *testing.T) {
	s := newTest(t)
	rec := func(key string, at time.Duration, st status.Status, lat time.Duration, n int) {
		for range n {
			s.Record(recorder.Event{Time: t0.Add(at), KeyID: key, Status: st, Latency: lat})
		}
	}
	// Hour 0: a mix; hour 1 minute 0: fast; hour 1 minute 30: slow; and
	// failures that a Success filter leaves out.
	rec("a", 10*time.Minute, status.Success, 100*time.Millisecond, 50)
	rec("a", 20*time.Minute, status.Success, 300*time.Millisecond, 40)
	rec("a", 30*time.Minute, status.Success, 3*time.Second, 10)
	rec("a", 40*time.Minute, status.Timeout, 30*time.Second, 100)
	rec("a", 61*time.Minute, status.Success, 2*time.Millisecond, 10)
	rec("a", 90*time.Minute, status.Success, 7*time.Second, 10)
	rec("a", 90*time.Minute, status.ReachLimit, 5*time.Microsecond, 10)
	ms := time.Millisecond
	for _, c := range []struct {
		name          string
		from, to      time.Duration
		st            status.Status
		count         int64
		p50, p90, p99 time.Duration
	}{
		{"hour 0, successes", 0, time.Hour, status.Success, 100, 100 * ms, 300 * ms, 3 * time.Second},
		{"hour 0, failures", 0, time.Hour, status.Failed, 100, 30 * time.Second, 30 * time.Second, 30 * time.Second},
		{"hour 0, timeouts", 0, time.Hour, status.Timeout, 100, 30 * time.Second, 30 * time.Second, 30 * time.Second},
		{"hour 0", 0, time.Hour, status.Unknown, 200, 3 * time.Second, 30 * time.Second, 30 * time.Second},
		// Within the last hour, minute windows are exact.
		{"minute 61", 61 * time.Minute, 62 * time.Minute, status.Unknown, 10, 2 * ms, 2 * ms, 2 * ms},
		{"minute 90", 90 * time.Minute, 91 * time.Minute, status.Success, 10, 7 * time.Second, 7 * time.Second, 7 * time.Second},
		{"minute 90, reach limit", 90 * time.Minute, 91 * time.Minute, status.ReachLimit, 10, 5 * time.Microsecond, 5 * time.Microsecond, 5 * time.Microsecond},
		{"minutes 61-91", 61 * time.Minute, 91 * time.Minute, status.Success, 20, 2 * ms, 7 * time.Second, 7 * time.Second},
		// Before the last hour, the window takes in the whole hour: the
		// successes of hour 0, for a count of 10.
		{"minute 30", 30 * time.Minute, 31 * time.Minute, status.Success, 10, 100 * ms, 300 * ms, 3 * time.Second},
	} {
		got, err := s.LatencyByKey(ctx, recorder.Query{Since: t0.Add(c.from), Until: t0.Add(c.to), Status: c.st})
		if err != nil {
			t.Fatal(err)
		}
		l := got["a"]
		if len(got) != 1 || l.Count != c.count || !within(l.P50, c.p50) || !within(l.P90, c.p90) || !within(l.P99, c.p99) {
			t.Errorf("%s: LatencyByKey = %+v, want count %d and %v %v %v", c.name, got, c.count, c.p50, c.p90, c.p99)
		}
	}
	if got, err := s.LatencyByKey(ctx, recorder.Query{Since: t0.Add(2 * time.Hour)}); err != nil || len(got) != 0 {
		t.Errorf("LatencyByKey(no event) = %v, %v; want an empty map", got, err)
	}
}

// within reports whether got is within the histogram's error of want.
func within(got, want time.Duration) bool {
	d := got - want
	return max(d, -d) <= want/16+time.Microsecond
}

// TestConcurrent records, queries, adds keys and closes at once, for the
// race detector; without Close, every event counts.
func TestConcurrent(t *testing.T) {
	s := newTest(t, WithMaxKeys(50))
	var wg sync.WaitGroup
	const writers, each = 6, 2000
	for w := range writers {
		wg.Go(func() {
			for i := range each {
				s.Record(recorder.Event{Time: t0.Add(time.Duration(i) * 50 * time.Millisecond), KeyID: fmt.Sprint((w*each + i) % 40),
					Status: status.All[i%len(status.All)], Latency: time.Duration(i) * time.Millisecond})
			}
		})
	}
	queryWhile(t, &wg, func() error {
		if _, err := s.LatencyByKey(ctx, recorder.Query{}); err != nil {
			return err
		}
		_, err := s.Series(ctx, recorder.Query{Since: t0, Until: t0.Add(time.Hour)}, time.Second)
		return err
	})
	if n, err := s.UsageCount(ctx, recorder.Query{}); err != nil || n != writers*each {
		t.Errorf("UsageCount = %d, %v; want %d", n, err, writers*each)
	}
	if s.Dropped()+s.TooOld()+s.TooNew() != 0 {
		t.Errorf("dropped %d, too old %d, too new %d", s.Dropped(), s.TooOld(), s.TooNew())
	}

	// Now with Close in the middle: nothing panics, and no event is counted
	// twice.
	s2 := newTest(t)
	for w := range writers {
		wg.Go(func() {
			for i := range each {
				s2.Record(ev(fmt.Sprint(w, i%7), time.Duration(i)*time.Second, status.Success))
			}
		})
	}
	wg.Go(func() { s2.Close(ctx) })
	wg.Wait()
	if d := s2.Dropped(); d > writers*each {
		t.Errorf("Dropped() = %d, more than the %d events", d, writers*each)
	}
}

// TestMemoryLayout keeps the package documentation's figures honest.
func TestMemoryLayout(t *testing.T) {
	for _, c := range []struct {
		name      string
		got, want uintptr
	}{
		{"key state", unsafe.Sizeof(keyState{}), 288},
		{"sum entry", unsafe.Sizeof(sumEntry{}), 64},
		{"count entry", unsafe.Sizeof(entry{}), 16},
		{"histogram entry", unsafe.Sizeof(histEntry{}), 40},
		{"hour counts", unsafe.Sizeof([numSlots]uint64{}), 96},
		{"histogram", unsafe.Sizeof(hist{}), 32},
		{"sparse bins", maxSparse * 4, 128},
		{"dense bins", numBins * 4, 896},
		{"held events of a processor", stripeEvents * unsafe.Sizeof(pendingEvent{}), 2048},
		{"their models, clients and usage", stripeEvents * unsafe.Sizeof(pendingExt{}), 4608},
		{"the series a processor remembers", recentLen * unsafe.Sizeof(recentSeries{}), 3584},
	} {
		if c.got != c.want {
			t.Errorf("%s: %d bytes, the documentation says %d", c.name, c.got, c.want)
		}
	}
	// A key with one event: the key state, four rings of 4 entries, one
	// histogram of one bin for its minute and its hour, and the copied map
	// of keys (here of two keys).
	s := mustNew(t, WithClock(clockFunc(func() time.Time { return t0 })))
	for range s.stripes.max {
		s.stripes.add() // made now, not by a Record that moved to another processor
	}
	s.Record(ev("k1", 0, status.Success))
	s.flush()
	// The fewest bytes of five new keys: the runtime allocates at times
	// for itself (under -race, a sync.Pool drops what it holds at random).
	least := uint64(math.MaxUint64)
	for i := range 5 {
		before := totalAlloc()
		s.Record(ev(fmt.Sprint("k", i+2), 0, status.Success))
		s.flush()
		least = min(least, totalAlloc()-before)
	}
	if least > 1600 {
		t.Errorf("a key with one event allocated %d bytes, the documentation says under 1,600", least)
	}
}

func totalAlloc() uint64 {
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.TotalAlloc
}

// FuzzSeries: no bounds or step make Series panic or fail otherwise than
// with ErrBadQuery, and its buckets add up to UsageCount.
func FuzzSeries(f *testing.F) {
	f.Add(t0.Unix(), int64(0), t0.Unix()+3600, int64(0), int64(time.Minute))
	f.Add(int64(-1<<62), int64(0), int64(1<<62), int64(0), int64(time.Second))
	f.Add(t0.Unix()-1, int64(999_999_999), t0.Unix()+1, int64(1), int64(7*time.Second))
	f.Add(int64(0), int64(0), int64(1<<40), int64(0), int64(-1))
	s := mustNew(f, WithClock(clockFunc(func() time.Time { return t0.Add(1000 * time.Hour) })))
	for i := range 300 {
		s.Record(ev(fmt.Sprint(i%3), time.Duration(i)*37*time.Second, status.All[i%len(status.All)]))
	}
	f.Fuzz(func(t *testing.T, since, sinceNs, until, untilNs, step int64) {
		q := recorder.Query{Since: time.Unix(since, sinceNs), Until: time.Unix(until, untilNs)}
		got, err := s.Series(ctx, q, time.Duration(step))
		if err != nil {
			if !errors.Is(err, recorder.ErrBadQuery) {
				t.Fatalf("Series(%+v, %v): %v", q, time.Duration(step), err)
			}
			return
		}
		var sum int64
		for _, bs := range got {
			for _, b := range bs {
				sum += b.Count
			}
		}
		if n, err := s.UsageCount(ctx, q); err != nil || n != sum {
			t.Fatalf("Series(%+v, %v) sums to %d, UsageCount = %d, %v", q, time.Duration(step), sum, n, err)
		}
	})
}

func TestOddEvents(t *testing.T) {
	s := newTest(t)
	for _, e := range []recorder.Event{
		{Time: time.Unix(-1<<63, 0)},
		{Time: time.Unix(1<<63-1, 999_999_999)},
		{Time: time.Date(-292277022399, 1, 1, 0, 0, 0, 0, time.UTC)},
		{Time: t0, Latency: -time.Hour, Status: status.Status(255)},
		{Time: t0, Latency: 1<<63 - 1, Status: status.Success},
		{Time: t0, Latency: 1<<63 - 1, Status: status.Success, KeyID: string(make([]byte, 1<<16))},
	} {
		s.Record(e)
	}
	if s.TooOld() != 2 || s.TooNew() != 1 {
		t.Errorf("TooOld() = %d, TooNew() = %d; want 2 and 1", s.TooOld(), s.TooNew())
	}
	lat, err := s.LatencyByKey(ctx, recorder.Query{})
	if err != nil {
		t.Fatal(err)
	}
	if l := lat[""]; l.Count != 2 || l.P50 != 0 || l.P99 < 17*time.Minute {
		t.Errorf(`LatencyByKey()[""] = %+v, want 2 events, from 0 to the last bin`, l)
	}
	if l := lat[string(make([]byte, 1<<16))]; l.Count != 1 {
		t.Errorf("the long key: %+v", l)
	}
}

// Many events of the same second from several goroutines at once fill the
// per-processor buffers (stripe.go) and send them while queries read:
// every event is counted once, under its own key.
func TestConcurrentFullStripes(t *testing.T) {
	s := newTest(t)
	var wg sync.WaitGroup
	const writers, each, keys = 6, 5000, 7
	for w := range writers {
		wg.Go(func() {
			for i := range each {
				s.Record(recorder.Event{Time: t0.Add(time.Duration(i/1000) * time.Second), KeyID: fmt.Sprint((w + i) % keys), Status: status.Success})
			}
		})
	}
	queryWhile(t, &wg, func() error {
		_, err := s.UsageByKey(ctx, recorder.Query{})
		return err
	})
	got, err := s.UsageByKey(ctx, recorder.Query{})
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]int64{}
	for w := range writers {
		for i := range each {
			want[fmt.Sprint((w+i)%keys)]++
		}
	}
	if !maps.Equal(got, want) {
		t.Errorf("UsageByKey = %v, want %v", got, want)
	}
	if s.Dropped()+s.TooOld()+s.TooNew() != 0 {
		t.Errorf("dropped %d, too old %d, too new %d", s.Dropped(), s.TooOld(), s.TooNew())
	}
}

// A query, Dropped and TooOld see every event recorded before them, though
// it is still held with others of its second: one event, then its count.
func TestQuerySeesHeldEvents(t *testing.T) {
	s := newTest(t)
	for i := range 10 {
		s.Record(ev("k", 0, status.Success))
		if n, err := s.UsageCount(ctx, recorder.Query{}); err != nil || n != int64(i+1) {
			t.Fatalf("after %d events: UsageCount = %d, %v", i+1, n, err)
		}
	}
	s.Record(ev("k", -2*time.Hour*24, status.Success)) // out of the retention
	if got := s.TooOld(); got != 1 {
		t.Errorf("TooOld = %d, want 1", got)
	}
}

// The clock is read for events newer than every event counted, once per
// second of event time, though events are held before they are counted
// (WithClock's promise).
func TestClockReadOncePerSecond(t *testing.T) {
	var reads atomic.Int64
	s := mustNew(t, WithClock(clockFunc(func() time.Time { reads.Add(1); return t0.Add(time.Hour) })))
	for sec := range 5 {
		for range 200 {
			s.Record(ev("k", time.Duration(sec)*time.Second, status.Success))
		}
	}
	if n := reads.Load(); n > 5 {
		t.Errorf("the clock was read %d times for 1,000 events in 5 seconds, want at most 5", n)
	}
	if n, err := s.UsageCount(ctx, recorder.Query{}); err != nil || n != 1000 {
		t.Errorf("UsageCount = %d, %v; want 1000", n, err)
	}
}

// queryWhile runs query over and over, reporting its first error, until
// every goroutine of writers has returned.
func queryWhile(t *testing.T, writers *sync.WaitGroup, query func() error) {
	t.Helper()
	stop := make(chan struct{})
	var rd sync.WaitGroup
	rd.Go(func() {
		for {
			select {
			case <-stop:
				return
			default:
			}
			if err := query(); err != nil {
				t.Error(err)
				return
			}
		}
	})
	writers.Wait()
	close(stop)
	rd.Wait()
}
