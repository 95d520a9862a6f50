package apipool_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"reflect"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/apipool-ng/apipool"
	"github.com/apipool-ng/apipool/status"
)

// A rate-limited key rests exactly as long as the upstream asks (or the
// fallback, within the cap): unusable 1ms before, usable at the deadline.
func TestCooldownHonouredToTheSecond(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name string
		hdr  http.Header
		opts []apipool.Option
		want time.Duration
	}{
		{"Retry-After seconds", hdr("Retry-After", "30"), nil, 30 * time.Second},
		{"Retry-After HTTP date", hdr("Retry-After", t0.Add(45*time.Second).Format(http.TimeFormat)), nil, 45 * time.Second},
		{"retry-after-ms", hdr("Retry-After-Ms", "1500"), nil, 1500 * time.Millisecond},
		{"retry-after-ms before Retry-After", hdr("Retry-After-Ms", "2500", "Retry-After", "30"), nil, 2500 * time.Millisecond},
		{"x-ratelimit-reset-requests", hdr("X-Ratelimit-Reset-Requests", "6m0s"), nil, 6 * time.Minute},
		{"no header: default fallback", nil, nil, apipool.DefaultCooldown},
		{"no header: WithCooldown fallback", nil, []apipool.Option{apipool.WithCooldown(10*time.Second, time.Hour)}, 10 * time.Second},
		{"unparsable header: fallback", hdr("Retry-After", "soon"), []apipool.Option{apipool.WithCooldown(7*time.Second, time.Hour)}, 7 * time.Second},
		{"capped by WithCooldown max", hdr("Retry-After", "7200"), []apipool.Option{apipool.WithCooldown(10*time.Second, time.Minute)}, time.Minute},
		{"default cap", hdr("Retry-After", "86400"), nil, apipool.DefaultMaxCooldown},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			clk := newClock()
			var n atomic.Int32
			up := newUpstream(func(s seen) reply {
				if n.Add(1) == 1 {
					return reply{Status: 429, Header: tc.hdr, Body: "slow down"}
				}
				return reply{Status: 200, Body: "ok"}
			})
			opts := append([]apipool.Option{apipool.WithBase(up), apipool.WithClock(clk), apipool.WithMaxWait(0)}, tc.opts...)
			p := mustNew(t, keys(1), opts...)

			resp, body := mustDo(t, p)
			if resp.StatusCode != 429 || body != "slow down" {
				t.Fatalf("first answer %d %q, want the 429 (the only key)", resp.StatusCode, body)
			}
			until := t0.Add(tc.want)
			if s := p.Snapshot()[0]; s.State != "cooling" || !s.CoolingUntil.Equal(until) {
				t.Fatalf("snapshot %+v, want cooling until %v", s, until)
			}

			clk.Advance(tc.want - time.Millisecond)
			_, _, err := do(t, p)
			nk := noKey(t, err)
			if !nk.RetryAt.Equal(until) || nk.Cooling != 1 || nk.Keys != 1 {
				t.Fatalf("at -1ms: %+v, want RetryAt %v and 1 key cooling", nk, until)
			}
			if got := len(up.Calls()); got != 1 {
				t.Fatalf("upstream saw %d requests while the key cooled, want 1", got)
			}

			clk.Advance(time.Millisecond)
			if resp, _ := mustDo(t, p); resp.StatusCode != 200 {
				t.Fatalf("at the deadline: %d, want 200", resp.StatusCode)
			}
			if s := p.Snapshot()[0]; s.State != "active" || !s.CoolingUntil.IsZero() {
				t.Fatalf("after the cooldown: %+v", s)
			}
		})
	}
}

// gatedUpstream holds every request until the test releases it with a
// reply, so that several requests can be in flight on one key.
type gatedUpstream struct {
	*fakeUpstream
	arrived chan struct{}
	release chan reply
}

func newGatedUpstream() *gatedUpstream {
	g := &gatedUpstream{arrived: make(chan struct{}, 16), release: make(chan reply)}
	g.fakeUpstream = newUpstream(func(seen) reply {
		g.arrived <- struct{}{}
		return <-g.release
	})
	return g
}

// When two answers cool the same key, the later deadline wins, whatever
// their order.
func TestCooldownLaterDeadlineWins(t *testing.T) {
	t.Parallel()
	for _, order := range [][2]string{{"60", "10"}, {"10", "60"}} {
		t.Run(order[0]+" then "+order[1], func(t *testing.T) {
			t.Parallel()
			clk := newClock()
			up := newGatedUpstream()
			p := mustNew(t, keys(1), apipool.WithBase(up), apipool.WithClock(clk), apipool.WithMaxWait(0))
			a := goRoundTrip(p, newGet(t, "http://api.test/a"))
			b := goRoundTrip(p, newGet(t, "http://api.test/b"))
			await(t, up.arrived, "first request")
			await(t, up.arrived, "second request")
			// Either request may take either reply: wait for whichever
			// answers first before releasing the second reply.
			both := make(chan result, 2)
			go func() { both <- <-a }()
			go func() { both <- <-b }()
			up.release <- reply{Status: 429, Header: hdr("Retry-After", order[0])}
			first := await(t, both, "first answer")
			up.release <- reply{Status: 429, Header: hdr("Retry-After", order[1])}
			second := await(t, both, "second answer")
			for _, r := range []result{first, second} {
				if r.err != nil || r.resp.StatusCode != 429 {
					t.Fatalf("answer %+v, want the 429", r)
				}
			}
			if got := p.Snapshot()[0].CoolingUntil; !got.Equal(t0.Add(time.Minute)) {
				t.Fatalf("cooling until %v, want %v (the later deadline)", got, t0.Add(time.Minute))
			}
		})
	}
}

