package clickhouse

import (
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/apipool-ng/apipool/recorder"
	"github.com/apipool-ng/apipool/status"
)

func TestQuoteString(t *testing.T) {
	for in, want := range map[string]string{
		"":                    `''`,
		"key":                 `'key'`,
		"a'b":                 `'a\'b'`,
		`a\b`:                 `'a\\b'`,
		`\'`:                  `'\\\''`,
		"nul\x00tab\tdel\x7f": `'nul\x00tab\x09del\x7F'`,
		"日本":                  `'日本'`,
		"'; DROP TABLE t; --": `'\'; DROP TABLE t; --'`,
		"\\' OR 1=1 OR '\\":   `'\\\' OR 1=1 OR \'\\'`,
	} {
		if got := quoteString(in); got != want {
			t.Errorf("quoteString(%q) = %s, want %s", in, got, want)
		}
	}
}

// TestStatusCond checks that the SQL selects exactly the ids that
// status.Status.Matches accepts, for every filter.
func TestStatusCond(t *testing.T) {
	for f := 0; f < 256; f++ {
		cond := statusCond(status.Status(f))
		var ids []int
		not := false
		switch {
		case cond == "":
			if f != 0 {
				t.Errorf("filter %d: no condition", f)
			}
			continue
		case strings.HasPrefix(cond, "status_id IN ("):
			ids = parseIDs(t, strings.TrimPrefix(cond, "status_id IN ("))
		case strings.HasPrefix(cond, "status_id NOT IN ("):
			ids = parseIDs(t, strings.TrimPrefix(cond, "status_id NOT IN ("))
			not = true
		default:
			t.Fatalf("filter %d: condition %q", f, cond)
		}
		for id := 0; id < 256; id++ {
			selected := slices.Contains(ids, id) != not
			if want := status.Status(id).Matches(status.Status(f)); selected != want {
				t.Errorf("filter %d (%v), id %d: selected %v, Matches says %v", f, status.Status(f), id, selected, want)
			}
		}
	}
	if got := statusCond(status.Failed); got != "status_id NOT IN (0, 1, 9)" {
		t.Errorf("Failed: %s", got)
	}
	if got := statusCond(status.ReachLimit); got != "status_id IN (9)" {
		t.Errorf("ReachLimit: %s", got)
	}
}

func parseIDs(t *testing.T, s string) []int {
	var ids []int
	for _, f := range strings.Split(strings.TrimSuffix(s, ")"), ", ") {
		n, err := strconv.Atoi(f)
		if err != nil {
			t.Fatalf("id %q: %v", f, err)
		}
		ids = append(ids, n)
	}
	return ids
}

func TestToWindow(t *testing.T) {
	at := func(ms int64) time.Time { return time.UnixMilli(ms) }
	for _, c := range []struct {
		name string
		q    recorder.Query
		want window
	}{
		{"everything", recorder.Query{}, window{}},
		{"bounded", recorder.Query{Since: at(1000), Until: at(5000)}, window{since: 1000, until: 5000, hasSince: true, hasUntil: true}},
		{"sub-millisecond bounds round down", recorder.Query{Since: at(1000).Add(999 * time.Microsecond), Until: at(2000).Add(1)},
			window{since: 1000, until: 2000, hasSince: true, hasUntil: true}},
		{"since before 1970", recorder.Query{Since: at(-5000), Until: at(5000)}, window{since: -5000, until: 5000, hasUntil: true}},
		{"until before 1970", recorder.Query{Until: at(-5)}, window{until: -5, hasUntil: true, empty: true}},
		{"until after 2106", recorder.Query{Since: at(10), Until: time.Date(3000, 1, 1, 0, 0, 0, 0, time.UTC)},
			window{since: 10, until: time.Date(3000, 1, 1, 0, 0, 0, 0, time.UTC).UnixMilli(), hasSince: true}},
		{"since after 2106", recorder.Query{Since: time.Date(3000, 1, 1, 0, 0, 0, 0, time.UTC)},
			window{since: time.Date(3000, 1, 1, 0, 0, 0, 0, time.UTC).UnixMilli(), hasSince: true, empty: true}},
		{"until before since", recorder.Query{Since: at(5000), Until: at(1000)}, window{since: 5000, until: 1000, hasSince: true, hasUntil: true, empty: true}},
		{"until equals since", recorder.Query{Since: at(5000), Until: at(5000)}, window{since: 5000, until: 5000, hasSince: true, hasUntil: true, empty: true}},
	} {
		if got := toWindow(c.q); got != c.want {
			t.Errorf("%s: toWindow = %+v, want %+v", c.name, got, c.want)
		}
	}
}

