package clickhouse_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	chgo "github.com/ClickHouse/clickhouse-go/v2"
	"github.com/apipool-ng/apipool"
	"github.com/apipool-ng/apipool/internal/chtest"
	"github.com/apipool-ng/apipool/internal/fakeclock"
	"github.com/apipool-ng/apipool/recorder"
	"github.com/apipool-ng/apipool/recorder/clickhouse"
	"github.com/apipool-ng/apipool/status"
	"go.opentelemetry.io/otel/trace"
)

var base = time.Date(2026, 3, 4, 5, 0, 0, 0, time.UTC)

// event returns the i-th event of a test stream: its RequestBytes is i,
// so the table shows which events arrived and how often.
func event(i int) recorder.Event {
	return recorder.Event{
		Time:          base.Add(time.Duration(i) * time.Millisecond),
		KeyID:         fmt.Sprintf("key-%d", i%5),
		Status:        status.All[i%len(status.All)],
		HTTPStatus:    200,
		Latency:       time.Duration(i%100) * time.Millisecond,
		Attempt:       1,
		Method:        "GET",
		Host:          "api.example.com",
		RequestBytes:  int64(i),
		ResponseBytes: -1,
	}
}

// tally is what the table holds of a stream.
type tally struct {
	rows, ids, distinct uint64 // rows, distinct event ids, distinct RequestBytes
	min, max            int64
}

func countStream(t *testing.T, srv *chtest.Server, table string) tally {
	t.Helper()
	var c tally
	err := srv.Conn(t).QueryRow(context.Background(), "SELECT count(), uniqExact(event_id), uniqExact(request_bytes), min(request_bytes), max(request_bytes) FROM default."+table).
		Scan(&c.rows, &c.ids, &c.distinct, &c.min, &c.max)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// wantExactlyOnce checks that events 0..n-1 are each in the table once.
func wantExactlyOnce(t *testing.T, srv *chtest.Server, table string, n int) {
	t.Helper()
	got := countStream(t, srv, table)
	want := tally{rows: uint64(n), ids: uint64(n), distinct: uint64(n), min: 0, max: int64(n - 1)}
	if got != want {
		t.Fatalf("table holds %+v, want %+v (each of %d events exactly once)", got, want, n)
	}
}

func TestEventsArriveExactlyOnce(t *testing.T) {
	srv := chtest.Shared(t)
	cfg := testConfig(t, srv)
	cfg.BatchSize = 1000
	s := newStore(t, cfg)
	const n = 25_000
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < n; i += 4 {
				s.Record(event(i))
			}
		}()
	}
	wg.Wait()
	if err := s.Flush(ctxT(t, 30*time.Second)); err != nil {
		t.Fatal(err)
	}
	wantExactlyOnce(t, srv, cfg.Table, n)
	if s.Dropped() != 0 || s.QueueLen() != 0 || s.Err() != nil {
		t.Errorf("Dropped %d, QueueLen %d, Err %v", s.Dropped(), s.QueueLen(), s.Err())
	}
}

