package apipool_test

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/apipool-ng/apipool"
)

// keySeen is what a test server saw of a request's key.
type keySeen struct {
	Path, Auth, APIKey, Query string
}

// recordingServer records the key material of every request it gets.
type recordingServer struct {
	*httptest.Server
	mu   sync.Mutex
	seen []keySeen
}

func newRecordingServer(t *testing.T, h http.HandlerFunc) *recordingServer {
	rs := &recordingServer{}
	rs.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		rs.mu.Lock()
		rs.seen = append(rs.seen, keySeen{r.URL.Path, r.Header.Get("Authorization"), r.Header.Get("X-Api-Key"), r.URL.Query().Get("key")})
		rs.mu.Unlock()
		if h != nil {
			h(w, r)
			return
		}
		io.WriteString(w, "landed")
	}))
	t.Cleanup(rs.Close)
	return rs
}

func (rs *recordingServer) Seen() []keySeen {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	return append([]keySeen(nil), rs.seen...)
}

func hostOf(rawURL string) string {
	u, _ := url.Parse(rawURL)
	return u.Host
}

// A redirect to another host goes out with no key, in every injection
// mode; a redirect within the host keeps it.
func TestNoKeyOnCrossHostRedirect(t *testing.T) {
	t.Parallel()
	// hosts: A's host and port only; B shares A's host name.
	hosts := func(a string) apipool.Option { return apipool.WithHosts(hostOf(a)) }
	modes := []struct {
		name  string
		hosts bool
		opts  []apipool.Option
	}{
		{"bearer", false, nil},
		{"header", false, []apipool.Option{apipool.WithHeader("X-Api-Key")}},
		{"query", false, []apipool.Option{apipool.WithQueryParam("key")}},
		{"bearer WithHosts", true, nil},
		{"query WithHosts", true, []apipool.Option{apipool.WithQueryParam("key")}},
	}
	for _, m := range modes {
		t.Run(m.name, func(t *testing.T) {
			t.Parallel()
			b := newRecordingServer(t, nil)
			a := newRecordingServer(t, func(w http.ResponseWriter, r *http.Request) {
				switch r.URL.Path {
				case "/away":
					http.Redirect(w, r, b.URL+"/landing?x=1", http.StatusFound)
				case "/away-post":
					http.Redirect(w, r, b.URL+"/landing", http.StatusTemporaryRedirect)
				case "/near":
					http.Redirect(w, r, "/final", http.StatusFound)
				default:
					io.WriteString(w, "here")
				}
			})
			opts := append([]apipool.Option{}, m.opts...)
			if m.hosts {
				opts = append(opts, hosts(a.URL))
			}
			p := mustNew(t, []apipool.Key{{ID: "k0", Secret: "s0"}}, opts...)
			client := &http.Client{Transport: p}

			for _, path := range []string{"/away", "/away-post"} {
				var resp *http.Response
				var err error
				if path == "/away-post" {
					resp, err = client.Post(a.URL+path, "text/plain", strings.NewReader("payload"))
				} else {
					resp, err = client.Get(a.URL + path)
				}
				if err != nil {
					t.Fatal(err)
				}
				body, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if string(body) != "landed" {
					t.Fatalf("%s: body %q, want B's", path, body)
				}
			}
			resp, err := client.Get(a.URL + "/near")
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()

			for _, s := range b.Seen() {
				if s.Auth != "" || s.APIKey != "" || s.Query != "" {
					t.Errorf("B got a key: %+v", s)
				}
			}
			if len(b.Seen()) != 2 {
				t.Fatalf("B saw %d requests, want 2", len(b.Seen()))
			}
			aSeen := a.Seen()
			if len(aSeen) != 4 {
				t.Fatalf("A saw %v", aSeen)
			}
			for _, s := range aSeen {
				if s.Auth != "Bearer s0" && s.APIKey != "s0" && s.Query != "s0" {
					t.Errorf("A got no key on %s (same-host redirects included): %+v", s.Path, s)
				}
			}

			if m.hosts {
				// A request straight to a host not listed: no key.
				resp, err := client.Get(b.URL + "/direct")
				if err != nil {
					t.Fatal(err)
				}
				resp.Body.Close()
				if s := b.Seen()[2]; s.Auth != "" || s.Query != "" {
					t.Errorf("unlisted host got a key: %+v", s)
				}
			}
		})
	}
}

