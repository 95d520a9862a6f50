package apipool_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	metricnoop "go.opentelemetry.io/otel/metric/noop"
	"go.opentelemetry.io/otel/propagation"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
	tracenoop "go.opentelemetry.io/otel/trace/noop"

	"github.com/apipool-ng/apipool"
	"github.com/apipool-ng/apipool/status"
)

// Helpers here are prefixed "tel" so they do not collide with the other
// test files of package apipool_test; the helpers they share (the clock
// adapter, roundTripperFunc, captureRecorder, mustNew, secretOf) are in
// helpers_test.go.

// telKit is an SDK tracer provider recording every span and an SDK meter
// provider read by hand.
type telKit struct {
	sr     *tracetest.SpanRecorder
	tp     *sdktrace.TracerProvider
	reader *sdkmetric.ManualReader
	mp     *sdkmetric.MeterProvider
}

func newTelKit(t *testing.T) *telKit {
	t.Helper()
	k := &telKit{sr: tracetest.NewSpanRecorder(), reader: sdkmetric.NewManualReader()}
	k.tp = sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(k.sr))
	k.mp = sdkmetric.NewMeterProvider(sdkmetric.WithReader(k.reader))
	t.Cleanup(func() {
		k.tp.Shutdown(context.Background())
		k.mp.Shutdown(context.Background())
	})
	return k
}

func (k *telKit) opts() []apipool.Option {
	return []apipool.Option{apipool.WithTracerProvider(k.tp), apipool.WithMeterProvider(k.mp)}
}

func (k *telKit) collect(t *testing.T) metricdata.ResourceMetrics {
	t.Helper()
	var rm metricdata.ResourceMetrics
	if err := k.reader.Collect(context.Background(), &rm); err != nil {
		t.Fatal(err)
	}
	return rm
}

// telMetric returns the metric of that name, or fails.
func telMetric(t *testing.T, rm metricdata.ResourceMetrics, name string) metricdata.Metrics {
	t.Helper()
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			if m.Name == name {
				if sm.Scope.Name != "github.com/apipool-ng/apipool" || sm.Scope.Version != apipool.Version {
					t.Errorf("metric %s in scope %+v", name, sm.Scope)
				}
				return m
			}
		}
	}
	t.Fatalf("no metric %q", name)
	return metricdata.Metrics{}
}

// telGauge returns an int64 gauge's value per apipool.key.id.
func telGauge(t *testing.T, rm metricdata.ResourceMetrics, name string) map[string]int64 {
	t.Helper()
	g, ok := telMetric(t, rm, name).Data.(metricdata.Gauge[int64])
	if !ok {
		t.Fatalf("%s is a %T, want an int64 gauge", name, telMetric(t, rm, name).Data)
	}
	out := map[string]int64{}
	for _, dp := range g.DataPoints {
		id, _ := dp.Attributes.Value("apipool.key.id")
		out[id.AsString()] = dp.Value
	}
	return out
}

// telAttrs maps attribute keys to values, failing on a key set twice.
func telAttrs(t *testing.T, what string, kvs []attribute.KeyValue) map[string]attribute.Value {
	t.Helper()
	m := make(map[string]attribute.Value, len(kvs))
	for _, kv := range kvs {
		if _, dup := m[string(kv.Key)]; dup {
			t.Errorf("%s: attribute %s set twice", what, kv.Key)
		}
		m[string(kv.Key)] = kv.Value
	}
	return m
}

// telWant checks that attrs hold want (values compared as emitted
// strings) and none of the keys in absent.
func telWant(t *testing.T, what string, attrs map[string]attribute.Value, want map[string]any, absent ...string) {
	t.Helper()
	for k, w := range want {
		got, ok := attrs[k]
		if !ok {
			t.Errorf("%s: attribute %s missing (want %v)", what, k, w)
			continue
		}
		var ws string
		switch w := w.(type) {
		case int:
			ws = strconv.Itoa(w)
			if got.Type() != attribute.INT64 {
				t.Errorf("%s: %s is a %v, want an int", what, k, got.Type())
			}
		case float64:
			ws = strconv.FormatFloat(w, 'g', -1, 64)
			if got.Type() != attribute.FLOAT64 {
				t.Errorf("%s: %s is a %v, want a float", what, k, got.Type())
			}
		case string:
			ws = w
			if got.Type() != attribute.STRING {
				t.Errorf("%s: %s is a %v, want a string", what, k, got.Type())
			}
		default:
			ws = fmt.Sprint(w)
		}
		if got.String() != ws {
			t.Errorf("%s: %s = %q, want %q", what, k, got.String(), ws)
		}
	}
	for _, k := range absent {
		if v, ok := attrs[k]; ok {
			t.Errorf("%s: attribute %s = %q, want it absent", what, k, v.String())
		}
	}
}

// telQueueRecorder also reports a queue length and a drop count.
type telQueueRecorder struct{ captureRecorder }

func (*telQueueRecorder) QueueLen() int   { return 7 }
func (*telQueueRecorder) Dropped() uint64 { return 3 }

// telServer answers each request with the status code codes gives for
// its key's secret (200 when absent), and "ok" as body. A 429 carries
// Retry-After: 30.
func telServer(t *testing.T, answer map[string]int) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		code := answer[secretOf(r)]
		if code == 0 {
			code = 200
		}
		if code == 429 {
			w.Header().Set("Retry-After", "30")
		}
		w.WriteHeader(code)
		io.WriteString(w, "ok")
	}))
	t.Cleanup(srv.Close)
	return srv
}

