package clickhouse

import (
	"cmp"
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
)

// version is a server version, as SELECT version() spells it ("18.16.1",
// "23.8.2.7"). Old servers numbered themselves 1.1.54xxx.
type version struct{ major, minor int }

func parseVersion(s string) (version, error) {
	parts := strings.SplitN(strings.TrimSpace(s), ".", 3)
	if len(parts) < 2 {
		return version{}, fmt.Errorf("apipool: clickhouse: cannot parse server version %q", s)
	}
	major, err1 := strconv.Atoi(parts[0])
	minor, err2 := strconv.Atoi(parts[1])
	if err1 != nil || err2 != nil || major < 0 || minor < 0 {
		return version{}, fmt.Errorf("apipool: clickhouse: cannot parse server version %q", s)
	}
	return version{major, minor}, nil
}

func (v version) atLeast(major, minor int) bool {
	return v.major > major || v.major == major && v.minor >= minor
}

func (v version) String() string { return fmt.Sprintf("%d.%d", v.major, v.minor) }

// features are what the schema may use on a server. There are two sets:
// servers from 21.1 on get the modern one, older ones (Debian's 18.16 among
// them) the legacy one.
type features struct {
	// DateTime64 stores event times as DateTime64(3); without it, as
	// DateTime plus a column of milliseconds.
	DateTime64 bool
	// Codecs adds column compression codecs.
	Codecs bool
	// TTL allows a table TTL.
	TTL bool
	// LowCardinality makes new tables store repetitive strings as
	// LowCardinality(String), else as String. LowCardinalitySetting says
	// that creating a LowCardinality column needs the setting
	// allow_experimental_low_cardinality_type=1 (an existing table's type
	// may be followed when creating the rollup).
	LowCardinality        bool
	LowCardinalitySetting bool
	// Dedup makes the server drop a batch it already has (the same rows
	// resent after a lost acknowledgement): the table setting
	// non_replicated_deduplication_window.
	Dedup bool
}

// featuresFor chooses the schema features for a server version.
func featuresFor(v version) features {
	if v.atLeast(21, 1) {
		// non_replicated_deduplication_window came in 21.2 or 21.3; 21.8 is
		// the first LTS release sure to have it.
		return features{DateTime64: true, Codecs: true, TTL: true, LowCardinality: true, Dedup: v.atLeast(21, 8)}
	}
	// 18.16 has LowCardinality behind a setting; older servers lack it.
	// New tables get plain strings there all the same: clickhouse-go
	// builds LowCardinality columns a row at a time, through reflection
	// and a map of interfaces, which took over half the client's time of
	// an insert (six allocations per event); 18.16 cannot be told to take
	// plain strings for them per query (its setting
	// low_cardinality_allow_in_native_format works per session only). On
	// modern servers the storage and GROUP BY gains are worth it; there,
	// LowCardinality is no longer experimental.
	return features{LowCardinalitySetting: v.atLeast(18, 16)}
}

// lowCardinalitySetting is the setting that 18.x needs to create
// LowCardinality columns.
const lowCardinalitySetting = "allow_experimental_low_cardinality_type"

// The event table's columns, in INSERT order. colEventMS exists only in the
// legacy layout.
const (
	colEventTime      = "event_time"
	colEventMS        = "event_ms"
	colEventID        = "event_id"
	colKeyID          = "key_id"
	colKeyFingerprint = "key_fingerprint"
	colStatusID       = "status_id"
	colStatus         = "status"
	colHTTPStatus     = "http_status"
	colLatencyUS      = "latency_us"
	colAttempt        = "attempt"
	colMethod         = "method"
	colHost           = "host"
	colOperation      = "operation"
	colRequestBytes   = "request_bytes"
	colResponseBytes  = "response_bytes"
	colTraceID        = "trace_id"
	colSpanID         = "span_id"
	colErrorType      = "error_type"
	colModel          = "model"
	colClient         = "client"
	colInputTokens    = "input_tokens"
	colOutputTokens   = "output_tokens"
	colCachedTokens   = "cached_tokens"
	colUnits          = "units"
	colCost           = "cost"
)

// columnKind says which Go values a column takes, and so which server
// types are compatible with it.
type columnKind int

const (
	kindTime   columnKind = iota // DateTime or DateTime64
	kindString                   // String or LowCardinality(String)
	kindUUID
	kindUInt8
	kindUInt16
	kindUInt32
	kindInt64
	kindFloat64
)

