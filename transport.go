// Package apipool spreads the requests of one program over a pool of API
// keys for the same upstream API. Its Transport is an http.RoundTripper:
// set it as an http.Client's Transport, hand that client to any SDK, and
// every request goes out with a key picked from the pool.
//
// For each attempt the Transport picks an eligible key (not disabled, not
// cooling down, breaker not open, within its limits), applies it to a copy
// of the request, sends it, and classifies the answer (package status). A
// rate-limited key cools down until its Retry-After and the request moves
// at once to another key; a key the upstream rejects is disabled until a
// probe passes; server and network errors count towards the key's circuit
// breaker and are resent on another key when that is safe. Every attempt
// becomes a usage event (package recorder), kept in memory by default and
// queryable through Stats.
package apipool

import (
	"context"
	"errors"
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/apipool-ng/apipool/recorder"
	"github.com/apipool-ng/apipool/status"
	"go.opentelemetry.io/otel/trace"
	"golang.org/x/time/rate"
)

// Transport is an http.RoundTripper that sends each request with a key
// from its pool. Create one with New; the zero value is not usable. It is
// safe for concurrent use, and is meant to be shared: create one per
// upstream API and keep it for the program's life.
//
// Per the http.RoundTripper contract, RoundTrip never modifies the
// caller's request (it sends copies), returns a 429 or 5xx answer as a
// response rather than an error, never returns a response together with
// an error, and always closes the request body.
type Transport struct {
	cfg      config
	base     http.RoundTripper
	selector Selector
	rec      recorder.Recorder
	stats    recorder.Stats

	tel    telemetry
	shared *sharedSync // nil without WithSharedState
	freed  freeSignal  // wakes requests waiting for an in-flight slot

	keys   atomic.Pointer[keySet]
	keysMu sync.Mutex // serialises AddKey and RemoveKey

	closed    atomic.Bool
	closeOnce sync.Once
	stopProbe chan struct{}
	probeDone chan struct{}
}

var _ http.RoundTripper = (*Transport)(nil)

// New returns a Transport over keys. It returns a *ConfigError (matching
// ErrInvalidConfig) naming the problem when keys is empty, an ID repeats, a
// secret is empty, a limit is negative, or an option is given bad values.
func New(keys []Key, opts ...Option) (*Transport, error) {
	cfg := defaultConfig()
	for i, o := range opts {
		if o == nil {
			return nil, &ConfigError{Field: "options", Reason: "option " + itoa(i) + " is nil"}
		}
		if err := o.apply(&cfg); err != nil {
			return nil, err
		}
	}
	if len(keys) == 0 {
		return nil, &ConfigError{Field: "keys", Reason: "no keys"}
	}
	t := &Transport{cfg: cfg, base: cfg.base}
	t.tel.t = t
	if t.base == nil {
		t.base = http.DefaultTransport
	}
	t.selector = cfg.selector
	if t.selector == nil {
		t.selector = newSelector(cfg.strategy)
	}
	states := make([]*keyState, 0, len(keys))
	seen := make(map[string]int, len(keys))
	for i, k := range keys {
		if err := validateKey(k, i); err != nil {
			return nil, err
		}
		if j, dup := seen[k.ID]; dup {
			return nil, &ConfigError{Field: "keys[" + itoa(i) + "].ID", Reason: "duplicate ID " + quote(k.ID) + " (also keys[" + itoa(j) + "])"}
		}
		seen[k.ID] = i
		states = append(states, t.newKeyState(k))
	}
	t.keys.Store(newKeySet(states))
	switch {
	case !cfg.recorderSet:
		t.rec, t.stats = defaultRecorder()
	case cfg.recorder == nil:
		t.rec = recorder.Nop{}
	default:
		t.rec = cfg.recorder
		t.stats, _ = cfg.recorder.(recorder.Stats)
	}
	if cfg.probe != nil && cfg.probeInterval > 0 {
		t.stopProbe, t.probeDone = make(chan struct{}), make(chan struct{})
		go t.probeLoop()
	}
	if cfg.shared != nil {
		t.startShared(cfg.shared)
	}
	t.tel.meter() // the key gauges report from now, not from the first request
	return t, nil
}

