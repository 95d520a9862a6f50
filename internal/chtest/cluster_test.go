package chtest_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/apipool-ng/apipool/internal/chtest"
)

// TestClusterReplicates creates a replicated table on every replica of the
// shared cluster with ON CLUSTER, inserts into one replica and reads the
// rows from the other, and checks that an identical block inserted twice
// is kept once.
func TestClusterReplicates(t *testing.T) {
	c := chtest.SharedCluster(t)
	if len(c.Replicas) != 2 {
		t.Fatalf("%d replicas, want 2", len(c.Replicas))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	r1, r2 := c.Replicas[0].Conn(t), c.Replicas[1].Conn(t)
	ddl := fmt.Sprintf("CREATE TABLE default.rep ON CLUSTER %s (n UInt64) "+
		"ENGINE = ReplicatedMergeTree('/clickhouse/tables/{shard}/default.rep', '{replica}') ORDER BY n", c.Name)
	if err := r1.Exec(ctx, ddl); err != nil {
		t.Fatalf("%s: %v", ddl, err)
	}
	for range 2 {
		if err := r1.Exec(ctx, "INSERT INTO default.rep SELECT number FROM system.numbers LIMIT 3"); err != nil {
			t.Fatal(err)
		}
	}
	if err := r2.Exec(ctx, "SYSTEM SYNC REPLICA default.rep"); err != nil {
		t.Fatal(err)
	}
	var n uint64
	if err := r2.QueryRow(ctx, "SELECT count() FROM default.rep").Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != 3 {
		t.Fatalf("replica r2 holds %d rows, want 3 (inserted twice, identical, into r1)", n)
	}
	var macro string
	if err := r2.QueryRow(ctx, "SELECT substitution FROM system.macros WHERE macro = 'replica'").Scan(&macro); err != nil {
		t.Fatal(err)
	}
	if macro != c.Replicas[1].Replica || macro != "r2" {
		t.Fatalf("r2's {replica} macro = %q", macro)
	}
}