type columnSpec struct {
	name string
	kind columnKind
	// lowCard marks strings worth LowCardinality; codec is the column's
	// codec on servers that have codecs.
	lowCard bool
	codec   string
	// def is the column's DEFAULT: what rows written without it hold
	// (the usage columns' "not known").
	def string
}

// eventColumns lists the event table's columns, event_ms aside.
var eventColumns = []columnSpec{
	{name: colEventTime, kind: kindTime, codec: "CODEC(Delta, ZSTD(1))"},
	{name: colEventID, kind: kindUUID},
	{name: colKeyID, kind: kindString, lowCard: true},
	{name: colKeyFingerprint, kind: kindString, lowCard: true},
	{name: colStatusID, kind: kindUInt8},
	{name: colStatus, kind: kindString, lowCard: true},
	{name: colHTTPStatus, kind: kindUInt16},
	{name: colLatencyUS, kind: kindUInt32, codec: "CODEC(T64, ZSTD(1))"},
	{name: colAttempt, kind: kindUInt16},
	{name: colMethod, kind: kindString, lowCard: true},
	{name: colHost, kind: kindString, lowCard: true},
	{name: colOperation, kind: kindString, lowCard: true},
	{name: colRequestBytes, kind: kindInt64, codec: "CODEC(T64, ZSTD(1))"},
	{name: colResponseBytes, kind: kindInt64, codec: "CODEC(T64, ZSTD(1))"},
	{name: colTraceID, kind: kindString, codec: "CODEC(ZSTD(1))"},
	{name: colSpanID, kind: kindString, codec: "CODEC(ZSTD(1))"},
	{name: colErrorType, kind: kindString, lowCard: true},
	// The usage columns, added to tables of earlier versions by ALTER
	// TABLE (see usageColumns).
	{name: colModel, kind: kindString, lowCard: true, def: "''"},
	{name: colClient, kind: kindString, lowCard: true, def: "''"},
	{name: colInputTokens, kind: kindInt64, codec: "CODEC(T64, ZSTD(1))", def: "-1"},
	{name: colOutputTokens, kind: kindInt64, codec: "CODEC(T64, ZSTD(1))", def: "-1"},
	{name: colCachedTokens, kind: kindInt64, codec: "CODEC(T64, ZSTD(1))", def: "-1"},
	{name: colUnits, kind: kindFloat64, codec: "CODEC(ZSTD(1))", def: "-1"},
	{name: colCost, kind: kindFloat64, codec: "CODEC(ZSTD(1))", def: "-1"},
}

// usageColumns are the event table's columns that tables made before
// they existed lack: the store adds them (see addUsageColumns).
var usageColumns = eventColumns[len(eventColumns)-7:]

var eventMSColumn = columnSpec{name: colEventMS, kind: kindUInt16}

// layout is how an event table stores times, which decides the INSERT
// column list and the SQL of time filters.
type layout struct {
	// time64 is true when event_time is a DateTime64 (milliseconds or
	// finer); false when it is a DateTime and event_ms holds the
	// milliseconds.
	time64 bool
}

// columns returns the layout's columns in INSERT order.
func (l layout) columns() []columnSpec {
	if l.time64 {
		return eventColumns
	}
	cols := make([]columnSpec, 0, len(eventColumns)+1)
	cols = append(cols, eventColumns[0], eventMSColumn)
	return append(cols, eventColumns[1:]...)
}

// insertSQL returns the INSERT statement for PrepareBatch, naming its
// columns.
func (l layout) insertSQL(table string) string {
	names := make([]string, 0, len(eventColumns)+1)
	for _, c := range l.columns() {
		names = append(names, c.name)
	}
	return "INSERT INTO " + table + " (" + strings.Join(names, ", ") + ")"
}

// schemaConfig is what the DDL depends on besides the server's features.
type schemaConfig struct {
	Database, Table string
	TTL, RollupTTL  time.Duration
	NoRollup        bool
	// KeyType and RollupKeyType are the types of key_id in the event
	// table and in the rollup when they exist already (as system.columns
	// spells them), else empty. A rollup created for an existing event
	// table takes its type; a view between tables whose types differ
	// converts key_id (18.16 refuses to push a String into a
	// LowCardinality(String) column, and the reverse).
	KeyType, RollupKeyType string
	// ModelType and ClientType are the event table's types of model and
	// client when it exists; a rollup made before they existed has
	// neither and is kept (see tableState.rollupUsage).
	ModelType, ClientType string
	// RollupModelType and RollupClientType are the rollup's, when it
	// exists with them.
	RollupModelType, RollupClientType string
	// OldRollup says that the rollup exists in its layout of before the
	// usage columns: a view made for it leaves them out.
	OldRollup bool
	// Cluster, ReplicaPath and ReplicaName are Config's: with Cluster,
	// the tables above are replicated local tables, created ON CLUSTER,
	// behind Distributed tables (see cluster.go).
	Cluster, ReplicaPath, ReplicaName string
}

