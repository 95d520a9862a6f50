package clickhouse

import (
	"context"
	"fmt"
	"strings"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/apipool-ng/apipool/recorder"
)

var _ recorder.TotalsStats = (*Store)(nil)

// TotalsBy returns the totals of the events matching q (the tokens, units
// and cost they said summed, the events that did not say them counted as
// unknown), grouped by key, model or client (events without one under
// ""). Windows of at least Config.RollupAfter read the rollup for their
// whole minutes, as UsageCount does, when the rollup has the usage
// columns (a rollup made before them does not: then the event table
// answers). A by other than recorder.ByKey, ByModel and ByClient gives an
// error wrapping recorder.ErrBadQuery. See recorder.TotalsStats.
func (s *Store) TotalsBy(ctx context.Context, q recorder.Query, by recorder.GroupBy) (map[string]recorder.Totals, error) {
	if err := q.Check(); err != nil {
		return nil, err
	}
	col := ""
	switch by {
	case recorder.ByKey:
		col = colKeyID
	case recorder.ByModel:
		col = colModel
	case recorder.ByClient:
		col = colClient
	default:
		return nil, fmt.Errorf("%w: unknown GroupBy %d", recorder.ErrBadQuery, by)
	}
	st, err := s.begin(ctx)
	if err != nil {
		return nil, err
	}
	out := map[string]recorder.Totals{}
	w := toWindow(q)
	if w.empty {
		return out, nil
	}
	p := planQueryUsage(st, q, w, s.cfg.RollupAfter, 0, true)
	err = s.query(ctx, totalsSQL(st, p, col), func(r driver.Rows) error {
		var g string
		var n, tk, uk, ck uint64
		var in, outT, cached int64
		var units, cost float64
		if err := r.Scan(&g, &n, &in, &outT, &cached, &tk, &units, &uk, &cost, &ck); err != nil {
			return err
		}
		if n == 0 {
			return nil
		}
		out[g] = recorder.Totals{Events: int64(n), InputTokens: in, OutputTokens: outT, CachedTokens: cached,
			TokensUnknown: int64(n - tk), Units: units, UnitsUnknown: int64(n - uk), Cost: cost, CostUnknown: int64(n - ck)}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// totalsSQL returns rows of (group, events, input, output and cached
// tokens, events whose tokens are known, units, events whose units are
// known, cost, events whose cost is known), the columns typed alike in
// both tables' parts (UInt64 counts, Int64 tokens, Float64 amounts).
func totalsSQL(st *tableState, p plan, col string) string {
	raw := "SELECT toString(" + col + ") AS g, count() AS n, " +
		"sum(if(input_tokens >= 0, input_tokens, toInt64(0))) AS i, " +
		"sum(if(output_tokens >= 0, output_tokens, toInt64(0))) AS o, " +
		"sum(if(cached_tokens >= 0, cached_tokens, toInt64(0))) AS c, " +
		"toUInt64(countIf(input_tokens >= 0 AND output_tokens >= 0)) AS tk, " +
		"sum(if(units >= 0, units, toFloat64(0))) AS u, " +
		"toUInt64(countIf(units >= 0)) AS uk, " +
		"sum(if(cost >= 0, cost, toFloat64(0))) AS co, " +
		"toUInt64(countIf(cost >= 0)) AS ck FROM " + st.table
	outer := "SELECT g, toUInt64(sum(n)), toInt64(sum(i)), toInt64(sum(o)), toInt64(sum(c)), toUInt64(sum(tk)), " +
		"toFloat64(sum(u)), toUInt64(sum(uk)), toFloat64(sum(co)), toUInt64(sum(ck)) FROM ("
	if !p.split {
		return outer + raw + p.raw + " GROUP BY g) GROUP BY g"
	}
	parts := []string{"SELECT toString(" + col + ") AS g, toUInt64(countMerge(events)) AS n, " +
		"toInt64(sumMerge(input_sum)) AS i, toInt64(sumMerge(output_sum)) AS o, toInt64(sumMerge(cached_sum)) AS c, " +
		"toUInt64(sumMerge(tokens_known)) AS tk, toFloat64(sumMerge(units_sum)) AS u, toUInt64(sumMerge(units_known)) AS uk, " +
		"toFloat64(sumMerge(cost_sum)) AS co, toUInt64(sumMerge(cost_known)) AS ck FROM " + st.rollupTbl + p.roll + " GROUP BY g"}
	if p.raw != "" {
		parts = append(parts, raw+p.raw+" GROUP BY g")
	}
	return outer + strings.Join(parts, " UNION ALL ") + ") GROUP BY g"
}
