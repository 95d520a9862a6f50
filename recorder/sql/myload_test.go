package sql_test

import (
	"bytes"
	"context"
	"log/slog"
	"math"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/apipool-ng/apipool/internal/mysqltest"
	"github.com/apipool-ng/apipool/recorder"
	sqlrec "github.com/apipool-ng/apipool/recorder/sql"
	"github.com/apipool-ng/apipool/status"
)

// loadEvents are events whose strings and amounts LOAD DATA's text could
// spoil if the store wrote them carelessly: tabs, newlines, backslashes,
// "\N" and "NULL" (NULL in some of LOAD DATA's formats), quotes,
// characters beyond ASCII, strings at their columns' caps, and amounts
// that text must give back to the last bit.
func loadEvents(base time.Time) []recorder.Event {
	texts := []string{"a\tb", "line\nbreak", "cr\rlf\r\n", `back\slash`, `\N`, "NULL", `ends with \`, `\t literal`,
		"é ünïcode 😀", "", `'quote" ` + "`", "ctrl\x1aZ\x01", strings.Repeat("é", 512), strings.Repeat("\\", 1024), strings.Repeat("\t", 255)}
	amounts := []float64{0.1, 1.0 / 3, 5e-324, math.MaxFloat64, 1e21, 123456789.123456789, 0, 2.5e-6, -1}
	var evs []recorder.Event
	for i, s := range texts {
		e := recorder.Unknown()
		e.Time = base.Add(time.Duration(i) * time.Millisecond)
		e.KeyID, e.KeyFingerprint, e.Status, e.HTTPStatus = "k"+s, s, status.Success, 200
		e.Method, e.Host, e.Operation, e.ErrorType = s, s+"h", "o"+s, s
		e.Model, e.Client = s, s+"c"
		e.Latency, e.Attempt, e.RequestBytes, e.ResponseBytes = time.Duration(i)*time.Millisecond, i, int64(i)*1000, math.MaxInt64
		e.InputTokens, e.OutputTokens, e.CachedTokens = math.MaxInt64, int64(i), 0
		e.Units, e.Cost = amounts[i%len(amounts)], amounts[(i+3)%len(amounts)]
		evs = append(evs, e)
	}
	return evs
}

// eventRows reads every column of the event table but its surrogate key
// and the event ids, in the events' order.
func eventRows(t *testing.T, s *sqlrec.Store) [][]any {
	t.Helper()
	rows, err := s.DB().Query("SELECT event_time_ms, key_id, key_fingerprint, status_id, status, http_status, latency_us, latency_bin, attempt," +
		" method, host, operation, request_bytes, response_bytes, trace_id, span_id, error_type," +
		" model, client, input_tokens, output_tokens, cached_tokens, units, cost FROM apipool_events ORDER BY event_time_ms")
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var out [][]any
	for rows.Next() {
		var ms, statusID, httpStatus, lat, bin, attempt, req, resp, in, outTok, cached int64
		var key, fp, st, method, host, op, trace, span, errType, model, client string
		var units, cost float64
		if err := rows.Scan(&ms, &key, &fp, &statusID, &st, &httpStatus, &lat, &bin, &attempt, &method, &host, &op, &req, &resp,
			&trace, &span, &errType, &model, &client, &in, &outTok, &cached, &units, &cost); err != nil {
			t.Fatal(err)
		}
		out = append(out, []any{ms, key, fp, statusID, st, httpStatus, lat, bin, attempt, method, host, op, req, resp,
			trace, span, errType, model, client, in, outTok, cached, math.Float64bits(units), math.Float64bits(cost)})
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// TestMySQLLoadData: the events written by LOAD DATA LOCAL INFILE read
// back as those written by INSERT, every byte of their strings and bit of
// their amounts, and their counts in the rollups are the same.
func TestMySQLLoadData(t *testing.T) {
	ctx := context.Background()
	base := time.Date(2026, 5, 1, 10, 0, 0, 0, time.UTC)
	evs := loadEvents(base)
	load := open(t, "mysql", sqlrec.Config{})
	insert := open(t, "mysql", sqlrec.WithoutLoad(sqlrec.Config{}))
	for _, s := range []*sqlrec.Store{load, insert} {
		for _, e := range evs {
			s.Record(e)
		}
		if err := s.Flush(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if !sqlrec.UsesLoad(load) || sqlrec.UsesLoad(insert) {
		t.Fatalf("LOAD DATA: %v and %v; want the first store only (MariaDB allows it by default)", sqlrec.UsesLoad(load), sqlrec.UsesLoad(insert))
	}
	got, want := eventRows(t, load), eventRows(t, insert)
	if len(got) != len(evs) || !reflect.DeepEqual(got, want) {
		t.Errorf("by LOAD DATA:\n%v\nby INSERT:\n%v", got, want)
	}
	for i, r := range got {
		if e := evs[i]; len(e.Host) > 1024 || len(e.Model) > 255 {
			continue // cut
		}
		if e := evs[i]; r[10] != e.Host || r[17] != e.Model || r[2] != e.KeyFingerprint {
			t.Errorf("event %d: host %q, model %q, fingerprint %q; want %q, %q, %q", i, r[10], r[17], r[2], e.Host, e.Model, e.KeyFingerprint)
		}
	}
	q := recorder.Query{Since: base, Until: base.Add(time.Hour)}
	for _, by := range []recorder.GroupBy{recorder.ByKey, recorder.ByModel, recorder.ByClient} {
		a, errA := load.TotalsBy(ctx, q, by)
		b, errB := insert.TotalsBy(ctx, q, by)
		if errA != nil || errB != nil || !reflect.DeepEqual(a, b) || len(a) == 0 {
			t.Errorf("TotalsBy(%v): %v, %v by LOAD DATA; %v, %v by INSERT", by, a, errA, b, errB)
		}
	}
}

// TestMySQLLoadRefused: a server that does not allow LOAD DATA LOCAL
// INFILE (local_infile off) gets the events by INSERT, whether it refused
// it from the start or since the store opened; none is lost or written
// twice.
func TestMySQLLoadRefused(t *testing.T) {
	mariadb(t) // skips or fails when MariaDB is missing
	srv := mysqltest.StartPrivate(t)
	ctx := context.Background()
	var logs bytes.Buffer
	log := slog.New(slog.NewTextHandler(&logs, nil))
	base := time.Date(2026, 5, 1, 10, 0, 0, 0, time.UTC)
	record := func(s *sqlrec.Store, n int) {
		t.Helper()
		for _, e := range events("k", base, n) {
			s.Record(e)
		}
		if err := s.Flush(ctx); err != nil {
			t.Fatal(err)
		}
	}
	allowed := open(t, "mysql", sqlrec.Config{DSN: srv.Database(t), Logger: log})
	record(allowed, 10)
	if !sqlrec.UsesLoad(allowed) {
		t.Fatal("the store does not use LOAD DATA on a server that allows it")
	}
	if _, err := allowed.DB().Exec("SET GLOBAL local_infile = 0"); err != nil {
		t.Fatal(err)
	}
	record(allowed, 100)
	refused := open(t, "mysql", sqlrec.Config{DSN: srv.Database(t), Logger: log})
	record(refused, 100)
	for _, s := range []*sqlrec.Store{allowed, refused} {
		if sqlrec.UsesLoad(s) {
			t.Error("a store uses LOAD DATA on a server that refuses it")
		}
		if s.Err() != nil || s.Dropped() != 0 {
			t.Errorf("Err %v, Dropped %d", s.Err(), s.Dropped())
		}
	}
	var n int64
	for _, c := range []struct {
		s    *sqlrec.Store
		want int64
	}{{allowed, 110}, {refused, 100}} {
		if err := c.s.DB().QueryRow("SELECT COUNT(*) FROM apipool_events").Scan(&n); err != nil || n != c.want {
			t.Errorf("%d events in the table, %v; want %d", n, err, c.want)
		}
		got, err := c.s.UsageCount(ctx, recorder.Query{})
		if err != nil || got != c.want {
			t.Errorf("UsageCount = %d, %v; want %d", got, err, c.want)
		}
	}
	if l := logs.String(); !strings.Contains(l, "inserting the events by INSERT") {
		t.Errorf("nothing logged of the change: %s", l)
	}
	if l := logs.String(); strings.Contains(l, "retrying") {
		t.Errorf("the refused LOAD made a batch fail: %s", l)
	}
}
