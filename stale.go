package apipool

import (
	"context"
	"net/http"
	"net/http/httptrace"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/apipool-ng/apipool/status"
)

// Stale keep-alive connections.
//
// A server closes a keep-alive connection it holds idle when its own idle
// timeout passes (nginx's keepalive_timeout, Node's keepAliveTimeout,
// Go's Server.IdleTimeout...). When the base transport picks that
// connection for a request at the moment the server closes it, the
// request fails with io.EOF, "connection reset by peer" or "http: server
// closed idle connection", and no byte of an answer. net/http's Transport
// resends such a request itself only when it can tell it is safe: a GET,
// HEAD, OPTIONS or TRACE, or a request with an Idempotency-Key header, or
// one that failed before any byte was written. A POST (every LLM call)
// fails with the error as it is.
//
// The pool resends it instead, on the same or another key, when the
// attempt went out on a reused connection, no byte of an answer came, and
// the error came within staleWindow of the request's last byte written:
// the server closed a connection it kept idle, the key is not at fault
// and the request did not reach the upstream's handler. An error later
// than that may be a server or a load balancer that dropped a request it
// had been working on (an LLM call of a minute behind a 60 s idle
// timeout): resending it could run it twice, so it is a network error as
// before. The attempt
// counts against no key (nothing for its breaker, its failures or its
// rate limits), records no usage event and ends its span with the event
// apipool.stale_connection. A request is resent so at most
// maxStaleResends times; a fresh connection that fails is an upstream
// fault as before.

const (
	// maxStaleResends bounds the resends of one request after stale
	// connections (several idle connections may be closed at once).
	maxStaleResends = 3
	// staleWindow bounds the time from a request's last byte written to
	// the error of a stale connection: that of a round trip and of a
	// busy machine's scheduling, far below any server's or load
	// balancer's idle timeout (seconds to minutes). Measured on the
	// monotonic clock: it is the base transport's, not the pool's, time.
	staleWindow = 3 * time.Second
)

// monoStart is the origin of connTrace's monotonic times.
var monoStart = time.Now()

// connTrace notes, through net/http's httptrace hooks, whether an
// attempt went out on a reused connection and whether a byte of an
// answer came. The hooks may run on the transport's goroutines.
type connTrace struct {
	reused, answered atomic.Bool
	// wrote is when the request's last byte was written, in nanoseconds
	// since monoStart, or 0.
	wrote atomic.Int64
	hooks httptrace.ClientTrace
}

// traceConn returns an attempt's context with a connTrace, or ctx and
// nil when net/http resends the request itself after a stale connection,
// or the pool could not (its body cannot be replayed; a probe's request).
// A replayable request's attempts carry no body or one with GetBody.
func (c *call) traceConn(ctx context.Context) (context.Context, *connTrace) {
	if !c.replayable || c.pinned != nil || c.t.cfg.maxAttempts == 1 || netHTTPResends(c.req.Method, c.req.Header) {
		return ctx, nil
	}
	ct := c.ctrace
	if ct == nil {
		ct = newConnTrace()
		c.ctrace = ct
	}
	ct.reused.Store(false)
	ct.answered.Store(false)
	ct.wrote.Store(0)
	hooks := &ct.hooks
	if httptrace.ContextClientTrace(ctx) != nil {
		// WithClientTrace composes the caller's own trace (a
		// ReverseProxy's, for one) into the hooks given: it gets a copy,
		// so that the call's, reused by later requests, stay apart. The
		// copy's hooks are the same functions: one allocation, not the
		// four of a new connTrace.
		own := ct.hooks
		hooks = &own
	}
	return httptrace.WithClientTrace(ctx, hooks), ct
}

// newConnTrace returns a connTrace with its hooks set. The hooks are
// never written again: the transport may read them after an attempt
// ends (an idle connection's PutIdleConn), while a later request of the
// call (putCall) sends with them.
func newConnTrace() *connTrace {
	ct := new(connTrace)
	ct.hooks.GotConn = func(info httptrace.GotConnInfo) { ct.reused.Store(info.Reused) }
	ct.hooks.GotFirstResponseByte = func() { ct.answered.Store(true) }
	ct.hooks.WroteRequest = func(httptrace.WroteRequestInfo) { ct.wrote.Store(max(int64(time.Since(monoStart)), 1)) }
	return ct
}

// netHTTPResends reports whether net/http's Transport resends a request
// with a replayable body (or none) itself when a reused connection fails
// before an answer: the rule of its Request.isReplayable, by method and
// header.
func netHTTPResends(method string, h http.Header) bool {
	switch method {
	case "", http.MethodGet, http.MethodHead, http.MethodOptions, http.MethodTrace:
		return true
	}
	_, ik := h["Idempotency-Key"]
	_, xik := h["X-Idempotency-Key"]
	return ik || xik
}

// staleConn reports whether an attempt that failed with err met a stale
// connection, and may be resent without counting against its key: it
// went out on a reused connection, no byte of an answer came, the error
// came within staleWindow of the request written (or before it was), it
// is neither a timeout nor a cancel, the caller is still waiting, and the
// request has resends of this kind left.
func (c *call) staleConn(ct *connTrace, err error) bool {
	if ct == nil || err == nil || !ct.reused.Load() || ct.answered.Load() ||
		c.stale >= maxStaleResends || c.req.Context().Err() != nil ||
		status.ClassifyError(err) != status.NetworkError {
		return false
	}
	w := ct.wrote.Load()
	return w == 0 || time.Duration(int64(time.Since(monoStart))-w) <= staleWindow
}

// staleEvent ends an attempt's span that met a stale connection.
func staleEvent(span trace.Span) {
	if span == nil {
		return
	}
	if span.IsRecording() {
		span.AddEvent("apipool.stale_connection", trace.WithAttributes(attribute.String("error.type", "stale_connection")))
		span.SetStatus(codes.Error, "stale keep-alive connection: resent")
	}
	span.End()
}
