package sql

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/apipool-ng/apipool/recorder"
	"github.com/apipool-ng/apipool/status"
)

// The recorder.Stats methods. They read what the database holds: events
// still queued are not counted until written (see Flush). A window's whole
// minutes are read from the per-minute rollup, its partial minutes at the
// ends from the event table, so long windows cost about as much as short
// ones: UsageByKey, UsageCount and Series read the counts rollup (per
// minute, key and status), LatencyByKey the per-minute rollup, which also
// has the latency bins. Latency quantiles are computed from the latency bins (see
// SchemaVersion and the package documentation): within 6.25% of the exact
// nearest-rank quantile.

// maxSeriesBuckets bounds the buckets of a Series.
const maxSeriesBuckets = 1_000_000

// part is a piece of a window: [lo, hi) in Unix milliseconds, read from
// the rollup or the event table.
type part struct {
	rollup bool
	lo, hi int64
}

// plan splits a query's window into parts. It returns none for an empty
// window. stepMS, when not 0, is a Series step: the rollup serves only
// steps of whole minutes.
func plan(q recorder.Query, stepMS int64) []part {
	lo, hi := int64(0), int64(maxEventMS+1)
	if !q.Since.IsZero() {
		lo = ceilMS(q.Since)
	}
	if !q.Until.IsZero() {
		hi = ceilMS(q.Until)
	}
	lo, hi = max(lo, 0), min(hi, maxEventMS+1)
	if lo >= hi {
		return nil
	}
	const minute = 60_000
	if stepMS%minute != 0 {
		return []part{{lo: lo, hi: hi}}
	}
	mlo := (lo + minute - 1) / minute * minute
	mhi := hi / minute * minute
	if mlo >= mhi {
		return []part{{lo: lo, hi: hi}}
	}
	var ps []part
	if lo < mlo {
		ps = append(ps, part{lo: lo, hi: mlo})
	}
	ps = append(ps, part{rollup: true, lo: mlo, hi: mhi})
	if mhi < hi {
		ps = append(ps, part{lo: mhi, hi: hi})
	}
	return ps
}

// ceilMS returns t in Unix milliseconds, rounded up: an event stored at
// millisecond m happened in [m, m+1ms), so it is at or after t when m >=
// ceil(t), and before t when m < ceil(t).
func ceilMS(t time.Time) int64 {
	ms := t.UnixMilli()
	if t.Sub(time.UnixMilli(ms)) > 0 {
		ms++
	}
	return ms
}

// statusFilter returns the SQL condition on status_id for a filter, or ""
// for none. Filters by class match every status of the class, as
// status.Status.Matches does.
func statusFilter(f status.Status) (string, error) {
	switch f {
	case status.Unknown:
		return "", nil
	case status.Success, status.ReachLimit:
		return "status_id = " + strconv.Itoa(int(f)), nil
	case status.Failed:
		return fmt.Sprintf("status_id NOT IN (%d, %d, %d)", status.Unknown, status.Success, status.ReachLimit), nil
	}
	if !f.Valid() {
		return "", fmt.Errorf("%w: undefined status %d", recorder.ErrBadQuery, int(f))
	}
	return "status_id = " + strconv.Itoa(int(f)), nil
}