// table, rollup and view name the tables that hold the events and the
// view: with a Cluster, the local replicated ones (see localName).
func (c schemaConfig) table() string {
	return quoteIdent(c.Database) + "." + quoteIdent(c.localName(c.Table))
}
func (c schemaConfig) rollup() string {
	return quoteIdent(c.Database) + "." + quoteIdent(c.localName(c.Table+rollupSuffix))
}
func (c schemaConfig) view() string {
	return quoteIdent(c.Database) + "." + quoteIdent(c.Table+viewSuffix)
}

// The rollup table and its materialized view are named after the event
// table with these suffixes.
const (
	rollupSuffix = "_1m"
	viewSuffix   = "_1m_mv"
)

// schemaPlan is the DDL for one server: statements to run in order, each
// with settings.
type schemaPlan struct {
	Features features
	Layout   layout
	// Settings must accompany every statement.
	Settings map[string]any
	// Table creates the event table; Rollup and View the rollup table and
	// the materialized view that fills it (empty with NoRollup).
	Table, Rollup, View string
	// With a Cluster, Dist and RollupDist create the Distributed tables
	// over Table and Rollup.
	Dist, RollupDist string
	// Warnings says what the config asked for that the server lacks.
	Warnings []string
}

// Statements returns the plan's DDL in the order to run it.
func (p schemaPlan) Statements() []string {
	out := []string{p.Table}
	if p.Dist != "" {
		out = append(out, p.Dist)
	}
	if p.Rollup != "" {
		out = append(out, p.Rollup, p.View)
	}
	if p.RollupDist != "" {
		out = append(out, p.RollupDist)
	}
	return out
}

