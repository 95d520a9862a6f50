package apipool

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"strconv"
	"time"

	"go.opentelemetry.io/otel/trace"

	"github.com/apipool-ng/apipool/internal/creds"
	"github.com/apipool-ng/apipool/internal/readall"
	"github.com/apipool-ng/apipool/recorder"
	"github.com/apipool-ng/apipool/sharedstate"
	"github.com/apipool-ng/apipool/status"
	"github.com/apipool-ng/apipool/usage"
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

	// rt is the request's model and session (routing.go); nil when the
	// pool routes by neither.
	rt *route

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

	// metered, when set, is the delivered answer's body as the usage
	// meter reads it (units.go); its event is recorded when the body ends.
	metered *metered

	// The cancel of the current attempt's pool-imposed timeout.
	cancelAttempt context.CancelFunc

	// The first key this request was rejected with (invalid key): a second
	// rejection puts the fault on the request.
	rejected *rejection
	failures int32 // attempts that ended in a server or network fault
	limited  int32 // attempts that ended in a rate limit
	stale    int32 // attempts resent after a stale connection (stale.go)
	// ctrace notes the connection of the current attempt (stale.go); kept
	// by putCall for the next request.
	ctrace *connTrace

	skipTried  bool // the current look passes over the keys tried
	replayable bool // the body can be sent again
	bodySent   bool // the original req.Body went out (the base closes it)
	ownBody    bool // the body sent is the pool's buffer, rewritten (WithIncludeUsage)
	stripUsage bool // the pool asked for the stream's usage: the caller must not see it
	hasWaited  bool // counted in Transport.Waits
	// held: the returned response's body holds its key (a respBody), so
	// that the request's span ends with the body.
	held  bool
	final status.Status

	// The key the returned response holds.
	key *keyState

	// spareHeader is a cleared map left by an earlier request (putCall),
	// for the first attempt's copy of the headers.
	spareHeader http.Header

	// Telemetry: the logical request's span and the delivered attempt's
	// span (nil when tracing is off), ended when the body is released.
	reqSpan  trace.Span
	attSpan  trace.Span
	waited   time.Duration
	attempts int
}

// rejection is the first key a request was rejected with, and the
// disable that caused. The disable takes effect at once, but is reported
// (logged, published to the other replicas, alerted) only when the request
// is over and did not put the fault on itself (reportRejection): when
// every key is revoked, or a request is malformed, every request meets two
// rejections, and reporting each first one would log, publish and alert a
// disable and an enable per request for keys that stay in use.
type rejection struct {
	k    *keyState
	info *disableInfo
	// unreported: the disable waits for reportRejection.
	unreported bool
}

// rateLimitAttempts bounds the attempts of one request that end in a rate
// limit, beside its wait budget: twice the number of keys, at least 4. It
// guards against an upstream that answers 429 with no wait at all.
func rateLimitAttempts(keys int) int { return max(4, 2*keys) }

