// Package recordertest is a conformance suite for usage stores: any type
// that is both a recorder.Recorder and a recorder.Stats can run it from its
// tests.
//
//	func TestConformance(t *testing.T) {
//		recordertest.Run(t, func(t *testing.T) recordertest.Store {
//			return mystore.New(...)
//		})
//	}
//
// The suite asks the factory for a new, empty store for each of its parts,
// records a fixed set of events in it (see [Events]), calls the store's
// Flush method if it has one (see [Flusher]), and checks the answers of
// UsageByKey, UsageCount, LatencyByKey and Series against answers computed
// from the events. A store that also implements recorder.MultiStats has
// its UsageByKeyMulti, SeriesMulti and LatencySeries answers checked
// against its own Stats answers on the same events (counts equal,
// quantiles within 10% plus 1ms), its errors as the Stats methods', and,
// while events are recorded, UsageByKeyMulti's class counts adding up to
// its count of every event. It closes every store it gets.
//
// # What a store must do to pass
//
// Counts (UsageByKey, UsageCount, the Count of LatencyByKey, Series) must
// be exact for the windows the suite uses: windows whose bounds are whole
// minutes, or whole seconds within the two minutes before the newest event
// recorded. So a store may keep events at second resolution for the last
// few minutes (relative to its newest event) and at minute resolution
// before; a store that keeps every event passes too. The status filters are
// those of status.Status.Matches: the class filters Success, Failed and
// ReachLimit, and the finer statuses exactly. A query's KeyID selects a
// key, its Model and Client a model and a client; the events recorded
// without a key are reported under the key "". Keys without a matching
// event are absent from every map.
//
// A store that implements recorder.TotalsStats has its TotalsBy answers
// checked, grouped by key, model and client, for windows whose bounds are
// whole minutes (or unbounded), with key, status, model and client
// filters: Events exact, token sums and unknown counts exact, units and
// cost within a billionth (they are float sums). The suite's events say
// their model, client, tokens, units and cost, or say they are not known
// (-1; see [Usage]): a store passes when it sums the values known only and
// counts the events without them, a known zero being known. A few more
// events, in a store of their own, carry values at the edges (a trillion
// tokens, a cost of a billionth, models and clients with quotes,
// backslashes and non-ASCII letters), which must come back as recorded.
//
// Latency quantiles are checked only for windows aligned to whole hours (or
// unbounded), without a key filter or with one, and with the status filters
// Unknown, Success, ReachLimit and Failed (a store may approximate the
// quantiles of finer filters by their class). A quantile passes when it is
// within 10% plus 1ms of the exact one, by any of the usual definitions
// (nearest rank, or between the two ranks that interpolation uses).
//
// Series buckets are aligned to multiples of the step since the Unix epoch
// (not time.Time's zero time, as time.Time.Truncate would); the first and
// last buckets count only the events within [Since, Until); every bucket
// from the one holding Since to the one holding the last instant before
// Until is present, empty ones with Count 0. Step 0 means a minute.
//
// Series must reject, with an error wrapping recorder.ErrBadQuery, a zero
// Since or Until, Until not after Since, a step that is negative, under a
// second or not a whole number of seconds, and a range of a million steps
// or more. Every query method called with a canceled context must return an
// error wrapping context.Canceled, and after Close an error wrapping
// recorder.ErrClosed. Record after Close must not panic; a store that is a
// recorder.DropCounter must count those events as dropped.
//
// The events lie in the 3 hours and 2 minutes after the base time (by
// default [Base], in January 2026): a store must keep them all, whatever
// its retention, and must not reject them as too old or too new. Use
// [RunBase] to choose another base time, such as a recent hour, for a store
// whose retention is measured from the clock.
package recordertest

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"math"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/apipool-ng/apipool/recorder"
	"github.com/apipool-ng/apipool/status"
)

// Store is what the suite tests.
type Store interface {
	recorder.Recorder
	recorder.Stats
}

