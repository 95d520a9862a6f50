package clickhouse_test

import (
	"context"
	"crypto/rand"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	chgo "github.com/ClickHouse/clickhouse-go/v2"

	"github.com/apipool-ng/apipool/internal/chtest"
	"github.com/apipool-ng/apipool/recorder"
	"github.com/apipool-ng/apipool/recorder/clickhouse"
	"github.com/apipool-ng/apipool/status"
)

// The cluster tests share one cluster (chtest.SharedCluster: ZooKeeper
// and two replicas of one shard), each with tables of its own. The fault
// tests stop a replica or ZooKeeper and start it again before they end;
// none runs in parallel.

// clusterConfig returns a cluster-mode config for c with a table of the
// test's own and quick retries.
func clusterConfig(t testing.TB, c *chtest.Cluster) clickhouse.Config {
	cfg := testConfig(t, c.Replicas[0])
	cfg.Addrs = c.Addrs()
	cfg.Cluster = c.Name
	cfg.ReadTimeout = 20 * time.Second
	return cfg
}

// syncReplicas waits until every replica has fetched the parts the others
// hold of table (its local replicated tables, event and rollup).
func syncReplicas(t *testing.T, c *chtest.Cluster, tables ...string) {
	t.Helper()
	ctx := ctxT(t, 2*time.Minute)
	for _, r := range c.Replicas {
		conn := r.Conn(t)
		for _, tbl := range tables {
			if !strings.Contains(tbl, ".") {
				tbl = "default." + tbl
			}
			// A replica whose ZooKeeper session expired (ZooKeeper
			// stopped for long) fails until it has a new one.
			for {
				err := conn.Exec(ctx, "SYSTEM SYNC REPLICA "+tbl)
				if err == nil {
					break
				}
				if ctx.Err() != nil {
					t.Fatalf("replica %s: SYNC REPLICA %s: %v", r.Replica, tbl, err)
				}
				time.Sleep(100 * time.Millisecond)
			}
		}
	}
}

// wantOnceEverywhere checks that events 0..n-1 are each once on every
// replica's local table and once through the Distributed table.
func wantOnceEverywhere(t *testing.T, c *chtest.Cluster, table string, n int) {
	t.Helper()
	syncReplicas(t, c, table+"_local", table+"_1m_local")
	for _, r := range c.Replicas {
		wantOnceOn(t, r, table+"_local", n)
	}
	wantOnceOn(t, c.Replicas[0], table, n)
	wantOnceOn(t, c.Replicas[1], table, n)
}

// wantOnceOn checks that events 0..n-1 are each once in table on srv.
// It counts event ids as strings: 18.16 hashes a UUID by one of its
// halves, which made uniqExact(event_id) take minutes over ids that share
// one (the store's ids were once a fixed prefix and a counter).
func wantOnceOn(t *testing.T, srv *chtest.Server, table string, n int) {
	t.Helper()
	var got tally
	err := srv.Conn(t).QueryRow(ctxT(t, time.Minute), "SELECT count(), uniqExact(toString(event_id)), uniqExact(request_bytes), "+
		"min(request_bytes), max(request_bytes) FROM default."+table).Scan(&got.rows, &got.ids, &got.distinct, &got.min, &got.max)
	if err != nil {
		t.Fatal(err)
	}
	want := tally{rows: uint64(n), ids: uint64(n), distinct: uint64(n), min: 0, max: int64(n - 1)}
	if got != want {
		t.Fatalf("replica %s: %s holds %+v, want %+v (each of %d events exactly once)", srv.Replica, table, got, want, n)
	}
}

// engines returns the engine of each of the store's tables on srv.
func engines(t *testing.T, srv *chtest.Server, table string) map[string]string {
	t.Helper()
	rows, err := srv.Conn(t).Query(context.Background(),
		"SELECT name, engine FROM system.tables WHERE database = 'default' AND name LIKE '"+table+"%'")
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	out := map[string]string{}
	for rows.Next() {
		var name, engine string
		if err := rows.Scan(&name, &engine); err != nil {
			t.Fatal(err)
		}
		out[name] = engine
	}
	return out
}

