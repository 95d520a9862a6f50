package dashboard_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"math"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/apipool-ng/apipool"
	"github.com/apipool-ng/apipool/dashboard"
	"github.com/apipool-ng/apipool/internal/fakeclock"
	"github.com/apipool-ng/apipool/recorder"
	"github.com/apipool-ng/apipool/recorder/memory"
	"github.com/apipool-ng/apipool/status"
)

// t0 is when the tests' events happen; the dashboard's clock reads now.
var (
	t0  = time.Date(2026, 3, 2, 10, 0, 0, 0, time.UTC)
	now = t0.Add(10*time.Minute + 30*time.Second)
)

const canary = "sk-CANARY-7f3a9c"

// fixture is a pool of five keys (echo's secret is the canary) recording
// into a memory store that the test fills with events at known times.
type fixture struct {
	pool  *apipool.Transport
	store *memory.Store
}

func newFixture(t *testing.T, opts ...apipool.Option) *fixture {
	t.Helper()
	store, err := memory.New(memory.WithClock(fakeclock.New(now)))
	if err != nil {
		t.Fatal(err)
	}
	keys := []apipool.Key{
		{ID: "alpha", Secret: "sk-alpha-1"},
		{ID: "bravo", Secret: "sk-bravo-2", PerDay: 100},
		{ID: "charlie", Secret: "sk-charlie-3"},
		{ID: "delta", Secret: "sk-delta-4"},
		{ID: "echo", Secret: canary},
	}
	pool, err := apipool.New(keys, append([]apipool.Option{apipool.WithRecorder(store)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pool.Close(context.Background()) })
	return &fixture{pool: pool, store: store}
}

func (f *fixture) record(at time.Time, key string, st status.Status, latency time.Duration, n int) {
	for range n {
		f.store.Record(recorder.Event{Time: at, KeyID: key, Status: st, Latency: latency, Attempt: 1, RequestBytes: -1, ResponseBytes: -1})
	}
}

// standard fills the store: alpha 10 successes at 10ms and 2 rate limits
// 5 minutes before now, bravo 5 successes at 40ms a minute before now,
// 3 NoKeyErrors, and 4 alpha successes 2 hours before (outside 1h).
func (f *fixture) standard() {
	f.record(now.Add(-5*time.Minute), "alpha", status.Success, 10*time.Millisecond, 10)
	f.record(now.Add(-5*time.Minute), "alpha", status.ReachLimit, time.Millisecond, 2)
	f.record(now.Add(-time.Minute), "bravo", status.Success, 40*time.Millisecond, 5)
	f.record(now.Add(-2*time.Minute), "", status.NoKeyAvailable, 0, 3)
	f.record(now.Add(-2*time.Hour), "alpha", status.Success, 10*time.Millisecond, 4)
}

func (f *fixture) handler(t *testing.T, opts ...dashboard.Option) http.Handler {
	t.Helper()
	h, err := dashboard.New(f.pool, append([]dashboard.Option{dashboard.WithClock(fakeclock.New(now))}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	return h
}

func do(t *testing.T, h http.Handler, method, target string, hdr map[string]string) *httptest.ResponseRecorder {
	t.Helper()
	r := httptest.NewRequest(method, target, nil)
	for k, v := range hdr {
		r.Header.Set(k, v)
	}
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	return w
}

func getJSON[T any](t *testing.T, h http.Handler, target string) T {
	t.Helper()
	w := do(t, h, "GET", target, nil)
	if w.Code != 200 {
		t.Fatalf("GET %s: %d %s", target, w.Code, w.Body)
	}
	if ct := w.Header().Get("Content-Type"); ct != "application/json" {
		t.Fatalf("GET %s: Content-Type %q", target, ct)
	}
	var v T
	if err := json.Unmarshal(w.Body.Bytes(), &v); err != nil {
		t.Fatalf("GET %s: %v\n%s", target, err, w.Body)
	}
	return v
}

type keysBody struct {
	Time       time.Time          `json:"time"`
	Window     string             `json:"window"`
	Stats      bool               `json:"stats"`
	StatsError string             `json:"stats_error"`
	Keys       []dashboard.KeyRow `json:"keys"`
}

type totalsBody struct {
	Keys                int            `json:"keys"`
	States              map[string]int `json:"states"`
	Requests            *int64         `json:"requests"`
	PerSecond           *float64       `json:"per_second"`
	LastMinutePerSecond *float64       `json:"last_minute_per_second"`
	SuccessShare        *float64       `json:"success_share"`
	RateLimitedShare    *float64       `json:"rate_limited_share"`
	NoKeyErrors         *int64         `json:"no_key_errors"`
	Waits               *int64         `json:"waits"`
	StatsError          string         `json:"stats_error"`
}

type usageBody struct {
	Stats        bool               `json:"stats"`
	Step         int64              `json:"step_seconds"`
	Times        []int64            `json:"times"`
	ByKey        []dashboard.Series `json:"by_key"`
	ByStatus     []dashboard.Series `json:"by_status"`
	LatencyStep  int64              `json:"latency_step_seconds"`
	LatencyTimes []int64            `json:"latency_times"`
	Latency      []dashboard.Series `json:"latency"`
}

func near(got *float64, want, tol float64) bool {
	return got != nil && math.Abs(*got-want) <= tol
}

// TestKeysAPI checks the key table's rows: one per key in the pool's
// order, states from the snapshot, usage over the window from the stats.
func TestKeysAPI(t *testing.T) {
	f := newFixture(t)
	f.standard()
	if err := f.pool.Disable("echo", "revoked upstream"); err != nil {
		t.Fatal(err)
	}
	h := f.handler(t)
	body := getJSON[keysBody](t, h, "/api/keys")
	if body.Window != "1h" || !body.Stats || body.StatsError != "" || !body.Time.Equal(now) {
		t.Fatalf("header fields: %+v", body)
	}
	var ids []string
	for _, k := range body.Keys {
		ids = append(ids, k.ID)
		if k.Fingerprint == "" {
			t.Errorf("%s: no fingerprint", k.ID)
		}
	}
	if strings.Join(ids, ",") != "alpha,bravo,charlie,delta,echo" {
		t.Fatalf("rows %v, want the pool's keys in order", ids)
	}
	a, b, c, e := body.Keys[0], body.Keys[1], body.Keys[2], body.Keys[4]
	if a.State != "active" || a.Breaker != "closed" || a.QuotaLeft != nil || a.ProviderRemaining != nil {
		t.Errorf("alpha: %+v", a)
	}
	if *a.Requests != 12 || *a.Succeeded != 10 || *a.RateLimited != 2 {
		t.Errorf("alpha counts: requests %d succeeded %d rate limited %d, want 12 10 2 (the 2h-old events are outside 1h)", *a.Requests, *a.Succeeded, *a.RateLimited)
	}
	if !near(a.SuccessShare, 10.0/12, 1e-9) || !near(a.RateLimitedShare, 2.0/12, 1e-9) {
		t.Errorf("alpha shares: %v %v", *a.SuccessShare, *a.RateLimitedShare)
	}
	// The memory store's quantiles are within 6.25% of the true value.
	if !near(a.P50MS, 10, 0.7) || !near(a.P99MS, 10, 0.7) || !near(b.P50MS, 40, 2.6) {
		t.Errorf("latencies: alpha p50 %v p99 %v, bravo p50 %v", a.P50MS, a.P99MS, b.P50MS)
	}
	if b.QuotaLeft == nil || *b.QuotaLeft != 100 {
		t.Errorf("bravo quota_left %v, want 100", b.QuotaLeft)
	}
	if *c.Requests != 0 || c.SuccessShare != nil || c.P50MS != nil {
		t.Errorf("charlie without requests: %+v", c)
	}
	if e.State != "disabled" || !e.Disabled || e.DisabledReason != "revoked upstream" || e.DisabledAt == nil {
		t.Errorf("echo: %+v", e)
	}

	body = getJSON[keysBody](t, h, "/api/keys?window=24h")
	if *body.Keys[0].Requests != 16 {
		t.Errorf("alpha over 24h: %d requests, want 16", *body.Keys[0].Requests)
	}
	body = getJSON[keysBody](t, h, "/api/keys?window=15m")
	if *body.Keys[0].Requests != 12 || *body.Keys[1].Requests != 5 {
		t.Errorf("over 15m: alpha %d bravo %d, want 12 5", *body.Keys[0].Requests, *body.Keys[1].Requests)
	}
}

// TestKeysAPICooling checks that a key cooling down after a 429 shows as
// cooling, until when its Retry-After says.
func TestKeysAPICooling(t *testing.T) {
	upstream := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") == "Bearer sk-alpha-1" {
			w.Header().Set("Retry-After", "3600")
			w.WriteHeader(http.StatusTooManyRequests)
			return
		}
		io.WriteString(w, "ok")
	}))
	defer upstream.Close()
	f := newFixture(t, apipool.WithStrategy(apipool.RoundRobin))
	client := &http.Client{Transport: f.pool}
	before := time.Now()
	for range 3 { // round robin: the first request meets alpha
		resp, err := client.Get(upstream.URL)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
	}
	body := getJSON[keysBody](t, f.handler(t), "/api/keys")
	a := body.Keys[0]
	if a.State != "cooling" || a.CoolingUntil == nil {
		t.Fatalf("alpha after a 429 with Retry-After 3600: %+v", a)
	}
	if a.CoolingReason == "" || a.Hold == "" || a.HoldUntil == nil {
		t.Errorf("alpha cooling: reason %q, hold %q until %v; want them set", a.CoolingReason, a.Hold, a.HoldUntil)
	}
	if d := a.CoolingUntil.Sub(before); d < 3590*time.Second || d > 3700*time.Second {
		t.Errorf("alpha cools until %v, %v after the request; want about an hour", a.CoolingUntil, d)
	}
}

