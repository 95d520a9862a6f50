package sql

import (
	"context"
	dbsql "database/sql"
	"fmt"
	"log/slog"
	"strings"

	"github.com/apipool-ng/apipool/recorder"
)

// CreateAtVersion makes the schema of version v in the database of cfg and
// inserts evs into its event table, as a store of that version would
// have: for the upgrade tests.
func CreateAtVersion(ctx context.Context, cfg Config, v int, evs []recorder.Event) error {
	cfg, _, err := cfg.withDefaults()
	if err != nil {
		return err
	}
	d := dialects[cfg.Driver]
	dsn := cfg.DSN
	if d == sqliteDialect {
		dsn = sqliteDSN(dsn)
	}
	db, err := dbsql.Open(d.driver, dsn)
	if err != nil {
		return err
	}
	defer db.Close()
	s := &Store{cfg: cfg, d: d, t: newTables(cfg.TablePrefix), db: db, log: slog.New(slog.DiscardHandler), ids: newIDGen()}
	if err := s.migrateTo(ctx, v); err != nil {
		return err
	}
	return insertAtVersion(ctx, s, v, evs)
}

// CreateFromDDL runs the statements ddl (of schema version 4, as that
// version's SchemaSQL gave them), records the version as a store of it
// would have, and inserts evs as its writer would have.
func CreateFromDDL(ctx context.Context, cfg Config, ddl []string, evs []recorder.Event) error {
	cfg, _, err := cfg.withDefaults()
	if err != nil {
		return err
	}
	d := dialects[cfg.Driver]
	dsn := cfg.DSN
	if d == sqliteDialect {
		dsn = sqliteDSN(dsn)
	}
	db, err := dbsql.Open(d.driver, dsn)
	if err != nil {
		return err
	}
	defer db.Close()
	s := &Store{cfg: cfg, d: d, t: newTables(cfg.TablePrefix), db: db, log: slog.New(slog.DiscardHandler), ids: newIDGen()}
	for _, stmt := range append(ddl, "CREATE TABLE "+s.t.schema+" (version INTEGER NOT NULL)", "INSERT INTO "+s.t.schema+" (version) VALUES (4)") {
		if _, err := db.ExecContext(ctx, stmt); err != nil {
			return fmt.Errorf("%s: %w", stmt, err)
		}
	}
	return insertAtVersion(ctx, s, 4, evs)
}

// SchemaSQLTo returns the statements of schema versions 1 to v.
func SchemaSQLTo(driver string, v int) []string {
	return schemaSQLTo(dialects[driver], newTables(DefaultTablePrefix), v)
}

// insertAtVersion inserts evs as the writer of schema version v would
// have: the columns of that version only, and from version 2 the rollups.
func insertAtVersion(ctx context.Context, s *Store, v int, evs []recorder.Event) error {
	d, db := s.d, s.db
	// Before version 5, the columns of version 4.
	evCols, rollCols, countCols := eventColumns, rollupColumns, countsColumns
	if v < 5 {
		evCols = evCols[:len(evCols)-len(usageEventColumns)]
		rollCols = rollCols[:len(rollCols)-2]
		countCols = countCols[:len(countCols)-2-len(usageSumColumns)]
	}
	insert := func(table string, cols []string, n int, tail string) string {
		return d.rebind("INSERT INTO " + table + " (" + strings.Join(cols, ", ") + ") VALUES " + placeholders(n, len(cols)) + tail)
	}
	upsertRollup, upsertCounts := " ON CONFLICT (minute_ms, key_id, status_id, latency_bin) DO UPDATE SET events = "+s.t.rollup+".events + excluded.events",
		" ON CONFLICT (minute_ms, key_id, status_id) DO UPDATE SET events = "+s.t.counts+".events + excluded.events"
	if d == mysqlDialect {
		upsertRollup, upsertCounts = " ON DUPLICATE KEY UPDATE events = events + VALUES(events)", " ON DUPLICATE KEY UPDATE events = events + VALUES(events)"
	}
	exec := func(q string, args ...any) error { _, err := db.ExecContext(ctx, q, args...); return err }
	for len(evs) > 0 {
		k := min(len(evs), 100)
		var args []any
		rows := make([]row, 0, k)
		for i := range evs[:k] {
			r := sanitize(&evs[i], s.ids.next())
			rows = append(rows, r)
			args = r.values(args, false)[:len(args)+len(evCols)]
		}
		if err := exec(insert(s.t.events, evCols, k, ""), args...); err != nil {
			return err
		}
		evs = evs[k:]
		agg := aggregate(rows, nil)
		if v >= 5 {
			if err := upsertChunks(s, agg, func(n int) string { return d.upsertRollupSQL(s.t, n) }, exec); err != nil {
				return err
			}
			if err := upsertChunks(s, countsOf(agg, nil), func(n int) string { return d.upsertCountsSQL(s.t, n) }, exec); err != nil {
				return err
			}
			continue
		}
		// From version 2 on, the writer keeps the rollups: per minute, key,
		// status and bin, and from version 3 per minute, key and status.
		// (Before version 5, without models and clients: merge the rows.)
		type rk struct {
			m       int64
			k       string
			st, bin int16
		}
		roll := map[rk][2]int64{}
		counts := map[rk]int64{}
		for _, a := range agg {
			x := roll[rk{a.minute, a.keyID, a.statusID, a.bin}]
			roll[rk{a.minute, a.keyID, a.statusID, a.bin}] = [2]int64{x[0] + a.events, x[1] + a.latSum}
			counts[rk{a.minute, a.keyID, a.statusID, -1}] += a.events
		}
		if v >= 2 {
			for key, x := range roll {
				if err := exec(insert(s.t.rollup, rollCols, 1, upsertRollup), key.m, key.k, key.st, key.bin, x[0], x[1]); err != nil {
					return err
				}
			}
		}
		if v >= 3 {
			for key, n := range counts {
				if err := exec(insert(s.t.counts, countCols, 1, upsertCounts), key.m, key.k, key.st, n); err != nil {
					return err
				}
			}
		}
	}
	return nil
}

// WithoutLoad makes a MySQL store insert its events by INSERT even when
// the server allows LOAD DATA LOCAL INFILE.
func WithoutLoad(c Config) Config {
	c.noLoad = true
	return c
}

// UsesLoad reports whether s writes its events by LOAD DATA LOCAL INFILE
// (read it after Flush: the writer's own).
func UsesLoad(s *Store) bool { return s.useLoad }