func TestClusterCreatesReplicatedTablesOnEveryReplica(t *testing.T) {
	c := chtest.SharedCluster(t)
	for _, viaDist := range []bool{false, true} {
		name := "local"
		if viaDist {
			name = "distributed"
		}
		t.Run(name, func(t *testing.T) {
			cfg := clusterConfig(t, c)
			cfg.InsertDistributed = viaDist
			cfg.BatchSize = 500
			s := newStore(t, cfg)
			want := map[string]string{
				cfg.Table + "_local":    "ReplicatedMergeTree",
				cfg.Table:               "Distributed",
				cfg.Table + "_1m_local": "ReplicatedAggregatingMergeTree",
				cfg.Table + "_1m_mv":    "MaterializedView",
				cfg.Table + "_1m":       "Distributed",
			}
			for _, r := range c.Replicas {
				got := engines(t, r, cfg.Table)
				for tbl, e := range want {
					if got[tbl] != e {
						t.Errorf("replica %s: %s has engine %q, want %q (all: %v)", r.Replica, tbl, got[tbl], e, got)
					}
				}
			}
			if m := clickhouse.ResendMode(s); m != "identical" {
				t.Errorf("resend mode %q, want identical (replicated tables drop identical blocks)", m)
			}
			const n = 2000
			for i := range n {
				s.Record(event(i))
			}
			if err := s.Flush(ctxT(t, time.Minute)); err != nil {
				t.Fatal(err)
			}
			wantOnceEverywhere(t, c, cfg.Table, n)

			// Stats read the Distributed tables: the events table for a
			// short window, the rollup for whole minutes of a long one.
			ctx := ctxT(t, time.Minute)
			short := recorder.Query{Since: base, Until: base.Add(n * time.Millisecond)}
			long := recorder.Query{Since: base.Add(-24 * time.Hour), Until: base.Add(24 * time.Hour)}
			for _, q := range []recorder.Query{short, long} {
				got, err := s.UsageCount(ctx, q)
				if err != nil {
					t.Fatal(err)
				}
				if got != n {
					t.Errorf("UsageCount(%v..%v) = %d, want %d", q.Since, q.Until, got, n)
				}
				byKey, err := s.UsageByKey(ctx, q)
				if err != nil {
					t.Fatal(err)
				}
				if len(byKey) != 5 || byKey["key-0"] != n/5 {
					t.Errorf("UsageByKey = %v, want 5 keys of %d", byKey, n/5)
				}
			}
			// The rollup on each replica counts each event once.
			for _, r := range c.Replicas {
				var events uint64
				if err := r.Conn(t).QueryRow(ctx, "SELECT countMerge(events) FROM default."+cfg.Table+"_1m_local").Scan(&events); err != nil {
					t.Fatal(err)
				}
				if events != n {
					t.Errorf("replica %s: the rollup counts %d events, want %d", r.Replica, events, n)
				}
			}
		})
	}
}

func TestClusterSecondStoreFindsTheTables(t *testing.T) {
	c := chtest.SharedCluster(t)
	cfg := clusterConfig(t, c)
	s1 := newStore(t, cfg)
	s1.Record(event(0))
	if err := s1.Flush(ctxT(t, time.Minute)); err != nil {
		t.Fatal(err)
	}
	// A store connected to the other replica uses the same tables.
	cfg.Addrs = []string{c.Replicas[1].Addr}
	s2 := newStore(t, cfg)
	s2.Record(event(1))
	if err := s2.Flush(ctxT(t, time.Minute)); err != nil {
		t.Fatal(err)
	}
	wantOnceEverywhere(t, c, cfg.Table, 2)
}

