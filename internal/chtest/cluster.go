package chtest

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/apipool-ng/apipool/internal/testsrv"
	"github.com/apipool-ng/apipool/internal/zktest"
)

// ClusterName is the cluster's name in the servers' remote_servers.
const ClusterName = "apipool"

// ShardMacro is the value of every replica's {shard} macro; replica i
// (from 0) has the {replica} macro "r" followed by i+1.
const ShardMacro = "01"

// Cluster is a private ClickHouse cluster: one shard of replicas, each a
// clickhouse-server with its own directory, ports and macros, and one
// ZooKeeper that they share. Its methods are safe for concurrent use.
type Cluster struct {
	// Name is the cluster's name in the servers' remote_servers.
	Name string
	// ZK is the ZooKeeper server.
	ZK *zktest.Server
	// ZKProxy stands between the replicas and ZK: they reach ZooKeeper
	// through it, for tests that break a connection at a chosen request.
	ZKProxy *ZKProxy
	// Replicas are the servers, in remote_servers' order.
	Replicas []*Server
}

// StartCluster starts ZooKeeper and n clickhouse-servers forming one
// shard of n replicas named ClusterName, and waits until every replica
// answers queries and reaches ZooKeeper. Close stops them all and removes
// their directories.
//
// Each replica's configuration has: the native port; an interserver HTTP
// port on 127.0.0.1, which replicas fetch parts from; the macros {shard}
// (ShardMacro) and {replica} ("r1", "r2", ...); remote_servers naming the
// cluster, with internal_replication on (a Distributed table writes each
// row to one replica and replication copies it); ZooKeeper; and the
// distributed DDL queue (for ON CLUSTER statements). The replicas reach
// ZooKeeper through a [ZKProxy], which passes everything on until armed.
func StartCluster(n int) (*Cluster, error) {
	if n < 1 {
		return nil, errors.New("chtest: a cluster needs a replica at least")
	}
	bin, err := Binary()
	if err != nil {
		return nil, err
	}
	zk, err := zktest.Start()
	if err != nil {
		return nil, err
	}
	proxy, err := StartZKProxy(zk.Addr)
	if err != nil {
		zk.Close()
		return nil, err
	}
	var last error
	for try := 0; try < 3; try++ {
		c, err := startReplicas(bin, zk, proxy, n)
		if err == nil {
			return c, nil
		}
		last = err
		if !strings.Contains(err.Error(), "Address already in use") {
			break
		}
	}
	proxy.Close()
	zk.Close()
	return nil, last
}

// startReplicas starts n replicas on free ports.
func startReplicas(bin string, zk *zktest.Server, proxy *ZKProxy, n int) (*Cluster, error) {
	c := &Cluster{Name: ClusterName, ZK: zk, ZKProxy: proxy}
	ports := make([]int, 2*n)
	for i := range ports {
		p, err := testsrv.FreePort("chtest")
		if err != nil {
			return nil, err
		}
		ports[i] = p
	}
	var shard strings.Builder
	for i := 0; i < n; i++ {
		fmt.Fprintf(&shard, "                <replica><host>127.0.0.1</host><port>%d</port></replica>\n", ports[2*i])
	}
	closeAll := func() {
		for _, r := range c.Replicas {
			r.Close()
		}
	}
	for i := 0; i < n; i++ {
		dir, err := newDir()
		if err != nil {
			closeAll()
			return nil, err
		}
		s := newServer(net.JoinHostPort("127.0.0.1", strconv.Itoa(ports[2*i])), dir, bin)
		s.Replica = "r" + strconv.Itoa(i+1)
		c.Replicas = append(c.Replicas, s)
		extra := fmt.Sprintf(`    <interserver_http_host>127.0.0.1</interserver_http_host>
    <interserver_http_port>%[1]d</interserver_http_port>
    <macros>
        <shard>%[2]s</shard>
        <replica>%[3]s</replica>
    </macros>
    <remote_servers>
        <%[4]s>
            <shard>
                <internal_replication>true</internal_replication>
%[5]s            </shard>
        </%[4]s>
    </remote_servers>
    <zookeeper>
        <node><host>%[6]s</host><port>%[7]d</port></node>
        <session_timeout_ms>30000</session_timeout_ms>
    </zookeeper>
    <distributed_ddl>
        <path>/clickhouse/task_queue/ddl</path>
    </distributed_ddl>
`, ports[2*i+1], ShardMacro, s.Replica, ClusterName, shard.String(), proxy.Host, proxy.Port)
		if err := s.writeConfig(ports[2*i], extra); err != nil {
			closeAll()
			return nil, err
		}
		if err := s.Start(); err != nil {
			closeAll()
			return nil, err
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), StartTimeout)
	defer cancel()
	if err := c.WaitZooKeeper(ctx); err != nil {
		closeAll()
		return nil, err
	}
	return c, nil
}

