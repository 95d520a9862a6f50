package apipool_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/apipool-ng/apipool"
	"github.com/apipool-ng/apipool/recorder"
	"github.com/apipool-ng/apipool/recorder/memory"
	"github.com/apipool-ng/apipool/sharedstate"
)

// A plain 403 (a permission the endpoint refuses to every key) goes back
// to the caller at once and changes no key.
func TestPlain403ChangesNoKey(t *testing.T) {
	t.Parallel()
	up := newUpstream(func(seen) reply { return reply{Status: 403, Body: "forbidden"} })
	p := mustNew(t, keys(6), apipool.WithBase(up), apipool.WithClock(newClock()))
	for i := 0; i < 2; i++ {
		resp, body := mustDo(t, p)
		if resp.StatusCode != 403 || body != "forbidden" {
			t.Fatalf("got %d %q, want the upstream's 403", resp.StatusCode, body)
		}
	}
	if n := len(up.Calls()); n != 2 {
		t.Fatalf("%d attempts for 2 requests, want 2: a plain 403 is not resent", n)
	}
	for _, s := range p.Snapshot() {
		if s.State != "active" {
			t.Fatalf("key %s is %s after plain 403s, want active", s.KeyID, s.State)
		}
	}
}

// A 403 with rate-limit evidence (GitHub's x-ratelimit-remaining: 0 and
// its reset) cools the key until the reset, and the request goes on with
// another key.
func Test403WithRateLimitEvidenceCoolsKey(t *testing.T) {
	t.Parallel()
	clk := newClock()
	reset := t0.Add(45 * time.Minute)
	up := newUpstream(bySecret(map[string]reply{
		"s0": {Status: 403, Header: hdr("X-Ratelimit-Remaining", "0", "X-Ratelimit-Reset", strconv.FormatInt(reset.Unix(), 10))},
	}))
	p := mustNew(t, keys(2), apipool.WithBase(up), apipool.WithClock(clk), apipool.WithStrategy(apipool.RoundRobin))
	resp, _ := mustDo(t, p)
	if resp.StatusCode != 200 {
		t.Fatalf("status %d, want 200 from the other key", resp.StatusCode)
	}
	s := snapshotByID(p)["k0"]
	if s.State != "cooling" || !s.CoolingUntil.Equal(reset) || s.Disabled {
		t.Fatalf("k0 %+v, want cooling until the reset, not disabled", s)
	}
}

// One request never takes keys out of use: when a second key rejects the
// same request, the request is at fault; its answer goes back and the
// first key is put back in use.
func TestOneRequestDisablesNoFleet(t *testing.T) {
	t.Parallel()
	up := newUpstream(func(seen) reply { return reply{Status: 401, Body: "no such model for you"} })
	p := mustNew(t, keys(6), apipool.WithBase(up), apipool.WithClock(newClock()))
	for i := 0; i < 2; i++ {
		resp, _ := mustDo(t, p)
		if resp.StatusCode != 401 {
			t.Fatalf("status %d, want the upstream's 401", resp.StatusCode)
		}
	}
	if n := len(up.Calls()); n != 4 {
		t.Fatalf("%d attempts for 2 requests, want 4 (each tried on a second key, then returned)", n)
	}
	for _, s := range p.Snapshot() {
		if s.Disabled {
			t.Fatalf("key %s disabled (%s): a request rejected by two keys must disable none", s.KeyID, s.DisabledReason)
		}
	}
	// The status of the second attempt says the request was at fault.
	n, err := p.RecentAttempts(context.Background(), time.Hour, 0, "")
	if err != nil || n != 4 {
		t.Fatalf("usage %d %v", n, err)
	}
}