func telPort(t *testing.T, srv *httptest.Server) int {
	u, err := url.Parse(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	p, err := strconv.Atoi(u.Port())
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// telGet sends a GET through pool and returns the response, body unread.
func telGet(t *testing.T, pool http.RoundTripper, ctx context.Context, u string) *http.Response {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, "GET", u, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := pool.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	return resp
}

func telDrain(resp *http.Response) string {
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	return string(b)
}

// telTree splits ended spans into the request span and its attempt
// spans, in the order they started, checking the parent links.
func telTree(t *testing.T, spans []sdktrace.ReadOnlySpan) (sdktrace.ReadOnlySpan, []sdktrace.ReadOnlySpan) {
	t.Helper()
	var parent sdktrace.ReadOnlySpan
	var attempts []sdktrace.ReadOnlySpan
	for _, s := range spans {
		switch s.SpanKind() {
		case trace.SpanKindInternal:
			if parent != nil {
				t.Fatalf("two INTERNAL spans: %q and %q", parent.Name(), s.Name())
			}
			parent = s
		case trace.SpanKindClient:
			attempts = append(attempts, s)
		default:
			t.Fatalf("span %q of kind %v", s.Name(), s.SpanKind())
		}
	}
	if parent == nil {
		t.Fatalf("no INTERNAL span among %d", len(spans))
	}
	sort.SliceStable(attempts, func(i, j int) bool { return attempts[i].StartTime().Before(attempts[j].StartTime()) })
	for _, a := range attempts {
		if a.Parent().SpanID() != parent.SpanContext().SpanID() || a.SpanContext().TraceID() != parent.SpanContext().TraceID() {
			t.Errorf("attempt span %s is not a child of the request span %s", a.SpanContext().SpanID(), parent.SpanContext().SpanID())
		}
	}
	return parent, attempts
}

// TestTelemetrySpanTreeRotated: a request that hits a 429 on one key and
// succeeds on the next is one INTERNAL span over two CLIENT spans, with
// the attributes the HTTP client conventions name.
func TestTelemetrySpanTreeRotated(t *testing.T) {
	kit := newTelKit(t)
	srv := telServer(t, map[string]int{"sk-a": 429})
	pool := mustNew(t, []apipool.Key{{ID: "a", Secret: "sk-a"}, {ID: "b", Secret: "sk-b"}}, kit.opts()...)
	client := &http.Client{Transport: pool}
	resp, err := client.Get(srv.URL + "/v1/x?q=1")
	if err != nil {
		t.Fatal(err)
	}
	if body := telDrain(resp); resp.StatusCode != 200 || body != "ok" {
		t.Fatalf("got %d %q", resp.StatusCode, body)
	}
	spans := kit.sr.Ended()
	if len(spans) != 3 {
		t.Fatalf("%d spans ended, want 3", len(spans))
	}
	parent, attempts := telTree(t, spans)
	if spans[2] != parent {
		t.Errorf("the request span ended before an attempt span")
	}
	if parent.Name() != "apipool GET" || parent.Parent().IsValid() {
		t.Errorf("request span %q, parent %v", parent.Name(), parent.Parent())
	}
	telWant(t, "request span", telAttrs(t, "request span", parent.Attributes()), map[string]any{
		"http.request.method":        "GET",
		"server.address":             "127.0.0.1",
		"apipool.attempts":           2,
		"apipool.status":             status.Success.String(),
		"apipool.key.id":             "b",
		"apipool.wait.total_seconds": 0.0,
	})
	if parent.Status().Code != codes.Unset {
		t.Errorf("request span status %+v", parent.Status())
	}
	if len(attempts) != 2 {
		t.Fatalf("%d attempt spans, want 2", len(attempts))
	}
	port := telPort(t, srv)
	for i, a := range attempts {
		if a.Name() != "GET" {
			t.Errorf("attempt %d span named %q, want GET", i+1, a.Name())
		}
		if a.InstrumentationScope().Name != "github.com/apipool-ng/apipool" || a.InstrumentationScope().Version != apipool.Version {
			t.Errorf("attempt %d scope %+v", i+1, a.InstrumentationScope())
		}
	}
	telWant(t, "attempt 1", telAttrs(t, "attempt 1", attempts[0].Attributes()), map[string]any{
		"http.request.method":       "GET",
		"server.address":            "127.0.0.1",
		"server.port":               port,
		"url.full":                  srv.URL + "/v1/x?q=1",
		"http.response.status_code": 429,
		"error.type":                "429",
		"apipool.key.id":            "a",
		"apipool.key.fingerprint":   apipool.Fingerprint(nil, "sk-a"),
		"apipool.status":            status.ReachLimit.String(),
	}, "http.request.resend_count")
	if st := attempts[0].Status(); st.Code != codes.Error {
		t.Errorf("attempt 1 status %+v, want Error", st)
	}
	telWant(t, "attempt 2", telAttrs(t, "attempt 2", attempts[1].Attributes()), map[string]any{
		"http.request.method":       "GET",
		"server.address":            "127.0.0.1",
		"server.port":               port,
		"url.full":                  srv.URL + "/v1/x?q=1",
		"http.response.status_code": 200,
		"http.request.resend_count": 1,
		"apipool.key.id":            "b",
		"apipool.key.fingerprint":   apipool.Fingerprint(nil, "sk-b"),
		"apipool.status":            status.Success.String(),
	}, "error.type")
	if st := attempts[1].Status(); st.Code != codes.Unset {
		t.Errorf("attempt 2 status %+v, want Unset", st)
	}
	if !attempts[0].EndTime().After(attempts[0].StartTime()) && !attempts[0].EndTime().Equal(attempts[0].StartTime()) {
		t.Errorf("attempt 1 ends before it starts")
	}
	if attempts[1].StartTime().Before(attempts[0].EndTime()) {
		t.Errorf("attempt 2 started before attempt 1's span ended")
	}
}

// TestTelemetryAttemptSpanEndsWithBody: the attempt span and the request
// span stay open while the caller holds the response body, and end when
// it is closed or read to EOF.
func TestTelemetryAttemptSpanEndsWithBody(t *testing.T) {
	srv := telServer(t, nil)
	open := func(t *testing.T, kit *telKit) {
		t.Helper()
		started := kit.sr.Started()
		if len(started) != 2 {
			t.Fatalf("%d spans started, want 2", len(started))
		}
		for _, s := range started {
			if !s.EndTime().IsZero() {
				t.Errorf("span %q ended while the body is held", s.Name())
			}
		}
		if n := len(kit.sr.Ended()); n != 0 {
			t.Fatalf("%d spans ended while the body is held", n)
		}
	}
	ended := func(t *testing.T, kit *telKit) {
		t.Helper()
		spans := kit.sr.Ended()
		if len(spans) != 2 {
			t.Fatalf("%d spans ended, want 2", len(spans))
		}
		if spans[0].SpanKind() != trace.SpanKindClient || spans[1].SpanKind() != trace.SpanKindInternal {
			t.Errorf("ended in the order %v, %v; want the attempt first", spans[0].SpanKind(), spans[1].SpanKind())
		}
	}
	t.Run("close", func(t *testing.T) {
		kit := newTelKit(t)
		pool := mustNew(t, []apipool.Key{{ID: "a", Secret: "sk-a"}}, kit.opts()...)
		resp := telGet(t, pool, context.Background(), srv.URL)
		open(t, kit)
		resp.Body.Close()
		ended(t, kit)
	})
	t.Run("eof", func(t *testing.T) {
		kit := newTelKit(t)
		pool := mustNew(t, []apipool.Key{{ID: "a", Secret: "sk-a"}}, kit.opts()...)
		resp := telGet(t, pool, context.Background(), srv.URL)
		open(t, kit)
		if b, err := io.ReadAll(resp.Body); err != nil || string(b) != "ok" {
			t.Fatalf("read %q, %v", b, err)
		}
		ended(t, kit) // before Close
		resp.Body.Close()
		if n := len(kit.sr.Ended()); n != 2 {
			t.Errorf("%d spans ended after Close, want still 2", n)
		}
	})
	t.Run("no body", func(t *testing.T) {
		kit := newTelKit(t)
		pool := mustNew(t, []apipool.Key{{ID: "a", Secret: "sk-a"}}, kit.opts()...)
		req, _ := http.NewRequest("HEAD", srv.URL, nil)
		resp, err := pool.RoundTrip(req)
		if err != nil {
			t.Fatal(err)
		}
		ended(t, kit) // nothing to hold the spans open
		resp.Body.Close()
	})
	t.Run("error", func(t *testing.T) {
		kit := newTelKit(t)
		base := roundTripperFunc(func(*http.Request) (*http.Response, error) { return nil, errors.New("connection refused") })
		pool := mustNew(t, []apipool.Key{{ID: "a", Secret: "sk-a"}}, append(kit.opts(), apipool.WithBase(base), apipool.WithMaxAttempts(1))...)
		req, _ := http.NewRequest("GET", srv.URL, nil)
		if _, err := pool.RoundTrip(req); err == nil {
			t.Fatal("no error")
		}
		ended(t, kit)
		parent, attempts := telTree(t, kit.sr.Ended())
		if parent.Status().Code != codes.Error || attempts[0].Status().Code != codes.Error {
			t.Errorf("statuses %+v, %+v; want Error", parent.Status(), attempts[0].Status())
		}
		telWant(t, "attempt", telAttrs(t, "attempt", attempts[0].Attributes()), map[string]any{
			"error.type":     "network_error",
			"apipool.status": status.NetworkError.String(),
		}, "http.response.status_code")
	})
}

// TestTelemetryStreamedBody: the response of a streaming upstream reaches
// the caller while the upstream is still writing (nothing buffers it for
// the span), and the attempt span ends at its end.
func TestTelemetryStreamedBody(t *testing.T) {
	kit := newTelKit(t)
	release := make(chan struct{})
	var stuck atomic.Bool
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "first\n")
		w.(http.Flusher).Flush()
		select {
		case <-release:
		case <-time.After(10 * time.Second): // a safety net, not a timing assertion
			stuck.Store(true)
		}
		io.WriteString(w, "second\n")
	}))
	defer srv.Close()
	pool := mustNew(t, []apipool.Key{{ID: "a", Secret: "sk-a"}}, kit.opts()...)
	resp := telGet(t, pool, context.Background(), srv.URL)
	defer resp.Body.Close()
	br := bufio.NewReader(resp.Body)
	line, err := br.ReadString('\n')
	if err != nil || line != "first\n" {
		t.Fatalf("first chunk %q, %v", line, err)
	}
	if stuck.Load() {
		t.Fatal("the first chunk arrived only after the upstream gave up waiting: the body was buffered")
	}
	if n := len(kit.sr.Ended()); n != 0 {
		t.Fatalf("%d spans ended mid-stream", n)
	}
	close(release)
	rest, err := io.ReadAll(br)
	if err != nil || string(rest) != "second\n" {
		t.Fatalf("rest %q, %v", rest, err)
	}
	if n := len(kit.sr.Ended()); n != 2 {
		t.Fatalf("%d spans ended at EOF, want 2", n)
	}
}