// planSchema returns the DDL for a server with features f. It is pure, so
// both branches are tested without a server.
func planSchema(f features, c schemaConfig) schemaPlan {
	p := schemaPlan{Features: f, Layout: layout{time64: f.DateTime64}}
	if f.LowCardinalitySetting {
		p.Settings = map[string]any{lowCardinalitySetting: 1}
	}
	str := func(lowCard bool) string {
		if lowCard && f.LowCardinality {
			return "LowCardinality(String)"
		}
		return "String"
	}
	// The key_id types of the two tables: as they are, or as they will be
	// created.
	keyType := cmp.Or(c.KeyType, str(true))
	rollupKeyType := cmp.Or(c.RollupKeyType, keyType)
	// So are model's and client's.
	modelType, clientType := cmp.Or(c.ModelType, str(true)), cmp.Or(c.ClientType, str(true))
	rollupModelType, rollupClientType := cmp.Or(c.RollupModelType, modelType), cmp.Or(c.RollupClientType, clientType)
	var b strings.Builder
	fmt.Fprintf(&b, "CREATE TABLE IF NOT EXISTS %s%s\n(\n", c.table(), c.onCluster())
	for i, col := range p.Layout.columns() {
		sep := ","
		if i == len(p.Layout.columns())-1 {
			sep = ""
		}
		fmt.Fprintf(&b, "    %-16s %s%s\n", col.name, columnType(f, col), sep)
	}
	fmt.Fprintf(&b, ")\nENGINE = %s\nPARTITION BY toYYYYMM(event_time)\nORDER BY (key_id, event_time)\n", c.engine("MergeTree", c.Table))
	if c.TTL > 0 {
		if f.TTL {
			fmt.Fprintf(&b, "TTL toDateTime(event_time) + INTERVAL %d SECOND\n", ttlSeconds(c.TTL))
		} else {
			p.Warnings = append(p.Warnings, "the server has no TTL: Config.TTL is ignored")
		}
	}
	b.WriteString("SETTINGS index_granularity = 8192")
	switch {
	case c.Cluster != "":
		// Replicated tables deduplicate on every server version; the
		// default window is 100 blocks.
		fmt.Fprintf(&b, ", replicated_deduplication_window = %d", dedupWindow)
	case f.Dedup:
		fmt.Fprintf(&b, ", non_replicated_deduplication_window = %d", dedupWindow)
	}
	p.Table = b.String()
	p.Dist = c.distDDL(c.Table, true)
	if c.NoRollup {
		return p
	}

	b.Reset()
	fmt.Fprintf(&b, "CREATE TABLE IF NOT EXISTS %s%s\n(\n", c.rollup(), c.onCluster())
	fmt.Fprintf(&b, "    minute         DateTime('UTC'),\n")
	fmt.Fprintf(&b, "    key_id         %s,\n", rollupKeyType)
	fmt.Fprintf(&b, "    status_id      UInt8,\n")
	fmt.Fprintf(&b, "    events         AggregateFunction(count),\n")
	fmt.Fprintf(&b, "    latency        %s,\n", rollupLatencyType)
	fmt.Fprintf(&b, "    req_bytes      AggregateFunction(sum, Int64),\n")
	fmt.Fprintf(&b, "    resp_bytes     AggregateFunction(sum, Int64),\n")
	fmt.Fprintf(&b, "    model          %s,\n", rollupModelType)
	fmt.Fprintf(&b, "    client         %s,\n", rollupClientType)
	for i, u := range rollupUsage {
		sep := ","
		if i == len(rollupUsage)-1 {
			sep = ""
		}
		fmt.Fprintf(&b, "    %-14s %s%s\n", u.name, u.typ, sep)
	}
	fmt.Fprintf(&b, ")\nENGINE = %s\nPARTITION BY toYYYYMM(minute)\nORDER BY (key_id, minute, status_id, model, client)\n", c.engine("AggregatingMergeTree", c.Table+rollupSuffix))
	if c.RollupTTL > 0 {
		if f.TTL {
			fmt.Fprintf(&b, "TTL minute + INTERVAL %d SECOND\n", ttlSeconds(c.RollupTTL))
		} else {
			p.Warnings = append(p.Warnings, "the server has no TTL: Config.RollupTTL is ignored")
		}
	}
	b.WriteString("SETTINGS index_granularity = 8192")
	p.Rollup = b.String()

	key := "key_id"
	if keyType != rollupKeyType {
		key = "CAST(key_id AS " + rollupKeyType + ") AS key_id"
	}
	// model and client as key_id: converted when the types differ.
	names := ""
	for _, n := range [...][3]string{{colModel, modelType, rollupModelType}, {colClient, clientType, rollupClientType}} {
		if n[1] != n[2] {
			names += "    CAST(" + n[0] + " AS " + n[2] + ") AS " + n[0] + ",\n"
		} else {
			names += "    " + n[0] + ",\n"
		}
	}
	usage := ""
	for _, u := range rollupUsage {
		usage += ",\n    " + u.expr + " AS " + u.name
	}
	group := "minute, key_id, status_id, model, client"
	if c.OldRollup {
		names, usage, group = "", "", "minute, key_id, status_id"
	} else {
		names = ",\n" + strings.TrimSuffix(names, ",\n")
	}
	// The aliases differ from the event table's column names: newer
	// servers read "sumState(x) AS x" as an aggregate inside an aggregate.
	p.View = fmt.Sprintf(`CREATE MATERIALIZED VIEW IF NOT EXISTS %s%s TO %s
AS SELECT
    toStartOfMinute(toDateTime(event_time)) AS minute,
    %s,
    status_id,
    countState() AS events,
    %sState%s(latency_us) AS latency,
    sumState(if(request_bytes > 0, request_bytes, toInt64(0))) AS req_bytes,
    sumState(if(response_bytes > 0, response_bytes, toInt64(0))) AS resp_bytes%s%s
FROM %s
GROUP BY %s`, c.view(), c.onCluster(), c.rollup(), key, rollupQuantiles, rollupQuantileLevels,
		names, usage, c.table(), group)
	p.RollupDist = c.distDDL(c.Table+rollupSuffix, false)
	return p
}