// TestTotalsAPI checks the pool totals.
func TestTotalsAPI(t *testing.T) {
	f := newFixture(t)
	f.standard()
	f.pool.Disable("echo", "")
	body := getJSON[totalsBody](t, f.handler(t), "/api/totals")
	if body.Keys != 5 || body.States["active"] != 4 || body.States["disabled"] != 1 {
		t.Errorf("keys %d states %v", body.Keys, body.States)
	}
	if *body.Requests != 20 || *body.NoKeyErrors != 3 {
		t.Errorf("requests %d no-key errors %d, want 20 and 3", *body.Requests, *body.NoKeyErrors)
	}
	if !near(body.SuccessShare, 15.0/20, 1e-9) || !near(body.RateLimitedShare, 2.0/20, 1e-9) {
		t.Errorf("shares %v %v", *body.SuccessShare, *body.RateLimitedShare)
	}
	if !near(body.PerSecond, 20.0/3600, 1e-9) {
		t.Errorf("per second %v, want %v", *body.PerSecond, 20.0/3600)
	}
	if !near(body.LastMinutePerSecond, 5.0/60, 1e-9) { // bravo's 5, 60s before now
		t.Errorf("last minute per second %v, want %v", *body.LastMinutePerSecond, 5.0/60)
	}
	if body.Waits == nil || *body.Waits != f.pool.Waits() {
		t.Errorf("waits %v without WithWaits, want the pool's own count %d", body.Waits, f.pool.Waits())
	}
	body = getJSON[totalsBody](t, f.handler(t, dashboard.WithWaits(func() int64 { return 7 })), "/api/totals")
	if body.Waits == nil || *body.Waits != 7 {
		t.Errorf("waits %v with WithWaits(7)", body.Waits)
	}
}

