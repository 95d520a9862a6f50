package sql_test

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/apipool-ng/apipool"
	"github.com/apipool-ng/apipool/internal/fakeclock"
	"github.com/apipool-ng/apipool/recorder"
	sqlrec "github.com/apipool-ng/apipool/recorder/sql"
	"github.com/apipool-ng/apipool/status"
)

// events returns n events of key, one every 10ms from t0, with distinct
// latencies.
func events(key string, t0 time.Time, n int) []recorder.Event {
	evs := make([]recorder.Event, n)
	for i := range evs {
		evs[i] = recorder.Event{Time: t0.Add(time.Duration(i) * 10 * time.Millisecond), KeyID: key,
			Status: status.Success, Latency: time.Duration(1+i%100) * time.Millisecond, Attempt: 1}
	}
	return evs
}

// TestDeleteOlderThan: old raw events go, in chunks; the rollup keeps
// answering for whole minutes.
func TestDeleteOlderThan(t *testing.T) {
	for _, driver := range drivers {
		t.Run(driver, func(t *testing.T) {
			ctx := context.Background()
			s := open(t, driver, sqlrec.Config{})
			old := time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)
			recent := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
			for _, e := range events("old", old, 12_000) { // over two minutes, more than a chunk
				s.Record(e)
			}
			for _, e := range events("new", recent, 100) {
				s.Record(e)
			}
			if err := s.Flush(ctx); err != nil {
				t.Fatal(err)
			}
			n, err := s.DeleteOlderThan(ctx, recent)
			if err != nil || n != 12_000 {
				t.Fatalf("DeleteOlderThan = %d, %v; want 12000", n, err)
			}
			var raw int
			if err := s.DB().QueryRow("SELECT COUNT(*) FROM apipool_events").Scan(&raw); err != nil || raw != 100 {
				t.Errorf("%d raw events left, %v; want 100", raw, err)
			}
			// Whole minutes: from the rollup.
			got, err := s.UsageByKey(ctx, recorder.Query{Since: old, Until: recent.Add(time.Hour)})
			if err != nil || got["old"] != 12_000 || got["new"] != 100 {
				t.Errorf("UsageByKey = %v, %v; want old=12000 new=100", got, err)
			}
			lat, err := s.LatencyByKey(ctx, recorder.Query{KeyID: "old"})
			if err != nil || lat["old"].Count != 12_000 || lat["old"].P50 < 45*time.Millisecond || lat["old"].P50 > 55*time.Millisecond {
				t.Errorf("LatencyByKey(old) = %+v, %v; want 12000 events, p50 about 50ms", lat["old"], err)
			}
			// Partial minutes read raw events: the deleted ones are gone.
			if n, err := s.UsageCount(ctx, recorder.Query{Since: old.Add(30 * time.Second), Until: old.Add(50 * time.Second)}); err != nil || n != 0 {
				t.Errorf("UsageCount(old partial minute) = %d, %v; want 0", n, err)
			}
		})
	}
}

// TestRetention: with Config.Retention the writer deletes raw events past
// it after writing a batch.
func TestRetention(t *testing.T) {
	ctx := context.Background()
	// One batch: written by Flush alone.
	s := open(t, "sqlite", sqlrec.Config{Retention: time.Hour, FlushInterval: time.Hour, BatchSize: 10_000})
	now := time.Now()
	for _, e := range events("old", now.Add(-3*time.Hour), 50) {
		s.Record(e)
	}
	for _, e := range events("new", now.Add(-time.Minute), 50) {
		s.Record(e)
	}
	if err := s.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	var raw int
	if err := s.DB().QueryRow("SELECT COUNT(*) FROM apipool_events WHERE key_id = 'old'").Scan(&raw); err != nil || raw != 0 {
		t.Errorf("%d old raw events left, %v; want 0", raw, err)
	}
	if n, err := s.UsageCount(ctx, recorder.Query{Since: now.Add(-4 * time.Hour).Truncate(time.Minute), Until: now.Add(-time.Hour).Truncate(time.Minute)}); err != nil || n != 50 {
		t.Errorf("UsageCount(old, whole minutes) = %d, %v; want 50 from the rollup", n, err)
	}
	if n, err := s.UsageCount(ctx, recorder.Query{KeyID: "new"}); err != nil || n != 50 {
		t.Errorf("UsageCount(new) = %d, %v; want 50", n, err)
	}
}

