package apipool_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/apipool-ng/apipool"
	"github.com/apipool-ng/apipool/status"
)

// closingUpstream is an HTTP/1.1 server on loopback that answers the
// first firstAnswered requests of each connection (keep-alive), echoing
// the body, and closes the connection on the next one with no byte of an
// answer. Seen from the client, the close is what a server that times out
// an idle keep-alive connection as a request arrives on it does.
type closingUpstream struct {
	t             testing.TB
	ln            net.Listener
	firstAnswered int
	// hold is how long the server keeps a request it will not answer
	// before it closes the connection (0: at once).
	hold   time.Duration
	mu     sync.Mutex
	bodies []string // every request's body, as read, in order
	wg     sync.WaitGroup
}

func newClosingUpstream(t testing.TB, firstAnswered int) *closingUpstream {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	u := &closingUpstream{t: t, ln: ln, firstAnswered: firstAnswered}
	u.wg.Go(u.accept)
	t.Cleanup(func() { ln.Close(); u.wg.Wait() })
	return u
}

func (u *closingUpstream) URL() string { return "http://" + u.ln.Addr().String() }

func (u *closingUpstream) accept() {
	for {
		c, err := u.ln.Accept()
		if err != nil {
			return
		}
		u.wg.Go(func() { u.serve(c) })
	}
}

func (u *closingUpstream) serve(c net.Conn) {
	defer c.Close()
	br := bufio.NewReader(c)
	for n := 0; ; n++ {
		req, err := http.ReadRequest(br)
		if err != nil {
			return
		}
		body, err := io.ReadAll(req.Body)
		if err != nil {
			return
		}
		u.mu.Lock()
		u.bodies = append(u.bodies, string(body))
		u.mu.Unlock()
		if n >= u.firstAnswered {
			time.Sleep(u.hold) // as if working on it
			return             // closed, no answer
		}
		answer := "echo " + string(body)
		if _, err := io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: "+strconv.Itoa(len(answer))+"\r\n\r\n"+answer); err != nil {
			return
		}
	}
}

func (u *closingUpstream) Bodies() []string {
	u.mu.Lock()
	defer u.mu.Unlock()
	return append([]string(nil), u.bodies...)
}

// poolOver returns a pool of two keys sending over a fresh net/http
// transport, whose breakers open at the first failure, and its events.
func poolOver(t *testing.T, opts ...apipool.Option) (*apipool.Transport, *captureRecorder) {
	base := &http.Transport{}
	t.Cleanup(base.CloseIdleConnections)
	rec := &captureRecorder{}
	p := mustNew(t, keys(2), append([]apipool.Option{apipool.WithBase(base), apipool.WithRecorder(rec),
		apipool.WithBreaker(apipool.BreakerSettings{Failures: 1}), noBackoff}, opts...)...)
	return p, rec
}

func send(t *testing.T, p *apipool.Transport, method, url, body string, h ...string) (*http.Response, string, error) {
	t.Helper()
	var rb io.Reader
	if body != "" {
		rb = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, url, rb)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(h); i += 2 {
		req.Header.Set(h[i], h[i+1])
	}
	resp, err := p.RoundTrip(req)
	if err != nil {
		return nil, "", err
	}
	defer resp.Body.Close()
	got, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, string(got), nil
}

// TestStaleConnectionResent: a request that goes out on a kept-alive
// connection the upstream closes with no answer is sent again, its body
// whole, and its caller gets the upstream's answer; the attempt counts
// against no key (each key's breaker opens at the first failure here)
// and records no usage event. For a POST or PATCH the pool resends it
// (net/http does not: it cannot tell the request was not processed); a
// GET or a request with an Idempotency-Key net/http resends itself.
func TestStaleConnectionResent(t *testing.T) {
	for _, c := range []struct {
		method string
		hdr    []string
	}{
		{http.MethodPost, nil},
		{http.MethodPatch, nil},
		{http.MethodPost, []string{"Idempotency-Key", "abc"}},
		{http.MethodGet, nil},
	} {
		t.Run(c.method+strings.Join(c.hdr, ":"), func(t *testing.T) {
			up := newClosingUpstream(t, 1)
			p, rec := poolOver(t)
			body := func(s string) string {
				if c.method == http.MethodGet {
					return ""
				}
				return s
			}
			for i, b := range []string{"first", "second"} {
				resp, got, err := send(t, p, c.method, up.URL(), body(b), c.hdr...)
				if err != nil {
					t.Fatalf("request %d: %v", i+1, err)
				}
				if resp.StatusCode != 200 || got != "echo "+body(b) {
					t.Fatalf("request %d: %d %q", i+1, resp.StatusCode, got)
				}
			}
			// The second went out twice: on the first connection, closed,
			// then on a new one.
			if got, want := strings.Join(up.Bodies(), ","), strings.Join([]string{body("first"), body("second"), body("second")}, ","); got != want {
				t.Fatalf("the upstream read %q, want %q", got, want)
			}
			evs := rec.Events()
			if len(evs) != 2 || evs[0].Status != status.Success || evs[1].Status != status.Success {
				t.Fatalf("events: %s", rec)
			}
			for _, s := range p.Snapshot() {
				if s.State != apipool.KeyActive || s.Breaker != apipool.BreakerClosed {
					t.Fatalf("key %s after a stale connection: %s, breaker %v", s.KeyID, s.State, s.Breaker)
				}
			}
		})
	}
}

