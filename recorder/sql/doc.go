// Package sql is a recorder.Recorder and recorder.Stats that keeps
// apipool's usage events in a relational database through database/sql:
// SQLite (embedded, pure Go, no cgo), PostgreSQL, or MySQL/MariaDB. One
// schema and one query layer serve all three.
//
//	store, err := sql.Open(ctx, "sqlite", "usage.db")
//	if err != nil { ... }
//	defer store.Close(ctx) // give ctx a deadline
//
// The drivers are modernc.org/sqlite ("sqlite": a file, in WAL mode, with
// one writer), github.com/jackc/pgx/v5 ("postgres": events are inserted by
// COPY) and github.com/go-sql-driver/mysql ("mysql": events are inserted by
// LOAD DATA LOCAL INFILE, streamed from memory through the driver's
// RegisterReaderHandler, never from a file, when the server allows it
// (local_infile, on by default in MariaDB, off in MySQL 8); else, or once
// the server refuses it, by multi-row INSERTs. On MariaDB 10.11 a LOAD
// costs the server about four fifths of the CPU of the INSERTs and the
// writer a third, and the store writes the benchmark's events with usage
// 1.18 times as fast as before it had the usage columns (bench/,
// BenchmarkSQLRecord; bench/README.md). Each LOAD's rows are checked
// against the number sent and the server's warnings; a batch the server
// took otherwise is rolled back and written again by INSERT. Stores that
// write one table take turns for the length of each LOAD (InnoDB's table
// AUTO-INC lock, with MariaDB's default innodb_autoinc_lock_mode=1).
// New takes a Config for the rest: table prefix, batching, queue,
// retention, logger.
//
// Record is cheap and never does I/O: events go to a bounded queue that a
// background goroutine writes in batches of Config.BatchSize events, or
// every Config.FlushInterval, one transaction per batch. A batch that
// fails is retried as it is; a batch whose commit went through although
// its answer was lost is not written twice (the batch's id is stored in
// the same transaction and checked before a retry). Events dropped because
// the queue was full, or left unwritten by Close, are counted (Dropped,
// CloseError).
//
// # Schema
//
// New creates the tables when they are missing and upgrades older ones
// (see SchemaVersion); SchemaSQL returns the statements. With the default
// prefix "apipool_":
//
//   - apipool_events: one row per event, with the columns of the ClickHouse
//     store (times as event_time_ms, Unix milliseconds), and latency_bin,
//     the event's latency histogram bin; indexed by time (with key,
//     status and latency bin). Its usage columns: model and client (”
//     when not set, at most 255 bytes), input_tokens, output_tokens and
//     cached_tokens, units and cost, each -1 when not known (rows written
//     before schema version 5 read so), on PostgreSQL NULL in the rows
//     written from schema version 6 on (-1 in older ones): a condition
//     "cost >= 0" picks the known values in every case;
//   - apipool_events_1m: per minute (minute_ms), key, model, client,
//     status and latency bin, the number of events and the sum of their
//     latencies, kept by the writer in the batch's transaction;
//   - apipool_counts_1m: per minute, key, model, client and status, the
//     number of events (apipool_events_1m without the latency bins, about
//     1/70 of its rows for the counting queries), and the sums of the
//     tokens, units and cost known with the number of events that said
//     them (tokens_known: input and output tokens both; units_known,
//     cost_known), kept in the same transaction;
//   - apipool_batches: the ids of batches written in the last hour;
//   - apipool_schema: the schema version.
//
// Stats queries read a window's whole minutes from a rollup
// (apipool_counts_1m for UsageByKey, UsageCount, Series and TotalsBy,
// apipool_events_1m for LatencyByKey) and its partial minutes from
// apipool_events; a query's Model and Client filter both. With Config.Retention or DeleteOlderThan, old raw events
// are deleted and the rollups kept.
//
// The package name is sql, as database/sql's: import it under another
// name (sqlrecorder, say) where both are used.
package sql
