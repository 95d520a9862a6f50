package usage

import (
	"fmt"
	"math"
	"net/http"
	"net/textproto"
	"strconv"
	"strings"

	"github.com/apipool-ng/apipool/errdefs"
)

// Header returns a Reader for an API that states in a response header the
// units an answer consumed (credits, characters): its Units is the
// header's value, a decimal number of at least 0; its tokens are not known.
// When the header is missing but the response declares it as a trailer
// (in its Trailer header), it is read from the trailer at the body's end.
// Start returns nil when the header is neither present nor declared; an
// unreadable value gives Unknown. Header reads the answers of every
// status: an API that bills a failed request says so in its header.
//
// A name that is not a valid header field name is refused with a
// *ConfigError (apipool.ErrInvalidConfig).
func Header(name string) (Reader, error) {
	if !validHeaderName(name) {
		return nil, &errdefs.ConfigError{Field: "usage.Header", Reason: fmt.Sprintf("%q is not a header field name", name)}
	}
	return headerReader{key: textproto.CanonicalMIMEHeaderKey(name)}, nil
}

func validHeaderName(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		ok := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0
		if !ok {
			return false
		}
	}
	return true
}

type headerReader struct{ key string }

func (r headerReader) Start(_ *http.Request, resp *http.Response) Meter {
	if resp == nil {
		return nil
	}
	if vs := resp.Header[r.key]; len(vs) > 0 {
		return &fixedMeter{u: unitsFrom(vs[0])}
	}
	if _, declared := resp.Trailer[r.key]; declared {
		return &trailerMeter{resp: resp, key: r.key}
	}
	return nil
}

// unitsFrom reads a header's value as Units.
func unitsFrom(v string) Units {
	u := Unknown()
	f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
	if err == nil && f >= 0 && !math.IsInf(f, 0) {
		u.Units = f
	}
	return u
}

type fixedMeter struct{ u Units }

func (m *fixedMeter) Write([]byte)    {}
func (m *fixedMeter) Done(bool) Units { return m.u }

type trailerMeter struct {
	resp   *http.Response
	key    string
	done   bool
	result Units
}

func (m *trailerMeter) Write([]byte) {}

// Done reads the trailer, which net/http fills in once the body was read
// to its end.
func (m *trailerMeter) Done(complete bool) Units {
	if !m.done {
		m.done = true
		m.result = Unknown()
		if vs := m.resp.Trailer[m.key]; complete && len(vs) > 0 {
			m.result = unitsFrom(vs[0])
		}
	}
	return m.result
}

// MaxTail bounds the tail of the body a Func reader keeps.
const MaxTail = 1 << 20

// Func returns a Reader that calls f once per answer, at the body's end,
// with the response (its headers, and its trailers when the body was read
// to its end), the last tail bytes of the body the caller read (fewer when
// the body was shorter; nil when tail is 0), and whether the body was read
// to its end. f must not read resp.Body. Memory is bounded by tail per
// answer: the tail is kept in a ring that the body's bytes pass through,
// so no byte is held back from the caller. It suits an API that states its
// usage in headers, trailers, or at the very end of its body. f is called
// by the goroutine that reads or closes the body; it may run concurrently
// for different answers.
//
// tail outside [0, MaxTail] or a nil f is refused with a *ConfigError
// (apipool.ErrInvalidConfig).
func Func(tail int, f func(resp *http.Response, tail []byte, complete bool) Units) (Reader, error) {
	if tail < 0 || tail > MaxTail {
		return nil, &errdefs.ConfigError{Field: "usage.Func", Reason: fmt.Sprintf("tail %d is outside [0, %d]", tail, MaxTail)}
	}
	if f == nil {
		return nil, &errdefs.ConfigError{Field: "usage.Func", Reason: "nil func"}
	}
	return &funcReader{tail: tail, f: f}, nil
}

type funcReader struct {
	tail int
	f    func(*http.Response, []byte, bool) Units
}

func (r *funcReader) Start(_ *http.Request, resp *http.Response) Meter {
	if resp == nil {
		return nil
	}
	m := &funcMeter{r: r, resp: resp}
	if r.tail > 0 {
		m.ring = make([]byte, 0, r.tail)
	}
	return m
}

type funcMeter struct {
	r      *funcReader
	resp   *http.Response
	ring   []byte // the last bytes: grows to cap, then wraps at pos
	pos    int
	done   bool
	result Units
}

func (m *funcMeter) Write(p []byte) {
	if m.done || cap(m.ring) == 0 {
		return
	}
	c := cap(m.ring)
	if len(p) >= c {
		m.ring = append(m.ring[:0], p[len(p)-c:]...)
		m.pos = 0
		return
	}
	if room := c - len(m.ring); room > 0 { // still filling
		n := min(room, len(p))
		m.ring = append(m.ring, p[:n]...)
		p = p[n:]
	}
	for len(p) > 0 {
		n := copy(m.ring[m.pos:], p)
		p = p[n:]
		m.pos = (m.pos + n) % c
	}
}

func (m *funcMeter) Done(complete bool) Units {
	if m.done {
		return m.result
	}
	m.done = true
	var tail []byte
	if cap(m.ring) > 0 {
		// Put the ring in order in place: rotate left by pos.
		reverse(m.ring[:m.pos])
		reverse(m.ring[m.pos:])
		reverse(m.ring)
		m.pos = 0
		tail = m.ring
	}
	m.result = m.r.f(m.resp, tail, complete)
	return m.result
}

func reverse(b []byte) {
	for i, j := 0, len(b)-1; i < j; i, j = i+1, j-1 {
		b[i], b[j] = b[j], b[i]
	}
}
