package apipool

import (
	"context"
	"net/http"
	"net/url"
	"reflect"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/metric"
	metricnoop "go.opentelemetry.io/otel/metric/noop"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
	tracenoop "go.opentelemetry.io/otel/trace/noop"

	"github.com/apipool-ng/apipool/recorder"
	"github.com/apipool-ng/apipool/status"
)

// Version is the library's version, reported as the instrumentation scope
// version of its spans and metrics.
const Version = "0.1.0"

const scopeName = "github.com/apipool-ng/apipool"

// WithTracerProvider sets where spans go. The default is the global
// provider (otel.GetTracerProvider), read at each request so that setting
// it after New takes effect.
func WithTracerProvider(tp trace.TracerProvider) Option {
	return optionFunc(func(c *config) error {
		if tp == nil {
			return &ConfigError{Field: "WithTracerProvider", Reason: "nil provider"}
		}
		c.tracerProvider = tp
		return nil
	})
}

// WithMeterProvider sets where metrics go. The default is the global
// provider (otel.GetMeterProvider).
func WithMeterProvider(mp metric.MeterProvider) Option {
	return optionFunc(func(c *config) error {
		if mp == nil {
			return &ConfigError{Field: "WithMeterProvider", Reason: "nil provider"}
		}
		c.meterProvider = mp
		return nil
	})
}

// WithPropagators sets how trace context is written into outgoing
// requests. The default is the global propagator
// (otel.GetTextMapPropagator).
func WithPropagators(p propagation.TextMapPropagator) Option {
	return optionFunc(func(c *config) error {
		if p == nil {
			return &ConfigError{Field: "WithPropagators", Reason: "nil propagator"}
		}
		c.propagator = p
		return nil
	})
}

// telemetry holds the pool's tracer and instruments. When the providers
// are no-ops (the globals before an SDK is installed, or the noop
// packages'), a request pays for a few atomic loads and comparisons: see
// BenchmarkTelemetryOff.
type telemetry struct {
	t        *Transport
	tracers  atomic.Pointer[tracerEntry]
	meters   atomic.Pointer[meterEntry]
	metersMu sync.Mutex
	closed   bool         // under metersMu: register no more callbacks
	noKeys   statusCounts // requests that found no key (apipool.requests)
}

// close unregisters the key-state callback, so that a closed pool
// reports no gauges and its meter provider does not keep it alive.
func (tl *telemetry) close() {
	tl.metersMu.Lock()
	defer tl.metersMu.Unlock()
	tl.closed = true
	if e := tl.meters.Load(); e != nil && e.reg != nil {
		e.reg.Unregister()
		e.reg = nil
	}
}

// tracerEntry caches the tracer of one provider. fixed marks a provider
// set by option, which holds for the pool's life: the entry is used as it
// is. Otherwise it is the global provider's entry, reused while the
// global is the same provider; cmp tells whether the provider's type is
// comparable, which == needs to tell.
type tracerEntry struct {
	tp     trace.TracerProvider
	tracer trace.Tracer
	on     bool
	fixed  bool
	cmp    bool
}

type meterEntry struct {
	mp       metric.MeterProvider
	on       bool
	fixed    bool
	cmp      bool
	duration metric.Float64Histogram
	requests metric.Int64ObservableCounter
	reg      metric.Registration
}

// isNoop reports whether a provider records nothing: the noop packages'
// providers, or the global delegating provider before any SDK is set.
func isNoop(p any) bool {
	switch p.(type) {
	case tracenoop.TracerProvider, *tracenoop.TracerProvider, metricnoop.MeterProvider, *metricnoop.MeterProvider:
		return true
	}
	name := reflect.TypeOf(p).String()
	return name == "*global.tracerProvider" || name == "*global.meterProvider"
}

// isComparable reports whether == may be used on p without panicking.
func isComparable(p any) bool { return reflect.TypeOf(p).Comparable() }

// tracer returns the tracer to use now, and whether it records. On the
// request path it costs an atomic load, plus, without a provider option,
// a read of the global and an interface comparison (e.tp is of a
// comparable type, so == cannot panic whatever the global is).
func (tl *telemetry) tracer() (trace.Tracer, bool) {
	e := tl.tracers.Load()
	if e == nil || !e.fixed && !(e.cmp && e.tp == otel.GetTracerProvider()) {
		e = tl.loadTracer()
	}
	return e.tracer, e.on
}

// loadTracer makes the entry of the provider to use now.
func (tl *telemetry) loadTracer() *tracerEntry {
	tp := tl.t.cfg.tracerProvider
	fixed := tp != nil
	if !fixed {
		tp = otel.GetTracerProvider()
	}
	e := &tracerEntry{tp: tp, on: !isNoop(tp), fixed: fixed, cmp: isComparable(tp)}
	e.tracer = tp.Tracer(scopeName, trace.WithInstrumentationVersion(Version))
	tl.tracers.Store(e)
	return e
}

