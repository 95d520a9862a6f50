package dashboard

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/apipool-ng/apipool/recorder"
	"github.com/apipool-ng/apipool/status"
)

// multiOf returns s's recorder.MultiStats: s itself when it implements it
// (a store that answers each of the dashboard's calls in one or two
// queries), else a fallback that makes one Stats call per filter or
// bucket, at most four at a time.
func multiOf(s recorder.Stats) recorder.MultiStats {
	if s == nil {
		return nil
	}
	if m, ok := s.(recorder.MultiStats); ok {
		return m
	}
	return fallback{s}
}

// fallback answers recorder.MultiStats through Stats calls.
type fallback struct{ recorder.Stats }

// fallbackParallel bounds the Stats calls of one fallback answer.
const fallbackParallel = 4

func (f fallback) UsageByKeyMulti(ctx context.Context, q recorder.Query, filters []status.Status) ([]map[string]int64, error) {
	outs := make([]map[string]int64, len(filters))
	fns := make([]func() error, len(filters))
	for i, st := range filters {
		fns[i] = func() (err error) { outs[i], err = f.UsageByKey(ctx, with(q, st)); return }
	}
	if err := parallel(fallbackParallel, fns...); err != nil {
		return nil, err
	}
	return outs, nil
}

func (f fallback) SeriesMulti(ctx context.Context, q recorder.Query, step time.Duration, filters []status.Status) ([]map[string][]recorder.Bucket, error) {
	outs := make([]map[string][]recorder.Bucket, len(filters))
	fns := make([]func() error, len(filters))
	for i, st := range filters {
		fns[i] = func() (err error) { outs[i], err = f.Series(ctx, with(q, st), step); return }
	}
	if err := parallel(fallbackParallel, fns...); err != nil {
		return nil, err
	}
	return outs, nil
}

// LatencySeries makes one LatencyByKey call per bucket.
func (f fallback) LatencySeries(ctx context.Context, q recorder.Query, step time.Duration, keys []string) (map[string][]recorder.LatencyBucket, error) {
	if step == 0 {
		step = time.Minute
	}
	if q.Since.IsZero() || q.Until.IsZero() || !q.Until.After(q.Since) || step < time.Second || step%time.Second != 0 {
		return nil, fmt.Errorf("%w: LatencySeries needs Since before Until and a step of whole seconds", recorder.ErrBadQuery)
	}
	st := int64(step / time.Second)
	first := floorDiv(q.Since.Unix(), st)
	last := floorDiv(q.Until.Add(-time.Nanosecond).Unix(), st)
	if last-first >= 10_000 {
		return nil, fmt.Errorf("%w: %d steps of %v, more than the fallback's 10000", recorder.ErrBadQuery, last-first+1, step)
	}
	n := int(last - first + 1)
	lats := make([]map[string]recorder.Latency, n)
	fns := make([]func() error, n)
	for i := range n {
		bq := q
		start := time.Unix((first+int64(i))*st, 0).UTC()
		if start.After(bq.Since) {
			bq.Since = start
		}
		if end := start.Add(step); end.Before(bq.Until) {
			bq.Until = end
		}
		fns[i] = func() (err error) { lats[i], err = f.LatencyByKey(ctx, bq); return }
	}
	if err := parallel(fallbackParallel, fns...); err != nil {
		return nil, err
	}
	out := map[string][]recorder.LatencyBucket{}
	for i, m := range lats {
		for k, l := range m {
			if l.Count <= 0 || len(keys) > 0 && !slices.Contains(keys, k) {
				continue
			}
			bs := out[k]
			if bs == nil {
				bs = make([]recorder.LatencyBucket, n)
				for j := range bs {
					bs[j].Start = time.Unix((first+int64(j))*st, 0).UTC()
				}
				out[k] = bs
			}
			bs[i].Latency = l
		}
	}
	return out, nil
}

func floorDiv(a, b int64) int64 {
	q := a / b
	if a%b != 0 && (a < 0) != (b < 0) {
		q--
	}
	return q
}