// TestTelemetryWaitEvents: waiting for a key, and backing off after a
// server error, show as "apipool.wait" events on the request span.
func TestTelemetryWaitEvents(t *testing.T) {
	run := func(t *testing.T, pool *apipool.Transport, clk clockAdapter, u string, d time.Duration) {
		t.Helper()
		done := make(chan *http.Response, 1)
		go func() {
			req, _ := http.NewRequest("GET", u, nil)
			resp, err := pool.RoundTrip(req)
			if err != nil {
				t.Error(err)
			}
			done <- resp
		}()
		<-clk.TimerCreated() // the request sleeps on the pool's clock
		clk.Advance(d)
		if resp := <-done; resp != nil {
			if resp.StatusCode != 200 {
				t.Errorf("status %d", resp.StatusCode)
			}
			resp.Body.Close()
		}
	}
	check := func(t *testing.T, kit *telKit, reason string, d time.Duration) {
		t.Helper()
		parent, attempts := telTree(t, kit.sr.Ended())
		if len(attempts) != 2 {
			t.Fatalf("%d attempts", len(attempts))
		}
		evs := parent.Events()
		if len(evs) != 1 || evs[0].Name != "apipool.wait" {
			t.Fatalf("request span events %+v, want one apipool.wait", evs)
		}
		telWant(t, "wait event", telAttrs(t, "wait event", evs[0].Attributes), map[string]any{
			"apipool.wait.seconds": d.Seconds(),
			"apipool.wait.reason":  reason,
		})
		telWant(t, "request span", telAttrs(t, "request span", parent.Attributes()), map[string]any{
			"apipool.wait.total_seconds": d.Seconds(),
			"apipool.attempts":           2,
		})
		if evs[0].Time.Before(attempts[0].EndTime()) || evs[0].Time.After(attempts[1].StartTime()) {
			t.Errorf("wait event not between the attempts")
		}
	}
	t.Run("no key available", func(t *testing.T) {
		kit := newTelKit(t)
		var n atomic.Int32
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if n.Add(1) == 1 {
				w.Header().Set("Retry-After", "2")
				w.WriteHeader(429)
			}
		}))
		defer srv.Close()
		clk := newClock()
		pool := mustNew(t, []apipool.Key{{ID: "a", Secret: "sk-a"}}, append(kit.opts(), apipool.WithClock(clk))...)
		run(t, pool, clk, srv.URL, 2*time.Second)
		check(t, kit, "no key available", 2*time.Second)
	})
	t.Run("backoff", func(t *testing.T) {
		kit := newTelKit(t)
		srv := telServer(t, map[string]int{"sk-a": 503})
		clk := newClock()
		backoff := func(_, _ time.Duration, _ int, _ *http.Response) time.Duration { return 250 * time.Millisecond }
		pool := mustNew(t, []apipool.Key{{ID: "a", Secret: "sk-a"}, {ID: "b", Secret: "sk-b"}},
			append(kit.opts(), apipool.WithClock(clk), apipool.WithBackoff(backoff, 0, time.Second))...)
		run(t, pool, clk, srv.URL, 250*time.Millisecond)
		check(t, kit, "backoff after "+status.ServerError.String(), 250*time.Millisecond)
	})
}

