package redisstate_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/apipool-ng/apipool/internal/redistest"
	"github.com/apipool-ng/apipool/redisstate"
	"github.com/apipool-ng/apipool/sharedstate"
)

// TestClusterClient runs the store on a Cluster client against a Redis in
// cluster mode, which refuses a script whose keys are in different hash
// slots: every script's keys share the slot of the "{prefix}" tag, and
// pub/sub works through a Cluster client.
func TestClusterClient(t *testing.T) {
	srv := redistest.StartPrivateCluster(t)
	prefix := testPrefix(t)
	newStore := func() *redisstate.Store {
		c := redis.NewClusterClient(srv.ClusterOptions())
		t.Cleanup(func() { c.Close() })
		s, err := redisstate.New(c, redisstate.WithPrefix(prefix))
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	a, b := newStore(), newStore()
	ctx := ctxT(t)
	until := time.Now().Add(time.Hour).Truncate(time.Millisecond)
	for _, c := range []sharedstate.Change{
		{KeyID: "k1", Kind: sharedstate.Cooldown, Until: until},
		{KeyID: "k2", Kind: sharedstate.Disable, Reason: "revoked"},
		{KeyID: "k3", Kind: sharedstate.Disable, Reason: "revoked"},
		{KeyID: "k3", Kind: sharedstate.Enable},
	} {
		if err := a.Publish(ctx, c); err != nil {
			t.Fatalf("publish %v: %v", c.Kind, err)
		}
	}
	plain := redis.NewClient(srv.Options()) // for startWatch's PUBSUB NUMSUB
	t.Cleanup(func() { plain.Close() })
	w := startWatch(t, replica{b, plain})
	st := w.state(t)
	if got, want := changesString(st), fmt.Sprintf(`k1 cooldown %d; k2 disable "revoked" `, until.UnixMilli()); len(st) != 2 || !strings.HasPrefix(got, want) {
		t.Errorf("state: %s", got)
	}
	if err := a.Publish(ctx, sharedstate.Change{KeyID: "k2", Kind: sharedstate.Enable}); err != nil {
		t.Fatal(err)
	}
	if got := changesString(w.sync(t, a)); got != "k2 enable" {
		t.Errorf("changes: %s", got)
	}
	l := sharedstate.Limits{PerSecond: 2, PerMinute: 10, PerDay: 3, Day: day(t0)}
	var granted []int
	for range 3 {
		g, _, err := b.Take(ctx, "k1", l, t0, 2)
		if err != nil {
			t.Fatal(err)
		}
		granted = append(granted, g)
	}
	if !equalInts(granted, []int{2, 0, 0}) {
		t.Errorf("granted %v, want [2 0 0]", granted)
	}
	if g, _, _ := a.Take(ctx, "k1", l, t0.Add(time.Second), 5); g != 1 {
		t.Errorf("after a second: %d, want 1 (the day's last)", g)
	}
}
