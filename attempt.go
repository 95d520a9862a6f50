package apipool

import (
	"context"
	"errors"
	"io"
	"net/http"
	"strconv"
	"time"

	"github.com/apipool-ng/apipool/recorder"
	"github.com/apipool-ng/apipool/status"
	"go.opentelemetry.io/otel/trace"
)

// call is one request's journey through the pool: the attempt loop below,
// its picking and waiting (pick.go), its body (body.go). Calls are reused
// (newCall, putCall) once a response delivered on the first attempt is
// read and closed.
type call struct {
	t    *Transport
	req  *http.Request
	ks   *keySet
	cand Candidates
	now  time.Time

	// pinned, when set, is the one key this call may use, once, without
	// waiting: a probe's request (see probeKey).
	pinned *keyState

	// sent is the current attempt's request copy, allocated with its
	// response body wrapper, unless the attempt's copy is copy: the first
	// attempt's, when reusableCopy, which serves later requests with the
	// call. firstHeader is the first attempt's header map, handed on to a
	// later request by putCall.
	sent        *sentRequest
	copy        http.Request
	firstHeader http.Header

	tried keyBits // keys this request sent an attempt with
	lost  keyBits // keys that lost a reservation race in this look

	// Request body replay (body.go).
	getBody func() (io.ReadCloser, error)
	bufLen  int64 // the buffered body's length, or -1 when not buffered

	waiter *waiter // this call's place in the wait queue, while queued

	// The current attempt: its breaker ticket and the cancel of a
	// pool-imposed attempt timeout.
	ticket        breakerTicket
	cancelAttempt context.CancelFunc

	// The first key this request was rejected with (invalid key): a second
	// rejection puts the fault on the request.
	rejected *rejection
	failures int32 // attempts that ended in a server or network fault
	limited  int32 // attempts that ended in a rate limit

	skipTried  bool // the current look passes over the keys tried
	replayable bool // the body can be sent again
	bodySent   bool // the original req.Body went out (the base closes it)
	trial      bool // the current attempt is its key's trial
	hasWaited  bool // counted in Transport.Waits

	// The key the returned response holds, and whether its body holds it
	// (a respBody), so that the request's span ends with the body.
	key  *keyState
	held bool

	// spareHeader is a cleared map left by an earlier request (putCall),
	// for the first attempt's copy of the headers.
	spareHeader http.Header

	// Telemetry: the logical request's span and the delivered attempt's
	// span (nil when tracing is off), ended when the body is released.
	reqSpan  trace.Span
	attSpan  trace.Span
	waited   time.Duration
	attempts int
	final    status.Status
}

// rejection is the first key a request was rejected with, and the
// disable that caused.
type rejection struct {
	k    *keyState
	info *disableInfo
}

// rateLimitAttempts bounds the attempts of one request that end in a rate
// limit, beside its wait budget: twice the number of keys, at least 4. It
// guards against an upstream that answers 429 with no wait at all.
func rateLimitAttempts(keys int) int { return max(4, 2*keys) }

func (c *call) run() (*http.Response, error) {
	ctx, span := c.t.tel.startRequest(c.req.Context(), c.req)
	c.reqSpan = span
	resp, err := c.loop(ctx)
	if c.waiter != nil {
		c.t.waiters.leave(c.waiter)
		c.waiter = nil
	}
	if span != nil && (err != nil || !c.held) {
		// No body holds the request open: its span ends now.
		endRequest(span, c.final, c.attempts, c.waited, c.key, err)
	}
	return resp, err
}

