package apipool_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/apipool-ng/apipool"
	"github.com/apipool-ng/apipool/internal/fakeclock"
)

type clockAdapter struct{ *fakeclock.Clock }

func (a clockAdapter) NewTimer(d time.Duration) apipool.Timer { return a.Clock.NewTimer(d) }

type roundTripperFunc func(*http.Request) (*http.Response, error)

func (f roundTripperFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

func TestSmokeRotationAndCooldown(t *testing.T) {
	var mu sync.Mutex
	seen := map[string]int{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		auth := r.Header.Get("Authorization")
		mu.Lock()
		seen[auth]++
		mu.Unlock()
		if auth == "Bearer s2" {
			w.Header().Set("Retry-After", "30")
			w.WriteHeader(429)
			return
		}
		io.WriteString(w, "ok")
	}))
	defer srv.Close()
	clk := clockAdapter{fakeclock.New(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))}
	pool, err := apipool.New([]apipool.Key{{ID: "k1", Secret: "s1"}, {ID: "k2", Secret: "s2"}, {ID: "k3", Secret: "s3"}}, apipool.WithClock(clk))
	if err != nil {
		t.Fatal(err)
	}
	client := &http.Client{Transport: pool}
	resp, err := client.Get(srv.URL) // k1
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	resp, err = client.Get(srv.URL) // k2: 429, then k3
	if err != nil || resp.StatusCode != 200 {
		t.Fatal(resp, err)
	}
	resp.Body.Close()
	var ok atomic.Int64
	var wg sync.WaitGroup
	for i := 0; i < 50; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, err := client.Get(srv.URL)
			if err != nil {
				t.Error(err)
				return
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode == 200 && string(b) == "ok" {
				ok.Add(1)
			}
		}()
	}
	wg.Wait()
	if ok.Load() != 50 {
		t.Fatalf("ok = %d", ok.Load())
	}
	if seen["Bearer s2"] != 1 {
		t.Fatalf("s2 used %d times, want 1 (then cooling)", seen["Bearer s2"])
	}
	snap := pool.Snapshot()
	if snap[1].State != "cooling" || !snap[1].CoolingUntil.Equal(clk.Now().Add(30*time.Second)) {
		t.Fatalf("snapshot %+v", snap[1])
	}
	for _, s := range snap {
		if s.InFlight != 0 {
			t.Fatalf("in flight %+v", s)
		}
	}
	clk.Advance(30*time.Second - time.Millisecond)
	if pool.Snapshot()[1].State != "cooling" {
		t.Fatal("cooled too early")
	}
	clk.Advance(time.Millisecond)
	if pool.Snapshot()[1].State != "active" {
		t.Fatal("still cooling")
	}
}

func TestSmokeNoKey(t *testing.T) {
	base := roundTripperFunc(func(r *http.Request) (*http.Response, error) {
		return &http.Response{StatusCode: 401, Body: io.NopCloser(strings.NewReader("")), Header: http.Header{}, Request: r}, nil
	})
	pool, err := apipool.New([]apipool.Key{{ID: "k1", Secret: "s1"}, {ID: "k2", Secret: "s2"}}, apipool.WithBase(base))
	if err != nil {
		t.Fatal(err)
	}
	req, _ := http.NewRequestWithContext(context.Background(), "GET", "http://x.test/", nil)
	resp, err := pool.RoundTrip(req)
	if err != nil || resp.StatusCode != 401 {
		t.Fatalf("resp %v err %v", resp, err)
	}
	resp.Body.Close()
	_, err = pool.RoundTrip(req)
	var nk *apipool.NoKeyError
	if !errors.Is(err, apipool.ErrNoKeyAvailable) || !errors.As(err, &nk) || nk.Disabled != 2 {
		t.Fatalf("err %v", err)
	}
	t.Log(err)
}