// A revoked key is disabled, then tried again alone after a backoff that
// doubles while the upstream goes on rejecting it; once accepted it is back.
func TestDisabledKeyRetriedWithBackoff(t *testing.T) {
	t.Parallel()
	clk := newClock()
	var revoked atomic.Bool
	revoked.Store(true)
	up := newUpstream(func(s seen) reply {
		if s.Secret == "s0" && revoked.Load() {
			return reply{Status: 401}
		}
		return reply{Status: 200}
	})
	p := mustNew(t, keys(2), apipool.WithBase(up), apipool.WithClock(clk), apipool.WithDisabledRetry(time.Minute, time.Hour))
	mustDo(t, p) // k0 rejected, k1 answers
	s := snapshotByID(p)["k0"]
	if !s.Disabled || !s.DisabledRetryAt.Equal(t0.Add(time.Minute)) {
		t.Fatalf("k0 %+v, want disabled with a retry a minute on", s)
	}
	for i := 0; i < 5; i++ {
		mustDo(t, p)
	}
	if n := up.Count("s0"); n != 1 {
		t.Fatalf("k0 used %d times before its retry time, want 1", n)
	}
	clk.Advance(time.Minute)
	for i := 0; i < 4; i++ {
		mustDo(t, p)
	}
	if n := up.Count("s0"); n != 2 {
		t.Fatalf("k0 used %d times, want 2: one trial after the backoff", n)
	}
	s = snapshotByID(p)["k0"]
	if !s.Disabled || !s.DisabledRetryAt.Equal(t0.Add(3*time.Minute)) {
		t.Fatalf("k0 %+v, want disabled again with the backoff doubled (2m)", s)
	}
	revoked.Store(false)
	clk.Advance(2 * time.Minute)
	for i := 0; i < 4; i++ {
		mustDo(t, p)
	}
	if s := snapshotByID(p)["k0"]; s.Disabled {
		t.Fatalf("k0 %+v, want back in use after an accepted trial", s)
	}
}

// WithDisabledRetry(0, 0) disables for good, and Disable is for good
// whatever the retry setting.
func TestPermanentDisable(t *testing.T) {
	t.Parallel()
	clk := newClock()
	up := newUpstream(bySecret(map[string]reply{"s0": {Status: 401}}))
	p := mustNew(t, keys(3), apipool.WithBase(up), apipool.WithClock(clk), apipool.WithDisabledRetry(0, 0))
	if err := p.Disable("k1", "by hand"); err != nil {
		t.Fatal(err)
	}
	mustDo(t, p)
	clk.Advance(48 * time.Hour)
	for i := 0; i < 6; i++ {
		mustDo(t, p)
	}
	if up.Count("s0") != 1 || up.Count("s1") != 0 {
		t.Fatalf("disabled keys used: s0 %d, s1 %d", up.Count("s0"), up.Count("s1"))
	}
	m := snapshotByID(p)
	if !m["k0"].Disabled || !m["k0"].DisabledRetryAt.IsZero() || !m["k1"].Disabled {
		t.Fatalf("snapshot %+v", m)
	}
}

// blockingUpstream answers only when the request's context ends.
func blockingUpstream() *fakeUpstream {
	return newUpstream(func(s seen) reply {
		<-s.Ctx.Done()
		return reply{Err: s.Ctx.Err()}
	})
}

// The caller's own deadline is not the key's fault: its breaker stays
// closed however many callers give up on a slow upstream.
func TestCallerDeadlineDoesNotTripBreaker(t *testing.T) {
	t.Parallel()
	up := blockingUpstream()
	p := mustNew(t, keys(2), apipool.WithBase(up), apipool.WithBreaker(apipool.BreakerSettings{Failures: 2}))
	for i := 0; i < 10; i++ {
		ctx, cancel := context.WithTimeout(context.Background(), time.Millisecond)
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://api.test/", nil)
		resp, err := p.RoundTrip(req)
		cancel()
		if err == nil || resp != nil || !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("resp %v err %v, want the context's deadline", resp, err)
		}
	}
	// Cancelled callers too.
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://api.test/", nil)
	ch := goRoundTrip(p, req)
	for len(up.Calls()) < 10 {
		time.Sleep(time.Millisecond) // until the attempt is at the upstream
	}
	cancel()
	if r := await(t, ch, "cancelled request"); !errors.Is(r.err, context.Canceled) {
		t.Fatalf("err %v", r.err)
	}
	for _, s := range p.Snapshot() {
		if s.Breaker != apipool.BreakerClosed || s.State != "active" {
			t.Fatalf("key %s: breaker %v, state %s after caller timeouts; want closed and active", s.KeyID, s.Breaker, s.State)
		}
	}
	if n := len(up.Calls()); n != 11 {
		t.Fatalf("%d attempts, want 11: a caller whose context ended gets no resend", n)
	}
}

