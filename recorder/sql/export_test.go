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
		for i := range evs[:k] {
			r := sanitize(&evs[i], s.ids.next())
			args = r.values(args)
		}
		if _, err := db.ExecContext(ctx, d.insertEventsSQL(s.t, k), args...); err != nil {
			return err
		}
		evs = evs[k:]
	}
	return nil
}
