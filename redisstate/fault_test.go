package redisstate_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/apipool-ng/apipool/internal/redistest"
	"github.com/apipool-ng/apipool/redisstate"
	"github.com/apipool-ng/apipool/sharedstate"
)

// faultBound is how long a call may take to fail with Redis down: the
// client's timeouts are a second (see redistest.Server.Options), and a
// refused connection fails at once.
const faultBound = 2 * time.Second

// TestRedisDown stops Redis under a store: Watch returns an error,
// Publish and Take fail within a bounded time and are counted; when Redis
// is back, a new Watch and Take work again.
func TestRedisDown(t *testing.T) {
	srv := redistest.StartPrivate(t)
	prefix := testPrefix(t)
	a, b := newReplica(t, srv, prefix), newReplica(t, srv, prefix)
	ctx := ctxT(t)
	if err := a.Publish(ctx, sharedstate.Change{KeyID: "k1", Kind: sharedstate.Disable, Reason: "revoked"}); err != nil {
		t.Fatal(err)
	}
	w := startWatch(t, b)
	if st := w.state(t); len(st) != 1 {
		t.Fatalf("state %s", changesString(st))
	}

	if err := srv.Stop(); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-w.done:
		if err == nil || errors.Is(err, context.Canceled) {
			t.Errorf("Watch returned %v with Redis stopped", err)
		}
		w.done <- err
	case <-time.After(faultBound):
		t.Fatalf("Watch still running %v after Redis stopped", faultBound)
	}
	l := sharedstate.Limits{PerDay: 10, Day: day(t0)}
	for name, call := range map[string]func() error{
		"publish": func() error {
			return a.Publish(ctx, sharedstate.Change{KeyID: "k2", Kind: sharedstate.Cooldown, Until: time.Now().Add(time.Minute)})
		},
		"take": func() error { _, _, err := a.Take(ctx, "k1", l, t0, 1); return err },
		"watch": func() error {
			return a.Watch(ctx, func(c sharedstate.Change) { t.Errorf("applied %+v with Redis down", c) })
		},
	} {
		start := time.Now()
		err := call()
		d := time.Since(start)
		if d > faultBound {
			t.Errorf("%s took %v to fail", name, d)
		}
		t.Logf("%s failed in %v", name, d.Round(time.Millisecond))
		if err == nil || errors.Is(err, redisstate.ErrInvalid) {
			t.Errorf("%s with Redis down: %v", name, err)
		}
	}
	st := a.Stats()
	if st.Errors != 3 || st.LastError == nil || st.LastErrorAt.IsZero() {
		t.Errorf("stats after 3 failures: %+v", st)
	}
	if b.Stats().Errors != 1 {
		t.Errorf("watching replica's stats: %+v", b.Stats())
	}
	t.Logf("last error: %v", st.LastError)

	// A ctx that ends first makes a call fail with ctx's error, uncounted.
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if _, _, err := a.Take(cctx, "k1", l, t0, 1); !errors.Is(err, context.Canceled) {
		t.Errorf("take with a done ctx: %v", err)
	}
	if a.Stats().Errors != 3 {
		t.Errorf("a done ctx counted: %+v", a.Stats())
	}

	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	// Redis kept nothing: the new Watch starts from an empty state, and
	// does not report k1 enabled (the epoch changed).
	w = startWatch(t, b)
	if st := w.state(t); len(st) != 0 {
		t.Errorf("state after restart: %s", changesString(st))
	}
	if g, _, err := a.Take(ctx, "k1", l, t0, 4); err != nil || g != 4 {
		t.Errorf("take after restart: %d, %v", g, err)
	}
	if err := a.Publish(ctx, sharedstate.Change{KeyID: "k1", Kind: sharedstate.Disable, Reason: "again"}); err != nil {
		t.Fatal(err)
	}
	if got := changesString(w.sync(t, a.Store)); got == "" || got[:12] != `k1 disable "` {
		t.Errorf("after restart: %s", got)
	}
}

// TestWatchFindsHungConnection: a connection that stops answering, with no
// error (here: a proxy that stops forwarding), ends Watch after a PING
// goes unanswered.
func TestWatchFindsHungConnection(t *testing.T) {
	srv := redistest.Shared(t)
	p := startProxy(t, srv.Addr)
	opt := srv.Options()
	opt.Addr = p.addr
	opt.ReadTimeout = 5 * time.Second // longer than the check
	rdb := newClient(t, opt)
	s, err := redisstate.New(rdb, redisstate.WithPrefix(testPrefix(t)), redisstate.WithCheckInterval(100*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	applied := make(chan sharedstate.Change, 10)
	go func() {
		done <- s.Watch(context.Background(), func(c sharedstate.Change) { applied <- c })
	}()
	next := func() sharedstate.Change {
		select {
		case c := <-applied:
			return c
		case err := <-done:
			t.Fatalf("Watch returned %v", err)
		case <-time.After(5 * time.Second):
			t.Fatal("nothing applied within 5s")
		}
		return sharedstate.Change{}
	}
	if c := next(); c.Kind != sharedstate.Synced {
		t.Fatalf("applied %+v", c)
	}
	// While the connection works, its PINGs are answered: Watch goes on
	// through several check intervals (the sleep lets them pass; it is
	// not what the test asserts) and applies what comes next.
	time.Sleep(350 * time.Millisecond)
	other := newReplica(t, srv, s.Prefix())
	if err := other.Publish(context.Background(), sharedstate.Change{KeyID: "k", Kind: sharedstate.Enable}); err != nil {
		t.Fatal(err)
	}
	if c := next(); c.KeyID != "k" {
		t.Fatalf("applied %+v", c)
	}
	p.hang()
	select {
	case err := <-done:
		if err == nil {
			t.Error("Watch returned nil")
		}
		t.Logf("Watch: %v", err)
	case <-time.After(2 * time.Second):
		t.Fatal("Watch did not notice a hung connection within 2s")
	}
}
