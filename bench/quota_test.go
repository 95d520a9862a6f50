package bench

import (
	"net/http"
	"os"
	"testing"

	"github.com/apipool-ng/apipool/internal/quotasim"
)

// The quota scenario (issue 29), run by internal/quotasim: a provider that
// gives each of 10 keys 10 requests per one-second window, aligned to the
// clock's second, and answers 429 with "Retry-After: 1" beyond, each answer
// 50 ms after the request by default; an open-loop load of 150 requests/s
// (1.5 times the 100/s the keys allow together) from 64 client slots, each
// request with a 2 s deadline; here the library alone between them
// (http.Client{Transport: pool}, the pool's defaults over the provider).
// The proxy's run of the same scenario is
// cmd/apipool/internal/proxy/quota_bench_test.go.

// quotaLibrary is the scenario's Setup for the library: a pool of the keys
// over the provider.
func quotaLibrary(tb testing.TB, env quotasim.Env) quotasim.Target {
	pool := newPool(tb, env.Keys, env.Provider)
	return quotasim.Target{Client: &http.Client{Transport: pool}, URL: target, Snapshot: pool.Snapshot}
}

// BenchmarkQuota runs the quota scenario in each mode on the real clock
// (a benchmark cannot run in a synctest bubble), one op per one-second
// window of load: -benchtime=20x runs 20 s of load per mode; -benchtime=1x
// (make bench-smoke) and the default -benchtime=1s run one window.
// QUOTA_SECONDS, when set, sets the windows instead (use it with the
// default -benchtime or 1x); QUOTA_LATENCY sets the provider's time to
// answer (default 50ms); QUOTA_TRACE=prefix writes each mode's trace to
// prefix-<mode>.csv (see quotasim.Options). The metrics are
// quotasim.ReportMetrics'.
func BenchmarkQuota(b *testing.B) {
	for _, mode := range quotasim.Modes {
		b.Run(mode.Name, func(b *testing.B) {
			next := b.Loop
			if os.Getenv("QUOTA_SECONDS") != "" {
				next = quotasim.WindowsOf(quotasim.Seconds(b, 0))
			}
			r := quotasim.Run(b, quotasim.Options{Mode: mode, Latency: quotasim.Latency(b), Next: next, Trace: os.Getenv("QUOTA_TRACE")}, quotaLibrary)
			quotasim.ReportMetrics(b, r)
		})
	}
}

// TestQuotaReport prints the quota scenario's figures as a table, every
// mode in turn, with each window's successes and 429s. It runs only with
// QUOTA_REPORT=1 (never in CI by default), in virtual time (a synctest
// bubble: 30 windows take under a second) unless QUOTA_CLOCK=real;
// QUOTA_SECONDS sets the windows per mode (default 30), QUOTA_LATENCY the
// provider's time to answer (default 50ms), QUOTA_TRACE a trace file
// prefix, QUOTA_MODES=headers,no-headers the modes:
//
//	QUOTA_REPORT=1 go test -run TestQuotaReport -v .
//	QUOTA_REPORT=1 QUOTA_CLOCK=real QUOTA_SECONDS=30 go test -run TestQuotaReport -v .
func TestQuotaReport(t *testing.T) {
	if os.Getenv("QUOTA_REPORT") != "1" {
		t.Skip("set QUOTA_REPORT=1 to run the quota scenario and print its figures")
	}
	quotasim.Report(t, "library", 30, quotaLibrary)
}