func TestClusterRefusesAPlainTableWhereTheDistributedOneGoes(t *testing.T) {
	c := chtest.SharedCluster(t)
	cfg := clusterConfig(t, c)
	single := cfg
	single.Cluster = ""
	single.Addrs = []string{c.Replicas[0].Addr}
	newStore(t, single) // a MergeTree table named cfg.Table on replica 1
	_, err := clickhouse.New(ctxT(t, time.Minute), cfg)
	var se *clickhouse.SchemaError
	if !errors.As(err, &se) {
		t.Fatalf("New in cluster mode over a plain table: %v, want a *SchemaError", err)
	}
	t.Log(err)
}

// load records events 0, 1, 2, ... in the background, a few at a time,
// until stop; it returns how many it recorded.
func load(s *clickhouse.Store, stop <-chan struct{}) (wait func() int) {
	var n atomic.Int64
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		tick := time.NewTicker(time.Millisecond)
		defer tick.Stop()
		for i := 0; ; {
			select {
			case <-stop:
				n.Store(int64(i))
				return
			case <-tick.C:
			}
			for range 5 {
				s.Record(event(i))
				i++
			}
		}
	}()
	return func() int { wg.Wait(); return int(n.Load()) }
}

// waitWritten waits until a running replica's local table holds at least
// atLeast rows.
func waitWritten(t *testing.T, s *clickhouse.Store, c *chtest.Cluster, table string, atLeast uint64) {
	t.Helper()
	waitFor(t, "events written", func() bool {
		var n uint64
		for _, r := range c.Replicas {
			if !r.Running() {
				continue
			}
			if err := r.Conn(t).QueryRow(context.Background(), "SELECT count() FROM default."+table+"_local").Scan(&n); err == nil && n >= atLeast {
				return true
			}
		}
		return false
	})
}

func TestClusterReplicaKilledUnderLoad(t *testing.T) {
	c := chtest.SharedCluster(t)
	cfg := clusterConfig(t, c)
	cfg.BatchSize = 2000
	cfg.DialTimeout = time.Second
	s := newStore(t, cfg)
	r1 := c.Replicas[0]
	t.Cleanup(func() { r1.Start() })

	stop := make(chan struct{})
	wait := load(s, stop)
	waitWritten(t, s, c, cfg.Table, 3000)
	// The store is connected to r1, the first address: kill it mid-load.
	if err := r1.Kill(); err != nil {
		t.Fatal(err)
	}
	// Inserts fail over to r2.
	var before uint64
	r2 := c.Replicas[1].Conn(t)
	if err := r2.QueryRow(context.Background(), "SELECT count() FROM default."+cfg.Table+"_local").Scan(&before); err != nil {
		t.Fatal(err)
	}
	waitWritten(t, s, c, cfg.Table, before+3000)
	if err := r1.Start(); err != nil {
		t.Fatal(err)
	}
	if err := c.WaitZooKeeper(ctxT(t, time.Minute)); err != nil {
		t.Fatal(err)
	}
	close(stop)
	n := wait()
	if err := s.Flush(ctxT(t, 2*time.Minute)); err != nil {
		t.Fatal(err)
	}
	if d := s.Dropped(); d != 0 {
		t.Fatalf("Dropped = %d", d)
	}
	t.Logf("%d events recorded while replica %s was killed and restarted", n, r1.Replica)
	wantOnceEverywhere(t, c, cfg.Table, n)
}

