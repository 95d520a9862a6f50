package sql

import (
	"cmp"
	"context"
	dbsql "database/sql"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/go-sql-driver/mysql" // the "mysql" driver
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/stdlib"
	"modernc.org/sqlite" // the "sqlite" driver

	"github.com/apipool-ng/apipool/errdefs"
	"github.com/apipool-ng/apipool/recorder"
	"github.com/apipool-ng/apipool/recorder/sql/internal/batch"
)

// Store records usage events in a relational database and answers the
// stats queries of recorder.Stats from it. It is safe for concurrent use.
//
// Record copies the event into a bounded in-memory queue and returns; a
// background goroutine, the store's one writer, writes the queue in
// batches, each in one transaction that inserts the events, adds them to
// the per-minute rollups and notes the batch's id. A batch that fails is
// written again, the same events, after a jittered backoff, until it
// succeeds or the store closes; before writing it again the writer checks
// whether the failed attempt was in fact committed (its answer lost), so
// that no event is written twice. Meanwhile events queue, and when the
// queue is full they are dropped and counted (see Dropped), or Record
// waits (Config.OnFull). Close writes what it can and reports what it
// could not (see CloseError).
type Store struct {
	cfg Config
	d   *dialect
	t   tables
	db  *dbsql.DB
	log *slog.Logger
	w   *batch.Writer[recorder.Event]

	// The writer goroutine's own.
	ids       idGen
	rows      []row
	args      []any
	agg       []rollupRow
	counts    []countRow
	batchID   string
	written   uint64
	lastPrune time.Time

	insertStmt *dbsql.Stmt // insertRows rows at a time, SQLite and MySQL
	// plainStmt inserts rows without usage (see row.plain): the columns
	// of schema version 4 only, the others taking their defaults.
	plainStmt *dbsql.Stmt

	// PostgreSQL: the COPY statement, and a buffer for copySource.
	copySQL string
	copyBuf []byte

	// MySQL: the name of the store's reader for LOAD DATA LOCAL INFILE
	// (see setupLoad), the reader of the LOAD under way, and a buffer
	// for it; useLoad, the writer's own, is cleared when the server
	// refuses a LOAD.
	loadName string
	loadSrc  atomic.Pointer[loadReader]
	loadBuf  []byte
	useLoad  bool

	closed atomic.Bool
}

var (
	_ recorder.Recorder    = (*Store)(nil)
	_ recorder.Stats       = (*Store)(nil)
	_ recorder.DropCounter = (*Store)(nil)
	_ recorder.QueueLener  = (*Store)(nil)
	_ recorder.TotalsStats = (*Store)(nil)
)

// ErrUnavailable is wrapped by Open's error when the database does not
// answer.
var ErrUnavailable = errors.New("apipool: sql: database unavailable")

// CloseError is Close's error when some events could not be written
// before Close's context ended.
type CloseError struct {
	// Lost events are gone; they are also counted in Dropped. A batch
	// whose commit was under way when the context ended counts as lost,
	// though the database may have committed it.
	Lost int64
	// Err is the last error from the database, or the context's.
	Err error
}

func (e *CloseError) Error() string {
	return fmt.Sprintf("apipool: sql: closed with %d event(s) not written: %v", e.Lost, e.Err)
}

func (e *CloseError) Unwrap() error { return e.Err }

// Open opens the store on a database with the default Config:
//
//	store, err := sql.Open(ctx, "sqlite", "usage.db")
//
// See New and Config.
func Open(ctx context.Context, driver, dsn string) (*Store, error) {
	return New(ctx, Config{Driver: driver, DSN: dsn})
}

