package sql

import (
	"context"
	dbsql "database/sql"
	"errors"
	"fmt"
	"strings"

	"github.com/go-sql-driver/mysql"

	"github.com/apipool-ng/apipool/errdefs"
)

// SchemaVersion is the version of the schema this package writes and
// reads. Open upgrades a database of an older version, step by step, and
// refuses one of a newer version.
//
//   - 1: the event table and its indexes;
//   - 2: the per-minute rollup, filled from the events already stored, and
//     the table of written batches;
//   - 3: the per-minute counts rollup (minute, key, status: no latency
//     bins), filled from the per-minute rollup, for the counting queries;
//   - 4: a leaner event table, cheaper to insert into: the indexes by key
//     and time and by status and time are dropped (the queries read whole
//     minutes from the rollups and partial minutes through the index by
//     time, which holds key, status and latency bin too), and on
//     PostgreSQL its string columns become TEXT (the store cuts strings to
//     their sizes itself; VARCHAR(n)'s check cost a fifth of COPY's time);
//   - 5: usage: the event table gets the columns model, client,
//     input_tokens, output_tokens, cached_tokens, units and cost (old
//     rows: ” and -1, "not known"); both rollups get model and client in
//     their primary keys (old rows: ”), and the counts rollup the sums of
//     the tokens, units and cost known and the number of events that said
//     them (tokens_known, units_known, cost_known; old rows: 0, so their
//     events count as unknown);
//   - 6: on PostgreSQL only, the event table's input_tokens,
//     output_tokens, cached_tokens, units and cost take NULL, their
//     default, for "not known": a row stores a NULL as a bit of its null
//     bitmap, where a -1 took 8 bytes (and the evaluation of the default
//     for a row written without it): the rows without usage are about as
//     wide as before version 5 again. Rows written before keep their -1s,
//     so "not known" is -1 or NULL there, which "x >= 0" tells apart from
//     the known values in both cases. SQLite and MySQL keep -1 (dropping
//     NOT NULL would copy the table there).
const SchemaVersion = 6

// SchemaError is Open's error when the database holds tables the store
// cannot use: an event or rollup table of another layout (a column
// missing, or of a type that cannot hold the store's values), or a schema
// version newer than the package's.
type SchemaError struct {
	Table string // the table at fault
	Err   error  // what the database said, or what is wrong
}

func (e *SchemaError) Error() string {
	return fmt.Sprintf("apipool: sql: table %s is not usable by this store: %v", e.Table, e.Err)
}

func (e *SchemaError) Unwrap() error { return e.Err }

// migration is one step of the schema: its statements, run in order.
type migration func(d *dialect, t tables, collation string) []string

var migrations = []migration{1: migrateEvents, 2: migrateRollup, 3: migrateCounts, 4: migrateLean, 5: migrateUsage, 6: migrateNullUsage}

// stringCol is the DDL type of a string column of n bytes.
func stringCol(n int) string { return fmt.Sprintf("VARCHAR(%d) NOT NULL", n) }

func mysqlTableOptions(collation string) string {
	return " ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=" + collation
}

func migrateEvents(d *dialect, t tables, collation string) []string {
	cols := []string{
		d.idColumn,
		"event_time_ms BIGINT NOT NULL",
		"event_id " + stringCol(36),
		"key_id " + stringCol(maxKeyBytes),
		"key_fingerprint " + stringCol(maxStringBytes),
		"status_id SMALLINT NOT NULL",
		"status " + stringCol(64),
		"http_status INTEGER NOT NULL",
		"latency_us BIGINT NOT NULL",
		"latency_bin SMALLINT NOT NULL",
		"attempt INTEGER NOT NULL",
		"method " + stringCol(maxStringBytes),
		"host " + stringCol(maxStringBytes),
		"operation " + stringCol(maxStringBytes),
		"request_bytes BIGINT NOT NULL",
		"response_bytes BIGINT NOT NULL",
		"trace_id " + stringCol(32),
		"span_id " + stringCol(16),
		"error_type " + stringCol(maxStringBytes),
	}
	indexes := [][2]string{
		{t.events + "_time", "event_time_ms, key_id, status_id, latency_bin"},
		{t.events + "_key_time", "key_id, event_time_ms"},
		{t.events + "_status_time", "status_id, event_time_ms"},
	}
	if d == mysqlDialect {
		for _, ix := range indexes {
			cols = append(cols, "INDEX "+ix[0]+" ("+ix[1]+")")
		}
		return []string{"CREATE TABLE IF NOT EXISTS " + t.events + " (\n  " + strings.Join(cols, ",\n  ") + "\n)" + mysqlTableOptions(collation)}
	}
	out := []string{"CREATE TABLE IF NOT EXISTS " + t.events + " (\n  " + strings.Join(cols, ",\n  ") + "\n)"}
	for _, ix := range indexes {
		out = append(out, "CREATE INDEX IF NOT EXISTS "+ix[0]+" ON "+t.events+" ("+ix[1]+")")
	}
	return out
}