// telUpstream records the trace context each request carries.
type telUpstream struct {
	mu     sync.Mutex
	parent []trace.SpanContext
	header []string
}

func (u *telUpstream) seen() ([]trace.SpanContext, []string) {
	u.mu.Lock()
	defer u.mu.Unlock()
	return slices.Clone(u.parent), slices.Clone(u.header)
}

func newTelUpstream(t *testing.T, answer map[string]int) (*telUpstream, *httptest.Server) {
	up := &telUpstream{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ctx := propagation.TraceContext{}.Extract(r.Context(), propagation.HeaderCarrier(r.Header))
		up.mu.Lock()
		up.parent = append(up.parent, trace.SpanContextFromContext(ctx))
		up.header = append(up.header, r.Header.Get("Traceparent"))
		up.mu.Unlock()
		if c := answer[secretOf(r)]; c != 0 {
			w.WriteHeader(c)
		}
	}))
	t.Cleanup(srv.Close)
	return up, srv
}

// TestTelemetryPropagation: each attempt carries a W3C traceparent whose
// parent span is that attempt's span, under the caller's trace, and the
// caller's request is left as it was.
func TestTelemetryPropagation(t *testing.T) {
	kit := newTelKit(t)
	up, srv := newTelUpstream(t, map[string]int{"sk-a": 429})
	pool := mustNew(t, []apipool.Key{{ID: "a", Secret: "sk-a"}, {ID: "b", Secret: "sk-b"}},
		append(kit.opts(), apipool.WithPropagators(propagation.TraceContext{}))...)
	ctx, caller := kit.tp.Tracer("test").Start(context.Background(), "caller")
	req, _ := http.NewRequestWithContext(ctx, "GET", srv.URL, nil)
	req.Header.Set("Accept", "text/plain")
	resp, err := pool.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	telDrain(resp)
	caller.End()
	if len(req.Header) != 1 || req.Header.Get("Traceparent") != "" {
		t.Errorf("the caller's header changed: %v", req.Header)
	}
	var spans []sdktrace.ReadOnlySpan
	for _, s := range kit.sr.Ended() {
		if s.Name() != "caller" {
			spans = append(spans, s)
		}
	}
	parent, attempts := telTree(t, spans)
	if parent.Parent().SpanID() != caller.SpanContext().SpanID() || parent.SpanContext().TraceID() != caller.SpanContext().TraceID() {
		t.Errorf("the request span is not a child of the caller's span")
	}
	seen, headers := up.seen()
	if len(seen) != 2 || len(attempts) != 2 {
		t.Fatalf("upstream saw %d requests, %d attempt spans; want 2", len(seen), len(attempts))
	}
	for i := range seen {
		if headers[i] == "" {
			t.Errorf("attempt %d sent no traceparent", i+1)
		}
		if !seen[i].IsRemote() || seen[i].TraceID() != caller.SpanContext().TraceID() {
			t.Errorf("attempt %d: upstream saw trace %s, want %s", i+1, seen[i].TraceID(), caller.SpanContext().TraceID())
		}
		if seen[i].SpanID() != attempts[i].SpanContext().SpanID() {
			t.Errorf("attempt %d: upstream's parent span %s, want the attempt span %s", i+1, seen[i].SpanID(), attempts[i].SpanContext().SpanID())
		}
		if !seen[i].IsSampled() {
			t.Errorf("attempt %d: not sampled", i+1)
		}
	}
}

