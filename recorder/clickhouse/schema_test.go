package clickhouse

import (
	"errors"
	"strings"
	"testing"
	"time"
)

func TestParseVersion(t *testing.T) {
	for _, c := range []struct {
		in   string
		want version
		bad  bool
	}{
		{in: "18.16.1", want: version{18, 16}},
		{in: "23.8.2.7", want: version{23, 8}},
		{in: "25.3.1.2703", want: version{25, 3}},
		{in: "1.1.54385", want: version{1, 1}},
		{in: " 21.1 ", want: version{21, 1}},
		{in: "", bad: true},
		{in: "banana", bad: true},
		{in: "21", bad: true},
		{in: "-1.2", bad: true},
	} {
		got, err := parseVersion(c.in)
		if (err != nil) != c.bad || !c.bad && got != c.want {
			t.Errorf("parseVersion(%q) = %v, %v; want %v, bad=%v", c.in, got, err, c.want, c.bad)
		}
	}
}

func TestFeaturesFor(t *testing.T) {
	legacy := features{LowCardinalitySetting: true}
	modern := features{DateTime64: true, Codecs: true, TTL: true, LowCardinality: true, Dedup: true}
	modernNoDedup := modern
	modernNoDedup.Dedup = false
	for _, c := range []struct {
		v    version
		want features
	}{
		{version{1, 1}, features{}},
		{version{18, 14}, features{}},
		{version{18, 16}, legacy},
		{version{19, 17}, legacy},
		{version{20, 12}, legacy},
		{version{21, 1}, modernNoDedup},
		{version{21, 7}, modernNoDedup},
		{version{21, 8}, modern},
		{version{23, 8}, modern},
		{version{25, 6}, modern},
	} {
		if got := featuresFor(c.v); got != c.want {
			t.Errorf("featuresFor(%v) = %+v, want %+v", c.v, got, c.want)
		}
	}
}

var testSchema = schemaConfig{Database: "db", Table: "events"}

func TestPlanSchemaLegacy(t *testing.T) {
	cfg := testSchema
	cfg.TTL = 24 * time.Hour
	cfg.RollupTTL = 48 * time.Hour
	p := planSchema(featuresFor(version{18, 16}), cfg)
	if p.Settings[lowCardinalitySetting] != 1 {
		t.Errorf("Settings = %v, want %s=1", p.Settings, lowCardinalitySetting)
	}
	for _, want := range []string{
		"CREATE TABLE IF NOT EXISTS `db`.`events`",
		"event_time       DateTime('UTC'),",
		"event_ms         UInt16,",
		"event_id         UUID,",
		"key_id           String,",
		"status           String,",
		"latency_us       UInt32,",
		"request_bytes    Int64,",
		"trace_id         String,",
		"model            String DEFAULT '',",
		"input_tokens     Int64 DEFAULT -1,",
		"cost             Float64 DEFAULT -1\n",
		"ENGINE = MergeTree()",
		"ORDER BY (key_id, event_time)",
	} {
		if !strings.Contains(p.Table, want) {
			t.Errorf("legacy table DDL lacks %q:\n%s", want, p.Table)
		}
	}
	for _, want := range []string{"model          String,", "input_sum      AggregateFunction(sum, Int64),", "ORDER BY (key_id, minute, status_id, model, client)"} {
		if !strings.Contains(p.Rollup, want) {
			t.Errorf("legacy rollup DDL lacks %q:\n%s", want, p.Rollup)
		}
	}
	for _, want := range []string{"    model,\n    client,\n", "sumState(toUInt64(cost >= 0)) AS cost_known", "GROUP BY minute, key_id, status_id, model, client"} {
		if !strings.Contains(p.View, want) {
			t.Errorf("legacy view DDL lacks %q:\n%s", want, p.View)
		}
	}
	for _, banned := range []string{"DateTime64", "CODEC", "TTL", "deduplication", "LowCardinality", "CAST"} {
		for _, stmt := range p.Statements() {
			if strings.Contains(stmt, banned) {
				t.Errorf("legacy DDL has %s:\n%s", banned, stmt)
			}
		}
	}
	if len(p.Warnings) != 2 {
		t.Errorf("Warnings = %q, want two (TTL and RollupTTL ignored)", p.Warnings)
	}
	if p.Layout.time64 {
		t.Error("legacy layout has time64")
	}
	if got := p.Layout.insertSQL("`db`.`events`"); !strings.HasPrefix(got, "INSERT INTO `db`.`events` (event_time, event_ms, event_id, key_id,") ||
		!strings.HasSuffix(got, "trace_id, span_id, error_type, model, client, input_tokens, output_tokens, cached_tokens, units, cost)") {
		t.Errorf("insertSQL = %s", got)
	}
	if len(p.Statements()) != 3 {
		t.Errorf("%d statements, want 3", len(p.Statements()))
	}
}