func total(s dashboard.Series) float64 {
	var n float64
	for _, v := range s.Values {
		if v != nil {
			n += *v
		}
	}
	return n
}

// TestUsageAPI checks the charts' series: bucket times, requests per
// minute by status and key in the right buckets, latency per key.
func TestUsageAPI(t *testing.T) {
	f := newFixture(t)
	f.standard()
	f.record(now.Add(-3*time.Minute), "charlie", status.ServerError, 5*time.Millisecond, 4)
	h := f.handler(t)

	u := getJSON[usageBody](t, h, "/api/usage?window=15m")
	if !u.Stats || u.Step != 60 || len(u.Times) != 15 || u.LatencyStep != 60 || len(u.LatencyTimes) != 15 {
		t.Fatalf("15m: step %d, %d times, latency step %d, %d latency times", u.Step, len(u.Times), u.LatencyStep, len(u.LatencyTimes))
	}
	if last := time.Unix(u.Times[14], 0); !last.Equal(now.Truncate(time.Minute)) {
		t.Errorf("last bucket %v, want the one holding now (%v)", last, now.Truncate(time.Minute))
	}
	want := map[string]float64{"success": 15, "rate limited": 2, "failed": 4, "no key available": 3}
	var names []string
	for _, s := range u.ByStatus {
		names = append(names, s.Name)
		if len(s.Values) != 15 || total(s) != want[s.Name] {
			t.Errorf("status %q: %d values adding to %v, want 15 adding to %v", s.Name, len(s.Values), total(s), want[s.Name])
		}
	}
	if strings.Join(names, ",") != "success,rate limited,failed,no key available" {
		t.Errorf("status series %v", names)
	}
	// alpha's 12 are in the bucket 5 minutes before now's: index 9.
	idx := 14 - 5
	if v := u.ByStatus[0].Values[idx]; v == nil || *v != 10 {
		t.Errorf("success at index %d: %v, want 10", idx, v)
	}
	var keys []string
	for _, s := range u.ByKey {
		keys = append(keys, s.Name)
	}
	if strings.Join(keys, ",") != "alpha,bravo,charlie" {
		t.Errorf("per-key series %v, want the keys with events, busiest first", keys)
	}
	if len(u.Latency) != 6 || u.Latency[0].Name != "alpha p50" || u.Latency[1].Name != "alpha p99" {
		t.Fatalf("latency series: %d, first %q", len(u.Latency), u.Latency[0].Name)
	}
	for i, v := range u.Latency[0].Values {
		if (i == idx) != (v != nil) || (v != nil && math.Abs(*v-10) > 0.7) {
			t.Errorf("alpha p50 at %d: %v; want 10ms at %d only", i, v, idx)
		}
	}
	if c := u.Latency[4]; c.Name != "charlie p50" || total(c) != 0 {
		t.Errorf("charlie had no success, its latency series should be empty: %+v", c)
	}

	// Per minute over wider steps: 24h has 10-minute buckets, so counts are
	// divided by 10.
	u = getJSON[usageBody](t, h, "/api/usage?window=24h")
	if u.Step != 600 || len(u.Times) != 144 || u.LatencyStep != 3600 || len(u.LatencyTimes) != 24 {
		t.Fatalf("24h: step %d, %d times, latency step %d, %d latency times", u.Step, len(u.Times), u.LatencyStep, len(u.LatencyTimes))
	}
	if got := total(u.ByStatus[0]); math.Abs(got-1.9) > 1e-9 { // 19 successes / 10 minutes
		t.Errorf("24h success per minute adds to %v, want 1.9", got)
	}

	u = getJSON[usageBody](t, f.handler(t, dashboard.WithChartKeys(1)), "/api/usage?window=1h")
	if len(u.ByKey) != 2 || u.ByKey[0].Name != "alpha" || u.ByKey[1].Name != "other keys" || total(u.ByKey[1]) != 9 {
		t.Errorf("WithChartKeys(1): %+v", u.ByKey)
	}
	if len(u.Latency) != 2 {
		t.Errorf("WithChartKeys(1): %d latency series, want 2", len(u.Latency))
	}
}