// meter returns the instruments to use now, as tracer does the tracer.
func (tl *telemetry) meter() *meterEntry {
	e := tl.meters.Load()
	if e == nil || !e.fixed && !(e.cmp && e.mp == otel.GetMeterProvider()) {
		e = tl.loadMeter()
	}
	return e
}

// loadMeter makes the entry of the provider to use now. A change of
// provider moves the key-state callback to the new one.
func (tl *telemetry) loadMeter() *meterEntry {
	tl.metersMu.Lock()
	defer tl.metersMu.Unlock()
	mp := tl.t.cfg.meterProvider
	fixed := mp != nil
	if !fixed {
		mp = otel.GetMeterProvider()
	}
	old := tl.meters.Load()
	if old != nil && (old.fixed || old.cmp && old.mp == mp) {
		return old
	}
	if old != nil && old.reg != nil {
		old.reg.Unregister()
	}
	e := &meterEntry{mp: mp, on: !isNoop(mp), fixed: fixed, cmp: isComparable(mp)}
	if e.on {
		tl.instruments(e)
	}
	tl.meters.Store(e)
	return e
}

func (tl *telemetry) propagator() propagation.TextMapPropagator {
	if p := tl.t.cfg.propagator; p != nil {
		return p
	}
	return otel.GetTextMapPropagator()
}

// instruments creates e's instruments. Errors from a provider leave the
// instrument a no-op; they are reported through otel.Handle.
func (tl *telemetry) instruments(e *meterEntry) {
	m := e.mp.Meter(scopeName, metric.WithInstrumentationVersion(Version))
	var err error
	e.duration, err = m.Float64Histogram("http.client.request.duration",
		metric.WithDescription("Duration of HTTP client requests."), metric.WithUnit("s"),
		metric.WithExplicitBucketBoundaries(0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10))
	otelHandle(err)
	// Observed from counts the keys hold, so that a removed key's series
	// end with it (a synchronous counter keeps every key ever seen).
	e.requests, err = m.Int64ObservableCounter("apipool.requests",
		metric.WithDescription("Attempts sent through the pool, by key and apipool status (the keys in the pool now; requests that found no key under the empty key ID)."), metric.WithUnit("{request}"))
	otelHandle(err)
	cooling, err := m.Int64ObservableGauge("apipool.key.cooling", metric.WithDescription("1 while the key cools down after a rate limit."))
	otelHandle(err)
	disabled, err := m.Int64ObservableGauge("apipool.key.disabled", metric.WithDescription("1 while the key is disabled."))
	otelHandle(err)
	open, err := m.Int64ObservableGauge("apipool.key.breaker_open", metric.WithDescription("1 while the key's circuit breaker is open."))
	otelHandle(err)
	inflight, err := m.Int64ObservableGauge("apipool.key.in_flight", metric.WithDescription("Requests using the key now."), metric.WithUnit("{request}"))
	otelHandle(err)
	quota, err := m.Int64ObservableGauge("apipool.key.quota_left", metric.WithDescription("Today's quota left, for keys with a daily quota."), metric.WithUnit("{request}"))
	otelHandle(err)
	remaining, err := m.Int64ObservableGauge("apipool.key.provider_remaining", metric.WithDescription("Requests left in the key's current window, as the upstream's rate-limit headers last said (only while known)."), metric.WithUnit("{request}"))
	otelHandle(err)
	queue, err := m.Int64ObservableGauge("apipool.recorder.queue_length", metric.WithDescription("Usage events waiting in the recorder's queue."), metric.WithUnit("{event}"))
	otelHandle(err)
	dropped, err := m.Int64ObservableCounter("apipool.recorder.dropped", metric.WithDescription("Usage events the recorder dropped."), metric.WithUnit("{event}"))
	otelHandle(err)
	insts := []metric.Observable{e.requests, cooling, disabled, open, inflight, quota, remaining, queue, dropped}
	for _, i := range insts {
		if i == nil {
			return
		}
	}
	if tl.closed {
		return
	}
	e.reg, err = m.RegisterCallback(func(_ context.Context, o metric.Observer) error {
		t := tl.t
		observeCounts(o, e.requests, "", &tl.noKeys)
		for _, k := range t.keys.Load().keys {
			observeCounts(o, e.requests, k.key.ID, &k.attempts)
		}
		for _, s := range t.Snapshot() {
			attrs := metric.WithAttributes(attribute.String("apipool.key.id", s.KeyID))
			o.ObserveInt64(cooling, b2i(!s.CoolingUntil.IsZero()), attrs)
			o.ObserveInt64(disabled, b2i(s.Disabled), attrs)
			o.ObserveInt64(open, b2i(s.Breaker == BreakerOpen), attrs)
			o.ObserveInt64(inflight, s.InFlight, attrs)
			if s.QuotaLeft >= 0 {
				o.ObserveInt64(quota, s.QuotaLeft, attrs)
			}
			if s.ProviderRemaining >= 0 {
				o.ObserveInt64(remaining, s.ProviderRemaining, attrs)
			}
		}
		if q, ok := t.rec.(recorder.QueueLener); ok {
			o.ObserveInt64(queue, int64(q.QueueLen()))
		}
		if d, ok := t.rec.(recorder.DropCounter); ok {
			o.ObserveInt64(dropped, int64(d.Dropped()))
		}
		return nil
	}, insts...)
	otelHandle(err)
}