// Stats returns the recorder's query interface, or nil when the recorder
// answers no queries.
func (t *Transport) Stats() recorder.Stats { return t.stats }

// Recorder returns where the pool records usage events.
func (t *Transport) Recorder() recorder.Recorder { return t.rec }

// CloseIdleConnections forwards to the base transport, as http.Client
// expects of a wrapping transport.
func (t *Transport) CloseIdleConnections() {
	if c, ok := t.base.(interface{ CloseIdleConnections() }); ok {
		c.CloseIdleConnections()
	}
}

// Close stops the background probe, closes the recorder (flushing it
// within ctx) and makes later requests fail with ErrClosed. Requests in
// flight finish. It is safe to call more than once.
func (t *Transport) Close(ctx context.Context) error {
	var err error
	t.closeOnce.Do(func() {
		t.closed.Store(true)
		t.tel.close()
		if t.shared != nil {
			if err = t.shared.stop(ctx); err != nil {
				return
			}
		}
		if t.stopProbe != nil {
			close(t.stopProbe)
			select {
			case <-t.probeDone:
			case <-ctx.Done():
				err = ctx.Err()
				return
			}
		}
		err = t.rec.Close(ctx)
	})
	return err
}

// RoundTrip sends req with a key from the pool, resending it on another
// key when the answer or error allows. See the package documentation.
func (t *Transport) RoundTrip(req *http.Request) (*http.Response, error) {
	if req == nil || req.URL == nil {
		if req != nil && req.Body != nil {
			req.Body.Close()
		}
		return nil, errors.New("apipool: nil request or URL")
	}
	if t.closed.Load() {
		closeBody(req)
		return nil, ErrClosed
	}
	if !t.keyAllowed(req) {
		return t.base.RoundTrip(req)
	}
	c := &call{t: t, req: req, ks: t.keys.Load(), bufLen: -1}
	c.cand = Candidates{ks: c.ks, call: c}
	return c.run()
}

// keyAllowed reports whether a key may be sent to req's host.
func (t *Transport) keyAllowed(req *http.Request) bool {
	if t.cfg.hosts != nil {
		return t.cfg.hosts[strings.ToLower(req.URL.Host)] || t.cfg.hosts[strings.ToLower(req.URL.Hostname())]
	}
	if req.Response == nil {
		return true
	}
	// A redirect: the key goes only to the host of the request the
	// redirects started from.
	root := req
	for i := 0; i < 100 && root.Response != nil && root.Response.Request != nil; i++ {
		root = root.Response.Request
	}
	return root.URL != nil && strings.EqualFold(root.URL.Host, req.URL.Host)
}

// call is one request's journey through the pool. It is also the body
// of the response returned, so that one allocation serves both.
type call struct {
	t    *Transport
	req  *http.Request
	ks   *keySet
	cand Candidates
	now  time.Time

	// first is the first attempt's copy of req, so that the call's
	// allocation holds it too. Later attempts copy req afresh: the base
	// may still read an earlier copy.
	first http.Request

	tried     uint64   // keys 0..63 tried by this request
	triedMore []uint64 // keys 64.. tried, when the pool is that large
	skipTried bool

	// Request body replay: getBody gives a fresh body for a resend;
	// replayable is false when the body can be sent only once.
	getBody    func() (io.ReadCloser, error)
	bufLen     int64 // the buffered body's length, or -1 when not buffered
	replayable bool
	bodySent   bool // the original req.Body went out (the base closes it)

	waitUntil time.Time // when waiting for a key must give up (pool clock)

	done func(error) // the current attempt's breaker callback
	// breakerLate is set when the attempt went out without asking its
	// key's closed breaker (keyState.breakerFast): breakerDone reports
	// the outcome afterwards.
	breakerLate bool

	// The returned response's body and the key it holds.
	body     io.ReadCloser
	key      *keyState
	released atomic.Bool

	// Telemetry: the logical request's span and the delivered attempt's
	// span (nil when tracing is off), ended when the body is released.
	reqSpan  trace.Span
	attSpan  trace.Span
	waited   time.Duration
	attempts int
	final    status.Status
}

func (c *call) markTried(i int) {
	if i < 64 {
		c.tried |= 1 << uint(i)
		return
	}
	w := i/64 - 1
	for len(c.triedMore) <= w {
		c.triedMore = append(c.triedMore, 0)
	}
	c.triedMore[w] |= 1 << uint(i%64)
}

