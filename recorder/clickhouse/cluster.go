package clickhouse

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/ClickHouse/clickhouse-go/v2"
)

// Cluster mode (Config.Cluster). The store creates, ON CLUSTER:
//
//   - Table+"_local": the events, a ReplicatedMergeTree on each replica;
//   - Table: a Distributed table over it, sharded by event id;
//   - Table+"_1m_local": the rollup, a ReplicatedAggregatingMergeTree;
//   - Table+"_1m_mv": on each replica, the materialized view from
//     Table_local into Table_1m_local (it sees the blocks inserted on its
//     own replica; replication copies the rollup's parts like the events');
//   - Table+"_1m": a Distributed table over the rollup.
//
// Queries read the Distributed tables, so the same SQL works on a single
// server and on a cluster. Inserts go to Table_local on the server the
// store is connected to (the first of Config.Addrs that answers), or,
// with Config.InsertDistributed, through Table, synchronously.

// localSuffix names a cluster's local replicated tables after the
// Distributed tables that users query.
const localSuffix = "_local"

// The defaults of the cluster settings.
const (
	DefaultReplicaPath = "/clickhouse/tables/{shard}"
	DefaultReplicaName = "{replica}"
)

// localName returns the name of the table that holds what name's table
// shows: name itself, or with a Cluster its local replicated table.
func (c schemaConfig) localName(name string) string {
	if c.Cluster == "" {
		return name
	}
	return name + localSuffix
}

// onCluster returns the ON CLUSTER clause of the DDL, or "".
func (c schemaConfig) onCluster() string {
	if c.Cluster == "" {
		return ""
	}
	return " ON CLUSTER " + quoteIdent(c.Cluster)
}

// engine returns the table engine for the table that holds name's rows:
// base, or its replicated variant with a Cluster. The replica's ZooKeeper
// path is ReplicaPath followed by "/database.table".
func (c schemaConfig) engine(base, name string) string {
	if c.Cluster == "" {
		return base + "()"
	}
	path := strings.TrimSuffix(c.ReplicaPath, "/") + "/" + c.Database + "." + c.localName(name)
	return fmt.Sprintf("Replicated%s(%s, %s)", base, quoteString(path), quoteString(c.ReplicaName))
}

// distSharding is the Distributed event table's sharding key: a
// function of the row alone, so that a batch sent again splits into the
// same blocks per shard, which the shards' replicas deduplicate.
const distSharding = "cityHash64(toString(event_id))"

// distDDL returns the DDL of the Distributed table name over its local
// table, or "" without a Cluster. Only a table inserted into (sharded)
// needs a sharding key.
func (c schemaConfig) distDDL(name string, sharded bool) string {
	if c.Cluster == "" {
		return ""
	}
	local := c.localName(name)
	key := ""
	if sharded {
		key = ", " + distSharding
	}
	return fmt.Sprintf("CREATE TABLE IF NOT EXISTS %s.%s%s AS %s.%s\nENGINE = Distributed(%s, %s, %s%s)",
		quoteIdent(c.Database), quoteIdent(name), c.onCluster(), quoteIdent(c.Database), quoteIdent(local),
		quoteString(c.Cluster), quoteString(c.Database), quoteString(local), key)
}

// checkClusterConfig checks the cluster settings of a config with
// defaults.
func (c Config) checkClusterConfig() error {
	if c.Cluster == "" {
		if c.InsertDistributed {
			return configError("InsertDistributed", "needs a Cluster")
		}
		return nil
	}
	switch {
	case !identRE.MatchString(c.Cluster):
		return configError("Cluster", "%q is not a plain identifier", c.Cluster)
	case !identRE.MatchString(c.Table + viewSuffix + localSuffix):
		return configError("Table", "%q is too long for cluster mode (at most %d bytes)", c.Table, 128-len(viewSuffix+localSuffix))
	case !strings.HasPrefix(c.ReplicaPath, "/"):
		return configError("ReplicaPath", "%q is not an absolute ZooKeeper path", c.ReplicaPath)
	case strings.ContainsAny(c.ReplicaPath, "'\\\x00"):
		return configError("ReplicaPath", "must not hold quotes, backslashes or NUL")
	case strings.ContainsAny(c.ReplicaName, "'\\\x00"):
		return configError("ReplicaName", "must not hold quotes, backslashes or NUL")
	}
	return nil
}

// ddlTimeoutCode is the server's TIMEOUT_EXCEEDED, which an ON CLUSTER
// statement returns when some replicas have not run it in time (they run
// it when they come back).
const ddlTimeoutCode = 159