// selectParts builds a UNION ALL of one SELECT per part, each selecting
// cols (from the event table) or rcols (from rollup, the per-minute
// rollup or the counts rollup), with the query's filters (key, status,
// model, client), grouped by group; and the arguments.
func (s *Store) selectParts(q recorder.Query, ps []part, rollup, cols, rcols, group string) (string, []any, error) {
	sf, err := statusFilter(q.Status)
	if err != nil {
		return "", nil, err
	}
	var b strings.Builder
	var args []any
	for i, p := range ps {
		if i > 0 {
			b.WriteString(" UNION ALL ")
		}
		tcol := "event_time_ms"
		b.WriteString("SELECT ")
		if p.rollup {
			tcol = "minute_ms"
			b.WriteString(rcols + " FROM " + rollup)
		} else {
			b.WriteString(cols + " FROM " + s.t.events)
		}
		b.WriteString(" WHERE " + tcol + " >= ? AND " + tcol + " < ?")
		args = append(args, p.lo, p.hi)
		if q.KeyID != "" {
			b.WriteString(" AND key_id = ?")
			args = append(args, q.KeyID)
		}
		// Model and client as the store keeps them (cut to their size).
		if q.Model != "" {
			b.WriteString(" AND model = ?")
			args = append(args, cleanString(q.Model, maxNameBytes))
		}
		if q.Client != "" {
			b.WriteString(" AND client = ?")
			args = append(args, cleanString(q.Client, maxNameBytes))
		}
		if sf != "" {
			b.WriteString(" AND " + sf)
		}
		if group != "" {
			b.WriteString(" GROUP BY " + group)
		}
	}
	return b.String(), args, nil
}

// begin checks the store and ctx.
func (s *Store) begin(ctx context.Context) error {
	if s.closed.Load() {
		return recorder.ErrClosed
	}
	return ctx.Err()
}

// queryErr makes a query's error wrap ctx's when ctx ended, and ErrClosed
// when the store closed meanwhile.
func (s *Store) queryErr(ctx context.Context, err error) error {
	if cerr := ctx.Err(); cerr != nil {
		return fmt.Errorf("apipool: sql: %w (%v)", cerr, err)
	}
	if s.closed.Load() {
		return fmt.Errorf("%w (%v)", recorder.ErrClosed, err)
	}
	return fmt.Errorf("apipool: sql: %w", err)
}

// query runs q and calls scan for each row.
func (s *Store) query(ctx context.Context, q string, args []any, scan func(func(...any) error) error) error {
	rows, err := s.db.QueryContext(ctx, s.d.rebind(q), args...)
	if err != nil {
		return s.queryErr(ctx, err)
	}
	defer rows.Close()
	for rows.Next() {
		if err := scan(rows.Scan); err != nil {
			return s.queryErr(ctx, err)
		}
	}
	if err := rows.Err(); err != nil {
		return s.queryErr(ctx, err)
	}
	return nil
}