func migrateRollup(d *dialect, t tables, collation string) []string {
	cols := []string{
		"minute_ms BIGINT NOT NULL",
		"key_id " + stringCol(maxKeyBytes),
		"status_id SMALLINT NOT NULL",
		"latency_bin SMALLINT NOT NULL",
		"events BIGINT NOT NULL",
		"latency_us_sum BIGINT NOT NULL",
		"PRIMARY KEY (minute_ms, key_id, status_id, latency_bin)",
	}
	opts, batchOpts := "", ""
	var out []string
	if d == mysqlDialect {
		cols = append(cols, "INDEX "+t.rollup+"_key ("+"key_id, minute_ms)")
		opts = mysqlTableOptions(collation)
		batchOpts = opts
		out = append(out, "CREATE TABLE IF NOT EXISTS "+t.rollup+" (\n  "+strings.Join(cols, ",\n  ")+"\n)"+opts)
	} else {
		out = append(out, "CREATE TABLE IF NOT EXISTS "+t.rollup+" (\n  "+strings.Join(cols, ",\n  ")+"\n)",
			"CREATE INDEX IF NOT EXISTS "+t.rollup+"_key ON "+t.rollup+" (key_id, minute_ms)")
	}
	out = append(out,
		// Fill the rollup from the events already stored.
		"INSERT INTO "+t.rollup+" (minute_ms, key_id, status_id, latency_bin, events, latency_us_sum)\n"+
			"SELECT (event_time_ms "+d.div+" 60000) * 60000, key_id, status_id, latency_bin, COUNT(*), SUM(latency_us)\n"+
			"FROM "+t.events+" GROUP BY (event_time_ms "+d.div+" 60000) * 60000, key_id, status_id, latency_bin",
		"CREATE TABLE IF NOT EXISTS "+t.batches+" (\n  batch_id "+stringCol(36)+" PRIMARY KEY,\n  written_ms BIGINT NOT NULL,\n  events INTEGER NOT NULL\n)"+batchOpts,
	)
	return out
}

// migrateCounts adds the counts rollup: the per-minute rollup without its
// latency bins, about 1/70 of its rows, which UsageByKey, UsageCount and
// Series read. It is filled from the per-minute rollup rather than from
// the events, so that minutes whose raw events were deleted (Retention,
// DeleteOlderThan) keep their counts.
func migrateCounts(d *dialect, t tables, collation string) []string {
	cols := []string{
		"minute_ms BIGINT NOT NULL",
		"key_id " + stringCol(maxKeyBytes),
		"status_id SMALLINT NOT NULL",
		"events BIGINT NOT NULL",
		"PRIMARY KEY (minute_ms, key_id, status_id)",
	}
	opts := ""
	if d == mysqlDialect {
		opts = mysqlTableOptions(collation)
	}
	return []string{
		"CREATE TABLE IF NOT EXISTS " + t.counts + " (\n  " + strings.Join(cols, ",\n  ") + "\n)" + opts,
		"INSERT INTO " + t.counts + " (minute_ms, key_id, status_id, events)\n" +
			"SELECT minute_ms, key_id, status_id, SUM(events)\n" +
			"FROM " + t.rollup + " GROUP BY minute_ms, key_id, status_id",
	}
}

