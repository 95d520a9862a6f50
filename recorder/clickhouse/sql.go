package clickhouse

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/apipool-ng/apipool/recorder"
	"github.com/apipool-ng/apipool/status"
)

// The stats SQL is built from pieces that 18.16 and current servers both
// accept. Values enter it as numbers or as literals escaped by
// quoteString, never as raw text.

// quoteString returns s as a ClickHouse string literal: backslash and
// quote escaped, control bytes as \xHH.
func quoteString(s string) string {
	var b strings.Builder
	b.Grow(len(s) + 2)
	b.WriteByte('\'')
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c == '\\':
			b.WriteString(`\\`)
		case c == '\'':
			b.WriteString(`\'`)
		case c < 0x20 || c == 0x7f:
			fmt.Fprintf(&b, `\x%02X`, c)
		default:
			b.WriteByte(c)
		}
	}
	b.WriteByte('\'')
	return b.String()
}

// window is a query's time bounds in Unix milliseconds: since <= ms <
// until, each bound only when its has flag is set. Event times are kept to
// the millisecond (rounded down), and bounds are rounded down the same
// way.
type window struct {
	since, until       int64
	hasSince, hasUntil bool
	empty              bool // no event can match
}

func toWindow(q recorder.Query) window {
	var w window
	if !q.Since.IsZero() {
		w.since = q.Since.UnixMilli()
		w.hasSince = w.since > 0
		if w.since > maxEventMS {
			w.empty = true
		}
	}
	if !q.Until.IsZero() {
		w.until = q.Until.UnixMilli()
		w.hasUntil = w.until <= maxEventMS
		if w.until <= 0 {
			w.empty = true
		}
	}
	if w.hasSince && w.hasUntil && w.since >= w.until {
		w.empty = true
	}
	return w
}

// length returns the window's length, or -1 when it is unbounded.
func (w window) length() time.Duration {
	if !w.hasSince || !w.hasUntil {
		return -1
	}
	return time.Duration(w.until-w.since) * time.Millisecond
}

// split cuts w into its whole minutes [lo, hi), which the rollup answers,
// and the partial minutes at its ends, which the event table answers. ok
// is false when w holds no whole minute.
func (w window) split() (whole window, edges []window, ok bool) {
	const minute = 60_000
	whole = window{hasSince: w.hasSince, hasUntil: w.hasUntil}
	if w.hasSince {
		whole.since = ceilDiv(w.since, minute) * minute
	}
	if w.hasUntil {
		whole.until = floorDiv(w.until, minute) * minute
	}
	if whole.hasSince && whole.hasUntil && whole.since >= whole.until {
		return window{}, nil, false
	}
	if w.hasSince && w.since < whole.since {
		edges = append(edges, window{since: w.since, until: whole.since, hasSince: true, hasUntil: true})
	}
	if w.hasUntil && whole.until < w.until {
		edges = append(edges, window{since: whole.until, until: w.until, hasSince: true, hasUntil: true})
	}
	return whole, edges, true
}

func floorDiv(a, b int64) int64 {
	q := a / b
	if a%b != 0 && (a < 0) != (b < 0) {
		q--
	}
	return q
}

func ceilDiv(a, b int64) int64 { return -floorDiv(-a, b) }

// timeCond returns the condition on the event table for w, or "" for
// none.
func (l layout) timeCond(w window) string {
	var conds []string
	if w.hasSince {
		conds = append(conds, l.timeCmp(">=", w.since))
	}
	if w.hasUntil {
		conds = append(conds, l.timeCmp("<", w.until))
	}
	return strings.Join(conds, " AND ")
}