// A timeout the pool imposes (WithAttemptTimeout) is the upstream's fault:
// it counts towards the breaker.
func TestAttemptTimeoutTripsBreaker(t *testing.T) {
	t.Parallel()
	up := blockingUpstream()
	p := mustNew(t, keys(1), apipool.WithBase(up), apipool.WithAttemptTimeout(time.Millisecond), noBackoff,
		apipool.WithMaxAttempts(1), apipool.WithBreaker(apipool.BreakerSettings{Failures: 2}))
	for i := 0; i < 2; i++ {
		_, _, err := do(t, p)
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("err %v, want a timeout", err)
		}
	}
	if s := p.Snapshot()[0]; s.Breaker != apipool.BreakerOpen {
		t.Fatalf("breaker %v after two pool-imposed timeouts, want open", s.Breaker)
	}
}

// Reservations are all or nothing: a refusal by PerSecond does not spend
// PerMinute.
func TestReserveAllOrNothing(t *testing.T) {
	t.Parallel()
	clk := newClock()
	up := newUpstream(nil)
	p := mustNew(t, []apipool.Key{{ID: "k0", Secret: "s0", PerSecond: 1, PerMinute: 3}}, apipool.WithBase(up), apipool.WithClock(clk), apipool.WithMaxWait(0))
	for sec := 0; sec < 3; sec++ {
		mustDo(t, p)
		for i := 0; i < 5; i++ { // refused by PerSecond: must not take from PerMinute
			_, _, err := do(t, p)
			noKey(t, err)
		}
		clk.Advance(time.Second)
	}
	if n := len(up.Calls()); n != 3 {
		t.Fatalf("%d requests went out, want 3: refused reservations took from PerMinute", n)
	}
	_, _, err := do(t, p)
	if nk := noKey(t, err); nk.Held[0].Reason != "rate limit" || !nk.Held[0].Until.Equal(t0.Add(time.Minute)) {
		t.Fatalf("held %+v, want k0 held by PerMinute until a minute after the first", nk.Held)
	}
}

// With one key disabled, round-robin spreads over the others evenly (the
// disabled key's turn does not go to its neighbour).
func TestRoundRobinFairWithSkippedKey(t *testing.T) {
	t.Parallel()
	for _, st := range []apipool.Strategy{apipool.RoundRobin, apipool.Random, apipool.LeastInFlight, apipool.MostQuotaLeft} {
		t.Run(st.String(), func(t *testing.T) {
			t.Parallel()
			up := newUpstream(nil)
			p := mustNew(t, keys(5), apipool.WithBase(up), apipool.WithClock(newClock()), apipool.WithStrategy(st))
			if err := p.Disable("k1", "test"); err != nil {
				t.Fatal(err)
			}
			for i := 0; i < 20000; i++ {
				mustDo(t, p)
			}
			lo, hi := 1<<30, 0
			for _, s := range []string{"s0", "s2", "s3", "s4"} {
				n := up.Count(s)
				lo, hi = min(lo, n), max(hi, n)
			}
			if float64(hi-lo) > 0.1*float64(lo) {
				t.Fatalf("shares from %d to %d, want within 10%% of each other", lo, hi)
			}
		})
	}
}

// A base that returns neither a response nor an error is a failed attempt,
// not a panic, and leaks no in-flight slot.
func TestBaseReturningNilNil(t *testing.T) {
	t.Parallel()
	base := roundTripperFunc(func(*http.Request) (*http.Response, error) { return nil, nil })
	p := mustNew(t, []apipool.Key{{ID: "k0", Secret: "s0", MaxInFlight: 1}}, apipool.WithBase(base), noBackoff, apipool.WithMaxAttempts(2), apipool.WithBreaker(apipool.BreakerSettings{Disabled: true}))
	for i := 0; i < 3; i++ {
		if _, _, err := do(t, p); err == nil {
			t.Fatal("no error")
		}
	}
	if s := p.Snapshot()[0]; s.InFlight != 0 {
		t.Fatalf("%d in flight after failed attempts", s.InFlight)
	}
}

