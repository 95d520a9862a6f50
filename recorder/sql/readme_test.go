package sql_test

import (
	"context"
	"fmt"
	"os"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/apipool-ng/apipool/recorder"
	sqlrec "github.com/apipool-ng/apipool/recorder/sql"
	"github.com/apipool-ng/apipool/status"
)

// TestReadmeSQL runs the README's plain-SQL queries on a SQLite store that
// holds recent events, and checks their answers.
func TestReadmeSQL(t *testing.T) {
	data, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	text := string(data)
	i := strings.Index(text, "## Usage stats in SQL")
	if i < 0 {
		t.Fatal("no section")
	}
	text = text[i:]
	start := strings.Index(text, "```sql\n")
	end := strings.Index(text[start+7:], "```")
	var queries []string
	for _, q := range strings.Split(text[start+7:start+7+end], ";") {
		if strings.TrimSpace(q) != "" {
			queries = append(queries, q)
		}
	}
	if len(queries) != 4 {
		t.Fatalf("%d queries in the README's SQL block, want 4", len(queries))
	}
	s := open(t, "sqlite", sqlrec.Config{})
	now := time.Now()
	for i := range 30 {
		st := status.Success
		if i%3 == 0 {
			st = status.ReachLimit
		}
		key := "alpha"
		if i%2 == 1 {
			key = "beta"
		}
		e := recorder.Unknown()
		e.Time, e.KeyID, e.Status = now.Add(-time.Duration(i)*time.Minute), key, st
		if st == status.Success {
			e.InputTokens, e.OutputTokens, e.CachedTokens, e.Cost = 100, 10, 0, 0.25
		}
		s.Record(e)
	}
	old := recorder.Unknown()
	old.Time, old.KeyID, old.Status = now.Add(-2*time.Hour), "alpha", status.ReachLimit
	s.Record(old)
	if err := s.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	want := []map[string]int64{{"alpha": 15, "beta": 15}, {"": 5}, nil}
	for qi, q := range queries {
		if qi == 3 {
			checkTokensQuery(t, s, q)
			continue
		}
		rows, err := s.DB().Query(q)
		if err != nil {
			t.Fatalf("query %d: %v\n%s", qi+1, err, q)
		}
		got := map[string]int64{}
		var total int64
		for rows.Next() {
			cols, _ := rows.Columns()
			vals := make([]any, len(cols))
			ptrs := make([]any, len(cols))
			for j := range vals {
				ptrs[j] = &vals[j]
			}
			if err := rows.Scan(ptrs...); err != nil {
				t.Fatal(err)
			}
			n := vals[len(vals)-1].(int64)
			total += n
			if len(cols) == 2 {
				got[vals[0].(string)] = n
			} else if len(cols) == 1 {
				got[""] = n
			}
		}
		rows.Close()
		switch qi {
		case 0, 1:
			for k, v := range want[qi] {
				if got[k] != v {
					t.Errorf("query %d = %v, want %v", qi+1, got, want[qi])
				}
			}
		case 2:
			if total != 31 {
				t.Errorf("query 3 counts %d events, want 31", total)
			}
		}
	}
}

// checkTokensQuery runs the README's tokens and cost query: per key, 10
// successes of 100 in, 10 out and 0.25 each; the rate-limited attempts'
// tokens are not known (alpha has one more, two hours old).
func checkTokensQuery(t *testing.T, s *sqlrec.Store, q string) {
	t.Helper()
	rows, err := s.DB().Query(q)
	if err != nil {
		t.Fatalf("query 4: %v\n%s", err, q)
	}
	defer rows.Close()
	got := map[string]string{}
	for rows.Next() {
		var key string
		var in, out, unknown, costUnknown int64
		var cost float64
		if err := rows.Scan(&key, &in, &out, &cost, &unknown, &costUnknown); err != nil {
			t.Fatal(err)
		}
		got[key] = fmt.Sprintf("%d %d %.2f %d %d", in, out, cost, unknown, costUnknown)
	}
	want := map[string]string{"alpha": "1000 100 2.50 6 6", "beta": "1000 100 2.50 5 5"}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("query 4 = %v, want %v", got, want)
	}
}