func TestClusterZooKeeperStoppedUnderLoad(t *testing.T) {
	c := chtest.SharedCluster(t)
	cfg := clusterConfig(t, c)
	cfg.BatchSize = 2000
	cfg.QueueSize = 20_000
	cfg.SpillDir = t.TempDir()
	s := newStore(t, cfg)
	t.Cleanup(func() {
		c.ZK.Start()
		c.WaitZooKeeper(ctxT(t, time.Minute))
	})

	stop := make(chan struct{})
	wait := load(s, stop)
	waitWritten(t, s, c, cfg.Table, 3000)
	if err := c.ZK.Stop(); err != nil {
		t.Fatal(err)
	}
	// Replicated inserts fail while ZooKeeper is down: the events queue
	// (and spill).
	waitFor(t, "inserts to fail", func() bool { return s.Err() != nil })
	time.Sleep(10 * time.Second) // the outage, not a timing assertion
	if s.QueueLen()+int(s.Spilled()) == 0 {
		t.Error("nothing queued or spilled while ZooKeeper was down")
	}
	t.Logf("with ZooKeeper down: last error %v; %d queued, %d spilled", s.Err(), s.QueueLen(), s.Spilled())
	if err := c.ZK.Start(); err != nil {
		t.Fatal(err)
	}
	if err := c.WaitZooKeeper(ctxT(t, time.Minute)); err != nil {
		t.Fatal(err)
	}
	close(stop)
	n := wait()
	t.Logf("ZooKeeper back: %d events queued, %d spilled", s.QueueLen(), s.Spilled())
	if err := s.Flush(ctxT(t, 2*time.Minute)); err != nil {
		t.Fatal(err)
	}
	if d := s.Dropped(); d != 0 {
		t.Fatalf("Dropped = %d", d)
	}
	t.Logf("%d events recorded while ZooKeeper was stopped and started", n)
	// A commit cut off from ZooKeeper as it stopped may have left an
	// orphan part (see TestClusterCommitCutOffFromZooKeeper), which the
	// store must have reported.
	syncReplicas(t, c, cfg.Table+"_local")
	if k := detachOrphans(t, c, cfg); k > 0 {
		if got := clickhouse.Orphans(s); got < uint64(k) {
			t.Errorf("the replicas held %d orphan parts; the store reported %d", k, got)
		}
	}
	wantOnceEverywhere(t, c, cfg.Table, n)
}

// TestClusterResendAfterLostAnswerIsWrittenOnce makes the server commit
// an insert whose answer never reaches the store (a proxy swallows it and
// then breaks the connection): the store sends the batch again, and the
// replicated table drops the identical block.
func TestClusterResendAfterLostAnswerIsWrittenOnce(t *testing.T) {
	c := chtest.SharedCluster(t)
	for _, viaDist := range []bool{false, true} {
		name := "local"
		if viaDist {
			name = "distributed"
		}
		t.Run(name, func(t *testing.T) {
			proxy := chtest.NewProxy(t, c.Replicas[0].Addr)
			cfg := clusterConfig(t, c)
			cfg.Addrs = []string{proxy.Addr}
			cfg.InsertDistributed = viaDist
			const n = 5000
			cfg.BatchSize = n
			cfg.FlushInterval = time.Hour
			s := newStore(t, cfg)

			// A batch of n events with random trace ids is over 150 KiB
			// on the wire, compressed; the INSERT statement and the
			// schema queries are far less.
			proxy.SwallowAnswersAfter(64 << 10)
			for i := range n {
				e := event(i)
				rand.Read(e.TraceID[:])
				s.Record(e)
			}
			// The server commits the batch, and its answer is dropped.
			waitWritten(t, s, c, cfg.Table, n)
			waitFor(t, "the proxy to drop the answer", func() bool { return proxy.Swallowed() > 0 })
			proxy.SwallowAnswersAfter(0)
			proxy.Cut()
			if err := s.Flush(ctxT(t, time.Minute)); err != nil {
				t.Fatal(err)
			}
			wantOnceEverywhere(t, c, cfg.Table, n)
		})
	}
}

// zkPath returns the ZooKeeper path of the store's local event table
// (the default Config.ReplicaPath on the shared cluster).
func zkPath(cfg clickhouse.Config) string {
	db := cfg.Database
	if db == "" {
		db = "default"
	}
	return "/clickhouse/tables/" + chtest.ShardMacro + "/" + db + "." + cfg.Table + "_local"
}

