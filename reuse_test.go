package apipool_test

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/apipool-ng/apipool"
)

// The pool reuses a request's copy (and its header map) once the response
// body is closed. Requests sent at once, each with headers of its own and
// bodies ended every way a caller ends them, must each reach the base with
// exactly their own headers: nothing left over from an earlier request,
// nothing of another one, the caller's placeholder stripped and one pool
// key applied. Under -race, two requests sharing a map would be reported.
func TestReusedRequestCopiesStayApart(t *testing.T) {
	const goroutines, perG = 8, 250
	base := roundTripperFunc(func(r *http.Request) (*http.Response, error) {
		id := r.URL.Query().Get("id")
		n, _ := strconv.Atoi(id)
		want := map[string]string{
			"X-Req":                       id,
			"X-Only-" + strconv.Itoa(n%5): "yes",
		}
		auth := r.Header.Get("Authorization")
		if !strings.HasPrefix(auth, "Bearer s") {
			t.Errorf("request %s: Authorization %q, want a pool key", id, auth)
		}
		for name, v := range want {
			if got := r.Header.Get(name); got != v {
				t.Errorf("request %s: %s = %q, want %q", id, name, got, v)
			}
		}
		if len(r.Header) != len(want)+1 {
			t.Errorf("request %s: headers %v, want only %v and Authorization", id, r.Header, want)
		}
		return &http.Response{StatusCode: 200, Header: http.Header{}, Body: io.NopCloser(strings.NewReader("ok " + id)), Request: r}, nil
	})
	p := mustNew(t, keys(3), apipool.WithBase(base))

	var wg sync.WaitGroup
	for g := range goroutines {
		wg.Go(func() {
			for i := range perG {
				n := g*perG + i
				id := strconv.Itoa(n)
				req, err := http.NewRequest(http.MethodGet, "http://api.example.test/v1?id="+id, nil)
				if err != nil {
					t.Error(err)
					return
				}
				req.Header.Set("X-Req", id)
				req.Header.Set("X-Only-"+strconv.Itoa(n%5), "yes")
				req.Header.Set("X-Api-Key", "placeholder") // an SDK's own key: stripped
				resp, err := p.RoundTrip(req)
				if err != nil {
					t.Error(err)
					return
				}
				endBody(t, resp.Body, n%4, "ok "+id)
				if len(req.Header) != 3 || req.Header.Get("X-Api-Key") != "placeholder" || req.Header.Get("Authorization") != "" {
					t.Errorf("request %s: the caller's headers changed: %v", id, req.Header)
				}
			}
		})
	}
	wg.Wait()
}

// endBody ends a response body in one of the ways callers do: read to the
// end then closed, closed unread, closed twice, or read to the end while
// another goroutine closes it.
func endBody(t *testing.T, b io.ReadCloser, how int, want string) {
	switch how {
	case 0:
		got, err := io.ReadAll(b)
		if err != nil || string(got) != want {
			t.Errorf("body %q, %v; want %q", got, err, want)
		}
		b.Close()
	case 1:
		b.Close()
	case 2:
		b.Close()
		b.Close()
	case 3:
		var wg sync.WaitGroup
		wg.Go(func() { io.Copy(io.Discard, b) })
		wg.Go(func() { b.Close() })
		wg.Wait()
		b.Close()
	}
}