func TestWindowSplit(t *testing.T) {
	const m = 60_000
	b := func(since, until int64) window {
		return window{since: since, until: until, hasSince: true, hasUntil: true}
	}
	for _, c := range []struct {
		name  string
		w     window
		whole window
		edges []window
		ok    bool
	}{
		{"aligned", b(10*m, 70*m), b(10*m, 70*m), nil, true},
		{"ragged", b(10*m+5, 70*m+7), b(11*m, 70*m), []window{b(10*m+5, 11*m), b(70*m, 70*m+7)}, true},
		{"inside a minute", b(10*m+5, 10*m+7), window{}, nil, false},
		{"one whole minute", b(10*m-1, 11*m+1), b(10*m, 11*m), []window{b(10*m-1, 10*m), b(11*m, 11*m+1)}, true},
		{"unbounded below", window{until: 5*m + 3, hasUntil: true}, window{until: 5 * m, hasUntil: true}, []window{b(5*m, 5*m+3)}, true},
		{"unbounded above", window{since: 5*m + 3, hasSince: true}, window{since: 6 * m, hasSince: true}, []window{b(5*m+3, 6*m)}, true},
		{"unbounded", window{}, window{}, nil, true},
	} {
		whole, edges, ok := c.w.split()
		if ok != c.ok || whole != c.whole || !slices.Equal(edges, c.edges) {
			t.Errorf("%s: split = %+v, %+v, %v; want %+v, %+v, %v", c.name, whole, edges, ok, c.whole, c.edges, c.ok)
		}
	}
}

func TestTimeCond(t *testing.T) {
	legacy, modern := layout{}, layout{time64: true}
	w := window{since: 1_700_000_000_123, until: 1_700_000_060_000, hasSince: true, hasUntil: true}
	if got, want := legacy.timeCond(w),
		"(event_time > toDateTime(1700000000) OR event_time = toDateTime(1700000000) AND event_ms >= 123) AND event_time < toDateTime(1700000060)"; got != want {
		t.Errorf("legacy:\n got %s\nwant %s", got, want)
	}
	if got, want := modern.timeCond(w),
		"event_time >= toDateTime64('2023-11-14 22:13:20.123', 3, 'UTC') AND event_time < toDateTime64('2023-11-14 22:14:20.000', 3, 'UTC')"; got != want {
		t.Errorf("modern:\n got %s\nwant %s", got, want)
	}
	w = window{until: 1_700_000_000_500, hasUntil: true}
	if got, want := legacy.timeCond(w),
		"(event_time < toDateTime(1700000000) OR event_time = toDateTime(1700000000) AND event_ms < 500)"; got != want {
		t.Errorf("legacy until:\n got %s\nwant %s", got, want)
	}
	if got := legacy.timeCond(window{}); got != "" {
		t.Errorf("unbounded: %q", got)
	}
}

func TestPlanQuery(t *testing.T) {
	st := &tableState{layout: layout{}, rollup: true, table: "T", rollupTbl: "R"}
	h := time.Date(2026, 1, 2, 3, 0, 0, 0, time.UTC)
	long := recorder.Query{Since: h.Add(30 * time.Second), Until: h.Add(2 * time.Hour), KeyID: "k'", Status: status.ReachLimit}
	p := planQuery(st, long, toWindow(long), time.Hour, 0)
	if !p.split || !strings.Contains(p.roll, "minute >= toDateTime(") || !strings.Contains(p.raw, "key_id = 'k\\''") ||
		!strings.Contains(p.roll, "status_id IN (9)") {
		t.Errorf("long window: %+v", p)
	}
	if sql := usageByKeySQL(st, p); !strings.Contains(sql, "UNION ALL") {
		t.Errorf("long window SQL: %s", sql)
	}
	short := recorder.Query{Since: h, Until: h.Add(59 * time.Minute)}
	if p := planQuery(st, short, toWindow(short), time.Hour, 0); p.split {
		t.Errorf("short window split: %+v", p)
	}
	if p := planQuery(st, long, toWindow(long), -1, 0); p.split {
		t.Errorf("RollupAfter < 0 split: %+v", p)
	}
	if p := planQuery(st, long, toWindow(long), time.Hour, 90); p.split {
		t.Errorf("step of 90s split: %+v", p)
	}
	aligned := recorder.Query{Since: h, Until: h.Add(2 * time.Hour)}
	if p := planQuery(st, aligned, toWindow(aligned), time.Hour, 0); !p.split || p.raw != "" {
		t.Errorf("aligned window: %+v", p)
	}
	noRollup := *st
	noRollup.rollup = false
	if p := planQuery(&noRollup, long, toWindow(long), time.Hour, 0); p.split {
		t.Errorf("no rollup split: %+v", p)
	}
}
