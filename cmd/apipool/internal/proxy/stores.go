package proxy

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/apipool-ng/apipool/cmd/apipool/internal/config"
	"github.com/apipool-ng/apipool/recorder"
	"github.com/apipool-ng/apipool/recorder/clickhouse"
	"github.com/apipool-ng/apipool/recorder/memory"
	sqlrec "github.com/apipool-ng/apipool/recorder/sql"
	"github.com/redis/go-redis/v9"
)

// ErrNoStore is returned by report for a memory recorder, whose events live
// in the serving process only.
var ErrNoStore = errors.New("the memory recorder keeps events inside the serving process: report needs recorder type sql or clickhouse, such as\n  recorder:\n    type: sql\n    sql: {driver: sqlite, dsn: usage.db}   # next to the config file\nin the file serve and report both read (see the README's \"check and report\")")

// openRecorder opens the configured store. forServe lets a ClickHouse
// store start while the server is down (events queue meanwhile).
func openRecorder(ctx context.Context, c config.Recorder, log *slog.Logger, forServe bool) (recorder.Recorder, error) {
	switch c.Type {
	case "memory":
		var opts []memory.Option
		if c.Retention > 0 {
			opts = append(opts, memory.WithRetention(c.Retention))
		}
		s, err := memory.New(opts...)
		if err != nil {
			return nil, fmt.Errorf("recorder memory: %w", err)
		}
		return s, nil
	case "clickhouse":
		ch := c.ClickHouse
		cfg := clickhouse.Config{
			Addrs: ch.Addrs, Database: ch.Database, Table: ch.Table,
			Username: ch.Username, Password: ch.Password,
			SpillDir: ch.SpillDir, BatchSize: ch.BatchSize, TTL: ch.TTL,
			Cluster: ch.Cluster, InsertDistributed: ch.InsertDistributed,
			AllowUnavailable: forServe,
			Logger:           log,
		}
		if !forServe {
			cfg.DialTimeout = 5 * time.Second
		}
		s, err := clickhouse.New(ctx, cfg)
		if err != nil {
			return nil, fmt.Errorf("recorder clickhouse: %w", err)
		}
		return s, nil
	case "sql":
		if forServe && c.SQL.Driver != "sqlite" {
			return openSQLDeferred(ctx, c.SQL, log)
		}
		return openSQL(ctx, c.SQL, log)
	}
	return nil, fmt.Errorf("unknown recorder type %q", c.Type)
}

// openSQL opens the SQL store (SQLite, PostgreSQL, MySQL/MariaDB).
func openSQL(ctx context.Context, c config.SQL, log *slog.Logger) (recorder.Recorder, error) {
	s, err := sqlrec.New(ctx, sqlrec.Config{Driver: c.Driver, DSN: c.DSN, TablePrefix: c.TablePrefix, Retention: c.Retention, Logger: log})
	if err != nil {
		if c.SQLiteFile != "" {
			return nil, fmt.Errorf("recorder sql: SQLite database %s: %w", c.SQLiteFile, err)
		}
		return nil, fmt.Errorf("recorder sql: %w", err)
	}
	return s, nil
}

// openSQLDeferred opens a PostgreSQL or MySQL store for serve. When the
// database does not answer (sqlrec.ErrUnavailable) within
// deferredAttemptTimeout, serve starts anyway with a deferredStore that
// keeps trying; other errors (a schema the store cannot use, a bad DSN)
// fail as before, since retrying would not cure them. SQLite is a local
// file: it is not deferred.
func openSQLDeferred(ctx context.Context, c config.SQL, log *slog.Logger) (recorder.Recorder, error) {
	actx, cancel := context.WithTimeout(ctx, deferredAttemptTimeout)
	r, err := openSQL(actx, c, log)
	cancel()
	if err == nil || !errors.Is(err, sqlrec.ErrUnavailable) || ctx.Err() != nil {
		return r, err
	}
	return newDeferredStore("sql/"+c.Driver, err, func(ctx context.Context) (recorder.Recorder, error) {
		return openSQL(ctx, c, log)
	}, log), nil
}

// redisClient returns a client set up as package redisstate advises:
// deadlines honoured, no retries hidden on the request path.
func redisClient(c *config.Redis) *redis.Client {
	return redis.NewClient(&redis.Options{
		Addr:                  c.Addr,
		Username:              c.Username,
		Password:              c.Password,
		DB:                    c.DB,
		DialTimeout:           time.Second,
		DialerRetries:         1,
		ReadTimeout:           500 * time.Millisecond,
		WriteTimeout:          500 * time.Millisecond,
		ContextTimeoutEnabled: true,
		MaxRetries:            -1,
	})
}