// TestClock: Config.Clock dates the events recorded without a time, and
// Retention counts back from it.
func TestClock(t *testing.T) {
	ctx := context.Background()
	at := time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC) // long past: the system clock would prune every event
	s := open(t, "sqlite", sqlrec.Config{Clock: fakeclock.New(at), Retention: time.Hour, FlushInterval: time.Hour, BatchSize: 10_000})
	for _, e := range events("old", at.Add(-3*time.Hour), 50) {
		s.Record(e)
	}
	for _, e := range events("new", at.Add(-time.Minute), 50) {
		s.Record(e)
	}
	s.Record(recorder.Event{KeyID: "undated", Status: status.Success})
	if err := s.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	var ms int64
	if err := s.DB().QueryRow("SELECT event_time_ms FROM apipool_events WHERE key_id = 'undated'").Scan(&ms); err != nil || ms != at.UnixMilli() {
		t.Errorf("an event without a time was stored at %v (%v), want the clock's %v", time.UnixMilli(ms).UTC(), err, at)
	}
	for key, want := range map[string]int{"old": 0, "new": 50} {
		var raw int
		if err := s.DB().QueryRow("SELECT COUNT(*) FROM apipool_events WHERE key_id = ?", key).Scan(&raw); err != nil || raw != want {
			t.Errorf("%d raw events of %s left, %v; want %d", raw, key, err, want)
		}
	}
}

// TestRetentionIdle: a store with Config.Retention that receives no
// events still deletes the raw events past it.
func TestRetentionIdle(t *testing.T) {
	ctx := context.Background()
	dsn := dsnFor(t, "sqlite")
	now := time.Now()
	s := open(t, "sqlite", sqlrec.Config{DSN: dsn})
	for _, e := range events("old", now.Add(-3*time.Hour), 50) {
		s.Record(e)
	}
	if err := s.Close(ctx); err != nil {
		t.Fatal(err)
	}
	s = open(t, "sqlite", sqlrec.Config{DSN: dsn, Retention: time.Hour, FlushInterval: 5 * time.Millisecond})
	deadline := time.Now().Add(time.Minute)
	for {
		var raw int
		if err := s.DB().QueryRow("SELECT COUNT(*) FROM apipool_events").Scan(&raw); err != nil {
			t.Fatal(err)
		}
		if raw == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d raw events past the retention left after a minute of an idle store", raw)
		}
		time.Sleep(5 * time.Millisecond)
	}
	if n, err := s.UsageCount(ctx, recorder.Query{Since: now.Add(-4 * time.Hour).Truncate(time.Minute), Until: now.Add(-time.Hour).Truncate(time.Minute)}); err != nil || n != 50 {
		t.Errorf("UsageCount(old, whole minutes) = %d, %v; want 50 from the rollup", n, err)
	}
}