// When the wait budget runs out after a rate limit, the caller gets the
// upstream's own answer, whole, even when its body is large.
func TestLargeRateLimitBodyReturned(t *testing.T) {
	t.Parallel()
	big := strings.Repeat("x", 200<<10)
	up := newUpstream(func(seen) reply { return reply{Status: 429, Body: big, Header: hdr("Retry-After", "3600")} })
	p := mustNew(t, keys(2), apipool.WithBase(up), apipool.WithClock(newClock()))
	resp, body := mustDo(t, p)
	if resp.StatusCode != 429 || len(body) != len(big) {
		t.Fatalf("got %d with %d bytes, want the 429 with its %d bytes", resp.StatusCode, len(body), len(big))
	}
	for _, b := range up.Bodies() {
		if !b.Closed() {
			t.Fatal("a response body was left open")
		}
	}
}

// An HTTP-date Retry-After is read against the answer's Date: a local
// clock ahead of the server's still gets the whole cooldown.
func TestRetryAfterDateRelativeToResponseDate(t *testing.T) {
	t.Parallel()
	clk := newClock() // t0; the server's clock is an hour behind
	server := t0.Add(-time.Hour)
	up := newUpstream(bySecret(map[string]reply{"s0": {Status: 429, Header: hdr(
		"Date", server.UTC().Format(http.TimeFormat),
		"Retry-After", server.Add(30*time.Second).UTC().Format(http.TimeFormat))}}))
	p := mustNew(t, keys(2), apipool.WithBase(up), apipool.WithClock(clk), apipool.WithStrategy(apipool.RoundRobin))
	mustDo(t, p)
	if s := snapshotByID(p)["k0"]; !s.CoolingUntil.Equal(t0.Add(30 * time.Second)) {
		t.Fatalf("k0 cooling until %v, want 30s from now", s.CoolingUntil)
	}
}

// After a cooldown a key takes one trial request before any other: the
// waiters behind it do not stampede the reset.
func TestTrialAfterCooldown(t *testing.T) {
	t.Parallel()
	clk := newClock()
	var calls atomic.Int32
	release := make(chan struct{})
	up := newUpstream(func(s seen) reply {
		switch calls.Add(1) {
		case 1:
			return reply{Status: 429, Header: hdr("Retry-After", "10")}
		case 2:
			<-release // the trial, held at the upstream
		}
		return reply{Status: 200}
	})
	p := mustNew(t, keys(1), apipool.WithBase(up), apipool.WithClock(clk), apipool.WithMaxWait(time.Minute))
	first := goRoundTrip(p, newGet(t, "http://api.test/"))
	waitTimer(t, clk) // the first request waits for the cooldown
	var rest []<-chan result
	for i := 0; i < 5; i++ {
		rest = append(rest, goRoundTrip(p, newGet(t, "http://api.test/")))
	}
	clk.Advance(10 * time.Second)
	for calls.Load() < 2 {
		time.Sleep(time.Millisecond) // until the trial is at the upstream
	}
	// Only the trial went out: the others wait for its answer.
	for i := 0; i < 50; i++ {
		if n := calls.Load(); n != 2 {
			t.Fatalf("%d calls while the trial is in flight, want 2", n)
		}
		time.Sleep(time.Millisecond)
	}
	close(release)
	if r := await(t, first, "first request"); r.err != nil || r.resp.StatusCode != 200 {
		t.Fatalf("first: %+v", r)
	}
	for i, ch := range rest {
		if r := await(t, ch, "waiter"); r.err != nil || r.resp.StatusCode != 200 {
			t.Fatalf("waiter %d: %+v", i, r)
		}
	}
	if n := calls.Load(); n != 7 {
		t.Fatalf("%d calls, want 7 (one 429, the trial, five more)", n)
	}
}

