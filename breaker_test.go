package apipool_test

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sony/gobreaker/v2"

	"github.com/apipool-ng/apipool"
)

type transition struct {
	id       string
	from, to apipool.BreakerState
}

type transitions struct {
	mu   sync.Mutex
	list []transition
}

func (tr *transitions) add(id string, from, to apipool.BreakerState) {
	tr.mu.Lock()
	tr.list = append(tr.list, transition{id, from, to})
	tr.mu.Unlock()
}

func (tr *transitions) get() []transition {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	return append([]transition(nil), tr.list...)
}

// Server errors open a key's breaker after BreakerSettings.Failures in a
// row; the key is then skipped.
func TestBreakerOpensAfterFailures(t *testing.T) {
	t.Parallel()
	var tr transitions
	up := newUpstream(bySecret(map[string]reply{"s0": {Status: 500}}))
	sel := &orderSelector{}
	sel.Set("k0", "k1")
	p := mustNew(t, keys(2), apipool.WithBase(up), apipool.WithClock(newClock()), apipool.WithSelector(sel), apipool.WithMaxAttempts(1), apipool.WithMaxWait(0),
		apipool.WithBreaker(apipool.BreakerSettings{Failures: 3, Timeout: time.Hour}), apipool.WithBreakerStateChange(tr.add))
	for i := 0; i < 3; i++ {
		if resp, _ := mustDo(t, p); resp.StatusCode != 500 {
			t.Fatalf("request %d: %d", i, resp.StatusCode)
		}
		if i < 2 && len(tr.get()) != 0 {
			t.Fatalf("breaker changed after %d failures: %v", i+1, tr.get())
		}
	}
	if got := tr.get(); !reflect.DeepEqual(got, []transition{{"k0", apipool.BreakerClosed, apipool.BreakerOpen}}) {
		t.Fatalf("transitions %v", got)
	}
	s := snapshotByID(p)["k0"]
	if s.Breaker != apipool.BreakerOpen || s.State != "breaker-open" {
		t.Fatalf("snapshot %+v", s)
	}
	for i := 0; i < 5; i++ {
		if resp, _ := mustDo(t, p); resp.StatusCode != 200 {
			t.Fatalf("status %d, want 200 from k1", resp.StatusCode)
		}
	}
	if n := up.Count("s0"); n != 3 {
		t.Fatalf("open key used: %d requests, want 3", n)
	}
	p.Disable("k1", "")
	_, _, err := do(t, p)
	nk := noKey(t, err)
	if nk.BreakerOpen != 1 || nk.Disabled != 1 || nk.RetryAt.Before(t0.Add(50*time.Minute)) || nk.RetryAt.After(t0.Add(time.Hour)) {
		t.Fatalf("%+v, want RetryAt when the breaker half-opens, about an hour away", nk)
	}
}

// Rate limits, client errors and cancellations do not count towards the
// breaker; network errors and timeouts do.
func TestBreakerCountsOnlyUpstreamFailures(t *testing.T) {
	t.Parallel()
	var mode atomic.Value
	up := newUpstream(func(s seen) reply {
		switch mode.Load().(string) {
		case "429":
			return reply{Status: 429, Header: hdr("Retry-After", "0")}
		case "400":
			return reply{Status: 400}
		case "404":
			return reply{Status: 404}
		case "cancel":
			return reply{Err: s.Ctx.Err()}
		case "network":
			return reply{Err: errBoom}
		case "timeout":
			return reply{Err: context.DeadlineExceeded}
		}
		return reply{Status: 503}
	})
	p := mustNew(t, keys(1), apipool.WithBase(up), apipool.WithClock(newClock()), apipool.WithMaxAttempts(1), apipool.WithMaxWait(0),
		apipool.WithBreaker(apipool.BreakerSettings{Failures: 2, Timeout: time.Hour}))
	send := func() {
		ctx, cancel := context.WithCancel(context.Background())
		if mode.Load() == "cancel" {
			cancel()
		}
		defer cancel()
		req := newGet(t, "http://api.test/").WithContext(ctx)
		if resp, err := p.RoundTrip(req); err == nil {
			resp.Body.Close()
		}
	}
	for _, m := range []string{"429", "400", "404", "cancel"} {
		mode.Store(m)
		for i := 0; i < 10; i++ {
			send()
		}
		if s := p.Snapshot()[0]; s.Breaker != apipool.BreakerClosed || s.State != "active" {
			t.Fatalf("after ten %s: %+v", m, s)
		}
	}
	if len(up.Calls()) != 40 {
		t.Fatalf("%d requests went out, want 40", len(up.Calls()))
	}
	for _, m := range []string{"503", "network", "timeout"} {
		t.Run(m, func(t *testing.T) {
			mode.Store(m)
			p := mustNew(t, keys(1), apipool.WithBase(up), apipool.WithClock(newClock()), apipool.WithMaxAttempts(1), apipool.WithMaxWait(0),
				apipool.WithBreaker(apipool.BreakerSettings{Failures: 2, Timeout: time.Hour}))
			for i := 0; i < 2; i++ {
				if resp, err := p.RoundTrip(newGet(t, "http://api.test/")); err == nil {
					resp.Body.Close()
				}
			}
			if s := p.Snapshot()[0]; s.Breaker != apipool.BreakerOpen {
				t.Fatalf("after two %s: %+v, want the breaker open", m, s)
			}
		})
	}
}