// droppedIndexes are the event table's indexes that version 4 drops.
func droppedIndexes(t tables) []string {
	return []string{t.events + "_key_time", t.events + "_status_time"}
}

// eventStringColumns are the event table's string columns.
var eventStringColumns = []string{
	"event_id", "key_id", "key_fingerprint", "status", "method", "host", "operation", "trace_id", "span_id", "error_type",
}

// migrateLean drops the event table's indexes that no query of the store
// uses, and on PostgreSQL makes its string columns TEXT (VARCHAR(n) to
// TEXT rewrites neither the table nor its indexes there).
func migrateLean(d *dialect, t tables, collation string) []string {
	var out []string
	for _, ix := range droppedIndexes(t) {
		if d == mysqlDialect {
			// MySQL has no DROP INDEX IF EXISTS: migrateTo passes over
			// the error of an index already gone.
			out = append(out, "DROP INDEX "+ix+" ON "+t.events)
		} else {
			out = append(out, "DROP INDEX IF EXISTS "+ix)
		}
	}
	if d == postgresDialect {
		alters := make([]string, len(eventStringColumns))
		for i, c := range eventStringColumns {
			alters[i] = "ALTER COLUMN " + c + " TYPE TEXT"
		}
		out = append(out, "ALTER TABLE "+t.events+" "+strings.Join(alters, ", "))
	}
	return out
}

// The columns of version 5, and their types per dialect.
var (
	usageEventColumns = []column{
		{"model", textCol}, {"client", textCol}, {"input_tokens", int64Col}, {"output_tokens", int64Col},
		{"cached_tokens", int64Col}, {"units", float64Col}, {"cost", float64Col},
	}
	usageSumColumns = []column{
		{"input_tokens", int64Col}, {"output_tokens", int64Col}, {"cached_tokens", int64Col}, {"tokens_known", int64Col},
		{"units", float64Col}, {"units_known", int64Col}, {"cost", float64Col}, {"cost_known", int64Col},
	}
)

// nameCol is the DDL type of the model and client columns, which the
// rollups' primary keys hold: at most maxNameBytes bytes. (MySQL's
// InnoDB keys hold 3,072 bytes: the rollup's key, of key_id, model and
// client of 255 characters of up to 4 bytes each, minute, status and bin,
// takes exactly that.)
func (d *dialect) nameCol() string {
	if d == postgresDialect {
		return "TEXT NOT NULL DEFAULT ''"
	}
	return fmt.Sprintf("VARCHAR(%d) NOT NULL DEFAULT ''", maxNameBytes)
}

// floatCol is the DDL type of a float column.
func (d *dialect) floatCol() string {
	switch d {
	case postgresDialect:
		return "DOUBLE PRECISION"
	case mysqlDialect:
		return "DOUBLE"
	}
	return "REAL"
}

// colDDL is the DDL of a column of version 5 with its default.
func (d *dialect) colDDL(c column, def string) string {
	switch c.kind {
	case textCol:
		return c.name + " " + d.nameCol()
	case float64Col:
		return c.name + " " + d.floatCol() + " NOT NULL DEFAULT " + def
	}
	return c.name + " BIGINT NOT NULL DEFAULT " + def
}

// addColumns adds columns to table: one ALTER TABLE on PostgreSQL and
// MySQL, one per column on SQLite (which adds one at a time).
func (d *dialect) addColumns(table string, cols []string) []string {
	if d == sqliteDialect {
		out := make([]string, len(cols))
		for i, c := range cols {
			out[i] = "ALTER TABLE " + table + " ADD COLUMN " + c
		}
		return out
	}
	return []string{"ALTER TABLE " + table + " ADD COLUMN " + strings.Join(cols, ", ADD COLUMN ")}
}

// The rollups' primary keys from version 5.
const (
	rollupKey = "minute_ms, key_id, model, client, status_id, latency_bin"
	countsKey = "minute_ms, key_id, model, client, status_id"
)