// Over net/http's own transport, HTTP/1.1 and HTTP/2, requests and their
// reused parts must not race with the transport, and each request reaches
// the server with its own headers and body. With a client timeout, the
// client sets the legacy Request.Cancel, and net/http then watches the
// request from a goroutine of its own that may outlive the response; with
// a context deadline instead, the GETs' copies are reused whole.
func TestReuseOverNetHTTP(t *testing.T) {
	for _, tc := range []struct {
		h2, clientTimeout bool
	}{{false, true}, {true, true}, {false, false}, {true, false}} {
		h2 := tc.h2
		name := "HTTP/1.1"
		if h2 {
			name = "HTTP/2"
		}
		if tc.clientTimeout {
			name += "/client-timeout"
		} else {
			name += "/context-deadline"
		}
		t.Run(name, func(t *testing.T) {
			srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				body, _ := io.ReadAll(r.Body)
				if id := r.URL.Query().Get("id"); r.Header.Get("X-Req") != id || r.Method == http.MethodPost && string(body) != "body "+id {
					t.Errorf("request %s: X-Req %q, body %q", id, r.Header.Get("X-Req"), body)
				}
				if h2 != (r.ProtoMajor == 2) {
					t.Errorf("request over %s", r.Proto)
				}
				io.WriteString(w, "ok")
			}))
			srv.EnableHTTP2 = h2
			srv.StartTLS()
			defer srv.Close()
			tr := srv.Client().Transport.(*http.Transport)
			defer tr.CloseIdleConnections()
			p := mustNew(t, keys(3), apipool.WithBase(tr))
			client := &http.Client{Transport: p}
			if tc.clientTimeout {
				client.Timeout = time.Minute
			}
			var wg sync.WaitGroup
			for g := range 8 {
				wg.Go(func() {
					for i := range 100 {
						id := strconv.Itoa(g*100 + i)
						var req *http.Request
						var err error
						if i%2 == 0 {
							req, err = http.NewRequest(http.MethodGet, srv.URL+"/?id="+id, nil)
						} else {
							req, err = http.NewRequest(http.MethodPost, srv.URL+"/?id="+id, strings.NewReader("body "+id))
						}
						if err != nil {
							t.Error(err)
							return
						}
						cancel := context.CancelFunc(func() {})
						if !tc.clientTimeout {
							var ctx context.Context
							ctx, cancel = context.WithTimeout(req.Context(), time.Minute)
							req = req.WithContext(ctx)
						}
						req.Header.Set("X-Req", id)
						resp, err := client.Do(req)
						if err != nil {
							cancel()
							t.Error(err)
							return
						}
						endBody(t, resp.Body, i%4, "ok")
						cancel()
					}
				})
			}
			wg.Wait()
		})
	}
}

// A body closed again after its call has gone on to serve a later request
// must not touch that request: its key stays held until its own body is
// closed. One key that takes one request at a time shows it: while the
// second response is open, a third request finds no key.
func TestLateSecondCloseLeavesLaterRequestAlone(t *testing.T) {
	base := roundTripperFunc(func(r *http.Request) (*http.Response, error) {
		return &http.Response{StatusCode: 200, Header: http.Header{}, Body: io.NopCloser(strings.NewReader("ok")), Request: r}, nil
	})
	k := keys(1)
	k[0].MaxInFlight = 1
	p := mustNew(t, k, apipool.WithBase(base), apipool.WithMaxWait(0))
	get := func() (*http.Response, error) {
		req, err := http.NewRequest(http.MethodGet, "http://api.example.test/v1", nil)
		if err != nil {
			t.Fatal(err)
		}
		return p.RoundTrip(req)
	}
	inFlight := func() int64 { return p.Snapshot()[0].InFlight }
	for i := range 50 {
		first, err := get()
		if err != nil {
			t.Fatal(err)
		}
		io.ReadAll(first.Body)
		first.Body.Close()
		second, err := get()
		if err != nil {
			t.Fatal(err)
		}
		first.Body.Close() // late: the second request may hold its call now
		if n := inFlight(); n != 1 {
			t.Fatalf("round %d: %d requests in flight after a late close of the first body, want 1 (the second)", i, n)
		}
		if third, err := get(); err == nil {
			third.Body.Close()
			t.Fatalf("round %d: a third request got the key while the second held it", i)
		}
		if got, err := io.ReadAll(second.Body); err != nil || string(got) != "ok" {
			t.Fatalf("round %d: second body %q, %v", i, got, err)
		}
		second.Body.Close()
		if n := inFlight(); n != 0 {
			t.Fatalf("round %d: %d requests in flight after every body closed", i, n)
		}
	}
}