// TestEventRoundTrip checks every column of one event.
func TestEventRoundTrip(t *testing.T) {
	srv := chtest.Shared(t)
	cfg := testConfig(t, srv)
	s := newStore(t, cfg)
	e := recorder.Event{
		Time:           time.Date(2026, 5, 6, 7, 8, 9, 123_456_789, time.UTC),
		KeyID:          "key'\\\"1",
		KeyFingerprint: "0123abcd",
		Status:         status.ReachLimit,
		HTTPStatus:     429,
		Latency:        1234567 * time.Microsecond,
		Attempt:        2,
		Method:         "POST",
		Host:           "api.example.com:8443",
		Operation:      "CreateThing",
		RequestBytes:   -1,
		ResponseBytes:  512,
		TraceID:        trace.TraceID{0xde, 0xad, 0xbe, 0xef, 15: 1},
		SpanID:         trace.SpanID{0xca, 0xfe, 7: 2},
		ErrorType:      "rate_limited",
		Model:          "gpt-4o'\\",
		Client:         "web ü",
		InputTokens:    1 << 40,
		OutputTokens:   0,
		CachedTokens:   -1,
		Units:          -1,
		Cost:           0.000123,
	}
	s.Record(e)
	// Values no column holds read as not known.
	odd := e
	odd.KeyID, odd.InputTokens, odd.OutputTokens, odd.CachedTokens, odd.Units, odd.Cost = "odd", -7, -1, 5, math.NaN(), math.Inf(1)
	s.Record(odd)
	if err := s.Flush(ctxT(t, 30*time.Second)); err != nil {
		t.Fatal(err)
	}
	var (
		sec                                                 time.Time
		ms, httpStatus, attempt                             uint16
		keyID, fp, statusName, method, host, op, tr, sp, et string
		statusID                                            uint8
		latency                                             uint32
		reqB, respB                                         int64
		model, client                                       string
		in, out, cached                                     int64
		units, cost                                         float64
	)
	err := srv.Conn(t).QueryRow(context.Background(), `SELECT event_time, event_ms, key_id, key_fingerprint, status_id, status,
		http_status, latency_us, attempt, method, host, operation, request_bytes, response_bytes, trace_id, span_id, error_type,
		model, client, input_tokens, output_tokens, cached_tokens, units, cost
		FROM default.`+cfg.Table+` WHERE key_id != 'odd'`).Scan(&sec, &ms, &keyID, &fp, &statusID, &statusName, &httpStatus, &latency, &attempt,
		&method, &host, &op, &reqB, &respB, &tr, &sp, &et, &model, &client, &in, &out, &cached, &units, &cost)
	if err != nil {
		t.Fatal(err)
	}
	got := fmt.Sprint(sec.Unix(), ms, keyID, fp, statusID, statusName, httpStatus, latency, attempt, method, host, op, reqB, respB, tr, sp, et,
		model, client, in, out, cached, units, cost)
	want := fmt.Sprint(e.Time.Unix(), 123, e.KeyID, e.KeyFingerprint, 9, "reach limit", 429, 1234567, 2, "POST",
		"api.example.com:8443", "CreateThing", -1, 512, "deadbeef000000000000000000000001", "cafe000000000002", "rate_limited",
		e.Model, e.Client, int64(1<<40), 0, -1, -1, 0.000123)
	if got != want {
		t.Errorf("row:\n got %s\nwant %s", got, want)
	}
	err = srv.Conn(t).QueryRow(context.Background(), `SELECT input_tokens, output_tokens, cached_tokens, units, cost FROM default.`+cfg.Table+
		` WHERE key_id = 'odd'`).Scan(&in, &out, &cached, &units, &cost)
	if err != nil || in != -1 || out != -1 || cached != 5 || units != -1 || cost != -1 {
		t.Errorf("odd values read %d %d %d %v %v, %v; want -1 -1 5 -1 -1", in, out, cached, units, cost, err)
	}
}

// TestLegacySchema checks the table that New creates on this server
// (18.16): DateTime plus milliseconds, plain strings, the rollup and its
// view.
func TestLegacySchema(t *testing.T) {
	srv := chtest.Shared(t)
	cfg := testConfig(t, srv)
	cfg.TTL = time.Hour // ignored here, with a warning
	var logs lockedBuffer
	cfg.Logger = slog.New(slog.NewTextHandler(&logs, nil))
	newStore(t, cfg)
	types := map[string]string{}
	rows, err := srv.Conn(t).Query(context.Background(), "SELECT name, type FROM system.columns WHERE database = 'default' AND table = '"+cfg.Table+"'")
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var n, ty string
		rows.Scan(&n, &ty)
		types[n] = ty
	}
	for col, want := range map[string]string{
		"event_time": "DateTime('UTC')", "event_ms": "UInt16", "event_id": "UUID", "key_id": "String",
		"status": "String", "latency_us": "UInt32", "request_bytes": "Int64", "trace_id": "String",
	} {
		if types[col] != want {
			t.Errorf("column %s: %q, want %q", col, types[col], want)
		}
	}
	for col, want := range map[string]string{"model": "String", "client": "String", "input_tokens": "Int64", "units": "Float64", "cost": "Float64"} {
		if types[col] != want {
			t.Errorf("column %s: %q, want %q", col, types[col], want)
		}
	}
	if len(types) != 25 {
		t.Errorf("%d columns: %v", len(types), types)
	}
	var n uint64
	srv.Conn(t).QueryRow(context.Background(), "SELECT count() FROM system.tables WHERE database = 'default' AND name IN ('"+
		cfg.Table+"_1m', '"+cfg.Table+"_1m_mv')").Scan(&n)
	if n != 2 {
		t.Errorf("%d of the rollup table and view exist", n)
	}
	if !strings.Contains(logs.String(), "no TTL") {
		t.Errorf("no warning about the ignored TTL in the log:\n%s", logs.String())
	}
}