// migrateUsage adds the usage columns (version 5). The event table gets
// them with defaults that read as "not known". The rollups get model and
// client, which join their primary keys: PostgreSQL and MySQL change the
// key in place (one ALTER TABLE each, so that MySQL, which commits each
// statement by itself, never leaves a table half changed); SQLite, which
// cannot change a key, copies each rollup into a new table of the new
// layout and puts it in the old one's place, in the migration's
// transaction.
func migrateUsage(d *dialect, t tables, collation string) []string {
	var evCols, nameCols, sumCols []string
	for _, c := range usageEventColumns {
		evCols = append(evCols, d.colDDL(c, "-1"))
	}
	for _, c := range usageEventColumns[:2] {
		nameCols = append(nameCols, d.colDDL(c, "''"))
	}
	for _, c := range usageSumColumns {
		sumCols = append(sumCols, d.colDDL(c, "0"))
	}
	out := d.addColumns(t.events, evCols)
	if d != sqliteDialect {
		dropKey := func(table string) string {
			if d == mysqlDialect {
				return "DROP PRIMARY KEY"
			}
			return "DROP CONSTRAINT " + table + "_pkey"
		}
		alter := func(table string, cols []string, key string) string {
			return "ALTER TABLE " + table + " ADD COLUMN " + strings.Join(cols, ", ADD COLUMN ") + ", " + dropKey(table) + ", ADD PRIMARY KEY (" + key + ")"
		}
		return append(out,
			alter(t.rollup, nameCols, rollupKey),
			alter(t.counts, append(nameCols, sumCols...), countsKey))
	}
	rebuild := func(table string, cols []string, key string, copyCols string, index string) []string {
		tmp := table + "_v5"
		stmts := []string{
			"CREATE TABLE " + tmp + " (\n  " + strings.Join(append(cols, "PRIMARY KEY ("+key+")"), ",\n  ") + "\n)",
			"INSERT INTO " + tmp + " (" + copyCols + ") SELECT " + copyCols + " FROM " + table,
			"DROP TABLE " + table,
			"ALTER TABLE " + tmp + " RENAME TO " + table,
		}
		if index != "" {
			stmts = append(stmts, index)
		}
		return stmts
	}
	rollupCols := []string{"minute_ms BIGINT NOT NULL", "key_id " + stringCol(maxKeyBytes), nameCols[0], nameCols[1],
		"status_id SMALLINT NOT NULL", "latency_bin SMALLINT NOT NULL", "events BIGINT NOT NULL", "latency_us_sum BIGINT NOT NULL"}
	countsCols := append([]string{"minute_ms BIGINT NOT NULL", "key_id " + stringCol(maxKeyBytes), nameCols[0], nameCols[1],
		"status_id SMALLINT NOT NULL", "events BIGINT NOT NULL"}, sumCols...)
	out = append(out, rebuild(t.rollup, rollupCols, rollupKey, "minute_ms, key_id, status_id, latency_bin, events, latency_us_sum",
		"CREATE INDEX IF NOT EXISTS "+t.rollup+"_key ON "+t.rollup+" (key_id, minute_ms)")...)
	return append(out, rebuild(t.counts, countsCols, countsKey, "minute_ms, key_id, status_id, events", "")...)
}

// nullUsage reports whether the dialect's event table takes NULL for a
// usage amount not known (schema version 6: PostgreSQL), rather than -1.
func (d *dialect) nullUsage() bool { return d == postgresDialect }

// migrateNullUsage makes the event table's usage amounts (tokens, units,
// cost) nullable without a default on PostgreSQL (version 6): a change of
// the catalog alone, which rewrites no row. The other dialects change
// nothing: SQLite cannot drop a NOT NULL but by copying the table, MySQL
// would rebuild it.
func migrateNullUsage(d *dialect, t tables, collation string) []string {
	if !d.nullUsage() {
		return nil
	}
	var alters []string
	for _, c := range usageEventColumns[2:] {
		alters = append(alters, "ALTER COLUMN "+c.name+" DROP NOT NULL", "ALTER COLUMN "+c.name+" DROP DEFAULT")
	}
	return []string{"ALTER TABLE " + t.events + " " + strings.Join(alters, ", ")}
}