// New connects to the database, creates or upgrades the store's tables
// (see SchemaVersion and the package documentation), and starts the
// writer. It fails with a *errdefs.ConfigError (an *apipool.ConfigError,
// matching apipool.ErrInvalidConfig) for a bad Config,
// ErrUnavailable when the database does not answer within ctx, and a
// *SchemaError when the database holds tables the store cannot use.
func New(ctx context.Context, cfg Config) (*Store, error) {
	cfg, bc, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	d := dialects[cfg.Driver]
	dsn := cfg.DSN
	if d == sqliteDialect {
		dsn = sqliteDSN(dsn)
	}
	if d == postgresDialect {
		// pgx parses the DSN only when it connects: a malformed one would
		// otherwise look like a database that does not answer.
		if _, err := pgx.ParseConfig(dsn); err != nil {
			return nil, &errdefs.ConfigError{Field: "sql.Config.DSN", Reason: err.Error(), Err: err}
		}
	}
	db, err := dbsql.Open(d.driver, dsn)
	if err != nil {
		return nil, &errdefs.ConfigError{Field: "sql.Config.Driver", Reason: err.Error(), Err: err}
	}
	switch d {
	case sqliteDialect:
		// Readers run beside the one writer (WAL). An in-memory database
		// is one per connection: keep one.
		db.SetMaxOpenConns(4)
		if strings.Contains(cfg.DSN, ":memory:") || strings.Contains(cfg.DSN, "mode=memory") {
			db.SetMaxOpenConns(1)
		}
	default:
		db.SetMaxOpenConns(8)
	}
	db.SetMaxIdleConns(4)
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &Store{cfg: cfg, d: d, t: newTables(cfg.TablePrefix), db: db, log: log.With("driver", d.name), ids: newIDGen()}
	if err := s.ping(ctx); err != nil {
		db.Close()
		return nil, fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	if err := s.migrate(ctx); err != nil {
		db.Close()
		if isSchemaError(err) {
			return nil, err
		}
		return nil, fmt.Errorf("apipool: sql: setting up the schema: %w", err)
	}
	if d == postgresDialect {
		s.copySQL = "COPY " + s.t.events + " (" + strings.Join(eventColumns, ", ") + ") FROM STDIN (FORMAT binary)"
	} else {
		if s.insertStmt, err = db.PrepareContext(ctx, d.insertEventsSQL(s.t, d.insertRows, false)); err == nil {
			s.plainStmt, err = db.PrepareContext(ctx, d.insertEventsSQL(s.t, d.insertRows, true))
		}
		if err == nil && d == mysqlDialect {
			err = s.setupLoad(ctx)
		}
		if err != nil {
			s.closeStmts()
			db.Close()
			return nil, fmt.Errorf("apipool: sql: %w", err)
		}
	}
	bc.OnError = func(err error, failures, items int) {
		if failures == 1 {
			s.log.Warn("apipool: sql: writing a batch failed; retrying it", "err", err, "events", items)
		}
	}
	bc.OnRecover = func(failures int) {
		s.log.Info("apipool: sql: writing again", "failures", failures)
	}
	// Prune also when no events come (maintain runs at most every
	// pruneEvery).
	bc.OnIdle = s.maintain
	s.w = batch.New(bc, s.writeBatch)
	return s, nil
}

// ping checks that the database answers. The first connections to a new
// SQLite file race to switch it to WAL, and the losers get SQLITE_BUSY at
// once (the busy timeout does not cover it): ping tries again, for up to
// the busy timeout (5s), so that stores opened together on a new file all
// open.
func (s *Store) ping(ctx context.Context) error {
	deadline := time.Now().Add(5 * time.Second)
	for {
		err := s.db.PingContext(ctx)
		var se *sqlite.Error
		if err == nil || !errors.As(err, &se) || se.Code()&0xff != 5 || time.Now().After(deadline) { // 5: SQLITE_BUSY
			return err
		}
		t := time.NewTimer(time.Duration(5+rand.IntN(20)) * time.Millisecond)
		select {
		case <-ctx.Done():
			t.Stop()
			return err
		case <-t.C:
		}
	}
}

// sqliteDSN adds the store's pragmas to a SQLite DSN: WAL, a busy timeout
// of 5s, synchronous=NORMAL (durable at each checkpoint; a power cut may
// lose the last transactions, never corrupt the file), and write
// transactions that take the lock when they begin.
func sqliteDSN(dsn string) string {
	sep := "?"
	if strings.Contains(dsn, "?") {
		sep = "&"
	}
	return dsn + sep + "_pragma=busy_timeout(5000)&_pragma=journal_mode(WAL)&_pragma=synchronous(NORMAL)&_txlock=immediate"
}

// DB returns the store's database handle, for queries of one's own.
func (s *Store) DB() *dbsql.DB { return s.db }

// Record queues e for writing. It never does I/O. When the queue is full
// it drops e (and counts it in Dropped) or, with the Block policy, waits
// for room. After Close it drops e. A zero e.Time is taken as Config.Clock's
// now. Strings
// are stored as valid UTF-8, key IDs of at most 255 bytes and other
// strings of at most 1024 (longer ones are cut), times at millisecond
// precision within [1970, 10000), latencies in whole microseconds.
func (s *Store) Record(e recorder.Event) {
	if e.Time.IsZero() {
		e.Time = s.cfg.Clock.Now()
	}
	s.w.Put(e)
}

// Dropped returns how many events were dropped: recorded while the queue
// was full (under the Drop policy) or after Close, or not written when
// Close gave up.
func (s *Store) Dropped() uint64 { return s.w.Dropped() }

// QueueLen returns how many events are held in memory: queued, or in the
// batch being written.
func (s *Store) QueueLen() int { return s.w.Len() }

// Err returns the error of the writer's last attempt to write a batch, or
// nil when it succeeded.
func (s *Store) Err() error { return s.w.Err() }

// Flush writes every event recorded before the call and returns when they
// are visible to queries. It retries while the database fails, until ctx
// ends; its error then wraps ctx's and the last error from the database.
func (s *Store) Flush(ctx context.Context) error {
	if s.closed.Load() {
		return recorder.ErrClosed
	}
	err := s.w.Flush(ctx)
	if errors.Is(err, recorder.ErrClosed) {
		return err
	}
	if err != nil {
		return fmt.Errorf("apipool: sql: flush: %w", err)
	}
	return nil
}

// Close stops accepting events, writes what the store holds, and closes
// the database handle. It keeps retrying a failing database until ctx
// ends; then it returns a *CloseError counting the events not written. A
// Close without a deadline waits as long as the database keeps failing.
// Close after Close returns nil.
func (s *Store) Close(ctx context.Context) error {
	if s.closed.Swap(true) {
		s.w.Close(ctx)
		return nil
	}
	lost, err := s.w.Close(ctx)
	s.closeStmts()
	s.db.Close()
	if lost > 0 {
		return &CloseError{Lost: lost, Err: err}
	}
	return nil
}

// closeStmts closes the prepared statements, and deregisters the LOAD
// DATA reader.
func (s *Store) closeStmts() {
	if s.insertStmt != nil {
		s.insertStmt.Close()
	}
	if s.plainStmt != nil {
		s.plainStmt.Close()
	}
	if s.loadName != "" {
		mysql.DeregisterReaderHandler(s.loadName)
	}
}

// rollupRow is one row of counts for the rollup, with the sums of the
// usage of its events for the counts rollup.
type rollupRow struct {
	minute        int64
	keyID         string
	model, client string
	statusID      int16
	bin           int16
	events        int64
	latSum        int64
	use           usageSums
}

// usageSums are the sums of the usage values known, and the number of
// events that said them.
type usageSums struct {
	in, out, cached        int64
	tokensN, unitsN, costN int64
	units, cost            float64
}

func (u *usageSums) add(r *row) {
	if r.inTok >= 0 {
		u.in += r.inTok
	}
	if r.outTok >= 0 {
		u.out += r.outTok
	}
	if r.cachedTok >= 0 {
		u.cached += r.cachedTok
	}
	if r.inTok >= 0 && r.outTok >= 0 {
		u.tokensN++
	}
	if r.units >= 0 {
		u.units += r.units
		u.unitsN++
	}
	if r.cost >= 0 {
		u.cost += r.cost
		u.costN++
	}
}

func (u *usageSums) merge(v *usageSums) {
	u.in += v.in
	u.out += v.out
	u.cached += v.cached
	u.tokensN += v.tokensN
	u.units += v.units
	u.unitsN += v.unitsN
	u.cost += v.cost
	u.costN += v.costN
}

func (a rollupRow) values(args []any) []any {
	return append(args, a.minute, a.keyID, a.statusID, a.bin, a.events, a.latSum, a.model, a.client)
}

// aggregate sums rows into the rollup's rows, sorted by the rollup's
// primary key, so that concurrent writers lock rows in the same order.
func aggregate(rows []row, dst []rollupRow) []rollupRow {
	dst = dst[:0]
	type k struct {
		minute        int64
		keyID         string
		model, client string
		statusID      int16
		bin           int16
	}
	idx := make(map[k]int, 64)
	for i := range rows {
		r := &rows[i]
		key := k{r.ms / 60000 * 60000, r.keyID, r.model, r.client, r.statusID, r.latencyBin}
		j, ok := idx[key]
		if !ok {
			j = len(dst)
			idx[key] = j
			dst = append(dst, rollupRow{minute: key.minute, keyID: key.keyID, model: key.model, client: key.client, statusID: key.statusID, bin: key.bin})
		}
		dst[j].events++
		dst[j].latSum += r.latencyUS
		dst[j].use.add(r)
	}
	slices.SortFunc(dst, func(a, b rollupRow) int {
		return cmp.Or(cmp.Compare(a.minute, b.minute), strings.Compare(a.keyID, b.keyID),
			strings.Compare(a.model, b.model), strings.Compare(a.client, b.client),
			cmp.Compare(a.statusID, b.statusID), cmp.Compare(a.bin, b.bin))
	})
	return dst
}

// countRow is one row of the counts rollup.
type countRow struct {
	minute        int64
	keyID         string
	model, client string
	statusID      int16
	events        int64
	use           usageSums
}

func (c countRow) values(args []any) []any {
	u := &c.use
	return append(args, c.minute, c.keyID, c.statusID, c.events, c.model, c.client,
		u.in, u.out, u.cached, u.tokensN, u.units, u.unitsN, u.cost, u.costN)
}

// countsOf sums the rollup's rows, sorted by its primary key, over their
// latency bins: the counts rollup's rows, sorted by its primary key.
func countsOf(agg []rollupRow, dst []countRow) []countRow {
	dst = dst[:0]
	for _, a := range agg {
		if n := len(dst); n > 0 && dst[n-1].minute == a.minute && dst[n-1].keyID == a.keyID && dst[n-1].model == a.model &&
			dst[n-1].client == a.client && dst[n-1].statusID == a.statusID {
			dst[n-1].events += a.events
			dst[n-1].use.merge(&a.use)
			continue
		}
		dst = append(dst, countRow{minute: a.minute, keyID: a.keyID, model: a.model, client: a.client, statusID: a.statusID, events: a.events, use: a.use})
	}
	return dst
}

// upsertChunks runs the upserts of rows, rollupChunk rows at a time, with
// exec; sql makes the statement for n rows.
func upsertChunks[T interface{ values([]any) []any }](s *Store, rows []T, sql func(n int) string, exec func(q string, args ...any) error) error {
	for len(rows) > 0 {
		k := min(rollupChunk, len(rows))
		args := s.args[:0]
		for _, r := range rows[:k] {
			args = r.values(args)
		}
		s.args = args
		err := exec(sql(k), args...)
		clear(args)
		if err != nil {
			return err
		}
		rows = rows[k:]
	}
	return nil
}

// rollupChunk is the number of rollup rows per upsert.
const rollupChunk = 200

// batchKeep is how long the ids of written batches are kept: a batch is
// retried within seconds, so an hour is plenty.
const batchKeep = time.Hour

// writeBatch writes one batch in one transaction: its events, their
// counts in the rollups, and its id. On a retry it first checks whether the
// batch's id is already there, from an attempt whose commit went through
// but whose answer was lost.
func (s *Store) writeBatch(ctx context.Context, evs []recorder.Event, attempt int) error {
	if attempt == 0 {
		s.batchID = s.ids.next()
	}
	var err error
	if s.d == postgresDialect {
		err = s.writePostgres(ctx, evs, attempt)
	} else {
		if attempt == 0 {
			s.rows = s.rows[:0]
			for i := range evs {
				s.rows = append(s.rows, sanitize(&evs[i], s.ids.next()))
			}
			s.agg = aggregate(s.rows, s.agg)
			s.counts = countsOf(s.agg, s.counts)
		}
		err = s.writeTx(ctx, attempt)
		if s.useLoad && (loadRefused(err) || errors.Is(err, errLoadChanged)) {
			// Insert from now on; this batch at once when the server
			// refused the LOAD (nothing was written), else after the
			// batch writer's backoff.
			s.useLoad = false
			s.log.Warn("apipool: sql: LOAD DATA LOCAL INFILE failed; inserting the events by INSERT from now on", "err", err)
			if loadRefused(err) {
				err = s.writeTx(ctx, attempt)
			}
		}
	}
	if err != nil {
		return err
	}
	s.written++
	s.maintain(ctx)
	return nil
}

var errAlreadyWritten = errors.New("batch already written")

// writeTx writes the batch through database/sql (SQLite, MySQL).
func (s *Store) writeTx(ctx context.Context, attempt int) (err error) {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			tx.Rollback()
			if errors.Is(err, errAlreadyWritten) {
				err = nil
			}
		}
	}()
	if attempt > 0 {
		if err := s.checkWritten(ctx, tx.QueryRowContext); err != nil {
			return err
		}
	}
	if s.useLoad {
		if err = s.loadEvents(ctx, tx); err != nil {
			return fmt.Errorf("loading events: %w", err)
		}
	} else if err = s.insertEvents(ctx, tx); err != nil {
		return err
	}
	exec := func(q string, args ...any) error { _, err := tx.ExecContext(ctx, q, args...); return err }
	if err = upsertChunks(s, s.agg, func(n int) string { return s.d.upsertRollupSQL(s.t, n) }, exec); err != nil {
		return fmt.Errorf("updating the rollup: %w", err)
	}
	if err = upsertChunks(s, s.counts, func(n int) string { return s.d.upsertCountsSQL(s.t, n) }, exec); err != nil {
		return fmt.Errorf("updating the counts rollup: %w", err)
	}
	if _, err = tx.ExecContext(ctx, s.d.rebind("INSERT INTO "+s.t.batches+" (batch_id, written_ms, events) VALUES (?, ?, ?)"),
		s.batchID, time.Now().UnixMilli(), len(s.rows)); err != nil {
		return fmt.Errorf("noting the batch: %w", err)
	}
	return tx.Commit()
}

