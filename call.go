package apipool

import (
	"bytes"
	"context"
	"errors"
	"io"
	"maps"
	"net/http"
	"net/url"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/apipool-ng/apipool/recorder"
	"github.com/apipool-ng/apipool/status"
	"go.opentelemetry.io/otel/trace"
)

// prepareBody makes the request body replayable when it can be: through
// GetBody, or by buffering it up to the configured size.
func (c *call) prepareBody() error {
	r := c.req
	if r.Body == nil || r.Body == http.NoBody {
		c.replayable = true
		return nil
	}
	if r.GetBody != nil {
		c.getBody, c.replayable = r.GetBody, true
		return nil
	}
	limit := c.t.cfg.maxBuffered
	if limit == 0 || r.ContentLength > limit || c.t.cfg.maxAttempts == 1 {
		return nil // sent once, as it is
	}
	buf, err := io.ReadAll(io.LimitReader(r.Body, limit+1))
	if err != nil {
		r.Body.Close()
		return errors.New("apipool: reading request body: " + err.Error())
	}
	if int64(len(buf)) > limit {
		// Too large to keep: send what was read, then the rest, once.
		c.getBody = func() (io.ReadCloser, error) {
			return readCloser{io.MultiReader(bytes.NewReader(buf), r.Body), r.Body}, nil
		}
		c.replayable = false
		return nil
	}
	r.Body.Close()
	c.getBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(buf)), nil }
	c.replayable = true
	c.bufLen = int64(len(buf))
	return nil
}

type readCloser struct {
	io.Reader
	io.Closer
}

// closeUnsentBody closes the caller's body when it was never handed to
// the base transport (which would have closed it).
func (c *call) closeUnsentBody() {
	if !c.bodySent {
		closeBody(c.req)
		c.bodySent = true
	}
}

func closeBody(r *http.Request) {
	if r.Body != nil {
		r.Body.Close()
	}
}

// attemptRequest returns the copy of the caller's request sent for one
// attempt, with key k applied.
func (c *call) attemptRequest(ctx context.Context, k *keyState, attempt int) (*http.Request, error) {
	t := c.t
	orig := c.req
	// A shallow copy: every field we change is replaced, never written through.
	var r *http.Request
	if attempt == 1 {
		c.first = *orig.WithContext(ctx)
		r = &c.first
	} else {
		r = orig.WithContext(ctx)
	}
	if orig.Body != nil && orig.Body != http.NoBody {
		switch {
		case attempt == 1 && (orig.GetBody != nil || c.getBody == nil):
			// the caller's own body goes out first
		default:
			b, err := c.getBody()
			if err != nil {
				return nil, errors.New("apipool: replaying request body: " + err.Error())
			}
			r.Body = b
			if c.bufLen >= 0 && orig.GetBody == nil {
				// A buffered body: its length is known now, and the base
				// may replay it itself (a retry on a fresh connection).
				r.ContentLength, r.GetBody = c.bufLen, c.getBody
			}
			if attempt == 1 {
				// The caller's body was consumed into a buffer; the
				// base must not see it.
				c.bodySent = true
			}
		}
	}
	switch t.cfg.inject {
	case injectBearer, injectHeader:
		// maps.Clone copies the map's memory, cheaper than inserting
		// each header anew. The values stay the caller's slices, shared
		// as r.URL is: the base must not write to them (the RoundTripper
		// contract), and the pool only ever replaces a value.
		h := maps.Clone(orig.Header)
		if h == nil {
			h = make(http.Header, 1)
		}
		h[t.keyHeader()] = k.headerValue
		r.Header = h
	case injectQuery:
		r.Header = orig.Header.Clone()
		u := *orig.URL
		r.URL = &u
		setQueryParam(&u, t.cfg.injectName, k.secret)
	case injectFunc:
		r.Header = orig.Header.Clone()
		if r.Header == nil {
			r.Header = make(http.Header)
		}
		u := *orig.URL
		if u.User != nil {
			uu := *u.User
			u.User = &uu
		}
		r.URL = &u
		t.cfg.injector(r, k.key.Secret)
	}
	return r, nil
}