// TestTelemetryEventsCarryTraceIDs: every usage event holds the trace and
// span ids of its attempt's span; an event with no attempt (no key
// available) holds the request span's.
func TestTelemetryEventsCarryTraceIDs(t *testing.T) {
	kit := newTelKit(t)
	srv := telServer(t, map[string]int{"sk-a": 429})
	rec := &captureRecorder{}
	pool := mustNew(t, []apipool.Key{{ID: "a", Secret: "sk-a"}, {ID: "b", Secret: "sk-b"}},
		append(kit.opts(), apipool.WithRecorder(rec))...)
	telDrain(telGet(t, pool, context.Background(), srv.URL))
	parent, attempts := telTree(t, kit.sr.Ended())
	events := rec.Events()
	if len(events) != 2 || len(attempts) != 2 {
		t.Fatalf("%d events, %d attempt spans; want 2", len(events), len(attempts))
	}
	for _, e := range events {
		a := attempts[e.Attempt-1]
		if e.TraceID != parent.SpanContext().TraceID() || e.SpanID != a.SpanContext().SpanID() {
			t.Errorf("event of attempt %d (key %s): trace %s span %s, want %s %s",
				e.Attempt, e.KeyID, e.TraceID, e.SpanID, a.SpanContext().TraceID(), a.SpanContext().SpanID())
		}
		if id, _ := telAttrs(t, "attempt", a.Attributes())["apipool.key.id"]; id.AsString() != e.KeyID {
			t.Errorf("event of attempt %d names key %s, its span %s", e.Attempt, e.KeyID, id.AsString())
		}
	}

	// Key a cools down; once b is disabled, no key is left.
	if err := pool.Disable("b", "test"); err != nil {
		t.Fatal(err)
	}
	kit.sr.Reset()
	req, _ := http.NewRequest("GET", srv.URL, nil)
	if _, err := pool.RoundTrip(req); !errors.Is(err, apipool.ErrNoKeyAvailable) {
		t.Fatalf("err %v, want no key available", err)
	}
	spans := kit.sr.Ended()
	if len(spans) != 1 || spans[0].SpanKind() != trace.SpanKindInternal {
		t.Fatalf("%d spans, want the request span alone", len(spans))
	}
	events = rec.Events()
	last := events[len(events)-1]
	if last.Status != status.NoKeyAvailable || last.SpanID != spans[0].SpanContext().SpanID() || last.TraceID != spans[0].SpanContext().TraceID() {
		t.Errorf("no-key event %+v, want the request span's ids %s", last, spans[0].SpanContext().SpanID())
	}
	telWant(t, "request span", telAttrs(t, "request span", spans[0].Attributes()), map[string]any{
		"apipool.status":   status.NoKeyAvailable.String(),
		"apipool.attempts": 0,
	})
	if spans[0].Status().Code != codes.Error {
		t.Errorf("request span status %+v", spans[0].Status())
	}
}