// After its timeout an open breaker lets a trial request through; a
// success closes it. The state-change callback sees each step and may
// call the pool (Snapshot) without deadlock. The breaker follows the
// wall clock: the timeout is tiny and the test polls.
func TestBreakerRecoversAndCallbackMayUsePool(t *testing.T) {
	t.Parallel()
	var tr transitions
	var p *apipool.Transport
	var snapshots atomic.Int32
	var n atomic.Int32
	up := newUpstream(func(seen) reply {
		if n.Add(1) == 1 {
			return reply{Status: 502}
		}
		return reply{Status: 200}
	})
	p = mustNew(t, keys(1), apipool.WithBase(up), apipool.WithClock(newClock()), apipool.WithMaxAttempts(1), apipool.WithMaxWait(0),
		apipool.WithBreaker(apipool.BreakerSettings{Failures: 1, Timeout: 5 * time.Millisecond}),
		apipool.WithBreakerStateChange(func(id string, from, to apipool.BreakerState) {
			if s := p.Snapshot(); len(s) == 1 && s[0].KeyID == id {
				snapshots.Add(1)
			}
			tr.add(id, from, to)
		}))
	done := make(chan error, 1)
	go func() {
		resp, err := p.RoundTrip(newGet(t, "http://api.test/"))
		if err != nil || resp.StatusCode != 502 {
			done <- fmt.Errorf("first request: %v %v", resp, err)
			return
		}
		resp.Body.Close()
		deadline := time.Now().Add(20 * time.Second)
		for time.Now().Before(deadline) {
			resp, err := p.RoundTrip(newGet(t, "http://api.test/"))
			if err == nil {
				resp.Body.Close()
				if resp.StatusCode == 200 {
					done <- nil
					return
				}
			} else if !errors.Is(err, apipool.ErrNoKeyAvailable) {
				done <- err
				return
			}
			time.Sleep(time.Millisecond)
		}
		done <- errors.New("no success after 20s")
	}()
	if err := await(t, done, "breaker recovery"); err != nil {
		t.Fatal(err)
	}
	want := []transition{
		{"k0", apipool.BreakerClosed, apipool.BreakerOpen},
		{"k0", apipool.BreakerOpen, apipool.BreakerHalfOpen},
		{"k0", apipool.BreakerHalfOpen, apipool.BreakerClosed},
	}
	if got := tr.get(); !reflect.DeepEqual(got, want) {
		t.Fatalf("transitions %v, want %v", got, want)
	}
	if snapshots.Load() != 3 {
		t.Fatalf("Snapshot from the callback worked %d times of 3", snapshots.Load())
	}
	if s := p.Snapshot()[0]; s.Breaker != apipool.BreakerClosed || s.State != "active" {
		t.Fatalf("snapshot %+v", s)
	}
	if len(up.Calls()) != 2 {
		t.Fatalf("%d requests went out, want 2 (the failure and the trial)", len(up.Calls()))
	}
}

// Breaker settings: disabled breakers never open; ReadyToTrip replaces
// Failures.
func TestBreakerSettings(t *testing.T) {
	t.Parallel()
	up := newUpstream(func(seen) reply { return reply{Status: 500} })
	p := mustNew(t, keys(1), apipool.WithBase(up), apipool.WithClock(newClock()), apipool.WithMaxAttempts(1), apipool.WithMaxWait(0),
		apipool.WithBreaker(apipool.BreakerSettings{Disabled: true}))
	for i := 0; i < 20; i++ {
		mustDo(t, p)
	}
	if s := p.Snapshot()[0]; s.Breaker != apipool.BreakerClosed || s.State != "active" {
		t.Fatalf("disabled breaker: %+v", s)
	}

	p = mustNew(t, keys(1), apipool.WithBase(up), apipool.WithClock(newClock()), apipool.WithMaxAttempts(1), apipool.WithMaxWait(0),
		apipool.WithBreaker(apipool.BreakerSettings{Failures: 1, ReadyToTrip: func(c gobreaker.Counts) bool { return c.TotalFailures >= 4 }}))
	for i := 0; i < 3; i++ {
		mustDo(t, p)
	}
	if s := p.Snapshot()[0]; s.Breaker != apipool.BreakerClosed {
		t.Fatalf("after 3 failures: %+v, want closed (ReadyToTrip wants 4)", s)
	}
	mustDo(t, p)
	if s := p.Snapshot()[0]; s.Breaker != apipool.BreakerOpen {
		t.Fatalf("after 4 failures: %+v, want open", s)
	}

	// Default: five failures in a row.
	p = mustNew(t, keys(1), apipool.WithBase(up), apipool.WithClock(newClock()), apipool.WithMaxAttempts(1), apipool.WithMaxWait(0))
	for i := 0; i < 4; i++ {
		mustDo(t, p)
	}
	if s := p.Snapshot()[0]; s.Breaker != apipool.BreakerClosed {
		t.Fatalf("after 4 failures: %+v", s)
	}
	mustDo(t, p)
	if s := p.Snapshot()[0]; s.Breaker != apipool.BreakerOpen {
		t.Fatalf("after 5 failures: %+v", s)
	}
}