func TestPlanSchemaModern(t *testing.T) {
	cfg := testSchema
	cfg.TTL = 30 * 24 * time.Hour
	p := planSchema(featuresFor(version{24, 3}), cfg)
	if p.Settings != nil {
		t.Errorf("Settings = %v, want none", p.Settings)
	}
	for _, want := range []string{
		"event_time       DateTime64(3, 'UTC') CODEC(Delta, ZSTD(1)),",
		"latency_us       UInt32 CODEC(T64, ZSTD(1)),",
		"key_id           LowCardinality(String),",
		"TTL toDateTime(event_time) + INTERVAL 2592000 SECOND",
		"SETTINGS index_granularity = 8192, non_replicated_deduplication_window = 1000",
	} {
		if !strings.Contains(p.Table, want) {
			t.Errorf("modern table DDL lacks %q:\n%s", want, p.Table)
		}
	}
	if strings.Contains(p.Table, "event_ms") {
		t.Errorf("modern DDL has event_ms:\n%s", p.Table)
	}
	if strings.Contains(p.Rollup, "TTL") {
		t.Errorf("rollup has a TTL without RollupTTL:\n%s", p.Rollup)
	}
	if len(p.Warnings) != 0 {
		t.Errorf("Warnings = %q", p.Warnings)
	}
	if got := p.Layout.insertSQL("t"); !strings.HasPrefix(got, "INSERT INTO t (event_time, event_id,") {
		t.Errorf("insertSQL = %s", got)
	}
}

func TestPlanSchemaRollup(t *testing.T) {
	for _, v := range []version{{18, 16}, {23, 8}} {
		p := planSchema(featuresFor(v), testSchema)
		for _, want := range []string{
			"CREATE TABLE IF NOT EXISTS `db`.`events_1m`",
			"ENGINE = AggregatingMergeTree()",
			"latency        AggregateFunction(quantiles(0.5, 0.9, 0.99), UInt32),",
		} {
			if !strings.Contains(p.Rollup, want) {
				t.Errorf("%v: rollup DDL lacks %q:\n%s", v, want, p.Rollup)
			}
		}
		for _, want := range []string{
			"CREATE MATERIALIZED VIEW IF NOT EXISTS `db`.`events_1m_mv` TO `db`.`events_1m`",
			"quantilesState(0.5, 0.9, 0.99)(latency_us) AS latency",
			"FROM `db`.`events`",
		} {
			if !strings.Contains(p.View, want) {
				t.Errorf("%v: view DDL lacks %q:\n%s", v, want, p.View)
			}
		}
		cfg := testSchema
		cfg.NoRollup = true
		if p := planSchema(featuresFor(v), cfg); len(p.Statements()) != 1 || p.Rollup != "" || p.View != "" {
			t.Errorf("%v: NoRollup plan has %d statements", v, len(p.Statements()))
		}
	}
}

// columnsOf returns the columns a plan's table DDL declares, name → type
// as system.columns would spell them.
func columnsOf(t *testing.T, f features) map[string]string {
	out := map[string]string{}
	for _, col := range (layout{time64: f.DateTime64}).columns() {
		switch col.kind {
		case kindTime:
			out[col.name] = "DateTime('UTC')"
			if f.DateTime64 {
				out[col.name] = "DateTime64(3, 'UTC')"
			}
		case kindString:
			out[col.name] = "LowCardinality(String)"
		case kindUUID:
			out[col.name] = "UUID"
		case kindUInt8:
			out[col.name] = "UInt8"
		case kindUInt16:
			out[col.name] = "UInt16"
		case kindUInt32:
			out[col.name] = "UInt32"
		case kindInt64:
			out[col.name] = "Int64"
		case kindFloat64:
			out[col.name] = "Float64"
		}
	}
	return out
}

