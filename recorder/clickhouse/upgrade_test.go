package clickhouse_test

import (
	"context"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	chgo "github.com/ClickHouse/clickhouse-go/v2"
	"github.com/apipool-ng/apipool/internal/chtest"
	"github.com/apipool-ng/apipool/recorder"
	"github.com/apipool-ng/apipool/recorder/clickhouse"
	"github.com/apipool-ng/apipool/status"
)

// beforeUsageDDL returns the DDL that New ran on 18.16 before the usage
// columns (testdata/schema_before_usage_18.16*.sql, saved from that
// version's planSchema), for table and, when not "", cluster.
func beforeUsageDDL(t *testing.T, table, cluster string) []string {
	file := "testdata/schema_before_usage_18.16.sql"
	if cluster != "" {
		file = "testdata/schema_before_usage_18.16_cluster.sql"
	}
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	ddl := strings.NewReplacer("old_events", table, "old_cluster", cluster).Replace(string(b))
	return strings.Split(strings.TrimSuffix(ddl, ";\n"), ";\n\n")
}

// insertOldRows inserts n events of key "old" into table as the store
// wrote them before the usage columns (naming its columns then), a second
// apart from at.
func insertOldRows(t *testing.T, conn chgo.Conn, table string, at time.Time, n int) {
	t.Helper()
	q := "INSERT INTO " + table + " (event_time, event_ms, event_id, key_id, key_fingerprint, status_id, status, http_status, latency_us, attempt, " +
		"method, host, operation, request_bytes, response_bytes, trace_id, span_id, error_type) " +
		"SELECT toDateTime(" + strconv.FormatInt(at.Unix(), 10) + " + number), toUInt16(0), generateUUIDv4(), 'old', 'fp', toUInt8(1), 'success', " +
		"toUInt16(200), toUInt32(1000), toUInt16(1), 'GET', 'h', '', toInt64(-1), toInt64(10), '', '', '' FROM system.numbers LIMIT " + strconv.Itoa(n)
	if err := conn.Exec(ctxT(t, 30*time.Second), q); err != nil {
		t.Fatal(err)
	}
}

// usageEvent is a success of key "new", model m1 and client web, with its
// usage.
func usageEvent(at time.Time) recorder.Event {
	e := recorder.Unknown()
	e.Time, e.KeyID, e.Status, e.Latency = at, "new", status.Success, 20*time.Millisecond
	e.Model, e.Client = "m1", "web"
	e.InputTokens, e.OutputTokens, e.CachedTokens, e.Units, e.Cost = 1000, 200, 100, 3, 0.5
	return e
}

// checkUpgraded checks a store opened on tables made before the usage
// columns, holding 5 old events of key "old" from at: they read as of no
// model nor client, their usage not known; 3 new events count with theirs,
// in short windows (the event table) and long ones (the old rollup, which
// lacks the usage, so the event table again for usage and models).
func checkUpgraded(t *testing.T, s *clickhouse.Store, at time.Time) {
	t.Helper()
	ctx := ctxT(t, time.Minute)
	for i := range 3 {
		s.Record(usageEvent(at.Add(time.Duration(10+i) * time.Second)))
	}
	if err := s.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	old := recorder.Totals{Events: 5, TokensUnknown: 5, UnitsUnknown: 5, CostUnknown: 5}
	nw := recorder.Totals{Events: 3, InputTokens: 3000, OutputTokens: 600, CachedTokens: 300, Units: 9, Cost: 1.5}
	short := recorder.Query{Since: at, Until: at.Add(time.Minute)}
	long := recorder.Query{Since: at.Add(-2 * time.Hour), Until: at.Add(2 * time.Hour)}
	for _, q := range []recorder.Query{short, long} {
		got, err := s.TotalsBy(ctx, q, recorder.ByKey)
		if err != nil || len(got) != 2 || got["old"] != old || got["new"] != nw {
			t.Errorf("TotalsBy(%v..%v, by key) = %+v, %v; want old %+v, new %+v", q.Since, q.Until, got, err, old, nw)
		}
		got, err = s.TotalsBy(ctx, q, recorder.ByModel)
		if err != nil || len(got) != 2 || got[""] != old || got["m1"] != nw {
			t.Errorf("TotalsBy(%v..%v, by model) = %+v, %v; want \"\" %+v, m1 %+v", q.Since, q.Until, got, err, old, nw)
		}
		if n, err := s.UsageCount(ctx, q); err != nil || n != 8 {
			t.Errorf("UsageCount(%v..%v) = %d, %v; want 8", q.Since, q.Until, n, err)
		}
		mq := q
		mq.Model, mq.Client = "m1", "web"
		if n, err := s.UsageCount(ctx, mq); err != nil || n != 3 {
			t.Errorf("UsageCount(%v..%v, m1, web) = %d, %v; want 3", q.Since, q.Until, n, err)
		}
	}
}