func TestBadWindow(t *testing.T) {
	h := newFixture(t).handler(t)
	for _, p := range []string{"/api/keys?window=2h", "/api/totals?window=x", "/api/usage?window=1H", "/api/clients?window=7d"} {
		w := do(t, h, "GET", p, nil)
		if w.Code != 400 || !strings.Contains(w.Body.String(), "window must be one of 15m, 1h, 24h") {
			t.Errorf("GET %s: %d %s", p, w.Code, w.Body)
		}
	}
}

// TestWithoutStats: a pool that records nowhere still gets its key table;
// usage fields are null.
func TestWithoutStats(t *testing.T) {
	f := newFixture(t, apipool.WithRecorder(nil))
	h := f.handler(t)
	k := getJSON[keysBody](t, h, "/api/keys")
	if k.Stats || len(k.Keys) != 5 || k.Keys[0].Requests != nil {
		t.Errorf("keys without stats: %+v", k)
	}
	u := getJSON[usageBody](t, h, "/api/usage")
	if u.Stats || len(u.ByStatus) != 0 || len(u.Times) != 60 {
		t.Errorf("usage without stats: %+v", u)
	}
	tot := getJSON[totalsBody](t, h, "/api/totals")
	if tot.Requests != nil || tot.Keys != 5 {
		t.Errorf("totals without stats: %+v", tot)
	}
}

type failingStats struct{}

var errStore = errors.New("store down")

func (failingStats) UsageByKey(context.Context, recorder.Query) (map[string]int64, error) {
	return nil, errStore
}
func (failingStats) UsageCount(context.Context, recorder.Query) (int64, error) { return 0, errStore }
func (failingStats) LatencyByKey(context.Context, recorder.Query) (map[string]recorder.Latency, error) {
	return nil, errStore
}
func (failingStats) Series(context.Context, recorder.Query, time.Duration) (map[string][]recorder.Bucket, error) {
	return nil, errStore
}

// TestStatsError: when the store fails, the key table still shows the
// keys' states, with the error; the charts' API answers 503.
func TestStatsError(t *testing.T) {
	h := newFixture(t).handler(t, dashboard.WithStats(failingStats{}))
	k := getJSON[keysBody](t, h, "/api/keys")
	if len(k.Keys) != 5 || k.Keys[0].State != "active" || !strings.Contains(k.StatsError, "store down") {
		t.Errorf("keys with a failing store: %+v", k)
	}
	if tot := getJSON[totalsBody](t, h, "/api/totals"); !strings.Contains(tot.StatsError, "store down") {
		t.Errorf("totals with a failing store: %+v", tot)
	}
	if w := do(t, h, "GET", "/api/usage", nil); w.Code != 503 || !strings.Contains(w.Body.String(), "store down") {
		t.Errorf("usage with a failing store: %d %s", w.Code, w.Body)
	}
}

