package apipool_test

import (
	"context"
	"testing"
	"time"

	"github.com/apipool-ng/apipool"
	"github.com/apipool-ng/apipool/internal/sharedtest"
	"github.com/apipool-ng/apipool/sharedstate"
)

// holds reports whether the store holds key id disabled, or cooling down.
func (m *memShared) holds(id string) (disabled, cooling bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	_, disabled = m.disabled[id]
	_, cooling = m.cool[id]
	return disabled, cooling
}

// resyncPools returns two pools a and b of keys(4) sharing store, each
// through a Tap of its own, on clk, once both have synced.
func resyncPools(t *testing.T, store *memShared, clk clockAdapter, up *upstream) (a, b *apipool.Transport, ta, tb *sharedtest.Tap) {
	t.Helper()
	ta, tb = sharedtest.New(store), sharedtest.New(store)
	a = mustNew(t, keys(4), apipool.WithBase(up), apipool.WithClock(clk), apipool.WithSharedState(ta), apipool.WithStrategy(apipool.RoundRobin))
	b = mustNew(t, keys(4), apipool.WithBase(up), apipool.WithClock(clk), apipool.WithSharedState(tb))
	waitSyncs(t, ta, 1)
	waitSyncs(t, tb, 1)
	return a, b, ta, tb
}

func waitSyncs(t *testing.T, tp *sharedtest.Tap, n int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if !tp.WaitSyncs(ctx, n) {
		t.Fatalf("the pool did not sync %d times within 20s (%d)", n, tp.Syncs())
	}
}

func waitApplied(t *testing.T, tp *sharedtest.Tap, id string, kind sharedstate.Kind) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if !tp.WaitApplied(ctx, func(c sharedstate.Change) bool { return c.KeyID == id && c.Kind == kind }) {
		t.Fatalf("the pool did not apply %s of %s within 20s", kind, id)
	}
}

func waitPublished(t *testing.T, tp *sharedtest.Tap, n int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if !tp.WaitPublished(ctx, n) {
		t.Fatalf("the pool did not begin %d Publish calls within 20s", n)
	}
}

// resync cuts tp's Watch, runs meanwhile, and lets the pool watch again,
// returning once its new Watch has delivered the state.
func resync(t *testing.T, tp *sharedtest.Tap, meanwhile func()) {
	t.Helper()
	tp.Cut()
	meanwhile()
	n := tp.Syncs()
	tp.Resume()
	waitSyncs(t, tp, n+1)
}

// A replica that held keys disabled or cooling by the shared state, and
// was not watching when another replica enabled them, ends them once its
// Watch is back and the state it reads lists them no more: without
// waiting for the disable's retry time or the cooldown's end.
func TestSharedReplayEndsWhatWasEnabledMeanwhile(t *testing.T) {
	store := newMemShared()
	up := &upstream{}
	clk := newClock()
	a, b, ta, _ := resyncPools(t, store, clk, up)
	// Through a: k0 ok; k1 429 -> k2 401 -> k3 ok. Then k0 by hand.
	for range 2 {
		mustDo(t, a)
	}
	if err := a.Disable("k0", "by hand"); err != nil {
		t.Fatal(err)
	}
	// a's Watch hears its own changes back: the store holds them.
	waitApplied(t, ta, "k1", sharedstate.Cooldown)
	waitApplied(t, ta, "k2", sharedstate.Disable)
	waitApplied(t, ta, "k0", sharedstate.Disable)
	resync(t, ta, func() {
		for _, id := range []string{"k0", "k1", "k2"} {
			if err := b.Enable(id); err != nil {
				t.Fatal(err)
			}
			eventually(t, id+" enabled in the store", func() bool { d, c := store.holds(id); return !d && !c })
		}
		if !stateOf(a, "k0").Disabled || !stateOf(a, "k2").Disabled || stateOf(a, "k1").CoolingUntil.IsZero() {
			t.Fatal("the pool that was not watching heard of the enables")
		}
	})
	for _, id := range []string{"k0", "k1", "k2"} {
		if s := stateOf(a, id); s.State != apipool.KeyActive || s.Disabled || !s.CoolingUntil.IsZero() {
			t.Errorf("%s after the replay: %+v, want active", id, s)
		}
	}
}

// The case as it was reported: the replica disables a key while its Watch
// is down (or before it starts), so that the store's acknowledgement of
// the Publish alone says the store holds it; another replica enables the
// key; the replica's next Watch ends the disable.
func TestSharedReplayEndsAcknowledgedDisable(t *testing.T) {
	store := newMemShared()
	clk := newClock()
	a, b, ta, _ := resyncPools(t, store, clk, &upstream{})
	resync(t, ta, func() {
		n := len(ta.Published())
		if err := a.Disable("k0", "by hand"); err != nil {
			t.Fatal(err)
		}
		// One Publish at a time: once the next has begun, the store's
		// answer to the disable is in.
		if err := a.Enable("k3"); err != nil {
			t.Fatal(err)
		}
		waitPublished(t, ta, n+2)
		if d, _ := store.holds("k0"); !d {
			t.Fatal("the disable did not reach the store")
		}
		if err := b.Enable("k0"); err != nil {
			t.Fatal(err)
		}
		eventually(t, "k0 enabled in the store", func() bool { d, _ := store.holds("k0"); return !d })
	})
	if s := stateOf(a, "k0"); s.Disabled {
		t.Fatalf("k0 after the replay: %+v, want enabled", s)
	}
}

// A disable made here that the store has not acknowledged (Publish
// failing) stays through a replay that does not list it; it reaches the
// other replicas once Publish works again.
func TestSharedReplayKeepsUnpublishedDisable(t *testing.T) {
	store := newMemShared()
	clk := newClock()
	a, b, ta, _ := resyncPools(t, store, clk, &upstream{})
	store.failPublish.Store(true)
	n := len(ta.Published())
	if err := a.Disable("k0", "by hand"); err != nil {
		t.Fatal(err)
	}
	waitPublished(t, ta, n+1) // and failed
	resync(t, ta, func() {})
	if s := stateOf(a, "k0"); !s.Disabled || s.DisabledReason != "by hand" {
		t.Fatalf("k0 after a replay without it: %+v, want still disabled", s)
	}
	store.failPublish.Store(false)
	eventually(t, "the disable to reach the other pool", func() bool { return stateOf(b, "k0").Disabled })
	if !stateOf(a, "k0").Disabled {
		t.Fatal("k0 enabled in the pool that disabled it")
	}
}

// When the store says it lost its state (Change.Lost), a key it no longer
// lists is not taken as enabled: the replica keeps its disable, in that
// replay and in the next ones.
func TestSharedReplayAfterStoreLostState(t *testing.T) {
	store := newMemShared()
	clk := newClock()
	a, _, ta, _ := resyncPools(t, store, clk, &upstream{})
	if err := a.Disable("k0", "by hand"); err != nil {
		t.Fatal(err)
	}
	waitApplied(t, ta, "k0", sharedstate.Disable)
	resync(t, ta, func() {
		store.mu.Lock()
		clear(store.disabled)
		clear(store.cool)
		store.mu.Unlock()
		store.lost.Store(true)
	})
	if !stateOf(a, "k0").Disabled {
		t.Fatal("k0 enabled by a replay after the store lost its state")
	}
	resync(t, ta, func() {})
	if !stateOf(a, "k0").Disabled {
		t.Fatal("k0 enabled by the replay after the one that said the state was lost")
	}
}
