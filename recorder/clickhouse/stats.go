package clickhouse

import (
	"context"
	"fmt"
	"math"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/apipool-ng/apipool/recorder"
)

// The recorder.Stats methods. They read what the server holds: events
// still queued are not counted until written (see Flush). Windows of at
// least Config.RollupAfter read the per-minute rollup for their whole
// minutes. Latency quantiles come from ClickHouse's quantiles function:
// exact (interpolated) up to 8192 events per key, estimated from a
// reservoir sample beyond.

// maxSeriesBuckets bounds the buckets of a Series.
const maxSeriesBuckets = 1_000_000

// begin checks the store and ctx, and returns the tables' state.
func (s *Store) begin(ctx context.Context) (*tableState, error) {
	if s.closed.Load() {
		return nil, recorder.ErrClosed
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	st, err := s.setup(ctx)
	if err != nil {
		return nil, s.queryErr(ctx, err)
	}
	return st, nil
}

// queryErr makes a query's error wrap ctx's when ctx ended, so callers can
// tell cancellation from failure.
func (s *Store) queryErr(ctx context.Context, err error) error {
	if cerr := ctx.Err(); cerr != nil {
		return fmt.Errorf("apipool: clickhouse: %w (%v)", cerr, err)
	}
	if s.closed.Load() {
		return fmt.Errorf("%w (%v)", recorder.ErrClosed, err)
	}
	return classify(err)
}

// query runs sql and calls scan for each row.
func (s *Store) query(ctx context.Context, sql string, scan func(driver.Rows) error) error {
	rows, err := s.conn.Query(ctx, sql)
	if err != nil {
		return s.queryErr(ctx, err)
	}
	defer rows.Close()
	for rows.Next() {
		if err := scan(rows); err != nil {
			return s.queryErr(ctx, err)
		}
	}
	if err := rows.Err(); err != nil {
		return s.queryErr(ctx, err)
	}
	return nil
}

// UsageByKey returns the number of matching events per key ID.
func (s *Store) UsageByKey(ctx context.Context, q recorder.Query) (map[string]int64, error) {
	if err := q.Check(); err != nil {
		return nil, err
	}
	st, err := s.begin(ctx)
	if err != nil {
		return nil, err
	}
	out := map[string]int64{}
	w := toWindow(q)
	if w.empty {
		return out, nil
	}
	p := planQuery(st, q, w, s.cfg.RollupAfter, 0)
	err = s.query(ctx, usageByKeySQL(st, p), func(r driver.Rows) error {
		var k string
		var n uint64
		if err := r.Scan(&k, &n); err != nil {
			return err
		}
		if n > 0 {
			out[k] = int64(n)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// UsageCount returns the number of matching events.
func (s *Store) UsageCount(ctx context.Context, q recorder.Query) (int64, error) {
	if err := q.Check(); err != nil {
		return 0, err
	}
	st, err := s.begin(ctx)
	if err != nil {
		return 0, err
	}
	w := toWindow(q)
	if w.empty {
		return 0, nil
	}
	p := planQuery(st, q, w, s.cfg.RollupAfter, 0)
	var n uint64
	err = s.query(ctx, usageCountSQL(st, p), func(r driver.Rows) error { return r.Scan(&n) })
	return int64(n), err
}

// LatencyByKey returns latency quantiles per key over matching events.
// Latencies are kept in whole microseconds.
func (s *Store) LatencyByKey(ctx context.Context, q recorder.Query) (map[string]recorder.Latency, error) {
	if err := q.Check(); err != nil {
		return nil, err
	}
	st, err := s.begin(ctx)
	if err != nil {
		return nil, err
	}
	out := map[string]recorder.Latency{}
	w := toWindow(q)
	if w.empty {
		return out, nil
	}
	p := planQuery(st, q, w, s.cfg.RollupAfter, 0)
	err = s.query(ctx, latencySQL(st, p), func(r driver.Rows) error {
		var k string
		var n uint64
		var qs []float64
		if err := r.Scan(&k, &n, &qs); err != nil {
			return err
		}
		if n == 0 || len(qs) != 3 {
			return nil
		}
		out[k] = recorder.Latency{Count: int64(n), P50: micros(qs[0]), P90: micros(qs[1]), P99: micros(qs[2])}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

func micros(v float64) time.Duration {
	if math.IsNaN(v) || v < 0 {
		return 0
	}
	return time.Duration(math.Round(v * float64(time.Microsecond)))
}

// Series returns per key the count of matching events in buckets of step
// (a minute when 0), aligned to multiples of step since the Unix epoch,
// from the bucket holding q.Since to the one holding the last instant
// before q.Until, empty buckets included. Both bounds must be set, Until
// after Since; step must be a whole number of seconds, and the range
// under a million steps.
func (s *Store) Series(ctx context.Context, q recorder.Query, step time.Duration) (map[string][]recorder.Bucket, error) {
	first, last, stepSec, err := seriesRange(q, step)
	if err != nil {
		return nil, err
	}
	st, err := s.begin(ctx)
	if err != nil {
		return nil, err
	}
	out := map[string][]recorder.Bucket{}
	w := toWindow(q)
	if w.empty {
		return out, nil
	}
	n := int(last - first + 1)
	p := planQuery(st, q, w, s.cfg.RollupAfter, stepSec)
	err = s.query(ctx, seriesSQL(st, p, stepSec), func(r driver.Rows) error {
		var k string
		var b int64
		var c uint64
		if err := r.Scan(&k, &b, &c); err != nil {
			return err
		}
		if c == 0 || b < first || b > last {
			return nil
		}
		bs := out[k]
		if bs == nil {
			bs = make([]recorder.Bucket, n)
			for i := range bs {
				bs[i].Start = time.Unix((first+int64(i))*stepSec, 0).UTC()
			}
			out[k] = bs
		}
		bs[b-first].Count += int64(c)
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// seriesRange checks a series' bounds and step (a minute when 0), and
// returns its first and last buckets (Unix seconds divided by the step)
// and its step in seconds.
func seriesRange(q recorder.Query, step time.Duration) (first, last, stepSec int64, err error) {
	if step == 0 {
		step = time.Minute
	}
	switch {
	case q.Since.IsZero() || q.Until.IsZero():
		return 0, 0, 0, fmt.Errorf("%w: Series needs both Since and Until", recorder.ErrBadQuery)
	case !q.Until.After(q.Since):
		return 0, 0, 0, fmt.Errorf("%w: Until %v is not after Since %v", recorder.ErrBadQuery, q.Until, q.Since)
	case step < time.Second || step%time.Second != 0:
		return 0, 0, 0, fmt.Errorf("%w: step %v is not a positive whole number of seconds", recorder.ErrBadQuery, step)
	}
	stepSec = int64(step / time.Second)
	first = floorDiv(q.Since.Unix(), stepSec)
	last = floorDiv(q.Until.Add(-time.Nanosecond).Unix(), stepSec)
	if last-first+1 >= maxSeriesBuckets || last < first {
		return 0, 0, 0, fmt.Errorf("%w: %d steps of %v, the limit is %d", recorder.ErrBadQuery, last-first+1, step, maxSeriesBuckets-1)
	}
	return first, last, stepSec, nil
}
