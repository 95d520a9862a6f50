package sql_test

import (
	"context"
	"os"
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
	if len(queries) != 3 {
		t.Fatalf("%d queries in the README's SQL block, want 3", len(queries))
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
		s.Record(recorder.Event{Time: now.Add(-time.Duration(i) * time.Minute), KeyID: key, Status: st})
	}
	s.Record(recorder.Event{Time: now.Add(-2 * time.Hour), KeyID: "alpha", Status: status.ReachLimit})
	if err := s.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	want := []map[string]int64{{"alpha": 15, "beta": 15}, {"": 5}, nil}
	for qi, q := range queries {
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
