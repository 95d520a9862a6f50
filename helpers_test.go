package apipool_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/apipool-ng/apipool"
	"github.com/apipool-ng/apipool/clock"
	"github.com/apipool-ng/apipool/internal/fakeclock"
	"github.com/apipool-ng/apipool/recorder"
)

// t0 is where every fake clock starts: a whole second, so that HTTP dates
// (second precision) land exactly.
var t0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

// clockAdapter makes a *fakeclock.Clock a clock.Clock.
type clockAdapter struct{ *fakeclock.Clock }

func (a clockAdapter) NewTimer(d time.Duration) clock.Timer { return a.Clock.NewTimer(d) }

func newClock() clockAdapter { return clockAdapter{fakeclock.New(t0)} }

func newClockAt(at time.Time) clockAdapter { return clockAdapter{fakeclock.New(at)} }

type roundTripperFunc func(*http.Request) (*http.Response, error)

func (f roundTripperFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// selectorFunc makes a function a Selector.
type selectorFunc func(c *apipool.Candidates) int

func (f selectorFunc) Pick(c *apipool.Candidates) int { return f(c) }

// noBackoff makes resends after server and network errors immediate, so
// that tests on a fake clock need not advance it for them.
var noBackoff = apipool.WithBackoff(func(_, _ time.Duration, _ int, _ *http.Response) time.Duration { return 0 }, 0, 0)

// keys returns n keys with IDs k0..k(n-1) and secrets s0..s(n-1).
func keys(n int) []apipool.Key {
	ks := make([]apipool.Key, n)
	for i := range ks {
		ks[i] = apipool.Key{ID: "k" + strconv.Itoa(i), Secret: apipool.Secret("s" + strconv.Itoa(i))}
	}
	return ks
}

func mustNew(t testing.TB, ks []apipool.Key, opts ...apipool.Option) *apipool.Transport {
	t.Helper()
	p, err := apipool.New(ks, opts...)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() { p.Close(context.Background()) })
	return p
}

// trackedBody is a body that records how much was read of it and whether
// it was closed.
type trackedBody struct {
	mu     sync.Mutex
	r      io.Reader
	n      int64
	closed bool
}

func newTrackedBody(s string) *trackedBody { return &trackedBody{r: strings.NewReader(s)} }

func (b *trackedBody) Read(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	n, err := b.r.Read(p)
	b.n += int64(n)
	return n, err
}

func (b *trackedBody) Close() error {
	b.mu.Lock()
	b.closed = true
	b.mu.Unlock()
	return nil
}

func (b *trackedBody) Closed() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.closed
}

func (b *trackedBody) BytesRead() int64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.n
}

// seen is one request as the fake upstream received it.
type seen struct {
	Secret string // from Authorization: Bearer, X-Api-Key or the "key" query parameter
	Method string
	URL    string
	Query  map[string][]string
	Header http.Header
	Body   string
	Ctx    context.Context
}

// reply is the fake upstream's answer to one request.
type reply struct {
	Status int
	Header http.Header
	Body   string
	Err    error
	// Both makes the fake return a response together with Err, as a
	// broken base transport would.
	Both bool
}

// fakeUpstream is a base transport that answers with a handler, records
// every request it receives, reads and closes request bodies as a real
// transport does, and hands out tracked response bodies.
type fakeUpstream struct {
	handler   func(s seen) reply
	mu        sync.Mutex
	calls     []seen
	bodies    []*trackedBody
	idleCalls atomic.Int32
}

func newUpstream(h func(s seen) reply) *fakeUpstream {
	if h == nil {
		h = func(seen) reply { return reply{Status: 200, Body: "ok"} }
	}
	return &fakeUpstream{handler: h}
}

func secretOf(r *http.Request) string {
	if a := r.Header.Get("Authorization"); strings.HasPrefix(a, "Bearer ") {
		return strings.TrimPrefix(a, "Bearer ")
	}
	if v := r.Header.Get("X-Api-Key"); v != "" {
		return v
	}
	return r.URL.Query().Get("key")
}

func (u *fakeUpstream) RoundTrip(r *http.Request) (*http.Response, error) {
	s := seen{Secret: secretOf(r), Method: r.Method, URL: r.URL.String(), Query: r.URL.Query(), Header: r.Header.Clone(), Ctx: r.Context()}
	if r.Body != nil {
		b, err := io.ReadAll(r.Body)
		r.Body.Close()
		if err != nil {
			return nil, err
		}
		s.Body = string(b)
	}
	rep := u.handler(s)
	u.mu.Lock()
	u.calls = append(u.calls, s)
	u.mu.Unlock()
	if rep.Err != nil && !rep.Both {
		return nil, rep.Err
	}
	if rep.Status == 0 {
		rep.Status = 200
	}
	if rep.Header == nil {
		rep.Header = http.Header{}
	}
	body := newTrackedBody(rep.Body)
	u.mu.Lock()
	u.bodies = append(u.bodies, body)
	u.mu.Unlock()
	resp := &http.Response{
		Status:        strconv.Itoa(rep.Status) + " " + http.StatusText(rep.Status),
		StatusCode:    rep.Status,
		Proto:         "HTTP/1.1",
		ProtoMajor:    1,
		ProtoMinor:    1,
		Header:        rep.Header,
		Body:          body,
		ContentLength: int64(len(rep.Body)),
		Request:       r,
	}
	return resp, rep.Err
}

func (u *fakeUpstream) CloseIdleConnections() { u.idleCalls.Add(1) }

