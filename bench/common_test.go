package bench

import (
	"context"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/failsafe-go/failsafe-go/circuitbreaker"
	"github.com/failsafe-go/failsafe-go/failsafehttp"
	"github.com/hashicorp/go-retryablehttp"
	metricnoop "go.opentelemetry.io/otel/metric/noop"
	tracenoop "go.opentelemetry.io/otel/trace/noop"

	"github.com/apipool-ng/apipool"
	"github.com/apipool-ng/apipool/recorder/memory"
)

// target is the URL every benchmark requests: one GET to a JSON API.
const target = "http://api.example.test/v1/items?limit=10"

const cannedBody = `{"items":[]}`

var jsonContentType = []string{"application/json"}

// cannedBase is the in-process base transport of the RoundTrip benchmarks:
// it answers every request with a fresh 200 at once, as a real transport
// would hand back a new *http.Response with a header map and a body. What
// a benchmark measures over it is the middleware's own cost.
type cannedBase struct{}

func (cannedBase) RoundTrip(r *http.Request) (*http.Response, error) {
	if r.Body != nil {
		r.Body.Close()
	}
	return &http.Response{
		Status: "200 OK", StatusCode: http.StatusOK,
		Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1,
		Header:        http.Header{"Content-Type": jsonContentType},
		Body:          newBody(cannedBody),
		ContentLength: int64(len(cannedBody)),
		Request:       r,
	}, nil
}

// body is a response body as net/http's transport returns one: a reader
// and a closer, without the WriterTo of an in-memory reader (which would
// let io.Copy skip its buffer for the bare transport alone).
type body struct{ r strings.Reader }

func newBody(s string) *body {
	b := &body{}
	b.r.Reset(s)
	return b
}

func (b *body) Read(p []byte) (int, error) { return b.r.Read(p) }
func (b *body) Close() error               { return nil }

// newRequest returns the GET every benchmark sends, with the headers a
// generated SDK would set.
func newRequest(tb testing.TB) *http.Request {
	req, err := http.NewRequest(http.MethodGet, target, nil)
	if err != nil {
		tb.Fatal(err)
	}
	req.Header.Set("Accept", "application/json")
	req.Header.Set("User-Agent", "apipool-bench/1")
	return req
}

// roundTrip sends req through rt, reads the body to its end and closes it,
// as a caller does.
func roundTrip(tb testing.TB, rt http.RoundTripper, req *http.Request) {
	resp, err := rt.RoundTrip(req)
	if err != nil {
		tb.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK {
		tb.Fatalf("status %d", resp.StatusCode)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
}

// testKeys returns n keys with distinct IDs and secrets.
func testKeys(n int) []apipool.Key {
	keys := make([]apipool.Key, n)
	for i := range keys {
		keys[i] = apipool.Key{ID: "key-" + strconv.Itoa(i), Secret: apipool.Secret("sk-bench-" + strconv.Itoa(i) + "-0123456789abcdef")}
	}
	return keys
}

// newPool returns an apipool Transport as the benchmarks use it: the
// given keys over base, the pool's default recorder (the in-memory store;
// no WithRecorder), and no-op OpenTelemetry providers, plus opts.
func newPool(tb testing.TB, keys []apipool.Key, base http.RoundTripper, opts ...apipool.Option) *apipool.Transport {
	opts = append([]apipool.Option{
		apipool.WithBase(base),
		apipool.WithTracerProvider(tracenoop.NewTracerProvider()),
		apipool.WithMeterProvider(metricnoop.NewMeterProvider()),
	}, opts...)
	p, err := apipool.New(keys, opts...)
	if err != nil {
		tb.Fatal(err)
	}
	if _, ok := p.Recorder().(*memory.Store); !ok {
		tb.Fatalf("the pool's default recorder is %T, not the in-memory store these figures are for", p.Recorder())
	}
	tb.Cleanup(func() { p.Close(context.Background()) })
	return p
}

// warmUp sends req n times through rt before timing, so that what a
// RoundTripper sets up on first use (the recorder's per-key state, lazily
// made instruments, connections) stays out of the figures.
func warmUp(tb testing.TB, rt http.RoundTripper, req *http.Request, n int) {
	for range n {
		resp, err := rt.RoundTrip(req)
		if err != nil {
			tb.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
}

// newRetryablehttp returns go-retryablehttp's RoundTripper as its users
// configure it: NewClient's retry policy and backoff, four attempts at
// most (like apipool's default), and the logger off (its default logger
// writes a line to stderr per request, which no service keeps on; with it
// on, retryablehttp would be slower than measured here).
func newRetryablehttp(base http.RoundTripper) http.RoundTripper {
	c := retryablehttp.NewClient()
	c.HTTPClient = &http.Client{Transport: base}
	c.Logger = nil
	c.RetryMax = 3
	return &retryablehttp.RoundTripper{Client: c}
}

// newFailsafehttp returns failsafe-go's RoundTripper as its users configure
// it: failsafehttp's retry policy (429 and 5xx, honouring Retry-After) with
// four attempts at most and an exponential backoff, around a circuit
// breaker that opens after 5 failures in a row for 30s.
func newFailsafehttp(base http.RoundTripper) http.RoundTripper {
	rp := failsafehttp.NewRetryPolicyBuilder().
		WithMaxRetries(3).
		WithBackoff(100*time.Millisecond, 2*time.Second).
		Build()
	cb := circuitbreaker.NewBuilder[*http.Response]().
		HandleIf(func(r *http.Response, err error) bool { return err != nil || r.StatusCode >= 500 }).
		WithFailureThreshold(5).
		WithDelay(30 * time.Second).
		Build()
	return failsafehttp.NewRoundTripper(base, rp, cb)
}

// contenders returns the four RoundTrippers compared, in order, each over
// base.
func contenders(tb testing.TB, base http.RoundTripper) []contender {
	cs := []contender{
		{"bare", base},
		{"apipool", newPool(tb, testKeys(10), base)},
		{"retryablehttp", newRetryablehttp(base)},
		{"failsafehttp", newFailsafehttp(base)},
	}
	for _, c := range cs {
		warmUp(tb, c.rt, newRequest(tb), 20)
	}
	return cs
}

type contender struct {
	name string
	rt   http.RoundTripper
}

// measureCPU starts counting the process's CPU time; the function it
// returns reports it per operation as cpu-ns/op. On a machine that other
// work keeps busy, wall time per operation (ns/op) grows with the waits
// for a CPU, while CPU time stays close to the work done: compare the two
// to judge a run. For RunParallel benchmarks it sums every CPU's time.
// Runs shorter than 50ms report nothing: the kernel counts CPU time in
// steps of a few milliseconds. Call it after the setup, just before the
// timed loop, and the function it returns after the loop.
func measureCPU(b *testing.B) func() {
	start := cpuNanos()
	return func() {
		if end := cpuNanos(); start >= 0 && end >= 0 && b.N > 0 && b.Elapsed() >= 50*time.Millisecond {
			b.ReportMetric(float64(end-start)/float64(b.N), "cpu-ns/op")
		}
	}
}
