package clickhouse

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
)

// A batch whose insert failed after its rows left (a timeout, a broken
// connection) may have been written all the same: the server may have
// committed it before the acknowledgement was lost, or may commit it
// later (a stopped server, continued). How the writer makes the next
// attempt harmless depends on the table; dedupInfo says which way.

// resendMode says how the writer makes a resend harmless.
type resendMode int

const (
	// resendCheck is for tables that keep every block they are given (a
	// plain MergeTree: 18.16's, or any without a deduplication window).
	// Before resending, the writer waits until the earlier insert no
	// longer runs on the server (system.processes, by its query_id), then
	// looks for the batch's rows, and sends only those the table lacks.
	resendCheck resendMode = iota
	// resendIdentical is for tables that drop a block they already hold:
	// Replicated*MergeTree, and MergeTree with
	// non_replicated_deduplication_window (21.8 on). The writer resends
	// the identical block (the same rows in the same order, in one block),
	// with the same insert_deduplication_token where the server has the
	// setting.
	resendIdentical
)

func (m resendMode) String() string {
	if m == resendIdentical {
		return "identical"
	}
	return "check"
}

// dedupInfo is what the writer knows about the table's deduplication.
// It is the seam for other table layouts (a cluster's replicated or
// distributed tables): setup fills it from dedupFor, and a layout that
// knows better may set it itself.
type dedupInfo struct {
	mode resendMode
	// token says that the server has the insert_deduplication_token
	// setting: each insert carries its batch's id as its token.
	token bool
}

// nonReplicatedWindowRE finds the setting in a CREATE TABLE statement.
var nonReplicatedWindowRE = regexp.MustCompile(`non_replicated_deduplication_window\s*=\s*(\d+)`)

// dedupFor decides how to resend into a table of engine (system.tables'
// engine column) created by createQuery, on a server that has the
// insert_deduplication_token setting or not.
func dedupFor(engine, createQuery string, hasToken bool) dedupInfo {
	d := dedupInfo{token: hasToken}
	switch {
	case strings.HasPrefix(engine, "Replicated"):
		d.mode = resendIdentical
	case strings.HasSuffix(engine, "MergeTree"):
		if m := nonReplicatedWindowRE.FindStringSubmatch(createQuery); m != nil {
			if n, err := strconv.ParseUint(m[1], 10, 64); err == nil && n > 0 {
				d.mode = resendIdentical
			}
		}
	}
	if d.mode != resendIdentical {
		d.token = false
	}
	return d
}

// learnDedup reads what dedupFor needs from the server.
func (s *Store) learnDedup(ctx context.Context) (dedupInfo, error) {
	var engine, create string
	err := s.conn.QueryRow(ctx, "SELECT engine, create_table_query FROM system.tables WHERE database = "+
		quoteString(s.cfg.Database)+" AND name = "+quoteString(s.cfg.Table)).Scan(&engine, &create)
	if err != nil {
		return dedupInfo{}, err
	}
	var n uint64
	if err := s.conn.QueryRow(ctx, "SELECT count() FROM system.settings WHERE name = 'insert_deduplication_token'").Scan(&n); err != nil {
		return dedupInfo{}, err
	}
	return dedupFor(engine, create, n > 0), nil
}

// insertContext returns the context of an insert named id: its query_id,
// and its deduplication token where the table uses one.
func (s *Store) insertContext(st *tableState, id string) context.Context {
	opts := []clickhouse.QueryOption{clickhouse.WithQueryID(id)}
	if st.dedup.token || len(st.insertSettings) > 0 {
		set := clickhouse.Settings{}
		for k, v := range st.insertSettings {
			set[k] = v
		}
		if st.dedup.token {
			set["insert_deduplication_token"] = id
		}
		opts = append(opts, clickhouse.WithSettings(set))
	}
	return clickhouse.Context(s.ctx, opts...)
}

// errInsertRunning says that an earlier insert of a batch still runs on
// the server: the writer waits before checking for its rows.
var errInsertRunning = errors.New("apipool: clickhouse: an earlier insert of the batch still runs on the server")

// checkWritten returns the rows of a batch named id that the table does
// not hold. An insert writes one part per partition (month of event_time)
// of its block, each whole or not at all, so the first row of each month
// tells whether the month's rows were written. It fails with
// errInsertRunning while an insert named id runs.
func (s *Store) checkWritten(ctx context.Context, st *tableState, rows []row, id string) ([]row, error) {
	var running uint64
	if err := s.conn.QueryRow(ctx, "SELECT count() FROM system.processes WHERE query_id = "+quoteString(id)).Scan(&running); err != nil {
		return nil, classify(err)
	}
	if running > 0 {
		return nil, errInsertRunning
	}
	order := monthFirsts(rows)
	conds := make([]string, len(order))
	for k, i := range order {
		conds[k] = rowCond(&rows[i])
	}
	found := map[string]bool{}
	q := "SELECT toString(event_id) FROM " + st.table + " WHERE " + strings.Join(conds, " OR ")
	dbRows, err := s.conn.Query(ctx, q)
	if err != nil {
		return nil, classify(err)
	}
	defer dbRows.Close()
	for dbRows.Next() {
		var id string
		if err := dbRows.Scan(&id); err != nil {
			return nil, classify(err)
		}
		found[id] = true
	}
	if err := dbRows.Err(); err != nil {
		return nil, classify(err)
	}
	firsts := map[int]int{} // month → index of its first row
	written := 0
	for _, i := range order {
		firsts[month(rows[i].ms)] = i
		if found[rows[i].id.String()] {
			written++
		}
	}
	if written == 0 {
		return rows, nil
	}
	var rest []row
	for i := range rows {
		if !found[rows[firsts[month(rows[i].ms)]].id.String()] {
			rest = append(rest, rows[i])
		}
	}
	return rest, nil
}