// SchemaSQL returns the statements that create the store's tables at
// SchemaVersion for a driver (as Config.Driver names it) and table prefix,
// for a person to read or run by hand. The MySQL statements use MariaDB's
// binary collation without padding (utf8mb4_nopad_bin); on MySQL the store
// uses utf8mb4_0900_bin.
func SchemaSQL(driver, prefix string) ([]string, error) {
	d, ok := dialects[driver]
	if !ok {
		return nil, &errdefs.ConfigError{Field: "sql.SchemaSQL", Reason: fmt.Sprintf("unknown driver %q (want sqlite, postgres or mysql)", driver)}
	}
	if prefix == "" {
		prefix = DefaultTablePrefix
	}
	return schemaSQLTo(d, newTables(prefix), SchemaVersion), nil
}

// schemaSQLTo returns the statements of versions 1 to to.
func schemaSQLTo(d *dialect, t tables, to int) []string {
	var out []string
	for v := 1; v <= to; v++ {
		out = append(out, migrations[v](d, t, "utf8mb4_nopad_bin")...)
	}
	return out
}

// migrate brings the database's schema to SchemaVersion, holding a lock
// that keeps other stores from migrating at the same time, and checks
// that the tables have the columns the store uses.
func (s *Store) migrate(ctx context.Context) error {
	return s.migrateTo(ctx, SchemaVersion)
}

func (s *Store) migrateTo(ctx context.Context, target int) error {
	d, t := s.d, s.t
	conn, err := s.db.Conn(ctx)
	if err != nil {
		return err
	}
	defer conn.Close()
	collation := ""
	if d == mysqlDialect {
		var v string
		if err := conn.QueryRowContext(ctx, "SELECT VERSION()").Scan(&v); err != nil {
			return err
		}
		collation = "utf8mb4_0900_bin"
		if strings.Contains(strings.ToLower(v), "mariadb") {
			collation = "utf8mb4_nopad_bin"
		}
		var got int
		if err := conn.QueryRowContext(ctx, "SELECT GET_LOCK(?, 60)", t.schema).Scan(&got); err != nil {
			return err
		}
		if got != 1 {
			return fmt.Errorf("apipool: sql: could not take the lock %q to migrate the schema", t.schema)
		}
		defer conn.ExecContext(context.WithoutCancel(ctx), "SELECT RELEASE_LOCK(?)", t.schema)
	}
	// An event table made by someone else, of another layout, stays as it
	// is: say so before the migrations trip over it.
	if rows, err := conn.QueryContext(ctx, "SELECT 1 FROM "+t.events+" WHERE 1 = 0"); err == nil {
		rows.Close()
		if err := checkTable(ctx, d, conn, t.events, eventTable[:len(eventTable)-len(usageEventColumns)], "before"); err != nil {
			return err
		}
	}
	// PostgreSQL and SQLite change the schema in one transaction; MySQL
	// commits each DDL statement by itself, under the lock above.
	tx, err := conn.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	if d == postgresDialect {
		if _, err := tx.ExecContext(ctx, "SELECT pg_advisory_xact_lock(hashtext($1))", t.schema); err != nil {
			return err
		}
	}
	if _, err := tx.ExecContext(ctx, "CREATE TABLE IF NOT EXISTS "+t.schema+" (version INTEGER NOT NULL)"); err != nil {
		return &SchemaError{Table: t.schema, Err: err}
	}
	var versions []int
	rows, err := tx.QueryContext(ctx, "SELECT version FROM "+t.schema)
	if err != nil {
		return &SchemaError{Table: t.schema, Err: err}
	}
	for rows.Next() {
		var v int
		if err := rows.Scan(&v); err != nil {
			rows.Close()
			return &SchemaError{Table: t.schema, Err: err}
		}
		versions = append(versions, v)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return err
	}
	version := 0
	switch len(versions) {
	case 0:
	case 1:
		version = versions[0]
	default:
		return &SchemaError{Table: t.schema, Err: fmt.Errorf("%d rows, want one", len(versions))}
	}
	if version > SchemaVersion {
		return &SchemaError{Table: t.schema, Err: fmt.Errorf("schema version %d is newer than this package's (%d): upgrade apipool", version, SchemaVersion)}
	}
	for v := version + 1; v <= target; v++ {
		for _, stmt := range migrations[v](d, t, collation) {
			if _, err := tx.ExecContext(ctx, stmt); err != nil && !indexGone(d, stmt, err) && !columnThere(d, stmt, err) {
				return &SchemaError{Table: tableOf(stmt), Err: fmt.Errorf("migrating to schema version %d: %w", v, err)}
			}
		}
		q := "UPDATE " + t.schema + " SET version = ?"
		if v == 1 && version == 0 && len(versions) == 0 {
			q = "INSERT INTO " + t.schema + " (version) VALUES (?)"
		}
		if _, err := tx.ExecContext(ctx, d.rebind(q), v); err != nil {
			return &SchemaError{Table: t.schema, Err: err}
		}
		if version < v {
			s.log.Info("apipool: sql: migrated the schema", "version", v, "tables", t.prefix+"*")
		}
	}
	if err := tx.Commit(); err != nil {
		return err
	}
	return s.checkTables(ctx, conn, target)
}