// Flusher is implemented by stores that store events asynchronously. The
// suite calls Flush after recording and before querying; when it returns,
// every event recorded before must be visible to queries.
type Flusher interface {
	Flush(ctx context.Context) error
}

// Run runs the suite with the events of [Events]([Base]).
func Run(t *testing.T, newStore func(t *testing.T) Store) {
	RunBase(t, Base, newStore)
}

// RunBase runs the suite with the events of [Events](base). base must be a
// whole hour (Unix time).
func RunBase(t *testing.T, base time.Time, newStore func(t *testing.T) Store) {
	t.Helper()
	if base.Unix()%3600 != 0 || base.Nanosecond() != 0 {
		t.Fatalf("recordertest: base %v is not a whole hour", base)
	}
	t.Run("Queries", func(t *testing.T) {
		s := open(t, newStore)
		evs := Events(base)
		for _, e := range evs {
			s.Record(e)
		}
		flush(t, s)
		t.Run("Totals", func(t *testing.T) { testTotals(t, s) })
		if ts, ok := s.(recorder.TotalsStats); ok {
			t.Run("TotalsBy", func(t *testing.T) { testTotalsBy(t, ts, base, evs) })
		}
		t.Run("Usage", func(t *testing.T) { testUsage(t, s, base, evs) })
		t.Run("Latency", func(t *testing.T) { testLatency(t, s, base, evs) })
		t.Run("Series", func(t *testing.T) { testSeries(t, s, base, evs) })
		t.Run("BadQueries", func(t *testing.T) { testBadQueries(t, s, base) })
		t.Run("Canceled", func(t *testing.T) { testCanceled(t, s, base) })
		if m, ok := s.(recorder.MultiStats); ok {
			t.Run("Multi", func(t *testing.T) { testMulti(t, m, base) })
		}
	})
	t.Run("UsageValues", func(t *testing.T) { testUsageValues(t, open(t, newStore), base) })
	t.Run("Concurrent", func(t *testing.T) { testConcurrent(t, open(t, newStore), base) })
	t.Run("Close", func(t *testing.T) { testClose(t, newStore(t), base) })
}