// TestSecurityHeaders checks the headers of every kind of answer, and
// that the page needs nothing the policy forbids: no inline script, no
// style element or attribute, nothing from another origin.
func TestSecurityHeaders(t *testing.T) {
	f := newFixture(t)
	h := f.handler(t, dashboard.WithActions())
	auth := f.handler(t, dashboard.WithAuthToken("tok"))
	cases := []struct {
		h      http.Handler
		method string
		path   string
		code   int
	}{
		{h, "GET", "/", 200},
		{h, "GET", "/static/app.js", 200},
		{h, "GET", "/static/app.css", 200},
		{h, "GET", "/static/vendor/uplot/uPlot.iife.min.js", 200},
		{h, "GET", "/api/keys", 200},
		{h, "GET", "/api/usage", 200},
		{h, "GET", "/api/clients", 200},
		{h, "POST", "/api/clients", 405},
		{h, "GET", "/nope", 404},
		{h, "GET", "/static/", 404},
		{h, "GET", "/static/vendor/", 404},
		{h, "POST", "/api/keys/alpha/disable", 403},
		{h, "DELETE", "/api/keys", 405},
		{auth, "GET", "/", 401},
	}
	for _, c := range cases {
		w := do(t, c.h, c.method, c.path, nil)
		if w.Code != c.code {
			t.Errorf("%s %s: %d, want %d", c.method, c.path, w.Code, c.code)
		}
		hd := w.Header()
		if csp := hd.Get("Content-Security-Policy"); csp != dashboard.ContentSecurityPolicy {
			t.Errorf("%s %s: CSP %q", c.method, c.path, csp)
		}
		for k, v := range map[string]string{"X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer", "X-Frame-Options": "DENY"} {
			if hd.Get(k) != v {
				t.Errorf("%s %s: %s %q, want %q", c.method, c.path, k, hd.Get(k), v)
			}
		}
	}
	csp := dashboard.ContentSecurityPolicy
	for _, want := range []string{"default-src 'none'", "script-src 'self'", "style-src 'self'", "frame-ancestors 'none'", "connect-src 'self'"} {
		if !strings.Contains(csp, want) {
			t.Errorf("CSP lacks %q", want)
		}
	}
	if strings.Contains(csp, "unsafe") {
		t.Errorf("CSP allows unsafe sources: %s", csp)
	}

	page := do(t, h, "GET", "/", nil)
	if ct := page.Header().Get("Content-Type"); ct != "text/html; charset=utf-8" {
		t.Errorf("page Content-Type %q", ct)
	}
	html := page.Body.String()
	for _, m := range regexp.MustCompile(`(?is)<script[^>]*>`).FindAllString(html, -1) {
		if !regexp.MustCompile(`src="static/[^"]+"`).MatchString(m) {
			t.Errorf("page has a script tag without a local src: %s", m)
		}
	}
	if regexp.MustCompile(`(?is)<script[^>]*>[^<]+</script>`).MatchString(html) {
		t.Errorf("page has inline script")
	}
	if regexp.MustCompile(`(?i)<style|\sstyle=|\son[a-z]+=|https?://|//cdn`).MatchString(html) {
		t.Errorf("page has inline style, event handler attributes or absolute URLs:\n%s", html)
	}
	if js := do(t, h, "GET", "/static/app.js", nil); !strings.HasPrefix(js.Header().Get("Content-Type"), "text/javascript") {
		t.Errorf("app.js Content-Type %q", js.Header().Get("Content-Type"))
	}
}

