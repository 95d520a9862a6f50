package memory

import (
	"context"
	"fmt"
	"math"
	"time"

	"github.com/apipool-ng/apipool/recorder"
	"github.com/apipool-ng/apipool/status"
)

var _ recorder.MultiStats = (*Store)(nil)

// multiFilters checks that q leaves the status to filters, and resolves
// them.
func multiFilters(q recorder.Query, statuses []status.Status) ([]filter, error) {
	if q.Status != status.Unknown {
		return nil, fmt.Errorf("%w: the query's Status must be Unknown: the filters choose the statuses", recorder.ErrBadQuery)
	}
	fs := make([]filter, len(statuses))
	for i, f := range statuses {
		var err error
		if fs[i], err = newFilter(f); err != nil {
			return nil, err
		}
	}
	return fs, nil
}

// UsageByKeyMulti returns, at index i, what UsageByKey returns for q with
// Status filters[i], counting each key's events under its lock once (see
// recorder.MultiStats). q.Status must be Unknown.
func (s *Store) UsageByKeyMulti(ctx context.Context, q recorder.Query, filters []status.Status) ([]map[string]int64, error) {
	if err := q.Check(); err != nil {
		return nil, err
	}
	fs, err := multiFilters(q, filters)
	if err != nil {
		return nil, err
	}
	w := windowOf(q)
	outs := make([]map[string]int64, len(fs))
	for i := range outs {
		outs[i] = map[string]int64{}
	}
	err = s.each(ctx, q, func(id string, g group) {
		for i := range fs {
			if n := g.count(w, &fs[i]); n > 0 {
				outs[i][id] = n
			}
		}
	})
	if err != nil {
		return nil, err
	}
	return outs, nil
}

// SeriesMulti returns, at index i, what Series returns for q with Status
// filters[i] (see recorder.MultiStats). q.Status must be Unknown; the
// limits are Series's, [MaxSeriesTotal] counting the buckets of every
// filter.
func (s *Store) SeriesMulti(ctx context.Context, q recorder.Query, step time.Duration, filters []status.Status) ([]map[string][]recorder.Bucket, error) {
	if _, err := multiFilters(q, filters); err != nil {
		return nil, err
	}
	return s.series(ctx, q, step, filters)
}

// LatencySeries returns per key the latency of the matching events in
// buckets of step (a minute when 0), each bucket's as LatencyByKey gives
// it for the bucket cut to [q.Since, q.Until) (see recorder.MultiStats).
// The bounds and step are checked as Series checks them, and the result
// may hold at most [MaxSeriesTotal] buckets over all keys. keys, when not
// empty, limits the answer to those keys (q.KeyID must then be empty).
func (s *Store) LatencySeries(ctx context.Context, q recorder.Query, step time.Duration, keys []string) (map[string][]recorder.LatencyBucket, error) {
	if step == 0 {
		step = time.Minute
	}
	first, st, nb, err := seriesRange(q, step)
	if err != nil {
		return nil, err
	}
	f, err := newFilter(q.Status)
	if err != nil {
		return nil, err
	}
	var only map[string]bool
	if len(keys) > 0 {
		if q.KeyID != "" {
			return nil, fmt.Errorf("%w: LatencySeries takes keys or a query's KeyID, not both", recorder.ErrBadQuery)
		}
		only = make(map[string]bool, len(keys))
		for _, k := range keys {
			only[k] = true
		}
	}
	w := windowOf(q)
	out := map[string][]recorder.LatencyBucket{}
	mg := new(merged)
	var total int64
	err = s.each(ctx, q, func(id string, g group) {
		if total > MaxSeriesTotal || only != nil && !only[id] {
			return
		}
		var bs []recorder.LatencyBucket
		// Only the buckets that may hold the key's events.
		lo, hi := int64(math.MaxInt64), int64(math.MinInt64)
		for _, p := range g {
			lo, hi = min(lo, max(w.a, p.sp.mLo*60)), max(hi, min(w.b, p.sp.sHi+1))
		}
		for t := lo; t < hi; {
			i := (t - first) / st
			end := min(first+(i+1)*st, hi)
			bw := window{t, end}
			t = end
			n := g.count(bw, &f)
			if n <= 0 {
				continue
			}
			if bs == nil {
				total += nb
				if total > MaxSeriesTotal {
					return
				}
				bs = make([]recorder.LatencyBucket, nb)
				for j := range bs {
					bs[j].Start = time.Unix(first+int64(j)*st, 0).UTC()
				}
			}
			mg.reset()
			g.latency(bw, &f, mg)
			bs[i].Latency = recorder.Latency{Count: n, P50: mg.quantile(0.5), P90: mg.quantile(0.9), P99: mg.quantile(0.99)}
		}
		if bs != nil {
			out[id] = bs
		}
	})
	if err != nil {
		return nil, err
	}
	if total > MaxSeriesTotal {
		return nil, fmt.Errorf("%w: the series would hold more than %d buckets; select a key or a coarser step", recorder.ErrBadQuery, MaxSeriesTotal)
	}
	return out, nil
}
