package clickhouse

import (
	"crypto/tls"
	"fmt"
	"log/slog"
	"time"

	"github.com/apipool-ng/apipool/clock"
	"github.com/apipool-ng/apipool/errdefs"
)

// Config configures a Store. Its zero value is usable: it connects to a
// server on 127.0.0.1:9000 as user "default" and writes to
// default.apipool_events. Each zero field takes the default its comment
// gives.
type Config struct {
	// Addrs are the servers' native protocol addresses ("host:port"); the
	// store uses the first that answers. Default: 127.0.0.1:9000. Only the
	// native protocol is used (ClickHouse's HTTP interface is not).
	Addrs []string
	// Database holds the tables. Default: "default". It is created if
	// missing. Database and Table must be plain identifiers
	// ([A-Za-z_][A-Za-z0-9_]*).
	Database string
	// Table is the event table. Default: "apipool_events". The per-minute
	// rollup is Table+"_1m", filled by the materialized view
	// Table+"_1m_mv".
	Table string
	// Username and Password authenticate. Default user: "default".
	Username, Password string
	// TLS, when not nil, connects with TLS (use the server's secure native
	// port, usually 9440).
	TLS *tls.Config
	// DialTimeout bounds connecting. Default: 5s.
	DialTimeout time.Duration
	// ReadTimeout bounds waiting for the server during a query or an
	// insert. Default: 30s. An insert that times out may still be
	// written by the server: the writer checks before it sends the rows
	// again (see the package README).
	ReadTimeout time.Duration

	// BatchSize is the number of events per INSERT: the writer flushes
	// when this many are queued, or FlushInterval after the last flush,
	// whichever comes first. Default: 20,000. The writer holds up to two
	// batches (the one being sent and the one built behind it), about 720
	// bytes an event each, and sending one allocates about 915 bytes an
	// event more: 47 MB with the default (see the package README).
	BatchSize int
	// FlushInterval: see BatchSize. Default: 1s.
	FlushInterval time.Duration
	// QueueSize bounds the events held in memory waiting for the writer,
	// besides the batch being sent and the one built behind it. Default:
	// 100,000, 1.3 seconds at 75,000 events/s (memory for the queue is
	// taken as it fills, in blocks of 48 KiB, about 265 bytes per event,
	// plus the bytes of strings the events alone refer to; as the queue
	// drains, it keeps 20 MiB of emptied blocks and gives the others back
	// to the garbage collector, and those it keeps beyond two batches'
	// go back too once unused for 10 to 20 seconds).
	QueueSize int
	// OnFull says what Record does when the queue is full. Default: Drop.
	OnFull FullPolicy

	// SpillDir, when set, is a directory where events that the server
	// cannot take in time are kept: whenever the queue passes half full
	// (the server down, hanging, or slower than the traffic), the writer
	// moves its oldest events to an append-only file there, down to a
	// quarter, even while an insert is in flight; it replays the file,
	// taking turns with live batches, once the server takes batches
	// again. A store opened on the same directory and table replays what
	// an earlier one left. One store at a time may use a spill file.
	SpillDir string
	// SpillMaxBytes bounds the spill file. Default: 1 GiB (about 7
	// million events of 150 bytes). When it is full, the queue fills and
	// OnFull applies: under Drop, the events dropped are counted in
	// Drops().SpillFull. The file shrinks to nothing once replayed whole.
	SpillMaxBytes int64

	// MinBackoff and MaxBackoff bound the jittered, doubling wait between
	// failed attempts to send a batch (or to create the schema).
	// Defaults: 100ms and 10s. While the server does not answer, the
	// writer also pings it every 250 ms and retries as soon as it
	// answers, whatever the backoff has reached.
	MinBackoff, MaxBackoff time.Duration

	// AllowUnavailable lets New return a working Store when no server
	// answers: events queue (and spill) meanwhile, the schema is created
	// once a server answers, and Err reports the last failure. Without it
	// New fails when it cannot reach a server. Either way, New fails on
	// errors that retrying would not cure when a server answers: wrong
	// credentials, an incompatible existing table.
	AllowUnavailable bool

	// TTL, when positive, makes the server delete events that old (from
	// their time). Servers before 21.1 have no TTL: there it is ignored,
	// with a warning. It applies when the table is created.
	TTL time.Duration
	// RollupTTL is the same for the per-minute rollup.
	RollupTTL time.Duration
	// NoRollup skips the per-minute rollup: stats then always read the
	// event table.
	NoRollup bool
	// RollupAfter is the shortest query window that reads the rollup for
	// its whole minutes (and the event table for the partial minutes at
	// its ends). Default: 1 hour. Negative: never read the rollup.
	RollupAfter time.Duration

	// Cluster, when set, is the name of a cluster in the servers'
	// remote_servers, and switches on cluster mode: the store creates its
	// tables ON CLUSTER, as replicated tables (Table+"_local" and
	// Table+"_1m_local") behind Distributed tables named Table and
	// Table+"_1m", which queries read. Inserts go to the local replicated
	// table of the server the store is connected to (the first of Addrs
	// that answers, so list the replicas of one shard), or through the
	// Distributed table with InsertDistributed. Replicated tables drop a
	// block they already hold, so a batch sent again is written once, on
	// every server version. Default: "" (a single server, plain
	// MergeTree tables). Must be a plain identifier.
	Cluster string
	// ReplicaPath is the ZooKeeper path under which the replicated
	// tables keep their state: each table's path is ReplicaPath followed
	// by "/database.table". The server substitutes its macros in it.
	// Default: "/clickhouse/tables/{shard}" (each server's config must
	// then define the macro shard).
	ReplicaPath string
	// ReplicaName is the replica's name in ZooKeeper. Default:
	// "{replica}" (each server's config must define the macro replica).
	ReplicaName string
	// InsertDistributed makes inserts go through the Distributed table,
	// synchronously (insert_distributed_sync): the server the store is
	// connected to forwards each row to a replica of its shard (sharded
	// by event id). Only with a Cluster. Default: insert into the local
	// replicated table of the server the store is connected to.
	InsertDistributed bool

	// Clock gives the time of events recorded without one (a zero
	// Event.Time). Default: clock.System. The writer's timing (FlushInterval,
	// backoffs, pings) follows the system clock whatever this is, and TTL
	// the server's.
	Clock clock.Clock

	// Logger receives the store's rare log lines: send failures and
	// recoveries, schema changes, spills. Default: none.
	Logger *slog.Logger
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

// The defaults of Config's zero fields.
const (
	DefaultAddr          = "127.0.0.1:9000"
	DefaultDatabase      = "default"
	DefaultTable         = "apipool_events"
	DefaultUsername      = "default"
	DefaultDialTimeout   = 5 * time.Second
	DefaultReadTimeout   = 30 * time.Second
	DefaultBatchSize     = 20_000
	DefaultFlushInterval = time.Second
	DefaultQueueSize     = 100_000
	DefaultSpillMaxBytes = 1 << 30
	DefaultMinBackoff    = 100 * time.Millisecond
	DefaultMaxBackoff    = 10 * time.Second
	DefaultRollupAfter   = time.Hour
)

// configError returns the *errdefs.ConfigError (apipool.ConfigError) of
// the Config field named field.
func configError(field, format string, args ...any) error {
	return &errdefs.ConfigError{Field: "clickhouse.Config." + field, Reason: fmt.Sprintf(format, args...)}
}

// withDefaults returns c with defaults for its zero fields, or a
// *errdefs.ConfigError naming the field at fault.
func (c Config) withDefaults() (Config, error) {
	if len(c.Addrs) == 0 {
		c.Addrs = []string{DefaultAddr}
	}
	if c.Database == "" {
		c.Database = DefaultDatabase
	}
	if c.Table == "" {
		c.Table = DefaultTable
	}
	if c.Username == "" {
		c.Username = DefaultUsername
	}
	if c.Cluster != "" {
		if c.ReplicaPath == "" {
			c.ReplicaPath = DefaultReplicaPath
		}
		if c.ReplicaName == "" {
			c.ReplicaName = DefaultReplicaName
		}
	}
	def := func(d *time.Duration, v time.Duration) {
		if *d == 0 {
			*d = v
		}
	}
	def(&c.DialTimeout, DefaultDialTimeout)
	def(&c.ReadTimeout, DefaultReadTimeout)
	def(&c.FlushInterval, DefaultFlushInterval)
	def(&c.MinBackoff, DefaultMinBackoff)
	def(&c.MaxBackoff, DefaultMaxBackoff)
	def(&c.RollupAfter, DefaultRollupAfter)
	if c.BatchSize == 0 {
		c.BatchSize = DefaultBatchSize
	}
	if c.QueueSize == 0 {
		c.QueueSize = DefaultQueueSize
	}
	if c.SpillMaxBytes == 0 {
		c.SpillMaxBytes = DefaultSpillMaxBytes
	}
	if c.Clock == nil {
		c.Clock = clock.System{}
	}
	bad := func(field, format string, args ...any) (Config, error) {
		return c, configError(field, format, args...)
	}
	switch {
	case !identRE.MatchString(c.Database):
		return bad("Database", "%q is not a plain identifier", c.Database)
	case !identRE.MatchString(c.Table) || !identRE.MatchString(c.Table+viewSuffix):
		return bad("Table", "%q is not a plain identifier (of at most %d bytes)", c.Table, 128-len(viewSuffix))
	case c.BatchSize < 0:
		return bad("BatchSize", "negative size %d", c.BatchSize)
	case c.QueueSize < 0:
		return bad("QueueSize", "negative size %d", c.QueueSize)
	case c.SpillMaxBytes < 0:
		return bad("SpillMaxBytes", "negative size %d", c.SpillMaxBytes)
	case c.OnFull != Drop && c.OnFull != Block:
		return bad("OnFull", "unknown policy %v", c.OnFull)
	}
	for _, d := range []struct {
		name string
		v    time.Duration
	}{
		{"DialTimeout", c.DialTimeout}, {"ReadTimeout", c.ReadTimeout}, {"FlushInterval", c.FlushInterval},
		{"MinBackoff", c.MinBackoff}, {"MaxBackoff", c.MaxBackoff}, {"TTL", c.TTL}, {"RollupTTL", c.RollupTTL},
	} {
		if d.v < 0 {
			return bad(d.name, "negative duration %v", d.v)
		}
	}
	if c.MinBackoff > c.MaxBackoff {
		return bad("MinBackoff", "%v exceeds MaxBackoff %v", c.MinBackoff, c.MaxBackoff)
	}
	if err := c.checkClusterConfig(); err != nil {
		return c, err
	}
	for i, a := range c.Addrs {
		if a == "" {
			return bad(fmt.Sprintf("Addrs[%d]", i), "empty address")
		}
	}
	if c.QueueSize < c.BatchSize {
		c.QueueSize = c.BatchSize
	}
	return c, nil
}

func (c Config) schemaConfig() schemaConfig {
	return schemaConfig{Database: c.Database, Table: c.Table, TTL: c.TTL, RollupTTL: c.RollupTTL, NoRollup: c.NoRollup,
		Cluster: c.Cluster, ReplicaPath: c.ReplicaPath, ReplicaName: c.ReplicaName}
}