func (c *call) isTried(i int) bool { return triedBit(c.tried, c.triedMore, i) }

// triedBit reads bit i of a tried set: lo holds keys 0..63, more the rest.
func triedBit(lo uint64, more []uint64, i int) bool {
	if i < 64 {
		return lo&(1<<uint(i)) != 0
	}
	w := i/64 - 1
	return w < len(more) && more[w]&(1<<uint(i%64)) != 0
}

// refreshKeys moves the call onto the pool's current keys when AddKey or
// RemoveKey changed them since the call last looked, keeping its record
// of the keys it tried. Without it a request would not see keys added
// after it started, and would find none once all of its keys were
// removed, though the pool has others.
func (c *call) refreshKeys() {
	ks := c.t.keys.Load()
	if ks == c.ks {
		return
	}
	old, tried, more := c.ks, c.tried, c.triedMore
	c.ks, c.cand.ks = ks, ks
	c.tried, c.triedMore = 0, nil
	for i, k := range old.keys {
		if !triedBit(tried, more, i) {
			continue
		}
		for j, nk := range ks.keys {
			if nk == k {
				c.markTried(j)
				break
			}
		}
	}
}

func (c *call) eligible(i int) bool {
	if c.skipTried && c.isTried(i) {
		return false
	}
	return c.t.keyEligible(c.ks.keys[i], c.now)
}

func (t *Transport) keyEligible(k *keyState, now time.Time) bool {
	if k.removed.Load() || k.disabled.Load() != nil {
		return false
	}
	if k.cooldownUntil.Load() > now.UnixNano() {
		return false
	}
	if k.breakerOpen(t.cfg.breaker.timeout()) {
		return false
	}
	return t.withinLimits(k, now)
}