func (u *fakeUpstream) Calls() []seen {
	u.mu.Lock()
	defer u.mu.Unlock()
	return append([]seen(nil), u.calls...)
}

func (u *fakeUpstream) Secrets() []string {
	var out []string
	for _, c := range u.Calls() {
		out = append(out, c.Secret)
	}
	return out
}

func (u *fakeUpstream) Bodies() []*trackedBody {
	u.mu.Lock()
	defer u.mu.Unlock()
	return append([]*trackedBody(nil), u.bodies...)
}

func (u *fakeUpstream) Count(secret string) int {
	n := 0
	for _, s := range u.Secrets() {
		if s == secret {
			n++
		}
	}
	return n
}

func (u *fakeUpstream) Reset() {
	u.mu.Lock()
	u.calls, u.bodies = nil, nil
	u.mu.Unlock()
}

// bySecret answers each secret with its own reply; other secrets get 200 "ok".
func bySecret(m map[string]reply) func(seen) reply {
	return func(s seen) reply {
		if r, ok := m[s.Secret]; ok {
			return r
		}
		return reply{Status: 200, Body: "ok " + s.Secret}
	}
}

func hdr(kv ...string) http.Header {
	h := http.Header{}
	for i := 0; i+1 < len(kv); i += 2 {
		h.Set(kv[i], kv[i+1])
	}
	return h
}

func newGet(t testing.TB, url string) *http.Request {
	t.Helper()
	req, err := http.NewRequestWithContext(context.Background(), http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	return req
}

// do sends a GET through the pool and returns the response with its body
// read and closed.
func do(t testing.TB, p *apipool.Transport) (*http.Response, string, error) {
	t.Helper()
	resp, err := p.RoundTrip(newGet(t, "http://api.test/v1/things"))
	if err != nil {
		if resp != nil {
			t.Errorf("RoundTrip returned a response with the error %v", err)
		}
		return nil, "", err
	}
	b, rerr := io.ReadAll(resp.Body)
	resp.Body.Close()
	if rerr != nil {
		t.Fatalf("reading body: %v", rerr)
	}
	return resp, string(b), nil
}

// mustDo is do that fails the test on an error.
func mustDo(t testing.TB, p *apipool.Transport) (*http.Response, string) {
	t.Helper()
	resp, body, err := do(t, p)
	if err != nil {
		t.Fatalf("RoundTrip: %v", err)
	}
	return resp, body
}

// noKey asserts err is a *NoKeyError and returns it.
func noKey(t testing.TB, err error) *apipool.NoKeyError {
	t.Helper()
	var nk *apipool.NoKeyError
	if !errors.As(err, &nk) || !errors.Is(err, apipool.ErrNoKeyAvailable) {
		t.Fatalf("err = %v, want a *NoKeyError matching ErrNoKeyAvailable", err)
	}
	return nk
}

// result is what a RoundTrip run in the background returned.
type result struct {
	resp *http.Response
	body string
	err  error
}

// goRoundTrip runs RoundTrip in a goroutine; the body is read and closed.
func goRoundTrip(p *apipool.Transport, req *http.Request) <-chan result {
	ch := make(chan result, 1)
	go func() {
		resp, err := p.RoundTrip(req)
		r := result{resp: resp, err: err}
		if err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			r.body = string(b)
		}
		ch <- r
	}()
	return ch
}

// await waits for a background result, failing (with every goroutine's
// stack) instead of hanging when it does not come.
func await[T any](t testing.TB, ch <-chan T, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(60 * time.Second):
		buf := make([]byte, 1<<20)
		n := runtime.Stack(buf, true)
		t.Fatalf("%s: no answer after 60s (deadlock?)\n%s", what, buf[:n])
		panic("unreachable")
	}
}

// waitTimer waits until a goroutine blocks on the fake clock.
func waitTimer(t testing.TB, clk clockAdapter) {
	t.Helper()
	await(t, clk.TimerCreated(), "waiting for a timer on the fake clock")
}

// eventually polls cond until it holds, failing after a generous deadline.
// It is for state that follows the wall clock (the breakers), never a
// timing assertion.
func eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not true after 20s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

// orderSelector picks the first eligible key of its list of IDs, or -1.
type orderSelector struct {
	mu    sync.Mutex
	order []string
}

func (o *orderSelector) Set(ids ...string) {
	o.mu.Lock()
	o.order = ids
	o.mu.Unlock()
}

func (o *orderSelector) Pick(c *apipool.Candidates) int {
	o.mu.Lock()
	order := o.order
	o.mu.Unlock()
	for _, id := range order {
		for i := 0; i < c.Len(); i++ {
			if c.Info(i).KeyID == id && c.Eligible(i) {
				return i
			}
		}
	}
	return -1
}

// captureRecorder keeps every event.
type captureRecorder struct {
	mu     sync.Mutex
	events []recorder.Event
}

func (r *captureRecorder) Record(e recorder.Event) {
	r.mu.Lock()
	r.events = append(r.events, e)
	r.mu.Unlock()
}

func (r *captureRecorder) Close(context.Context) error { return nil }

func (r *captureRecorder) Events() []recorder.Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]recorder.Event(nil), r.events...)
}

func (r *captureRecorder) String() string { return fmt.Sprintf("%+v", r.Events()) }

// snapshotByID returns the pool's snapshot keyed by ID.
func snapshotByID(p *apipool.Transport) map[string]apipool.KeyStatus {
	m := map[string]apipool.KeyStatus{}
	for _, s := range p.Snapshot() {
		m[s.KeyID] = s
	}
	return m
}

func itoa(i int) string { return strconv.Itoa(i) }
