package recordertest

import (
	"context"
	"errors"
	"maps"
	"slices"
	"testing"
	"time"

	"github.com/apipool-ng/apipool/recorder"
	"github.com/apipool-ng/apipool/status"
)

// The checks of recorder.MultiStats, for stores that implement it: each
// answer must equal the answers of the Stats calls it stands for on the
// same events (counts exactly; latency quantiles within 10% plus 1ms of
// LatencyByKey's, as a store may merge the same data differently).

func testMulti(t *testing.T, s recorder.MultiStats, base time.Time) {
	t.Run("UsageByKeyMulti", func(t *testing.T) { testUsageMulti(t, s, base) })
	t.Run("SeriesMulti", func(t *testing.T) { testSeriesMulti(t, s, base) })
	t.Run("LatencySeries", func(t *testing.T) { testLatencySeries(t, s, base) })
	t.Run("BadQueries", func(t *testing.T) { testMultiBadQueries(t, s, base) })
}

func testUsageMulti(t *testing.T, s recorder.MultiStats, base time.Time) {
	ctx := context.Background()
	for _, w := range windows(base) {
		var qs []recorder.Query
		for _, k := range allKeys {
			qs = append(qs, recorder.Query{Since: w.since, Until: w.until, KeyID: k})
		}
		for _, q := range modelQueries() {
			q.Since, q.Until, q.Status = w.since, w.until, status.Unknown
			qs = append(qs, q)
		}
		for _, q := range qs {
			got, err := s.UsageByKeyMulti(ctx, q, allFilters)
			if err != nil {
				t.Errorf("UsageByKeyMulti(%s): %v", describe(q), err)
				continue
			}
			if len(got) != len(allFilters) {
				t.Errorf("UsageByKeyMulti(%s) has %d maps, want %d", describe(q), len(got), len(allFilters))
				continue
			}
			for i, f := range allFilters {
				q.Status = f
				want, err := s.UsageByKey(ctx, q)
				if err != nil {
					t.Fatalf("UsageByKey(%s): %v", describe(q), err)
				}
				if !maps.Equal(got[i], want) {
					t.Errorf("UsageByKeyMulti(%s)[%d] = %v, UsageByKey says %v", describe(q), i, got[i], want)
				}
			}
		}
	}
	got, err := s.UsageByKeyMulti(ctx, recorder.Query{}, nil)
	if err != nil || len(got) != 0 {
		t.Errorf("UsageByKeyMulti(everything, no filter) = %v, %v; want no map", got, err)
	}
}

func testSeriesMulti(t *testing.T, s recorder.MultiStats, base time.Time) {
	ctx := context.Background()
	for _, c := range seriesCases(base) {
		q := c.q
		q.Status = status.Unknown
		got, err := s.SeriesMulti(ctx, q, c.step, allFilters)
		if err != nil {
			t.Errorf("%s: SeriesMulti(%s, %v): %v", c.name, describe(q), c.step, err)
			continue
		}
		if len(got) != len(allFilters) {
			t.Errorf("%s: SeriesMulti(%s, %v) has %d maps, want %d", c.name, describe(q), c.step, len(got), len(allFilters))
			continue
		}
		for i, f := range allFilters {
			q.Status = f
			want, err := s.Series(ctx, q, c.step)
			if err != nil {
				t.Fatalf("%s: Series(%s, %v): %v", c.name, describe(q), c.step, err)
			}
			if !slices.Equal(slices.Sorted(maps.Keys(got[i])), slices.Sorted(maps.Keys(want))) {
				t.Errorf("%s: SeriesMulti(%s, %v)[%d] has keys %q, Series %q", c.name, describe(q), c.step, i,
					slices.Sorted(maps.Keys(got[i])), slices.Sorted(maps.Keys(want)))
				continue
			}
			for k, wbs := range want {
				if gbs := got[i][k]; !slices.EqualFunc(gbs, wbs, func(a, b recorder.Bucket) bool { return a.Start.Equal(b.Start) && a.Count == b.Count }) {
					t.Errorf("%s: SeriesMulti(%s, %v)[%d][%q] = %v, Series says %v", c.name, describe(q), c.step, i, k, gbs, wbs)
				}
			}
		}
	}
}