func TestCheckColumns(t *testing.T) {
	legacy := columnsOf(t, featuresFor(version{18, 16}))
	if l, err := checkColumns("db.t", legacy); err != nil || l.time64 {
		t.Errorf("legacy columns: %+v, %v", l, err)
	}
	modern := columnsOf(t, featuresFor(version{23, 8}))
	if l, err := checkColumns("db.t", modern); err != nil || !l.time64 {
		t.Errorf("modern columns: %+v, %v", l, err)
	}
	// Plain strings and extra columns are fine.
	plain := columnsOf(t, featuresFor(version{23, 8}))
	plain[colKeyID] = "String"
	plain["extra"] = "Nullable(String)"
	if _, err := checkColumns("db.t", plain); err != nil {
		t.Errorf("plain String key_id: %v", err)
	}

	broken := columnsOf(t, featuresFor(version{18, 16}))
	delete(broken, colEventMS)
	delete(broken, colTraceID)
	broken[colLatencyUS] = "UInt64"
	_, err := checkColumns("db.t", broken)
	var se *SchemaError
	if !errors.As(err, &se) {
		t.Fatalf("checkColumns(broken) = %v, want a *SchemaError", err)
	}
	if se.Table != "db.t" || strings.Join(se.Missing, ",") != "event_ms,trace_id" || len(se.Mismatched) != 1 {
		t.Errorf("SchemaError = %+v", se)
	}
	for _, want := range []string{"db.t", "event_ms", "trace_id", "latency_us: has UInt64, want UInt32"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q lacks %q", err, want)
		}
	}
}

func TestCheckRollupColumns(t *testing.T) {
	good := map[string]string{
		"minute": "DateTime('UTC')", "key_id": "LowCardinality(String)", "status_id": "UInt8",
		"events": "AggregateFunction(count)", "latency": "AggregateFunction(quantiles(0.5, 0.9, 0.99), UInt32)",
	}
	if err := checkRollupColumns("db.t_1m", good); err != nil {
		t.Errorf("good rollup: %v", err)
	}
	bad := map[string]string{"minute": "DateTime", "key_id": "String", "status_id": "UInt8",
		"latency": "AggregateFunction(quantilesTDigest(0.5, 0.9, 0.99), UInt32)"}
	err := checkRollupColumns("db.t_1m", bad)
	if err == nil || !strings.Contains(err.Error(), "events") || !strings.Contains(err.Error(), "latency: has") {
		t.Errorf("bad rollup: %v", err)
	}
}

func TestPlanSchemaDedupOnlyOnTheEventTable(t *testing.T) {
	p := planSchema(featuresFor(version{21, 7}), testSchema)
	if strings.Contains(p.Table, "deduplication") {
		t.Errorf("21.7 gets the dedup setting:\n%s", p.Table)
	}
	p = planSchema(featuresFor(version{25, 1}), testSchema)
	// Dedup of the event table also keeps a resent batch out of the
	// view, so the rollup needs no setting of its own.
	if strings.Contains(p.Rollup, "deduplication") {
		t.Errorf("the rollup gets the dedup setting:\n%s", p.Rollup)
	}
}

