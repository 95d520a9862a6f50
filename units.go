package apipool

import (
	"io"
	"net/http"
	"strings"

	"github.com/apipool-ng/apipool/recorder"
	"github.com/apipool-ng/apipool/usage"
)

// WithUsage sets the reader of the units each answer consumed (package
// usage: usage.OpenAI, usage.Anthropic, usage.Gemini, usage.Auto, or
// usage.Header and usage.Func for an API's own unit) and, when prices is
// not nil, the price table that turns them into cost. Nothing is fetched:
// the table is what you give.
//
// The units and the cost go on the usage event of the attempt whose answer
// the caller gets (recorder.Event's InputTokens, OutputTokens,
// CachedTokens, Units and Cost). That event is recorded when the caller
// has read the body to its end or closed it, not when the answer's headers
// come, so that a stream's units count: the reader sees the body's bytes
// as the caller reads them, and holds none back. A body closed before its
// usage was read, a stream that ends without usage, or a model missing
// from the table gives -1 ("not known") in those fields, never zero. An
// answer the caller never closes is never recorded (it holds its key, as
// always). Answers the pool did not deliver (resent on another key) carry
// no units: their bodies are not read.
func WithUsage(r usage.Reader, prices usage.Prices) Option {
	return optionFunc(func(c *config) error {
		if r == nil {
			return &ConfigError{Field: "WithUsage", Reason: "nil usage reader"}
		}
		if prices != nil {
			if err := prices.Validate(); err != nil {
				// One "apipool: invalid configuration" prefix, not one
				// per entry: each of the table's errors names its entry.
				errs := []error{err}
				if j, ok := err.(interface{ Unwrap() []error }); ok {
					errs = j.Unwrap()
				}
				reasons := make([]string, len(errs))
				for i, e := range errs {
					reasons[i] = e.Error()
					if ce, ok := e.(*ConfigError); ok {
						reasons[i] = ce.Field + ": " + ce.Reason
					}
				}
				return &ConfigError{Field: "WithUsage", Reason: "bad price table: " + strings.Join(reasons, "; "), Err: err}
			}
		}
		c.usage, c.prices = r, prices
		return nil
	})
}

// WithIncludeUsage turns on (default off) the asking for a stream's
// usage where the request does not ask for it: an OpenAI-style streamed
// request (a POST whose JSON body has "stream": true, chat completions or
// completions) without stream_options.include_usage is sent with
// "stream_options": {"include_usage": true} added, so that the stream
// ends with a chunk that states its usage, which WithUsage's reader counts.
// That chunk, and the "usage": null the other chunks then carry, are
// removed from the stream the caller reads, so that it sees what it would
// have seen without the option (usage.StripUsageChunk: each event is held
// until its end, never across events). A request that sets include_usage
// itself, true or false, is sent as it is. To rewrite it, the pool buffers
// a POST body up to WithMaxBufferedBody (a larger body is sent as it is).
func WithIncludeUsage(on bool) Option {
	return optionFunc(func(c *config) error { c.includeUsage = on; return nil })
}

// bufferForUsage reads the request's body into the pool's buffer
// (bufferBody) and, when it is an OpenAI-style streamed request that does
// not ask for its usage, adds the ask (WithIncludeUsage). Every attempt
// sends what the pool read, the caller's GetBody aside.
func (c *call) bufferForUsage(limit int64) ([]byte, error) {
	buf, err := c.bufferBody(limit)
	if err != nil {
		return nil, err
	}
	c.ownBody = true
	if buf == nil {
		return nil, nil // too large to keep: it goes as it is
	}
	if out, added, err := usage.AddIncludeUsage(buf); err == nil && added {
		buf, c.stripUsage = out, true
		c.replayBuffer(buf)
	}
	return buf, nil
}

// metered is the part of a delivered answer's body that reads its units:
// the body below, every byte of which goes to the meter as the caller
// reads it, and the attempt's usage event, recorded with the units when
// the body ends (respBody.release).
type metered struct {
	body     io.ReadCloser
	meter    usage.Meter
	ev       recorder.Event
	complete bool // the body was read to its end
}

func (m *metered) Read(p []byte) (int, error) {
	n, err := m.body.Read(p)
	if n > 0 {
		m.meter.Write(p[:n])
	}
	if err == io.EOF {
		m.complete = true
	}
	return n, err
}

func (m *metered) Close() error { return m.body.Close() }

// finish records the attempt's event with the units the meter found, and
// their cost, and counts them against the budgets of key k and of the
// client (budgets.go). It runs once, when the body ends.
func (t *Transport) finishMetered(m *metered, k *keyState) {
	u := m.meter.Done(m.complete)
	e := m.ev
	e.InputTokens, e.OutputTokens, e.CachedTokens, e.Units = u.InputTokens, u.OutputTokens, u.CachedTokens, u.Units
	if t.cfg.prices != nil {
		if cost, ok := t.cfg.prices.Cost(e.Model, u); ok {
			e.Cost = cost
		}
	}
	t.rec.Record(e)
	t.countSpend(k, &e)
}

// meterAnswer starts metering the answer resp of request r, whose event is
// e: it returns the body to deliver in place of resp.Body, or nil when the
// pool reads no units or the answer holds none (the event is then to be
// recorded at once).
func (t *Transport) meterAnswer(r *http.Request, resp *http.Response, e recorder.Event) *metered {
	if t.cfg.usage == nil || resp.Body == nil || resp.Body == http.NoBody || resp.StatusCode == http.StatusSwitchingProtocols {
		return nil
	}
	meter := t.cfg.usage.Start(r, resp)
	if meter == nil {
		return nil
	}
	return &metered{body: resp.Body, meter: meter, ev: e}
}