// A key the upstream rejects (401) is not used again until a probe passes
// or the application enables it.
func TestRevokedKeyNeverUsedUntilProbePasses(t *testing.T) {
	t.Parallel()
	var revoked atomic.Bool
	revoked.Store(true)
	up := newUpstream(func(s seen) reply {
		if s.Secret == "s0" && revoked.Load() {
			return reply{Status: 401, Body: "revoked"}
		}
		return reply{Status: 200, Body: "ok"}
	})
	p := mustNew(t, keys(3), apipool.WithBase(up), apipool.WithClock(newClock()),
		apipool.WithProbe(apipool.ProbeRequest("GET", "http://api.test/v1/me"), 0))

	resp, _ := mustDo(t, p)
	if resp.StatusCode != 200 {
		t.Fatalf("first request: %d, want 200 from another key", resp.StatusCode)
	}
	if got := up.Secrets(); !reflect.DeepEqual(got, []string{"s0", "s1"}) {
		t.Fatalf("upstream saw %v, want [s0 s1]", got)
	}
	s := snapshotByID(p)["k0"]
	if s.State != "disabled" || !s.Disabled || !strings.Contains(s.DisabledReason, "401") || !s.DisabledAt.Equal(t0) {
		t.Fatalf("snapshot of the revoked key: %+v", s)
	}
	sendMany := func(n int) {
		t.Helper()
		up.Reset()
		for i := 0; i < n; i++ {
			if resp, _ := mustDo(t, p); resp.StatusCode != 200 {
				t.Fatalf("status %d", resp.StatusCode)
			}
		}
	}
	sendMany(30)
	if n := up.Count("s0"); n != 0 {
		t.Fatalf("revoked key used %d times", n)
	}

	// The probe still fails: the key stays out.
	up.Reset()
	res, err := p.CheckUsable(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(res) != 3 || res[0].KeyID != "k0" || res[0].Usable || res[0].Status != status.InvalidKey || res[0].Err == nil {
		t.Fatalf("probe results %+v", res)
	}
	for _, r := range res[1:] {
		if !r.Usable || r.Err != nil || r.Status != status.Success {
			t.Fatalf("probe result %+v, want usable", r)
		}
	}
	if got := up.Secrets(); len(got) != 3 {
		t.Fatalf("probe sent %v, want one request per key", got)
	}
	sendMany(30)
	if n := up.Count("s0"); n != 0 {
		t.Fatalf("revoked key used %d times after a failed probe", n)
	}

	// The key works again: the probe passes and the key is back.
	revoked.Store(false)
	res, err = p.CheckUsable(context.Background())
	if err != nil || !res[0].Usable {
		t.Fatalf("probe %+v, %v", res, err)
	}
	if s := snapshotByID(p)["k0"]; s.Disabled || s.State != "active" {
		t.Fatalf("after a passing probe: %+v", s)
	}
	sendMany(30)
	if n := up.Count("s0"); n != 10 {
		t.Fatalf("re-enabled key used %d times of 30 (round-robin over 3), want 10", n)
	}

	// Disable and Enable by hand.
	if err := p.Disable("k0", "rotating"); err != nil {
		t.Fatal(err)
	}
	if s := snapshotByID(p)["k0"]; s.DisabledReason != "rotating" {
		t.Fatalf("reason %q", s.DisabledReason)
	}
	sendMany(9)
	if n := up.Count("s0"); n != 0 {
		t.Fatalf("disabled key used %d times", n)
	}
	if err := p.Enable("k0"); err != nil {
		t.Fatal(err)
	}
	sendMany(30)
	if n := up.Count("s0"); n == 0 {
		t.Fatal("enabled key not used")
	}
}

// A background probe re-enables a revoked key by itself.
func TestPeriodicProbeReenablesKey(t *testing.T) {
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
	p := mustNew(t, keys(2), apipool.WithBase(up), apipool.WithClock(clk),
		apipool.WithProbe(apipool.ProbeRequest("GET", "http://api.test/me"), time.Minute))
	waitTimer(t, clk) // the probe loop is waiting
	mustDo(t, p)
	if !snapshotByID(p)["k0"].Disabled {
		t.Fatal("k0 not disabled after a 401")
	}
	revoked.Store(false)
	clk.Advance(time.Minute)
	eventually(t, "k0 re-enabled by the periodic probe", func() bool { return !snapshotByID(p)["k0"].Disabled })
	if err := p.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
}

// While another key is eligible, a request never goes twice to one key.
// Rate-limited attempts are counted apart from WithMaxAttempts: at most
// twice as many as the pool has keys (at least 4).
func TestNoKeyTriedTwiceInOneRequest(t *testing.T) {
	t.Parallel()
	// Retry-After: 0 leaves every key eligible: only the request's memory
	// of the keys it tried keeps it from going back to one before it has
	// tried them all.
	limited := func(seen) reply { return reply{Status: 429, Header: hdr("Retry-After", "0")} }
	for _, st := range []apipool.Strategy{apipool.RoundRobin, apipool.Random, apipool.Weighted, apipool.LeastInFlight, apipool.MostQuotaLeft} {
		t.Run(st.String(), func(t *testing.T) {
			t.Parallel()
			up := newUpstream(limited)
			p := mustNew(t, keys(5), apipool.WithBase(up), apipool.WithClock(newClock()), apipool.WithStrategy(st), apipool.WithMaxAttempts(5))
			for i := 0; i < 20; i++ {
				up.Reset()
				resp, _ := mustDo(t, p)
				if resp.StatusCode != 429 {
					t.Fatalf("status %d", resp.StatusCode)
				}
				got := up.Secrets()
				if len(got) != 10 {
					t.Fatalf("%d attempts, want 10 (twice the keys)", len(got))
				}
				assertDistinct(t, got[:5], 5)
			}
		})
	}
	t.Run("server errors", func(t *testing.T) {
		t.Parallel()
		up := newUpstream(func(seen) reply { return reply{Status: 503} })
		p := mustNew(t, keys(4), apipool.WithBase(up), apipool.WithClock(newClock()), noBackoff,
			apipool.WithMaxAttempts(4), apipool.WithBreaker(apipool.BreakerSettings{Disabled: true}))
		for i := 0; i < 10; i++ {
			up.Reset()
			mustDo(t, p)
			assertDistinct(t, up.Secrets(), 4)
		}
	})
	t.Run("more than 64 keys", func(t *testing.T) {
		t.Parallel()
		up := newUpstream(limited)
		p := mustNew(t, keys(70), apipool.WithBase(up), apipool.WithClock(newClock()), apipool.WithStrategy(apipool.Random), apipool.WithMaxAttempts(70))
		mustDo(t, p)
		got := up.Secrets()
		if len(got) != 140 {
			t.Fatalf("%d attempts, want 140", len(got))
		}
		assertDistinct(t, got[:70], 70)
	})
	t.Run("fewer keys than attempts", func(t *testing.T) {
		t.Parallel()
		up := newUpstream(limited)
		p := mustNew(t, keys(3), apipool.WithBase(up), apipool.WithClock(newClock()), apipool.WithMaxAttempts(5))
		mustDo(t, p)
		got := up.Secrets()
		if len(got) != 6 {
			t.Fatalf("%d attempts, want 6 (twice the keys)", len(got))
		}
		assertDistinct(t, got[:3], 3)
	})
}

func assertDistinct(t *testing.T, secrets []string, want int) {
	t.Helper()
	if len(secrets) != want {
		t.Fatalf("%d attempts %v, want %d", len(secrets), secrets, want)
	}
	seen := map[string]bool{}
	for _, s := range secrets {
		if seen[s] {
			t.Fatalf("key %s tried twice in one request while others were eligible: %v", s, secrets)
		}
		seen[s] = true
	}
}

// trackedReadCloser wraps a reader with no GetBody and records Close.
type trackedReadCloser struct {
	io.ReadCloser
	closed atomic.Bool
}

func (b *trackedReadCloser) Close() error { b.closed.Store(true); return b.ReadCloser.Close() }

// A POST body arrives whole on every attempt, whether the request can
// rebuild it (GetBody) or the pool has to buffer it; a body over the
// buffer limit goes out once and is not resent.
func TestPostBodyIntactOnEveryAttempt(t *testing.T) {
	t.Parallel()
	payload := strings.Repeat("0123456789abcdef", 40) // 640 bytes
	twoLimited := func(n *atomic.Int32) func(seen) reply {
		return func(seen) reply {
			if n.Add(1) <= 2 {
				return reply{Status: 429, Header: hdr("Retry-After", "60")}
			}
			return reply{Status: 201, Body: "created"}
		}
	}

	t.Run("GetBody", func(t *testing.T) {
		t.Parallel()
		var n atomic.Int32
		up := newUpstream(twoLimited(&n))
		p := mustNew(t, keys(3), apipool.WithBase(up), apipool.WithClock(newClock()))
		req, _ := http.NewRequest(http.MethodPost, "http://api.test/v1/things", strings.NewReader(payload))
		resp, err := p.RoundTrip(req)
		if err != nil || resp.StatusCode != 201 {
			t.Fatalf("%v %v", resp, err)
		}
		resp.Body.Close()
		assertBodies(t, up, payload, 3)
	})

	t.Run("buffered", func(t *testing.T) {
		t.Parallel()
		var n atomic.Int32
		up := newUpstream(twoLimited(&n))
		p := mustNew(t, keys(3), apipool.WithBase(up), apipool.WithClock(newClock()), apipool.WithMaxBufferedBody(1024))
		body := &trackedReadCloser{ReadCloser: io.NopCloser(io.MultiReader(strings.NewReader(payload[:100]), strings.NewReader(payload[100:])))}
		req, _ := http.NewRequest(http.MethodPost, "http://api.test/v1/things", body)
		if req.GetBody != nil {
			t.Fatal("test set-up: the request has GetBody")
		}
		resp, err := p.RoundTrip(req)
		if err != nil || resp.StatusCode != 201 {
			t.Fatalf("%v %v", resp, err)
		}
		resp.Body.Close()
		assertBodies(t, up, payload, 3)
		if !body.closed.Load() {
			t.Fatal("the caller's body was not closed")
		}
	})

	t.Run("over the buffer limit: sent once", func(t *testing.T) {
		t.Parallel()
		var n atomic.Int32
		up := newUpstream(twoLimited(&n))
		p := mustNew(t, keys(3), apipool.WithBase(up), apipool.WithClock(newClock()), apipool.WithMaxBufferedBody(64))
		body := &trackedReadCloser{ReadCloser: io.NopCloser(io.MultiReader(strings.NewReader(payload[:10]), strings.NewReader(payload[10:])))}
		req, _ := http.NewRequest(http.MethodPost, "http://api.test/v1/things", body)
		resp, err := p.RoundTrip(req)
		if err != nil {
			t.Fatal(err)
		}
		if resp.StatusCode != 429 {
			t.Fatalf("status %d, want the first answer (429): the body cannot be resent", resp.StatusCode)
		}
		resp.Body.Close()
		assertBodies(t, up, payload, 1)
		if !body.closed.Load() {
			t.Fatal("the caller's body was not closed")
		}
	})

	t.Run("known length over the limit: sent once", func(t *testing.T) {
		t.Parallel()
		var n atomic.Int32
		up := newUpstream(twoLimited(&n))
		p := mustNew(t, keys(3), apipool.WithBase(up), apipool.WithClock(newClock()), apipool.WithMaxBufferedBody(64))
		req, _ := http.NewRequest(http.MethodPost, "http://api.test/v1/things", strings.NewReader(payload))
		req.GetBody = nil
		resp, err := p.RoundTrip(req)
		if err != nil || resp.StatusCode != 429 {
			t.Fatalf("%v %v, want the 429", resp, err)
		}
		resp.Body.Close()
		assertBodies(t, up, payload, 1)
	})

	t.Run("buffering off", func(t *testing.T) {
		t.Parallel()
		var n atomic.Int32
		up := newUpstream(twoLimited(&n))
		p := mustNew(t, keys(3), apipool.WithBase(up), apipool.WithClock(newClock()), apipool.WithMaxBufferedBody(0))
		req, _ := http.NewRequest(http.MethodPost, "http://api.test/v1/things", io.NopCloser(strings.NewReader(payload)))
		resp, err := p.RoundTrip(req)
		if err != nil || resp.StatusCode != 429 {
			t.Fatalf("%v %v, want the 429", resp, err)
		}
		resp.Body.Close()
		assertBodies(t, up, payload, 1)
	})

	t.Run("server error with WithRetryNonIdempotent", func(t *testing.T) {
		t.Parallel()
		var n atomic.Int32
		up := newUpstream(func(seen) reply {
			if n.Add(1) == 1 {
				return reply{Status: 502}
			}
			return reply{Status: 201}
		})
		p := mustNew(t, keys(2), apipool.WithBase(up), apipool.WithClock(newClock()), noBackoff, apipool.WithRetryNonIdempotent(true))
		req, _ := http.NewRequest(http.MethodPost, "http://api.test/v1/things", io.NopCloser(strings.NewReader(payload)))
		resp, err := p.RoundTrip(req)
		if err != nil || resp.StatusCode != 201 {
			t.Fatalf("%v %v", resp, err)
		}
		resp.Body.Close()
		assertBodies(t, up, payload, 2)
	})
}

func assertBodies(t *testing.T, up *fakeUpstream, want string, n int) {
	t.Helper()
	calls := up.Calls()
	if len(calls) != n {
		t.Fatalf("upstream saw %d attempts, want %d", len(calls), n)
	}
	for i, c := range calls {
		if c.Body != want {
			t.Fatalf("attempt %d: body of %d bytes %.20q..., want the %d bytes sent", i+1, len(c.Body), c.Body, len(want))
		}
	}
}

// RoundTrip never writes to the caller's request, through retries and key
// injection in every mode.
func TestCallerRequestUnchanged(t *testing.T) {
	t.Parallel()
	modes := []struct {
		name string
		opt  apipool.Option
	}{
		{"bearer", apipool.WithBearer()},
		{"header", apipool.WithHeader("X-Api-Key")},
		{"query", apipool.WithQueryParam("key")},
		{"injector", apipool.WithInjector(func(r *http.Request, s apipool.Secret) {
			r.Header.Set("X-Sig", "sig-"+s.Reveal())
			q := r.URL.Query()
			q.Set("sig", s.Reveal())
			r.URL.RawQuery = q.Encode()
		})},
	}
	for _, m := range modes {
		for _, method := range []string{http.MethodGet, http.MethodPost} {
			t.Run(m.name+" "+method, func(t *testing.T) {
				t.Parallel()
				var n atomic.Int32
				up := newUpstream(func(s seen) reply {
					switch n.Add(1) {
					case 1:
						return reply{Status: 429, Header: hdr("Retry-After", "5")}
					case 2:
						return reply{Status: 401}
					}
					return reply{Status: 200, Body: "ok"}
				})
				// The base writes to the request it is given: only the
				// pool's copy may see that.
				base := roundTripperFunc(func(r *http.Request) (*http.Response, error) {
					r.Header.Set("X-Base", "1")
					r.Header.Add("Accept", "text/plain")
					r.Header.Del("X-Trace")
					return up.RoundTrip(r)
				})
				p := mustNew(t, keys(3), apipool.WithBase(base), apipool.WithClock(newClock()), m.opt)
				const payload = `{"a":1}`
				req, _ := http.NewRequestWithContext(context.Background(), method, "http://api.test/v1/things?a=1&b=x%20y", strings.NewReader(payload))
				req.Header.Set("X-Trace", "t1")
				req.Header["Accept"] = []string{"application/json", "text/html"}
				req.Header.Set("Authorization", "Basic caller")
				before := req.Clone(context.Background())
				urlPtr, bodyBefore, getBody := req.URL, req.Body, req.GetBody

				resp, err := p.RoundTrip(req)
				if err != nil || resp.StatusCode != 200 {
					t.Fatalf("%v %v", resp, err)
				}
				resp.Body.Close()
				if len(up.Calls()) != 3 {
					t.Fatalf("%d attempts, want 3", len(up.Calls()))
				}
				if req.Method != before.Method || req.URL != urlPtr || !reflect.DeepEqual(*req.URL, *before.URL) {
					t.Errorf("URL changed: %v, want %v", req.URL, before.URL)
				}
				if !reflect.DeepEqual(req.Header, before.Header) {
					t.Errorf("header changed:\n got %v\nwant %v", req.Header, before.Header)
				}
				if req.Body != bodyBefore || reflect.ValueOf(req.GetBody).Pointer() != reflect.ValueOf(getBody).Pointer() {
					t.Error("body or GetBody field replaced")
				}
				if req.ContentLength != before.ContentLength || req.Host != before.Host || req.Response != nil || req.Form != nil || req.Trailer != nil || req.Close != before.Close {
					t.Errorf("request fields changed: %+v", req)
				}
				if resp.Request != req {
					t.Error("resp.Request is not the caller's request")
				}
				for _, c := range up.Calls() {
					if c.Secret == "" && c.Header.Get("X-Sig") == "" {
						t.Errorf("an attempt went out without a key: %+v", c)
					}
					if method == http.MethodPost && c.Body != payload {
						t.Errorf("attempt body %q", c.Body)
					}
				}
			})
		}
	}
}

// Server errors are resent on another key for idempotent requests only,
// unless the caller opts in; attempts are bounded; every answer not
// returned is closed.
func TestRetriesAfterServerErrors(t *testing.T) {
	t.Parallel()
	firstFails := func(st int) func(seen) reply {
		return func(s seen) reply {
			if s.Secret == "s0" {
				return reply{Status: st, Body: "bad gateway"}
			}
			return reply{Status: 200, Body: "ok"}
		}
	}
	send := func(t *testing.T, p *apipool.Transport, method string, h http.Header) *http.Response {
		t.Helper()
		req, _ := http.NewRequest(method, "http://api.test/v1/things", strings.NewReader("payload"))
		for k, v := range h {
			req.Header[k] = v
		}
		resp, err := p.RoundTrip(req)
		if err != nil {
			t.Fatal(err)
		}
		return resp
	}
	cases := []struct {
		name   string
		method string
		h      http.Header
		opts   []apipool.Option
		retry  bool
	}{
		{"GET", http.MethodGet, nil, nil, true},
		{"PUT", http.MethodPut, nil, nil, true},
		{"DELETE", http.MethodDelete, nil, nil, true},
		{"POST", http.MethodPost, nil, nil, false},
		{"PATCH", http.MethodPatch, nil, nil, false},
		{"POST WithRetryNonIdempotent", http.MethodPost, nil, []apipool.Option{apipool.WithRetryNonIdempotent(true)}, true},
		{"POST Idempotency-Key", http.MethodPost, hdr("Idempotency-Key", "abc"), nil, true},
		{"GET WithRetryNonIdempotent(false)", http.MethodGet, nil, []apipool.Option{apipool.WithRetryNonIdempotent(false)}, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			up := newUpstream(firstFails(502))
			opts := append([]apipool.Option{apipool.WithBase(up), apipool.WithClock(newClock()), noBackoff}, tc.opts...)
			p := mustNew(t, keys(3), opts...)
			resp := send(t, p, tc.method, tc.h)
			defer resp.Body.Close()
			calls := up.Calls()
			if tc.retry {
				if resp.StatusCode != 200 || len(calls) != 2 || calls[0].Secret != "s0" || calls[1].Secret != "s1" {
					t.Fatalf("status %d after %v, want 200 from s1 after s0's 502", resp.StatusCode, up.Secrets())
				}
				if b := up.Bodies()[0]; !b.Closed() {
					t.Fatal("the discarded 502 was not closed")
				}
				if calls[1].Body != "payload" {
					t.Fatalf("resent body %q", calls[1].Body)
				}
			} else {
				if resp.StatusCode != 502 || len(calls) != 1 {
					t.Fatalf("status %d after %d attempts, want the 502 after 1", resp.StatusCode, len(calls))
				}
				b, _ := io.ReadAll(resp.Body)
				if string(b) != "bad gateway" {
					t.Fatalf("body %q", b)
				}
			}
		})
	}

	t.Run("bounded by WithMaxAttempts", func(t *testing.T) {
		t.Parallel()
		big := strings.Repeat("x", 1<<20)
		up := newUpstream(func(s seen) reply { return reply{Status: 500, Body: big + s.Secret} })
		p := mustNew(t, keys(6), apipool.WithBase(up), apipool.WithClock(newClock()), noBackoff, apipool.WithMaxAttempts(3))
		resp, err := p.RoundTrip(newGet(t, "http://api.test/"))
		if err != nil || resp.StatusCode != 500 {
			t.Fatalf("%v %v", resp, err)
		}
		if got := up.Secrets(); !reflect.DeepEqual(got, []string{"s0", "s1", "s2"}) {
			t.Fatalf("attempts %v, want 3", got)
		}
		bodies := up.Bodies()
		for i, b := range bodies[:2] {
			if !b.Closed() {
				t.Errorf("discarded answer %d not closed", i)
			}
			if n := b.BytesRead(); n > drainLimit {
				t.Errorf("discarded answer %d: %d bytes drained, over the limit %d", i, n, drainLimit)
			}
		}
		if bodies[2].Closed() {
			t.Fatal("the answer returned was closed before the caller read it")
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if !strings.HasSuffix(string(b), "s2") || len(b) != len(big)+2 || !bodies[2].Closed() {
			t.Fatalf("returned body: %d bytes, closed %v", len(b), bodies[2].Closed())
		}
	})

	t.Run("backoff waits on the pool clock", func(t *testing.T) {
		t.Parallel()
		clk := newClock()
		up := newUpstream(firstFails(503))
		p := mustNew(t, keys(2), apipool.WithBase(up), apipool.WithClock(clk))
		ch := goRoundTrip(p, newGet(t, "http://api.test/"))
		waitTimer(t, clk)
		select {
		case r := <-ch:
			t.Fatalf("returned %+v before the backoff ended", r)
		default:
		}
		clk.Advance(apipool.DefaultBackoffMax)
		r := await(t, ch, "after the backoff")
		if r.err != nil || r.resp.StatusCode != 200 {
			t.Fatalf("%+v", r)
		}
	})
}

var errBoom = errors.New("boom: connection reset")

// Network errors (the base returns an error) follow the same rules.
func TestRetriesAfterNetworkErrors(t *testing.T) {
	t.Parallel()
	failS0 := func(s seen) reply {
		if s.Secret == "s0" {
			return reply{Err: errBoom}
		}
		return reply{Status: 200}
	}
	t.Run("GET resent", func(t *testing.T) {
		t.Parallel()
		up := newUpstream(failS0)
		p := mustNew(t, keys(2), apipool.WithBase(up), apipool.WithClock(newClock()), noBackoff)
		resp, _ := mustDo(t, p)
		if resp.StatusCode != 200 || !reflect.DeepEqual(up.Secrets(), []string{"s0", "s1"}) {
			t.Fatalf("%d after %v", resp.StatusCode, up.Secrets())
		}
	})
	t.Run("POST not resent", func(t *testing.T) {
		t.Parallel()
		up := newUpstream(failS0)
		p := mustNew(t, keys(2), apipool.WithBase(up), apipool.WithClock(newClock()), noBackoff)
		req, _ := http.NewRequest(http.MethodPost, "http://api.test/", strings.NewReader("x"))
		resp, err := p.RoundTrip(req)
		if resp != nil || !errors.Is(err, errBoom) || len(up.Calls()) != 1 {
			t.Fatalf("resp %v err %v after %d attempts, want errBoom after 1", resp, err, len(up.Calls()))
		}
	})
	t.Run("bounded", func(t *testing.T) {
		t.Parallel()
		up := newUpstream(func(seen) reply { return reply{Err: errBoom} })
		p := mustNew(t, keys(5), apipool.WithBase(up), apipool.WithClock(newClock()), noBackoff, apipool.WithMaxAttempts(3))
		resp, err := p.RoundTrip(newGet(t, "http://api.test/"))
		if resp != nil || !errors.Is(err, errBoom) || len(up.Calls()) != 3 {
			t.Fatalf("resp %v err %v after %d attempts, want errBoom after 3", resp, err, len(up.Calls()))
		}
		for _, s := range p.Snapshot() {
			if s.InFlight != 0 {
				t.Fatalf("%s: %d in flight after failed attempts", s.KeyID, s.InFlight)
			}
		}
	})
	t.Run("error then server error: the answer, closed ones discarded", func(t *testing.T) {
		t.Parallel()
		var n atomic.Int32
		up := newUpstream(func(seen) reply {
			if n.Add(1) == 1 {
				return reply{Err: errBoom}
			}
			return reply{Status: 500, Body: "down"}
		})
		p := mustNew(t, keys(3), apipool.WithBase(up), apipool.WithClock(newClock()), noBackoff, apipool.WithMaxAttempts(3))
		resp, body := mustDo(t, p)
		if resp.StatusCode != 500 || body != "down" || len(up.Calls()) != 3 {
			t.Fatalf("%d %q after %d attempts", resp.StatusCode, body, len(up.Calls()))
		}
		if b := up.Bodies(); !b[0].Closed() {
			t.Fatal("discarded 500 not closed")
		}
	})
}

// When every key is rate limited, the caller gets the last 429 itself,
// readable, not an error.
func TestFinal429ReturnedWhenNoKeyLeft(t *testing.T) {
	t.Parallel()
	up := newUpstream(func(s seen) reply {
		return reply{Status: 429, Header: hdr("Retry-After", "60"), Body: "limited " + s.Secret}
	})
	p := mustNew(t, keys(2), apipool.WithBase(up), apipool.WithClock(newClock()))
	resp, err := p.RoundTrip(newGet(t, "http://api.test/"))
	if err != nil {
		t.Fatalf("err %v, want the 429 response", err)
	}
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil || resp.StatusCode != 429 || string(b) != "limited s1" || resp.Header.Get("Retry-After") != "60" {
		t.Fatalf("%d %q %v", resp.StatusCode, b, err)
	}
	if bodies := up.Bodies(); !bodies[0].Closed() || !bodies[1].Closed() {
		t.Fatal("a 429 body left open")
	}
}

// No eligible key: an immediate *NoKeyError saying when to retry, when the
// next key frees up beyond WithMaxWait.
func TestNoKeyErrorImmediateBeyondMaxWait(t *testing.T) {
	t.Parallel()
	clk := newClock()
	up := newUpstream(bySecret(map[string]reply{
		"s0": {Status: 429, Header: hdr("Retry-After", "60")},
		"s1": {Status: 429, Header: hdr("Retry-After", "40")},
	}))
	p := mustNew(t, keys(2), apipool.WithBase(up), apipool.WithClock(clk), apipool.WithMaxWait(30*time.Second))
	if resp, _ := mustDo(t, p); resp.StatusCode != 429 {
		t.Fatalf("status %d", resp.StatusCode)
	}
	_, _, err := do(t, p)
	nk := noKey(t, err)
	if !nk.RetryAt.Equal(t0.Add(40*time.Second)) || nk.Keys != 2 || nk.Cooling != 2 {
		t.Fatalf("%+v, want RetryAt %v with 2 keys cooling", nk, t0.Add(40*time.Second))
	}
	if len(up.Calls()) != 2 {
		t.Fatalf("upstream saw %d requests, want 2", len(up.Calls()))
	}
	if !strings.Contains(err.Error(), "apipool: ") {
		t.Fatalf("message %q", err)
	}

	// All keys disabled: no time to give.
	p.Disable("k0", "")
	p.Disable("k1", "")
	_, _, err = do(t, p)
	if nk := noKey(t, err); !nk.RetryAt.IsZero() || nk.Disabled != 2 {
		t.Fatalf("%+v, want no RetryAt with 2 keys disabled", nk)
	}
}

// Within WithMaxWait, a request waits for the earliest key to free up.
func TestNoKeyWaitsWithinMaxWait(t *testing.T) {
	t.Parallel()
	clk := newClock()
	var n atomic.Int32
	up := newUpstream(func(s seen) reply {
		switch n.Add(1) {
		case 1:
			return reply{Status: 429, Header: hdr("Retry-After", "30")}
		case 2:
			return reply{Status: 429, Header: hdr("Retry-After", "20")}
		}
		return reply{Status: 200, Body: "ok " + s.Secret}
	})
	p := mustNew(t, keys(2), apipool.WithBase(up), apipool.WithClock(clk), apipool.WithMaxWait(time.Minute))
	ch := goRoundTrip(p, newGet(t, "http://api.test/"))
	waitTimer(t, clk)
	select {
	case r := <-ch:
		t.Fatalf("returned %+v without waiting", r)
	default:
	}
	clk.Advance(20 * time.Second)
	r := await(t, ch, "after the wait")
	if r.err != nil || r.resp.StatusCode != 200 || r.body != "ok s1" {
		t.Fatalf("%+v, want 200 from s1 (the first to cool down)", r)
	}
	for i, b := range up.Bodies()[:2] {
		if !b.Closed() {
			t.Fatalf("429 %d left open while waiting", i)
		}
	}
}

// Cancelling the context ends the wait at once, with context.Canceled.
func TestNoKeyWaitCanceled(t *testing.T) {
	t.Parallel()
	clk := newClock()
	up := newUpstream(func(seen) reply { return reply{Status: 429, Header: hdr("Retry-After", "20")} })
	p := mustNew(t, keys(1), apipool.WithBase(up), apipool.WithClock(clk), apipool.WithMaxWait(time.Minute))
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://api.test/", nil)
	ch := goRoundTrip(p, req)
	waitTimer(t, clk)
	cancel() // the clock never moves: only the cancellation can end the wait
	r := await(t, ch, "after cancel")
	if r.resp != nil || !errors.Is(r.err, context.Canceled) {
		t.Fatalf("%+v, want context.Canceled and no response", r)
	}
	if !up.Bodies()[0].Closed() {
		t.Fatal("the 429 left open")
	}
}

// A context deadline that ends before a key frees up: no wait at all.
func TestNoKeyContextDeadlineShorterThanWait(t *testing.T) {
	t.Parallel()
	clk := newClock()
	up := newUpstream(func(seen) reply { return reply{Status: 429, Header: hdr("Retry-After", "20")} })
	p := mustNew(t, keys(1), apipool.WithBase(up), apipool.WithClock(clk), apipool.WithMaxWait(time.Minute))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://api.test/", nil)
	r := await(t, goRoundTrip(p, req), "first request")
	if r.err != nil || r.resp.StatusCode != 429 {
		t.Fatalf("%+v, want the 429", r)
	}
	r = await(t, goRoundTrip(p, req), "second request")
	if nk := noKey(t, r.err); !nk.RetryAt.Equal(t0.Add(20 * time.Second)) {
		t.Fatalf("RetryAt %v", nk.RetryAt)
	}
	if clk.Timers() != 0 {
		t.Fatal("a wait was started")
	}
}

// The base returning a response together with an error: the caller sees
// the error only.
func TestNoResponseWithError(t *testing.T) {
	t.Parallel()
	up := newUpstream(func(seen) reply { return reply{Status: 502, Err: errBoom, Both: true} })
	p := mustNew(t, keys(2), apipool.WithBase(up), apipool.WithClock(newClock()), noBackoff)
	req, _ := http.NewRequest(http.MethodPost, "http://api.test/", strings.NewReader("x"))
	resp, err := p.RoundTrip(req)
	if resp != nil || !errors.Is(err, errBoom) {
		t.Fatalf("resp %v err %v, want only the error", resp, err)
	}
	resp, err = p.RoundTrip(newGet(t, "http://api.test/"))
	if resp != nil || err == nil {
		t.Fatalf("GET: resp %v err %v, want only the error", resp, err)
	}
}

func TestCloseIdleConnectionsForwarded(t *testing.T) {
	t.Parallel()
	up := newUpstream(nil)
	p := mustNew(t, keys(1), apipool.WithBase(up))
	p.CloseIdleConnections()
	(&http.Client{Transport: p}).CloseIdleConnections()
	if n := up.idleCalls.Load(); n != 2 {
		t.Fatalf("base CloseIdleConnections called %d times, want 2", n)
	}
	// A base without the method is fine too.
	p2 := mustNew(t, keys(1), apipool.WithBase(roundTripperFunc(up.RoundTrip)))
	p2.CloseIdleConnections()
}

// RoundTrip closes the request body on every path, including when it
// sends nothing.
func TestRequestBodyAlwaysClosed(t *testing.T) {
	t.Parallel()
	newBodyReq := func(withGetBody bool) (*http.Request, *trackedReadCloser) {
		b := &trackedReadCloser{ReadCloser: io.NopCloser(strings.NewReader("payload"))}
		req, _ := http.NewRequest(http.MethodPost, "http://api.test/", b)
		if withGetBody {
			req.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(strings.NewReader("payload")), nil }
		}
		return req, b
	}
	for _, gb := range []bool{false, true} {
		name := "no GetBody"
		if gb {
			name = "GetBody"
		}
		t.Run(name+": no key available", func(t *testing.T) {
			t.Parallel()
			p := mustNew(t, keys(2), apipool.WithBase(newUpstream(nil)), apipool.WithClock(newClock()))
			p.Disable("k0", "")
			p.Disable("k1", "")
			req, b := newBodyReq(gb)
			_, err := p.RoundTrip(req)
			noKey(t, err)
			if !b.closed.Load() {
				t.Fatal("body not closed")
			}
		})
		t.Run(name+": pool closed", func(t *testing.T) {
			t.Parallel()
			p := mustNew(t, keys(1), apipool.WithBase(newUpstream(nil)))
			if err := p.Close(context.Background()); err != nil {
				t.Fatal(err)
			}
			req, b := newBodyReq(gb)
			if _, err := p.RoundTrip(req); !errors.Is(err, apipool.ErrClosed) {
				t.Fatalf("err %v, want ErrClosed", err)
			}
			if !b.closed.Load() {
				t.Fatal("body not closed")
			}
		})
		t.Run(name+": sent and retried", func(t *testing.T) {
			t.Parallel()
			up := newUpstream(bySecret(map[string]reply{"s0": {Status: 429, Header: hdr("Retry-After", "9")}}))
			p := mustNew(t, keys(2), apipool.WithBase(up), apipool.WithClock(newClock()))
			req, b := newBodyReq(gb)
			resp, err := p.RoundTrip(req)
			if err != nil || resp.StatusCode != 200 {
				t.Fatal(resp, err)
			}
			resp.Body.Close()
			if !b.closed.Load() {
				t.Fatal("body not closed")
			}
		})
	}
}

