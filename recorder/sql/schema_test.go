package sql_test

import (
	"context"
	dbsql "database/sql"
	"errors"
	"maps"
	"math"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/apipool-ng/apipool"
	"github.com/apipool-ng/apipool/errdefs"
	"github.com/apipool-ng/apipool/recorder"
	"github.com/apipool-ng/apipool/recorder/recordertest"
	sqlrec "github.com/apipool-ng/apipool/recorder/sql"
	"github.com/apipool-ng/apipool/status"
)

var driverNames = map[string]string{"sqlite": "sqlite", "postgres": "pgx", "mysql": "mysql"}

// rawDB opens the database of a DSN directly.
func rawDB(t *testing.T, driver, dsn string) *dbsql.DB {
	t.Helper()
	db, err := dbsql.Open(driverNames[driver], dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

// TestUpgradeFromVersion1: a database of schema version 1 (the event
// table alone) holding the suite's events is upgraded on open: the
// rollups are filled from the events, and every answer counts them.
func TestUpgradeFromVersion1(t *testing.T) { testUpgrade(t, 1) }

// TestUpgradeFromVersion2: a database of schema version 2 (events and the
// per-minute rollup with latency bins) is upgraded on open: the counts
// rollup is filled from the per-minute rollup, and every answer counts
// the events.
func TestUpgradeFromVersion2(t *testing.T) { testUpgrade(t, 2) }

// TestUpgradeFromVersion3: a database of schema version 3 (events with
// their three indexes, both rollups) is upgraded on open to the leaner
// event table, and every answer still counts the events.
func TestUpgradeFromVersion3(t *testing.T) { testUpgrade(t, 3) }

// TestUpgradeFromVersion4: a database of schema version 4 (without the
// usage columns) is upgraded on open: its events read as of no model nor
// client, their usage not known, and new events count with theirs.
func TestUpgradeFromVersion4(t *testing.T) { testUpgrade(t, 4) }

// TestUpgradeFromVersion5: a database of schema version 5 (usage not
// known stored as -1) is upgraded on open (on PostgreSQL the usage amounts
// become nullable, and new rows say NULL for not known): the old events
// read as before, and old and new events not saying their usage count as
// unknown, from the rollups and from the event table.
func TestUpgradeFromVersion5(t *testing.T) {
	for _, driver := range drivers {
		t.Run(driver, func(t *testing.T) {
			ctx := context.Background()
			cfg := sqlrec.Config{Driver: driver, DSN: dsnFor(t, driver)}
			base := recordertest.Base
			evs := recordertest.Events(base)
			if err := sqlrec.CreateAtVersion(ctx, cfg, 5, evs); err != nil {
				t.Fatal(err)
			}
			db := rawDB(t, driver, cfg.DSN)
			var unknownBefore int
			if err := db.QueryRow("SELECT COUNT(*) FROM apipool_events WHERE cost = -1").Scan(&unknownBefore); err != nil || unknownBefore == 0 {
				t.Fatalf("%d events of cost -1 before, %v; want some", unknownBefore, err)
			}
			s := open(t, driver, cfg)
			var v int
			if err := db.QueryRow("SELECT version FROM apipool_schema").Scan(&v); err != nil || v != sqlrec.SchemaVersion {
				t.Fatalf("version after = %d, %v; want %d", v, err, sqlrec.SchemaVersion)
			}
			// New events, two of them not saying their usage, in the
			// minute after the suite's last.
			last := base
			for _, e := range evs {
				if e.Time.After(last) {
					last = e.Time
				}
			}
			at := last.Truncate(time.Minute).Add(time.Minute + 10*time.Second)
			for i := range 3 {
				e := recorder.Unknown()
				e.Time, e.KeyID, e.Status, e.Model = at.Add(time.Duration(i)*time.Second), "alpha", status.Success, recordertest.ModelA
				if i == 0 {
					e.InputTokens, e.OutputTokens, e.CachedTokens, e.Cost = 1000, 100, 0, 0.75
				}
				s.Record(e)
				evs = append(evs, e)
			}
			if err := s.Flush(ctx); err != nil {
				t.Fatal(err)
			}
			// The old rows keep their -1s; the new ones not saying their
			// cost hold -1 too, or NULL on PostgreSQL.
			wantMinus, wantNull := unknownBefore+2, 0
			if driver == "postgres" {
				wantMinus, wantNull = unknownBefore, 2
			}
			var minus, null int
			if err := db.QueryRow("SELECT COUNT(CASE WHEN cost = -1 THEN 1 END), COUNT(CASE WHEN cost IS NULL THEN 1 END) FROM apipool_events").
				Scan(&minus, &null); err != nil || minus != wantMinus || null != wantNull {
				t.Errorf("%d events of cost -1 after, %d of NULL, %v; want %d and %d", minus, null, err, wantMinus, wantNull)
			}
			// Whole minutes (the rollups), and windows of partial minutes
			// (the event table: old rows of -1, new ones of -1 or NULL).
			for _, q := range []recorder.Query{
				{},
				{Since: base, Until: at.Add(time.Hour)},
				{Since: base.Add(30 * time.Second), Until: at.Add(1500 * time.Millisecond)},
				{Since: at, Until: at.Add(2500 * time.Millisecond)},
			} {
				for _, by := range []recorder.GroupBy{recorder.ByKey, recorder.ByModel} {
					got, err := s.TotalsBy(ctx, q, by)
					if want := wantTotals(evs, q, by); err != nil || !totalsNear(got, want) {
						t.Errorf("TotalsBy(%v, %v) = %+v, %v; want %+v", q.Since, q.Until, got, err, want)
					}
				}
			}
		})
	}
}

// wantTotals computes TotalsBy's answer from evs (ByKey or ByModel).
func wantTotals(evs []recorder.Event, q recorder.Query, by recorder.GroupBy) map[string]recorder.Totals {
	out := map[string]recorder.Totals{}
	for _, e := range evs {
		if !q.Since.IsZero() && e.Time.Before(q.Since) || !q.Until.IsZero() && !e.Time.Before(q.Until) {
			continue
		}
		name := e.KeyID
		if by == recorder.ByModel {
			name = e.Model
		}
		t := out[name]
		t.Events++
		t.InputTokens += max(e.InputTokens, 0)
		t.OutputTokens += max(e.OutputTokens, 0)
		t.CachedTokens += max(e.CachedTokens, 0)
		if e.InputTokens < 0 || e.OutputTokens < 0 {
			t.TokensUnknown++
		}
		if e.Units >= 0 {
			t.Units += e.Units
		} else {
			t.UnitsUnknown++
		}
		if e.Cost >= 0 {
			t.Cost += e.Cost
		} else {
			t.CostUnknown++
		}
		out[name] = t
	}
	return out
}

// totalsNear compares totals: counts exactly, sums of floats within a
// billionth.
func totalsNear(a, b map[string]recorder.Totals) bool {
	return maps.EqualFunc(a, b, func(x, y recorder.Totals) bool {
		near := func(u, v float64) bool { return math.Abs(u-v) <= 1e-9*max(math.Abs(u), math.Abs(v)) }
		fx, fy := x, y
		fx.Units, fx.Cost, fy.Units, fy.Cost = 0, 0, 0, 0
		return fx == fy && near(x.Units, y.Units) && near(x.Cost, y.Cost)
	})
}

// TestUpgradeFromVersion4DDL: the same from tables made by the statements
// that version 4's SchemaSQL gave (testdata/schema_v4_*.sql, saved from
// it), which are also what the migrations up to version 4 still make.
func TestUpgradeFromVersion4DDL(t *testing.T) { testUpgrade(t, -4) }

// TestSchemaUpToVersion4Unchanged: the migrations up to version 4 make the
// statements they made when version 4 was the newest, so that databases
// made then and now by them are alike.
func TestSchemaUpToVersion4Unchanged(t *testing.T) {
	for _, driver := range drivers {
		if got, want := sqlrec.SchemaSQLTo(driver, 4), v4DDL(t, driver); !slices.Equal(got, want) {
			t.Errorf("%s: the statements of versions 1 to 4 changed:\n%s\nwant\n%s", driver, strings.Join(got, ";\n"), strings.Join(want, ";\n"))
		}
	}
}

// v4DDL returns the statements version 4's SchemaSQL gave for driver.
func v4DDL(t *testing.T, driver string) []string {
	b, err := os.ReadFile("testdata/schema_v4_" + driver + ".sql")
	if err != nil {
		t.Fatal(err)
	}
	return strings.Split(strings.TrimSuffix(string(b), ";\n"), ";\n\n")
}

// testUpgrade makes a database of schema version from (-4: from
// version 4's DDL) holding the suite's events, and opens a store on it.
func testUpgrade(t *testing.T, from int) {
	for _, driver := range drivers {
		t.Run(driver, func(t *testing.T) {
			from := from // each driver's own: -4 turns into 4 below
			ctx := context.Background()
			dsn := dsnFor(t, driver)
			cfg := sqlrec.Config{Driver: driver, DSN: dsn}
			base := recordertest.Base
			var err error
			if from < 0 {
				from = -from
				err = sqlrec.CreateFromDDL(ctx, cfg, v4DDL(t, driver), recordertest.Events(base))
			} else {
				err = sqlrec.CreateAtVersion(ctx, cfg, from, recordertest.Events(base))
			}
			if err != nil {
				t.Fatal(err)
			}
			db := rawDB(t, driver, dsn)
			var v int
			if err := db.QueryRow("SELECT version FROM apipool_schema").Scan(&v); err != nil || v != from {
				t.Fatalf("version before = %d, %v; want %d", v, err, from)
			}
			s := open(t, driver, cfg)
			if err := db.QueryRow("SELECT version FROM apipool_schema").Scan(&v); err != nil || v != sqlrec.SchemaVersion {
				t.Fatalf("version after = %d, %v; want %d", v, err, sqlrec.SchemaVersion)
			}
			for _, table := range []string{"apipool_events_1m", "apipool_counts_1m"} {
				var rolled int64
				if err := db.QueryRow("SELECT SUM(events) FROM " + table).Scan(&rolled); err != nil || rolled != 585 {
					t.Errorf("%s holds %d events, %v; want all 585", table, rolled, err)
				}
			}
			if lat, err := s.LatencyByKey(ctx, recorder.Query{Since: base, Until: base.Add(4 * time.Hour)}); err != nil || lat["alpha"].Count != 340 {
				t.Errorf("LatencyByKey[alpha] = %+v, %v; want a count of 340", lat["alpha"], err)
			}
			// Whole hours read the rollup alone.
			got, err := s.UsageByKey(ctx, recorder.Query{Since: base, Until: base.Add(4 * time.Hour)})
			want := map[string]int64{"alpha": 340, "beta": 215, "gamma": 9, "": 21}
			if err != nil || !maps.Equal(got, want) {
				t.Errorf("UsageByKey = %v, %v; want %v", got, err, want)
			}
			if n, err := s.UsageCount(ctx, recorder.Query{Since: base, Until: base.Add(4 * time.Hour), Status: status.Failed}); err != nil || n != 58 {
				t.Errorf("UsageCount(failed) = %d, %v; want 58", n, err)
			}
			// The old events: no model nor client, usage not known.
			var model, client string
			var in, out, cached int64
			var units, cost float64
			if err := db.QueryRow("SELECT model, client, input_tokens, output_tokens, cached_tokens, units, cost FROM apipool_events WHERE key_id = 'alpha' LIMIT 1").
				Scan(&model, &client, &in, &out, &cached, &units, &cost); err != nil || model != "" || client != "" || in != -1 || out != -1 || cached != -1 || units != -1 || cost != -1 {
				t.Errorf("an old event reads as %q %q %d %d %d %v %v, %v; want no model nor client, and -1s", model, client, in, out, cached, units, cost, err)
			}
			unknown := recorder.Totals{Events: 340, TokensUnknown: 340, UnitsUnknown: 340, CostUnknown: 340}
			for _, q := range []recorder.Query{{KeyID: "alpha"}, {KeyID: "alpha", Since: base, Until: base.Add(4 * time.Hour)}} {
				if got, err := s.TotalsBy(ctx, q, recorder.ByKey); err != nil || len(got) != 1 || got["alpha"] != unknown {
					t.Errorf("TotalsBy(%+v) = %+v, %v; want %+v", q, got, err, unknown)
				}
			}
			if n, err := s.UsageCount(ctx, recorder.Query{Model: recordertest.ModelA, Since: base, Until: base.Add(4 * time.Hour)}); err != nil || n != 0 {
				t.Errorf("UsageCount(model A) = %d, %v; want 0: the old events have no model", n, err)
			}
			// New events count beside the old ones, with their model and usage.
			e := recorder.Unknown()
			e.Time, e.KeyID, e.Status, e.Model, e.Client = base.Add(time.Hour+30*time.Second), "alpha", status.Success, recordertest.ModelA, "web"
			e.InputTokens, e.OutputTokens, e.CachedTokens, e.Cost = 1000, 100, 0, 0.75
			s.Record(e)
			if err := s.Flush(ctx); err != nil {
				t.Fatal(err)
			}
			// The new event alone, read from the event table (a partial
			// minute): its units not known, whatever the column holds.
			second := recorder.Query{Since: e.Time, Until: e.Time.Add(time.Second), Model: recordertest.ModelA}
			wantNew := recorder.Totals{Events: 1, InputTokens: 1000, OutputTokens: 100, UnitsUnknown: 1, Cost: 0.75}
			if got, err := s.TotalsBy(ctx, second, recorder.ByModel); err != nil || len(got) != 1 || got[recordertest.ModelA] != wantNew {
				t.Errorf("TotalsBy(the new event) = %+v, %v; want %+v", got, err, wantNew)
			}
			if n, err := s.UsageCount(ctx, recorder.Query{Since: base, Until: base.Add(4 * time.Hour), KeyID: "alpha"}); err != nil || n != 341 {
				t.Errorf("UsageCount(alpha) = %d, %v; want 341", n, err)
			}
			if n, err := s.UsageCount(ctx, recorder.Query{Since: base, Until: base.Add(4 * time.Hour), Model: recordertest.ModelA, Client: "web"}); err != nil || n != 1 {
				t.Errorf("UsageCount(model A, web) = %d, %v; want 1", n, err)
			}
			want1 := recorder.Totals{Events: 341, InputTokens: 1000, OutputTokens: 100, TokensUnknown: 340, UnitsUnknown: 341, Cost: 0.75, CostUnknown: 340}
			if got, err := s.TotalsBy(ctx, recorder.Query{KeyID: "alpha", Since: base, Until: base.Add(4 * time.Hour)}, recorder.ByKey); err != nil || got["alpha"] != want1 {
				t.Errorf("TotalsBy(alpha) = %+v, %v; want %+v", got, err, want1)
			}
			// Opening again changes nothing.
			s.Close(ctx)
			s2 := open(t, driver, cfg)
			if n, err := s2.UsageCount(ctx, recorder.Query{}); err != nil || n != 586 {
				t.Errorf("after reopening: UsageCount = %d, %v; want 586", n, err)
			}
		})
	}
}

// TestNewerSchema: a database of a newer schema version is refused, with
// a *SchemaError that says so.
func TestNewerSchema(t *testing.T) {
	for _, driver := range drivers {
		t.Run(driver, func(t *testing.T) {
			ctx := context.Background()
			cfg := sqlrec.Config{Driver: driver, DSN: dsnFor(t, driver)}
			s := open(t, driver, cfg)
			s.Close(ctx)
			if _, err := rawDB(t, driver, cfg.DSN).Exec("UPDATE apipool_schema SET version = 99"); err != nil {
				t.Fatal(err)
			}
			_, err := sqlrec.New(ctx, cfg)
			var se *sqlrec.SchemaError
			if !errors.As(err, &se) || se.Table != "apipool_schema" || !strings.Contains(err.Error(), "schema version 99 is newer") {
				t.Errorf("New = %v; want a *SchemaError about version 99", err)
			}
		})
	}
}

// TestIncompatibleTable: an event table of another layout is refused with
// a *SchemaError naming it; the database is left as it was.
func TestIncompatibleTable(t *testing.T) {
	for _, driver := range drivers {
		t.Run(driver, func(t *testing.T) {
			ctx := context.Background()
			cfg := sqlrec.Config{Driver: driver, DSN: dsnFor(t, driver)}
			db := rawDB(t, driver, cfg.DSN)
			if _, err := db.Exec("CREATE TABLE apipool_events (id INTEGER, note VARCHAR(10))"); err != nil {
				t.Fatal(err)
			}
			_, err := sqlrec.New(ctx, cfg)
			var se *sqlrec.SchemaError
			if !errors.As(err, &se) || se.Table != "apipool_events" || !strings.Contains(err.Error(), "lacks columns") {
				t.Fatalf("New = %v; want a *SchemaError naming apipool_events", err)
			}
			t.Log(err)
			var n int
			if err := db.QueryRow("SELECT COUNT(*) FROM apipool_events").Scan(&n); err != nil {
				t.Errorf("the table is gone: %v", err)
			}
		})
	}
}

// TestWrongColumnType: an event table with the store's columns, one of
// them of a type that cannot hold its values, is refused by New with a
// *SchemaError naming the column, rather than failing every write after.
func TestWrongColumnType(t *testing.T) {
	for _, driver := range drivers {
		t.Run(driver, func(t *testing.T) {
			ctx := context.Background()
			cfg := sqlrec.Config{Driver: driver, DSN: dsnFor(t, driver)}
			stmts, err := sqlrec.SchemaSQL(driver, "")
			if err != nil {
				t.Fatal(err)
			}
			ddl := strings.Replace(stmts[0], "event_time_ms BIGINT NOT NULL", "event_time_ms VARCHAR(30) NOT NULL", 1)
			if ddl == stmts[0] {
				t.Fatalf("no event_time_ms BIGINT in %s", ddl)
			}
			if _, err := rawDB(t, driver, cfg.DSN).Exec(ddl); err != nil {
				t.Fatal(err)
			}
			_, err = sqlrec.New(ctx, cfg)
			var se *sqlrec.SchemaError
			if !errors.As(err, &se) || se.Table != "apipool_events" || !strings.Contains(err.Error(), "column event_time_ms is of type") {
				t.Fatalf("New = %v; want a *SchemaError naming apipool_events.event_time_ms", err)
			}
			t.Log(err)
		})
	}
}

func TestSchemaSQL(t *testing.T) {
	for _, driver := range drivers {
		stmts, err := sqlrec.SchemaSQL(driver, "")
		if err != nil || len(stmts) < 3 || !strings.Contains(strings.Join(stmts, "\n"), "CREATE TABLE IF NOT EXISTS apipool_events_1m") ||
			!strings.Contains(strings.Join(stmts, "\n"), "CREATE TABLE IF NOT EXISTS apipool_counts_1m") {
			t.Errorf("SchemaSQL(%s) = %d statements, %v", driver, len(stmts), err)
		}
	}
	if _, err := sqlrec.SchemaSQL("oracle", ""); !errors.Is(err, errdefs.ErrInvalidConfig) {
		t.Errorf("SchemaSQL(oracle): %v", err)
	}
}

func TestBadConfig(t *testing.T) {
	ctx := context.Background()
	for _, c := range []struct {
		cfg   sqlrec.Config
		field string
	}{
		{sqlrec.Config{}, "Driver"},
		{sqlrec.Config{Driver: "oracle", DSN: "x"}, "Driver"},
		{sqlrec.Config{Driver: "sqlite"}, "DSN"},
		{sqlrec.Config{Driver: "sqlite", DSN: "x.db", TablePrefix: "bad-prefix"}, "TablePrefix"},
		{sqlrec.Config{Driver: "sqlite", DSN: "x.db", TablePrefix: "a; DROP TABLE x; --"}, "TablePrefix"},
		{sqlrec.Config{Driver: "sqlite", DSN: "x.db", BatchSize: -1}, "BatchSize"},
		{sqlrec.Config{Driver: "sqlite", DSN: "x.db", QueueSize: -1}, "QueueSize"},
		{sqlrec.Config{Driver: "sqlite", DSN: "x.db", FlushInterval: -time.Second}, "FlushInterval"},
		{sqlrec.Config{Driver: "sqlite", DSN: "x.db", MinBackoff: time.Second, MaxBackoff: time.Millisecond}, "MinBackoff"},
		{sqlrec.Config{Driver: "sqlite", DSN: "x.db", MinBackoff: time.Minute}, "MinBackoff"},
		{sqlrec.Config{Driver: "sqlite", DSN: "x.db", Retention: -time.Hour}, "Retention"},
		{sqlrec.Config{Driver: "sqlite", DSN: "x.db", OnFull: 7}, "OnFull"},
	} {
		_, err := sqlrec.New(ctx, c.cfg)
		var ce *apipool.ConfigError
		if !errors.Is(err, apipool.ErrInvalidConfig) || !errors.As(err, &ce) || ce.Field != "sql.Config."+c.field {
			t.Errorf("New(%+v) = %v; want a *ConfigError naming sql.Config.%s", c.cfg, err, c.field)
		}
	}
}

// TestConcurrentOpen: stores opened at once on a new database (several
// processes starting together, say) all succeed, and the schema is made
// once: one version row, of the package's version.
func TestConcurrentOpen(t *testing.T) {
	const n = 6
	for _, driver := range drivers {
		t.Run(driver, func(t *testing.T) {
			ctx := context.Background()
			cfg := sqlrec.Config{Driver: driver, DSN: dsnFor(t, driver)}
			type result struct {
				s   *sqlrec.Store
				err error
			}
			results := make(chan result, n)
			start := make(chan struct{})
			for range n {
				go func() {
					<-start
					s, err := sqlrec.New(ctx, cfg)
					results <- result{s, err}
				}()
			}
			close(start)
			for range n {
				r := <-results
				if r.err != nil {
					t.Errorf("New: %v", r.err)
					continue
				}
				r.s.Record(recorder.Event{KeyID: "k", Status: status.Success})
				if err := r.s.Close(ctx); err != nil {
					t.Errorf("Close: %v", err)
				}
			}
			db := rawDB(t, driver, cfg.DSN)
			var rows, v int
			if err := db.QueryRow("SELECT COUNT(*), MAX(version) FROM apipool_schema").Scan(&rows, &v); err != nil || rows != 1 || v != sqlrec.SchemaVersion {
				t.Errorf("apipool_schema: %d rows, version %d, %v; want one row of version %d", rows, v, err, sqlrec.SchemaVersion)
			}
			var events int
			if err := db.QueryRow("SELECT COUNT(*) FROM apipool_events").Scan(&events); err != nil || events != n {
				t.Errorf("%d events, %v; want %d, one from each store", events, err, n)
			}
		})
	}
}

// TestUpgradeResumedMySQL: MySQL commits each statement of a migration by
// itself; a migration to version 5 cut off after it changed the event
// table (a crash, a lost connection) is taken up again by the next
// store, which passes over the columns already there.
func TestUpgradeResumedMySQL(t *testing.T) {
	ctx := context.Background()
	cfg := sqlrec.Config{Driver: "mysql", DSN: dsnFor(t, "mysql")}
	if err := sqlrec.CreateAtVersion(ctx, cfg, 4, recordertest.Events(recordertest.Base)); err != nil {
		t.Fatal(err)
	}
	v5 := sqlrec.SchemaSQLTo("mysql", 5)
	first := v5[len(sqlrec.SchemaSQLTo("mysql", 4))]
	if !strings.HasPrefix(first, "ALTER TABLE apipool_events ADD COLUMN model") {
		t.Fatalf("version 5 starts with %s", first)
	}
	db := rawDB(t, "mysql", cfg.DSN)
	if _, err := db.Exec(first); err != nil {
		t.Fatal(err)
	}
	s := open(t, "mysql", cfg)
	if got, err := s.TotalsBy(ctx, recorder.Query{}, recorder.ByModel); err != nil || got[""].Events != 585 || got[""].CostUnknown != 585 {
		t.Errorf("TotalsBy = %+v, %v; want the 585 events, of no model, their cost unknown", got, err)
	}
}
