package apipool_test

import (
	"context"
	"net/http"
	"testing"

	"github.com/apipool-ng/apipool"
	"github.com/apipool-ng/apipool/internal/quotasim"
)

// The quota scenario of issue 29 (internal/quotasim: 10 keys of 10
// requests per one-second window, 150 requests/s offered, answers 50 ms
// after the request) in virtual time, 30 windows per mode, through a pool
// with its defaults: what a pool of N keys is for is N times a key's
// quota, without sending the provider requests it refuses. In virtual time
// the figures do not depend on the machine's speed or load; the real
// clock's are bench's BenchmarkQuota.
//
//   - with the provider's rate-limit headers: at least 99% of the
//     capacity in every window, no 429;
//   - without: at least 98% of it and at most 0.05 429s per success after
//     the first 5 windows (the pool learns each key's limit from its 429s),
//     and at least 95% in each of those windows (the raise of a learned
//     limit, which the provider refuses, costs a 429, not a window);
//   - with PerSecond set to the provider's limit: at least 99% in every
//     window, no 429.
func TestQuotaTargets(t *testing.T) {
	setup := func(tb testing.TB, env quotasim.Env) quotasim.Target {
		pool, err := apipool.New(env.Keys, apipool.WithBase(env.Provider))
		if err != nil {
			tb.Fatal(err)
		}
		tb.Cleanup(func() { pool.Close(context.Background()) })
		return quotasim.Target{Client: &http.Client{Transport: pool}, URL: "http://api.example.test/v1/items"}
	}
	for _, mode := range quotasim.Modes {
		t.Run(mode.Name, func(t *testing.T) {
			r := quotasim.RunVirtual(t, quotasim.Options{Mode: mode, Latency: quotasim.DefaultLatency, Next: quotasim.WindowsOf(30)}, setup)
			r.Check(t)
			all, worst, perAll, _ := r.Capacity(0)
			settled, _, perSettled, _ := r.Capacity(quotasim.Settle)
			t.Logf("capacity %.1f%% (worst window %.0f%%), %.3f 429s per success; after %d s: %.1f%%, %.3f", all, worst, perAll, quotasim.Settle, settled, perSettled)
			if mode.Headers || mode.PerSecond > 0 {
				for i, w := range r.Windows {
					if w.OK < quotasim.Keys*quotasim.PerWindow*99/100 {
						t.Errorf("window %d: %d successes of %d", i, w.OK, quotasim.Keys*quotasim.PerWindow)
					}
				}
				if perAll != 0 {
					t.Errorf("%.3f upstream 429s per success, want none", perAll)
				}
				return
			}
			if settled < 98 || perSettled > 0.05 {
				t.Errorf("after %d s: %.1f%% of capacity, %.3f upstream 429s per success; want at least 98%% and at most 0.05", quotasim.Settle, settled, perSettled)
			}
			for i, w := range r.Windows[quotasim.Settle:] {
				if w.OK < quotasim.Keys*quotasim.PerWindow*95/100 {
					t.Errorf("window %d: %d successes of %d", quotasim.Settle+i, w.OK, quotasim.Keys*quotasim.PerWindow)
				}
			}
		})
	}
}
