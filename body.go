package apipool

import (
	"io"
	"net/http"
	"sync"
	"sync/atomic"
)

type readCloser struct {
	io.Reader
	io.Closer
}

func closeBody(r *http.Request) {
	if r.Body != nil {
		r.Body.Close()
	}
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
		if m := b.c.metered; m != nil {
			b.c.t.finishMetered(m, b.c.key) // before the call may serve another request
		}
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

// upgradeBody is the body of a 101 Switching Protocols answer: the
// connection itself, read and written both ways (net/http's transport
// returns an io.ReadWriteCloser), holding the key's in-flight slot until it
// is closed. Reaching the end of what the upstream sends does not free
// the slot: the caller may still write. The call is never reused (it is
// not handed to putCall): the connection may outlive any rule about when
// the base transport is done with the request.
type upgradeBody struct {
	io.ReadWriteCloser
	c      *call
	closed atomic.Bool
}

// Close closes the connection and, the first time, frees the key's slot.
func (b *upgradeBody) Close() error {
	err := b.ReadWriteCloser.Close()
	if b.closed.CompareAndSwap(false, true) {
		b.c.release()
	}
	return err
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
	h, rt, ct := c.firstHeader, c.rt, c.ctrace
	*c = call{ctrace: ct}
	if len(h) <= maxPooledHeader {
		clear(h)
		c.spareHeader = h
	}
	if rt != nil {
		*rt = route{}
		c.rt = rt // the next request's route, when the pool routes
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