func TestAuth(t *testing.T) {
	f := newFixture(t)
	bearer := f.handler(t, dashboard.WithAuthToken("s3cret-token"))
	basic := f.handler(t, dashboard.WithBasicAuth("ops", "pa55word"))
	both := f.handler(t, dashboard.WithAuthToken("s3cret-token"), dashboard.WithBasicAuth("ops", "pa55word"))
	basicHdr := func(u, p string) map[string]string {
		r := httptest.NewRequest("GET", "/", nil)
		r.SetBasicAuth(u, p)
		return map[string]string{"Authorization": r.Header.Get("Authorization")}
	}
	cases := []struct {
		name string
		h    http.Handler
		hdr  map[string]string
		code int
	}{
		{"bearer none", bearer, nil, 401},
		{"bearer wrong", bearer, map[string]string{"Authorization": "Bearer s3cret-tokeN"}, 401},
		{"bearer prefix", bearer, map[string]string{"Authorization": "Bearer s3cret"}, 401},
		{"bearer longer", bearer, map[string]string{"Authorization": "Bearer s3cret-token-and-more"}, 401},
		{"bearer as basic", bearer, basicHdr("s3cret-token", "s3cret-token"), 401},
		{"bearer right", bearer, map[string]string{"Authorization": "Bearer s3cret-token"}, 200},
		{"bearer lower-case scheme", bearer, map[string]string{"Authorization": "bearer s3cret-token"}, 200},
		{"bearer upper-case scheme", bearer, map[string]string{"Authorization": "BEARER s3cret-token"}, 200},
		{"bearer two spaces", bearer, map[string]string{"Authorization": "Bearer  s3cret-token"}, 200},
		{"bearer other scheme", bearer, map[string]string{"Authorization": "Token s3cret-token"}, 401},
		{"bearer no space", bearer, map[string]string{"Authorization": "Bearers3cret-token"}, 401},
		{"basic lower-case scheme", basic, map[string]string{"Authorization": "basic " + basicHdr("ops", "pa55word")["Authorization"][len("Basic "):]}, 200},
		{"basic none", basic, nil, 401},
		{"basic wrong password", basic, basicHdr("ops", "pa55wordx"), 401},
		{"basic wrong user", basic, basicHdr("opx", "pa55word"), 401},
		{"basic swapped", basic, basicHdr("pa55word", "ops"), 401},
		{"basic right", basic, basicHdr("ops", "pa55word"), 200},
		{"both, bearer", both, map[string]string{"Authorization": "Bearer s3cret-token"}, 200},
		{"both, basic", both, basicHdr("ops", "pa55word"), 200},
		{"both, none", both, nil, 401},
	}
	for _, c := range cases {
		for _, path := range []string{"/", "/api/keys", "/api/clients", "/static/app.js"} {
			w := do(t, c.h, "GET", path, c.hdr)
			if w.Code != c.code {
				t.Errorf("%s: GET %s: %d, want %d", c.name, path, w.Code, c.code)
			}
			if c.code == 401 && w.Header().Get("WWW-Authenticate") == "" {
				t.Errorf("%s: 401 without WWW-Authenticate", c.name)
			}
			if c.code == 401 && strings.Contains(w.Body.String(), "alpha") {
				t.Errorf("%s: 401 body shows data: %s", c.name, w.Body)
			}
		}
	}
	w := do(t, basic, "GET", "/", nil)
	if got := w.Header().Get("WWW-Authenticate"); !strings.HasPrefix(got, "Basic ") {
		t.Errorf("basic auth challenge %q", got)
	}
}

var csrfAttr = regexp.MustCompile(`data-csrf="([0-9a-f]*)"`)

func csrfOf(t *testing.T, h http.Handler) string {
	t.Helper()
	m := csrfAttr.FindStringSubmatch(do(t, h, "GET", "/", nil).Body.String())
	if m == nil {
		t.Fatal("page has no data-csrf attribute")
	}
	return m[1]
}

// TestActions checks that actions are off by default, POST only, and
// refused without the page's CSRF token or from another origin.
func TestActions(t *testing.T) {
	f := newFixture(t)
	off := f.handler(t)
	if tok := csrfOf(t, off); tok != "" {
		t.Errorf("page without actions carries a CSRF token %q", tok)
	}
	if w := do(t, off, "POST", "/api/keys/alpha/disable", nil); w.Code != 403 || !strings.Contains(w.Body.String(), "actions are off") {
		t.Errorf("action with actions off: %d %s", w.Code, w.Body)
	}
	if s := f.pool.Snapshot()[0]; s.Disabled {
		t.Fatal("alpha disabled by a refused action")
	}

	h := f.handler(t, dashboard.WithActions())
	tok := csrfOf(t, h)
	if len(tok) != 64 {
		t.Fatalf("CSRF token %q, want 32 random bytes in hex", tok)
	}
	if other := csrfOf(t, f.handler(t, dashboard.WithActions())); other == tok {
		t.Errorf("two handlers share a CSRF token")
	}
	refused := []struct {
		name   string
		method string
		hdr    map[string]string
		code   int
	}{
		{"GET", "GET", map[string]string{dashboard.CSRFHeader: tok}, 405},
		{"no token", "POST", nil, 403},
		{"wrong token", "POST", map[string]string{dashboard.CSRFHeader: strings.Repeat("0", 64)}, 403},
		{"cross-site", "POST", map[string]string{dashboard.CSRFHeader: tok, "Sec-Fetch-Site": "cross-site"}, 403},
		{"other origin", "POST", map[string]string{dashboard.CSRFHeader: tok, "Origin": "https://evil.example"}, 403},
	}
	for _, c := range refused {
		w := do(t, h, c.method, "/api/keys/alpha/disable", c.hdr)
		if w.Code != c.code {
			t.Errorf("%s: %d %s, want %d", c.name, w.Code, w.Body, c.code)
		}
		if f.pool.Snapshot()[0].Disabled {
			t.Fatalf("%s: alpha disabled by a refused request", c.name)
		}
	}

	ok := map[string]string{dashboard.CSRFHeader: tok, "Sec-Fetch-Site": "same-origin"}
	if w := do(t, h, "POST", "/api/keys/alpha/disable", ok); w.Code != 200 {
		t.Fatalf("disable: %d %s", w.Code, w.Body)
	}
	if s := f.pool.Snapshot()[0]; !s.Disabled || s.DisabledReason != dashboard.DisabledReason {
		t.Errorf("after disable: %+v", s)
	}
	if w := do(t, h, "POST", "/api/keys/alpha/enable", ok); w.Code != 200 {
		t.Fatalf("enable: %d %s", w.Code, w.Body)
	}
	if s := f.pool.Snapshot()[0]; s.Disabled || s.State != "active" {
		t.Errorf("after enable: %+v", s)
	}
	if w := do(t, h, "POST", "/api/keys/zulu/disable", ok); w.Code != 404 || !strings.Contains(w.Body.String(), `no key with ID \"zulu\"`) {
		t.Errorf("unknown key: %d %s", w.Code, w.Body)
	}
	if w := do(t, h, "POST", "/api/probe", ok); w.Code != 409 || !strings.Contains(w.Body.String(), "no probe") {
		t.Errorf("probe without a probe: %d %s", w.Code, w.Body)
	}
}

