package clickhouse

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/apipool-ng/apipool/recorder"
	"github.com/apipool-ng/apipool/status"
)

// The recorder.MultiStats methods: one query each, whatever the number of
// filters or buckets. The counts of the multi-filter methods are grouped
// by status_id on the server and sorted into the filters here, so an event
// counts under every filter it matches or under none. They read the
// tables as the Stats methods do (the rollup for the whole minutes of
// windows of at least Config.RollupAfter), so their answers are those of
// the Stats calls they stand for; quantiles may differ where those are
// estimated (beyond 8192 events of a key in a bucket), as merging the same
// states in another order may.

var _ recorder.MultiStats = (*Store)(nil)

// multiQuery checks that q leaves the status to the filters.
func multiQuery(q recorder.Query) error {
	if q.Status != status.Unknown {
		return fmt.Errorf("%w: the query's Status must be Unknown: the filters choose the statuses", recorder.ErrBadQuery)
	}
	return nil
}

// matching returns, for each status id, the indexes of the filters it
// matches.
func matching(filters []status.Status) [256][]int {
	var m [256][]int
	for id := range m {
		for i, f := range filters {
			if status.Status(id).Matches(f) {
				m[id] = append(m[id], i)
			}
		}
	}
	return m
}

// UsageByKeyMulti returns, at index i, what UsageByKey returns for q with
// Status filters[i], from one query (see recorder.MultiStats). q.Status
// must be Unknown.
func (s *Store) UsageByKeyMulti(ctx context.Context, q recorder.Query, filters []status.Status) ([]map[string]int64, error) {
	if err := q.Check(); err != nil {
		return nil, err
	}
	if err := multiQuery(q); err != nil {
		return nil, err
	}
	st, err := s.begin(ctx)
	if err != nil {
		return nil, err
	}
	outs := make([]map[string]int64, len(filters))
	for i := range outs {
		outs[i] = map[string]int64{}
	}
	w := toWindow(q)
	if w.empty || len(filters) == 0 {
		return outs, nil
	}
	m := matching(filters)
	p := planQuery(st, q, w, s.cfg.RollupAfter, 0)
	err = s.query(ctx, usageByKeyStatusSQL(st, p), func(r driver.Rows) error {
		var k string
		var id uint8
		var n uint64
		if err := r.Scan(&k, &id, &n); err != nil {
			return err
		}
		if n == 0 {
			return nil
		}
		for _, i := range m[id] {
			outs[i][k] += int64(n)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return outs, nil
}

// SeriesMulti returns, at index i, what Series returns for q with Status
// filters[i], from one query (see recorder.MultiStats). q.Status must be
// Unknown; bounds and step are checked as Series checks them.
func (s *Store) SeriesMulti(ctx context.Context, q recorder.Query, step time.Duration, filters []status.Status) ([]map[string][]recorder.Bucket, error) {
	first, last, stepSec, err := seriesRange(q, step)
	if err != nil {
		return nil, err
	}
	if err := multiQuery(q); err != nil {
		return nil, err
	}
	st, err := s.begin(ctx)
	if err != nil {
		return nil, err
	}
	outs := make([]map[string][]recorder.Bucket, len(filters))
	for i := range outs {
		outs[i] = map[string][]recorder.Bucket{}
	}
	w := toWindow(q)
	if w.empty || len(filters) == 0 {
		return outs, nil
	}
	m := matching(filters)
	n := int(last - first + 1)
	p := planQuery(st, q, w, s.cfg.RollupAfter, stepSec)
	err = s.query(ctx, seriesStatusSQL(st, p, stepSec), func(r driver.Rows) error {
		var k string
		var b int64
		var id uint8
		var c uint64
		if err := r.Scan(&k, &b, &id, &c); err != nil {
			return err
		}
		if c == 0 || b < first || b > last {
			return nil
		}
		for _, i := range m[id] {
			bs := outs[i][k]
			if bs == nil {
				bs = make([]recorder.Bucket, n)
				for j := range bs {
					bs[j].Start = time.Unix((first+int64(j))*stepSec, 0).UTC()
				}
				outs[i][k] = bs
			}
			bs[b-first].Count += int64(c)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return outs, nil
}

// LatencySeries returns per key the latency of the matching events in
// buckets of step (a minute when 0), each bucket's as LatencyByKey gives
// it for the bucket cut to [q.Since, q.Until), from one query (see
// recorder.MultiStats). Bounds and step are checked as Series checks them.
// keys, when not empty, limits the query to those keys (q.KeyID must then
// be empty).
func (s *Store) LatencySeries(ctx context.Context, q recorder.Query, step time.Duration, keys []string) (map[string][]recorder.LatencyBucket, error) {
	first, last, stepSec, err := seriesRange(q, step)
	if err != nil {
		return nil, err
	}
	var extra []string
	if len(keys) > 0 {
		if q.KeyID != "" {
			return nil, fmt.Errorf("%w: LatencySeries takes keys or a query's KeyID, not both", recorder.ErrBadQuery)
		}
		quoted := make([]string, len(keys))
		for i, k := range keys {
			quoted[i] = quoteString(cleanString(k))
		}
		extra = append(extra, "key_id IN ("+strings.Join(quoted, ", ")+")")
	}
	st, err := s.begin(ctx)
	if err != nil {
		return nil, err
	}
	out := map[string][]recorder.LatencyBucket{}
	w := toWindow(q)
	if w.empty {
		return out, nil
	}
	n := int(last - first + 1)
	p := planQuery(st, q, w, s.cfg.RollupAfter, stepSec, extra...)
	err = s.query(ctx, latencySeriesSQL(st, p, stepSec), func(r driver.Rows) error {
		var k string
		var b int64
		var c uint64
		var qs []float64
		if err := r.Scan(&k, &b, &c, &qs); err != nil {
			return err
		}
		if c == 0 || len(qs) != 3 || b < first || b > last {
			return nil
		}
		bs := out[k]
		if bs == nil {
			bs = make([]recorder.LatencyBucket, n)
			for j := range bs {
				bs[j].Start = time.Unix((first+int64(j))*stepSec, 0).UTC()
			}
			out[k] = bs
		}
		bs[b-first].Latency = recorder.Latency{Count: int64(c), P50: micros(qs[0]), P90: micros(qs[1]), P99: micros(qs[2])}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// usageByKeyStatusSQL returns rows of (key_id, status_id, count).
func usageByKeyStatusSQL(st *tableState, p plan) string {
	if !p.split {
		return "SELECT key_id, status_id, count() FROM " + st.table + p.raw + " GROUP BY key_id, status_id"
	}
	parts := []string{"SELECT key_id, status_id, countMerge(events) AS n FROM " + st.rollupTbl + p.roll + " GROUP BY key_id, status_id"}
	if p.raw != "" {
		parts = append(parts, "SELECT key_id, status_id, count() AS n FROM "+st.table+p.raw+" GROUP BY key_id, status_id")
	}
	return "SELECT key_id, status_id, sum(n) FROM (" + strings.Join(parts, " UNION ALL ") + ") GROUP BY key_id, status_id"
}

// rawBucket is the bucket of an event-table row: its Unix time in seconds
// divided by the step.
func rawBucket(stepSec int64) string {
	return fmt.Sprintf("toInt64(intDiv(toUInt32(toDateTime(event_time)), %d))", stepSec)
}

// rollupBucket is the bucket of a rollup row.
func rollupBucket(stepSec int64) string {
	return fmt.Sprintf("toInt64(intDiv(toUInt32(minute), %d))", stepSec)
}

// seriesStatusSQL returns rows of (key_id, bucket, status_id, count).
func seriesStatusSQL(st *tableState, p plan, stepSec int64) string {
	if !p.split {
		return "SELECT key_id, " + rawBucket(stepSec) + " AS b, status_id, count() FROM " + st.table + p.raw + " GROUP BY key_id, b, status_id"
	}
	parts := []string{"SELECT key_id, " + rollupBucket(stepSec) + " AS b, status_id, countMerge(events) AS n FROM " + st.rollupTbl + p.roll +
		" GROUP BY key_id, b, status_id"}
	if p.raw != "" {
		parts = append(parts, "SELECT key_id, "+rawBucket(stepSec)+" AS b, status_id, count() AS n FROM "+st.table+p.raw+" GROUP BY key_id, b, status_id")
	}
	return "SELECT key_id, b, status_id, sum(n) FROM (" + strings.Join(parts, " UNION ALL ") + ") GROUP BY key_id, b, status_id"
}

// latencySeriesSQL returns rows of (key_id, bucket, count, quantiles), the
// quantiles as latencySQL's.
func latencySeriesSQL(st *tableState, p plan, stepSec int64) string {
	if !p.split {
		return "SELECT key_id, " + rawBucket(stepSec) + " AS b, count(), quantiles(0.5, 0.9, 0.99)(latency_us) FROM " + st.table + p.raw +
			" GROUP BY key_id, b"
	}
	parts := []string{"SELECT key_id, " + rollupBucket(stepSec) + " AS b, events AS c, latency AS l FROM " + st.rollupTbl + p.roll}
	if p.raw != "" {
		parts = append(parts, "SELECT key_id, "+rawBucket(stepSec)+" AS b, countState() AS c, "+rollupQuantiles+"State"+rollupQuantileLevels+
			"(latency_us) AS l FROM "+st.table+p.raw+" GROUP BY key_id, b")
	}
	return "SELECT key_id, b, countMerge(c), arrayMap(x -> toFloat64(x), " + rollupQuantiles + "Merge" + rollupQuantileLevels + "(l)) FROM (" +
		strings.Join(parts, " UNION ALL ") + ") GROUP BY key_id, b"
}