// loop runs attempts until one answer is final: take a key, send, classify
// and settle, then return the answer or go round again.
func (c *call) loop(ctx context.Context) (*http.Response, error) {
	t := c.t
	if err := c.prepareBody(); err != nil {
		return nil, err
	}
	// The last answer (or error), returned when no other key can be tried.
	var prev *http.Response
	var prevErr error
	for attempt := 1; ; attempt++ {
		k, err := c.takeKey(ctx)
		if err != nil {
			return c.giveUp(ctx, attempt, prev, prevErr, err)
		}
		if prev != nil {
			prev.Body.Close() // another key is taken: not needed any more
			prev = nil
		}
		prevErr = nil
		c.attempts = attempt

		actx, aspan := t.tel.startAttempt(ctx, c.req, attempt, k)
		sc := trace.SpanContextFromContext(actx)
		resp, st, latency, err := c.send(actx, sc, k, attempt)
		if ns, ok := err.(*notSentError); ok {
			endSpan(aspan)
			c.closeUnsentBody()
			return nil, ns.err
		}
		t.tel.attemptDone(actx, aspan, c.req, k, st, resp, err, latency)
		t.record(c, k, st, latency, attempt, resp, errorType(st, err), sc)

		if !c.resend(k, st) {
			if err != nil {
				endSpan(aspan)
				c.endAttempt()
				t.release(k)
				return nil, err
			}
			c.attSpan = aspan
			return c.deliver(resp, k), nil
		}
		c.tried.set(c.ks.index(k))
		endSpan(aspan)
		if resp != nil {
			prev = c.keep(resp, k)
		} else {
			t.release(k)
			prevErr = err
		}
		c.endAttempt()
		if st == status.ServerError || st == status.NetworkError || st == status.Timeout {
			// The upstream itself is failing: wait a little before the next
			// attempt, but only when there is a key to send it with.
			c.now = t.cfg.clock.Now()
			if c.anyFree() {
				d := min(t.cfg.backoff(t.cfg.backoffMin, t.cfg.backoffMax, int(c.failures)-1, resp), t.cfg.backoffMax)
				waitEvent(c.reqSpan, d, "backoff after "+st.String())
				if err := c.sleep(ctx, d); err != nil {
					c.closeUnsentBody()
					if prev != nil {
						prev.Body.Close()
					}
					return nil, err
				}
			}
		}
	}
}

// notSentError is send's signal that the attempt never went out: its
// body could not be replayed (err says why).
type notSentError struct{ err error }

func (e *notSentError) Error() string { return e.err.Error() }

// send sends one attempt with key k: the request copy with the key applied,
// the base's answer, its status, and what it means for the key (settle).
func (c *call) send(ctx context.Context, sc trace.SpanContext, k *keyState, attempt int) (*http.Response, status.Status, time.Duration, error) {
	t := c.t
	if t.cfg.attemptTimeout > 0 {
		ctx, c.cancelAttempt = context.WithTimeout(ctx, t.cfg.attemptTimeout)
	}
	r, err := c.attemptRequest(ctx, k, attempt)
	if err != nil {
		c.abandon(k)
		return nil, 0, 0, &notSentError{err}
	}
	t.tel.inject(ctx, sc, r)
	start := c.now
	resp, err := t.base.RoundTrip(r)
	if attempt == 1 {
		c.bodySent = true
	}
	end := t.after(start)
	switch {
	case err != nil && resp != nil:
		resp.Body.Close() // a RoundTripper never returns both
		resp = nil
	case err == nil && resp == nil:
		err = errNoAnswer
	}
	st := t.cfg.classifier.ClassifyAt(resp, err, end)
	// The caller's own deadline or cancel is not the upstream's fault: it
	// is recorded as it is, and its breaker hears nothing of it.
	callerEnded := err != nil && c.req.Context().Err() != nil
	if err != nil {
		err = redact(err, k.secret)
	}
	st = c.settle(k, st, resp, end, callerEnded)
	c.final = st
	switch st {
	case status.ServerError, status.NetworkError, status.Timeout:
		c.failures++
	case status.ReachLimit:
		c.limited++
	}
	c.now = end // the attempt's time from now on: its event's (record)
	return resp, st, end.Sub(start), err
}

// errNoAnswer stands for a base transport that returned neither a
// response nor an error.
var errNoAnswer = errors.New("apipool: the base transport returned no response and no error")

// resend decides whether the request goes on to another attempt after one
// that ended in st. Rate limits and a first rejected key resend within the
// wait budget; server and network faults within WithMaxAttempts.
func (c *call) resend(k *keyState, st status.Status) bool {
	t := c.t
	if c.pinned != nil || t.cfg.maxAttempts == 1 || !c.replayable || c.req.Context().Err() != nil {
		return false
	}
	switch st {
	case status.ReachLimit:
		return int(c.limited) < rateLimitAttempts(len(c.ks.keys))
	case status.InvalidKey:
		return c.rejected != nil && c.rejected.k == k // the first rejection: the key, not the request, is at fault
	case status.ServerError, status.NetworkError, status.Timeout:
		return int(c.failures) < t.cfg.maxAttempts && (t.cfg.retryNonIdem || idempotent(c.req))
	}
	return false
}