// columnType returns a column's type in DDL, with its DEFAULT and codec.
func columnType(f features, col columnSpec) string {
	typ := ""
	switch col.kind {
	case kindTime:
		typ = "DateTime('UTC')"
		if f.DateTime64 {
			typ = "DateTime64(3, 'UTC')"
		}
	case kindString:
		typ = "String"
		if col.lowCard && f.LowCardinality {
			typ = "LowCardinality(String)"
		}
	case kindUUID:
		typ = "UUID"
	case kindUInt8:
		typ = "UInt8"
	case kindUInt16:
		typ = "UInt16"
	case kindUInt32:
		typ = "UInt32"
	case kindInt64:
		typ = "Int64"
	case kindFloat64:
		typ = "Float64"
	}
	if col.def != "" {
		typ += " DEFAULT " + col.def
	}
	if f.Codecs && col.codec != "" {
		typ += " " + col.codec
	}
	return typ
}

// addUsageColumnsDDL returns the ALTER TABLE that adds the columns cols to
// table (quoted, with a Cluster's clause), typed as a new table would
// have them. 18.16 has no ADD COLUMN IF NOT EXISTS: the store adds only
// the columns system.columns does not list.
func addUsageColumnsDDL(f features, table, onCluster string, cols []columnSpec) string {
	adds := make([]string, len(cols))
	for i, col := range cols {
		adds[i] = "ADD COLUMN " + col.name + " " + columnType(f, col)
	}
	return "ALTER TABLE " + table + onCluster + " " + strings.Join(adds, ", ")
}

// dedupWindow is how many recent batches the server remembers to drop
// resent ones.
const dedupWindow = 1000

// rollupUsage are the rollup's usage columns: the sums of the tokens,
// units and cost known and the number of events that said them (tokens:
// input and output both), the view's expression of each, and the type of
// its state.
var rollupUsage = []struct{ name, expr, typ string }{
	{"input_sum", "sumState(if(input_tokens >= 0, input_tokens, toInt64(0)))", "AggregateFunction(sum, Int64)"},
	{"output_sum", "sumState(if(output_tokens >= 0, output_tokens, toInt64(0)))", "AggregateFunction(sum, Int64)"},
	{"cached_sum", "sumState(if(cached_tokens >= 0, cached_tokens, toInt64(0)))", "AggregateFunction(sum, Int64)"},
	{"tokens_known", "sumState(toUInt64(input_tokens >= 0 AND output_tokens >= 0))", "AggregateFunction(sum, UInt64)"},
	{"units_sum", "sumState(if(units >= 0, units, toFloat64(0)))", "AggregateFunction(sum, Float64)"},
	{"units_known", "sumState(toUInt64(units >= 0))", "AggregateFunction(sum, UInt64)"},
	{"cost_sum", "sumState(if(cost >= 0, cost, toFloat64(0)))", "AggregateFunction(sum, Float64)"},
	{"cost_known", "sumState(toUInt64(cost >= 0))", "AggregateFunction(sum, UInt64)"},
}

// The rollup's quantile function, its levels (those of recorder.Latency),
// and its state's type.
const (
	rollupQuantiles      = "quantiles"
	rollupQuantileLevels = "(0.5, 0.9, 0.99)"
	rollupLatencyType    = "AggregateFunction(" + rollupQuantiles + rollupQuantileLevels + ", UInt32)"
)

func ttlSeconds(d time.Duration) int64 { return max(int64(d/time.Second), 1) }