func testLatencySeries(t *testing.T, s recorder.MultiStats, base time.Time) {
	ctx := context.Background()
	checked := 0
	for _, c := range seriesCases(base) {
		step := c.step
		if step == 0 {
			step = time.Minute
		}
		for _, f := range classFilters {
			q := c.q
			q.Status = f
			got, err := s.LatencySeries(ctx, q, c.step, nil)
			if err != nil {
				t.Errorf("%s: LatencySeries(%s, %v): %v", c.name, describe(q), c.step, err)
				continue
			}
			whole, err := s.LatencyByKey(ctx, q)
			if err != nil {
				t.Fatalf("LatencyByKey(%s): %v", describe(q), err)
			}
			if !slices.Equal(slices.Sorted(maps.Keys(got)), slices.Sorted(maps.Keys(whole))) {
				t.Errorf("%s: LatencySeries(%s, %v) has keys %q, LatencyByKey over the range %q", c.name, describe(q), c.step,
					slices.Sorted(maps.Keys(got)), slices.Sorted(maps.Keys(whole)))
				continue
			}
			// The buckets, as Series aligns them.
			series, err := s.Series(ctx, q, c.step)
			if err != nil {
				t.Fatalf("Series(%s): %v", describe(q), err)
			}
			for k, bs := range got {
				if len(bs) != len(series[k]) {
					t.Errorf("%s: LatencySeries(%s, %v)[%q] has %d buckets, Series %d", c.name, describe(q), c.step, k, len(bs), len(series[k]))
					continue
				}
				for j, b := range bs {
					if !b.Start.Equal(series[k][j].Start) {
						t.Errorf("%s: LatencySeries(%s, %v)[%q][%d] starts at %v, Series's bucket at %v", c.name, describe(q), c.step, k, j, b.Start, series[k][j].Start)
						continue
					}
					bq := q
					bq.KeyID = k
					bq.Since, bq.Until = later(b.Start, q.Since), earlier(b.Start.Add(step), q.Until)
					want := recorder.Latency{}
					if m, err := s.LatencyByKey(ctx, bq); err != nil {
						t.Fatalf("LatencyByKey(%s): %v", describe(bq), err)
					} else if l, ok := m[k]; ok {
						want = l
					}
					if b.Count != want.Count {
						t.Errorf("%s: LatencySeries(%s, %v)[%q][%d].Count = %d, LatencyByKey(%s) says %d", c.name, describe(q), c.step, k, j, b.Count, describe(bq), want.Count)
						continue
					}
					if b.Count == 0 {
						if b.Latency != (recorder.Latency{}) {
							t.Errorf("%s: LatencySeries(%s, %v)[%q][%d] = %+v for an empty bucket, want the zero Latency", c.name, describe(q), c.step, k, j, b.Latency)
						}
						continue
					}
					checked++
					if !near(b.P50, want.P50) || !near(b.P90, want.P90) || !near(b.P99, want.P99) {
						t.Errorf("%s: LatencySeries(%s, %v)[%q][%d] = %+v, LatencyByKey(%s) says %+v", c.name, describe(q), c.step, k, j, b.Latency, describe(bq), want)
					}
				}
			}
		}
	}
	if checked < 50 {
		t.Errorf("only %d latency buckets checked", checked)
	}
	// A set of keys: their part of the answer for every key.
	q := recorder.Query{Since: base, Until: base.Add(3 * time.Hour), Status: status.Success}
	all, err := s.LatencySeries(ctx, q, time.Hour, nil)
	if err != nil {
		t.Fatalf("LatencySeries(%s, 1h): %v", describe(q), err)
	}
	keys := []string{KeyAlpha, KeyGamma, "no such key"}
	got, err := s.LatencySeries(ctx, q, time.Hour, keys)
	if err != nil {
		t.Fatalf("LatencySeries(%s, 1h, %q): %v", describe(q), keys, err)
	}
	want := map[string][]recorder.LatencyBucket{}
	for _, k := range keys {
		if bs, ok := all[k]; ok {
			want[k] = bs
		}
	}
	if len(want) != 2 || !maps.EqualFunc(got, want, func(a, b []recorder.LatencyBucket) bool {
		return slices.EqualFunc(a, b, func(x, y recorder.LatencyBucket) bool { return x.Start.Equal(y.Start) && x.Latency == y.Latency })
	}) {
		t.Errorf("LatencySeries(%s, 1h, %q) = %v, want %v (the answer for every key, cut to those)", describe(q), keys, got, want)
	}
}