func TestCloseThenRoundTrip(t *testing.T) {
	t.Parallel()
	up := newUpstream(nil)
	p := mustNew(t, keys(1), apipool.WithBase(up))
	mustDo(t, p)
	if err := p.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := p.Close(context.Background()); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	resp, err := p.RoundTrip(newGet(t, "http://api.test/"))
	if resp != nil || !errors.Is(err, apipool.ErrClosed) {
		t.Fatalf("resp %v err %v, want ErrClosed", resp, err)
	}
	if len(up.Calls()) != 1 {
		t.Fatal("a request went out after Close")
	}
}

// Bad requests are errors, not panics.
func TestRoundTripBadRequest(t *testing.T) {
	t.Parallel()
	p := mustNew(t, keys(1), apipool.WithBase(newUpstream(nil)))
	if resp, err := p.RoundTrip(nil); resp != nil || err == nil {
		t.Fatal("nil request accepted")
	}
	if resp, err := p.RoundTrip(&http.Request{Method: "GET"}); resp != nil || err == nil {
		t.Fatal("request without URL accepted")
	}
}

// The response body frees its key's slot once, however it is finished.
func TestResponseBodyReleasesKey(t *testing.T) {
	t.Parallel()
	up := newUpstream(func(seen) reply { return reply{Status: 200, Body: "hello"} })
	p := mustNew(t, keys(1), apipool.WithBase(up))
	resp, err := p.RoundTrip(newGet(t, "http://api.test/"))
	if err != nil {
		t.Fatal(err)
	}
	if n := p.Snapshot()[0].InFlight; n != 1 {
		t.Fatalf("in flight %d while the body is open", n)
	}
	io.ReadAll(resp.Body)
	resp.Body.Close()
	resp.Body.Close()
	if n := p.Snapshot()[0].InFlight; n != 0 {
		t.Fatalf("in flight %d after EOF and two Closes", n)
	}
}

