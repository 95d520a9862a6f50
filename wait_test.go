package apipool_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/apipool-ng/apipool"
	"github.com/apipool-ng/apipool/status"
)

// A request that waited for a cooling key, and then found none, returns
// the upstream's own rate-limit answer, body intact, rather than an error.
func TestWaitThatFindsNoKeyReturnsTheLastAnswer(t *testing.T) {
	clk := newClock()
	up := newUpstream(bySecret(map[string]reply{"s0": {Status: 429, Header: hdr("Retry-After", "2"), Body: "slow down"}}))
	p := mustNew(t, keys(1), apipool.WithBase(up), apipool.WithClock(clk), apipool.WithMaxWait(5*time.Second))
	ch := goRoundTrip(p, newGet(t, "http://api.test/"))
	waitTimer(t, clk) // the request waits for k0's cooldown
	if err := p.Disable("k0", "revoked by the test"); err != nil {
		t.Fatal(err)
	}
	clk.Advance(2 * time.Second)
	r := await(t, ch, "the waiting request")
	if r.err != nil || r.resp.StatusCode != 429 || r.body != "slow down" {
		t.Fatalf("got %v %q %v; want the 429 answer with its body", r.resp, r.body, r.err)
	}
	if r.resp.Request == nil || r.resp.Request.Header.Get("Authorization") != "" {
		t.Fatalf("resp.Request is not the caller's request")
	}
	for _, b := range up.Bodies() {
		if !b.Closed() {
			t.Fatal("the upstream's body was left open")
		}
	}
	if s := p.Snapshot()[0]; s.InFlight != 0 {
		t.Fatalf("in flight = %d after the request", s.InFlight)
	}
}

// When every key is at its in-flight cap, a request waits for a slot,
// within WithMaxWait, instead of failing at once.
func TestInFlightCapWaitsForASlot(t *testing.T) {
	clk := newClock()
	up := newUpstream(nil)
	ks := []apipool.Key{{ID: "k0", Secret: "s0", MaxInFlight: 1}}
	p := mustNew(t, ks, apipool.WithBase(up), apipool.WithClock(clk), apipool.WithMaxWait(5*time.Second))
	held, err := p.RoundTrip(newGet(t, "http://api.test/"))
	if err != nil {
		t.Fatal(err)
	}
	ch := goRoundTrip(p, newGet(t, "http://api.test/"))
	waitTimer(t, clk) // blocked on the cap, with the wait's deadline armed
	select {
	case r := <-ch:
		t.Fatalf("the second request did not wait: %v %v", r.resp, r.err)
	default:
	}
	io.Copy(io.Discard, held.Body)
	held.Body.Close()
	r := await(t, ch, "the request waiting for a slot")
	if r.err != nil || r.resp.StatusCode != 200 {
		t.Fatalf("got %v %v", r.resp, r.err)
	}

	// With the slot held past the wait allowed: a *NoKeyError.
	held, err = p.RoundTrip(newGet(t, "http://api.test/"))
	if err != nil {
		t.Fatal(err)
	}
	defer held.Body.Close()
	ch = goRoundTrip(p, newGet(t, "http://api.test/"))
	waitTimer(t, clk)
	clk.Advance(5 * time.Second)
	r = await(t, ch, "the request whose wait ran out")
	nk := noKey(t, r.err)
	if nk.Limited != 1 {
		t.Fatalf("NoKeyError %+v, want the key counted as limited", nk)
	}
}

// With WithMaxWait(0) a capped pool fails at once.
func TestInFlightCapNoWait(t *testing.T) {
	ks := []apipool.Key{{ID: "k0", Secret: "s0", MaxInFlight: 1}}
	p := mustNew(t, ks, apipool.WithBase(newUpstream(nil)), apipool.WithMaxWait(0))
	held, err := p.RoundTrip(newGet(t, "http://api.test/"))
	if err != nil {
		t.Fatal(err)
	}
	defer held.Body.Close()
	_, err = p.RoundTrip(newGet(t, "http://api.test/"))
	noKey(t, err)
}

// A wait for a key that the request's context ends gives one error,
// whichever of the pool's timer and the context fires first: a
// *NoKeyError, with its per-key reasons, that also matches the context's
// error. The request is counted in the usage stats, with no key.
func TestContextEndingWaitMatchesBoth(t *testing.T) {
	t.Parallel()
	up := newGatedUpstream()
	rec := &captureRecorder{}
	p := mustNew(t, []apipool.Key{{ID: "only", Secret: "s-only", MaxInFlight: 1}},
		apipool.WithBase(up), apipool.WithRecorder(rec), apipool.WithMaxWait(time.Hour))
	held := goRoundTrip(p, newGet(t, "http://api.test/slow"))
	await(t, up.arrived, "the request holding the key")

	const waiters = 3
	errs := make(chan error, waiters+1)
	for range waiters {
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Millisecond)
			defer cancel()
			req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://api.test/w", nil)
			resp, err := p.RoundTrip(req)
			if resp != nil {
				resp.Body.Close()
			}
			errs <- err
		}()
	}
	// The deadlines end by themselves (a request may even meet its
	// deadline before it joins the wait queue, on a busy machine); the
	// cancel is made once that request is waiting.
	deadline, canceled := 0, 0
	check := func(err error) {
		t.Helper()
		var nk *apipool.NoKeyError
		if !errors.As(err, &nk) || len(nk.Held) != 1 || nk.Held[0].KeyID != "only" {
			t.Fatalf("error %v (%T), want a *NoKeyError naming key \"only\"", err, err)
		}
		switch {
		case errors.Is(err, context.DeadlineExceeded):
			deadline++
		case errors.Is(err, context.Canceled):
			canceled++
		default:
			t.Fatalf("error %v matches neither context error", err)
		}
	}
	for range waiters {
		check(await(t, errs, "a waiting request's error"))
	}
	waited := p.Waits()
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://api.test/c", nil)
		resp, err := p.RoundTrip(req)
		if resp != nil {
			resp.Body.Close()
		}
		errs <- err
	}()
	eventually(t, "the request to cancel to be waiting", func() bool { return p.Waits() > waited })
	cancel()
	check(await(t, errs, "the canceled request's error"))
	if deadline != waiters || canceled != 1 {
		t.Fatalf("%d deadline and %d cancel errors, want %d and 1", deadline, canceled, waiters)
	}
	up.release <- reply{Status: 200}
	if r := await(t, held, "the held request"); r.err != nil {
		t.Fatal(r.err)
	} else {
		r.resp.Body.Close()
	}
	var noKeyEvents, cancels int
	for _, e := range rec.Events() {
		if e.KeyID != "" {
			continue
		}
		noKeyEvents++
		if e.Status == status.Canceled {
			cancels++
		}
	}
	if noKeyEvents != waiters+1 {
		t.Fatalf("%d events without a key, want %d (one per request that got none): %v", noKeyEvents, waiters+1, rec)
	}
	if cancels != 1 {
		t.Fatalf("%d canceled events without a key, want 1: %v", cancels, rec)
	}
}