// identRE is what database and table names may be: plain identifiers, so
// that no quoting subtleties differ between server versions.
var identRE = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]{0,127}$`)

// quoteIdent quotes a name that identRE accepts.
func quoteIdent(s string) string { return "`" + s + "`" }

// SchemaError reports an existing table that the store cannot use.
type SchemaError struct {
	// Table is the table's name, "database.table".
	Table string
	// Missing lists the columns the table lacks.
	Missing []string
	// Mismatched lists the columns whose types the store cannot write,
	// as "name: has TYPE, want TYPE".
	Mismatched []string
	// Engine, when not "", says the table's engine is not the one the
	// config needs: "has ENGINE, want ENGINE" (cluster mode).
	Engine string
}

func (e *SchemaError) Error() string {
	var parts []string
	if len(e.Missing) > 0 {
		parts = append(parts, "missing column(s) "+strings.Join(e.Missing, ", "))
	}
	if len(e.Mismatched) > 0 {
		parts = append(parts, "column(s) of the wrong type: "+strings.Join(e.Mismatched, "; "))
	}
	if e.Engine != "" {
		parts = append(parts, "engine: "+e.Engine)
	}
	return fmt.Sprintf("apipool: clickhouse: table %s is incompatible: %s", e.Table, strings.Join(parts, "; "))
}

// checkColumns decides the layout of an existing event table from its
// columns (name → type, as system.columns spells them), or explains why
// the store cannot write to it.
func checkColumns(table string, have map[string]string) (layout, error) {
	var l layout
	timeType := have[colEventTime]
	l.time64 = strings.HasPrefix(timeType, "DateTime64(")
	e := &SchemaError{Table: table}
	for _, col := range l.columns() {
		typ, ok := have[col.name]
		if !ok {
			e.Missing = append(e.Missing, col.name)
			continue
		}
		if want, ok := compatible(col.kind, typ); !ok {
			e.Mismatched = append(e.Mismatched, fmt.Sprintf("%s: has %s, want %s", col.name, typ, want))
		}
	}
	if len(e.Missing) > 0 || len(e.Mismatched) > 0 {
		slices.Sort(e.Missing)
		return l, e
	}
	return l, nil
}

// compatible reports whether a column of server type typ takes the values
// the store appends for kind; want describes the types that would.
func compatible(kind columnKind, typ string) (want string, ok bool) {
	switch kind {
	case kindTime:
		return "DateTime or DateTime64", typ == "DateTime" || strings.HasPrefix(typ, "DateTime(") || strings.HasPrefix(typ, "DateTime64(")
	case kindString:
		return "String or LowCardinality(String)", typ == "String" || typ == "LowCardinality(String)"
	case kindUUID:
		return "UUID", typ == "UUID"
	case kindUInt8:
		return "UInt8", typ == "UInt8"
	case kindUInt16:
		return "UInt16", typ == "UInt16"
	case kindUInt32:
		return "UInt32", typ == "UInt32"
	case kindInt64:
		return "Int64", typ == "Int64"
	case kindFloat64:
		return "Float64", typ == "Float64"
	}
	return "", false
}

// rollupColumns are the rollup's columns and the types the stats queries
// need (key_id may also be a plain String).
var rollupColumns = []struct{ name, typ string }{
	{"minute", "DateTime"},
	{"key_id", "String"},
	{"status_id", "UInt8"},
	{"events", "AggregateFunction(count)"},
	{"latency", rollupLatencyType},
}

// rollupHasUsage reports whether an existing rollup has the usage
// columns (model, client and the sums), of the types the queries read; a
// rollup made before them has none.
func rollupHasUsage(have map[string]string) bool {
	if _, ok := compatible(kindString, have[colModel]); !ok {
		return false
	}
	if _, ok := compatible(kindString, have[colClient]); !ok {
		return false
	}
	for _, u := range rollupUsage {
		if have[u.name] != u.typ {
			return false
		}
	}
	return true
}

// missingUsage returns the usage columns an event table lacks, when it
// has every other column the store writes (else none: checkColumns then
// says what is wrong).
func missingUsage(have map[string]string) []columnSpec {
	var out []columnSpec
	for _, col := range usageColumns {
		if _, ok := have[col.name]; !ok {
			out = append(out, col)
		}
	}
	if len(out) == 0 {
		return nil
	}
	l := layout{time64: strings.HasPrefix(have[colEventTime], "DateTime64(")}
	for _, col := range l.columns()[:len(l.columns())-len(usageColumns)] {
		if typ, ok := have[col.name]; !ok {
			return nil
		} else if _, ok := compatible(col.kind, typ); !ok {
			return nil
		}
	}
	return out
}

// checkRollupColumns checks an existing rollup table.
func checkRollupColumns(table string, have map[string]string) error {
	e := &SchemaError{Table: table}
	for _, c := range rollupColumns {
		typ, ok := have[c.name]
		switch {
		case !ok:
			e.Missing = append(e.Missing, c.name)
		case c.name == "minute":
			if _, ok := compatible(kindTime, typ); !ok || strings.HasPrefix(typ, "DateTime64") {
				e.Mismatched = append(e.Mismatched, fmt.Sprintf("%s: has %s, want DateTime", c.name, typ))
			}
		case c.name == "key_id":
			if _, ok := compatible(kindString, typ); !ok {
				e.Mismatched = append(e.Mismatched, fmt.Sprintf("%s: has %s, want String or LowCardinality(String)", c.name, typ))
			}
		case typ != c.typ:
			e.Mismatched = append(e.Mismatched, fmt.Sprintf("%s: has %s, want %s", c.name, typ, c.typ))
		}
	}
	if len(e.Missing) > 0 || len(e.Mismatched) > 0 {
		return e
	}
	return nil
}
