package clickhouse

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"

	"github.com/apipool-ng/apipool/recorder"
)

// Store records usage events in a ClickHouse table and answers the stats
// queries of recorder.Stats from it. It is safe for concurrent use.
//
// Record copies the event into a bounded in-memory queue and returns; a
// background goroutine sends the queue in batches (see Config.BatchSize
// and Config.FlushInterval). A batch that fails is sent again, the same
// rows with the same event ids, until it succeeds or the store closes;
// meanwhile events keep queueing and, with Config.SpillDir, overflow to a
// file. Close sends what it can and reports what it could not (see
// CloseError).
//
// A batch whose insert failed after its rows left (a timeout, a broken
// connection) may have been written: before sending it again, the store
// looks for its rows in the table (a plain MergeTree, such as 18.16's) or
// sends the identical block, which the table drops if it has it (a
// replicated table, or a MergeTree with non_replicated_deduplication_window,
// which the store sets on 21.8 and later). The package README lists the
// cases that can still lose or duplicate events, per configuration.
type Store struct {
	cfg  Config
	opts *clickhouse.Options // conn's, for connections to one server (cluster.go)
	conn driver.Conn
	log  *slog.Logger
	q    *queue
	w    *writer

	// ctx is canceled when Close gives up; batches and setup use it.
	ctx    context.Context
	cancel context.CancelFunc

	setupMu sync.Mutex
	state   atomic.Pointer[tableState] // nil until the schema is ready

	errMu   sync.Mutex
	lastErr error

	spilledN atomic.Int64 // rows in the spill file
	// orphans counts the parts found that a server kept though ZooKeeper
	// lacks them (see orphanParts).
	orphans atomic.Uint64

	closed    atomic.Bool
	closeOnce sync.Once
}

// tableState is what the store learned from the server about its tables.
type tableState struct {
	version string
	layout  layout
	rollup  bool // the rollup table and its view exist and fit
	// rollupUsage says the rollup has model, client and the usage sums
	// (a rollup made before them has not: queries by model or client and
	// TotalsBy then read the event table).
	rollupUsage bool
	table       string
	rollupTbl   string
	insertSQL   string
	dedup       dedupInfo
	// local names (unquoted, in Config.Database) the table that the
	// inserts' parts go to on the server: Table, or in cluster mode its
	// local replicated table. See orphanParts.
	local string
	// insertSettings go with every insert (cluster mode).
	insertSettings map[string]any
}

var (
	_ recorder.Recorder    = (*Store)(nil)
	_ recorder.Stats       = (*Store)(nil)
	_ recorder.DropCounter = (*Store)(nil)
	_ recorder.QueueLener  = (*Store)(nil)
)

// ErrUnavailable is wrapped by errors of a server that does not answer
// (refused or timed-out connections, broken connections).
var ErrUnavailable = errors.New("apipool: clickhouse: server unavailable")

// ErrAuth is wrapped by errors of a server that rejects the credentials.
var ErrAuth = errors.New("apipool: clickhouse: authentication failed")

// CloseError is Close's error when some events could not be written to
// ClickHouse before Close's context ended. It matches the context's error
// (errors.Is(err, context.DeadlineExceeded)).
type CloseError struct {
	// Spilled events are kept in the spill file, for a store opened later
	// on the same Config.SpillDir and table to replay.
	Spilled int64
	// Lost events are gone (no spill file, or it was full). They are also
	// counted in Dropped.
	Lost int64
	// Err is the context's error, with the last error from the server.
	Err error
}

func (e *CloseError) Error() string {
	return fmt.Sprintf("apipool: clickhouse: closed with %d event(s) not written (%d kept in the spill file, %d lost): %v",
		e.Spilled+e.Lost, e.Spilled, e.Lost, e.Err)
}

func (e *CloseError) Unwrap() error { return e.Err }

