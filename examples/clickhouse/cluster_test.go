package main

import (
	"bytes"
	"encoding/xml"
	"os"
	"regexp"
	"strings"
	"testing"

	"github.com/apipool-ng/apipool/internal/chtest"
)

// TestClickHouseExampleOnCluster runs the example in cluster mode against
// a private two-replica cluster (internal/chtest, laid out as the configs
// in cluster/) and checks that ClickHouse, read through the Distributed
// table, holds one event per attempt.
func TestClickHouseExampleOnCluster(t *testing.T) {
	if err := chtest.ClusterBinaries(); err != nil {
		if chtest.InCI() {
			t.Fatalf("%v (CI=true, so a missing server is an error)", err)
		}
		t.Skip(err)
	}
	c, err := chtest.StartCluster(2)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	var out bytes.Buffer
	cfg := config{addr: strings.Join(c.Addrs(), ","), cluster: c.Name, database: "apipool_example", requests: 1000, workers: 16}
	if err := run(&out, cfg); err != nil {
		t.Fatalf("run: %v\n%s", err, out.String())
	}
	text := out.String()
	m := regexp.MustCompile(`attempts: the API saw (\d+); ClickHouse holds (\d+) events, the in-memory store (\d+); dropped 0`).FindStringSubmatch(text)
	if m == nil {
		t.Fatalf("no attempts line:\n%s", text)
	}
	if m[1] != m[2] || m[2] != m[3] {
		t.Errorf("the API saw %s attempts, ClickHouse holds %s events, memory %s: want them equal\n%s", m[1], m[2], m[3], text)
	}
	if n := strings.Count(text, "SQL (README:"); n < 3 {
		t.Errorf("%d README queries printed, want them all\n%s", n, text)
	}
}

// replicaConfig is what TestClusterConfigs reads of a replica's config.
type replicaConfig struct {
	TCPPort         int    `xml:"tcp_port"`
	InterserverPort int    `xml:"interserver_http_port"`
	InterserverHost string `xml:"interserver_http_host"`
	Shard           string `xml:"macros>shard"`
	Replica         string `xml:"macros>replica"`
	Replicas        []struct {
		Host string `xml:"host"`
		Port int    `xml:"port"`
	} `xml:"remote_servers>apipool>shard>replica"`
	InternalReplication bool   `xml:"remote_servers>apipool>shard>internal_replication"`
	ZooKeeperPort       int    `xml:"zookeeper>node>port"`
	DDLPath             string `xml:"distributed_ddl>path"`
	Path                string `xml:"path"`
}

// TestClusterConfigs checks that the example cluster's configs fit
// together: each replica names both in remote_servers by their native
// ports, has its own macros, ports and data, and reaches the ZooKeeper
// that zoo.cfg starts.
func TestClusterConfigs(t *testing.T) {
	zoo, err := os.ReadFile("cluster/zoo.cfg")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(zoo), "\nclientPort=2181\n") {
		t.Fatal("zoo.cfg: clientPort is not 2181")
	}
	var rs []replicaConfig
	for _, f := range []string{"cluster/replica1.xml", "cluster/replica2.xml"} {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		var rc replicaConfig
		if err := xml.Unmarshal(b, &rc); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		if rc.ZooKeeperPort != 2181 || rc.Shard != "01" || rc.DDLPath == "" || !rc.InternalReplication || rc.InterserverHost != "127.0.0.1" {
			t.Errorf("%s: %+v", f, rc)
		}
		rs = append(rs, rc)
	}
	if rs[0].Replica == rs[1].Replica || rs[0].TCPPort == rs[1].TCPPort || rs[0].Path == rs[1].Path ||
		rs[0].InterserverPort == rs[1].InterserverPort || rs[0].InterserverPort == 0 {
		t.Errorf("the replicas share a name, port or directory: %+v", rs)
	}
	for i, rc := range rs {
		if len(rc.Replicas) != 2 || rc.Replicas[0].Port != rs[0].TCPPort || rc.Replicas[1].Port != rs[1].TCPPort {
			t.Errorf("replica %d: remote_servers %+v does not name both replicas' native ports", i+1, rc.Replicas)
		}
	}
	if _, err := os.Stat("cluster/users.xml"); err != nil {
		t.Error(err)
	}
}