// TestTelemetryMetrics: the duration histogram with the semantic
// conventions' buckets and attributes, the request counter by key and
// status, and the key state gauges.
func TestTelemetryMetrics(t *testing.T) {
	wantBounds := []float64{0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10}
	t.Run("rotation", func(t *testing.T) {
		kit := newTelKit(t)
		srv := telServer(t, map[string]int{"sk-a": 429})
		pool := mustNew(t, []apipool.Key{{ID: "a", Secret: "sk-a"}, {ID: "b", Secret: "sk-b", PerDay: 10}, {ID: "c", Secret: "sk-c"}},
			append(kit.opts(), apipool.WithRecorder(&telQueueRecorder{}))...)
		resp := telGet(t, pool, context.Background(), srv.URL+"/v1/x")
		rm := kit.collect(t)

		m := telMetric(t, rm, "http.client.request.duration")
		h, ok := m.Data.(metricdata.Histogram[float64])
		if !ok || m.Unit != "s" {
			t.Fatalf("duration is a %T in %q", m.Data, m.Unit)
		}
		if h.Temporality != metricdata.CumulativeTemporality {
			t.Errorf("temporality %v", h.Temporality)
		}
		port := telPort(t, srv)
		byCode := map[int64]metricdata.HistogramDataPoint[float64]{}
		for _, dp := range h.DataPoints {
			if !slices.Equal(dp.Bounds, wantBounds) {
				t.Errorf("bounds %v, want %v", dp.Bounds, wantBounds)
			}
			code, _ := dp.Attributes.Value("http.response.status_code")
			byCode[code.AsInt64()] = dp
		}
		if len(h.DataPoints) != 2 || byCode[429].Count != 1 || byCode[200].Count != 1 {
			t.Fatalf("duration points %+v, want one 429 and one 200", h.DataPoints)
		}
		common := map[string]any{"http.request.method": "GET", "server.address": "127.0.0.1", "server.port": port}
		p429, p200 := byCode[429].Attributes, byCode[200].Attributes
		telWant(t, "duration 429", telAttrs(t, "duration 429", p429.ToSlice()), telMapWith(common, "error.type", "429"))
		telWant(t, "duration 200", telAttrs(t, "duration 200", p200.ToSlice()), common, "error.type")
		if n := p200.Len(); n != 4 {
			t.Errorf("duration 200 has %d attributes, want 4: %v", n, p200.ToSlice())
		}

		m = telMetric(t, rm, "apipool.requests")
		sum, ok := m.Data.(metricdata.Sum[int64])
		if !ok || !sum.IsMonotonic {
			t.Fatalf("apipool.requests is a %T (monotonic %v)", m.Data, sum.IsMonotonic)
		}
		counts := map[string]int64{}
		for _, dp := range sum.DataPoints {
			id, _ := dp.Attributes.Value("apipool.key.id")
			st, _ := dp.Attributes.Value("apipool.status")
			counts[id.AsString()+"/"+st.AsString()] = dp.Value
		}
		if want := map[string]int64{"a/reach limit": 1, "b/success": 1}; !telMapsEqual(counts, want) {
			t.Errorf("apipool.requests %v, want %v", counts, want)
		}

		if got, want := telGauge(t, rm, "apipool.key.cooling"), map[string]int64{"a": 1, "b": 0, "c": 0}; !telMapsEqual(got, want) {
			t.Errorf("cooling %v, want %v", got, want)
		}
		if got, want := telGauge(t, rm, "apipool.key.disabled"), map[string]int64{"a": 0, "b": 0, "c": 0}; !telMapsEqual(got, want) {
			t.Errorf("disabled %v, want %v", got, want)
		}
		if got, want := telGauge(t, rm, "apipool.key.breaker_open"), map[string]int64{"a": 0, "b": 0, "c": 0}; !telMapsEqual(got, want) {
			t.Errorf("breaker_open %v, want %v", got, want)
		}
		if got, want := telGauge(t, rm, "apipool.key.in_flight"), map[string]int64{"a": 0, "b": 1, "c": 0}; !telMapsEqual(got, want) {
			t.Errorf("in_flight while b's body is held %v, want %v", got, want)
		}
		if got, want := telGauge(t, rm, "apipool.key.quota_left"), map[string]int64{"b": 9}; !telMapsEqual(got, want) {
			t.Errorf("quota_left %v, want %v", got, want)
		}
		if g := telMetric(t, rm, "apipool.recorder.queue_length").Data.(metricdata.Gauge[int64]); len(g.DataPoints) != 1 || g.DataPoints[0].Value != 7 {
			t.Errorf("queue length %+v, want 7", g.DataPoints)
		}
		if s := telMetric(t, rm, "apipool.recorder.dropped").Data.(metricdata.Sum[int64]); len(s.DataPoints) != 1 || s.DataPoints[0].Value != 3 || !s.IsMonotonic {
			t.Errorf("dropped %+v, want 3", s)
		}

		telDrain(resp)
		if got, want := telGauge(t, kit.collect(t), "apipool.key.in_flight"), map[string]int64{"a": 0, "b": 0, "c": 0}; !telMapsEqual(got, want) {
			t.Errorf("in_flight after Close %v, want %v", got, want)
		}
	})
	t.Run("disabled", func(t *testing.T) {
		kit := newTelKit(t)
		srv := telServer(t, map[string]int{"sk-x": 401})
		pool := mustNew(t, []apipool.Key{{ID: "x", Secret: "sk-x"}, {ID: "y", Secret: "sk-y"}}, kit.opts()...)
		telDrain(telGet(t, pool, context.Background(), srv.URL))
		rm := kit.collect(t)
		if got, want := telGauge(t, rm, "apipool.key.disabled"), map[string]int64{"x": 1, "y": 0}; !telMapsEqual(got, want) {
			t.Errorf("disabled %v, want %v", got, want)
		}
		if got, want := telGauge(t, rm, "apipool.key.cooling"), map[string]int64{"x": 0, "y": 0}; !telMapsEqual(got, want) {
			t.Errorf("cooling %v, want %v", got, want)
		}
		h := telMetric(t, rm, "http.client.request.duration").Data.(metricdata.Histogram[float64])
		for _, dp := range h.DataPoints {
			if code, _ := dp.Attributes.Value("http.response.status_code"); code.AsInt64() == 401 {
				if et, _ := dp.Attributes.Value("error.type"); et.AsString() != "401" {
					t.Errorf("401 point error.type %q", et.AsString())
				}
			}
		}
	})
	t.Run("lifecycle", func(t *testing.T) {
		// The key gauges report from New, before any request, and stop
		// at Close: a closed pool is not kept alive by the provider.
		kit := newTelKit(t)
		pool, err := apipool.New([]apipool.Key{{ID: "x", Secret: "sk-x"}, {ID: "y", Secret: "sk-y"}}, kit.opts()...)
		if err != nil {
			t.Fatal(err)
		}
		if got, want := telGauge(t, kit.collect(t), "apipool.key.in_flight"), map[string]int64{"x": 0, "y": 0}; !telMapsEqual(got, want) {
			t.Errorf("in_flight before any request %v, want %v", got, want)
		}
		if err := pool.Close(context.Background()); err != nil {
			t.Fatal(err)
		}
		for _, sm := range kit.collect(t).ScopeMetrics {
			for _, m := range sm.Metrics {
				if g, ok := m.Data.(metricdata.Gauge[int64]); ok && len(g.DataPoints) > 0 {
					t.Errorf("%s still observed after Close: %+v", m.Name, g.DataPoints)
				}
			}
		}
	})
	t.Run("no key", func(t *testing.T) {
		kit := newTelKit(t)
		pool := mustNew(t, []apipool.Key{{ID: "x", Secret: "sk-x"}}, kit.opts()...)
		pool.Disable("x", "test")
		req, _ := http.NewRequest("GET", "http://api.test/", nil)
		if _, err := pool.RoundTrip(req); !errors.Is(err, apipool.ErrNoKeyAvailable) {
			t.Fatal(err)
		}
		sum := telMetric(t, kit.collect(t), "apipool.requests").Data.(metricdata.Sum[int64])
		if len(sum.DataPoints) != 1 || sum.DataPoints[0].Value != 1 {
			t.Fatalf("requests %+v", sum.DataPoints)
		}
		st, _ := sum.DataPoints[0].Attributes.Value("apipool.status")
		if st.AsString() != status.NoKeyAvailable.String() {
			t.Errorf("status %q", st.AsString())
		}
	})
}

func telMapWith(m map[string]any, k string, v any) map[string]any {
	out := make(map[string]any, len(m)+1)
	for kk, vv := range m {
		out[kk] = vv
	}
	out[k] = v
	return out
}

func telMapsEqual[V comparable](a, b map[string]V) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

// telLeaks returns every place the canary appears in the recorded spans,
// metrics, events and error.
func telLeaks(t *testing.T, kit *telKit, rec *captureRecorder, err error, canary string) []string {
	t.Helper()
	var leaks []string
	check := func(where, s string) {
		if strings.Contains(s, canary) {
			leaks = append(leaks, where+": "+s)
		}
	}
	attrs := func(where string, kvs []attribute.KeyValue) {
		for _, kv := range kvs {
			check(where+" attribute "+string(kv.Key), string(kv.Key)+"="+kv.Value.String())
		}
	}
	spans := kit.sr.Ended()
	if len(spans) == 0 {
		t.Fatal("no spans to check")
	}
	for _, s := range spans {
		w := "span " + s.Name()
		check(w+" name", s.Name())
		attrs(w, s.Attributes())
		check(w+" status", s.Status().Description)
		for _, e := range s.Events() {
			check(w+" event name", e.Name)
			attrs(w+" event "+e.Name, e.Attributes)
		}
		for _, l := range s.Links() {
			attrs(w+" link", l.Attributes)
		}
	}
	rm := kit.collect(t)
	points := 0
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			var sets []attribute.Set
			switch d := m.Data.(type) {
			case metricdata.Histogram[float64]:
				for _, dp := range d.DataPoints {
					sets = append(sets, dp.Attributes)
					for _, ex := range dp.Exemplars {
						attrs("metric "+m.Name+" exemplar", ex.FilteredAttributes)
					}
				}
			case metricdata.Sum[int64]:
				for _, dp := range d.DataPoints {
					sets = append(sets, dp.Attributes)
				}
			case metricdata.Gauge[int64]:
				for _, dp := range d.DataPoints {
					sets = append(sets, dp.Attributes)
				}
			default:
				t.Errorf("metric %s: unexpected %T", m.Name, m.Data)
			}
			for i := range sets {
				points++
				attrs("metric "+m.Name, sets[i].ToSlice())
			}
		}
	}
	if points == 0 {
		t.Fatal("no metric points to check")
	}
	for _, e := range rec.Events() {
		check("usage event", fmt.Sprintf("%+v", e))
	}
	if err != nil {
		check("returned error", err.Error())
	}
	return leaks
}