func otelHandle(err error) {
	if err != nil {
		otel.Handle(err)
	}
}

func b2i(b bool) int64 {
	if b {
		return 1
	}
	return 0
}

// startRequest starts the span of a logical request, or returns a nil
// span when tracing is off.
func (tl *telemetry) startRequest(ctx context.Context, r *http.Request) (context.Context, trace.Span) {
	tr, on := tl.tracer()
	if !on {
		return ctx, nil
	}
	ctx, span := tr.Start(ctx, requestSpanName(r), internalSpan...)
	if !span.IsRecording() {
		return ctx, span // sampled out: no attributes built
	}
	span.SetAttributes(
		attribute.String("http.request.method", method(r)),
		attribute.String("server.address", r.URL.Hostname()),
	)
	if op := OperationFrom(ctx); op != "" {
		span.SetAttributes(attribute.String("apipool.operation", op))
	}
	return ctx, span
}

// The span kinds' start options, made once: built per span, the option
// and its slice cost two allocations even when the span is sampled out.
var (
	internalSpan = []trace.SpanStartOption{trace.WithSpanKind(trace.SpanKindInternal)}
	clientSpan   = []trace.SpanStartOption{trace.WithSpanKind(trace.SpanKindClient)}
)

// requestSpanName is "apipool {method}", without a concatenation for the
// common methods.
func requestSpanName(r *http.Request) string {
	switch method(r) {
	case http.MethodGet:
		return "apipool GET"
	case http.MethodPost:
		return "apipool POST"
	case http.MethodPut:
		return "apipool PUT"
	case http.MethodDelete:
		return "apipool DELETE"
	case http.MethodPatch:
		return "apipool PATCH"
	}
	return "apipool " + method(r)
}

// startAttempt starts the CLIENT span of one attempt, following the HTTP
// client semantic conventions.
func (tl *telemetry) startAttempt(ctx context.Context, r *http.Request, attempt int, k *keyState) (context.Context, trace.Span) {
	tr, on := tl.tracer()
	if !on {
		return ctx, nil
	}
	if parent := trace.SpanFromContext(ctx); !parent.IsRecording() && !parent.SpanContext().IsSampled() && parent.SpanContext().IsValid() {
		// The request's span was sampled out: its attempts would be too
		// (parent-based samplers), so none is started.
		return ctx, nil
	}
	ctx, span := tr.Start(ctx, method(r), clientSpan...)
	if !span.IsRecording() {
		return ctx, span // sampled out: no attributes built
	}
	span.SetAttributes(
		attribute.String("http.request.method", method(r)),
		attribute.String("server.address", r.URL.Hostname()),
		attribute.Int("server.port", port(r.URL)),
		attribute.String("url.full", redactURL(r.URL, tl.t.cfg.injectName, tl.t.cfg.inject == injectQuery)),
		attribute.String("apipool.key.id", k.key.ID),
		attribute.String("apipool.key.fingerprint", k.fp),
	)
	if attempt > 1 {
		span.SetAttributes(attribute.Int("http.request.resend_count", attempt-1))
	}
	return ctx, span
}

// inject writes the trace context of ctx (sc, its span context) into r's
// header, when there is one. r is the pool's copy of the request: its
// Header is its own.
func (tl *telemetry) inject(ctx context.Context, sc trace.SpanContext, r *http.Request) {
	if !sc.IsValid() || !sc.IsSampled() && !trace.SpanFromContext(ctx).IsRecording() {
		return // no trace, or one sampled out: nothing worth the header
	}
	if r.Header == nil {
		r.Header = make(http.Header)
	}
	tl.propagator().Inject(ctx, propagation.HeaderCarrier(r.Header))
}