// TestSanitized: values no column takes whole are stored cut and valid;
// an event without a time gets the clock's.
func TestSanitized(t *testing.T) {
	for _, driver := range drivers {
		t.Run(driver, func(t *testing.T) {
			ctx := context.Background()
			s := open(t, driver, sqlrec.Config{})
			long := strings.Repeat("é", 600) // 1200 bytes
			s.Record(recorder.Event{KeyID: long, Host: "bad\xffutf8\x00nul", Operation: long, Latency: -time.Second,
				HTTPStatus: -5, Attempt: 1 << 40, RequestBytes: -10, Status: status.Status(200)})
			s.Record(recorder.Event{Time: time.Date(1900, 1, 1, 0, 0, 0, 0, time.UTC), KeyID: "ancient"})
			if err := s.Flush(ctx); err != nil {
				t.Fatal(err)
			}
			var key, host, op string
			var ms, lat, req int64
			if err := s.DB().QueryRow("SELECT key_id, host, operation, event_time_ms, latency_us, request_bytes FROM apipool_events WHERE key_id <> 'ancient'").
				Scan(&key, &host, &op, &ms, &lat, &req); err != nil {
				t.Fatal(err)
			}
			if len(key) > 255 || len(op) > 1024 || !strings.HasPrefix(key, "éé") || host != "bad\uFFFDutf8\uFFFDnul" || lat != 0 || req != -1 {
				t.Errorf("stored key %d bytes, op %d bytes, host %q, latency %d, request bytes %d", len(key), len(op), host, lat, req)
			}
			if d := time.Since(time.UnixMilli(ms)); d < 0 || d > time.Hour {
				t.Errorf("a zero time was stored as %v", time.UnixMilli(ms))
			}
			// The undefined status counts as a failure.
			if n, err := s.UsageCount(ctx, recorder.Query{Status: status.Failed}); err != nil || n != 1 {
				t.Errorf("UsageCount(failed) = %d, %v; want 1", n, err)
			}
			if _, err := s.UsageCount(ctx, recorder.Query{Status: status.Status(200)}); !errors.Is(err, recorder.ErrBadQuery) {
				t.Errorf("a filter of an undefined status: %v; want ErrBadQuery", err)
			}
			if n, err := s.UsageCount(ctx, recorder.Query{KeyID: "ancient", Until: time.Unix(1, 0)}); err != nil || n != 1 {
				t.Errorf("an event before 1970 is kept at 1970: %d, %v", n, err)
			}
		})
	}
}

// TestTableBrokenWhileRunning: when the event table is replaced by one the
// store cannot write, requests through the pool are still served, Record
// drops and counts what the queue cannot hold, and Err says why.
func TestTableBrokenWhileRunning(t *testing.T) {
	for _, driver := range drivers {
		t.Run(driver, func(t *testing.T) {
			ctx := context.Background()
			s := open(t, driver, sqlrec.Config{QueueSize: 50, BatchSize: 10, FlushInterval: 10 * time.Millisecond, MinBackoff: 10 * time.Millisecond, MaxBackoff: 50 * time.Millisecond})
			db := s.DB()
			for _, q := range []string{"DROP TABLE apipool_events", "CREATE TABLE apipool_events (id INTEGER, note VARCHAR(10))"} {
				if _, err := db.Exec(q); err != nil {
					t.Fatal(err)
				}
			}
			up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
			defer up.Close()
			pool, err := apipool.New([]apipool.Key{{ID: "k", Secret: "canary-secret-123"}}, apipool.WithRecorder(s))
			if err != nil {
				t.Fatal(err)
			}
			client := &http.Client{Transport: pool}
			for i := range 200 {
				resp, err := client.Get(up.URL)
				if err != nil || resp.StatusCode != 200 {
					t.Fatalf("request %d: %v", i, err)
				}
				resp.Body.Close()
			}
			if s.Dropped() == 0 {
				t.Error("200 events, a queue of 50 and a broken table, yet nothing dropped")
			}
			fctx, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
			defer cancel()
			err = s.Flush(fctx)
			if !errors.Is(err, context.DeadlineExceeded) || s.Err() == nil || !strings.Contains(s.Err().Error(), "inserting events") && !strings.Contains(s.Err().Error(), "copying events") &&
				!strings.Contains(s.Err().Error(), "loading events") {
				t.Errorf("Flush = %v; Err = %v; want a deadline and the insert's error", err, s.Err())
			}
			if strings.Contains(fmt.Sprint(err, s.Err()), "canary-secret-123") {
				t.Error("the key's secret is in an error")
			}
			cctx, cancel2 := context.WithTimeout(ctx, 200*time.Millisecond)
			defer cancel2()
			cerr := s.Close(cctx)
			var ce *sqlrec.CloseError
			if !errors.As(cerr, &ce) || ce.Lost == 0 || uint64(ce.Lost) > s.Dropped() {
				t.Errorf("Close = %v; want a *CloseError counting the events left, also counted in Dropped (%d)", cerr, s.Dropped())
			}
			if got := uint64(ce.Lost); s.Dropped() < got {
				t.Errorf("Dropped %d < lost %d", s.Dropped(), got)
			}
		})
	}
}