// TestLateCloseNotResent: a reused connection closed with no answer long
// after the request was written (a server or load balancer that dropped
// a request it was working on, not an idle connection closed as the
// request arrived) is not resent: the POST may have been run, so the
// caller gets the error and the attempt is a network error of its key.
func TestLateCloseNotResent(t *testing.T) {
	t.Parallel()
	up := newClosingUpstream(t, 1)
	up.hold = 3500 * time.Millisecond // past the pool's 3 s window
	p, rec := poolOver(t)
	if _, _, err := send(t, p, http.MethodPost, up.URL(), "first"); err != nil {
		t.Fatal(err)
	}
	if _, _, err := send(t, p, http.MethodPost, up.URL(), "second"); err == nil {
		t.Fatal("no error for a POST dropped 3.5 s after it was written")
	}
	if got := strings.Join(up.Bodies(), ","); got != "first,second" {
		t.Fatalf("the upstream read %q, want the second POST once", got)
	}
	evs := rec.Events()
	if len(evs) != 2 || evs[1].Status != status.NetworkError {
		t.Fatalf("events: %s", rec)
	}
}

// TestStaleConnectionNotResentWhenMaxAttemptsOne: WithMaxAttempts(1)
// sends a request once, stale connection or not; the error is the
// caller's.
func TestStaleConnectionNotResentWhenMaxAttemptsOne(t *testing.T) {
	up := newClosingUpstream(t, 1)
	p, _ := poolOver(t, apipool.WithMaxAttempts(1))
	if _, _, err := send(t, p, http.MethodPost, up.URL(), "first"); err != nil {
		t.Fatal(err)
	}
	if _, _, err := send(t, p, http.MethodPost, up.URL(), "second"); err == nil {
		t.Fatal("no error for a request sent once on a connection closed with no answer")
	}
	if got := strings.Join(up.Bodies(), ","); got != "first,second" {
		t.Fatalf("the upstream read %q", got)
	}
}

// TestFreshConnectionClosedIsUpstreamFault: a new connection closed with
// no answer is the upstream's fault, as before: a POST is not resent
// (without WithRetryNonIdempotent), the caller gets the error and the
// attempt counts against its key.
func TestFreshConnectionClosedIsUpstreamFault(t *testing.T) {
	up := newClosingUpstream(t, 0)
	p, rec := poolOver(t)
	_, _, err := send(t, p, http.MethodPost, up.URL(), "only")
	if !errors.Is(err, io.EOF) {
		t.Fatalf("error %v, want io.EOF", err)
	}
	if got := strings.Join(up.Bodies(), ","); got != "only" {
		t.Fatalf("the upstream read %q", got)
	}
	if evs := rec.Events(); len(evs) != 1 || evs[0].Status != status.NetworkError {
		t.Fatalf("events: %s", rec)
	}
	open := 0
	for _, s := range p.Snapshot() {
		if s.Breaker == apipool.BreakerOpen {
			open++
		}
	}
	if open != 1 {
		t.Fatalf("%d breakers open, want the one key's", open)
	}
}

// TestCancelSurfacingAsConnectionErrorIsCanceled: when the caller cancels
// and the base transport returns what tearing the connection down left
// (io.EOF here), RoundTrip's error matches context.Canceled (and still
// io.EOF), the usage event says canceled, and no key's breaker hears of
// it.
func TestCancelSurfacingAsConnectionErrorIsCanceled(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	rec := &captureRecorder{}
	p := mustNew(t, keys(1), apipool.WithRecorder(rec), apipool.WithBreaker(apipool.BreakerSettings{Failures: 1}),
		apipool.WithBase(roundTripperFunc(func(r *http.Request) (*http.Response, error) {
			cancel()
			return nil, io.EOF
		})))
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://upstream.test/v1/chat", strings.NewReader("{}"))
	if err != nil {
		t.Fatal(err)
	}
	_, err = p.RoundTrip(req)
	if !errors.Is(err, context.Canceled) || !errors.Is(err, io.EOF) {
		t.Fatalf("error %v: want context.Canceled and io.EOF", err)
	}
	if evs := rec.Events(); len(evs) != 1 || evs[0].Status != status.Canceled || evs[0].ErrorType != "canceled" {
		t.Fatalf("events: %s", rec)
	}
	if s := p.Snapshot()[0]; s.Breaker != apipool.BreakerClosed {
		t.Fatalf("breaker %v after the caller's cancel", s.Breaker)
	}
}

// TestStaleConnectionCallerTraceKept: the caller's own httptrace hooks
// still run on a request the pool traces (a POST), on each of its
// attempts, the one resent after a stale connection included.
func TestStaleConnectionCallerTraceKept(t *testing.T) {
	up := newClosingUpstream(t, 1)
	p, _ := poolOver(t)
	var mu sync.Mutex
	var got []bool // GotConnInfo.Reused, per connection the caller's trace saw
	ctx := httptrace.WithClientTrace(context.Background(), &httptrace.ClientTrace{GotConn: func(info httptrace.GotConnInfo) {
		mu.Lock()
		got = append(got, info.Reused)
		mu.Unlock()
	}})
	for _, b := range []string{"first", "second"} {
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, up.URL(), strings.NewReader(b))
		if err != nil {
			t.Fatal(err)
		}
		resp, err := p.RoundTrip(req)
		if err != nil {
			t.Fatalf("%s: %v", b, err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	mu.Lock()
	defer mu.Unlock()
	// first: a new connection; second: the first one reused (closed with
	// no answer), then a new one.
	if fmt.Sprint(got) != "[false true false]" {
		t.Fatalf("the caller's GotConn saw reused = %v", got)
	}
}