// UsageByKey returns the number of matching events per key ID
// (apipool-ng's usage_count_stats_in_recent_n_seconds).
func (s *Store) UsageByKey(ctx context.Context, q recorder.Query) (map[string]int64, error) {
	if err := q.Check(); err != nil {
		return nil, err
	}
	if err := s.begin(ctx); err != nil {
		return nil, err
	}
	out := map[string]int64{}
	ps := plan(q, 0)
	if len(ps) == 0 {
		_, err := statusFilter(q.Status)
		return out, err
	}
	inner, args, err := s.selectParts(q, ps, s.t.counts, "key_id, COUNT(*) AS n", "key_id, SUM(events) AS n", "key_id")
	if err != nil {
		return nil, err
	}
	sql := "SELECT key_id, " + s.d.castInt("SUM(n)") + " FROM (" + inner + ") u GROUP BY key_id"
	err = s.query(ctx, sql, args, func(scan func(...any) error) error {
		var k string
		var n int64
		if err := scan(&k, &n); err != nil {
			return err
		}
		if n > 0 {
			out[k] = n
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// UsageCount returns the number of matching events (apipool-ng's
// usage_count_in_recent_n_seconds).
func (s *Store) UsageCount(ctx context.Context, q recorder.Query) (int64, error) {
	if err := q.Check(); err != nil {
		return 0, err
	}
	if err := s.begin(ctx); err != nil {
		return 0, err
	}
	ps := plan(q, 0)
	if len(ps) == 0 {
		_, err := statusFilter(q.Status)
		return 0, err
	}
	inner, args, err := s.selectParts(q, ps, s.t.counts, "COUNT(*) AS n", "SUM(events) AS n", "")
	if err != nil {
		return 0, err
	}
	sql := "SELECT " + s.d.castInt("COALESCE(SUM(n), 0)") + " FROM (" + inner + ") u"
	var n int64
	err = s.query(ctx, sql, args, func(scan func(...any) error) error { return scan(&n) })
	return n, err
}

// LatencyByKey returns latency quantiles per key over matching events,
// computed from the latency bins: each within 6.25% of the exact
// nearest-rank quantile.
func (s *Store) LatencyByKey(ctx context.Context, q recorder.Query) (map[string]recorder.Latency, error) {
	if err := q.Check(); err != nil {
		return nil, err
	}
	if err := s.begin(ctx); err != nil {
		return nil, err
	}
	out := map[string]recorder.Latency{}
	ps := plan(q, 0)
	if len(ps) == 0 {
		_, err := statusFilter(q.Status)
		return out, err
	}
	inner, args, err := s.selectParts(q, ps, s.t.rollup, "key_id, latency_bin, COUNT(*) AS n", "key_id, latency_bin, SUM(events) AS n", "key_id, latency_bin")
	if err != nil {
		return nil, err
	}
	sql := "SELECT key_id, latency_bin, " + s.d.castInt("SUM(n)") + " FROM (" + inner + ") u GROUP BY key_id, latency_bin"
	hs := map[string]*hist{}
	err = s.query(ctx, sql, args, func(scan func(...any) error) error {
		var k string
		var bin int
		var n int64
		if err := scan(&k, &bin, &n); err != nil {
			return err
		}
		h := hs[k]
		if h == nil {
			h = new(hist)
			hs[k] = h
		}
		h.add(bin, n)
		return nil
	})
	if err != nil {
		return nil, err
	}
	for k, h := range hs {
		if h.n > 0 {
			out[k] = recorder.Latency{Count: h.n, P50: h.quantile(0.5), P90: h.quantile(0.9), P99: h.quantile(0.99)}
		}
	}
	return out, nil
}

// Series returns per key the count of matching events in buckets of step
// (a minute when 0), aligned to multiples of step since the Unix epoch,
// from the bucket holding q.Since to the one holding the last instant
// before q.Until, empty buckets included. Both bounds must be set, Until
// after Since; step must be a whole number of seconds, and the range
// under a million steps. Steps of whole minutes read the rollup.
func (s *Store) Series(ctx context.Context, q recorder.Query, step time.Duration) (map[string][]recorder.Bucket, error) {
	if step == 0 {
		step = time.Minute
	}
	switch {
	case q.Since.IsZero() || q.Until.IsZero():
		return nil, fmt.Errorf("%w: Series needs both Since and Until", recorder.ErrBadQuery)
	case !q.Until.After(q.Since):
		return nil, fmt.Errorf("%w: Until %v is not after Since %v", recorder.ErrBadQuery, q.Until, q.Since)
	case step < time.Second || step%time.Second != 0:
		return nil, fmt.Errorf("%w: step %v is not a positive whole number of seconds", recorder.ErrBadQuery, step)
	}
	stepSec := int64(step / time.Second)
	first := floorDiv(q.Since.Unix(), stepSec)
	last := floorDiv(q.Until.Add(-time.Nanosecond).Unix(), stepSec)
	if last-first+1 >= maxSeriesBuckets || last < first {
		return nil, fmt.Errorf("%w: %d steps of %v, the limit is %d", recorder.ErrBadQuery, last-first+1, step, maxSeriesBuckets-1)
	}
	if _, err := statusFilter(q.Status); err != nil {
		return nil, err
	}
	if err := s.begin(ctx); err != nil {
		return nil, err
	}
	out := map[string][]recorder.Bucket{}
	stepMS := stepSec * 1000
	ps := plan(q, stepMS)
	if len(ps) == 0 {
		return out, nil
	}
	sm := strconv.FormatInt(stepMS, 10)
	inner, args, err := s.selectParts(q, ps, s.t.counts,
		"key_id, event_time_ms "+s.d.div+" "+sm+" AS b, COUNT(*) AS n",
		"key_id, minute_ms "+s.d.div+" "+sm+" AS b, SUM(events) AS n",
		"key_id, b")
	if err != nil {
		return nil, err
	}
	n := int(last - first + 1)
	sql := "SELECT key_id, b, " + s.d.castInt("SUM(n)") + " FROM (" + inner + ") u GROUP BY key_id, b"
	err = s.query(ctx, sql, args, func(scan func(...any) error) error {
		var k string
		var b, c int64
		if err := scan(&k, &b, &c); err != nil {
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
		bs[b-first].Count += c
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

func floorDiv(a, b int64) int64 {
	q := a / b
	if (a%b != 0) && ((a < 0) != (b < 0)) {
		q--
	}
	return q
}

// TotalsBy returns the totals of the events matching q (the tokens, units
// and cost they said summed, the events that did not say them counted as
// unknown), grouped by key, model or client (events without one under
// ""). Whole minutes are read from the counts rollup, partial minutes
// from the event table, as for UsageCount: the totals are exact for any
// window. A by other than recorder.ByKey, ByModel and ByClient gives an
// error wrapping recorder.ErrBadQuery. See recorder.TotalsStats.
func (s *Store) TotalsBy(ctx context.Context, q recorder.Query, by recorder.GroupBy) (map[string]recorder.Totals, error) {
	if err := q.Check(); err != nil {
		return nil, err
	}
	col := ""
	switch by {
	case recorder.ByKey:
		col = "key_id"
	case recorder.ByModel:
		col = "model"
	case recorder.ByClient:
		col = "client"
	default:
		return nil, fmt.Errorf("%w: unknown GroupBy %d", recorder.ErrBadQuery, by)
	}
	if err := s.begin(ctx); err != nil {
		return nil, err
	}
	out := map[string]recorder.Totals{}
	ps := plan(q, 0)
	if len(ps) == 0 {
		_, err := statusFilter(q.Status)
		return out, err
	}
	known := func(cond, v string) string { return "SUM(CASE WHEN " + cond + " THEN " + v + " ELSE 0 END)" }
	raw := col + " AS g, COUNT(*) AS n, " +
		known("input_tokens >= 0", "input_tokens") + " AS i, " +
		known("output_tokens >= 0", "output_tokens") + " AS o, " +
		known("cached_tokens >= 0", "cached_tokens") + " AS c, " +
		known("input_tokens >= 0 AND output_tokens >= 0", "1") + " AS tk, " +
		known("units >= 0", "units") + " AS u, " +
		known("units >= 0", "1") + " AS uk, " +
		known("cost >= 0", "cost") + " AS co, " +
		known("cost >= 0", "1") + " AS ck"
	rolled := col + " AS g, SUM(events) AS n, SUM(input_tokens) AS i, SUM(output_tokens) AS o, SUM(cached_tokens) AS c, " +
		"SUM(tokens_known) AS tk, SUM(units) AS u, SUM(units_known) AS uk, SUM(cost) AS co, SUM(cost_known) AS ck"
	inner, args, err := s.selectParts(q, ps, s.t.counts, raw, rolled, col)
	if err != nil {
		return nil, err
	}
	ci := s.d.castInt
	sql := "SELECT g, " + ci("SUM(n)") + ", " + ci("SUM(i)") + ", " + ci("SUM(o)") + ", " + ci("SUM(c)") + ", " + ci("SUM(tk)") + ", " +
		s.d.castFloat("SUM(u)") + ", " + ci("SUM(uk)") + ", " + s.d.castFloat("SUM(co)") + ", " + ci("SUM(ck)") +
		" FROM (" + inner + ") u GROUP BY g"
	err = s.query(ctx, sql, args, func(scan func(...any) error) error {
		var g string
		var n, in, outT, cached, tk, uk, ck int64
		var units, cost float64
		if err := scan(&g, &n, &in, &outT, &cached, &tk, &units, &uk, &cost, &ck); err != nil {
			return err
		}
		if n <= 0 {
			return nil
		}
		out[g] = recorder.Totals{Events: n, InputTokens: in, OutputTokens: outT, CachedTokens: cached, TokensUnknown: n - tk,
			Units: units, UnitsUnknown: n - uk, Cost: cost, CostUnknown: n - ck}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}
