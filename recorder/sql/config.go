package sql

import (
	"fmt"
	"log/slog"
	"regexp"
	"time"

	"github.com/apipool-ng/apipool/clock"
	"github.com/apipool-ng/apipool/errdefs"
	"github.com/apipool-ng/apipool/recorder/sql/internal/batch"
)

// Config configures a Store. Driver and DSN are required; every other
// zero field takes the default its comment gives.
type Config struct {
	// Driver names the database: "sqlite" (SQLite through
	// modernc.org/sqlite, pure Go), "postgres" (PostgreSQL through
	// github.com/jackc/pgx/v5; "pgx" and "postgresql" are the same) or
	// "mysql" (MySQL or MariaDB through github.com/go-sql-driver/mysql;
	// "mariadb" is the same).
	Driver string
	// DSN says where the database is, in the driver's own syntax:
	//   - sqlite: a file name ("usage.db"), or a "file:" URI; the file is
	//     created when missing. The store adds its pragmas (WAL journal,
	//     busy timeout, synchronous=NORMAL) to the DSN.
	//   - postgres: "postgres://user:pass@host:5432/db?sslmode=disable" or
	//     "host=... user=... dbname=...".
	//   - mysql: "user:pass@tcp(host:3306)/db" (see go-sql-driver/mysql).
	DSN string
	// TablePrefix starts the store's table names: TablePrefix+"events",
	// +"events_1m" (the per-minute rollup), +"counts_1m" (the per-minute
	// counts), +"batches" and +"schema".
	// Default: "apipool_". It must be a plain identifier prefix
	// ([A-Za-z_][A-Za-z0-9_]*, at most 40 bytes).
	TablePrefix string

	// BatchSize is the most events per transaction: the writer writes when
	// this many are queued, or FlushInterval after the last write,
	// whichever comes first. Default: 5,000; 10,000 for PostgreSQL, whose
	// COPY wrote about a tenth faster so (bench/, BenchmarkSQLRecord).
	BatchSize int
	// FlushInterval: see BatchSize. Default: 1s.
	FlushInterval time.Duration
	// QueueSize bounds the events held in memory waiting for the writer,
	// besides the batch being written. Default: 100,000 (about 270 bytes
	// each, plus their strings).
	QueueSize int
	// OnFull says what Record does when the queue is full. Default: Drop.
	OnFull FullPolicy
	// MinBackoff and MaxBackoff bound the jittered, doubling wait between
	// failed attempts to write a batch. Defaults: 100ms and 10s.
	MinBackoff, MaxBackoff time.Duration

	// Retention, when positive, makes the writer delete raw events older
	// than Retention (by their time, against Clock), a few thousand
	// rows at a time: every 10s, and at each batch or FlushInterval tick
	// while more old events remain. It runs after a batch is written and
	// at the FlushInterval ticks that find no events to write, so a store
	// that receives nothing still prunes. The per-minute rollups are
	// kept, so counts and latencies of whole minutes stay answerable; see
	// Store.DeleteOlderThan.
	Retention time.Duration

	// Clock gives the time of events recorded without one (a zero
	// Event.Time) and the time Retention counts back from. Default:
	// clock.System. The writer's timing (FlushInterval, backoffs, how often
	// it prunes) follows the system clock whatever this is.
	Clock clock.Clock

	// Logger receives the store's rare log lines: write failures and
	// recoveries, schema changes. Default: none.
	Logger *slog.Logger

	// noLoad: MySQL inserts the events by INSERT even when the server
	// allows LOAD DATA LOCAL INFILE (for the tests).
	noLoad bool
}

// FullPolicy says what Record does when the queue is full.
type FullPolicy int

const (
	// Drop drops the event and counts it (see Store.Dropped). Record
	// never waits.
	Drop FullPolicy = iota
	// Block makes Record wait until there is room, or the store closes.
	Block
)

func (p FullPolicy) String() string {
	switch p {
	case Drop:
		return "drop"
	case Block:
		return "block"
	}
	return fmt.Sprintf("FullPolicy(%d)", int(p))
}

// postgresBatchSize is the default of Config.BatchSize for PostgreSQL.
const postgresBatchSize = 10_000

// DefaultTablePrefix is the default of Config.TablePrefix.
const DefaultTablePrefix = "apipool_"

var prefixRE = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]{0,39}$`)

// configError returns the *errdefs.ConfigError (apipool.ConfigError) of
// the Config field named field.
func configError(field, format string, args ...any) error {
	return &errdefs.ConfigError{Field: "sql.Config." + field, Reason: fmt.Sprintf(format, args...)}
}

// withDefaults returns c with defaults for its zero fields and the batch
// writer's configuration, or a *errdefs.ConfigError naming the field at
// fault.
func (c Config) withDefaults() (Config, batch.Config, error) {
	bad := func(field, format string, args ...any) (Config, batch.Config, error) {
		return c, batch.Config{}, configError(field, format, args...)
	}
	if c.TablePrefix == "" {
		c.TablePrefix = DefaultTablePrefix
	}
	if c.Clock == nil {
		c.Clock = clock.System{}
	}
	switch {
	case dialects[c.Driver] == nil:
		return bad("Driver", "unknown driver %q (want sqlite, postgres or mysql)", c.Driver)
	case c.DSN == "":
		return bad("DSN", "empty DSN")
	case !prefixRE.MatchString(c.TablePrefix):
		return bad("TablePrefix", "%q is not a plain identifier prefix of at most 40 bytes", c.TablePrefix)
	case c.OnFull != Drop && c.OnFull != Block:
		return bad("OnFull", "unknown policy %v", c.OnFull)
	case c.BatchSize < 0:
		return bad("BatchSize", "negative size %d", c.BatchSize)
	case c.QueueSize < 0:
		return bad("QueueSize", "negative size %d", c.QueueSize)
	}
	for _, d := range []struct {
		name string
		v    time.Duration
	}{{"FlushInterval", c.FlushInterval}, {"MinBackoff", c.MinBackoff}, {"MaxBackoff", c.MaxBackoff}, {"Retention", c.Retention}} {
		if d.v < 0 {
			return bad(d.name, "negative duration %v", d.v)
		}
	}
	if c.BatchSize == 0 && dialects[c.Driver] == postgresDialect {
		c.BatchSize = postgresBatchSize
	}
	bc, err := batch.Config{
		BatchSize:     c.BatchSize,
		FlushInterval: c.FlushInterval,
		QueueSize:     c.QueueSize,
		Block:         c.OnFull == Block,
		MinBackoff:    c.MinBackoff,
		MaxBackoff:    c.MaxBackoff,
	}.WithDefaults()
	if err != nil { // MinBackoff above MaxBackoff, with their defaults
		return bad("MinBackoff", "%v", err)
	}
	c.BatchSize, c.FlushInterval, c.QueueSize = bc.BatchSize, bc.FlushInterval, bc.QueueSize
	c.MinBackoff, c.MaxBackoff = bc.MinBackoff, bc.MaxBackoff
	return c, bc, nil
}