// TestUpgradeFromTablesWithoutUsage: tables made by the DDL of before the
// usage columns, holding events, get the columns when a store opens on
// them (old rows: ” and -1); the old rollup and its view are kept, and
// answer what they can.
func TestUpgradeFromTablesWithoutUsage(t *testing.T) {
	srv := chtest.Shared(t)
	cfg := testConfig(t, srv)
	conn := srv.Conn(t)
	ctx := ctxT(t, time.Minute)
	for _, q := range beforeUsageDDL(t, cfg.Table, "") {
		if err := conn.Exec(ctx, q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	at := time.Date(2026, 3, 4, 5, 6, 0, 0, time.UTC)
	insertOldRows(t, conn, "default."+cfg.Table, at, 5)
	var logs lockedBuffer
	cfg.Logger = slog.New(slog.NewTextHandler(&logs, nil))
	s := newStore(t, cfg)
	if !strings.Contains(logs.String(), "added the usage columns") || !strings.Contains(logs.String(), "the rollup was made before the usage columns") {
		t.Errorf("the log does not say the columns were added and the rollup kept:\n%s", logs.String())
	}
	types := columnTypes(t, conn, cfg.Table)
	for col, want := range map[string]string{"model": "String", "client": "String", "input_tokens": "Int64", "output_tokens": "Int64",
		"cached_tokens": "Int64", "units": "Float64", "cost": "Float64"} {
		if types[col] != want {
			t.Errorf("column %s: %q, want %q", col, types[col], want)
		}
	}
	var model, client string
	var in, out, cached int64
	var units, cost float64
	if err := conn.QueryRow(ctx, "SELECT model, client, input_tokens, output_tokens, cached_tokens, units, cost FROM default."+cfg.Table+" LIMIT 1").
		Scan(&model, &client, &in, &out, &cached, &units, &cost); err != nil || model != "" || client != "" || in != -1 || out != -1 || cached != -1 || units != -1 || cost != -1 {
		t.Errorf("an old row reads %q %q %d %d %d %v %v, %v; want no model nor client, and -1s", model, client, in, out, cached, units, cost, err)
	}
	checkUpgraded(t, s, at)
	// A second store finds the columns there, and adds nothing.
	var logs2 lockedBuffer
	cfg.Logger = slog.New(slog.NewTextHandler(&logs2, nil))
	newStore(t, cfg)
	if strings.Contains(logs2.String(), "added the usage columns") {
		t.Errorf("a second store added columns again:\n%s", logs2.String())
	}
}

// TestClusterUpgradeFromTablesWithoutUsage: the same on a cluster, made
// ON CLUSTER by the DDL of before the usage columns: the store adds them
// ON CLUSTER to the local and the Distributed tables of every replica.
func TestClusterUpgradeFromTablesWithoutUsage(t *testing.T) {
	c := chtest.SharedCluster(t)
	cfg := clusterConfig(t, c)
	conn := c.Replicas[0].Conn(t)
	ctx := ctxT(t, 2*time.Minute)
	for _, q := range beforeUsageDDL(t, cfg.Table, c.Name) {
		if err := conn.Exec(ctx, q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	at := time.Date(2026, 3, 4, 5, 6, 0, 0, time.UTC)
	insertOldRows(t, conn, "default."+cfg.Table+"_local", at, 5)
	s := newStore(t, cfg)
	for _, r := range c.Replicas {
		for _, tbl := range []string{cfg.Table, cfg.Table + "_local"} {
			if typ := columnTypes(t, r.Conn(t), tbl)["cost"]; typ != "Float64" {
				t.Errorf("replica %s: %s.cost is %q, want Float64", r.Replica, tbl, typ)
			}
		}
	}
	checkUpgraded(t, s, at)
	syncReplicas(t, c, cfg.Table+"_local")
	var n uint64
	if err := c.Replicas[1].Conn(t).QueryRow(ctx, "SELECT count() FROM default."+cfg.Table+" WHERE model = 'm1' AND cost = 0.5").Scan(&n); err != nil || n != 3 {
		t.Errorf("replica %s reads %d events of m1 costing 0.5, %v; want 3", c.Replicas[1].Replica, n, err)
	}
}

// columnTypes returns the columns of table in the default database.
func columnTypes(t *testing.T, conn chgo.Conn, table string) map[string]string {
	t.Helper()
	rows, err := conn.Query(context.Background(), "SELECT name, type FROM system.columns WHERE database = 'default' AND table = '"+table+"'")
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	out := map[string]string{}
	for rows.Next() {
		var n, ty string
		if err := rows.Scan(&n, &ty); err != nil {
			t.Fatal(err)
		}
		out[n] = ty
	}
	return out
}