// insertEvents writes s.rows into the event table in tx by multi-row
// INSERTs (SQLite; MySQL when the server does not allow LOAD DATA LOCAL
// INFILE).
func (s *Store) insertEvents(ctx context.Context, tx *dbsql.Tx) (err error) {
	n := s.d.insertRows
	var stmt, plainStmt *dbsql.Stmt
	rows := s.rows
	for len(rows) > 0 {
		k := min(n, len(rows))
		// Rows without usage leave its columns to their defaults: as
		// many values as before they existed.
		plain := true
		for i := range rows[:k] {
			if !rows[i].plain() {
				plain = false
				break
			}
		}
		args := s.args[:0]
		for i := range rows[:k] {
			if plain {
				args = rows[i].plainValues(args, s.d.emptyAsNull)
			} else {
				args = rows[i].values(args, s.d.emptyAsNull)
			}
		}
		s.args = args
		switch {
		case k < n:
			_, err = tx.ExecContext(ctx, s.d.insertEventsSQL(s.t, k, plain), args...)
		case plain:
			if plainStmt == nil {
				plainStmt = tx.StmtContext(ctx, s.plainStmt)
			}
			_, err = plainStmt.ExecContext(ctx, args...)
		default:
			if stmt == nil {
				stmt = tx.StmtContext(ctx, s.insertStmt)
			}
			_, err = stmt.ExecContext(ctx, args...)
		}
		clear(args)
		if err != nil {
			return fmt.Errorf("inserting events: %w", err)
		}
		rows = rows[k:]
	}
	return nil
}

