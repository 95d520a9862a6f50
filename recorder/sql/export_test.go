package sql

import (
	"context"
	dbsql "database/sql"
	"log/slog"

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
	for len(evs) > 0 {
		k := min(len(evs), 100)
		var args []any
		rows := make([]row, 0, k)
		for i := range evs[:k] {
			r := sanitize(&evs[i], s.ids.next())
			rows = append(rows, r)
			args = r.values(args)
		}
		if _, err := db.ExecContext(ctx, d.insertEventsSQL(s.t, k), args...); err != nil {
			return err
		}
		evs = evs[k:]
		// From version 2 on, the writer keeps the rollups.
		exec := func(q string, args ...any) error { _, err := db.ExecContext(ctx, q, args...); return err }
		agg := aggregate(rows, nil)
		if v >= 2 {
			if err := upsertChunks(s, agg, func(n int) string { return d.upsertRollupSQL(s.t, n) }, exec); err != nil {
				return err
			}
		}
		if v >= 3 {
			if err := upsertChunks(s, countsOf(agg, nil), func(n int) string { return d.upsertCountsSQL(s.t, n) }, exec); err != nil {
				return err
			}
		}
	}
	return nil
}
