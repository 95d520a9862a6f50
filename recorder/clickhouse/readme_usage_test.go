package clickhouse_test

import (
	"context"
	"fmt"
	"os"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/apipool-ng/apipool/internal/chtest"
	"github.com/apipool-ng/apipool/recorder"
	"github.com/apipool-ng/apipool/recorder/clickhouse"
	"github.com/apipool-ng/apipool/status"
)

// rootReadmeQueries returns the SQL blocks of the root README's section
// "Usage stats in SQL" that start with "-- query: NAME", by name (the
// SQLite block has no such line; recorder/sql's TestReadmeSQL runs it).
func rootReadmeQueries(t *testing.T) map[string]string {
	t.Helper()
	b, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, section, ok := strings.Cut(string(b), "\n## Usage stats in SQL\n")
	if !ok {
		t.Fatal(`README.md has no section "Usage stats in SQL"`)
	}
	section, _, _ = strings.Cut(section, "\n## ")
	return sqlQueries(t, section)
}

// TestReadmeUsageSQL runs the root README's ClickHouse queries of tokens
// and cost on a private server, over events recorded by the store with
// the default table names, and checks their sums: the known values
// summed (a known zero included), the unknown ones (-1) counted apart,
// never added as zero nor as -1.
func TestReadmeUsageSQL(t *testing.T) {
	queries := rootReadmeQueries(t)
	const day, month = "tokens and cost per key over the last day", "tokens and cost per key over 30 days from the rollup"
	for _, name := range []string{day, month} {
		if queries[name] == "" {
			t.Fatalf("README.md's section \"Usage stats in SQL\" lacks the query %q (has %d)", name, len(queries))
		}
	}
	srv := chtest.StartPrivate(t)
	cfg := testConfig(t, srv)
	cfg.Table = clickhouse.DefaultTable
	s := newStore(t, cfg)

	now := time.Now()
	ev := func(ago time.Duration, key string, st status.Status, in, out int64, cost float64) {
		e := recorder.Unknown()
		e.Time, e.KeyID, e.Status = now.Add(-ago), key, st
		e.InputTokens, e.OutputTokens, e.Cost = in, out, cost
		s.Record(e)
	}
	// alpha, today: 3 successes of 100 in, 10 out, 0.25; 2 rate-limited
	// attempts whose usage is not known. Two days ago: one more success.
	for i := range 3 {
		ev(time.Duration(i)*time.Minute, "alpha", status.Success, 100, 10, 0.25)
	}
	ev(time.Minute, "alpha", status.ReachLimit, -1, -1, -1)
	ev(2*time.Minute, "alpha", status.ReachLimit, -1, -1, -1)
	ev(48*time.Hour, "alpha", status.Success, 1000, 100, 2)
	// beta, today: a success that used nothing (known zeros), one with
	// tokens but no price, one with its input count only, one unknown.
	ev(time.Minute, "beta", status.Success, 0, 0, 0)
	ev(time.Minute, "beta", status.Success, 7, 3, -1)
	ev(time.Minute, "beta", status.Success, 5, -1, -1)
	ev(time.Minute, "beta", status.ServerError, -1, -1, -1)
	if err := s.Flush(ctxT(t, 30*time.Second)); err != nil {
		t.Fatal(err)
	}

	// key: in_tokens out_tokens total_cost tokens_unknown cost_unknown
	want := map[string]map[string]string{
		day: {
			"alpha": "300 30 0.75 2 2",
			"beta":  "12 3 0.00 2 3",
		},
		month: {
			"alpha": "1300 130 2.75 2 2",
			"beta":  "12 3 0.00 2 3",
		},
	}
	conn := srv.Conn(t)
	for _, name := range []string{day, month} {
		t.Run(name, func(t *testing.T) {
			q := queries[name]
			rows, err := conn.Query(context.Background(), q)
			if err != nil {
				t.Fatalf("%v\n%s", err, q)
			}
			defer rows.Close()
			if cols := rows.Columns(); strings.Join(cols, " ") != "key_id in_tokens out_tokens total_cost tokens_unknown cost_unknown" {
				t.Fatalf("columns %v", cols)
			}
			got := map[string]string{}
			for rows.Next() {
				var vals []any
				for _, ct := range rows.ColumnTypes() {
					vals = append(vals, reflect.New(ct.ScanType()).Interface())
				}
				if err := rows.Scan(vals...); err != nil {
					t.Fatal(err)
				}
				v := func(i int) any { return reflect.ValueOf(vals[i]).Elem().Interface() }
				got[fmt.Sprint(v(0))] = fmt.Sprintf("%v %v %.2f %v %v", v(1), v(2), v(3), v(4), v(5))
			}
			if err := rows.Err(); err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, want[name]) {
				t.Errorf("got %v, want %v", got, want[name])
			}
		})
	}
}