// checkWritten returns errAlreadyWritten when the batch's id is in the
// batches table.
func (s *Store) checkWritten(ctx context.Context, queryRow func(context.Context, string, ...any) *dbsql.Row) error {
	var n int
	if err := queryRow(ctx, s.d.rebind("SELECT COUNT(*) FROM "+s.t.batches+" WHERE batch_id = ?"), s.batchID).Scan(&n); err != nil {
		return err
	}
	if n > 0 {
		s.log.Info("apipool: sql: a batch whose commit seemed to fail was written", "events", len(s.rows))
		return errAlreadyWritten
	}
	return nil
}

// writePostgres writes the batch through pgx: the events by COPY, in its
// binary format.
func (s *Store) writePostgres(ctx context.Context, evs []recorder.Event, attempt int) error {
	conn, err := s.db.Conn(ctx)
	if err != nil {
		return err
	}
	defer conn.Close()
	return conn.Raw(func(dc any) error {
		pc := dc.(*stdlib.Conn).Conn()
		tx, err := pc.Begin(ctx)
		if err != nil {
			return err
		}
		defer tx.Rollback(context.WithoutCancel(ctx))
		if attempt > 0 {
			var n int
			if err := tx.QueryRow(ctx, "SELECT COUNT(*) FROM "+s.t.batches+" WHERE batch_id = $1", s.batchID).Scan(&n); err != nil {
				return err
			}
			if n > 0 {
				s.log.Info("apipool: sql: a batch whose commit seemed to fail was written", "events", len(evs))
				return nil
			}
		}
		// The events are sanitized and encoded as COPY reads them, on
		// pgconn's goroutine, so that the server starts at once.
		src := &copySource{evs: evs, ids: s.ids.reserve(len(evs)), rows: s.rows[:0], buf: s.copyBuf[:0], agg: s.agg, counts: s.counts}
		if _, err := pc.PgConn().CopyFrom(ctx, src, s.copySQL); err != nil {
			// pgconn may return before its goroutine stops reading src
			// (when the connection broke): stop src before the batch's
			// events go back to the batch writer, and leave src's
			// buffers to it.
			src.abandon()
			s.rows, s.copyBuf, s.agg, s.counts = nil, nil, nil, nil
			return fmt.Errorf("copying events: %w", err)
		}
		if !src.ended {
			return errors.New("copying events: COPY ended before its data")
		}
		s.rows, s.copyBuf, s.agg, s.counts = src.rows, src.buf, src.agg, src.counts
		// The rollups' upserts and the batch's id, in one round trip.
		var b pgx.Batch
		var what []string
		queue := func(name, q string, args ...any) {
			b.Queue(q, args...)
			what = append(what, name)
		}
		for rows := s.agg; len(rows) > 0; rows = rows[min(rollupChunk, len(rows)):] {
			var args []any
			for _, r := range rows[:min(rollupChunk, len(rows))] {
				args = r.values(args)
			}
			queue("updating the rollup", s.d.upsertRollupSQL(s.t, min(rollupChunk, len(rows))), args...)
		}
		for rows := s.counts; len(rows) > 0; rows = rows[min(rollupChunk, len(rows)):] {
			var args []any
			for _, r := range rows[:min(rollupChunk, len(rows))] {
				args = r.values(args)
			}
			queue("updating the counts rollup", s.d.upsertCountsSQL(s.t, min(rollupChunk, len(rows))), args...)
		}
		queue("noting the batch", "INSERT INTO "+s.t.batches+" (batch_id, written_ms, events) VALUES ($1, $2, $3)",
			s.batchID, time.Now().UnixMilli(), len(s.rows))
		br := tx.SendBatch(ctx, &b)
		for _, name := range what {
			if _, err := br.Exec(); err != nil {
				br.Close()
				return fmt.Errorf("%s: %w", name, err)
			}
		}
		if err := br.Close(); err != nil {
			return err
		}
		return tx.Commit(ctx)
	})
}

