package clickhouse

import (
	"context"
	"testing"
	"time"

	"github.com/apipool-ng/apipool/internal/chtest"
)

func TestDedupFor(t *testing.T) {
	for _, c := range []struct {
		engine, create string
		token          bool
		want           dedupInfo
	}{
		{"MergeTree", "CREATE TABLE t (...) ENGINE = MergeTree() ORDER BY x SETTINGS index_granularity = 8192", true, dedupInfo{mode: resendCheck}},
		{"MergeTree", "... SETTINGS index_granularity = 8192, non_replicated_deduplication_window = 1000", false, dedupInfo{mode: resendIdentical}},
		{"MergeTree", "... SETTINGS index_granularity = 8192, non_replicated_deduplication_window = 1000", true, dedupInfo{mode: resendIdentical, token: true}},
		{"MergeTree", "... SETTINGS non_replicated_deduplication_window = 0", true, dedupInfo{mode: resendCheck}},
		{"ReplicatedMergeTree", "ENGINE = ReplicatedMergeTree('/t', '{replica}')", false, dedupInfo{mode: resendIdentical}},
		{"ReplicatedMergeTree", "", true, dedupInfo{mode: resendIdentical, token: true}},
		{"Distributed", "ENGINE = Distributed(c, db, t)", true, dedupInfo{mode: resendCheck}},
	} {
		if got := dedupFor(c.engine, c.create, c.token); got != c.want {
			t.Errorf("dedupFor(%q, %q, %v) = %+v, want %+v", c.engine, c.create, c.token, got, c.want)
		}
	}
}

// TestCheckWritten: checkWritten finds which months of a batch a plain
// MergeTree (18.16) holds, by the first row of each, and returns the rows
// of the others.
func TestCheckWritten(t *testing.T) {
	srv := chtest.Shared(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s, err := New(ctx, Config{Addrs: []string{srv.Addr}, Table: "check_written_" + time.Now().Format("150405"), NoRollup: true})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close(ctx)
	st, err := s.setup(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.dedup.mode != resendCheck {
		t.Fatalf("18.16's table: %+v, want the check", st.dedup)
	}
	rows := testRows(9)
	march := time.Date(2026, 3, 31, 23, 59, 0, 0, time.UTC).UnixMilli()
	april := time.Date(2026, 4, 1, 0, 0, 1, 0, time.UTC).UnixMilli()
	for i := range rows {
		rows[i].ms = march
		if i >= 5 {
			rows[i].ms = april
		}
	}
	// March's rows are written; April's are not.
	j := &job{rows: rows[:5], id: batchID(rows[:5])}
	if r := s.attempt(j, false); r.err != nil {
		t.Fatal(r.err)
	}
	rest, err := s.checkWritten(ctx, st, rows, batchID(rows))
	if err != nil || len(rest) != 4 || rest[0] != rows[5] {
		t.Fatalf("checkWritten: %d rows left, %v; want April's 4", len(rest), err)
	}
	rest, err = s.checkWritten(ctx, st, rows[:5], "another")
	if err != nil || len(rest) != 0 {
		t.Fatalf("checkWritten of the written batch: %d rows left, %v", len(rest), err)
	}
	rest, err = s.checkWritten(ctx, st, rows[5:], "a third")
	if err != nil || len(rest) != 4 {
		t.Fatalf("checkWritten of the unwritten batch: %d rows left, %v", len(rest), err)
	}
}