// retryable tells whether an attempt of status s may be resent.
func (c *call) retryable(s status.Status) bool {
	if !c.replayable || c.req.Context().Err() != nil {
		return false
	}
	switch s {
	case status.ReachLimit, status.InvalidKey:
		return true
	case status.ServerError, status.NetworkError, status.Timeout:
		return c.t.cfg.retryNonIdem || idempotent(c.req)
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

func (c *call) run() (*http.Response, error) {
	ctx, span := c.t.tel.startRequest(c.req.Context(), c.req)
	c.reqSpan = span
	resp, err := c.loop(ctx)
	if span != nil && (err != nil || c.body == nil) {
		// No body holds the request open: its span ends now.
		endRequest(span, c.final, c.attempts, c.waited, c.key, err)
	}
	return resp, err
}

func (c *call) loop(ctx context.Context) (*http.Response, error) {
	t := c.t
	c.now = t.cfg.clock.Now()
	c.waitUntil = c.now.Add(t.cfg.maxWait)
	if err := c.prepareBody(); err != nil {
		return nil, err
	}
	var (
		// The last attempt's answer, kept (see keep) to be returned if no
		// other key can be tried; or its error.
		prev    *http.Response
		prevErr error
	)
	for attempt := 1; ; attempt++ {
		if attempt > 1 {
			c.now = t.cfg.clock.Now()
		}
		k, idx, err := c.pick(ctx, attempt)
		if k == nil {
			if prev != nil && errors.Is(err, ErrNoKeyAvailable) {
				return c.deliver(prev, nil), nil
			}
			if prevErr != nil && errors.Is(err, ErrNoKeyAvailable) {
				return nil, prevErr
			}
			if prev != nil {
				prev.Body.Close()
			}
			c.closeUnsentBody()
			if errors.Is(err, ErrNoKeyAvailable) {
				c.final = status.NoKeyAvailable
				t.record(c, nil, status.NoKeyAvailable, 0, attempt, nil, "no_key_available", trace.SpanContextFromContext(ctx))
				t.tel.noKey(ctx)
			}
			return nil, err
		}
		if prev != nil {
			// Another key is taken: the previous answer is not needed.
			prev.Body.Close()
			prev = nil
		}
		prevErr = nil
		c.attempts = attempt
		actx, aspan := t.tel.startAttempt(ctx, c.req, attempt, k)
		r, err := c.attemptRequest(actx, k, attempt)
		if err != nil { // the body could not be replayed
			t.release(k)
			c.breakerDone(k, errBreakerExcluded)
			if aspan != nil {
				aspan.End()
			}
			if prevErr != nil {
				return nil, prevErr
			}
			return nil, err
		}
		if aspan != nil {
			// The attempt's span is the upstream's parent. With tracing
			// off, nothing is injected: that costs nothing.
			t.tel.inject(actx, r)
		}
		start := c.now
		resp, err := t.base.RoundTrip(r)
		if attempt == 1 {
			c.bodySent = true
		}
		end := t.after(start)
		if err != nil {
			resp = nil // a RoundTripper never returns both
		}
		st := t.cfg.classifier.Classify(resp, err)
		c.final = st
		c.breakerDone(k, breakerOutcome(st))
		t.updateKey(k, st, resp, end)
		if err != nil {
			t.release(k)
			err = redact(err, k.secret)
		}
		t.tel.attemptDone(actx, aspan, c.req, k, st, resp, err, end.Sub(start))
		t.record(c, k, st, end.Sub(start), attempt, resp, errorType(st, err), trace.SpanContextFromContext(actx))
		if attempt >= t.cfg.maxAttempts || !c.retryable(st) {
			if err != nil {
				endSpan(aspan)
				return nil, err
			}
			c.attSpan = aspan
			return c.deliver(resp, k), nil
		}
		// Marked only now that the request goes on: in a pool of more
		// than 64 keys, marking allocates.
		c.markTried(idx)
		endSpan(aspan)
		if resp != nil {
			prev = c.keep(resp, k)
		} else {
			prevErr = err
		}
		if st == status.ServerError || st == status.NetworkError || st == status.Timeout {
			// The upstream itself is failing: wait a little before the next
			// attempt, but only when there is a key to send it with.
			c.now = t.cfg.clock.Now()
			if c.anyEligible() {
				d := t.cfg.backoff(t.cfg.backoffMin, t.cfg.backoffMax, attempt-1, resp)
				d = min(d, t.cfg.backoffMax)
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

// pick takes an eligible key for the next attempt, waiting for one to
// free up when allowed. It returns the key, its index, or an error: a
// *NoKeyError, or the context's error.
func (c *call) pick(ctx context.Context, attempt int) (*keyState, int, error) {
	t := c.t
	for {
		c.refreshKeys()
		for pass := 0; pass < 2; pass++ {
			// First pass skips the keys this request tried; the second
			// allows them, when no other key is eligible.
			c.skipTried = pass == 0
			if pass == 1 && attempt == 1 {
				break
			}
			for tries := 0; tries <= len(c.ks.keys); tries++ {
				i := t.selector.Pick(&c.cand)
				if i < 0 || i >= len(c.ks.keys) || !c.eligible(i) {
					break
				}
				k := c.ks.keys[i]
				if done, ok := t.acquire(ctx, k, c.now); ok {
					c.done, c.breakerLate = done, done == nil && k.breaker != nil
					return k, i, nil
				}
				c.markTried(i)
			}
		}
		if t.keys.Load() != c.ks {
			continue // the keys changed while this pick looked: look again
		}
		nk := c.noKeyError()
		wait := time.Duration(-1)
		if !nk.RetryAt.IsZero() {
			wait = nk.RetryAt.Sub(c.now)
		}
		// A key free now that no pick took (a selector answering -1, a
		// half-open breaker turning requests away) still costs a short
		// sleep: that sleep too must fit within the wait allowed.
		d := max(wait, time.Millisecond)
		if wait < 0 && nk.inFlightBound && c.waitUntil.After(c.now) {
			// Only in-flight caps hold the keys: a response body closing
			// frees one, at no time that can be told in advance.
			if err := c.waitFreed(ctx); err != nil {
				return nil, -1, err
			}
			c.now = t.cfg.clock.Now()
			continue
		}
		if wait < 0 || c.now.Add(d).After(c.waitUntil) {
			return nil, -1, nk
		}
		if dl, ok := ctx.Deadline(); ok && time.Until(dl) < d {
			return nil, -1, nk
		}
		waitEvent(c.reqSpan, d, "no key available")
		if err := c.sleep(ctx, d); err != nil {
			return nil, -1, err
		}
		c.now = t.cfg.clock.Now()
	}
}

// noKeyError describes why no key is eligible now, and when one may be.
func (c *call) noKeyError() *NoKeyError {
	t := c.t
	e := &NoKeyError{Keys: len(c.ks.keys)}
	var retryAt time.Time
	consider := func(at time.Time) {
		if retryAt.IsZero() || at.Before(retryAt) {
			retryAt = at
		}
	}
	nowNs := c.now.UnixNano()
	for _, k := range c.ks.keys {
		if k.removed.Load() {
			continue
		}
		if k.disabled.Load() != nil {
			e.Disabled++
			continue
		}
		free := c.now
		if u := k.cooldownUntil.Load(); u > nowNs {
			e.CoolingDown++
			free = time.Unix(0, u)
		}
		if k.breakerOpen(t.cfg.breaker.timeout()) {
			e.BreakerOpen++
			left := time.Duration(k.breakerOpenedAt.Load() + int64(t.cfg.breaker.timeout()) - time.Now().UnixNano())
			if at := c.now.Add(left); at.After(free) {
				free = at
			}
		}
		if !t.withinLimits(k, free) {
			e.Limited++
			if at, ok := t.limitFree(k, free); ok {
				free = at
			} else {
				e.inFlightBound = true
				continue // only a response body closing frees it: no time to give
			}
		}
		consider(free)
	}
	e.RetryAt = retryAt
	return e
}

// limitFree returns when k's rate and daily limits next allow a request,
// from at; false when an in-flight limit is what holds it.
func (t *Transport) limitFree(k *keyState, at time.Time) (time.Time, bool) {
	if m := k.key.MaxInFlight; m > 0 && k.inFlight.Load() >= int64(m) {
		return time.Time{}, false
	}
	free := at
	if k.key.PerDay > 0 && int64(k.dayUsed(at)) >= int64(k.key.PerDay) {
		free = dayStart(dayIndex(at, k.loc)+1, k.loc) // the next quota day
	}
	for _, l := range [...]*rate.Limiter{k.perSecond, k.perMinute} {
		if l == nil {
			continue
		}
		if tok := l.TokensAt(free); tok < 1 {
			need := time.Duration((1 - tok) / float64(l.Limit()) * float64(time.Second))
			free = free.Add(need + time.Millisecond)
		}
	}
	return free, true
}

func (c *call) anyEligible() bool {
	c.skipTried = false
	for i := range c.ks.keys {
		if c.eligible(i) {
			return true
		}
	}
	return false
}

// sleep waits d on the pool's clock, or until ctx is done.
func (c *call) sleep(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	c.waited += d
	tm := c.t.cfg.clock.NewTimer(d)
	defer tm.Stop()
	select {
	case <-tm.C():
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// acquire takes key k for one attempt: an in-flight slot, rate tokens,
// a day's quota and the breaker's permission. It takes all or nothing.
// done is nil when no permission was asked: k has no breaker, or a
// closed one that hears of the attempt afterwards (keyState.breakerFast).
func (t *Transport) acquire(ctx context.Context, k *keyState, now time.Time) (done func(error), ok bool) {
	if m := int64(k.key.MaxInFlight); m > 0 {
		for {
			n := k.inFlight.Load()
			if n >= m {
				return nil, false
			}
			if k.inFlight.CompareAndSwap(n, n+1) {
				break
			}
		}
	} else {
		k.inFlight.Add(1)
	}
	ok = (k.perMinute == nil || k.perMinute.AllowN(now, 1)) &&
		(k.perSecond == nil || k.perSecond.AllowN(now, 1))
	if !ok {
		k.inFlight.Add(-1)
		return nil, false
	}
	if !k.takeDay(now) {
		k.inFlight.Add(-1)
		return nil, false
	}
	if t.shared != nil && k.limited && !t.takeShared(ctx, k, now) {
		k.giveDay(now)
		k.inFlight.Add(-1)
		return nil, false
	}
	if k.breaker != nil && !k.breakerFast() {
		var err error
		done, err = k.breaker.cb.Allow()
		t.flushBreaker(k)
		if err != nil {
			k.giveDay(now)
			k.inFlight.Add(-1)
			return nil, false
		}
	}
	return done, true
}