func idempotent(r *http.Request) bool {
	switch r.Method {
	case "", http.MethodGet, http.MethodHead, http.MethodOptions, http.MethodTrace, http.MethodPut, http.MethodDelete:
		return true
	}
	return r.Header.Get("Idempotency-Key") != "" || r.Header.Get("X-Idempotency-Key") != ""
}

// giveUp ends a request that found no key for its next attempt: it gets
// the last answer or error when there was one, else err (a *NoKeyError
// or the context's error).
func (c *call) giveUp(ctx context.Context, attempt int, prev *http.Response, prevErr, err error) (*http.Response, error) {
	t := c.t
	noKey := errors.Is(err, ErrNoKeyAvailable)
	switch {
	case noKey && prev != nil:
		return c.deliver(prev, nil), nil
	case noKey && prevErr != nil:
		return nil, prevErr
	}
	if prev != nil {
		prev.Body.Close()
	}
	c.closeUnsentBody()
	if noKey {
		c.final = status.NoKeyAvailable
		t.record(c, nil, status.NoKeyAvailable, 0, attempt, nil, "no_key_available", trace.SpanContextFromContext(ctx))
		t.tel.noKey(ctx)
	}
	return nil, err
}

// endAttempt releases what the current attempt held beside its key.
func (c *call) endAttempt() {
	if c.cancelAttempt != nil {
		c.cancelAttempt()
		c.cancelAttempt = nil
	}
}

// deliver hands resp to the caller: the caller's own request in
// resp.Request (never the copy holding the key), nothing of the key in its
// headers, and a body that frees the key's in-flight slot when closed or
// read to the end.
func (c *call) deliver(resp *http.Response, k *keyState) *http.Response {
	t := c.t
	resp.Request = t.callerRequest(c.req)
	t.scrubResponse(resp, k)
	if t.cfg.rateLimitHeaders != RateLimitHeadersAsIs {
		t.rewriteRateLimitHeaders(resp.Header, t.cfg.clock.Now())
	}
	c.key = k
	if k == nil { // a kept answer: it holds no key
		c.endAttempt()
		return resp
	}
	if resp.Body == nil || resp.Body == http.NoBody || resp.StatusCode == http.StatusSwitchingProtocols {
		t.release(k)
		c.endAttempt()
		endSpan(c.attSpan)
		return resp
	}
	c.held = true
	var b *respBody
	if c.sent != nil {
		b = &c.sent.body
	} else {
		b = new(respBody)
	}
	b.body, b.c, b.reuse = resp.Body, c, c.attempts == 1
	resp.Body = b
	return resp
}

// record hands one attempt's usage event to the recorder.
func (t *Transport) record(c *call, k *keyState, st status.Status, latency time.Duration, attempt int, resp *http.Response, errType string, sc trace.SpanContext) {
	r := c.req
	e := recorder.Event{
		Time:          c.now, // the attempt's end, or when no key was found
		Status:        st,
		Latency:       latency,
		Attempt:       attempt,
		Method:        method(r),
		Host:          r.URL.Host,
		Operation:     OperationFrom(r.Context()),
		RequestBytes:  -1,
		ResponseBytes: -1,
		ErrorType:     errType,
		TraceID:       sc.TraceID(),
		SpanID:        sc.SpanID(),
	}
	if k != nil {
		e.KeyID, e.KeyFingerprint = k.key.ID, k.fp
	}
	if r.Body == nil || r.Body == http.NoBody {
		e.RequestBytes = 0
	} else if r.ContentLength > 0 {
		e.RequestBytes = r.ContentLength
	}
	if resp != nil {
		e.HTTPStatus = resp.StatusCode
		e.ResponseBytes = resp.ContentLength
	}
	t.rec.Record(e)
}

// errorType names an attempt's failure in a few secret-free words.
func errorType(st status.Status, err error) string {
	if err == nil {
		return ""
	}
	switch st {
	case status.Canceled:
		return "canceled"
	case status.Timeout:
		return "timeout"
	}
	if err == errNoAnswer {
		return "no_answer"
	}
	if errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) {
		return "connection_closed"
	}
	return "network_error"
}

func endSpan(s trace.Span) {
	if s != nil {
		s.End()
	}
}

func itoa(i int) string     { return strconv.Itoa(i) }
func quote(s string) string { return strconv.Quote(s) }