// pruneEvery is how often, at most, the writer deletes old events and old
// batch ids; pruneChunk how many rows it deletes at a time.
const (
	pruneEvery = 10 * time.Second
	pruneChunk = 5000
)

// maintain runs on the writer goroutine after a batch is written, and at
// the FlushInterval ticks that find nothing to write: at most every
// pruneEvery, it deletes batch ids older than batchKeep and, with
// Config.Retention, events older than the retention, a chunk at a time.
func (s *Store) maintain(ctx context.Context) {
	now := time.Now()
	if now.Sub(s.lastPrune) < pruneEvery {
		return
	}
	s.lastPrune = now
	if _, err := s.db.ExecContext(ctx, s.d.rebind("DELETE FROM "+s.t.batches+" WHERE written_ms < ?"), now.Add(-batchKeep).UnixMilli()); err != nil {
		s.log.Warn("apipool: sql: pruning batch ids", "err", err)
	}
	if s.cfg.Retention <= 0 {
		return
	}
	n, err := s.deleteChunk(ctx, s.cfg.Clock.Now().Add(-s.cfg.Retention), pruneChunk)
	if err != nil {
		s.log.Warn("apipool: sql: pruning old events", "err", err)
		return
	}
	if n == pruneChunk {
		s.lastPrune = time.Time{} // more to do after the next batch
	}
}