// Addrs returns the replicas' native addresses, in order.
func (c *Cluster) Addrs() []string {
	out := make([]string, len(c.Replicas))
	for i, r := range c.Replicas {
		out[i] = r.Addr
	}
	return out
}

// WaitZooKeeper waits until every running replica reads ZooKeeper (after
// a start, or after ZooKeeper was stopped and started), or ctx ends.
func (c *Cluster) WaitZooKeeper(ctx context.Context) error {
	for _, r := range c.Replicas {
		if !r.Running() {
			continue
		}
		for delay := 20 * time.Millisecond; ; delay = min(2*delay, 500*time.Millisecond) {
			err := r.query(ctx, "SELECT count() FROM system.zookeeper WHERE path = '/'")
			if err == nil {
				break
			}
			select {
			case <-ctx.Done():
				return fmt.Errorf("chtest: replica %s does not reach ZooKeeper at %s: %v\n%s", r.Replica, c.ZK.Addr, err, r.errLogTail())
			case <-time.After(delay):
			}
		}
	}
	return nil
}

// Close stops the replicas and ZooKeeper and removes their directories.
func (c *Cluster) Close() error {
	var errs []error
	for _, r := range c.Replicas {
		errs = append(errs, r.Close())
	}
	errs = append(errs, c.ZKProxy.Close(), c.ZK.Close())
	return errors.Join(errs...)
}

// query runs a statement that returns one number, and discards it.
func (s *Server) query(ctx context.Context, sql string) error {
	conn, err := openConn(s.Addr)
	if err != nil {
		return err
	}
	defer conn.Close()
	var n uint64
	return conn.QueryRow(ctx, sql).Scan(&n)
}

// ClusterBinaries returns an error saying how to install what a cluster
// needs when clickhouse-server, Java or ZooKeeper is missing.
func ClusterBinaries() error {
	if _, err := Binary(); err != nil {
		return err
	}
	_, _, err := zktest.Binary()
	return err
}

// The cluster SharedCluster starts for the test package, and why it did
// not start.
var shared struct {
	mu      sync.Mutex
	cluster *Cluster
	err     error
}

// SharedCluster returns a two-replica cluster for the test package,
// started by the first call and stopped by [Main] after the package's
// tests. When clickhouse-server, Java or ZooKeeper is missing, it skips t
// (or fails it when CI is "true"); when the cluster does not start, it
// fails t, and every later caller.
//
// Tests that stop a replica or ZooKeeper must start it again (and wait
// with WaitZooKeeper) before they end, and should not run in parallel
// with the package's other cluster tests.
func SharedCluster(t testing.TB) *Cluster {
	t.Helper()
	if err := ClusterBinaries(); err != nil {
		if InCI() {
			t.Fatalf("%v (CI=true, so a missing server is an error)", err)
		}
		t.Skip(err)
	}
	shared.mu.Lock()
	defer shared.mu.Unlock()
	if shared.cluster == nil && shared.err == nil {
		shared.cluster, shared.err = StartCluster(2)
	}
	if shared.err != nil {
		t.Fatalf("chtest: starting the shared cluster: %v", shared.err)
	}
	return shared.cluster
}

// closeShared stops the cluster SharedCluster started, if any.
func closeShared() {
	shared.mu.Lock()
	defer shared.mu.Unlock()
	if shared.cluster != nil {
		if err := shared.cluster.Close(); err != nil {
			fmt.Fprintf(os.Stderr, "chtest: closing the shared cluster: %v\n", err)
		}
		shared.cluster = nil
	}
}