func setQueryParam(u *url.URL, name, value string) {
	esc := url.QueryEscape(name) + "=" + url.QueryEscape(value)
	if u.RawQuery == "" {
		u.RawQuery = esc
		return
	}
	q := u.Query()
	if _, exists := q[name]; exists {
		q.Set(name, value)
		u.RawQuery = q.Encode()
		return
	}
	u.RawQuery += "&" + esc
}

// deliver hands resp to the caller: the caller's own request in
// resp.Request (never the copy holding the key), and a body that frees the
// key's in-flight slot when closed or read to the end.
func (c *call) deliver(resp *http.Response, k *keyState) *http.Response {
	resp.Request = c.req
	c.key = k
	if k == nil { // a kept answer: it holds no key
		return resp
	}
	if resp.Body == nil || resp.Body == http.NoBody || resp.StatusCode == http.StatusSwitchingProtocols {
		c.t.release(k)
		endSpan(c.attSpan)
		return resp
	}
	c.body = resp.Body
	resp.Body = c
	return resp
}

func (t *Transport) release(k *keyState) {
	if k == nil {
		return
	}
	k.inFlight.Add(-1)
	if k.key.MaxInFlight > 0 {
		t.freed.notify()
	}
}

// keep turns an answer that may yet be returned, if no other key can be
// tried, into one that holds neither a connection nor the key: its body,
// when small, is read into memory. It returns nil (the answer closed) when
// the body is too large to keep.
func (c *call) keep(resp *http.Response, k *keyState) *http.Response {
	defer c.t.release(k)
	if resp.Body == nil || resp.Body == http.NoBody {
		resp.Body = http.NoBody
		return resp
	}
	// At most DefaultDrainLimit bytes are read, as the drain of a
	// discarded answer; a body that fills them all is taken as too large.
	buf, err := io.ReadAll(io.LimitReader(resp.Body, DefaultDrainLimit))
	resp.Body.Close()
	if err != nil || len(buf) >= DefaultDrainLimit {
		return nil
	}
	resp.Body = io.NopCloser(bytes.NewReader(buf))
	return resp
}

// waitFreed waits until a key's in-flight slot frees up, the wait allowed
// runs out, or ctx ends.
func (c *call) waitFreed(ctx context.Context) error {
	f := &c.t.freed
	f.waiting.Add(1)
	defer f.waiting.Add(-1)
	ch := f.wait()
	if c.anyEligible() { // freed before the channel was taken
		return nil
	}
	d := c.waitUntil.Sub(c.now)
	waitEvent(c.reqSpan, d, "keys at their in-flight cap")
	tm := c.t.cfg.clock.NewTimer(d)
	defer tm.Stop()
	select {
	case <-ch:
		return nil
	case <-tm.C():
		return nil // the next look reports no key
	case <-ctx.Done():
		return ctx.Err()
	}
}

// freeSignal wakes the requests waiting for an in-flight slot.
type freeSignal struct {
	waiting atomic.Int32
	mu      sync.Mutex
	ch      chan struct{}
}

func (f *freeSignal) wait() <-chan struct{} {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.ch == nil {
		f.ch = make(chan struct{})
	}
	return f.ch
}

func (f *freeSignal) notify() {
	if f.waiting.Load() == 0 {
		return
	}
	f.mu.Lock()
	if f.ch != nil {
		close(f.ch)
		f.ch = nil
	}
	f.mu.Unlock()
}

// Read reads the response body; at its end the key's slot is freed.
func (c *call) Read(p []byte) (int, error) {
	n, err := c.body.Read(p)
	if err == io.EOF {
		c.releaseOnce()
	}
	return n, err
}

// Close closes the response body and frees the key's slot.
func (c *call) Close() error {
	err := c.body.Close()
	c.releaseOnce()
	return err
}

