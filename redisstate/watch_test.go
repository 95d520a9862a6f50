package redisstate_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/apipool-ng/apipool/internal/fakeclock"
	"github.com/apipool-ng/apipool/internal/redistest"
	"github.com/apipool-ng/apipool/redisstate"
	"github.com/apipool-ng/apipool/sharedstate"
)

func changeString(c sharedstate.Change) string {
	switch c.Kind {
	case sharedstate.Cooldown:
		return fmt.Sprintf("%s cooldown %d", c.KeyID, c.Until.UnixMilli())
	case sharedstate.Disable:
		var at int64
		if !c.At.IsZero() {
			at = c.At.UnixMilli()
		}
		return fmt.Sprintf("%s disable %q %d", c.KeyID, c.Reason, at)
	}
	return c.KeyID + " " + c.Kind.String()
}

func changesString(cs []sharedstate.Change) string {
	s := make([]string, len(cs))
	for i, c := range cs {
		s[i] = changeString(c)
	}
	return strings.Join(s, "; ")
}

// TestWatchStateThenChanges: a replica's Watch applies the full state
// first, then each change published by any replica, itself included.
func TestWatchStateThenChanges(t *testing.T) {
	srv := redistest.Shared(t)
	prefix := testPrefix(t)
	a, b, c := newReplica(t, srv, prefix), newReplica(t, srv, prefix), newReplica(t, srv, prefix)
	ctx := ctxT(t)
	soon := time.Now().Add(time.Hour).Truncate(time.Millisecond)
	at := time.UnixMilli(1_767_225_600_000)
	for _, ch := range []sharedstate.Change{
		{KeyID: "k2", Kind: sharedstate.Cooldown, Until: soon},
		{KeyID: "k1", Kind: sharedstate.Disable, Reason: "revoked", At: at},
		{KeyID: "k1", Kind: sharedstate.Cooldown, Until: soon.Add(time.Second)},
		{KeyID: "k3", Kind: sharedstate.Cooldown, Until: time.Now().Add(-time.Minute)}, // ended: not applied
	} {
		if err := a.Publish(ctx, ch); err != nil {
			t.Fatal(err)
		}
	}

	w := startWatch(t, b)
	state := w.state(t)
	want := fmt.Sprintf(`k1 cooldown %d; k1 disable "revoked" %d; k2 cooldown %d`,
		soon.Add(time.Second).UnixMilli(), at.UnixMilli(), soon.UnixMilli())
	if got := changesString(state); got != want {
		t.Errorf("state:\n got %s\nwant %s", got, want)
	}

	// Changes from another replica, from the watching one, and one that
	// changes nothing (an earlier cooldown), which is not published.
	for _, p := range []struct {
		r  replica
		ch sharedstate.Change
	}{
		{c, sharedstate.Change{KeyID: "k2", Kind: sharedstate.Cooldown, Until: soon.Add(time.Minute), At: at}},
		{b, sharedstate.Change{KeyID: "k4", Kind: sharedstate.Disable, Reason: "quota gone", At: at}},
		{c, sharedstate.Change{KeyID: "k2", Kind: sharedstate.Cooldown, Until: soon}},
		{a, sharedstate.Change{KeyID: "k1", Kind: sharedstate.Enable, At: at}},
	} {
		if err := p.r.Publish(ctx, p.ch); err != nil {
			t.Fatal(err)
		}
	}
	got := w.sync(t, c.Store)
	want = fmt.Sprintf(`k2 cooldown %d; k4 disable "quota gone" %d; k1 enable`, soon.Add(time.Minute).UnixMilli(), at.UnixMilli())
	if changesString(got) != want {
		t.Errorf("changes:\n got %s\nwant %s", changesString(got), want)
	}
	if !got[2].At.Equal(at) || !got[0].At.Equal(at) {
		t.Errorf("change times %v, %v, want %v", got[0].At, got[2].At, at)
	}
	if err := w.stop(); !errors.Is(err, context.Canceled) {
		t.Errorf("Watch returned %v after cancel, want context.Canceled", err)
	}
	if st := b.Stats(); st.Errors != 0 || st.Malformed != 0 {
		t.Errorf("stats %+v", st)
	}
}