func (c *call) run() (*http.Response, error) {
	ctx, span := c.t.tel.startRequest(c.req.Context(), c.req)
	c.reqSpan = span
	resp, err := c.loop(ctx)
	c.reportRejection()
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

// loop runs attempts until one answer is final. First the request's body
// is made replayable and its route read (its model and session, with
// WithModel or WithSessions). Then each attempt reads top to bottom:
// reserve a key, build the request copy with the key applied, send it,
// classify the answer and commit its verdict to the key, record the usage
// event, then deliver the answer or go round again.
func (c *call) loop(ctx context.Context) (*http.Response, error) {
	t := c.t
	body, err := c.prepareBody()
	if err != nil {
		return nil, c.unsent(ctx, 1, err)
	}
	if t.cfg.routes() && c.pinned == nil {
		if err := c.route(body); err != nil {
			return c.noModel(ctx, err)
		}
	}
	// The last answer (or error), returned when no other key can be tried.
	var prev *http.Response
	var prevErr error
	for attempt := 1; ; {
		// 1. Reserve a key: one free now, or the first to free up (pick.go).
		res, err := c.takeKey(ctx)
		if err != nil {
			return c.giveUp(ctx, attempt, prev, prevErr, err)
		}
		if t.alerts != nil && c.pinned == nil {
			t.alertKeysBack(c.now)
		}
		k := res.k
		if res.stale() || c.modelRested(k, res.at.UnixNano()) {
			// Cooled down or disabled since it was reserved (another
			// request's answer came meanwhile): never send with it.
			res.cancel()
			t.flushBreaker(k)
			continue
		}
		if prev != nil {
			prev.Body.Close() // another key is taken: not needed any more
			prev = nil
		}
		prevErr = nil
		c.attempts = attempt

		// 2. Build the request copy with the key applied.
		actx, aspan := t.tel.startAttempt(ctx, c.req, attempt, k)
		sc := trace.SpanContextFromContext(actx)
		if t.cfg.attemptTimeout > 0 {
			actx, c.cancelAttempt = context.WithTimeout(actx, t.cfg.attemptTimeout)
		}
		actx, ct := c.traceConn(actx)
		r, err := c.attemptRequest(actx, k, attempt)
		if err != nil { // the body could not be replayed: nothing was sent
			res.cancel()
			t.flushBreaker(k)
			c.endAttempt()
			endSpan(aspan)
			c.closeUnsentBody()
			return nil, c.unsent(ctx, attempt, err)
		}
		t.tel.inject(actx, sc, r)

		// 3. Send.
		resp, err := t.base.RoundTrip(r)
		if attempt == 1 {
			c.bodySent = true
		}
		end := t.after(res.at)
		switch {
		case err != nil && resp != nil:
			resp.Body.Close() // a RoundTripper never returns both
			resp = nil
		case err == nil && resp == nil:
			err = errNoAnswer
		}
		if c.staleConn(ct, err) {
			// The upstream closed a kept-alive connection as the attempt
			// went out on it (stale.go): the request never reached it and
			// the key is not at fault. Give back what the attempt took and
			// send it again.
			c.stale++
			res.cancel()
			t.flushBreaker(k)
			staleEvent(aspan)
			c.endAttempt()
			attempt++
			continue
		}
		if err != nil {
			err = redact(err, k.secret)
			err = c.callerEnded(err)
		}

		// 4. Classify the answer and commit its verdict to the key. With
		// WithCooldownScope(ScopeModel), a rate limit and a used-up
		// budget rest the key for scope only (the request's model or the
		// answer's resource).
		scope := c.restScope(resp)
		if resp != nil {
			t.learnBudget(&res, resp.Header, end, scope)
		}
		v := c.judge(k, resp, err, end, scope)
		ch := res.commit(v)
		if v.disable != "" {
			// Reported when the request is over (reportRejection).
			c.rejected = &rejection{k: k, info: ch.disabled, unreported: ch.disabled != nil}
			ch.disabled = nil
		}
		t.reportChange(k, ch, v)
		st := v.st
		c.final = st
		switch st {
		case status.ServerError, status.NetworkError, status.Timeout:
			c.failures++
		case status.ReachLimit:
			c.limited++
		}

		// 5. Record the attempt: now, or, for an answer delivered with a
		// usage meter (WithUsage), when its body ends, with its units.
		t.tel.attemptDone(actx, aspan, c.req, k, st, resp, err, end.Sub(res.at))
		ev := t.event(c.req, k, c.model(), st, end, end.Sub(res.at), attempt, resp, errorType(st, err), sc)

		// 6. Deliver the answer, or resend on another key. A 101 is
		// final whatever it was classified as: the protocol has switched.
		if resp != nil && resp.StatusCode == http.StatusSwitchingProtocols || !c.resend(k, st) {
			if err != nil {
				t.rec.Record(ev)
				endSpan(aspan)
				c.endAttempt()
				k.release()
				return nil, err
			}
			c.attSpan = aspan
			if m := t.meterAnswer(c.req, resp, ev); m != nil {
				resp.Body, c.metered = m, m
			} else {
				t.rec.Record(ev)
			}
			if c.stripUsage && resp.StatusCode != http.StatusSwitchingProtocols {
				resp.Body = usage.StripUsageChunk(resp.Body) // after the meter, which reads the usage
			}
			return c.deliver(resp, k), nil
		}
		t.rec.Record(ev)
		c.tried.set(c.ks.index(k))
		endSpan(aspan)
		if resp != nil {
			prev = c.keep(resp, k)
		} else {
			k.release()
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
		attempt++
	}
}

// judge reads the answer to an attempt with key k, which came at at, into
// its status and its verdict on the key. A rate limit cools the key until
// the answer's Retry-After (rests it for scope alone, when scope is set:
// restScope); the first rejection of a request disables its key, unless
// the call is a probe's (probeKey decides); a second key rejecting the
// same request puts the fault on the request: the first key is put back
// (forgive) and the status becomes ClientError. The caller's own deadline
// or cancel is not the upstream's fault: its breaker hears nothing of it.
func (c *call) judge(k *keyState, resp *http.Response, err error, at time.Time, scope string) verdict {
	t := c.t
	v := verdict{
		st:       t.cfg.classifier.ClassifyAt(resp, err, at),
		at:       at,
		excluded: err != nil && c.req.Context().Err() != nil,
	}
	switch v.st {
	case status.ReachLimit:
		v.coolUntil, v.scope = t.cooldownUntil(resp, at), scope
	case status.InvalidKey:
		switch {
		case c.pinned != nil:
		case c.rejected == nil:
			v.disable = "upstream answered " + strconv.Itoa(resp.StatusCode) + " " + http.StatusText(resp.StatusCode)
		default:
			c.forgive(at)
			v.st, v.excluded = status.ClientError, true
		}
	}
	return v
}

// forgive puts back the key that first rejected the request, when a
// second key rejected it too: the request is at fault, not the keys.
func (c *call) forgive(at time.Time) {
	t, r := c.t, c.rejected
	unreported := r.unreported
	r.unreported = false
	undone, enabled := r.k.undisable(r.info)
	if !undone {
		return
	}
	if enabled && !unreported {
		t.publish(sharedstate.Change{KeyID: r.k.key.ID, Kind: sharedstate.Enable, At: at})
		t.alertEnabled(r.k, at, "two keys rejected one request: the request was at fault, not this key")
	}
	n := t.forgiven.Add(1)
	if t.cfg.logger == nil {
		return
	}
	// Once a minute at most: when every key is revoked, every request
	// lands here.
	last := t.forgivenLogged.Load()
	if last != 0 && at.UnixNano()-last < int64(time.Minute) || !t.forgivenLogged.CompareAndSwap(last, at.UnixNano()) {
		return
	}
	t.cfg.logger.Warn("apipool: two keys rejected one request as invalid, so the request is taken to be at fault and no key is disabled; if every request is rejected so, every key may be revoked",
		"key", r.k.key.ID, "requests_so_far", n)
}

// reportRejection logs, publishes and alerts the disable of the first key
// that rejected the request, once the request is over without a second
// rejection (forgive), while that disable is still in force.
func (c *call) reportRejection() {
	r := c.rejected
	if r == nil || !r.unreported {
		return
	}
	r.unreported = false
	if r.k.disabled.Load() != r.info {
		return // enabled, or disabled anew (by whoever reports that), since
	}
	t := c.t
	t.logDisable(r.k, r.info)
	t.publishDisable(r.k, r.info)
	t.alertDisabled(r.k, r.info)
}

// attemptRequest returns the copy of the caller's request sent for one
// attempt: its body (body.go), and key k applied in place of every
// credential the caller's request carried (credentials.go).
func (c *call) attemptRequest(ctx context.Context, k *keyState, attempt int) (*http.Request, error) {
	t := c.t
	orig := c.req
	// A shallow copy: every field we change is replaced, never written
	// through. See reusableCopy for when it lives in the call, to serve
	// later requests; otherwise its allocation holds the response body
	// wrapper too (deliver).
	var r *http.Request
	if attempt == 1 && reusableCopy(orig) {
		c.sent = nil
		c.copy = *orig.WithContext(ctx)
		r = &c.copy
	} else {
		c.sent = &sentRequest{req: *orig.WithContext(ctx)}
		r = &c.sent.req
	}
	if err := c.attemptBody(r, attempt); err != nil {
		return nil, err
	}
	// The values stay the caller's slices, shared as r.URL is: the base
	// must not write to them (the RoundTripper contract), and the pool
	// only ever replaces or removes a value. A first attempt's map may be
	// one left by an earlier request whose response was closed (putCall):
	// a transport is done with the headers by then.
	var h http.Header
	if attempt == 1 && c.spareHeader != nil {
		h, c.spareHeader = c.spareHeader, nil
	} else {
		h = make(http.Header, len(orig.Header)+1)
	}
	if attempt == 1 {
		c.firstHeader = h
	}
	for name, v := range orig.Header {
		if !t.isStripHeader(name) {
			h[name] = v
		}
	}
	creds.StripProtocols(h) // a key a browser-style client put in the WebSocket subprotocol
	r.Header = h
	if strip := t.hasCredentialParam(orig.URL); strip || t.cfg.inject == injectQuery || t.cfg.inject == injectFunc {
		u := *orig.URL
		if u.User != nil {
			uu := *u.User
			u.User = &uu
		}
		if strip {
			u.RawQuery, _ = filterQuery(u.RawQuery, t.isCredentialParam)
		}
		r.URL = &u
	}
	switch t.cfg.inject {
	case injectBearer, injectHeader:
		h[t.keyHeader()] = k.headerValue
	case injectQuery:
		setQueryParam(r.URL, t.cfg.injectName, k.secret)
	case injectFunc:
		t.cfg.injector(r, k.key.Secret)
	}
	return r, nil
}

// callerEnded returns an attempt's error err as the caller's cancel or
// deadline when the request's context has ended: the error net/http
// returns then may be what tearing down the connection caused (io.EOF,
// a reset), and the caller's own cancel must read as a cancel (status
// Canceled, errors.Is(err, context.Canceled)), not as the upstream's
// fault. err stays in the chain.
func (c *call) callerEnded(err error) error {
	cerr := c.req.Context().Err()
	if cerr == nil || errors.Is(err, cerr) {
		return err
	}
	return &endedError{ctx: cerr, err: err}
}

// endedError is an attempt's error after the caller's context ended.
type endedError struct{ ctx, err error }

func (e *endedError) Error() string   { return e.ctx.Error() + " (then: " + e.err.Error() + ")" }
func (e *endedError) Unwrap() []error { return []error{e.ctx, e.err} }

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
	// No second key will answer: a first rejection stands, and is reported
	// before what it caused (the pool.no_key alert).
	c.reportRejection()
	noKey := errors.Is(err, ErrNoKeyAvailable)
	ended := ctx.Err() != nil // the caller's deadline or cancel ended the wait
	if noKey && !ended {
		t.alertNoKey(c.now, err)
	}
	switch {
	case noKey && !ended && prev != nil:
		return c.deliver(prev, nil), nil
	case noKey && !ended && prevErr != nil:
		return nil, prevErr
	}
	if prev != nil {
		prev.Body.Close()
	}
	c.closeUnsentBody()
	if noKey {
		// One event for the request that got no key, so that usage adds
		// up to what callers were answered: a cancel or deadline that ended
		// the wait is counted as such, with no key.
		st, typ := status.NoKeyAvailable, "no_key_available"
		if ended {
			st = status.ClassifyError(ctx.Err())
			typ = errorType(st, ctx.Err())
		}
		c.final = st
		t.record(c.req, nil, c.model(), st, c.now, 0, attempt, nil, typ, trace.SpanContextFromContext(ctx))
		if !ended {
			t.tel.noKey(ctx)
		}
	}
	return nil, err
}

// unsent ends a request whose attempt could not be sent because its body
// could not be read (the caller's reader failed, or its client went away
// while uploading): it records one event, with no key, so that usage adds
// up to what callers were answered, and returns err. A body cut by the
// request's own cancel or deadline is counted as that.
func (c *call) unsent(ctx context.Context, attempt int, err error) error {
	st, typ := status.ClientError, "body_unreadable"
	if ctx.Err() != nil {
		st = status.ClassifyError(ctx.Err())
		typ = errorType(st, ctx.Err())
	}
	c.final = st
	c.t.record(c.req, nil, c.model(), st, c.t.cfg.clock.Now(), 0, attempt, nil, typ, trace.SpanContextFromContext(ctx))
	return err
}

// noModel ends a request whose model no key serves (route): nothing was
// sent. Its usage event says so, with the model.
func (c *call) noModel(ctx context.Context, err error) (*http.Response, error) {
	c.closeUnsentBody()
	c.final = status.NoKeyAvailable
	c.t.record(c.req, nil, c.model(), status.NoKeyAvailable, c.t.cfg.clock.Now(), 0, 1, nil, "no_key_for_model", trace.SpanContextFromContext(ctx))
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
	if resp.StatusCode == http.StatusSwitchingProtocols {
		if rwc, ok := resp.Body.(io.ReadWriteCloser); ok {
			// An upgraded connection (a WebSocket): the key stays taken
			// while it is open, and the body stays writable, as
			// httputil.ReverseProxy needs. Never pooled (upgradeBody).
			c.held = true
			resp.Body = &upgradeBody{ReadWriteCloser: rwc, c: c}
			return resp
		}
	}
	if resp.Body == nil || resp.Body == http.NoBody {
		k.release()
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

// record hands one attempt's usage event to the recorder: r's attempt
// for model ("" when not known) with key k (nil when no key was found),
// ended at at.
func (t *Transport) record(r *http.Request, k *keyState, model string, st status.Status, at time.Time, latency time.Duration, attempt int, resp *http.Response, errType string, sc trace.SpanContext) {
	t.rec.Record(t.event(r, k, model, st, at, latency, attempt, resp, errType, sc))
}

// event is the usage event of r's attempt for model ("" when not known)
// with key k (nil when no key was found), ended at at.
func (t *Transport) event(r *http.Request, k *keyState, model string, st status.Status, at time.Time, latency time.Duration, attempt int, resp *http.Response, errType string, sc trace.SpanContext) recorder.Event {
	e := recorder.Event{
		Time:          at,
		Status:        st,
		Latency:       latency,
		Attempt:       attempt,
		Method:        method(r),
		Host:          r.URL.Host,
		Operation:     OperationFrom(r.Context()),
		Client:        ClientFrom(r.Context()),
		Model:         model,
		RequestBytes:  -1,
		ResponseBytes: -1,
		InputTokens:   -1,
		OutputTokens:  -1,
		CachedTokens:  -1,
		Units:         -1,
		Cost:          -1,
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
	return e
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

// The request's body, and the answers it keeps or delivers.

// prepareBody makes the request body replayable when it can be: through
// GetBody, or by buffering it up to the configured size. It returns the
// body when it buffered it whole, for the route (which makes it buffer a
// body even when it will not be resent: WithMaxAttempts(1)).
func (c *call) prepareBody() ([]byte, error) {
	r := c.req
	if r.Body == nil || r.Body == http.NoBody {
		c.replayable = true
		return nil, nil
	}
	limit := c.t.cfg.maxBuffered
	if c.t.cfg.includeUsage && c.pinned == nil && r.Method == http.MethodPost && limit > 0 && r.ContentLength <= limit {
		return c.bufferForUsage(limit)
	}
	if r.GetBody != nil {
		c.getBody, c.replayable = r.GetBody, true
		return nil, nil
	}
	if limit == 0 || r.ContentLength > limit || c.t.cfg.maxAttempts == 1 && !c.t.cfg.routes() || c.pinned != nil {
		return nil, nil // sent once, as it is
	}
	return c.bufferBody(limit)
}

// bufferBody reads the caller's body into the pool's buffer, which every
// attempt then replays, and returns it. A body larger than limit is not
// kept: what was read goes out first, then the rest, once (nil buffer).
func (c *call) bufferBody(limit int64) ([]byte, error) {
	r := c.req
	buf, err := readall.AtMost(r.Body, limit+1, r.ContentLength)
	if err != nil {
		r.Body.Close()
		return nil, errors.New("apipool: reading request body: " + err.Error())
	}
	if int64(len(buf)) > limit {
		c.getBody = func() (io.ReadCloser, error) {
			return readCloser{io.MultiReader(bytes.NewReader(buf), r.Body), r.Body}, nil
		}
		c.replayable = false
		return nil, nil
	}
	r.Body.Close()
	c.replayBuffer(buf)
	return buf, nil
}

// replayBuffer makes buf the body every attempt sends. Its reader stays
// an io.NopCloser of a *bytes.Reader, which net/http knows is in memory:
// it then writes the request's header and body in one write, where a
// body of another type has the header flushed on its own first.
func (c *call) replayBuffer(buf []byte) {
	c.getBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(buf)), nil }
	c.replayable = true
	c.bufLen = int64(len(buf))
}

// attemptBody sets the body of attempt r: the caller's own body on the
// first attempt when it can go as it is, else a replay.
func (c *call) attemptBody(r *http.Request, attempt int) error {
	orig := c.req
	if orig.Body == nil || orig.Body == http.NoBody {
		return nil
	}
	if attempt == 1 && !c.ownBody && (orig.GetBody != nil || c.getBody == nil) {
		return nil // the caller's own body goes out first
	}
	b, err := c.getBody()
	if err != nil {
		return errors.New("apipool: replaying request body: " + err.Error())
	}
	r.Body = b
	if c.bufLen >= 0 && (orig.GetBody == nil || c.ownBody) {
		// A buffered body: its length is known now, and the base may
		// replay it itself (a retry on a fresh connection).
		r.ContentLength, r.GetBody = c.bufLen, c.getBody
	}
	if attempt == 1 {
		// The caller's body was consumed into a buffer; the base must not
		// see it.
		c.bodySent = true
	}
	return nil
}

// closeUnsentBody closes the caller's body when it was never handed to
// the base transport (which would have closed it).
func (c *call) closeUnsentBody() {
	if !c.bodySent {
		closeBody(c.req)
		c.bodySent = true
	}
}

// keep turns an answer that may yet be returned, if no other key can be
// tried, into one that holds no key: its body, when small, is read into
// memory; a larger one keeps its unread rest (and its connection) until
// the answer is returned or dropped.
func (c *call) keep(resp *http.Response, k *keyState) *http.Response {
	defer k.release()
	if resp.Body == nil || resp.Body == http.NoBody {
		resp.Body = http.NoBody
		return resp
	}
	buf, err := io.ReadAll(io.LimitReader(resp.Body, drainLimit))
	if err != nil {
		resp.Body.Close()
		resp.Body = io.NopCloser(bytes.NewReader(buf))
		return resp
	}
	if len(buf) < drainLimit {
		resp.Body.Close()
		resp.Body = io.NopCloser(bytes.NewReader(buf))
		return resp
	}
	resp.Body = readCloser{io.MultiReader(bytes.NewReader(buf), resp.Body), resp.Body}
	return resp
}

// release frees the key's slot of the delivered attempt and ends its
// spans.
func (c *call) release() {
	c.key.release()
	c.endAttempt()
	endSpan(c.attSpan)
	if c.reqSpan != nil {
		endRequest(c.reqSpan, c.final, c.attempts, c.waited, c.key, nil)
	}
}