// Close flushes the recorder even when a probe outlasts its context,
// reports that, closes the base's idle connections; a second Close, the
// probe still stuck, says the same, and one after the probe ended
// finishes.
func TestCloseAlwaysFlushes(t *testing.T) {
	t.Parallel()
	up := newUpstream(nil)
	rec := &closeRecorder{}
	stuck := make(chan struct{})
	var unstick sync.Once
	defer unstick.Do(func() { close(stuck) })
	entered := make(chan struct{}, 1)
	probe := func(ctx context.Context, c *http.Client) error {
		select {
		case entered <- struct{}{}:
		default:
		}
		<-stuck
		return nil
	}
	p := mustNew(t, keys(1), apipool.WithBase(up), apipool.WithRecorder(rec), apipool.WithProbe(probe, time.Millisecond))
	mustDo(t, p)
	if err := p.Disable("k0", "so that the probe loop probes it"); err != nil {
		t.Fatal(err)
	}
	await(t, entered, "the probe loop entering the stuck probe")
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	err := p.Close(ctx)
	if !rec.closed.Load() {
		t.Fatal("recorder not closed while a probe outlasted Close's context")
	}
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Close: %v, want it to report the probe outlasting its context", err)
	}
	if err2 := p.Close(ctx); err2 == nil || err2.Error() != err.Error() {
		t.Fatalf("second Close %v, first %v", err2, err)
	}
	unstick.Do(func() { close(stuck) })
	if err3 := p.Close(context.Background()); err3 != nil {
		t.Fatalf("Close after the probe ended: %v", err3)
	}
	if up.idleCalls.Load() == 0 {
		t.Fatal("Close left the base's idle connections open")
	}
}

type closeRecorder struct {
	recorder.Nop
	closed atomic.Bool
}

func (r *closeRecorder) Close(context.Context) error { r.closed.Store(true); return nil }

// One store shared by two pools through recorder.KeepOpen: closing one
// pool leaves the store open for the other.
func TestSharedStoreKeepOpen(t *testing.T) {
	t.Parallel()
	store, err := memory.New()
	if err != nil {
		t.Fatal(err)
	}
	p1 := mustNew(t, keys(1), apipool.WithBase(newUpstream(nil)), apipool.WithRecorder(recorder.KeepOpen(store)))
	p2 := mustNew(t, keys(1), apipool.WithBase(newUpstream(nil)), apipool.WithRecorder(recorder.KeepOpen(store)))
	mustDo(t, p1)
	if err := p1.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	mustDo(t, p2)
	if err := p2.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	n, err := store.UsageCount(context.Background(), recorder.Query{})
	if err != nil || n != 2 {
		t.Fatalf("store holds %d events (%v), want 2: one per pool", n, err)
	}
	if d := store.Dropped(); d != 0 {
		t.Fatalf("%d events dropped", d)
	}
	if err := store.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if p2.Stats() == nil {
		t.Fatal("KeepOpen hides the store's Stats")
	}
}

// NoKeyError says per key why and until when, on the pool's clock.
func TestNoKeyErrorPerKeyReasons(t *testing.T) {
	t.Parallel()
	clk := newClock()
	up := newUpstream(bySecret(map[string]reply{
		"s0": {Status: 429, Header: hdr("Retry-After", "30")},
		"s1": {Status: 401},
	}))
	p := mustNew(t, keys(2), apipool.WithBase(up), apipool.WithClock(clk), apipool.WithMaxWait(0), apipool.WithStrategy(apipool.RoundRobin))
	resp, _ := mustDo(t, p)
	if resp.StatusCode != 401 && resp.StatusCode != 429 {
		t.Fatalf("status %d", resp.StatusCode)
	}
	_, _, err := do(t, p)
	nk := noKey(t, err)
	if len(nk.Held) != 2 || nk.Held[0].Reason != "cooling down" || !nk.Held[0].Until.Equal(t0.Add(30*time.Second)) ||
		nk.Held[1].Reason != "disabled" || !nk.Held[1].Until.Equal(t0.Add(apipool.DefaultDisabledRetry)) {
		t.Fatalf("held %+v", nk.Held)
	}
	if !nk.RetryAt.Equal(t0.Add(30*time.Second)) || !strings.Contains(nk.Error(), `"k0" cooling down until`) {
		t.Fatalf("%v", nk)
	}
}