// attemptDone records an attempt's outcome on its span and in the
// metrics. The span is left open; the caller ends it.
func (tl *telemetry) attemptDone(ctx context.Context, span trace.Span, r *http.Request, k *keyState, st status.Status, resp *http.Response, err error, d time.Duration) {
	e := tl.meter()
	if span == nil && !e.on {
		return // before anything allocates (strconv.Itoa(429) does)
	}
	errType := ""
	code := 0
	if resp != nil {
		code = resp.StatusCode
		if code >= 400 {
			errType = strconv.Itoa(code)
		}
	}
	if err != nil {
		errType = errorType(st, err)
	}
	if span != nil && !span.IsRecording() {
		span = nil
		if !e.on {
			return
		}
	}
	if span != nil {
		span.SetAttributes(attribute.String("apipool.status", st.String()), attribute.Int("apipool.status_id", st.ID()))
		if code != 0 {
			span.SetAttributes(attribute.Int("http.response.status_code", code))
		}
		if errType != "" {
			span.SetAttributes(attribute.String("error.type", errType))
			msg := st.String()
			if err != nil {
				msg = err.Error() // already redacted
			}
			span.SetStatus(codes.Error, msg)
		}
	}
	if !e.on {
		return
	}
	attrs := []attribute.KeyValue{
		attribute.String("http.request.method", method(r)),
		attribute.String("server.address", r.URL.Hostname()),
		attribute.Int("server.port", port(r.URL)),
	}
	if code != 0 {
		attrs = append(attrs, attribute.Int("http.response.status_code", code))
	}
	if errType != "" {
		attrs = append(attrs, attribute.String("error.type", errType))
	}
	if e.duration != nil {
		e.duration.Record(ctx, d.Seconds(), metric.WithAttributes(attrs...))
	}
	if k != nil {
		k.attempts.add(st)
	}
}

// noKey counts a request that found no key, in the metrics.
func (tl *telemetry) noKey(ctx context.Context) {
	if e := tl.meter(); e.on {
		tl.noKeys.add(status.NoKeyAvailable)
	}
}

// statusCounts counts attempts by status, for apipool.requests.
type statusCounts [len(statusIndex)]atomic.Int64

// statusIndex is each status's place in a statusCounts.
var statusIndex = [...]status.Status{status.Success, status.Failed, status.ReachLimit, status.InvalidKey, status.ServerError, status.ClientError, status.Timeout, status.Canceled, status.NetworkError, status.NoKeyAvailable, status.Unknown}

func (c *statusCounts) add(st status.Status) {
	for i, s := range statusIndex {
		if s == st {
			c[i].Add(1)
			return
		}
	}
	c[len(c)-1].Add(1) // a status of a custom classifier's: as unknown
}

// observeCounts reports c's nonzero counts under key ID id.
func observeCounts(o metric.Observer, inst metric.Int64Observable, id string, c *statusCounts) {
	for i := range c {
		if n := c[i].Load(); n > 0 {
			o.ObserveInt64(inst, n, metric.WithAttributes(attribute.String("apipool.key.id", id), attribute.String("apipool.status", statusIndex[i].String())))
		}
	}
}

// wait marks on the request's span that it waited, and why.
func waitEvent(span trace.Span, d time.Duration, reason string) {
	if span != nil && span.IsRecording() {
		span.AddEvent("apipool.wait", trace.WithAttributes(attribute.Float64("apipool.wait.seconds", d.Seconds()), attribute.String("apipool.wait.reason", reason)))
	}
}

// endRequest ends the logical request's span with its summary.
func endRequest(span trace.Span, st status.Status, attempts int, waited time.Duration, k *keyState, err error) {
	if span == nil {
		return
	}
	if !span.IsRecording() {
		span.End()
		return
	}
	span.SetAttributes(
		attribute.String("apipool.status", st.String()),
		attribute.Int("apipool.attempts", attempts),
		attribute.Float64("apipool.wait.total_seconds", waited.Seconds()),
	)
	if k != nil {
		span.SetAttributes(attribute.String("apipool.key.id", k.key.ID))
	}
	if err != nil {
		span.SetStatus(codes.Error, err.Error())
	} else if st != status.Success {
		span.SetStatus(codes.Error, st.String())
	}
	span.End()
}

func method(r *http.Request) string {
	if r.Method == "" {
		return http.MethodGet
	}
	return r.Method
}

func port(u *url.URL) int {
	if p := u.Port(); p != "" {
		n, _ := strconv.Atoi(p)
		return n
	}
	if u.Scheme == "https" {
		return 443
	}
	return 80
}

// redactURL returns u for url.full: credentials replaced by REDACTED, and
// the key's query parameter, when keys go in the query, replaced too.
func redactURL(u *url.URL, param string, queryKey bool) string {
	if u.User == nil && (!queryKey || u.RawQuery == "") {
		return u.String()
	}
	c := *u
	if c.User != nil {
		c.User = url.UserPassword("REDACTED", "REDACTED")
	}
	if queryKey && c.RawQuery != "" {
		q := c.Query()
		if _, ok := q[param]; ok {
			q.Set(param, "REDACTED")
			c.RawQuery = q.Encode()
		}
	}
	return c.String()
}