// timeCmp compares the event time with ms, op being ">=" or "<".
func (l layout) timeCmp(op string, ms int64) string {
	if l.time64 {
		return fmt.Sprintf("event_time %s toDateTime64(%s, 3, 'UTC')", op,
			quoteString(time.UnixMilli(ms).UTC().Format("2006-01-02 15:04:05.000")))
	}
	sec, frac := ms/1000, ms%1000
	if frac == 0 {
		return fmt.Sprintf("event_time %s toDateTime(%d)", op, sec)
	}
	if op == ">=" {
		return fmt.Sprintf("(event_time > toDateTime(%d) OR event_time = toDateTime(%[1]d) AND event_ms >= %d)", sec, frac)
	}
	return fmt.Sprintf("(event_time < toDateTime(%d) OR event_time = toDateTime(%[1]d) AND event_ms < %d)", sec, frac)
}

// minuteCond returns the condition on the rollup for whole minutes w.
func minuteCond(w window) string {
	var conds []string
	if w.hasSince {
		conds = append(conds, fmt.Sprintf("minute >= toDateTime(%d)", w.since/1000))
	}
	if w.hasUntil {
		conds = append(conds, fmt.Sprintf("minute < toDateTime(%d)", w.until/1000))
	}
	return strings.Join(conds, " AND ")
}

// statusCond returns the condition selecting the status ids that match f
// as status.Status.Matches says, or "" when every id matches.
func statusCond(f status.Status) string {
	var in, out []string
	for id := 0; id < 256; id++ {
		if status.Status(id).Matches(f) {
			in = append(in, strconv.Itoa(id))
		} else {
			out = append(out, strconv.Itoa(id))
		}
	}
	switch {
	case len(out) == 0:
		return ""
	case len(in) <= len(out):
		return "status_id IN (" + strings.Join(in, ", ") + ")"
	default:
		return "status_id NOT IN (" + strings.Join(out, ", ") + ")"
	}
}

// filterCond returns the key, status, model and client conditions of q.
func filterCond(q recorder.Query) []string {
	var conds []string
	if q.KeyID != "" {
		conds = append(conds, "key_id = "+quoteString(cleanString(q.KeyID)))
	}
	if q.Model != "" {
		conds = append(conds, "model = "+quoteString(cleanString(q.Model)))
	}
	if q.Client != "" {
		conds = append(conds, "client = "+quoteString(cleanString(q.Client)))
	}
	if c := statusCond(q.Status); c != "" {
		conds = append(conds, c)
	}
	return conds
}

func where(conds ...string) string {
	var nonEmpty []string
	for _, c := range conds {
		if c != "" {
			nonEmpty = append(nonEmpty, c)
		}
	}
	if len(nonEmpty) == 0 {
		return ""
	}
	return " WHERE " + strings.Join(nonEmpty, " AND ")
}

// plan says which tables answer a query: the event table over raw (or
// over edges when split), and the rollup over whole.
type plan struct {
	split bool
	raw   string // the event table's WHERE, whole window (when !split) or edges
	roll  string // the rollup's WHERE (when split)
}

// planQuery decides how to answer q: from the event table alone, or from
// the rollup for whole minutes and the event table for the ends. stepSec,
// when positive, is a series step that the rollup must divide; extra are
// more conditions on columns both tables have. usage says the query reads
// the usage sums, which only a rollup with the usage columns has (as have
// a query's model and client).
func planQuery(st *tableState, q recorder.Query, w window, rollupAfter time.Duration, stepSec int64, extra ...string) plan {
	return planQueryUsage(st, q, w, rollupAfter, stepSec, false, extra...)
}

func planQueryUsage(st *tableState, q recorder.Query, w window, rollupAfter time.Duration, stepSec int64, usage bool, extra ...string) plan {
	filters := append(filterCond(q), extra...)
	rawAll := plan{raw: where(append([]string{st.layout.timeCond(w)}, filters...)...)}
	if !st.rollup || rollupAfter < 0 || (stepSec > 0 && stepSec%60 != 0) {
		return rawAll
	}
	if !st.rollupUsage && (usage || q.Model != "" || q.Client != "") {
		return rawAll
	}
	if n := w.length(); n >= 0 && n < rollupAfter {
		return rawAll
	}
	whole, edges, ok := w.split()
	if !ok {
		return rawAll
	}
	p := plan{split: true, roll: where(append([]string{minuteCond(whole)}, filters...)...)}
	if len(edges) > 0 {
		var ors []string
		for _, e := range edges {
			ors = append(ors, "("+st.layout.timeCond(e)+")")
		}
		p.raw = where(append([]string{"(" + strings.Join(ors, " OR ") + ")"}, filters...)...)
	}
	return p
}