// orphanParts returns the active parts of the store's local event table on
// r that ZooKeeper does not list for r, and how many rows they hold.
func orphanParts(t *testing.T, r *chtest.Server, cfg clickhouse.Config) (parts []string, rows uint64) {
	t.Helper()
	ctx := ctxT(t, time.Minute)
	conn := r.Conn(t)
	listed := map[string]bool{}
	zk, err := conn.Query(ctx, "SELECT name FROM system.zookeeper WHERE path = '"+zkPath(cfg)+"/replicas/"+r.Replica+"/parts'")
	if err != nil {
		t.Fatal(err)
	}
	for zk.Next() {
		var name string
		if err := zk.Scan(&name); err != nil {
			t.Fatal(err)
		}
		listed[name] = true
	}
	zk.Close()
	ps, err := conn.Query(ctx, "SELECT name, rows FROM system.parts WHERE database = 'default' AND table = '"+cfg.Table+"_local' AND active")
	if err != nil {
		t.Fatal(err)
	}
	defer ps.Close()
	for ps.Next() {
		var name string
		var n uint64
		if err := ps.Scan(&name, &n); err != nil {
			t.Fatal(err)
		}
		if !listed[name] {
			parts = append(parts, name)
			rows += n
		}
	}
	return parts, rows
}

// detachOrphans restarts the store's local event table on each replica
// that holds parts ZooKeeper lacks (SYSTEM RESTART REPLICA, as the
// README says), which detaches them, and returns how many there were.
func detachOrphans(t *testing.T, c *chtest.Cluster, cfg clickhouse.Config) int {
	t.Helper()
	total := 0
	for _, r := range c.Replicas {
		parts, rows := orphanParts(t, r, cfg)
		if len(parts) == 0 {
			continue
		}
		total += len(parts)
		t.Logf("replica %s holds parts %v (%d rows) that ZooKeeper lacks: restarting its table", r.Replica, parts, rows)
		if err := r.Conn(t).Exec(ctxT(t, time.Minute), "SYSTEM RESTART REPLICA default."+cfg.Table+"_local"); err != nil {
			t.Fatal(err)
		}
		if parts, _ := orphanParts(t, r, cfg); len(parts) > 0 {
			t.Fatalf("replica %s still holds %v after SYSTEM RESTART REPLICA", r.Replica, parts)
		}
	}
	return total
}