// indexGone reports whether err is MySQL's answer to a DROP INDEX of an
// index that is not there (error 1091).
func indexGone(d *dialect, stmt string, err error) bool {
	var me *mysql.MySQLError
	return d == mysqlDialect && strings.HasPrefix(stmt, "DROP INDEX ") && errors.As(err, &me) && me.Number == 1091
}

// columnThere reports whether err is MySQL's answer to an ALTER TABLE
// that adds a column already there (error 1060): the statement ran
// before, whole (MySQL applies one ALTER TABLE at once), in a migration
// cut off before its end.
func columnThere(d *dialect, stmt string, err error) bool {
	var me *mysql.MySQLError
	return d == mysqlDialect && strings.HasPrefix(stmt, "ALTER TABLE ") && strings.Contains(stmt, " ADD COLUMN ") &&
		errors.As(err, &me) && me.Number == 1060
}

// tableOf returns the table a DDL statement names, for errors.
func tableOf(stmt string) string {
	f := strings.Fields(stmt)
	for i, w := range f {
		if i+1 < len(f) && (w == "EXISTS" || w == "INTO" || w == "ON" || w == "TABLE" && f[i+1] != "IF") {
			return f[i+1]
		}
	}
	return "?"
}

// checkTables checks that the tables have the columns the store uses, by
// selecting them.
func (s *Store) checkTables(ctx context.Context, conn *dbsql.Conn, version int) error {
	check := func(table string, cols []column) error { return checkTable(ctx, s.d, conn, table, cols, "after") }
	// The columns of each table at version: those of version 5 are last.
	upTo := func(cols []column, v5 int) []column {
		if version < 5 {
			return cols[:len(cols)-v5]
		}
		return cols
	}
	if err := check(s.t.events, upTo(eventTable, len(usageEventColumns))); err != nil {
		return err
	}
	if version >= 2 {
		if err := check(s.t.rollup, upTo(rollupTable, 2)); err != nil {
			return err
		}
		if err := check(s.t.batches, batchesTable); err != nil {
			return err
		}
	}
	if version >= 3 {
		if err := check(s.t.counts, upTo(countsTable, 2+len(usageSumColumns))); err != nil {
			return err
		}
	}
	return nil
}

// kind is the kind of value a column holds.
type kind int8

const (
	int64Col kind = iota
	int32Col
	int16Col
	textCol
	float64Col
)

// column is a column the store reads and writes, and its kind.
type column struct {
	name string
	kind kind
}

