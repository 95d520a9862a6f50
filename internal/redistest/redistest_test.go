package redistest_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/apipool-ng/apipool/internal/redistest"
	"github.com/redis/go-redis/v9"
)

func TestMain(m *testing.M) { redistest.Main(m) }

func TestSharedAnswers(t *testing.T) {
	srv := redistest.Shared(t)
	c := srv.Client(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := c.Set(ctx, "k", "v", 0).Err(); err != nil {
		t.Fatal(err)
	}
	if v, err := c.Get(ctx, "k").Result(); err != nil || v != "v" {
		t.Fatalf("GET: %q, %v", v, err)
	}
}

// TestStopStartKeepsPort: a stopped server refuses connections at once;
// started again, it answers on the same address, with an empty data set.
func TestStopStartKeepsPort(t *testing.T) {
	srv := redistest.StartPrivate(t)
	c := srv.Client(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := c.Set(ctx, "k", "v", 0).Err(); err != nil {
		t.Fatal(err)
	}
	addr := srv.Addr
	if err := srv.Stop(); err != nil {
		t.Fatal(err)
	}
	if srv.Running() {
		t.Error("running after Stop")
	}
	start := time.Now()
	if err := c.Ping(ctx).Err(); err == nil {
		t.Error("PING answered with the server stopped")
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("PING took %v to fail", d)
	}
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	if srv.Addr != addr {
		t.Errorf("address changed from %s to %s", addr, srv.Addr)
	}
	if err := c.Ping(ctx).Err(); err != nil {
		t.Fatalf("PING after Start: %v", err)
	}
	if n, err := c.Exists(ctx, "k").Result(); err != nil || n != 0 {
		t.Errorf("data kept across a restart: %d, %v", n, err)
	}
	// Kill, like a crash, then start again.
	if err := srv.Kill(); err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	if err := c.Ping(ctx).Err(); err != nil {
		t.Fatalf("PING after Kill and Start: %v", err)
	}
}

// TestClusterEnforcesSlots: the one-node cluster serves a Cluster client
// and refuses a command whose keys are in different slots, as a Cluster
// does.
func TestClusterEnforcesSlots(t *testing.T) {
	srv := redistest.StartPrivateCluster(t)
	c := redis.NewClusterClient(srv.ClusterOptions())
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := c.MSet(ctx, "{t}a", 1, "{t}b", 2).Err(); err != nil {
		t.Fatalf("same slot: %v", err)
	}
	plain := redis.NewClient(srv.Options())
	defer plain.Close()
	if err := plain.MSet(ctx, "a", 1, "b", 2).Err(); err == nil || !strings.Contains(err.Error(), "CROSSSLOT") {
		t.Fatalf("keys in two slots: %v, want CROSSSLOT", err)
	}
	// Stopped and started, it keeps its slots (nodes.conf) and is up again.
	if err := srv.Stop(); err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	if err := c.Set(ctx, "{t}a", 3, 0).Err(); err != nil {
		t.Fatalf("after restart: %v", err)
	}
}