// New connects to ClickHouse, creates the database, the event table, the
// rollup and its view if they are missing (see the package README for the
// schema), and starts the background writer. The schema depends on the
// server's version: see the package documentation.
//
// New fails, with an error naming the table and columns, when an existing
// table lacks columns the store writes or has them with other types; with
// an error wrapping ErrAuth when the server rejects the credentials; and,
// unless Config.AllowUnavailable is set, with an error wrapping
// ErrUnavailable when no server answers within ctx and Config.DialTimeout.
func New(ctx context.Context, cfg Config) (*Store, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	opts := &clickhouse.Options{
		Protocol:         clickhouse.Native,
		Addr:             cfg.Addrs,
		Auth:             clickhouse.Auth{Username: cfg.Username, Password: cfg.Password},
		TLS:              cfg.TLS,
		DialTimeout:      cfg.DialTimeout,
		ReadTimeout:      cfg.ReadTimeout,
		MaxOpenConns:     8,
		MaxIdleConns:     4,
		ConnOpenStrategy: clickhouse.ConnOpenInOrder,
		Compression:      &clickhouse.Compression{Method: clickhouse.CompressionLZ4},
	}
	conn, err := clickhouse.Open(opts)
	if err != nil {
		return nil, fmt.Errorf("apipool: clickhouse: %w", err)
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	log = log.With("table", cfg.Database+"."+cfg.Table)
	s := &Store{cfg: cfg, opts: opts, conn: conn, log: log}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	s.q = newQueue(cfg.QueueSize, cfg.BatchSize, cfg.OnFull == Block)

	var sf *spillFile
	if cfg.SpillDir != "" {
		var cut int64
		sf, cut, err = openSpill(cfg.SpillDir, cfg.Database, cfg.Table, cfg.SpillMaxBytes)
		if err != nil {
			conn.Close()
			return nil, err
		}
		if cut > 0 {
			log.Warn("apipool: clickhouse: cut a truncated or corrupt tail off the spill file", "file", sf.path, "bytes", cut)
		}
		if sf.count > 0 {
			log.Info("apipool: clickhouse: replaying events an earlier store spilled", "file", sf.path, "events", sf.count)
		}
		s.spilledN.Store(sf.count)
	}

	if _, err := s.setup(ctx); err != nil {
		if !cfg.AllowUnavailable || !errors.Is(err, ErrUnavailable) || ctx.Err() != nil {
			if sf != nil {
				sf.close()
			}
			conn.Close()
			s.cancel()
			return nil, err
		}
		s.setErr(err)
		log.Warn("apipool: clickhouse: server unavailable; queueing events until it answers", "err", err)
	}
	s.w = newWriter(s, sf)
	go s.w.run()
	return s, nil
}

// setup learns the server's version and the tables' layout, creating
// what is missing. It runs once successfully; later calls return the
// state.
func (s *Store) setup(ctx context.Context) (*tableState, error) {
	if st := s.state.Load(); st != nil {
		return st, nil
	}
	s.setupMu.Lock()
	defer s.setupMu.Unlock()
	if st := s.state.Load(); st != nil {
		return st, nil
	}
	st, err := s.setupLocked(ctx)
	if err != nil {
		return nil, classify(err)
	}
	s.state.Store(st)
	return st, nil
}

func (s *Store) setupLocked(ctx context.Context) (*tableState, error) {
	var v string
	if err := s.conn.QueryRow(ctx, "SELECT version()").Scan(&v); err != nil {
		return nil, err
	}
	ver, err := parseVersion(v)
	if err != nil {
		s.log.Warn("apipool: clickhouse: unknown server version; using the legacy schema", "version", v)
	}
	sc := s.cfg.schemaConfig()
	feat := featuresFor(ver)
	if s.cfg.Cluster != "" {
		return s.setupCluster(ctx, v, feat)
	}
	plan := planSchema(feat, sc)
	for _, w := range plan.Warnings {
		s.log.Warn("apipool: clickhouse: " + w)
	}
	dctx := ctx
	if plan.Settings != nil {
		dctx = clickhouse.Context(ctx, clickhouse.WithSettings(plan.Settings))
	}
	st := &tableState{version: v, table: sc.table(), rollupTbl: sc.rollup(), local: s.cfg.Table}
	name := s.cfg.Database + "." + s.cfg.Table

	var n uint64
	if err := s.conn.QueryRow(ctx, "SELECT count() FROM system.databases WHERE name = "+quoteString(s.cfg.Database)).Scan(&n); err != nil {
		return nil, err
	}
	if n == 0 {
		if err := s.conn.Exec(ctx, "CREATE DATABASE IF NOT EXISTS "+quoteIdent(s.cfg.Database)); err != nil {
			return nil, fmt.Errorf("creating database %s: %w", s.cfg.Database, err)
		}
	}

	cols, err := s.columns(ctx, s.cfg.Table)
	if err != nil {
		return nil, err
	}
	existed := len(cols) > 0
	if !existed {
		if err := s.conn.Exec(dctx, plan.Table); err != nil {
			return nil, fmt.Errorf("creating table %s: %w", name, err)
		}
		s.log.Info("apipool: clickhouse: created the event table", "server", v)
		if cols, err = s.columns(ctx, s.cfg.Table); err != nil {
			return nil, err
		}
	}
	if missing := missingUsage(cols); existed && len(missing) > 0 {
		if cols, err = s.addUsageColumns(ctx, dctx, feat, st.table, s.cfg.Table, "", missing); err != nil {
			return nil, err
		}
	}
	if st.layout, err = checkColumns(name, cols); err != nil {
		return nil, err
	}
	st.insertSQL = st.layout.insertSQL(st.table)
	if st.dedup, err = s.learnDedup(ctx); err != nil {
		return nil, err
	}

	if !s.cfg.NoRollup {
		rcols, err := s.columns(ctx, s.cfg.Table+rollupSuffix)
		if err != nil {
			return nil, err
		}
		if !existed && len(rcols) > 0 {
			s.log.Warn("apipool: clickhouse: created the event table, but its rollup exists: " +
				"long windows count the events it holds from before; drop the rollup too to start afresh")
		}
		// The rollup and the view follow the key_id types the tables have.
		sc.KeyType, sc.RollupKeyType = cols[colKeyID], rcols[colKeyID]
		sc.ModelType, sc.ClientType = cols[colModel], cols[colClient]
		sc.RollupModelType, sc.RollupClientType = rcols[colModel], rcols[colClient]
		sc.OldRollup = len(rcols) > 0 && !rollupHasUsage(rcols)
		plan = planSchema(feat, sc)
		if len(rcols) == 0 {
			if err := s.conn.Exec(dctx, plan.Rollup); err != nil {
				return nil, fmt.Errorf("creating table %s%s: %w", name, rollupSuffix, err)
			}
			if rcols, err = s.columns(ctx, s.cfg.Table+rollupSuffix); err != nil {
				return nil, err
			}
		}
		if err := checkRollupColumns(name+rollupSuffix, rcols); err != nil {
			return nil, err
		}
		if err := s.conn.QueryRow(ctx, "SELECT count() FROM system.tables WHERE database = "+quoteString(s.cfg.Database)+
			" AND name = "+quoteString(s.cfg.Table+viewSuffix)).Scan(&n); err != nil {
			return nil, err
		}
		if n == 0 {
			sc.RollupKeyType = rcols[colKeyID]
			sc.RollupModelType, sc.RollupClientType = rcols[colModel], rcols[colClient]
			sc.OldRollup = !rollupHasUsage(rcols)
			plan = planSchema(feat, sc)
			if err := s.conn.Exec(dctx, plan.View); err != nil {
				return nil, fmt.Errorf("creating view %s%s: %w", name, viewSuffix, err)
			}
			if existed {
				s.log.Warn("apipool: clickhouse: created the rollup view for an existing event table: " +
					"the rollup lacks the events written before, so long windows undercount them")
			}
		}
		st.rollup = true
		st.rollupUsage = rollupHasUsage(rcols)
		if !st.rollupUsage {
			s.log.Info("apipool: clickhouse: the rollup was made before the usage columns: " +
				"queries by model or client, and usage totals, read the event table")
		}
	}
	return st, nil
}

// addUsageColumns adds the usage columns missing from an event table made
// before they existed (its rows then read as of no model nor client,
// their usage not known), and returns its columns. table is the quoted
// name, onCluster the cluster clause; name names it in system.columns.
// Another store may add them at the same time: the columns being there
// afterwards is what counts.
func (s *Store) addUsageColumns(ctx, dctx context.Context, f features, table, name, onCluster string, missing []columnSpec) (map[string]string, error) {
	ddlErr := s.conn.Exec(dctx, addUsageColumnsDDL(f, table, onCluster, missing))
	cols, err := s.columns(ctx, name)
	if err != nil {
		return nil, err
	}
	if still := missingUsage(cols); len(still) > 0 {
		if ddlErr == nil {
			ddlErr = fmt.Errorf("%d column(s) still missing", len(still))
		}
		return nil, fmt.Errorf("adding the usage columns to %s: %w", table, ddlErr)
	}
	if ddlErr == nil {
		s.log.Info("apipool: clickhouse: added the usage columns to an existing table", "table", table, "columns", len(missing))
	}
	return cols, nil
}

// columns returns the columns of a table in the store's database, name →
// type; none when the table does not exist.
func (s *Store) columns(ctx context.Context, table string) (map[string]string, error) {
	rows, err := s.conn.Query(ctx, "SELECT name, type FROM system.columns WHERE database = "+
		quoteString(s.cfg.Database)+" AND table = "+quoteString(table))
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := map[string]string{}
	for rows.Next() {
		var name, typ string
		if err := rows.Scan(&name, &typ); err != nil {
			return nil, err
		}
		out[name] = typ
	}
	return out, rows.Err()
}

// Server error codes that mean the credentials are wrong.
var authCodes = map[int32]bool{
	192: true, // UNKNOWN_USER
	193: true, // WRONG_PASSWORD
	194: true, // REQUIRED_PASSWORD
	195: true, // IP_ADDRESS_NOT_ALLOWED
	516: true, // AUTHENTICATION_FAILED
}

// classify wraps err with ErrAuth or ErrUnavailable when it is one of
// those; errors from the server and schema errors stay as they are.
func classify(err error) error {
	if err == nil || errors.Is(err, ErrAuth) || errors.Is(err, ErrUnavailable) {
		return err
	}
	var ex *clickhouse.Exception
	var se *SchemaError
	switch {
	case errors.As(err, &ex):
		if authCodes[ex.Code] {
			return fmt.Errorf("%w: %w", ErrAuth, err)
		}
		return fmt.Errorf("apipool: clickhouse: %w", err)
	case errors.As(err, &se), errors.Is(err, context.Canceled):
		return err
	}
	return fmt.Errorf("%w: %w", ErrUnavailable, err)
}

// retryable reports whether an error may go away by itself: the server is
// down or busy. Wrong credentials and incompatible tables need a person,
// but the writer retries those too, slowly, in case one comes.
func retryable(err error) bool {
	var ex *clickhouse.Exception
	return errors.Is(err, ErrUnavailable) || errors.Is(err, errInsertRunning) ||
		errors.As(err, &ex) && ex.Code == codeQueryRunning
}

// codeQueryRunning is the server's error when a query with the same
// query_id runs (QUERY_WITH_SAME_ID_IS_ALREADY_RUNNING): an earlier
// attempt at the same batch.
const codeQueryRunning = 216

func (s *Store) setErr(err error) {
	s.errMu.Lock()
	s.lastErr = err
	s.errMu.Unlock()
}

// Err returns the last error the store met while setting up the schema or
// sending a batch, or nil when the last attempt succeeded.
func (s *Store) Err() error {
	s.errMu.Lock()
	defer s.errMu.Unlock()
	return s.lastErr
}

// Record queues e for writing. It never does I/O. When the queue is full
// it drops e (and counts it in Dropped) or, with the Block policy, waits
// for room. After Close it drops e. A zero e.Time is taken as Config.Clock's
// now.
// Strings are stored as valid UTF-8 of at most 1024 bytes, times at
// millisecond precision and latencies in whole microseconds.
func (s *Store) Record(e recorder.Event) {
	if e.Time.IsZero() {
		e.Time = s.cfg.Clock.Now()
	}
	s.q.put(&e)
}

// Dropped returns how many events were dropped, for any reason: the sum
// of Drops' counts.
func (s *Store) Dropped() uint64 { return s.q.dropped.Load() }

// Drops counts dropped events by reason.
type Drops struct {
	// QueueFull events were recorded while the queue was full, under the
	// Drop policy: the server was down or slower than the traffic for
	// longer than the queue holds, without a spill file, or faster than
	// the spill file took them.
	QueueFull uint64
	// SpillFull events were recorded while the queue was full and the
	// spill file refused rows (Config.SpillMaxBytes reached, or a write
	// error), under the Drop policy.
	SpillFull uint64
	// Closed events were recorded after Close.
	Closed uint64
	// CloseLost events were held when Close's context ended, and not kept
	// in a spill file (none, full, or no time left).
	CloseLost uint64
	// Corrupt events were lost to a spill file that could not be read.
	Corrupt uint64
	// Unbuildable events were in a batch the client library refused to
	// build three times (the table changed under the store).
	Unbuildable uint64
}

// Drops returns the dropped events by reason.
func (s *Store) Drops() Drops {
	d := &s.q.drops
	return Drops{
		QueueFull: d[dropQueueFull].Load(), SpillFull: d[dropSpillFull].Load(), Closed: d[dropClosed].Load(),
		CloseLost: d[dropCloseLost].Load(), Corrupt: d[dropCorrupt].Load(), Unbuildable: d[dropUnbuildable].Load(),
	}
}

// QueueLen returns how many events are held in memory: queued, or in the
// batch being sent.
func (s *Store) QueueLen() int { return s.q.total() }

// Spilled returns how many events wait in the spill file.
func (s *Store) Spilled() int64 { return s.spilledN.Load() }

// Flush writes every event recorded before the call, and the spill file's
// events, to ClickHouse, and returns when they are visible to queries. It
// retries while the server fails, until ctx ends; its error then wraps
// ctx's and the last error from the server.
func (s *Store) Flush(ctx context.Context) error {
	if s.closed.Load() {
		return recorder.ErrClosed
	}
	req := &flushReq{target: s.q.enqueued(), done: make(chan error, 1)}
	select {
	case s.w.flushCh <- req:
	case <-s.w.done:
		return recorder.ErrClosed
	case <-ctx.Done():
		return s.ctxErr(ctx)
	}
	select {
	case err := <-req.done:
		return err
	case <-ctx.Done():
		return s.ctxErr(ctx)
	}
}

func (s *Store) ctxErr(ctx context.Context) error {
	if last := s.Err(); last != nil {
		return fmt.Errorf("apipool: clickhouse: %w; last error: %w", ctx.Err(), last)
	}
	return ctx.Err()
}

// Close stops accepting events, writes what the store holds, and releases
// the connections. It keeps retrying a failing server until ctx ends;
// from half a second before ctx's deadline (or half its time, when
// shorter) it moves queued events to the spill file if there is one, and
// while the server fails it moves them at once, with the batch that waits
// to be sent again (not one that may have been written).
// When ctx ends it keeps what is left in the spill file for up to 100 ms
// more, drops the rest (counted in Drops().CloseLost), and returns a
// *CloseError counting the events not written, which matches ctx's error.
// An insert still in flight then is abandoned, its rows kept or dropped
// with the rest (if the server commits it after all, a store replaying
// them writes them twice). A Close without a deadline waits as long as the
// server stays down. Close after Close returns nil.
func (s *Store) Close(ctx context.Context) error {
	first := false
	s.closeOnce.Do(func() {
		first = true
		s.closed.Store(true)
		s.q.close()
		s.w.closeCh <- ctx // buffered
		// When ctx ends, cancel what the writer has in flight.
		go func() {
			select {
			case <-ctx.Done():
				s.cancel()
			case <-s.w.done:
			}
		}()
	})
	<-s.w.done
	if !first {
		return nil
	}
	s.cancel()
	s.conn.Close()
	return s.w.closeErr
}