// TestKeyTypesOfExistingTables checks tables that an earlier version of
// the store created on 18.16 with LowCardinality(String) strings, alone or
// beside new ones: the rollup and its view follow the types that exist,
// and every event reaches both tables (18.16 refuses a view that pushes a
// String into a LowCardinality column, or the reverse, unless it converts).
func TestKeyTypesOfExistingTables(t *testing.T) {
	srv := chtest.Shared(t)
	for _, c := range []struct {
		name string
		ddl  func(table string) []string // run before New
		want string                      // key_id's type in the rollup afterwards
	}{
		{"event table with LowCardinality, no rollup", func(table string) []string {
			return []string{legacyLCTable(table)}
		}, "LowCardinality(String)"},
		{"new event table, LowCardinality rollup", func(table string) []string {
			return []string{legacyLCRollup(table)}
		}, "LowCardinality(String)"},
		{"both with LowCardinality", func(table string) []string {
			return []string{legacyLCTable(table), legacyLCRollup(table)}
		}, "LowCardinality(String)"},
	} {
		t.Run(c.name, func(t *testing.T) {
			cfg := testConfig(t, srv)
			conn := srv.Conn(t)
			ctx := ctxT(t, 30*time.Second)
			dctx := chgo.Context(ctx, chgo.WithSettings(chgo.Settings{"allow_experimental_low_cardinality_type": 1}))
			for _, q := range c.ddl(cfg.Table) {
				if err := conn.Exec(dctx, q); err != nil {
					t.Fatal(err)
				}
			}
			s := newStore(t, cfg)
			for i := range 100 {
				s.Record(event(i))
			}
			if err := s.Flush(ctx); err != nil {
				t.Fatal(err)
			}
			var typ string
			if err := conn.QueryRow(ctx, "SELECT type FROM system.columns WHERE database = 'default' AND table = '"+
				cfg.Table+"_1m' AND name = 'key_id'").Scan(&typ); err != nil || typ != c.want {
				t.Errorf("rollup key_id type %q, %v; want %q", typ, err, c.want)
			}
			var raw, rolled uint64
			conn.QueryRow(ctx, "SELECT count() FROM "+cfg.Table).Scan(&raw)
			conn.QueryRow(ctx, "SELECT countMerge(events) FROM "+cfg.Table+"_1m").Scan(&rolled)
			if raw != 100 || rolled != 100 {
				t.Errorf("event table holds %d events, rollup %d; want 100 each", raw, rolled)
			}
		})
	}
}

// legacyLCTable and legacyLCRollup are the DDL of an earlier version of
// the store on 18.16, with LowCardinality(String) strings.
func legacyLCTable(table string) string {
	return "CREATE TABLE `default`.`" + table + "` (event_time DateTime('UTC'), event_ms UInt16, event_id UUID, " +
		"key_id LowCardinality(String), key_fingerprint LowCardinality(String), status_id UInt8, status LowCardinality(String), " +
		"http_status UInt16, latency_us UInt32, attempt UInt16, method LowCardinality(String), host LowCardinality(String), " +
		"operation LowCardinality(String), request_bytes Int64, response_bytes Int64, trace_id String, span_id String, " +
		"error_type LowCardinality(String)) ENGINE = MergeTree() PARTITION BY toYYYYMM(event_time) ORDER BY (key_id, event_time)"
}

func legacyLCRollup(table string) string {
	return "CREATE TABLE `default`.`" + table + "_1m` (minute DateTime('UTC'), key_id LowCardinality(String), status_id UInt8, " +
		"events AggregateFunction(count), latency AggregateFunction(quantiles(0.5, 0.9, 0.99), UInt32), " +
		"req_bytes AggregateFunction(sum, Int64), resp_bytes AggregateFunction(sum, Int64)) " +
		"ENGINE = AggregatingMergeTree() PARTITION BY toYYYYMM(minute) ORDER BY (key_id, minute, status_id)"
}

