package dashboard_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/apipool-ng/apipool"
	"github.com/apipool-ng/apipool/dashboard"
	"github.com/apipool-ng/apipool/internal/chtest"
	"github.com/apipool-ng/apipool/internal/fakeclock"
	"github.com/apipool-ng/apipool/recorder"
	"github.com/apipool-ng/apipool/recorder/clickhouse"
	"github.com/apipool-ng/apipool/recorder/memory"
	"github.com/apipool-ng/apipool/status"
)

const (
	fullBenchEvents = 1_000_000
	benchKeys       = 20
)

// benchNow is where the benchmarks' windows end; their events fill the 24
// hours before it.
var benchNow = time.Date(2026, 3, 2, 12, 0, 0, 0, time.UTC)

// recordBenchEvents records n events spread evenly over the 24 hours
// before benchNow, in time order, over benchKeys keys: 90% successes,
// 6% rate limits, 3% server errors, 1% with no key available.
func recordBenchEvents(r recorder.Recorder, n int) {
	step := 24 * time.Hour / time.Duration(n)
	start := benchNow.Add(-24 * time.Hour)
	for i := range n {
		e := recorder.Event{
			Time: start.Add(time.Duration(i) * step), KeyID: fmt.Sprintf("key-%02d", i%benchKeys),
			Status: status.Success, HTTPStatus: 200, Latency: time.Duration(20+i%180) * time.Millisecond,
			Attempt: 1, Method: "GET", Host: "api.example.com", RequestBytes: -1, ResponseBytes: 512,
		}
		switch i % 100 {
		case 0, 1, 2, 3, 4, 5:
			e.Status, e.HTTPStatus, e.Latency = status.ReachLimit, 429, 3*time.Millisecond
		case 6, 7, 8:
			e.Status, e.HTTPStatus = status.ServerError, 503
		case 9:
			e.Status, e.HTTPStatus, e.KeyID, e.Latency = status.NoKeyAvailable, 0, "", 0
		}
		r.Record(e)
	}
}

// benchPool is a pool of benchKeys keys whose stats are stats.
func benchPool(b *testing.B, stats recorder.Stats) http.Handler {
	keys := make([]apipool.Key, benchKeys)
	for i := range keys {
		keys[i] = apipool.Key{ID: fmt.Sprintf("key-%02d", i), Secret: apipool.Secret(fmt.Sprintf("sk-%02d", i))}
	}
	pool, err := apipool.New(keys, apipool.WithRecorder(nil))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { pool.Close(context.Background()) })
	h, err := dashboard.New(pool, dashboard.WithStats(stats), dashboard.WithClock(fakeclock.New(benchNow)))
	if err != nil {
		b.Fatal(err)
	}
	return h
}

// benchCalls measures each page and API call of h, one at a time; over
// 1,000,000 events, the target is 50 ms a call.
func benchCalls(b *testing.B, h http.Handler) {
	for _, path := range []string{
		"/", "/api/keys?window=1h", "/api/keys?window=24h", "/api/totals?window=24h",
		"/api/usage?window=15m", "/api/usage?window=1h", "/api/usage?window=24h",
		"/api/clients?window=1h", "/api/clients?window=24h",
	} {
		name := strings.NewReplacer("/api/", "", "?window=", "-", "/", "page").Replace(path)
		b.Run(name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				w := httptest.NewRecorder()
				h.ServeHTTP(w, httptest.NewRequest("GET", path, nil))
				if w.Code != 200 {
					b.Fatalf("GET %s: %d %s", path, w.Code, w.Body)
				}
			}
		})
	}
}

// BenchmarkCallsMemory measures serving the page and each API call over
// 1,000,000 events in the memory store (apipool's default recorder).
func BenchmarkCallsMemory(b *testing.B) {
	store, err := memory.New(memory.WithClock(fakeclock.New(benchNow)))
	if err != nil {
		b.Fatal(err)
	}
	recordBenchEvents(store, benchEvents())
	benchCalls(b, benchPool(b, store))
}

// BenchmarkCallsClickHouse measures the same over 1,000,000 events in a
// private ClickHouse server (skipped without clickhouse-server, except
// with CI=true).
func BenchmarkCallsClickHouse(b *testing.B) {
	srv := chtest.StartPrivate(b)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	store, err := clickhouse.New(ctx, clickhouse.Config{
		Addrs: []string{srv.Addr}, Table: "dashboard_bench", QueueSize: benchEvents() + 1, BatchSize: 100_000,
	})
	if err != nil {
		b.Fatal(err)
	}
	defer store.Close(context.Background())
	recordBenchEvents(store, benchEvents())
	if err := store.Flush(ctx); err != nil {
		b.Fatal(err)
	}
	if n, err := store.UsageCount(ctx, recorder.Query{}); err != nil || n != int64(benchEvents()) || store.Dropped() != 0 {
		b.Fatalf("stored %d events (%v), dropped %d; want %d", n, err, store.Dropped(), benchEvents())
	}
	benchCalls(b, benchPool(b, store))
}

type okTransport struct{}

func (okTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	return &http.Response{StatusCode: 200, Status: "200 OK", Header: http.Header{}, Body: http.NoBody, Request: r, ContentLength: 0}, nil
}

// BenchmarkRoundTripDashboard measures a request through the pool (over a
// base transport that answers at once) with no dashboard, with the
// dashboard mounted, and with it mounted and a page polling it every
// 500ms (WithRefresh's low end; the default is 3s), in one run: the
// dashboard has no hook in the request path, so the three should match
// within noise.
func BenchmarkRoundTripDashboard(b *testing.B) {
	for _, mode := range []string{"bare", "mounted", "polled"} {
		b.Run(mode, func(b *testing.B) {
			keys := make([]apipool.Key, 4)
			for i := range keys {
				keys[i] = apipool.Key{ID: fmt.Sprintf("k%d", i), Secret: apipool.Secret(fmt.Sprintf("sk-%d", i))}
			}
			pool, err := apipool.New(keys, apipool.WithBase(okTransport{}))
			if err != nil {
				b.Fatal(err)
			}
			defer pool.Close(context.Background())
			var wg sync.WaitGroup
			stop := make(chan struct{})
			if mode != "bare" {
				mux := http.NewServeMux()
				mux.Handle("/apipool/", http.StripPrefix("/apipool", dashboard.Handler(pool)))
				if mode == "polled" {
					wg.Add(1)
					go func() {
						defer wg.Done()
						tick := time.NewTicker(500 * time.Millisecond)
						defer tick.Stop()
						for {
							for _, p := range []string{"/apipool/api/keys", "/apipool/api/totals", "/apipool/api/usage"} {
								mux.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("GET", p, nil))
							}
							select {
							case <-stop:
								return
							case <-tick.C:
							}
						}
					}()
				}
			}
			client := &http.Client{Transport: pool}
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					resp, err := client.Get("http://api.example.com/v1/x")
					if err != nil {
						b.Error(err)
						return
					}
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
				}
			})
			close(stop)
			wg.Wait()
		})
	}
}

// benchEvents is how many events the benchmarks store: a million, or 20,000
// under -short (make bench-smoke, which only checks that they run).
func benchEvents() int {
	if testing.Short() {
		return 20_000
	}
	return fullBenchEvents
}