func (c *call) releaseOnce() {
	if c.released.CompareAndSwap(false, true) {
		c.t.release(c.key)
		endSpan(c.attSpan)
		if c.reqSpan != nil {
			endRequest(c.reqSpan, c.final, c.attempts, c.waited, c.key, nil)
		}
	}
}

func endSpan(s trace.Span) {
	if s != nil {
		s.End()
	}
}

// breakerDone reports the attempt's outcome to k's breaker.
func (c *call) breakerDone(k *keyState, outcome error) {
	switch {
	case c.done != nil:
		c.done(outcome)
		c.done = nil
	case c.breakerLate:
		c.breakerLate = false
		k.reportLate(outcome)
	default:
		return
	}
	c.t.flushBreaker(k)
}

// flushBreaker delivers queued breaker state changes, outside every lock.
func (t *Transport) flushBreaker(k *keyState) {
	if !k.breakerPending.Load() || !k.breakerPending.CompareAndSwap(true, false) {
		return
	}
	for _, ch := range k.breaker.takePending() {
		if t.cfg.logger != nil {
			t.cfg.logger.Info("apipool: breaker state changed", "key", k.key.ID, "from", ch.from.String(), "to", ch.to.String())
		}
		if t.cfg.onBreaker != nil {
			t.cfg.onBreaker(k.key.ID, ch.from, ch.to)
		}
	}
}

// updateKey applies what an attempt's answer says of its key.
func (t *Transport) updateKey(k *keyState, st status.Status, resp *http.Response, now time.Time) {
	switch st {
	case status.ReachLimit:
		d, ok := status.RetryAfter(resp.Header, now)
		if !ok {
			d = t.cfg.cooldown
		}
		d = min(d, t.cfg.maxCooldown)
		if until := now.Add(d); k.cool(until) {
			if t.cfg.logger != nil {
				t.cfg.logger.Info("apipool: key rate limited, cooling down", "key", k.key.ID, "for", d.String())
			}
			t.publish(StateChange{KeyID: k.key.ID, Kind: ChangeCooldown, Until: until, At: now})
		}
	case status.InvalidKey:
		t.disable(k, "upstream answered "+strconv.Itoa(resp.StatusCode)+" "+http.StatusText(resp.StatusCode), now, true)
	}
}

// disable takes k out of use; publish tells the other replicas, when the
// change is this replica's own.
func (t *Transport) disable(k *keyState, reason string, now time.Time, publish bool) {
	if !k.disabled.CompareAndSwap(nil, &disableInfo{reason: reason, at: now}) {
		return
	}
	if t.cfg.logger != nil {
		t.cfg.logger.Warn("apipool: key disabled", "key", k.key.ID, "reason", reason)
	}
	if publish {
		t.publish(StateChange{KeyID: k.key.ID, Kind: ChangeDisable, Reason: reason, At: now})
	}
}

// enable puts k back in use and ends its cooldown; publish tells the
// other replicas. It reports whether k was disabled.
func (t *Transport) enable(k *keyState, publish bool) bool {
	was := k.disabled.Swap(nil) != nil
	k.cooldownUntil.Store(0)
	if publish {
		t.publish(StateChange{KeyID: k.key.ID, Kind: ChangeEnable, At: t.cfg.clock.Now()})
	}
	return was
}

// record hands one attempt's usage event to the recorder.
func (t *Transport) record(c *call, k *keyState, st status.Status, latency time.Duration, attempt int, resp *http.Response, errType string, sc trace.SpanContext) {
	r := c.req
	e := recorder.Event{
		Time:          c.now.Add(latency),
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
	var ue *url.Error
	if errors.As(err, &ue) {
		err = ue.Err
	}
	if errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) {
		return "connection_closed"
	}
	return "network_error"
}

func itoa(i int) string     { return strconv.Itoa(i) }
func quote(s string) string { return strconv.Quote(s) }