// TestTrickyKeyIDs checks that key IDs reach the table and the queries
// unharmed, whatever their bytes.
func TestTrickyKeyIDs(t *testing.T) {
	srv := chtest.Shared(t)
	cfg := testConfig(t, srv)
	s := newStore(t, cfg)
	keys := []string{"plain", "it's", `back\slash`, `\'`, "'; DROP TABLE x; --", "nul\x00byte", "日本語", "tab\tnewline\n", "bad\xffutf8", ""}
	for i, k := range keys {
		for range i + 1 {
			s.Record(recorder.Event{Time: base, KeyID: k, Status: status.Success})
		}
	}
	if err := s.Flush(ctxT(t, 30*time.Second)); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	all, err := s.UsageByKey(ctx, recorder.Query{})
	if err != nil {
		t.Fatal(err)
	}
	for i, k := range keys {
		stored := strings.ToValidUTF8(k, "\uFFFD")
		if all[stored] != int64(i+1) {
			t.Errorf("UsageByKey()[%q] = %d, want %d", stored, all[stored], i+1)
		}
		n, err := s.UsageCount(ctx, recorder.Query{KeyID: k})
		if k == "" {
			continue // the empty KeyID selects every key
		}
		if err != nil || n != int64(i+1) {
			t.Errorf("UsageCount(key %q) = %d, %v; want %d", k, n, err, i+1)
		}
	}
}

func TestWrongCredentials(t *testing.T) {
	srv := chtest.Shared(t)
	for _, allow := range []bool{false, true} {
		cfg := testConfig(t, srv)
		cfg.Username, cfg.Password = chtest.PasswordUser, "wrong"
		cfg.AllowUnavailable = allow
		s, err := clickhouse.New(ctxT(t, 30*time.Second), cfg)
		if !errors.Is(err, clickhouse.ErrAuth) || s != nil {
			t.Fatalf("AllowUnavailable=%v: New with a wrong password: %v, want ErrAuth", allow, err)
		}
		if strings.Contains(err.Error(), "wrong") {
			t.Errorf("the error shows the password: %v", err)
		}
	}
	cfg := testConfig(t, srv)
	cfg.Username, cfg.Password = chtest.PasswordUser, chtest.Password
	s := newStore(t, cfg)
	s.Record(event(0))
	if err := s.Flush(ctxT(t, 30*time.Second)); err != nil {
		t.Fatal(err)
	}
}

func TestIncompatibleTable(t *testing.T) {
	srv := chtest.Shared(t)
	conn := srv.Conn(t)
	ctx := context.Background()
	cfg := testConfig(t, srv)
	if err := conn.Exec(ctx, "CREATE TABLE default."+cfg.Table+
		" (event_time DateTime, key_id String, status_id UInt16, latency_us UInt32) ENGINE = MergeTree() ORDER BY event_time"); err != nil {
		t.Fatal(err)
	}
	_, err := clickhouse.New(ctxT(t, 30*time.Second), cfg)
	var se *clickhouse.SchemaError
	if !errors.As(err, &se) {
		t.Fatalf("New on an incompatible table: %v, want a *SchemaError", err)
	}
	msg := err.Error()
	for _, want := range []string{"default." + cfg.Table, "event_ms", "event_id", "trace_id", "status_id: has UInt16, want UInt8"} {
		if !strings.Contains(msg, want) {
			t.Errorf("error %q does not name %q", msg, want)
		}
	}
	if se.Table != "default."+cfg.Table || len(se.Missing) != 21 {
		t.Errorf("SchemaError: table %q, missing %q", se.Table, se.Missing)
	}
}

func TestUnreachableAddress(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close() // nothing listens there now
	cfg := clickhouse.Config{Addrs: []string{addr}, DialTimeout: time.Second, Table: tableName(t)}
	start := time.Now()
	_, err = clickhouse.New(ctxT(t, 30*time.Second), cfg)
	if !errors.Is(err, clickhouse.ErrUnavailable) {
		t.Fatalf("New on a closed port: %v, want ErrUnavailable", err)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("New took %v to fail", d)
	}
}

