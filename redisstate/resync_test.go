package redisstate_test

import (
	"testing"

	"github.com/apipool-ng/apipool"
	"github.com/apipool-ng/apipool/internal/redistest"
	"github.com/apipool-ng/apipool/internal/sharedtest"
	"github.com/apipool-ng/apipool/sharedstate"
)

// TestPoolsReplayAfterEnableMeanwhile runs two pools on one Redis, a's
// through a Tap that cuts its Watch at the test's command:
//
//  1. a disables k0 while its Watch is down (Redis acknowledges the
//     Publish), b enables k0, a watches again: once a has synced, k0 is
//     in use in a, without waiting for a retry or a probe;
//  2. a disables k1 (Redis acknowledges it), Redis loses its data while a is not
//     watching, a watches again: k1 stays disabled in a (a key missing
//     from a state that was lost is not taken as enabled).
func TestPoolsReplayAfterEnableMeanwhile(t *testing.T) {
	srv := redistest.Shared(t)
	prefix := testPrefix(t)
	ctx := ctxT(t)
	ra, rb := newReplica(t, srv, prefix), newReplica(t, srv, prefix)
	ta, tb := sharedtest.New(ra.Store), sharedtest.New(rb.Store)
	ks := []apipool.Key{{ID: "k0", Secret: "s0"}, {ID: "k1", Secret: "s1"}, {ID: "k2", Secret: "s2"}}
	var pools []*apipool.Transport
	for _, tp := range []*sharedtest.Tap{ta, tb} {
		p, err := apipool.New(ks, apipool.WithSharedState(tp))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { p.Close(ctx) })
		pools = append(pools, p)
		if !tp.WaitSyncs(ctx, 1) {
			t.Fatal("a pool did not sync")
		}
	}
	a, b := pools[0], pools[1]
	disabled := tag(prefix) + "disabled"
	resync := func(meanwhile func()) {
		t.Helper()
		ta.Cut()
		meanwhile()
		n := ta.Syncs()
		ta.Resume()
		if !ta.WaitSyncs(ctx, n+1) {
			t.Fatal("a did not sync again")
		}
	}

	resync(func() {
		n := len(ta.Published())
		if err := a.Disable("k0", "by hand"); err != nil {
			t.Fatal(err)
		}
		// One Publish at a time: once the next has begun, Redis's answer
		// to the disable is in.
		if err := a.Enable("k2"); err != nil {
			t.Fatal(err)
		}
		if !ta.WaitPublished(ctx, n+2) {
			t.Fatal("a did not publish")
		}
		if ok, err := ra.rdb.HExists(ctx, disabled, "k0").Result(); err != nil || !ok {
			t.Fatalf("k0 in Redis's disabled keys: %v, %v", ok, err)
		}
		if !tb.WaitApplied(ctx, func(c sharedstate.Change) bool { return c.KeyID == "k0" && c.Kind == sharedstate.Disable }) {
			t.Fatal("b did not hear of the disable")
		}
		if err := b.Enable("k0"); err != nil {
			t.Fatal(err)
		}
		poll(t, "k0 enabled in Redis", func() bool { ok, err := ra.rdb.HExists(ctx, disabled, "k0").Result(); return err == nil && !ok })
		if !keyState(a, "k0").Disabled {
			t.Fatal("a heard of the enable while not watching")
		}
	})
	if s := keyState(a, "k0"); s.Disabled || s.State != apipool.KeyActive {
		t.Fatalf("k0 in a after it synced: %+v, want in use", s)
	}

	n := len(ta.Published())
	if err := a.Disable("k1", "by hand"); err != nil {
		t.Fatal(err)
	}
	if err := a.Enable("k2"); err != nil {
		t.Fatal(err)
	}
	if !ta.WaitPublished(ctx, n+2) {
		t.Fatal("a did not publish")
	}
	resync(func() {
		if err := ra.rdb.Del(ctx, tag(prefix)+"epoch", disabled, tag(prefix)+"cooldown").Err(); err != nil {
			t.Fatal(err)
		}
	})
	if !keyState(a, "k1").Disabled {
		t.Fatal("k1 enabled in a by the state read after Redis lost its data")
	}
}

func tag(prefix string) string { return "{" + prefix + "}:" }