// setupCluster learns or creates the cluster's tables (see above) through
// the server the store is connected to.
func (s *Store) setupCluster(ctx context.Context, v string, feat features) (*tableState, error) {
	sc := s.cfg.schemaConfig()
	plan := planSchema(feat, sc)
	for _, w := range plan.Warnings {
		s.log.Warn("apipool: clickhouse: " + w)
	}
	settings := clickhouse.Settings{}
	for k, v := range plan.Settings {
		settings[k] = v
	}
	// An ON CLUSTER statement waits for every replica; one that is down
	// runs it when it is back.
	settings["distributed_ddl_task_timeout"] = max(int(s.cfg.ReadTimeout.Seconds()/2), 1)
	dctx := clickhouse.Context(ctx, clickhouse.WithSettings(settings))
	db := s.cfg.Database
	st := &tableState{version: v,
		table:     quoteIdent(db) + "." + quoteIdent(s.cfg.Table),
		rollupTbl: quoteIdent(db) + "." + quoteIdent(s.cfg.Table+rollupSuffix),
		local:     sc.localName(s.cfg.Table),
	}
	// exec runs a DDL statement unless name exists; it accepts a timeout
	// from replicas that are down once name exists here.
	exec := func(name, engine, ddl string) error {
		have, err := s.engineOf(ctx, name)
		if err != nil {
			return err
		}
		if have == "" {
			err := s.conn.Exec(dctx, ddl)
			var ex *clickhouse.Exception
			if errors.As(err, &ex) && ex.Code == ddlTimeoutCode {
				if have, _ = s.engineOf(ctx, name); have != "" {
					s.log.Warn("apipool: clickhouse: some replicas have not created the table yet; they will when they answer", "name", name, "err", err)
					err = nil
				}
			}
			if err != nil {
				return fmt.Errorf("creating %s.%s on cluster %s: %w", db, name, s.cfg.Cluster, err)
			}
			s.log.Info("apipool: clickhouse: created on the cluster", "name", name, "cluster", s.cfg.Cluster, "server", v)
			if have, err = s.engineOf(ctx, name); err != nil {
				return err
			}
		}
		if !strings.HasPrefix(have, engine) {
			return &SchemaError{Table: db + "." + name,
				Engine: fmt.Sprintf("has %s, want %s* (Config.Cluster is %s)", have, engine, s.cfg.Cluster)}
		}
		return nil
	}

	var n uint64
	if err := s.conn.QueryRow(ctx, "SELECT count() FROM system.databases WHERE name = "+quoteString(db)).Scan(&n); err != nil {
		return nil, err
	}
	if n == 0 {
		if err := s.conn.Exec(dctx, "CREATE DATABASE IF NOT EXISTS "+quoteIdent(db)+sc.onCluster()); err != nil {
			return nil, fmt.Errorf("creating database %s on cluster %s: %w", db, s.cfg.Cluster, err)
		}
	}
	local := sc.localName(s.cfg.Table)
	if err := exec(local, "Replicated", plan.Table); err != nil {
		return nil, err
	}
	cols, err := s.columns(ctx, local)
	if err != nil {
		return nil, err
	}
	// Tables made before the usage columns get them, on every server: the
	// local tables first, then the Distributed one (whose columns are its
	// own copy of the local table's).
	if missing := missingUsage(cols); len(missing) > 0 {
		if cols, err = s.addUsageColumns(ctx, dctx, feat, sc.table(), local, sc.onCluster(), missing); err != nil {
			return nil, err
		}
	}
	if st.layout, err = checkColumns(db+"."+local, cols); err != nil {
		return nil, err
	}
	if err := exec(s.cfg.Table, "Distributed", plan.Dist); err != nil {
		return nil, err
	}
	dcols, err := s.columns(ctx, s.cfg.Table)
	if err != nil {
		return nil, err
	}
	if missing := missingUsage(dcols); len(missing) > 0 {
		if err := s.addDistributedColumns(ctx, dctx, feat, st.table, sc.onCluster(), missing); err != nil {
			return nil, err
		}
	}
	target := sc.table()
	st.insertSettings = clickhouse.Settings{"insert_deduplicate": 1}
	if s.cfg.InsertDistributed {
		target = st.table
		// Synchronously: the insert returns once each shard's replica
		// has the rows, and a resent batch reaches the same replicas as
		// the same blocks.
		st.insertSettings["insert_distributed_sync"] = 1
	}
	st.insertSQL = st.layout.insertSQL(target)
	// Replicated tables drop a block they hold already: a batch is resent
	// identical, with its token where the server has the setting (21.8
	// on); the Distributed table passes both on to the shards.
	engine, err := s.engineOf(ctx, local)
	if err != nil {
		return nil, err
	}
	var tok uint64
	if err := s.conn.QueryRow(ctx, "SELECT count() FROM system.settings WHERE name = 'insert_deduplication_token'").Scan(&tok); err != nil {
		return nil, err
	}
	st.dedup = dedupFor(engine, "", tok > 0)

	if s.cfg.NoRollup {
		return st, nil
	}
	rollup := sc.localName(s.cfg.Table + rollupSuffix)
	rcols, err := s.columns(ctx, rollup)
	if err != nil {
		return nil, err
	}
	sc.KeyType, sc.RollupKeyType = cols[colKeyID], rcols[colKeyID]
	sc.ModelType, sc.ClientType = cols[colModel], cols[colClient]
	sc.RollupModelType, sc.RollupClientType = rcols[colModel], rcols[colClient]
	sc.OldRollup = len(rcols) > 0 && !rollupHasUsage(rcols)
	plan = planSchema(feat, sc)
	if err := exec(rollup, "Replicated", plan.Rollup); err != nil {
		return nil, err
	}
	if rcols, err = s.columns(ctx, rollup); err != nil {
		return nil, err
	}
	if err := checkRollupColumns(db+"."+rollup, rcols); err != nil {
		return nil, err
	}
	sc.RollupKeyType = rcols[colKeyID]
	sc.RollupModelType, sc.RollupClientType = rcols[colModel], rcols[colClient]
	sc.OldRollup = !rollupHasUsage(rcols)
	plan = planSchema(feat, sc)
	if err := exec(s.cfg.Table+viewSuffix, "MaterializedView", plan.View); err != nil {
		return nil, err
	}
	if err := exec(s.cfg.Table+rollupSuffix, "Distributed", plan.RollupDist); err != nil {
		return nil, err
	}
	st.rollup = true
	// The Distributed rollup follows the local one's layout: made with
	// it, or before the usage columns with an old one.
	drcols, err := s.columns(ctx, s.cfg.Table+rollupSuffix)
	if err != nil {
		return nil, err
	}
	st.rollupUsage = rollupHasUsage(rcols) && rollupHasUsage(drcols)
	return st, nil
}