// 1,000 goroutines over 10 keys, one of them cooling down: every request
// is answered, none with the cooling key, and nothing deadlocks.
func TestThousandGoroutinesTenKeys(t *testing.T) {
	t.Parallel()
	var mu sync.Mutex
	counts := map[string]int{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s := strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")
		mu.Lock()
		counts[s]++
		mu.Unlock()
		if s == "s3" {
			w.Header().Set("Retry-After", "3600")
			w.WriteHeader(http.StatusTooManyRequests)
			return
		}
		io.WriteString(w, "ok")
	}))
	defer srv.Close()
	base := &http.Transport{MaxConnsPerHost: 64, MaxIdleConnsPerHost: 64}
	defer base.CloseIdleConnections()
	p := mustNew(t, keys(10), apipool.WithBase(base))
	client := &http.Client{Transport: p}

	for i := 0; i < 4; i++ { // round-robin reaches k3, which cools down
		resp, err := client.Get(srv.URL)
		if err != nil || resp.StatusCode != 200 {
			t.Fatalf("%v %v", resp, err)
		}
		resp.Body.Close()
	}
	if s := snapshotByID(p)["k3"]; s.State != "cooling" {
		t.Fatalf("k3 %+v, want cooling", s)
	}
	mu.Lock()
	clear(counts)
	mu.Unlock()

	const n = 1000
	start := make(chan struct{})
	var ok atomic.Int64
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			resp, err := client.Get(srv.URL + "/v1/things")
			if err != nil {
				t.Error(err)
				return
			}
			b, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			if err == nil && resp.StatusCode == 200 && string(b) == "ok" {
				ok.Add(1)
			}
		}()
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	close(start)
	await(t, done, "1,000 requests")
	if ok.Load() != n {
		t.Fatalf("%d of %d requests answered 200", ok.Load(), n)
	}
	mu.Lock()
	defer mu.Unlock()
	if counts["s3"] != 0 {
		t.Fatalf("the cooling key was used %d times", counts["s3"])
	}
	for i := 0; i < 10; i++ {
		if s := "s" + itoa(i); s != "s3" && counts[s] == 0 {
			t.Fatalf("key %s never used: %v", s, counts)
		}
	}
	for _, s := range p.Snapshot() {
		if s.InFlight != 0 {
			t.Fatalf("%s: %d still in flight", s.KeyID, s.InFlight)
		}
	}
}

// An upstream that enforces a per-key quota with Retry-After, has a
// revoked key, fails with 5xx and resets connections: every request of a
// client going through the pool still gets its answer.
func TestEndToEndUnreliableUpstream(t *testing.T) {
	t.Parallel()
	quota := map[string]int{"s0": 3, "s1": 6} // the others: 100 a day
	var mu sync.Mutex
	perKey := map[string]int{}
	var all, fails, resets, limited atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s := strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")
		g := all.Add(1)
		mu.Lock()
		perKey[s]++
		n := perKey[s]
		q, ok := quota[s]
		mu.Unlock()
		if !ok {
			q = 100
		}
		switch {
		case s == "s5":
			http.Error(w, "revoked", http.StatusUnauthorized)
		case n > q:
			limited.Add(1)
			w.Header().Set("Retry-After", "3600")
			http.Error(w, "quota", http.StatusTooManyRequests)
		case g%7 == 3:
			fails.Add(1)
			http.Error(w, "oops", http.StatusInternalServerError)
		case g%7 == 5:
			resets.Add(1)
			conn, _, err := w.(http.Hijacker).Hijack()
			if err == nil {
				conn.Close()
			}
		default:
			io.WriteString(w, "ok")
		}
	}))
	defer srv.Close()
	base := &http.Transport{}
	defer base.CloseIdleConnections()
	p := mustNew(t, keys(6), apipool.WithBase(base), apipool.WithClock(newClock()), noBackoff)
	client := &http.Client{Transport: p}
	for i := 0; i < 36; i++ {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, srv.URL+"/v1/things", nil)
		resp, err := client.Do(req)
		if err != nil {
			cancel()
			t.Fatalf("request %d: %v", i, err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		cancel()
		if resp.StatusCode != 200 || string(b) != "ok" {
			t.Fatalf("request %d: %d %q", i, resp.StatusCode, b)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if perKey["s5"] != 1 {
		t.Fatalf("revoked key used %d times, want once", perKey["s5"])
	}
	for s, q := range quota {
		if n := perKey[s]; n != q+1 {
			t.Fatalf("key %s used %d times, want %d: its quota, one 429, then no more", s, n, q+1)
		}
	}
	if fails.Load() == 0 || resets.Load() == 0 || limited.Load() == 0 {
		t.Fatalf("the upstream never failed (%d 5xx, %d resets, %d 429): the test tests nothing", fails.Load(), resets.Load(), limited.Load())
	}
	m := snapshotByID(p)
	if !m["k5"].Disabled {
		t.Fatalf("revoked key not disabled: %+v", m["k5"])
	}
	cooling := 0
	for _, s := range m {
		if s.State == "cooling" {
			cooling++
		}
		if s.InFlight != 0 {
			t.Fatalf("%s: %d in flight", s.KeyID, s.InFlight)
		}
	}
	if cooling != int(limited.Load()) {
		t.Fatalf("%d keys cooling, want %d (one per 429)", cooling, limited.Load())
	}
}