// TestProbeAction runs the probe action against an upstream that rejects
// one key, and checks the report and that the report shows no secret.
func TestProbeAction(t *testing.T) {
	upstream := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") == "Bearer "+canary {
			http.Error(w, "revoked "+r.Header.Get("Authorization"), http.StatusUnauthorized)
			return
		}
		io.WriteString(w, "ok")
	}))
	defer upstream.Close()
	f := newFixture(t, apipool.WithProbe(apipool.ProbeRequest("GET", upstream.URL), 0))
	h := f.handler(t, dashboard.WithActions())
	w := do(t, h, "POST", "/api/probe", map[string]string{dashboard.CSRFHeader: csrfOf(t, h)})
	if w.Code != 200 {
		t.Fatalf("probe: %d %s", w.Code, w.Body)
	}
	var res struct {
		Probes []struct {
			KeyID  string `json:"key_id"`
			Usable bool   `json:"usable"`
			Status string `json:"status"`
		} `json:"probes"`
	}
	json.Unmarshal(w.Body.Bytes(), &res)
	if len(res.Probes) != 5 || !res.Probes[0].Usable || res.Probes[4].Usable || res.Probes[4].Status != "invalid key" {
		t.Errorf("probe report: %+v", res.Probes)
	}
	if strings.Contains(w.Body.String(), canary) {
		t.Errorf("probe report shows a secret: %s", w.Body)
	}
	if s := f.pool.Snapshot()[4]; !s.Disabled {
		t.Errorf("echo not disabled after its probe failed: %+v", s)
	}
}

// TestNeverShowsSecret sends traffic with a key whose secret is a canary
// (rejected upstream, so it is disabled with a reason) and checks that no
// answer of the dashboard holds the canary.
func TestNeverShowsSecret(t *testing.T) {
	upstream := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.Contains(r.Header.Get("Authorization"), canary) {
			http.Error(w, "bad key "+r.Header.Get("Authorization"), http.StatusUnauthorized)
			return
		}
		io.WriteString(w, "ok")
	}))
	defer upstream.Close()
	f := newFixture(t)
	client := &http.Client{Transport: f.pool}
	for range 20 {
		resp, err := client.Get(upstream.URL)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
	}
	if s := f.pool.Snapshot()[4]; !s.Disabled {
		t.Fatalf("echo not disabled: %+v", s)
	}
	h, err := dashboard.New(f.pool, dashboard.WithActions())
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{"/", "/api/keys", "/api/totals", "/api/usage", "/api/keys?window=15m", "/api/usage?window=24h"} {
		w := do(t, h, "GET", p, nil)
		if w.Code != 200 {
			t.Errorf("GET %s: %d", p, w.Code)
		}
		if strings.Contains(w.Body.String(), canary) || strings.Contains(w.Body.String(), "CANARY") {
			t.Errorf("GET %s shows the secret:\n%s", p, w.Body)
		}
	}
}