// TestWatchReportsMissedEnable: a key enabled while a replica was not
// watching is reported enabled when it watches again.
func TestWatchReportsMissedEnable(t *testing.T) {
	srv := redistest.Shared(t)
	prefix := testPrefix(t)
	a, b := newReplica(t, srv, prefix), newReplica(t, srv, prefix)
	ctx := ctxT(t)
	for _, ch := range []sharedstate.Change{
		{KeyID: "k1", Kind: sharedstate.Disable, Reason: "revoked"},
		{KeyID: "k2", Kind: sharedstate.Cooldown, Until: time.Now().Add(time.Hour)},
		{KeyID: "k3", Kind: sharedstate.Disable, Reason: "revoked"},
	} {
		if err := a.Publish(ctx, ch); err != nil {
			t.Fatal(err)
		}
	}
	w := startWatch(t, b)
	if st := w.state(t); len(st) != 3 {
		t.Fatalf("state: %s", changesString(st))
	}
	// k5 is reported by a message rather than in the state.
	if err := a.Publish(ctx, sharedstate.Change{KeyID: "k5", Kind: sharedstate.Disable}); err != nil {
		t.Fatal(err)
	}
	w.sync(t, a.Store)
	w.stop()

	for _, id := range []string{"k1", "k2", "k5"} {
		if err := a.Publish(ctx, sharedstate.Change{KeyID: id, Kind: sharedstate.Enable}); err != nil {
			t.Fatal(err)
		}
	}
	w = startWatch(t, b)
	got := w.state(t)
	if s := changesString(got); !strings.HasPrefix(s, `k1 enable; k2 enable; k3 disable "revoked" `) ||
		!strings.HasSuffix(s, "; k5 enable") {
		t.Errorf("state after a gap: %s", s)
	}
	if extra := w.sync(t, a.Store); len(extra) != 0 {
		t.Errorf("more changes: %s", changesString(extra))
	}
}

// TestWatchNoEnableAfterDataLoss: when Redis lost its data (here: the keys
// deleted), the keys a replica knew disabled are not reported enabled.
func TestWatchNoEnableAfterDataLoss(t *testing.T) {
	srv := redistest.Shared(t)
	prefix := testPrefix(t)
	a, b := newReplica(t, srv, prefix), newReplica(t, srv, prefix)
	ctx := ctxT(t)
	if err := a.Publish(ctx, sharedstate.Change{KeyID: "k1", Kind: sharedstate.Disable, Reason: "revoked"}); err != nil {
		t.Fatal(err)
	}
	w := startWatch(t, b)
	if st := w.state(t); len(st) != 1 {
		t.Fatalf("state: %s", changesString(st))
	}
	w.stop()
	tag := "{" + prefix + "}:"
	if err := a.rdb.Del(ctx, tag+"epoch", tag+"disabled", tag+"cooldown").Err(); err != nil {
		t.Fatal(err)
	}
	w = startWatch(t, b)
	if got := w.state(t); len(got) != 0 {
		t.Errorf("after data loss: %s", changesString(got))
	}
	if !w.lost {
		t.Error("the state after data loss does not say so (Synced without Lost)")
	}
	// Said once: the next Watch's state is complete again.
	w.stop()
	if w = startWatch(t, b); len(w.state(t)) != 0 || w.lost {
		t.Errorf("second Watch after data loss: lost %v", w.lost)
	}
}

// TestWatchLostAfterPublish: a Store that published a change, and never
// watched, learns of a data loss since from the epoch Publish read: its
// first Watch's Synced says the state was lost. Without a loss, it does
// not.
func TestWatchLostAfterPublish(t *testing.T) {
	srv := redistest.Shared(t)
	prefix := testPrefix(t)
	tag := "{" + prefix + "}:"
	ctx := ctxT(t)
	for _, loss := range []bool{false, true} {
		a := newReplica(t, srv, prefix)
		if err := a.Publish(ctx, sharedstate.Change{KeyID: "k1", Kind: sharedstate.Disable, Reason: "revoked"}); err != nil {
			t.Fatal(err)
		}
		if loss {
			if err := a.rdb.Del(ctx, tag+"epoch", tag+"disabled", tag+"cooldown").Err(); err != nil {
				t.Fatal(err)
			}
		}
		w := startWatch(t, a)
		st := w.state(t)
		if w.lost != loss {
			t.Errorf("data lost %v: Synced says Lost %v (state %s)", loss, w.lost, changesString(st))
		}
		w.stop()
		if err := a.Publish(ctx, sharedstate.Change{KeyID: "k1", Kind: sharedstate.Enable}); err != nil {
			t.Fatal(err)
		}
	}
}