// TestClusterCommitCutOffFromZooKeeper cuts the replica's connection to
// ZooKeeper at the transaction that commits the batch's part: ZooKeeper
// applies it and its answer is lost, or it never reaches ZooKeeper. The
// server answers UNKNOWN_STATUS_OF_INSERT either way, and keeps the part
// either way; the store sends the batch again. When ZooKeeper applied the
// commit, the replicated table drops the resent block. When it did not,
// the kept part is an orphan: ZooKeeper lacks it, the other replica never
// gets it, and the replica counts the batch twice until the part is
// detached; the store finds it and says so, and SYSTEM RESTART REPLICA
// detaches it. Cut at the commit of the rollup's part, the batch is
// missing from the other replica's rollup.
func TestClusterCommitCutOffFromZooKeeper(t *testing.T) {
	c := chtest.SharedCluster(t)
	for _, v := range []struct {
		name    string
		fault   chtest.ZKFault
		rollup  bool // cut the commit of the rollup's part instead
		viaDist bool // insert through the Distributed table
	}{
		{"applied", chtest.ZKLoseMultiAnswer, false, false},
		{"not applied", chtest.ZKDropMulti, false, false},
		{"rollup not applied", chtest.ZKDropMulti, true, false},
		{"distributed/applied", chtest.ZKLoseMultiAnswer, false, true},
		{"distributed/not applied", chtest.ZKDropMulti, false, true},
	} {
		t.Run(v.name, func(t *testing.T) {
			cfg := clusterConfig(t, c)
			cfg.InsertDistributed = v.viaDist
			const n = 1000
			cfg.BatchSize = n
			cfg.FlushInterval = time.Hour
			var logs lockedBuffer
			cfg.Logger = slog.New(slog.NewTextHandler(&logs, nil))
			s := newStore(t, cfg)
			t.Cleanup(func() { c.ZKProxy.ArmMulti(0) })

			// The store writes to r1, the first address.
			hits := c.ZKProxy.Hits()
			match := chtest.CommitMatch(zkPath(cfg), c.Replicas[0].Replica)
			if v.rollup {
				// 18.16 inserts into a view's table without a block id:
				// the rollup's first commit is the first transaction
				// that names a part of it.
				match = []string{strings.TrimSuffix(zkPath(cfg), "_local") + "_1m_local/replicas/" + c.Replicas[0].Replica + "/parts/"}
			}
			c.ZKProxy.ArmMulti(v.fault, match...)
			for i := range n {
				s.Record(event(i))
			}
			if err := s.Flush(ctxT(t, time.Minute)); err != nil {
				t.Fatal(err)
			}
			if got := c.ZKProxy.Hits() - hits; got != 1 {
				t.Fatalf("the proxy cut %d commits, want 1", got)
			}
			if !strings.Contains(logs.String(), "Unknown status") {
				t.Errorf("no UNKNOWN_STATUS_OF_INSERT in the store's log:\n%s", logs.String())
			}
			syncReplicas(t, c, cfg.Table+"_local", cfg.Table+"_1m_local")
			orphans := clickhouse.Orphans(s)
			if v.rollup {
				// The events' part was committed: the resent block is
				// dropped, and the view does not run again. The rollup
				// of the replica written to holds the batch in an orphan
				// part; the other's lacks it (the README says so).
				if orphans != 0 {
					t.Errorf("the store reported %d orphan parts of the events, want none", orphans)
				}
				wantOnceEverywhere(t, c, cfg.Table, n)
				for i, want := range []uint64{n, 0} {
					var got uint64
					r := c.Replicas[i]
					if err := r.Conn(t).QueryRow(ctxT(t, time.Minute), "SELECT countMerge(events) FROM default."+cfg.Table+"_1m_local").Scan(&got); err != nil {
						t.Fatal(err)
					}
					if got != want {
						t.Errorf("replica %s: the rollup counts %d events, want %d", r.Replica, got, want)
					}
				}
				return
			}
			if v.fault == chtest.ZKLoseMultiAnswer {
				if orphans != 0 {
					t.Errorf("the store reported %d orphan parts, want none", orphans)
				}
				wantOnceEverywhere(t, c, cfg.Table, n)
				return
			}
			// The replica that answered holds the batch twice: its orphan
			// part and the part of the resend; the other once.
			parts, rows := orphanParts(t, c.Replicas[0], cfg)
			if len(parts) != 1 || rows != n {
				t.Errorf("replica %s: orphan parts %v of %d rows, want one of %d", c.Replicas[0].Replica, parts, rows, n)
			}
			wantOnceOn(t, c.Replicas[1], cfg.Table+"_local", n)
			if orphans != 1 || !strings.Contains(logs.String(), "ZooKeeper lacks it") {
				t.Errorf("the store reported %d orphan parts, want 1; its log:\n%s", orphans, logs.String())
			}
			if got := detachOrphans(t, c, cfg); got != 1 {
				t.Errorf("detached %d orphan parts, want 1", got)
			}
			wantOnceEverywhere(t, c, cfg.Table, n)
		})
	}
}

// BenchmarkClusterThroughput measures the sustained rate from Record
// (Block policy, batches of the default BatchSize: 10,000 when the
// README's figures were taken, 20,000 since) into a single server and into the
// shared two-replica cluster, inserting into the local replicated table
// or through the Distributed table, in the same run: the servers and
// ZooKeeper run beside the client.
func BenchmarkClusterThroughput(b *testing.B) {
	c := chtest.SharedCluster(b)
	for _, v := range []struct {
		name             string
		cluster, viaDist bool
	}{
		{"single", false, false},
		{"cluster-local", true, false},
		{"cluster-distributed", true, true},
	} {
		b.Run(v.name, func(b *testing.B) {
			var cfg clickhouse.Config
			if v.cluster {
				cfg = clusterConfig(b, c)
				cfg.InsertDistributed = v.viaDist
			} else {
				cfg = testConfig(b, chtest.Shared(b))
			}
			cfg.OnFull = clickhouse.Block
			s := newStore(b, cfg)
			e := benchEvent()
			start := time.Now()
			for i := 0; b.Loop(); i++ {
				e.RequestBytes = int64(i)
				s.Record(e)
			}
			if err := s.Flush(context.Background()); err != nil {
				b.Fatal(err)
			}
			b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "events/s")
		})
	}
}