func open(t *testing.T, newStore func(t *testing.T) Store) Store {
	t.Helper()
	s := newStore(t)
	if s == nil {
		t.Fatal("recordertest: the factory returned nil")
	}
	t.Cleanup(func() {
		if err := s.Close(context.Background()); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return s
}

func flush(t *testing.T, s Store) {
	t.Helper()
	if f, ok := s.(Flusher); ok {
		if err := f.Flush(context.Background()); err != nil {
			t.Fatalf("Flush: %v", err)
		}
	}
}

// testTotals checks literal numbers, so that a mistake in Events or in the
// reference answers cannot pass unseen.
func testTotals(t *testing.T, s Store) {
	ctx := context.Background()
	got, err := s.UsageByKey(ctx, recorder.Query{})
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]int64{KeyAlpha: 340, KeyBeta: 215, KeyGamma: 9, KeyNone: 21}
	if !maps.Equal(got, want) {
		t.Errorf("UsageByKey(everything) = %v, want %v", got, want)
	}
	if n, err := s.UsageCount(ctx, recorder.Query{}); err != nil || n != 585 {
		t.Errorf("UsageCount(everything) = %d, %v; want 585", n, err)
	}
	if n, err := s.UsageCount(ctx, recorder.Query{Status: status.ReachLimit}); err != nil || n != 13 {
		t.Errorf("UsageCount(reach limit) = %d, %v; want 13", n, err)
	}
	if n, err := s.UsageCount(ctx, recorder.Query{Status: status.Failed}); err != nil || n != 58 {
		t.Errorf("UsageCount(failed) = %d, %v; want 58 (every failure but reach limit)", n, err)
	}
}

// window is a query window of the suite; hourly windows are aligned to whole
// hours or unbounded, and so check latency quantiles.
type window struct {
	name         string
	since, until time.Time
	hourly       bool
}

func windows(base time.Time) []window {
	at := func(d time.Duration) time.Time { return base.Add(d) }
	burst := at(burstStart)
	bs := func(d time.Duration) time.Time { return burst.Add(d) }
	return []window{
		{"everything", time.Time{}, time.Time{}, true},
		{"hour 0", at(0), at(time.Hour), true},
		{"hour 1", at(time.Hour), at(2 * time.Hour), true},
		{"hours 1-2", at(time.Hour), at(3 * time.Hour), true},
		{"until hour 1", time.Time{}, at(time.Hour), true},
		{"since hour 2", at(2 * time.Hour), time.Time{}, true},
		{"since hour 3", at(3 * time.Hour), time.Time{}, true},
		{"0:30 to 1:30", at(30 * time.Minute), at(90 * time.Minute), false},
		{"minute 0:30", at(30 * time.Minute), at(31 * time.Minute), false},
		{"1:10 to 1:13", at(70 * time.Minute), at(73 * time.Minute), false},
		{"2:59 to 3:02", at(179 * time.Minute), at(182 * time.Minute), false},
		{"burst seconds 5-10", bs(5 * time.Second), bs(10 * time.Second), false},
		{"burst second 5", bs(5 * time.Second), bs(6 * time.Second), false},
		{"burst seconds 6-31", bs(6 * time.Second), bs(31 * time.Second), false},
		{"burst seconds 1-5, empty", bs(time.Second), bs(5 * time.Second), false},
		{"burst second 59", bs(59 * time.Second), bs(60 * time.Second), false},
		{"newest second", bs(60 * time.Second), bs(61 * time.Second), false},
		{"burst second 30 on", bs(30 * time.Second), time.Time{}, false},
		{"before the events", at(-2 * time.Hour), at(-time.Hour), true},
		{"after the events", at(4 * time.Hour), at(5 * time.Hour), true},
	}
}

var (
	allFilters   = append([]status.Status{status.Unknown}, status.All...)
	classFilters = []status.Status{status.Unknown, status.Success, status.ReachLimit, status.Failed}
	allKeys      = []string{"", KeyAlpha, KeyBeta, KeyGamma, "no such key"}
)

func describe(q recorder.Query) string {
	s := ""
	if !q.Since.IsZero() {
		s += " since " + q.Since.UTC().Format(time.RFC3339Nano)
	}
	if !q.Until.IsZero() {
		s += " until " + q.Until.UTC().Format(time.RFC3339Nano)
	}
	if q.KeyID != "" {
		s += fmt.Sprintf(" key %q", q.KeyID)
	}
	if q.Status != status.Unknown {
		s += fmt.Sprintf(" status %q", q.Status)
	}
	if q.Model != "" {
		s += fmt.Sprintf(" model %q", q.Model)
	}
	if q.Client != "" {
		s += fmt.Sprintf(" client %q", q.Client)
	}
	if s == "" {
		return "everything"
	}
	return s[1:]
}

// queries returns every window with every status filter, every window
// with every key filter, and every window with model and client filters
// (alone, together, with a key, with a status).
func queries(base time.Time) []recorder.Query {
	var qs []recorder.Query
	for _, w := range windows(base) {
		for _, f := range allFilters {
			qs = append(qs, recorder.Query{Since: w.since, Until: w.until, Status: f})
		}
		for _, k := range allKeys[1:] {
			qs = append(qs, recorder.Query{Since: w.since, Until: w.until, KeyID: k})
			qs = append(qs, recorder.Query{Since: w.since, Until: w.until, KeyID: k, Status: status.Failed})
		}
		for _, q := range modelQueries() {
			q.Since, q.Until = w.since, w.until
			qs = append(qs, q)
		}
	}
	return qs
}

// modelQueries are the model and client filters the suite combines with
// its windows.
func modelQueries() []recorder.Query {
	return []recorder.Query{
		{Model: ModelA}, {Model: ModelB}, {Model: "no such model"},
		{Client: ClientWeb}, {Client: ClientBatch},
		{Model: ModelA, Client: ClientWeb}, {Model: ModelB, Client: ClientBatch, KeyID: KeyBeta},
		{Model: ModelA, KeyID: KeyAlpha, Status: status.Success}, {Model: ModelA, Status: status.Failed},
		{Client: ClientBatch, Status: status.ReachLimit},
	}
}

func matches(e recorder.Event, q recorder.Query) bool {
	return (q.KeyID == "" || e.KeyID == q.KeyID) && e.Status.Matches(q.Status) &&
		(q.Model == "" || e.Model == q.Model) && (q.Client == "" || e.Client == q.Client) &&
		(q.Since.IsZero() || !e.Time.Before(q.Since)) && (q.Until.IsZero() || e.Time.Before(q.Until))
}

func wantUsage(evs []recorder.Event, q recorder.Query) map[string]int64 {
	out := map[string]int64{}
	for _, e := range evs {
		if matches(e, q) {
			out[e.KeyID]++
		}
	}
	return out
}

func testUsage(t *testing.T, s Store, base time.Time, evs []recorder.Event) {
	ctx := context.Background()
	for _, q := range queries(base) {
		want := wantUsage(evs, q)
		got, err := s.UsageByKey(ctx, q)
		if err != nil {
			t.Errorf("UsageByKey(%s): %v", describe(q), err)
			continue
		}
		if !maps.Equal(got, want) {
			t.Errorf("UsageByKey(%s) = %v, want %v", describe(q), got, want)
		}
		var total int64
		for _, n := range want {
			total += n
		}
		if n, err := s.UsageCount(ctx, q); err != nil || n != total {
			t.Errorf("UsageCount(%s) = %d, %v; want %d", describe(q), n, err, total)
		}
	}
	// A few answers by hand, for the second-resolution windows.
	burst := base.Add(burstStart)
	for _, c := range []struct {
		from, to time.Duration
		want     map[string]int64
	}{
		{5 * time.Second, 10 * time.Second, map[string]int64{KeyAlpha: 2, KeyBeta: 1}},
		{6 * time.Second, 31 * time.Second, map[string]int64{KeyAlpha: 2, KeyBeta: 1, KeyNone: 1}},
		{59 * time.Second, 61 * time.Second, map[string]int64{KeyAlpha: 2}},
		{time.Second, 5 * time.Second, map[string]int64{}},
	} {
		q := recorder.Query{Since: burst.Add(c.from), Until: burst.Add(c.to)}
		if got, err := s.UsageByKey(ctx, q); err != nil || !maps.Equal(got, c.want) {
			t.Errorf("UsageByKey(%s) = %v, %v; want %v", describe(q), got, err, c.want)
		}
	}
}

func wantLatencies(evs []recorder.Event, q recorder.Query) map[string][]time.Duration {
	out := map[string][]time.Duration{}
	for _, e := range evs {
		if matches(e, q) {
			out[e.KeyID] = append(out[e.KeyID], e.Latency)
		}
	}
	for _, ls := range out {
		slices.Sort(ls)
	}
	return out
}

// quantileOK reports whether got is an acceptable q-quantile of sorted.
func quantileOK(got time.Duration, sorted []time.Duration, q float64) (lo, hi time.Duration, ok bool) {
	n := len(sorted)
	idx := []int{
		int(math.Ceil(q*float64(n))) - 1,        // nearest rank
		int(math.Floor(q * float64(n-1))),       // interpolation, below
		int(math.Ceil(q * float64(n-1))),        // interpolation, above
		min(int(math.Floor(q*float64(n))), n-1), // the element at q*n
	}
	lo, hi = sorted[max(idx[0], 0)], sorted[max(idx[0], 0)]
	for _, i := range idx[1:] {
		lo, hi = min(lo, sorted[i]), max(hi, sorted[i])
	}
	lo -= lo/10 + time.Millisecond
	hi += hi/10 + time.Millisecond
	return lo, hi, got >= lo && got <= hi
}

func testLatency(t *testing.T, s Store, base time.Time, evs []recorder.Event) {
	ctx := context.Background()
	hourly := map[[2]time.Time]bool{}
	for _, w := range windows(base) {
		hourly[[2]time.Time{w.since, w.until}] = w.hourly
	}
	checked := 0
	for _, q := range queries(base) {
		want := wantLatencies(evs, q)
		got, err := s.LatencyByKey(ctx, q)
		if err != nil {
			t.Errorf("LatencyByKey(%s): %v", describe(q), err)
			continue
		}
		if len(got) != len(want) {
			t.Errorf("LatencyByKey(%s) has keys %q, want %q", describe(q), slices.Sorted(maps.Keys(got)), slices.Sorted(maps.Keys(want)))
		}
		quantiles := hourly[[2]time.Time{q.Since, q.Until}] && slices.Contains(classFilters, q.Status)
		for k, ls := range want {
			l, ok := got[k]
			if !ok {
				continue // reported above
			}
			if l.Count != int64(len(ls)) {
				t.Errorf("LatencyByKey(%s)[%q].Count = %d, want %d", describe(q), k, l.Count, len(ls))
			}
			if !quantiles {
				continue
			}
			checked++
			for _, c := range []struct {
				name string
				got  time.Duration
				q    float64
			}{{"P50", l.P50, 0.5}, {"P90", l.P90, 0.9}, {"P99", l.P99, 0.99}} {
				if lo, hi, ok := quantileOK(c.got, ls, c.q); !ok {
					t.Errorf("LatencyByKey(%s)[%q].%s = %v, want within [%v, %v]", describe(q), k, c.name, c.got, lo, hi)
				}
			}
		}
	}
	if checked < 20 {
		t.Errorf("only %d quantile checks ran", checked)
	}
	// By hand: alpha's successes in hour 0.
	q := recorder.Query{Since: base, Until: base.Add(time.Hour), KeyID: KeyAlpha, Status: status.Success}
	got, err := s.LatencyByKey(ctx, q)
	want := recorder.Latency{Count: 100, P50: 100 * time.Millisecond, P90: 200 * time.Millisecond, P99: 800 * time.Millisecond}
	if err != nil || len(got) != 1 || got[KeyAlpha].Count != want.Count ||
		!near(got[KeyAlpha].P50, want.P50) || !near(got[KeyAlpha].P90, want.P90) || !near(got[KeyAlpha].P99, want.P99) {
		t.Errorf("LatencyByKey(%s) = %v, %v; want alpha: %+v", describe(q), got, err, want)
	}
}

func near(got, want time.Duration) bool {
	d := got - want
	return max(d, -d) <= want/10+time.Millisecond
}

// wantSeries computes a series from the events, aligning buckets to the
// Unix epoch.
func wantSeries(evs []recorder.Event, q recorder.Query, step time.Duration) map[string][]recorder.Bucket {
	if step == 0 {
		step = time.Minute
	}
	st := int64(step / time.Second)
	first := floorDiv(q.Since.Unix(), st) * st
	last := floorDiv(q.Until.Add(-time.Nanosecond).Unix(), st) * st
	n := (last-first)/st + 1
	out := map[string][]recorder.Bucket{}
	for _, e := range evs {
		if !matches(e, q) {
			continue
		}
		bs := out[e.KeyID]
		if bs == nil {
			bs = make([]recorder.Bucket, n)
			for i := range bs {
				bs[i].Start = time.Unix(first+int64(i)*st, 0).UTC()
			}
			out[e.KeyID] = bs
		}
		bs[(floorDiv(e.Time.Unix(), st)*st-first)/st].Count++
	}
	return out
}

func floorDiv(a, b int64) int64 {
	q := a / b
	if a%b != 0 && (a < 0) != (b < 0) {
		q--
	}
	return q
}

// seriesCase is a Series call of the suite.
type seriesCase struct {
	name string
	q    recorder.Query
	step time.Duration
	n    int // the number of buckets, for Base (7-minute and day buckets fall differently for other bases)
}

func seriesCases(base time.Time) []seriesCase {
	at := func(d time.Duration) time.Time { return base.Add(d) }
	burst := at(burstStart)
	return []seriesCase{
		{"minutes around 3:00", recorder.Query{Since: at(178 * time.Minute), Until: at(183 * time.Minute)}, time.Minute, 5},
		{"hours", recorder.Query{Since: at(-time.Hour), Until: at(4 * time.Hour)}, time.Hour, 5},
		{"hours, unaligned range", recorder.Query{Since: at(30 * time.Minute), Until: at(150 * time.Minute)}, time.Hour, 3},
		{"hours, failed of beta", recorder.Query{Since: at(0), Until: at(4 * time.Hour), KeyID: KeyBeta, Status: status.Failed}, time.Hour, 4},
		{"hours, reach limit", recorder.Query{Since: at(0), Until: at(4 * time.Hour), Status: status.ReachLimit}, time.Hour, 4},
		{"7 minutes, not aligned to the hour", recorder.Query{Since: at(0), Until: at(time.Hour)}, 7 * time.Minute, 9},
		{"step 0 is a minute", recorder.Query{Since: at(time.Hour), Until: at(70 * time.Minute)}, 0, 10},
		{"a day", recorder.Query{Since: at(0), Until: at(3 * time.Hour)}, 24 * time.Hour, 1},
		{"10 seconds in the burst", recorder.Query{Since: burst, Until: burst.Add(61 * time.Second)}, 10 * time.Second, 7},
		{"seconds in the burst", recorder.Query{Since: burst, Until: burst.Add(60 * time.Second)}, time.Second, 60},
		{"no event", recorder.Query{Since: at(-3 * time.Hour), Until: at(-time.Hour)}, time.Minute, 120},
		{"hours, model A", recorder.Query{Since: at(0), Until: at(4 * time.Hour), Model: ModelA}, time.Hour, 4},
		{"minutes around 3:00, client batch", recorder.Query{Since: at(178 * time.Minute), Until: at(183 * time.Minute), Client: ClientBatch}, time.Minute, 5},
		{"10 seconds in the burst, beta's model B", recorder.Query{Since: burst, Until: burst.Add(61 * time.Second), KeyID: KeyBeta, Model: ModelB}, 10 * time.Second, 7},
	}
}

func testSeries(t *testing.T, s Store, base time.Time, evs []recorder.Event) {
	ctx := context.Background()
	at := func(d time.Duration) time.Time { return base.Add(d) }
	cases := seriesCases(base)
	for _, c := range cases {
		want := wantSeries(evs, c.q, c.step)
		for k, bs := range want {
			if base.Equal(Base) && len(bs) != c.n {
				t.Fatalf("%s: the reference series of %q has %d buckets, the case says %d", c.name, k, len(bs), c.n)
			}
		}
		got, err := s.Series(ctx, c.q, c.step)
		if err != nil {
			t.Errorf("%s: Series(%s, %v): %v", c.name, describe(c.q), c.step, err)
			continue
		}
		if !slices.Equal(slices.Sorted(maps.Keys(got)), slices.Sorted(maps.Keys(want))) {
			t.Errorf("%s: Series(%s, %v) has keys %q, want %q", c.name, describe(c.q), c.step, slices.Sorted(maps.Keys(got)), slices.Sorted(maps.Keys(want)))
			continue
		}
		for k, wbs := range want {
			gbs := got[k]
			if len(gbs) != len(wbs) {
				t.Errorf("%s: Series(%s, %v)[%q] has %d buckets, want %d", c.name, describe(c.q), c.step, k, len(gbs), len(wbs))
				continue
			}
			for i := range wbs {
				if !gbs[i].Start.Equal(wbs[i].Start) || gbs[i].Count != wbs[i].Count {
					t.Errorf("%s: Series(%s, %v)[%q][%d] = {%v %d}, want {%v %d}", c.name, describe(c.q), c.step, k, i,
						gbs[i].Start.UTC(), gbs[i].Count, wbs[i].Start, wbs[i].Count)
				}
			}
		}
	}
	// By hand: alpha by hour; the first bucket is before the events.
	q := recorder.Query{Since: at(-time.Hour), Until: at(4 * time.Hour), KeyID: KeyAlpha}
	got, err := s.Series(ctx, q, time.Hour)
	var counts []int64
	for _, b := range got[KeyAlpha] {
		counts = append(counts, b.Count)
	}
	if want := []int64{0, 110, 113, 110, 7}; err != nil || !slices.Equal(counts, want) || len(got) != 1 || !got[KeyAlpha][0].Start.Equal(at(-time.Hour)) {
		t.Errorf("Series(%s, 1h) = %v, %v; want alpha counts %v from %v", describe(q), got, err, want, at(-time.Hour))
	}
}

// badSeries are the series bounds and steps that Series must reject.
type badSeries struct {
	name         string
	since, until time.Time
	step         time.Duration
}

func badSeriesCases(base time.Time) []badSeries {
	at := func(d time.Duration) time.Time { return base.Add(d) }
	return []badSeries{
		{"zero Since", time.Time{}, at(time.Hour), time.Minute},
		{"zero Until", at(0), time.Time{}, time.Minute},
		{"both zero", time.Time{}, time.Time{}, time.Minute},
		{"Until equal to Since", at(0), at(0), time.Minute},
		{"Until before Since", at(time.Hour), at(0), time.Minute},
		{"negative step", at(0), at(time.Hour), -time.Minute},
		{"step under a second", at(0), at(time.Hour), 500 * time.Millisecond},
		{"step of 1ns", at(0), at(time.Hour), 1},
		{"step not whole seconds", at(0), at(time.Hour), 1500 * time.Millisecond},
		{"a million steps", at(0), at(1_000_000 * time.Second), time.Second},
		{"ten years by the second", at(0), at(10 * 365 * 24 * time.Hour), time.Second},
		{"from year 1 to 9999", time.Date(1, 1, 1, 0, 0, 0, 0, time.UTC), time.Date(9999, 1, 1, 0, 0, 0, 0, time.UTC), time.Minute},
	}
}

func testBadQueries(t *testing.T, s Store, base time.Time) {
	ctx := context.Background()
	for _, c := range badSeriesCases(base) {
		got, err := s.Series(ctx, recorder.Query{Since: c.since, Until: c.until}, c.step)
		if !errors.Is(err, recorder.ErrBadQuery) {
			t.Errorf("%s: Series = %d keys, %v; want an error wrapping recorder.ErrBadQuery", c.name, len(got), err)
		}
	}
	// A window whose Until is before its Since is a mistake for every
	// query, not an empty answer.
	for _, q := range []recorder.Query{{Since: base.Add(time.Hour), Until: base}, {Since: base.Add(time.Nanosecond), Until: base}} {
		check := func(method string, err error) {
			t.Helper()
			if !errors.Is(err, recorder.ErrBadQuery) {
				t.Errorf("%s with Until %v and Since %v: %v, want an error wrapping recorder.ErrBadQuery", method, q.Until.Sub(base), q.Since.Sub(base), err)
			}
		}
		_, err := s.UsageByKey(ctx, q)
		check("UsageByKey", err)
		_, err = s.UsageCount(ctx, q)
		check("UsageCount", err)
		_, err = s.LatencyByKey(ctx, q)
		check("LatencyByKey", err)
		if ts, ok := s.(recorder.TotalsStats); ok {
			_, err = ts.TotalsBy(ctx, q, recorder.ByKey)
			check("TotalsBy", err)
		}
		if ms, ok := s.(recorder.MultiStats); ok {
			_, err = ms.UsageByKeyMulti(ctx, q, []status.Status{status.Success})
			check("UsageByKeyMulti", err)
		}
	}
}

func testCanceled(t *testing.T, s Store, base time.Time) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	q := recorder.Query{Since: base, Until: base.Add(time.Hour)}
	check := func(method string, err error) {
		t.Helper()
		if !errors.Is(err, context.Canceled) {
			t.Errorf("%s with a canceled context: %v, want an error wrapping context.Canceled", method, err)
		}
	}
	_, err := s.UsageByKey(ctx, q)
	check("UsageByKey", err)
	_, err = s.UsageCount(ctx, q)
	check("UsageCount", err)
	_, err = s.LatencyByKey(ctx, q)
	check("LatencyByKey", err)
	_, err = s.Series(ctx, q, time.Minute)
	check("Series", err)
	multiErrors(ctx, s, base, check)
}