// monthFirsts returns the index of the first row of each month (partition)
// of rows, in the order the months first appear.
func monthFirsts(rows []row) []int {
	seen := map[int]bool{}
	var out []int
	for i := range rows {
		if m := month(rows[i].ms); !seen[m] {
			seen[m] = true
			out = append(out, i)
		}
	}
	return out
}

// rowCond returns a condition that finds r in the event table: key_id and
// event_time narrow the search to the table's order.
func rowCond(r *row) string {
	sec := r.ms / 1000
	return fmt.Sprintf("(key_id = %s AND event_time >= toDateTime(%d) AND event_time < toDateTime(%d) AND event_id = toUUID('%s'))",
		quoteString(r.keyID), sec, sec+1, r.id)
}

// codeUnknownStatus is the server's UNKNOWN_STATUS_OF_INSERT: a replicated
// table lost ZooKeeper while it committed the insert's part.
const codeUnknownStatus = 319

// A replicated table that loses ZooKeeper while it commits an inserted
// part answers UNKNOWN_STATUS_OF_INSERT. ZooKeeper may have applied the
// commit: the part is then the table's, and the identical block sent
// again is dropped. Or it may not have: the server then keeps the part
// all the same, and shows its rows, though ZooKeeper does not list it
// (an orphan part) and no other replica will fetch it. The batch must be
// sent again for its rows to be replicated, and the server that answered
// counts them twice until it detaches the orphan part. 18.16 detaches
// such a part when the table starts (SYSTEM RESTART REPLICA, or the
// server's restart), and kept one for the 8 minutes watched otherwise
// (in the setting of TestClusterCommitCutOffFromZooKeeper). The store
// does not restart the table (others' inserts and queries would fail
// meanwhile): it resends the batch, as it must, and says so (orphanParts).

// orphanParts returns the parts of the server's table (st.local) that
// hold the first row of a month of rows and that ZooKeeper does not list
// for the server's replica, and that replica's ZooKeeper path. The parts
// and the path are read in one query, so they are the same server's even
// when the pool's connections reach several.
func (s *Store) orphanParts(ctx context.Context, st *tableState, rows []row) (orphans []string, replicaPath string, err error) {
	db := quoteString(s.cfg.Database)
	var conds []string
	for _, i := range monthFirsts(rows) {
		conds = append(conds, rowCond(&rows[i]))
	}
	q := "SELECT DISTINCT _part, (SELECT any(replica_path) FROM system.replicas WHERE database = " + db +
		" AND table = " + quoteString(st.local) + ") FROM " + quoteIdent(s.cfg.Database) + "." + quoteIdent(st.local) +
		" WHERE " + strings.Join(conds, " OR ")
	dbRows, err := s.conn.Query(ctx, q)
	if err != nil {
		return nil, "", classify(err)
	}
	var parts []string
	for dbRows.Next() {
		var part string
		if err := dbRows.Scan(&part, &replicaPath); err != nil {
			dbRows.Close()
			return nil, "", classify(err)
		}
		parts = append(parts, part)
	}
	dbRows.Close()
	if err := dbRows.Err(); err != nil {
		return nil, "", classify(err)
	}
	if len(parts) == 0 || replicaPath == "" {
		return nil, replicaPath, nil // not written here, or not a replicated table
	}
	quoted := make([]string, len(parts))
	for i, p := range parts {
		quoted[i] = quoteString(p)
	}
	// ZooKeeper is the cluster's: any server reads the same.
	zkRows, err := s.conn.Query(ctx, "SELECT name FROM system.zookeeper WHERE path = "+quoteString(replicaPath+"/parts")+
		" AND name IN ("+strings.Join(quoted, ", ")+")")
	if err != nil {
		return nil, "", classify(err)
	}
	defer zkRows.Close()
	listed := map[string]bool{}
	for zkRows.Next() {
		var name string
		if err := zkRows.Scan(&name); err != nil {
			return nil, "", classify(err)
		}
		listed[name] = true
	}
	if err := zkRows.Err(); err != nil {
		return nil, "", classify(err)
	}
	for _, p := range parts {
		if !listed[p] {
			orphans = append(orphans, p)
		}
	}
	return orphans, replicaPath, nil
}

// reportOrphans logs the orphan parts (see orphanParts) of a batch about
// to be sent again after UNKNOWN_STATUS_OF_INSERT, and counts them. It
// reports whether it could look.
func (s *Store) reportOrphans(ctx context.Context, st *tableState, rows []row) bool {
	orphans, replicaPath, err := s.orphanParts(ctx, st, rows)
	if err != nil {
		s.log.Debug("apipool: clickhouse: could not look for parts ZooKeeper lacks", "err", err)
		return false
	}
	if len(orphans) > 0 {
		s.orphans.Add(uint64(len(orphans)))
		s.log.Warn("apipool: clickhouse: the server kept part of a batch whose commit lost ZooKeeper, and ZooKeeper lacks it; "+
			"the batch is sent again so that it is replicated, and this replica counts its events twice until it detaches the part "+
			"(SYSTEM RESTART REPLICA on that replica detaches it)",
			"replica", replicaPath, "table", s.cfg.Database+"."+st.local, "parts", orphans, "events", len(rows))
	}
	return true
}

// month returns the partition (toYYYYMM, in UTC) of a time in Unix
// milliseconds.
func month(ms int64) int {
	t := time.UnixMilli(ms).UTC()
	return t.Year()*100 + int(t.Month())
}