// TestTelemetryNoSecretInTelemetry: a canary secret appears in no span
// attribute, span name, event, status description, metric attribute or
// usage event, whichever way the key is sent, and when the base
// transport's error text holds the full URL (query key included) or the
// header.
func TestTelemetryNoSecretInTelemetry(t *testing.T) {
	const marker = "CANARY" // in every canary, in no key ID
	canaries := []string{
		"sk-CANARY-0123456789",
		"sk+CANARY/0123456789=", // changes when URL-escaped: %2B, %2F, %3D
	}
	injections := []struct {
		name string
		opt  apipool.Option
	}{
		{"query", apipool.WithQueryParam("key")},
		{"bearer", apipool.WithBearer()},
		{"header", apipool.WithHeader("X-Api-Key")},
	}
	for _, canary := range canaries {
		for _, inj := range injections {
			keys := []apipool.Key{{ID: "k1", Secret: apipool.Secret(canary + "-1")}, {ID: "k2", Secret: apipool.Secret(canary + "-2")}, {ID: "k3", Secret: apipool.Secret(canary + "-3")}}
			t.Run(inj.name+"/"+canary+"/upstream", func(t *testing.T) {
				kit := newTelKit(t)
				rec := &captureRecorder{}
				srv := telServer(t, nil)
				// The upstream rejects k1 (429) and k2 (401); k3 succeeds.
				answer := map[string]int{canary + "-1": 429, canary + "-2": 401}
				srv.Config.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
					s := r.Header.Get("X-Api-Key")
					if s == "" {
						s = secretOf(r)
					}
					if c := answer[s]; c != 0 {
						w.WriteHeader(c)
					}
				})
				pool := mustNew(t, keys, append(kit.opts(), inj.opt, apipool.WithRecorder(rec), apipool.WithPropagators(propagation.TraceContext{}))...)
				// The caller's URL carries credentials and the query
				// parameter's name already.
				u, _ := url.Parse(srv.URL + "/v1/x?key=placeholder&q=1")
				u.User = url.UserPassword("user", "pass")
				resp := telGet(t, pool, context.Background(), u.String())
				telDrain(resp)
				if resp.StatusCode != 200 {
					t.Fatalf("status %d", resp.StatusCode)
				}
				if len(rec.Events()) != 3 {
					t.Fatalf("%d attempts, want 3", len(rec.Events()))
				}
				for _, l := range telLeaks(t, kit, rec, nil, marker) {
					t.Error("secret leaked: " + l)
				}
				_, attempts := telTree(t, kit.sr.Ended())
				full := telAttrs(t, "attempt", attempts[0].Attributes())["url.full"].AsString()
				if strings.Contains(full, "pass") || strings.Contains(full, "placeholder") != (inj.name != "query") {
					t.Errorf("url.full %q: credentials or the key parameter not redacted", full)
				}
			})
			t.Run(inj.name+"/"+canary+"/base error", func(t *testing.T) {
				kit := newTelKit(t)
				rec := &captureRecorder{}
				// A base whose error text holds the full URL (the query
				// key with it) and the headers, as some proxies' do.
				base := roundTripperFunc(func(r *http.Request) (*http.Response, error) {
					return nil, &url.Error{Op: "Get", URL: r.URL.String(), Err: fmt.Errorf("dial tcp: connection refused (request %s, headers %v)", r.URL, r.Header)}
				})
				pool := mustNew(t, keys, append(kit.opts(), inj.opt, apipool.WithBase(base), apipool.WithRecorder(rec), apipool.WithMaxAttempts(3), noBackoff)...)
				req, _ := http.NewRequest("GET", "http://api.test/v1/x?q=1", nil)
				_, err := pool.RoundTrip(req)
				if err == nil {
					t.Fatal("no error")
				}
				if len(rec.Events()) != 3 {
					t.Fatalf("%d attempts, want 3 (one per key)", len(rec.Events()))
				}
				for _, l := range telLeaks(t, kit, rec, err, marker) {
					t.Error("secret leaked: " + l)
				}
				if !strings.Contains(err.Error(), "api.test") {
					t.Errorf("error %q lost its URL", err)
				}
			})
		}
	}
}