// drainLimit is how much of a discarded answer the pool may read (64 KiB,
// the bound in options.go), to reuse the connection.
const drainLimit = 64 << 10

// Every key revoked at once: no key is disabled (the request is at fault
// when two keys reject it), each request gets the 401, and the logger
// says so once a minute at most, without a secret.
func TestEveryKeyRevokedIsLogged(t *testing.T) {
	t.Parallel()
	up := newUpstream(func(seen) reply { return reply{Status: 401, Body: "invalid key"} })
	clk := newClock()
	var logs syncBuffer
	ks := []apipool.Key{{ID: "a", Secret: "canary-secret-a"}, {ID: "b", Secret: "canary-secret-b"}, {ID: "c", Secret: "canary-secret-c"}}
	p := mustNew(t, ks, apipool.WithBase(up), apipool.WithClock(clk),
		apipool.WithLogger(slog.New(slog.NewJSONHandler(&logs, nil))))
	warnings := func() int { return strings.Count(logs.String(), "every key may be revoked") }
	for i := 0; i < 5; i++ {
		if resp, _ := mustDo(t, p); resp.StatusCode != 401 {
			t.Fatalf("request %d: %d, want the upstream's 401", i, resp.StatusCode)
		}
	}
	for _, s := range p.Snapshot() {
		if s.Disabled {
			t.Fatalf("key %s disabled; with every key rejecting, the requests are at fault", s.KeyID)
		}
	}
	if n := warnings(); n != 1 {
		t.Fatalf("%d warnings after 5 requests rejected by two keys each, want 1 (once a minute):\n%s", n, logs.String())
	}
	if !strings.Contains(logs.String(), "revoked") || !strings.Contains(logs.String(), `"requests_so_far":1`) {
		t.Errorf("the warning does not say what it may mean: %s", logs.String())
	}
	clk.Advance(time.Minute)
	mustDo(t, p)
	if n := warnings(); n != 2 {
		t.Fatalf("%d warnings a minute later, want 2:\n%s", n, logs.String())
	}
	if !strings.Contains(logs.String(), `"requests_so_far":6`) {
		t.Errorf("the second warning does not count the requests so far: %s", logs.String())
	}
	if strings.Contains(logs.String(), "canary") {
		t.Fatalf("a secret in the log: %s", logs.String())
	}
	if strings.Contains(logs.String(), "key disabled") {
		t.Fatalf("a key logged as disabled, though every disable was taken back: %s", logs.String())
	}
}