func TestBadConfig(t *testing.T) {
	for field, cfg := range map[string]clickhouse.Config{
		"Table":         {Table: "a.b"},
		"Database":      {Database: "a`b"},
		"BatchSize":     {BatchSize: -1},
		"QueueSize":     {QueueSize: -1},
		"SpillMaxBytes": {SpillMaxBytes: -1},
		"ReadTimeout":   {ReadTimeout: -time.Second},
		"RollupTTL":     {RollupTTL: -time.Hour},
		"MinBackoff":    {MinBackoff: time.Minute, MaxBackoff: time.Second},
		"OnFull":        {OnFull: 7},
		"Addrs[1]":      {Addrs: []string{"x:9000", ""}},
	} {
		_, err := clickhouse.New(context.Background(), cfg)
		var ce *apipool.ConfigError
		if !errors.Is(err, apipool.ErrInvalidConfig) || !errors.As(err, &ce) || ce.Field != "clickhouse.Config."+field {
			t.Errorf("%s: %v, want a *ConfigError naming clickhouse.Config.%s", field, err, field)
		}
	}
}

// TestServerDownAtStart: with AllowUnavailable, New succeeds while the
// server is down, events queue, and they arrive once it is up.
func TestServerDownAtStart(t *testing.T) {
	srv := chtest.StartPrivate(t)
	if err := srv.Stop(); err != nil {
		t.Fatal(err)
	}
	cfg := testConfig(t, srv)
	if _, err := clickhouse.New(ctxT(t, 30*time.Second), cfg); !errors.Is(err, clickhouse.ErrUnavailable) {
		t.Fatalf("New without AllowUnavailable: %v, want ErrUnavailable", err)
	}
	cfg.AllowUnavailable = true
	s := newStore(t, cfg)
	if !errors.Is(s.Err(), clickhouse.ErrUnavailable) {
		t.Errorf("Err() = %v, want ErrUnavailable", s.Err())
	}
	const n = 3000
	for i := range n {
		s.Record(event(i))
	}
	if _, err := s.UsageCount(context.Background(), recorder.Query{}); !errors.Is(err, clickhouse.ErrUnavailable) {
		t.Errorf("UsageCount while down: %v, want ErrUnavailable", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	err := s.Flush(ctx)
	cancel()
	if !errors.Is(err, context.DeadlineExceeded) || !errors.Is(err, clickhouse.ErrUnavailable) {
		t.Errorf("Flush while down: %v, want the deadline and the last error", err)
	}
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	if err := s.Flush(ctxT(t, 30*time.Second)); err != nil {
		t.Fatal(err)
	}
	wantExactlyOnce(t, srv, cfg.Table, n)
	if n, err := s.UsageCount(context.Background(), recorder.Query{}); err != nil || n != 3000 {
		t.Errorf("UsageCount = %d, %v", n, err)
	}
	if s.Err() != nil {
		t.Errorf("Err() = %v after recovery", s.Err())
	}
}

// TestServerStoppedMidStream stops the server while events stream in and
// starts it again: every event recorded before Close is in the table once.
func TestServerStoppedMidStream(t *testing.T) {
	srv := chtest.StartPrivate(t)
	cfg := testConfig(t, srv)
	cfg.BatchSize = 2000
	s, err := clickhouse.New(ctxT(t, 30*time.Second), cfg)
	if err != nil {
		t.Fatal(err)
	}
	var (
		mu       sync.Mutex
		recorded int
		stop     = make(chan struct{})
		streamed = make(chan struct{})
	)
	go func() {
		defer close(streamed)
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			s.Record(event(i))
			mu.Lock()
			recorded = i + 1
			mu.Unlock()
			if i%20 == 19 {
				time.Sleep(time.Millisecond) // under 20k events a second
			}
		}
	}()
	waitFor(t, "some events written", func() bool { return countStream(t, srv, cfg.Table).rows > 2000 })
	if err := srv.Stop(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the store to notice", func() bool { return s.Err() != nil })
	waitFor(t, "events to queue", func() bool { return s.QueueLen() > 5000 })
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "events to flow again", func() bool { return s.Err() == nil && s.QueueLen() < 5000 })
	close(stop)
	<-streamed
	if err := s.Close(ctxT(t, 60*time.Second)); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if s.Dropped() != 0 {
		t.Fatalf("Dropped %d", s.Dropped())
	}
	mu.Lock()
	n := recorded
	mu.Unlock()
	wantExactlyOnce(t, srv, cfg.Table, n)
	t.Logf("%d events, the server stopped and started in between", n)
}

// TestPipelinedBatchesExactlyOnce records a fast stream, so that the writer
// builds each batch while the one before is sent, and stops the server in
// the middle: a batch built ahead is dropped when the one before fails,
// its events stay queued, and every event arrives exactly once.
func TestPipelinedBatchesExactlyOnce(t *testing.T) {
	srv := chtest.StartPrivate(t)
	cfg := testConfig(t, srv)
	cfg.BatchSize = 1000
	cfg.QueueSize = 20_000
	cfg.OnFull = clickhouse.Block
	s, err := clickhouse.New(ctxT(t, 30*time.Second), cfg)
	if err != nil {
		t.Fatal(err)
	}
	const n = 100_000
	var recorded atomic.Int64
	go func() {
		for i := range n {
			s.Record(event(i))
			recorded.Store(int64(i + 1))
		}
	}()
	waitFor(t, "batches built ahead", func() bool { return clickhouse.Pipelined(s) > 5 })
	if err := srv.Stop(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the store to notice", func() bool { return s.Err() != nil })
	time.Sleep(200 * time.Millisecond) // queue, and spill
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "every event recorded", func() bool { return recorded.Load() == n })
	if err := s.Close(ctxT(t, 60*time.Second)); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if s.Dropped() != 0 {
		t.Fatalf("Dropped %d", s.Dropped())
	}
	wantExactlyOnce(t, srv, cfg.Table, n)
	t.Logf("%d events, %d batches built ahead", n, clickhouse.Pipelined(s))
}

// TestSpillWhileDown fills more than the queue holds while the server is
// down: the excess goes to the spill file and is replayed in order.
func TestSpillWhileDown(t *testing.T) {
	srv := chtest.StartPrivate(t)
	cfg := testConfig(t, srv)
	cfg.BatchSize = 500
	cfg.QueueSize = 2000
	cfg.OnFull = clickhouse.Block // Record waits for the spill to make room, rather than drop
	cfg.SpillDir = t.TempDir()
	s := newStore(t, cfg)
	if err := srv.Stop(); err != nil {
		t.Fatal(err)
	}
	const n = 20_000
	for i := range n {
		s.Record(event(i))
	}
	// At most the queue and two batches are held in memory.
	waitFor(t, "the excess to spill", func() bool { return s.Spilled() >= n-int64(cfg.QueueSize)-2*int64(cfg.BatchSize) })
	path := filepath.Join(cfg.SpillDir, "default."+cfg.Table+".spill")
	if st, err := os.Stat(path); err != nil || st.Size() < 100_000 {
		t.Fatalf("spill file: %v", err)
	}
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	if err := s.Flush(ctxT(t, 60*time.Second)); err != nil {
		t.Fatal(err)
	}
	wantExactlyOnce(t, srv, cfg.Table, n)
	if s.Spilled() != 0 || s.Dropped() != 0 {
		t.Errorf("after replay: Spilled %d, Dropped %d", s.Spilled(), s.Dropped())
	}
	if st, err := os.Stat(path); err != nil || st.Size() > 100 {
		t.Errorf("spill file after replay: size %d, %v; want it truncated", st.Size(), err)
	}
}

// TestCloseWhileDown: Close gives up at its deadline; with a spill file
// the events are kept and the next store replays them; without, they are
// counted as lost.
func TestCloseWhileDown(t *testing.T) {
	srv := chtest.StartPrivate(t)
	cfg := testConfig(t, srv)
	cfg.SpillDir = t.TempDir()
	s, err := clickhouse.New(ctxT(t, 30*time.Second), cfg)
	if err != nil {
		t.Fatal(err)
	}
	s.Record(event(0))
	if err := s.Flush(ctxT(t, 30*time.Second)); err != nil {
		t.Fatal(err)
	}
	if err := srv.Stop(); err != nil {
		t.Fatal(err)
	}
	const n = 1500
	for i := 1; i < n; i++ {
		s.Record(event(i))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	err = s.Close(ctx)
	cancel()
	var ce *clickhouse.CloseError
	if !errors.As(err, &ce) || ce.Spilled != n-1 || ce.Lost != 0 {
		t.Fatalf("Close while down: %v, want %d spilled", err, n-1)
	}
	if err := s.Close(context.Background()); err != nil {
		t.Errorf("second Close: %v", err)
	}

	// Without a spill file, the same events are lost, and counted.
	cfg2 := cfg
	cfg2.SpillDir = ""
	cfg2.AllowUnavailable = true
	s2, err := clickhouse.New(ctxT(t, 30*time.Second), cfg2)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 10 {
		s2.Record(event(n + i))
	}
	ctx, cancel = context.WithTimeout(context.Background(), 300*time.Millisecond)
	err = s2.Close(ctx)
	cancel()
	if !errors.As(err, &ce) || ce.Spilled != 0 || ce.Lost != 10 || s2.Dropped() != 10 {
		t.Fatalf("Close while down without a spill file: %v, Dropped %d; want 10 lost", err, s2.Dropped())
	}
	if !strings.Contains(err.Error(), "10 event(s) not written") {
		t.Errorf("error message: %v", err)
	}

	// A new store on the spill file replays it once the server is up.
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	s3 := newStore(t, cfg)
	if err := s3.Flush(ctxT(t, 30*time.Second)); err != nil {
		t.Fatal(err)
	}
	wantExactlyOnce(t, srv, cfg.Table, n)
}

// waitFor polls cond until it holds, failing t after a deadline.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestDropPolicyCounts(t *testing.T) {
	srv := chtest.StartPrivate(t)
	cfg := testConfig(t, srv)
	cfg.BatchSize = 100
	cfg.QueueSize = 1000
	s := newStore(t, cfg)
	if err := srv.Stop(); err != nil {
		t.Fatal(err)
	}
	for i := range 5000 {
		s.Record(event(i))
	}
	// At most the queue and two batches (the one being sent and the one
	// built behind it) are held; the rest is dropped.
	held := s.QueueLen()
	if held > cfg.QueueSize+2*cfg.BatchSize || s.Dropped() != uint64(5000-held) {
		t.Fatalf("QueueLen %d, Dropped %d", held, s.Dropped())
	}
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	if err := s.Flush(ctxT(t, 30*time.Second)); err != nil {
		t.Fatal(err)
	}
	if c := countStream(t, srv, cfg.Table); c.rows != uint64(held) || c.ids != uint64(held) {
		t.Fatalf("table: %+v, want the %d held events", c, held)
	}
}

func TestNoRollup(t *testing.T) {
	srv := chtest.Shared(t)
	cfg := testConfig(t, srv)
	cfg.NoRollup = true
	s := newStore(t, cfg)
	for i := range 100 {
		s.Record(event(i * 60_000)) // one a minute
	}
	if err := s.Flush(ctxT(t, 30*time.Second)); err != nil {
		t.Fatal(err)
	}
	n, err := s.UsageCount(context.Background(), recorder.Query{Since: base, Until: base.Add(24 * time.Hour)})
	if err != nil || n != 100 {
		t.Fatalf("UsageCount = %d, %v", n, err)
	}
	var tables uint64
	srv.Conn(t).QueryRow(context.Background(), "SELECT count() FROM system.tables WHERE database = 'default' AND name LIKE '"+cfg.Table+"_1m%'").Scan(&tables)
	if tables != 0 {
		t.Errorf("%d rollup tables with NoRollup", tables)
	}
}

// TestServerKilledMidStream kills the server (SIGKILL) while events
// stream in: none is lost. A batch whose acknowledgement the kill cut off
// may be written twice, with the same event ids.
func TestServerKilledMidStream(t *testing.T) {
	srv := chtest.StartPrivate(t)
	cfg := testConfig(t, srv)
	cfg.BatchSize = 1000
	s, err := clickhouse.New(ctxT(t, 30*time.Second), cfg)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	record := func(k int) {
		for range k {
			s.Record(event(n))
			n++
		}
	}
	record(5000)
	waitFor(t, "some events written", func() bool { return countStream(t, srv, cfg.Table).rows > 0 })
	record(5000)
	if err := srv.Kill(); err != nil {
		t.Fatal(err)
	}
	record(5000)
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	record(5000)
	if err := s.Close(ctxT(t, 60*time.Second)); err != nil {
		t.Fatalf("Close: %v", err)
	}
	got := countStream(t, srv, cfg.Table)
	if got.ids != uint64(n) || got.distinct != uint64(n) || got.rows < uint64(n) {
		t.Fatalf("table holds %+v, want each of %d events at least once", got, n)
	}
	if got.rows > got.ids {
		t.Logf("%d rows written twice (acknowledgement lost to the kill)", got.rows-got.ids)
	}
}

// TestClockDatesUndatedEvents: an event without a time gets Config.Clock's.
func TestClockDatesUndatedEvents(t *testing.T) {
	srv := chtest.Shared(t)
	cfg := testConfig(t, srv)
	at := time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)
	cfg.Clock = fakeclock.New(at)
	s := newStore(t, cfg)
	s.Record(recorder.Event{KeyID: "k"})
	if err := s.Flush(ctxT(t, 30*time.Second)); err != nil {
		t.Fatal(err)
	}
	n, err := s.UsageCount(context.Background(), recorder.Query{Since: at, Until: at.Add(time.Millisecond)})
	if err != nil || n != 1 {
		t.Errorf("an event with a zero Time is not dated by the clock: UsageCount = %d, %v", n, err)
	}
}