// TestTelemetryGlobalProviders: without options the pool uses the global
// providers and propagator, read at each request, so setting them after
// New takes effect; an option overrides the global.
//
// It changes the globals: it must not run in parallel (no test of this
// package that touches the globals calls t.Parallel).
func TestTelemetryGlobalProviders(t *testing.T) {
	prevTP, prevMP, prevProp := otel.GetTracerProvider(), otel.GetMeterProvider(), otel.GetTextMapPropagator()
	t.Cleanup(func() {
		otel.SetTracerProvider(prevTP)
		otel.SetMeterProvider(prevMP)
		otel.SetTextMapPropagator(prevProp)
	})
	up, srv := newTelUpstream(t, nil)
	pool := mustNew(t, []apipool.Key{{ID: "a", Secret: "sk-a"}})
	kit := newTelKit(t)

	telDrain(telGet(t, pool, context.Background(), srv.URL))
	if n := len(kit.sr.Started()); n != 0 {
		t.Fatalf("%d spans before any provider is set", n)
	}

	otel.SetTracerProvider(kit.tp)
	otel.SetMeterProvider(kit.mp)
	otel.SetTextMapPropagator(propagation.TraceContext{})
	telDrain(telGet(t, pool, context.Background(), srv.URL))
	if n := len(kit.sr.Ended()); n != 2 {
		t.Fatalf("%d spans after setting the global provider, want 2", n)
	}
	_, attempts := telTree(t, kit.sr.Ended())
	seen, _ := up.seen()
	if len(seen) != 2 || seen[0].IsValid() || seen[1].SpanID() != attempts[0].SpanContext().SpanID() {
		t.Errorf("upstream saw %v; want nothing, then the attempt span %s", seen, attempts[0].SpanContext().SpanID())
	}
	sum := telMetric(t, kit.collect(t), "apipool.requests").Data.(metricdata.Sum[int64])
	if len(sum.DataPoints) != 1 || sum.DataPoints[0].Value != 1 {
		t.Errorf("requests %+v, want the one request sent since the provider was set", sum.DataPoints)
	}

	// Another SDK provider replaces the first.
	kit2 := newTelKit(t)
	otel.SetTracerProvider(kit2.tp)
	otel.SetMeterProvider(kit2.mp)
	telDrain(telGet(t, pool, context.Background(), srv.URL))
	if n1, n2 := len(kit.sr.Ended()), len(kit2.sr.Ended()); n1 != 2 || n2 != 2 {
		t.Errorf("spans %d (old provider), %d (new); want 2, 2", n1, n2)
	}
	if _, ok := telGauge(t, kit2.collect(t), "apipool.key.cooling")["a"]; !ok {
		t.Errorf("the new meter provider has no key gauges")
	}
	rm := kit.collect(t)
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			if g, ok := m.Data.(metricdata.Gauge[int64]); ok && len(g.DataPoints) > 0 {
				t.Errorf("the old meter provider still observes %s", m.Name)
			}
		}
	}

	// An option wins over the globals.
	kit3 := newTelKit(t)
	pool3 := mustNew(t, []apipool.Key{{ID: "a", Secret: "sk-a"}}, kit3.opts()...)
	telDrain(telGet(t, pool3, context.Background(), srv.URL))
	if n2, n3 := len(kit2.sr.Ended()), len(kit3.sr.Ended()); n2 != 2 || n3 != 2 {
		t.Errorf("spans %d (global), %d (option); want 2, 2", n2, n3)
	}

	// Back to no-ops: nothing more is recorded.
	otel.SetTracerProvider(tracenoop.NewTracerProvider())
	otel.SetMeterProvider(metricnoop.NewMeterProvider())
	telDrain(telGet(t, pool, context.Background(), srv.URL))
	if n := len(kit2.sr.Started()); n != 2 {
		t.Errorf("%d spans after the global provider became a no-op, want still 2", n)
	}
}

// TestTelemetryOptions: nil providers and propagators are configuration
// errors; explicit noop providers record nothing and break nothing.
func TestTelemetryOptions(t *testing.T) {
	keys := []apipool.Key{{ID: "a", Secret: "sk-a"}}
	for name, opt := range map[string]apipool.Option{
		"WithTracerProvider": apipool.WithTracerProvider(nil),
		"WithMeterProvider":  apipool.WithMeterProvider(nil),
		"WithPropagators":    apipool.WithPropagators(nil),
	} {
		var ce *apipool.ConfigError
		if _, err := apipool.New(keys, opt); !errors.As(err, &ce) || ce.Field != name {
			t.Errorf("%s(nil): err %v", name, err)
		}
	}
	up, srv := newTelUpstream(t, nil)
	rec := &captureRecorder{}
	pool := mustNew(t, keys, apipool.WithTracerProvider(tracenoop.NewTracerProvider()), apipool.WithMeterProvider(metricnoop.NewMeterProvider()),
		apipool.WithPropagators(propagation.TraceContext{}), apipool.WithRecorder(rec))
	telDrain(telGet(t, pool, context.Background(), srv.URL))
	if seen, _ := up.seen(); len(seen) != 1 || seen[0].IsValid() {
		t.Errorf("upstream saw %v, want no trace context", seen)
	}
	if e := rec.Events(); len(e) != 1 || e[0].TraceID.IsValid() || e[0].SpanID.IsValid() {
		t.Errorf("events %+v, want no trace ids", e)
	}
}

// A removed key's apipool.requests series ends with it: rotating keys
// does not grow the series without bound.
func TestRequestsSeriesEndWithRemovedKey(t *testing.T) {
	kit := newTelKit(t)
	up := newUpstream(func(seen) reply { return reply{Status: 200} })
	opts := append(kit.opts(), apipool.WithBase(up))
	pool := mustNew(t, []apipool.Key{{ID: "k0", Secret: "sk-0"}}, opts...)
	for i := 1; i <= 5; i++ {
		if err := pool.AddKey(apipool.Key{ID: "k" + itoa(i), Secret: apipool.Secret("sk-" + itoa(i))}); err != nil {
			t.Fatal(err)
		}
		if err := pool.RemoveKey("k" + itoa(i-1)); err != nil {
			t.Fatal(err)
		}
		mustDo(t, pool)
	}
	sum := telMetric(t, kit.collect(t), "apipool.requests").Data.(metricdata.Sum[int64])
	if !sum.IsMonotonic || sum.Temporality != metricdata.CumulativeTemporality {
		t.Fatalf("apipool.requests is not a cumulative monotonic sum: %+v", sum)
	}
	var ids []string
	for _, dp := range sum.DataPoints {
		id, _ := dp.Attributes.Value("apipool.key.id")
		ids = append(ids, id.AsString())
		if id.AsString() == "k5" && dp.Value != 1 {
			t.Errorf("k5 counted %d, want 1", dp.Value)
		}
	}
	if len(ids) != 1 || ids[0] != "k5" {
		t.Fatalf("series for keys %v, want only the key in the pool, k5", ids)
	}
}