// TestReadmeQueriesOnCluster runs each query of the README through the
// cluster's Distributed tables, which carry the default names.
func TestReadmeQueriesOnCluster(t *testing.T) {
	c := chtest.SharedCluster(t)
	cfg := clusterConfig(t, c)
	cfg.Database = "readme"
	cfg.Table = clickhouse.DefaultTable
	s := newStore(t, cfg)
	now := time.Now()
	midnight := now.UTC().Truncate(24 * time.Hour)
	for i := range 3000 {
		st := status.Success
		if i%5 == 0 {
			st = status.ReachLimit
		}
		s.Record(recorder.Event{
			Time:    maxTime(now.Add(-time.Duration(i)*time.Millisecond), midnight),
			KeyID:   []string{"key-a", "key-b", "key-c"}[i%3],
			Status:  st,
			Latency: time.Duration(i%300) * time.Millisecond,
		})
	}
	if err := s.Flush(ctxT(t, time.Minute)); err != nil {
		t.Fatal(err)
	}
	// Flush returns once the server the store writes to has the events;
	// the other replica has them once it has fetched the parts.
	syncReplicas(t, c, "readme."+cfg.Table+"_local", "readme."+cfg.Table+"_1m_local")
	queries := readmeQueries(t)
	if len(queries) < 7 {
		t.Fatalf("%d README queries", len(queries))
	}
	// Through the other replica: it reads the Distributed tables too.
	conn, err := chgo.Open(&chgo.Options{Addr: []string{c.Replicas[1].Addr}, Auth: chgo.Auth{Database: "readme"}})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	for name, q := range queries {
		t.Run(name, func(t *testing.T) {
			rows, err := conn.Query(ctxT(t, time.Minute), q)
			if err != nil {
				t.Fatalf("%v\n%s", err, q)
			}
			defer rows.Close()
			n := 0
			for rows.Next() {
				n++
			}
			if err := rows.Err(); err != nil {
				t.Fatal(err)
			}
			if n == 0 && name != "events written twice" {
				t.Errorf("no rows:\n%s", q)
			}
		})
	}
}

// TestClusterNewWithAReplicaDown opens a store on a new table while one
// replica is down: the ON CLUSTER statements time out waiting for it, the
// store goes on with the tables on the replica it is connected to, and the
// other replica creates them from the DDL queue when it is back.
func TestClusterNewWithAReplicaDown(t *testing.T) {
	c := chtest.SharedCluster(t)
	r2 := c.Replicas[1]
	t.Cleanup(func() { r2.Start() })
	if err := r2.Stop(); err != nil {
		t.Fatal(err)
	}
	cfg := clusterConfig(t, c)
	cfg.ReadTimeout = 4 * time.Second // ON CLUSTER waits 2 s for the missing replica
	var logs lockedBuffer
	cfg.Logger = slog.New(slog.NewTextHandler(&logs, nil))
	s := newStore(t, cfg)
	if !strings.Contains(logs.String(), "some replicas have not created the table yet") {
		t.Errorf("no warning about the missing replica in the log:\n%s", logs.String())
	}
	s.Record(event(0))
	if err := s.Flush(ctxT(t, time.Minute)); err != nil {
		t.Fatal(err)
	}
	if err := r2.Start(); err != nil {
		t.Fatal(err)
	}
	if err := c.WaitZooKeeper(ctxT(t, time.Minute)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the tables on the restarted replica", func() bool { return len(engines(t, r2, cfg.Table)) == 5 })
	wantOnceEverywhere(t, c, cfg.Table, 1)
}