func TestZeroTimeAndFlushAfterClose(t *testing.T) {
	srv := chtest.Shared(t)
	cfg := testConfig(t, srv)
	s, err := clickhouse.New(ctxT(t, 30*time.Second), cfg)
	if err != nil {
		t.Fatal(err)
	}
	before := time.Now().Truncate(time.Second)
	s.Record(recorder.Event{KeyID: "k"})
	if err := s.Flush(ctxT(t, 30*time.Second)); err != nil {
		t.Fatal(err)
	}
	n, err := s.UsageCount(context.Background(), recorder.Query{Since: before, Until: time.Now().Add(time.Second)})
	if err != nil || n != 1 {
		t.Errorf("an event with a zero Time is not stamped now: UsageCount = %d, %v", n, err)
	}
	if err := s.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := s.Flush(context.Background()); !errors.Is(err, recorder.ErrClosed) {
		t.Errorf("Flush after Close: %v, want ErrClosed", err)
	}
	s.Record(recorder.Event{})
	if s.Dropped() != 1 {
		t.Errorf("Dropped = %d after a Record after Close", s.Dropped())
	}
}

// TestTableDroppedWhileRunning: the store recreates a table dropped under
// it and writes the events recorded since.
func TestTableDroppedWhileRunning(t *testing.T) {
	srv := chtest.Shared(t)
	cfg := testConfig(t, srv)
	var logs lockedBuffer
	cfg.Logger = slog.New(slog.NewTextHandler(&logs, nil))
	s := newStore(t, cfg)
	for i := range 100 {
		s.Record(event(i))
	}
	if err := s.Flush(ctxT(t, 30*time.Second)); err != nil {
		t.Fatal(err)
	}
	if err := srv.Conn(t).Exec(context.Background(), "DROP TABLE default."+cfg.Table); err != nil {
		t.Fatal(err)
	}
	for i := range 100 {
		s.Record(event(i))
	}
	if err := s.Flush(ctxT(t, 30*time.Second)); err != nil {
		t.Fatal(err)
	}
	wantExactlyOnce(t, srv, cfg.Table, 100)
	// Short windows read the new table. The rollup was not dropped: long
	// windows still count the events of the dropped table (the log says
	// so).
	q := recorder.Query{Since: base, Until: base.Add(time.Minute)}
	if n, err := s.UsageCount(context.Background(), q); err != nil || n != 100 {
		t.Errorf("UsageCount(a minute) = %d, %v; want 100", n, err)
	}
	if n, err := s.UsageCount(context.Background(), recorder.Query{}); err != nil || n != 200 {
		t.Errorf("UsageCount(everything) = %d, %v; want 200 from the rollup", n, err)
	}
	if !strings.Contains(logs.String(), "rollup") {
		t.Errorf("no warning about the rollup in the log:\n%s", logs.String())
	}
}