// While the shared store hangs, one request per backoff probes it; the
// others go on with local limits, without waiting on it.
func TestSharedStoreOutageProbedOnce(t *testing.T) {
	t.Parallel()
	st := &hangingShared{}
	// On a pool clock that stands still, the backoff after the failure
	// never ends: no later request may call the store.
	clk := newClock()
	p := mustNew(t, []apipool.Key{{ID: "k0", Secret: "s0", PerSecond: 1000}}, apipool.WithBase(newUpstream(nil)), apipool.WithSharedState(st), apipool.WithClock(clk))
	send := func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://api.test/", nil)
		resp, err := p.RoundTrip(req)
		if err != nil {
			t.Errorf("request failed while the store hangs: %v", err)
			return
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	send() // finds the store hanging: its take times out, and the store is marked failing
	if st.takes.Load() != 1 || p.SharedStateHealth().Available {
		t.Fatalf("takes %d, health %+v", st.takes.Load(), p.SharedStateHealth())
	}
	var wg sync.WaitGroup
	for i := 0; i < 20; i++ {
		wg.Add(1)
		go func() { defer wg.Done(); send() }()
	}
	wg.Wait()
	if n := st.takes.Load() - 1; n != 0 {
		t.Fatalf("%d of 20 requests called the failing store within its backoff, want 0", n)
	}
	// Once the backoff is over, one request probes the store, not all.
	clk.Advance(time.Second)
	for i := 0; i < 20; i++ {
		wg.Add(1)
		go func() { defer wg.Done(); send() }()
	}
	wg.Wait()
	if n := st.takes.Load() - 1; n != 1 {
		t.Fatalf("%d of 20 requests probed the failing store after its backoff, want 1", n)
	}
}

type hangingShared struct{ takes atomic.Int32 }

func (h *hangingShared) Publish(ctx context.Context, c sharedstate.Change) error {
	<-ctx.Done()
	return ctx.Err()
}
func (h *hangingShared) Watch(ctx context.Context, apply func(sharedstate.Change)) error {
	<-ctx.Done()
	return ctx.Err()
}
func (h *hangingShared) Take(ctx context.Context, id string, l sharedstate.Limits, now time.Time, n int) (int, time.Time, error) {
	h.takes.Add(1)
	<-ctx.Done()
	return 0, time.Time{}, ctx.Err()
}

// A disable made through the shared state keeps its retry time on the
// other replicas: pool.Disable (for good) is never retried elsewhere, a
// rejected key is retried when its first replica would.
func TestSharedDisableKeepsItsRetry(t *testing.T) {
	t.Parallel()
	clk := newClock()
	up := newUpstream(nil)
	st := &echoShared{ch: make(chan sharedstate.Change, 16)}
	p := mustNew(t, keys(3), apipool.WithBase(up), apipool.WithClock(clk), apipool.WithSharedState(st))
	st.ch <- sharedstate.Change{KeyID: "k0", Kind: sharedstate.Disable, Reason: "by hand elsewhere", At: t0}
	st.ch <- sharedstate.Change{KeyID: "k1", Kind: sharedstate.Disable, Reason: "401 elsewhere", At: t0, Until: t0.Add(time.Minute)}
	eventually(t, "both disables applied", func() bool { m := snapshotByID(p); return m["k0"].Disabled && m["k1"].Disabled })
	clk.Advance(2 * time.Hour)
	for i := 0; i < 6; i++ {
		mustDo(t, p)
	}
	if up.Count("s0") != 0 {
		t.Fatalf("a key disabled for good on another replica was used %d times", up.Count("s0"))
	}
	if up.Count("s1") == 0 || snapshotByID(p)["k1"].Disabled {
		t.Fatalf("the key with a retry time was not tried again and put back: %+v", snapshotByID(p)["k1"])
	}
}

// echoShared delivers the changes sent on ch to Watch.
type echoShared struct{ ch chan sharedstate.Change }

func (e *echoShared) Publish(ctx context.Context, c sharedstate.Change) error { return nil }
func (e *echoShared) Watch(ctx context.Context, apply func(sharedstate.Change)) error {
	apply(sharedstate.Change{Kind: sharedstate.Synced})
	for {
		select {
		case c := <-e.ch:
			apply(c)
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}
func (e *echoShared) Take(ctx context.Context, id string, l sharedstate.Limits, now time.Time, n int) (int, time.Time, error) {
	return n, time.Time{}, nil
}