// notReplicatedCode is the server's answer to an ALTER TABLE ... ON
// CLUSTER of a table that is not replicated on a cluster whose shards are
// (INCORRECT_QUERY, "isn't replicated, but shard #1 is replicated"), as
// 18.16 answers for a Distributed table.
const notReplicatedCode = 371

// addDistributedColumns adds the usage columns to the Distributed event
// table, whose columns are its own copy of the local table's: ON
// CLUSTER, or where the server refuses that for a table that is not
// replicated, on each server of Config.Addrs in turn. Servers of the
// cluster not in Addrs keep their Distributed table as it is: the
// README says what to run there.
func (s *Store) addDistributedColumns(ctx, dctx context.Context, f features, table, onCluster string, missing []columnSpec) error {
	err := s.conn.Exec(dctx, addUsageColumnsDDL(f, table, onCluster, missing))
	var ex *clickhouse.Exception
	if err == nil || !errors.As(err, &ex) || ex.Code != notReplicatedCode {
		if cols, cerr := s.columns(ctx, s.cfg.Table); cerr == nil && len(missingUsage(cols)) == 0 {
			return nil // there now, whoever added them
		}
		if err == nil {
			err = errors.New("columns still missing")
		}
		return fmt.Errorf("adding the usage columns to %s on cluster %s: %w", table, s.cfg.Cluster, err)
	}
	for _, addr := range s.cfg.Addrs {
		if err := s.addColumnsOn(ctx, addr, f, table); err != nil {
			s.log.Warn("apipool: clickhouse: could not add the usage columns to the Distributed table on a server; "+
				"add them there by hand (see the README)", "addr", addr, "err", err)
		}
	}
	if cols, err := s.columns(ctx, s.cfg.Table); err != nil {
		return err
	} else if len(missingUsage(cols)) > 0 {
		return fmt.Errorf("adding the usage columns to %s: still missing on the server connected to", table)
	}
	s.log.Info("apipool: clickhouse: added the usage columns to the Distributed table on each server of Addrs", "table", table)
	return nil
}

// addColumnsOn adds the usage columns that table lacks on the server at
// addr alone, through a connection of its own.
func (s *Store) addColumnsOn(ctx context.Context, addr string, f features, table string) error {
	o := *s.opts
	o.Addr = []string{addr}
	conn, err := clickhouse.Open(&o)
	if err != nil {
		return err
	}
	defer conn.Close()
	rows, err := conn.Query(ctx, "SELECT name, type FROM system.columns WHERE database = "+
		quoteString(s.cfg.Database)+" AND table = "+quoteString(s.cfg.Table))
	if err != nil {
		return err
	}
	have := map[string]string{}
	for rows.Next() {
		var name, typ string
		if err := rows.Scan(&name, &typ); err != nil {
			rows.Close()
			return err
		}
		have[name] = typ
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return err
	}
	missing := missingUsage(have)
	if len(missing) == 0 {
		return nil
	}
	return conn.Exec(ctx, addUsageColumnsDDL(f, table, "", missing))
}

// engineOf returns the engine of a table in the store's database, or ""
// when it does not exist.
func (s *Store) engineOf(ctx context.Context, name string) (string, error) {
	rows, err := s.conn.Query(ctx, "SELECT engine FROM system.tables WHERE database = "+
		quoteString(s.cfg.Database)+" AND name = "+quoteString(name))
	if err != nil {
		return "", err
	}
	defer rows.Close()
	var engine string
	for rows.Next() {
		if err := rows.Scan(&engine); err != nil {
			return "", err
		}
	}
	return engine, rows.Err()
}