// TestPlainRows: a batch of events without usage is written without the
// usage columns, which their defaults fill (” and -1; on PostgreSQL, which
// writes every column, ” and NULL), and reads as not known, from the
// rollups and from the event table alike; a batch that mixes them writes
// every column.
func TestPlainRows(t *testing.T) {
	for _, driver := range drivers {
		t.Run(driver, func(t *testing.T) {
			ctx := context.Background()
			cfg := sqlrec.Config{Driver: driver, DSN: dsnFor(t, driver), BatchSize: 3000}
			s := open(t, driver, cfg)
			base := time.Date(2026, 5, 1, 10, 0, 0, 0, time.UTC)
			event := func(i int, usage bool) recorder.Event {
				e := recorder.Unknown()
				e.Time, e.KeyID, e.Status = base.Add(time.Duration(i)*time.Millisecond), "k", status.Success
				if usage {
					e.Model, e.InputTokens, e.OutputTokens, e.Cost = "m", 10, 0, 0.5
				}
				return e
			}
			for i := range 2500 { // more than a multi-row INSERT
				s.Record(event(i, false))
			}
			if err := s.Flush(ctx); err != nil {
				t.Fatal(err)
			}
			for i := range 1200 {
				s.Record(event(2500+i, i%600 == 599))
			}
			if err := s.Flush(ctx); err != nil {
				t.Fatal(err)
			}
			db := rawDB(t, driver, cfg.DSN)
			var plain, known int
			unknown := "= -1"
			if driver == "postgres" {
				unknown = "IS NULL"
			}
			if err := db.QueryRow("SELECT COUNT(*) FROM apipool_events WHERE model = '' AND client = '' AND input_tokens " + unknown +
				" AND output_tokens " + unknown + " AND cached_tokens " + unknown + " AND units " + unknown + " AND cost " + unknown).
				Scan(&plain); err != nil || plain != 3698 {
				t.Errorf("%d rows of no usage, %v; want 3698", plain, err)
			}
			if err := db.QueryRow("SELECT COUNT(*) FROM apipool_events WHERE model = 'm' AND input_tokens = 10 AND output_tokens = 0 AND cost = 0.5").
				Scan(&known); err != nil || known != 2 {
				t.Errorf("%d rows of model m, %v; want 2", known, err)
			}
			got, err := s.TotalsBy(ctx, recorder.Query{}, recorder.ByModel)
			want := map[string]recorder.Totals{
				"":  {Events: 3698, TokensUnknown: 3698, UnitsUnknown: 3698, CostUnknown: 3698},
				"m": {Events: 2, InputTokens: 20, UnitsUnknown: 2, Cost: 1},
			}
			if err != nil || !maps.Equal(got, want) {
				t.Errorf("TotalsBy = %+v, %v; want %+v", got, err, want)
			}
			// Within the first minute: read from the event table.
			got, err = s.TotalsBy(ctx, recorder.Query{Since: base, Until: base.Add(3700 * time.Millisecond)}, recorder.ByModel)
			if err != nil || !maps.Equal(got, want) {
				t.Errorf("TotalsBy(the first 3.7 s) = %+v, %v; want %+v", got, err, want)
			}
		})
	}
}
