package apipool

import (
	"bytes"
	"errors"
	"io"
	"net/http"
	"sync"
	"sync/atomic"
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
	if limit == 0 || r.ContentLength > limit || c.t.cfg.maxAttempts == 1 || c.pinned != nil {
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

// attemptBody sets the body of attempt r: the caller's own body on the
// first attempt when it can go as it is, else a replay.
func (c *call) attemptBody(r *http.Request, attempt int) error {
	orig := c.req
	if orig.Body == nil || orig.Body == http.NoBody {
		return nil
	}
	if attempt == 1 && (orig.GetBody != nil || c.getBody == nil) {
		return nil // the caller's own body goes out first
	}
	b, err := c.getBody()
	if err != nil {
		return errors.New("apipool: replaying request body: " + err.Error())
	}
	r.Body = b
	if c.bufLen >= 0 && orig.GetBody == nil {
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

func closeBody(r *http.Request) {
	if r.Body != nil {
		r.Body.Close()
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
	buf, err := io.ReadAll(io.LimitReader(resp.Body, DefaultDrainLimit))
	if err != nil {
		resp.Body.Close()
		resp.Body = io.NopCloser(bytes.NewReader(buf))
		return resp
	}
	if len(buf) < DefaultDrainLimit {
		resp.Body.Close()
		resp.Body = io.NopCloser(bytes.NewReader(buf))
		return resp
	}
	resp.Body = readCloser{io.MultiReader(bytes.NewReader(buf), resp.Body), resp.Body}
	return resp
}

// sentRequest is one attempt's copy of the request, and the body of its
// response if it is delivered, in one allocation. Neither is reused.
type sentRequest struct {
	req  http.Request
	body respBody
}

// respBody is the body of a delivered response that holds a key: the
// base's body, read and closed through it, and the call whose key's slot
// frees when the body is read to its end or closed.
type respBody struct {
	body     io.ReadCloser
	c        *call
	released atomic.Bool  // the key's slot is freed (or being freed)
	closed   atomic.Bool  // Close has run
	ends     atomic.Int32 // of the release finished and the first Close
	reuse    bool         // the call may serve a later request (putCall)
}

// Read reads the response body; at its end the key's slot is freed.
func (b *respBody) Read(p []byte) (int, error) {
	n, err := b.body.Read(p)
	if err == io.EOF {
		b.release()
	}
	return n, err
}

// Close closes the response body and frees the key's slot. Once the
// release has finished and the body is closed, the call, with its first
// attempt's header map and (reusableCopy) request copy, serves a later
// request: the base transport is done with them by then (http.RoundTripper:
// callers may reuse a request once its response body is closed). The body
// itself is never reused: a caller may close it again at any time.
func (b *respBody) Close() error {
	err := b.body.Close()
	b.release()
	if b.closed.CompareAndSwap(false, true) {
		b.end()
	}
	return err
}

func (b *respBody) release() {
	if b.released.CompareAndSwap(false, true) {
		b.c.release()
		b.end()
	}
}

// end counts one of the body's two ends; the second hands the call back.
// After that the body never touches the call again.
func (b *respBody) end() {
	if b.ends.Add(1) == 2 && b.reuse {
		putCall(b.c)
	}
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

// callPool holds calls whose responses were read and closed, for later
// requests, each with its first attempt's header map, cleared, for the
// next first attempt (the request copy in the call is cleared with it).
var callPool sync.Pool

// maxPooledHeader is the largest header map kept for reuse, in entries.
const maxPooledHeader = 64

func newCall() *call {
	if c, ok := callPool.Get().(*call); ok {
		return c
	}
	return new(call)
}

func putCall(c *call) {
	h := c.firstHeader
	*c = call{}
	if len(h) <= maxPooledHeader {
		clear(h)
		c.spareHeader = h
	}
	callPool.Put(c)
}

// reusableCopy reports whether the first attempt's copy of r may live in
// the call and serve a later request once the response body is closed, as
// the http.RoundTripper contract allows. Not for a request with a body: a
// transport may still be writing it after the answer (a server that
// answers early). Not for one with a legacy Request.Cancel: net/http's
// transport watches that channel from a goroutine that may read the
// request after the response is closed.
func reusableCopy(r *http.Request) bool {
	//lint:ignore SA1019 read, not set: a caller's http.Client sets it
	return r.Cancel == nil && (r.Body == nil || r.Body == http.NoBody)
}