// TestWatchIgnoresMalformed: messages and entries that cannot be decoded
// are skipped and counted; Watch goes on.
func TestWatchIgnoresMalformed(t *testing.T) {
	srv := redistest.Shared(t)
	a := newReplica(t, srv, testPrefix(t))
	ctx := ctxT(t)
	tag := "{" + a.Prefix() + "}:"
	// Entries: a deadline that is no number, one disabled entry that is no
	// JSON (the key is disabled all the same, reason unknown).
	a.rdb.HSet(ctx, tag+"cooldown", "bad", "soon", "neg", "-5")
	a.rdb.HSet(ctx, tag+"disabled", "k9", "{not json")
	w := startWatch(t, a)
	if got := changesString(w.state(t)); got != `k9 disable "" 0` {
		t.Errorf("undecodable disabled entry applied as %s", got)
	}
	bad := []string{
		"", "{", "null", "[]", `"text"`, "\xff\xfe",
		`{"kind":"cooldown","key":"k"}`,
		`{"kind":"cooldown","key":"k","until":-1}`,
		`{"kind":"cooldown","key":"k","until":"soon"}`,
		`{"kind":"cooldown","key":"k","until":99999999999999999}`,
		`{"kind":"disable","key":""}`,
		`{"kind":"disable"}`,
		`{"kind":"melt","key":"k"}`,
		`{"kind":"enable","key":"k","at":-3}`,
		`{"kind":"enable","key":` + `"` + strings.Repeat("k", 2000) + `"}`,
		`{"kind":"enable","key":"k"` + strings.Repeat(" ", 70<<10) + `}`,
	}
	for _, p := range bad {
		if err := a.rdb.Publish(ctx, a.Channel(), p).Err(); err != nil {
			t.Fatal(err)
		}
	}
	a.rdb.Publish(ctx, a.Channel(), `{"kind":"disable","key":"k1","reason":"ok","extra":[1,2]}`)
	got := w.sync(t, a.Store)
	if changesString(got) != `k1 disable "ok" 0` {
		t.Errorf("applied %s", changesString(got))
	}
	if st := a.Stats(); st.Malformed != uint64(len(bad))+3 || st.Errors != 0 {
		t.Errorf("stats %+v, want %d malformed", st, len(bad)+3)
	}
}

// TestWatchEndsWithContext: Watch returns ctx's error promptly, also when
// ctx is done before it starts, and does not count it as a failure.
func TestWatchEndsWithContext(t *testing.T) {
	srv := redistest.Shared(t)
	a := newReplica(t, srv, testPrefix(t))
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := a.Watch(ctx, func(sharedstate.Change) {}); !errors.Is(err, context.Canceled) {
		t.Errorf("done ctx: %v", err)
	}
	ctx, cancel = context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	start := time.Now()
	if err := a.Watch(ctx, func(sharedstate.Change) {}); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("deadline: %v", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("Watch took %v to see its deadline", d)
	}
	if st := a.Stats(); st.Errors != 0 {
		t.Errorf("stats %+v", st)
	}
}

// TestWatchReadsTheClock: a change published without a time is stamped
// with the store's clock, and Watch measures cooldown deadlines against
// its clock, not the system's.
func TestWatchReadsTheClock(t *testing.T) {
	srv := redistest.Shared(t)
	prefix := testPrefix(t)
	at := time.UnixMilli(1_767_225_600_000) // long past
	clk := fakeclock.New(at)
	a := newReplica(t, srv, prefix, redisstate.WithClock(clk))
	b := newReplica(t, srv, prefix, redisstate.WithClock(clk))
	c := newReplica(t, srv, prefix) // the system clock
	ctx := ctxT(t)
	for _, ch := range []sharedstate.Change{
		{KeyID: "k1", Kind: sharedstate.Disable, Reason: "revoked"},
		{KeyID: "k2", Kind: sharedstate.Cooldown, Until: at.Add(time.Hour)},
	} {
		if err := a.Publish(ctx, ch); err != nil {
			t.Fatal(err)
		}
	}
	want := fmt.Sprintf(`k1 disable "revoked" %d; k2 cooldown %d`, at.UnixMilli(), at.Add(time.Hour).UnixMilli())
	if got := changesString(startWatch(t, b).state(t)); got != want {
		t.Errorf("state on the store's clock:\n got %s\nwant %s", got, want)
	}
	// On the system clock, the cooldown ended long ago.
	want = fmt.Sprintf(`k1 disable "revoked" %d`, at.UnixMilli())
	if got := changesString(startWatch(t, c).state(t)); got != want {
		t.Errorf("state on the system clock:\n got %s\nwant %s", got, want)
	}
}