// deleteChunk deletes up to n raw events older than before.
func (s *Store) deleteChunk(ctx context.Context, before time.Time, n int) (int64, error) {
	cut := clampMS(before)
	var q string
	if s.d == mysqlDialect {
		q = "DELETE FROM " + s.t.events + " WHERE event_time_ms < ? ORDER BY event_time_ms LIMIT ?"
	} else {
		q = "DELETE FROM " + s.t.events + " WHERE id IN (SELECT id FROM " + s.t.events + " WHERE event_time_ms < ? ORDER BY event_time_ms LIMIT ?)"
	}
	res, err := s.db.ExecContext(ctx, s.d.rebind(q), cut, n)
	if err != nil {
		return 0, err
	}
	return res.RowsAffected()
}

// DeleteOlderThan deletes the raw events older than before, a few
// thousand rows per statement so that the database is never locked for
// long, and returns how many it deleted. The per-minute rollups are kept:
// UsageByKey, UsageCount, LatencyByKey and Series still answer for the
// whole minutes of a window, but no longer count the deleted events that
// lie in a window's partial minutes at its ends. It stops at ctx's end.
func (s *Store) DeleteOlderThan(ctx context.Context, before time.Time) (int64, error) {
	if s.closed.Load() {
		return 0, recorder.ErrClosed
	}
	var total int64
	for {
		n, err := s.deleteChunk(ctx, before, pruneChunk)
		total += n
		if err != nil {
			return total, fmt.Errorf("apipool: sql: deleting old events: %w", err)
		}
		if n < pruneChunk {
			return total, nil
		}
	}
}