func later(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

func earlier(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}

func testMultiBadQueries(t *testing.T, s recorder.MultiStats, base time.Time) {
	ctx := context.Background()
	filters := []status.Status{status.Unknown, status.Success}
	for _, c := range badSeriesCases(base) {
		q := recorder.Query{Since: c.since, Until: c.until}
		if got, err := s.SeriesMulti(ctx, q, c.step, filters); !errors.Is(err, recorder.ErrBadQuery) {
			t.Errorf("%s: SeriesMulti = %d maps, %v; want an error wrapping recorder.ErrBadQuery", c.name, len(got), err)
		}
		if got, err := s.LatencySeries(ctx, q, c.step, nil); !errors.Is(err, recorder.ErrBadQuery) {
			t.Errorf("%s: LatencySeries = %d keys, %v; want an error wrapping recorder.ErrBadQuery", c.name, len(got), err)
		}
	}
	q := recorder.Query{Since: base, Until: base.Add(time.Hour), Status: status.Success}
	if _, err := s.UsageByKeyMulti(ctx, q, filters); !errors.Is(err, recorder.ErrBadQuery) {
		t.Errorf("UsageByKeyMulti with the query's Status set: %v, want an error wrapping recorder.ErrBadQuery", err)
	}
	if _, err := s.SeriesMulti(ctx, q, time.Minute, filters); !errors.Is(err, recorder.ErrBadQuery) {
		t.Errorf("SeriesMulti with the query's Status set: %v, want an error wrapping recorder.ErrBadQuery", err)
	}
	q = recorder.Query{Since: base, Until: base.Add(time.Hour), KeyID: KeyAlpha}
	if _, err := s.LatencySeries(ctx, q, time.Minute, []string{KeyBeta}); !errors.Is(err, recorder.ErrBadQuery) {
		t.Errorf("LatencySeries with keys and the query's KeyID set: %v, want an error wrapping recorder.ErrBadQuery", err)
	}
}

// multiErrors checks the MultiStats methods' errors with a canceled
// context and after Close.
func multiErrors(ctx context.Context, s Store, base time.Time, check func(method string, err error)) {
	m, ok := s.(recorder.MultiStats)
	if !ok {
		return
	}
	q := recorder.Query{Since: base, Until: base.Add(time.Hour)}
	filters := []status.Status{status.Unknown, status.Success}
	_, err := m.UsageByKeyMulti(ctx, q, filters)
	check("UsageByKeyMulti", err)
	_, err = m.SeriesMulti(ctx, q, time.Minute, filters)
	check("SeriesMulti", err)
	_, err = m.LatencySeries(ctx, q, time.Minute, nil)
	check("LatencySeries", err)
}

// multiConsistent checks, while events are recorded, that
// UsageByKeyMulti counts each event under every class filter it matches
// or none: per key, the three classes add up to every event.
func multiConsistent(ctx context.Context, s Store, q recorder.Query) error {
	m, ok := s.(recorder.MultiStats)
	if !ok {
		return nil
	}
	got, err := m.UsageByKeyMulti(ctx, q, classFilters)
	if err != nil || len(got) != len(classFilters) {
		return err
	}
	for k, n := range got[0] {
		if sum := got[1][k] + got[2][k] + got[3][k]; sum != n {
			return errors.New("UsageByKeyMulti while recording: key " + k + ": the class counts do not add up to every event: " +
				"a multi answer must count an event under every filter it matches or none")
		}
	}
	return nil
}