// testConcurrent records from several goroutines while others query, then
// checks that every event counts.
func testConcurrent(t *testing.T, s Store, base time.Time) {
	const writers, perWriter = 8, 250
	keys := []string{"k0", "k1", "k2", ""}
	event := func(w, i int) recorder.Event {
		return recorder.Event{
			Time:    base.Add(time.Duration(i)*7*time.Second + time.Duration(w)*time.Second),
			KeyID:   keys[(w+i)%len(keys)],
			Status:  status.All[(w*perWriter+i)%len(status.All)],
			Latency: time.Duration(1+i%50) * time.Millisecond,
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg, readers sync.WaitGroup
	readers.Add(1)
	go func() {
		defer readers.Done()
		q := recorder.Query{Since: base, Until: base.Add(time.Hour)}
		for ctx.Err() == nil {
			if _, err := s.UsageByKey(ctx, q); err != nil && ctx.Err() == nil {
				t.Errorf("UsageByKey while recording: %v", err)
				return
			}
			if _, err := s.LatencyByKey(ctx, q); err != nil && ctx.Err() == nil {
				t.Errorf("LatencyByKey while recording: %v", err)
				return
			}
			if err := multiConsistent(ctx, s, q); err != nil && ctx.Err() == nil {
				t.Error(err)
				return
			}
		}
	}()
	var all []recorder.Event
	for w := range writers {
		for i := range perWriter {
			all = append(all, event(w, i))
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range perWriter {
				s.Record(event(w, i))
			}
		}()
	}
	wg.Wait()
	cancel()
	readers.Wait()
	flush(t, s)
	for _, q := range []recorder.Query{
		{},
		{Since: base, Until: base.Add(10 * time.Minute)},
		{Since: base.Add(10 * time.Minute), Until: base.Add(20 * time.Minute), Status: status.Failed},
		{KeyID: "k1", Status: status.ReachLimit},
	} {
		want := wantUsage(all, q)
		got, err := s.UsageByKey(context.Background(), q)
		if err != nil || !maps.Equal(got, want) {
			t.Errorf("UsageByKey(%s) = %v, %v; want %v", describe(q), got, err, want)
		}
	}
}

func testClose(t *testing.T, s Store, base time.Time) {
	ctx := context.Background()
	s.Record(recorder.Event{Time: base, KeyID: KeyAlpha, Status: status.Success})
	flush(t, s)
	if err := s.Close(ctx); err != nil {
		t.Fatalf("Close: %v", err)
	}
	var before uint64
	dc, counts := s.(recorder.DropCounter)
	if counts {
		before = dc.Dropped()
	}
	for i := range 3 {
		s.Record(recorder.Event{Time: base.Add(time.Duration(i) * time.Second), KeyID: KeyAlpha, Status: status.Success})
	}
	if counts {
		if d := dc.Dropped() - before; d < 3 {
			t.Errorf("Dropped() grew by %d after 3 events recorded after Close, want at least 3", d)
		}
	}
	q := recorder.Query{Since: base, Until: base.Add(time.Hour)}
	check := func(method string, err error) {
		t.Helper()
		if !errors.Is(err, recorder.ErrClosed) {
			t.Errorf("%s after Close: %v, want an error wrapping recorder.ErrClosed", method, err)
		}
	}
	_, err := s.UsageByKey(ctx, q)
	check("UsageByKey", err)
	_, err = s.UsageCount(ctx, q)
	check("UsageCount", err)
	_, err = s.LatencyByKey(ctx, q)
	check("LatencyByKey", err)
	_, err = s.Series(ctx, q, time.Minute)
	check("Series", err)
	multiErrors(ctx, s, base, check)
}
