package proxy_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/apipool-ng/apipool"
	"github.com/apipool-ng/apipool/status"
)

// soakUpstream is a provider-like API for TestCancelSoak: it reads each
// request whole, answers it plainly or as a stream, now and then with a
// rate limit or Connection: close, and (through its server's IdleTimeout)
// closes keep-alive connections a few milliseconds after they go idle, as
// servers that time out idle connections do.
type soakUpstream struct {
	n atomic.Int64
}

func (u *soakUpstream) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(r.Body)
	if err != nil {
		return // the proxy gave up on the request (its caller canceled)
	}
	if !strings.HasPrefix(r.Header.Get("Authorization"), "Bearer sk-") {
		http.Error(w, "no key", http.StatusUnauthorized)
		return
	}
	n := u.n.Add(1)
	if r.Header.Get("X-Soak-Burst") != "" {
		time.Sleep(2 * time.Millisecond) // so that some cancels come while the upstream works
	}
	if n%5 == 0 {
		w.Header().Set("Connection", "close")
	}
	if n%97 == 0 {
		w.Header().Set("Retry-After", "0")
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusTooManyRequests)
		io.WriteString(w, `{"error":{"message":"rate limited"}}`)
		return
	}
	answer := soakAnswer(r.Header.Get("X-Soak-Id"), len(body))
	if strings.HasSuffix(r.URL.Path, "/stream") {
		w.Header().Set("Content-Type", "text/event-stream")
		for i := range 3 {
			fmt.Fprintf(w, "data: %d %s\n\n", i, answer)
			w.(http.Flusher).Flush()
			if i < 2 {
				time.Sleep(time.Millisecond) // a stream comes in pieces
			}
		}
		return
	}
	w.Header().Set("Content-Type", "application/json")
	io.WriteString(w, `{"answer":"`+answer+`"}`)
}

func soakAnswer(id string, n int) string { return "for " + id + ", " + strconv.Itoa(n) + " bytes" }

// soakWant is the body the upstream answers request id (with a body of
// n bytes) with, at path.
func soakWant(path, id string, n int) string {
	a := soakAnswer(id, n)
	if strings.HasSuffix(path, "/stream") {
		return "data: 0 " + a + "\n\ndata: 1 " + a + "\n\ndata: 2 " + a + "\n\n"
	}
	return `{"answer":"` + a + `"}`
}