// TestPlanSchemaKeyTypes checks that the rollup and the view follow the
// key_id types of tables that exist: 18.16 does not convert between String
// and LowCardinality(String) when a view pushes rows.
func TestPlanSchemaKeyTypes(t *testing.T) {
	const lc = "LowCardinality(String)"
	for _, c := range []struct {
		name             string
		v                version
		keyType, rollKey string
		wantRollup       string // key_id's type in the rollup DDL
		wantViewKey      string // key_id's expression in the view
	}{
		{"legacy, new tables", version{18, 16}, "", "", "String", "    key_id,"},
		{"modern, new tables", version{23, 8}, "", "", lc, "    key_id,"},
		{"legacy, event table from an earlier store", version{18, 16}, lc, "", lc, "    key_id,"},
		{"legacy, both from an earlier store", version{18, 16}, lc, lc, lc, "    key_id,"},
		{"legacy, new event table, old rollup", version{18, 16}, "String", lc, lc, "    CAST(key_id AS LowCardinality(String)) AS key_id,"},
		{"modern, LowCardinality table, String rollup", version{23, 8}, lc, "String", "String", "    CAST(key_id AS String) AS key_id,"},
	} {
		t.Run(c.name, func(t *testing.T) {
			cfg := testSchema
			cfg.KeyType, cfg.RollupKeyType = c.keyType, c.rollKey
			p := planSchema(featuresFor(c.v), cfg)
			if want := "    key_id         " + c.wantRollup + ",\n"; !strings.Contains(p.Rollup, want) {
				t.Errorf("rollup DDL lacks %q:\n%s", want, p.Rollup)
			}
			if !strings.Contains(p.View, "\n"+c.wantViewKey+"\n") {
				t.Errorf("view DDL lacks %q:\n%s", c.wantViewKey, p.View)
			}
			if strings.Contains(p.Rollup, "LowCardinality") && featuresFor(c.v).LowCardinalitySetting && p.Settings[lowCardinalitySetting] != 1 {
				t.Errorf("a LowCardinality rollup on %v without the setting", c.v)
			}
		})
	}
}

// TestPlanSchemaUsage: the usage columns an old table lacks are added with
// the types and defaults of a new table's (no ADD COLUMN IF NOT EXISTS,
// which 18.16 lacks: the store adds only what is missing); a view made for
// a rollup of before them leaves them out.
func TestPlanSchemaUsage(t *testing.T) {
	legacy, modern := featuresFor(version{18, 16}), featuresFor(version{23, 8})
	if got, want := addUsageColumnsDDL(legacy, "`db`.`t`", "", usageColumns[5:]),
		"ALTER TABLE `db`.`t` ADD COLUMN units Float64 DEFAULT -1, ADD COLUMN cost Float64 DEFAULT -1"; got != want {
		t.Errorf("legacy ALTER:\n got %s\nwant %s", got, want)
	}
	if got, want := addUsageColumnsDDL(modern, "`db`.`t`", " ON CLUSTER `c`", usageColumns[:3]),
		"ALTER TABLE `db`.`t` ON CLUSTER `c` ADD COLUMN model LowCardinality(String) DEFAULT '', "+
			"ADD COLUMN client LowCardinality(String) DEFAULT '', ADD COLUMN input_tokens Int64 DEFAULT -1 CODEC(T64, ZSTD(1))"; got != want {
		t.Errorf("modern ALTER:\n got %s\nwant %s", got, want)
	}
	old := columnsOf(t, legacy)
	for _, c := range usageColumns {
		delete(old, c.name)
	}
	if got := missingUsage(old); len(got) != len(usageColumns) {
		t.Errorf("missingUsage(a table of before) = %v, want every usage column", got)
	}
	delete(old, colTraceID)
	if got := missingUsage(old); got != nil {
		t.Errorf("missingUsage(a table lacking trace_id too) = %v, want none: not the store's table", got)
	}
	if got := missingUsage(columnsOf(t, legacy)); got != nil {
		t.Errorf("missingUsage(a table of now) = %v", got)
	}
	cfg := testSchema
	cfg.OldRollup = true
	p := planSchema(legacy, cfg)
	if strings.Contains(p.View, "model") || strings.Contains(p.View, "cost") || !strings.Contains(p.View, "GROUP BY minute, key_id, status_id") {
		t.Errorf("the view for an old rollup:\n%s", p.View)
	}
	// A rollup with the usage columns, and one without.
	have := map[string]string{"model": "String", "client": "LowCardinality(String)"}
	for _, u := range rollupUsage {
		have[u.name] = u.typ
	}
	if !rollupHasUsage(have) {
		t.Error("rollupHasUsage(a rollup of now) = false")
	}
	have["cost_sum"] = "AggregateFunction(sum, Int64)"
	if rollupHasUsage(have) {
		t.Error("rollupHasUsage(a rollup whose cost_sum is of another type) = true")
	}
	if rollupHasUsage(map[string]string{"key_id": "String"}) {
		t.Error("rollupHasUsage(a rollup of before) = true")
	}
}