func TestOptions(t *testing.T) {
	f := newFixture(t)
	bad := []struct {
		name string
		opt  dashboard.Option
	}{
		{"empty token", dashboard.WithAuthToken("")},
		{"empty user", dashboard.WithBasicAuth("", "p")},
		{"empty password", dashboard.WithBasicAuth("u", "")},
		{"refresh too short", dashboard.WithRefresh(100 * time.Millisecond)},
		{"refresh too long", dashboard.WithRefresh(time.Hour)},
		{"chart keys 0", dashboard.WithChartKeys(0)},
		{"chart keys 65", dashboard.WithChartKeys(65)},
		{"empty title", dashboard.WithTitle("")},
		{"nil clock", dashboard.WithClock(nil)},
		{"nil option", nil},
	}
	for _, c := range bad {
		_, err := dashboard.New(f.pool, c.opt)
		var ce *apipool.ConfigError
		if !errors.Is(err, apipool.ErrInvalidConfig) || !errors.As(err, &ce) || !strings.HasPrefix(ce.Field, "dashboard.") {
			t.Errorf("%s: error %v, want a *ConfigError naming a dashboard option", c.name, err)
		}
		// Handler fails closed: every request gets 500, even with a token.
		h := dashboard.Handler(f.pool, dashboard.WithAuthToken("tok"), c.opt)
		w := do(t, h, "GET", "/api/keys", map[string]string{"Authorization": "Bearer tok"})
		if w.Code != 500 || strings.Contains(w.Body.String(), "alpha") || w.Header().Get("Content-Security-Policy") == "" {
			t.Errorf("%s: Handler answered %d %s", c.name, w.Code, w.Body)
		}
	}
	if _, err := dashboard.New(nil); !errors.Is(err, apipool.ErrInvalidConfig) {
		t.Errorf("nil pool: %v", err)
	}
	h := f.handler(t, dashboard.WithRefresh(750*time.Millisecond), dashboard.WithTitle("weather <api>"))
	page := do(t, h, "GET", "/", nil).Body.String()
	if !strings.Contains(page, `data-refresh-ms="750"`) || !strings.Contains(page, "weather &lt;api&gt;") {
		t.Errorf("page does not carry the refresh and the escaped title")
	}
}

// TestMount mounts the dashboard with the one line of the package doc and
// reaches the page, an asset and the API through a real server.
func TestMount(t *testing.T) {
	f := newFixture(t)
	mux := http.NewServeMux()
	mux.Handle("/apipool/", http.StripPrefix("/apipool", dashboard.Handler(f.pool)))
	srv := httptest.NewServer(mux)
	defer srv.Close()
	for path, ct := range map[string]string{
		"/apipool/":              "text/html; charset=utf-8",
		"/apipool/static/app.js": "text/javascript; charset=utf-8",
		"/apipool/static/vendor/uplot/uPlot.min.css":     "text/css; charset=utf-8",
		"/apipool/api/keys":                              "application/json",
		"/apipool/api/usage?window=15m":                  "application/json",
		"/apipool/static/vendor/uplot/uPlot.iife.min.js": "text/javascript; charset=utf-8",
	} {
		resp, err := http.Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != ct {
			t.Errorf("GET %s: %d %q, want 200 %q", path, resp.StatusCode, resp.Header.Get("Content-Type"), ct)
		}
	}
	// /apipool redirects to /apipool/ (the mux does), which serves the page.
	resp, err := http.Get(srv.URL + "/apipool")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 || resp.Request.URL.Path != "/apipool/" {
		t.Errorf("GET /apipool: %d at %s", resp.StatusCode, resp.Request.URL.Path)
	}
}

// A key that learned its limit from its 429s (apipool.WithLimitLearning)
// shows it in api/keys: 3 successes then a 429 with Retry-After: 1, all
// at one instant of the pool's clock, teach alpha 3 requests a second.
func TestKeysAPILearnedLimit(t *testing.T) {
	var alpha atomic.Int64
	upstream := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") == "Bearer sk-alpha-1" && alpha.Add(1) > 3 {
			w.Header().Set("Retry-After", "1")
			w.WriteHeader(http.StatusTooManyRequests)
			return
		}
		io.WriteString(w, "ok")
	}))
	defer upstream.Close()
	f := newFixture(t, apipool.WithStrategy(apipool.RoundRobin), apipool.WithClock(fakeclock.New(now)))
	client := &http.Client{Transport: f.pool}
	for alpha.Load() < 4 {
		resp, err := client.Get(upstream.URL)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
	}
	body := getJSON[keysBody](t, f.handler(t), "/api/keys")
	a := body.Keys[0]
	if a.LearnedLimit == nil || *a.LearnedLimit != 3 || a.LearnedWindowMS == nil || *a.LearnedWindowMS != 1000 {
		t.Errorf("alpha after 3 successes and a 429 with Retry-After 1: learned %v in %v ms, want 3 in 1000", a.LearnedLimit, a.LearnedWindowMS)
	}
	if b := body.Keys[1]; b.LearnedLimit != nil || b.LearnedWindowMS != nil {
		t.Errorf("bravo learned %v in %v ms, want none (null)", b.LearnedLimit, b.LearnedWindowMS)
	}
}
