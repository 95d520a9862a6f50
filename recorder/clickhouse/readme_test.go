package clickhouse_test

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/apipool-ng/apipool/internal/chtest"
	"github.com/apipool-ng/apipool/recorder"
	"github.com/apipool-ng/apipool/recorder/clickhouse"
	"github.com/apipool-ng/apipool/status"
)

// readmeQueries returns the README's SQL blocks that start with
// "-- query: NAME", by name.
func readmeQueries(t *testing.T) map[string]string {
	b, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	return sqlQueries(t, string(b))
}

// sqlQueries returns the SQL blocks of the Markdown text md that start
// with "-- query: NAME", by name.
func sqlQueries(t *testing.T, md string) map[string]string {
	t.Helper()
	out := map[string]string{}
	for _, p := range strings.Split(md, "```sql\n")[1:] {
		block, _, ok := strings.Cut(p, "```")
		if !ok {
			t.Fatal("README.md: unterminated sql block")
		}
		first, rest, _ := strings.Cut(block, "\n")
		if name, ok := strings.CutPrefix(first, "-- query: "); ok {
			out[name] = rest
		}
	}
	return out
}

// TestReadmeQueries runs each query of the README on the test server,
// over events recorded by the store with the default table names.
func TestReadmeQueries(t *testing.T) {
	srv := chtest.Shared(t)
	queries := readmeQueries(t)
	for _, name := range []string{
		"usage per key per hour", "usage per key per hour from the rollup", "rate-limit share per key",
		"p99 latency per key", "p99 latency per key from the rollup", "keys nearing their daily quota", "events written twice",
	} {
		if queries[name] == "" {
			t.Errorf("README.md lacks the query %q", name)
		}
	}
	cfg := testConfig(t, srv)
	cfg.Table = clickhouse.DefaultTable
	s := newStore(t, cfg)
	// Events in the last three seconds, but not before midnight UTC, so
	// that key-a has used its whole quota (1000) of today.
	now := time.Now()
	midnight := now.UTC().Truncate(24 * time.Hour)
	for i := range 3000 {
		st := status.Success
		if i%5 == 0 {
			st = status.ReachLimit
		}
		s.Record(recorder.Event{
			Time:    maxTime(now.Add(-time.Duration(i)*time.Millisecond), midnight),
			KeyID:   []string{"key-a", "key-b", "key-c"}[i%3],
			Status:  st,
			Latency: time.Duration(i%300) * time.Millisecond,
		})
	}
	if err := s.Flush(ctxT(t, 30*time.Second)); err != nil {
		t.Fatal(err)
	}
	conn := srv.Conn(t)
	for name, q := range queries {
		t.Run(name, func(t *testing.T) {
			rows, err := conn.Query(context.Background(), q)
			if err != nil {
				t.Fatalf("%v\n%s", err, q)
			}
			defer rows.Close()
			n := 0
			for rows.Next() {
				n++
			}
			if err := rows.Err(); err != nil {
				t.Fatal(err)
			}
			if n == 0 && name != "events written twice" {
				t.Errorf("no rows:\n%s", q)
			}
		})
	}
}

func maxTime(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}
