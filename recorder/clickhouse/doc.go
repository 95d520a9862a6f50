// Package clickhouse is a recorder.Recorder and recorder.Stats (and
// recorder.MultiStats: several status filters or time buckets in one
// query) that keeps apipool's usage events in ClickHouse, for analysis in
// SQL.
//
//	store, err := clickhouse.New(ctx, clickhouse.Config{Addrs: []string{"clickhouse:9000"}})
//	if err != nil { ... }
//	defer store.Close(ctx) // give ctx a deadline
//
// Record is cheap and never does I/O: events go to a bounded queue that a
// background goroutine sends in batches of Config.BatchSize rows, or every
// Config.FlushInterval. A batch that fails is retried, with the same
// event ids, after a check that the server did not write it after all;
// while the server is down or slow, events wait in the queue and, with
// Config.SpillDir, in a file (see Store, and the package README for what
// each configuration can still lose or duplicate).
//
// # Schema
//
// New creates the tables when they are missing, choosing the column types
// by the server's version (SELECT version()):
//
//   - servers from 21.1 on: event_time is DateTime64(3, 'UTC'); columns
//     have compression codecs; Config.TTL and Config.RollupTTL apply; from
//     21.8 on, the table drops a batch it already holds
//     (non_replicated_deduplication_window), and the store resends a
//     batch whose acknowledgement was lost as the identical block;
//   - older servers, such as Debian's 18.16: event_time is DateTime('UTC')
//     and event_ms holds the milliseconds; strings are plain String
//     (clickhouse-go builds LowCardinality columns slowly, and 18.16 has
//     them as an experiment); no codecs, no TTL.
//
// Beside the event table, an AggregatingMergeTree table (Table+"_1m") holds
// per-minute counts, latency samples, byte sums and usage sums per key,
// status, model and client, filled by a materialized view (Table+"_1m_mv");
// stats queries over long windows read it. An existing table is used as it
// is, whichever layout it has, provided it has the columns the store
// writes: an event table made before the usage columns (model, client,
// tokens, units, cost) gets them (ALTER TABLE, old rows reading as not
// known), and a rollup made before them is kept, the event table
// answering the queries by model or client and TotalsBy (see the README).
//
// # Cluster
//
// With Config.Cluster, New creates the tables ON CLUSTER as replicated
// tables (ReplicatedMergeTree Table+"_local", ReplicatedAggregatingMergeTree
// Table+"_1m_local", the view on each server) behind Distributed tables
// named Table and Table+"_1m", which the stats queries read. Inserts go to
// the local replicated table of the first of Config.Addrs that answers, or
// through the Distributed table (Config.InsertDistributed). Replicated
// tables drop a block they already hold, on every server version, so a
// batch resent after a lost acknowledgement is written once there.
//
// The package README (recorder/clickhouse/README.md) shows the DDL and
// ready-made queries: usage per key per hour, rate-limit share per key,
// latency percentiles per key, keys nearing their daily quota.
//
// Only the native protocol is used: clickhouse-go's HTTP transport does not
// work with 18.16.
package clickhouse