// TestCancelSoak drives the pattern of issue 27 item 17 hard: steady
// callers (GET and POST, plain and streamed answers) beside bursts of
// callers that cancel after 1 to 10 ms (some while the upstream
// works on their request), keys rotated meanwhile,
// against an upstream that closes connections (Connection: close, and
// idle keep-alive connections after a few milliseconds). It asserts what
// callers rely on, not timing: every request not canceled by its own
// caller gets the upstream's answer, never a proxy 502; and no attempt
// is recorded as a network error, which would count against its key.
func TestCancelSoak(t *testing.T) {
	up := &soakUpstream{}
	us := httptest.NewUnstartedServer(up)
	us.Config.IdleTimeout = 3 * time.Millisecond
	us.Start()
	t.Cleanup(us.Close)

	keySecret := func(id, gen int) string {
		return "sk-" + strconv.Itoa(id) + "-" + strconv.Itoa(gen) + "-" + canary + "-soak"
	}
	keyLines := func(gen int) string {
		var lines []string
		for id := range 3 {
			g := 0
			if id == gen%3 {
				g = gen // one key rotated per reload
			}
			lines = append(lines, fmt.Sprintf("k%d %s", id, keySecret(id, g)))
		}
		return strings.Join(lines, "\n")
	}
	e := newEnv(t, envOpts{
		secrets: []string{keySecret(0, 0), keySecret(1, 0), keySecret(2, 0)},
		yaml: func(_, keyFile string) string {
			return fmt.Sprintf(`listen: 127.0.0.1:0
log: {format: json, level: debug}
reload: {interval: 0s}
tokens:
  - name: main
    sha256: %s
upstreams:
  - name: openai
    prefix: /openai
    target: %s
    keys:
      file: %s
    max_wait: 5s
    cooldown: 1ms
    max_cooldown: 1ms
`, sha(token), us.URL, keyFile)
		},
	})

	dur := 3 * time.Second
	if testing.Short() {
		dur = time.Second
	}
	ctx, stop := context.WithTimeout(context.Background(), dur)
	defer stop()

	var (
		mu       sync.Mutex
		failures []string
		ids      atomic.Int64
		steadyOK atomic.Int64
		burstOK  atomic.Int64
		canceled atomic.Int64
	)
	fail := func(format string, args ...any) {
		mu.Lock()
		defer mu.Unlock()
		if len(failures) < 20 {
			failures = append(failures, fmt.Sprintf(format, args...))
		}
	}
	// send sends one request; reqCtx is the caller's (canceled or not).
	// It reports whether the caller got the upstream's answer; a request
	// its own caller canceled is not judged.
	send := func(client *http.Client, reqCtx context.Context, i int64, burst bool) bool {
		id := "r" + strconv.FormatInt(i, 10)
		path := "/openai/v1/chat"
		if i%2 == 0 {
			path = "/openai/v1/stream"
		}
		method, body := http.MethodGet, ""
		if i%4 < 2 {
			method, body = http.MethodPost, strings.Repeat("x", int(i%7)*300+1)
		}
		var rb io.Reader
		if body != "" {
			rb = strings.NewReader(body)
		}
		r, err := http.NewRequestWithContext(reqCtx, method, e.url+path, rb)
		if err != nil {
			t.Error(err)
			return false
		}
		r.Header.Set("Authorization", "Bearer "+token)
		r.Header.Set("X-Soak-Id", id)
		if burst {
			r.Header.Set("X-Soak-Burst", "1")
		}
		resp, err := client.Do(r)
		if err != nil {
			if reqCtx.Err() == nil {
				fail("%s %s %s: %v", method, path, id, err)
			}
			return false
		}
		got, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil {
			if reqCtx.Err() == nil {
				fail("%s %s %s: reading the answer: %v", method, path, id, err)
			}
			return false
		}
		switch {
		case resp.Header.Get("X-Apipool-Error") != "":
			fail("%s %s %s: the proxy answered %d %s", method, path, id, resp.StatusCode, got)
			return false
		case resp.StatusCode == http.StatusTooManyRequests:
			return true // the upstream's own answer
		case resp.StatusCode != http.StatusOK || string(got) != soakWant(path, id, len(body)):
			fail("%s %s %s: %d %q", method, path, id, resp.StatusCode, got)
			return false
		}
		return true
	}

	var wg sync.WaitGroup
	steady := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
	defer steady.CloseIdleConnections()
	for range 6 {
		wg.Go(func() {
			for ctx.Err() == nil {
				if send(steady, context.Background(), ids.Add(1), false) {
					steadyOK.Add(1)
				}
			}
		})
	}
	// Bursts of 50 callers that cancel after 1 to 10 ms.
	wg.Go(func() {
		bursty := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
		defer bursty.CloseIdleConnections()
		for ctx.Err() == nil {
			var bw sync.WaitGroup
			for j := range 50 {
				bw.Go(func() {
					rctx, cancel := context.WithTimeout(context.Background(), time.Duration(j%10+1)*time.Millisecond)
					defer cancel()
					if send(bursty, rctx, ids.Add(1), true) {
						burstOK.Add(1)
					} else if rctx.Err() != nil {
						canceled.Add(1)
					}
				})
			}
			bw.Wait()
			select {
			case <-ctx.Done():
			case <-time.After(100 * time.Millisecond):
			}
		}
	})
	// A key rotated every 150 ms.
	wg.Go(func() {
		for gen := 1; ctx.Err() == nil; gen++ {
			e.writeKeys(keyLines(gen))
			if err := e.srv.Reload(); err != nil {
				fail("reload: %v", err)
			}
			select {
			case <-ctx.Done():
			case <-time.After(150 * time.Millisecond):
			}
		}
	})
	wg.Wait()

	for _, f := range failures {
		t.Error(f)
	}
	e.rec.mu.Lock()
	var netErrs []string
	inFlight := 0 // attempts canceled while sent with a key
	for _, ev := range e.rec.kept {
		if ev.Status == status.Canceled && ev.KeyID != "" {
			inFlight++
		}
		if ev.Status == status.NetworkError || ev.Status == status.ServerError {
			netErrs = append(netErrs, fmt.Sprintf("%s on %s (%s, attempt %d)", ev.Status, ev.KeyID, ev.ErrorType, ev.Attempt))
		}
	}
	e.rec.mu.Unlock()
	if len(netErrs) > 0 {
		t.Errorf("%d attempts recorded as upstream faults against a key; the first: %s", len(netErrs), strings.Join(netErrs[:min(5, len(netErrs))], "; "))
	}
	for _, k := range e.srv.Pool("openai").Snapshot() {
		if k.Breaker != apipool.BreakerClosed {
			t.Errorf("key %s: breaker %v", k.KeyID, k.Breaker)
		}
	}
	for line := range strings.SplitSeq(e.logs.String(), "\n") {
		if strings.Contains(line, "upstream request failed") {
			t.Log(line)
		}
	}
	t.Logf("steady answered %d, burst answered %d, canceled %d (%d of them in flight with a key), upstream requests %d",
		steadyOK.Load(), burstOK.Load(), canceled.Load(), inFlight, up.n.Load())
	if steadyOK.Load() == 0 || canceled.Load() == 0 {
		t.Fatal("the soak did not run both kinds of callers")
	}
}