// The stats queries. Each returns rows of (key_id, ...) or a single row.

func usageByKeySQL(st *tableState, p plan) string {
	if !p.split {
		return "SELECT key_id, count() FROM " + st.table + p.raw + " GROUP BY key_id"
	}
	parts := []string{"SELECT key_id, countMerge(events) AS n FROM " + st.rollupTbl + p.roll + " GROUP BY key_id"}
	if p.raw != "" {
		parts = append(parts, "SELECT key_id, count() AS n FROM "+st.table+p.raw+" GROUP BY key_id")
	}
	return "SELECT key_id, sum(n) FROM (" + strings.Join(parts, " UNION ALL ") + ") GROUP BY key_id"
}

func usageCountSQL(st *tableState, p plan) string {
	if !p.split {
		return "SELECT count() FROM " + st.table + p.raw
	}
	parts := []string{"SELECT countMerge(events) AS n FROM " + st.rollupTbl + p.roll}
	if p.raw != "" {
		parts = append(parts, "SELECT count() AS n FROM "+st.table+p.raw)
	}
	return "SELECT sum(n) FROM (" + strings.Join(parts, " UNION ALL ") + ")"
}

// latencySQL returns per key the count and the 0.5, 0.9 and 0.99
// quantiles of latency_us as Array(Float64), from the quantiles function
// (exact, interpolated, up to 8192 values; a reservoir sample beyond),
// merging the rollup's states with the event table's for split windows.
func latencySQL(st *tableState, p plan) string {
	if !p.split {
		return "SELECT key_id, count(), quantiles(0.5, 0.9, 0.99)(latency_us) FROM " + st.table + p.raw + " GROUP BY key_id"
	}
	parts := []string{"SELECT key_id, events AS c, latency AS l FROM " + st.rollupTbl + p.roll}
	if p.raw != "" {
		parts = append(parts, "SELECT key_id, countState() AS c, "+rollupQuantiles+"State"+rollupQuantileLevels+"(latency_us) AS l FROM "+
			st.table+p.raw+" GROUP BY key_id")
	}
	return "SELECT key_id, countMerge(c), arrayMap(x -> toFloat64(x), " + rollupQuantiles + "Merge" + rollupQuantileLevels + "(l)) FROM (" +
		strings.Join(parts, " UNION ALL ") + ") GROUP BY key_id"
}

// seriesSQL returns rows of (key_id, bucket, count), the bucket being the
// Unix time in seconds divided by step.
func seriesSQL(st *tableState, p plan, stepSec int64) string {
	rawBucket := fmt.Sprintf("toInt64(intDiv(toUInt32(toDateTime(event_time)), %d))", stepSec)
	if !p.split {
		return "SELECT key_id, " + rawBucket + " AS b, count() FROM " + st.table + p.raw + " GROUP BY key_id, b"
	}
	parts := []string{fmt.Sprintf("SELECT key_id, toInt64(intDiv(toUInt32(minute), %d)) AS b, countMerge(events) AS n FROM %s%s GROUP BY key_id, b",
		stepSec, st.rollupTbl, p.roll)}
	if p.raw != "" {
		parts = append(parts, "SELECT key_id, "+rawBucket+" AS b, count() AS n FROM "+st.table+p.raw+" GROUP BY key_id, b")
	}
	return "SELECT key_id, b, sum(n) FROM (" + strings.Join(parts, " UNION ALL ") + ") GROUP BY key_id, b"
}