var (
	// eventTable's columns are in the order of row's fields, those of
	// version 5 last.
	eventTable = append([]column{
		{"event_time_ms", int64Col}, {"event_id", textCol}, {"key_id", textCol}, {"key_fingerprint", textCol},
		{"status_id", int16Col}, {"status", textCol}, {"http_status", int32Col}, {"latency_us", int64Col},
		{"latency_bin", int16Col}, {"attempt", int32Col}, {"method", textCol}, {"host", textCol},
		{"operation", textCol}, {"request_bytes", int64Col}, {"response_bytes", int64Col},
		{"trace_id", textCol}, {"span_id", textCol}, {"error_type", textCol},
	}, usageEventColumns...)
	// rollupTable's and countsTable's are in the order of rollupRow's
	// and countRow's values, those of version 5 last.
	rollupTable = []column{
		{"minute_ms", int64Col}, {"key_id", textCol}, {"status_id", int16Col}, {"latency_bin", int16Col},
		{"events", int64Col}, {"latency_us_sum", int64Col}, {"model", textCol}, {"client", textCol},
	}
	countsTable = append([]column{{"minute_ms", int64Col}, {"key_id", textCol}, {"status_id", int16Col}, {"events", int64Col},
		{"model", textCol}, {"client", textCol}}, usageSumColumns...)
	batchesTable = []column{{"batch_id", textCol}, {"written_ms", int64Col}, {"events", int32Col}}
)

// typeFits reports whether a column of the database type typ (as
// database/sql's ColumnType.DatabaseTypeName gives it, upper case) holds
// the store's values of kind k. PostgreSQL's must be exactly the store's
// types, as the store writes COPY's binary format; MySQL's integers may
// be wider; SQLite's declared types must have the affinity (INTEGER or
// TEXT) that stores and compares the values as the store's queries
// expect.
func (d *dialect) typeFits(typ string, k kind) bool {
	switch d {
	case postgresDialect:
		switch k {
		case float64Col:
			return typ == "FLOAT8"
		case int64Col:
			return typ == "INT8"
		case int32Col:
			return typ == "INT4"
		case int16Col:
			return typ == "INT2"
		}
		return typ == "TEXT" || typ == "VARCHAR"
	case mysqlDialect:
		switch k {
		case float64Col:
			return typ == "DOUBLE"
		case int64Col:
			return typ == "BIGINT"
		case int32Col:
			return typ == "INT" || typ == "BIGINT"
		case int16Col:
			return typ == "SMALLINT" || typ == "MEDIUMINT" || typ == "INT" || typ == "BIGINT"
		}
		return typ == "VARCHAR" || typ == "CHAR" || strings.HasSuffix(typ, "TEXT")
	}
	// SQLite's affinity rules, in their order.
	if strings.Contains(typ, "INT") {
		return k != textCol && k != float64Col
	}
	if strings.Contains(typ, "CHAR") || strings.Contains(typ, "CLOB") || strings.Contains(typ, "TEXT") {
		return k == textCol
	}
	return k == float64Col && (strings.Contains(typ, "REAL") || strings.Contains(typ, "FLOA") || strings.Contains(typ, "DOUB"))
}

type queryer interface {
	QueryContext(ctx context.Context, query string, args ...any) (*dbsql.Rows, error)
}

// checkTable checks that table has cols, of types that hold them, by
// selecting them. when ("before" or "after" migrating) goes into the
// query's text as a comment, so that the two checks are different
// statements: pgx caches a statement's result types by its text, and a
// migration may change them.
func checkTable(ctx context.Context, d *dialect, q queryer, table string, cols []column, when string) error {
	rows, err := q.QueryContext(ctx, "SELECT "+strings.Join(columnNames(cols), ", ")+" FROM "+table+" WHERE 1 = 0 /* "+when+" */")
	if err != nil {
		if ctx.Err() != nil {
			return err
		}
		return &SchemaError{Table: table, Err: fmt.Errorf("it lacks columns the store uses (%w)", err)}
	}
	defer rows.Close()
	types, err := rows.ColumnTypes()
	if err != nil {
		return err
	}
	for i, ct := range types {
		if typ := strings.ToUpper(ct.DatabaseTypeName()); !d.typeFits(typ, cols[i].kind) {
			want := [...]string{int64Col: "a 64-bit integer", int32Col: "a 32-bit integer", int16Col: "a 16-bit integer", textCol: "text",
				float64Col: "a 64-bit float"}[cols[i].kind]
			return &SchemaError{Table: table, Err: fmt.Errorf("its column %s is of type %s; the store writes %s there", cols[i].name, typ, want)}
		}
	}
	return rows.Close()
}

// isSchemaError reports whether err is a SchemaError.
func isSchemaError(err error) bool {
	var se *SchemaError
	return errors.As(err, &se)
}
