package usage

import "net/http"

// Units is what one answer consumed. Every field is -1 when not known:
// a reader that found nothing says so, and nothing unknown is ever read as
// zero. The zero Units is a known zero in every field; Unknown returns the
// value that knows nothing.
type Units struct {
	// InputTokens are the tokens of the request (the prompt), cached ones
	// included; OutputTokens those of the answer, reasoning or thinking
	// tokens included.
	InputTokens, OutputTokens int64
	// CachedTokens is the part of InputTokens read from the provider's
	// prompt cache (billed at a lower price by most providers). Readers
	// report 0 when the answer states its input tokens and nothing about
	// a cache.
	CachedTokens int64
	// Units is the amount an API bills in its own unit (credits,
	// characters, requests), as Header or Func found it.
	Units float64
}

// Unknown returns the Units that knows nothing: -1 in every field.
func Unknown() Units {
	return Units{InputTokens: -1, OutputTokens: -1, CachedTokens: -1, Units: -1}
}

// TokensKnown reports whether both the input and the output tokens are
// known.
func (u Units) TokensKnown() bool { return u.InputTokens >= 0 && u.OutputTokens >= 0 }

// A Reader reads the units consumed by the answers of one API. Readers are
// safe for concurrent use: Start is called by many requests at once.
type Reader interface {
	// Start is called once per answer, after its headers arrived and
	// before the caller reads its body. It returns the Meter that is to
	// see the body, or nil when the answer holds nothing this reader
	// reads (its units are then Unknown). Start must not read resp.Body
	// or change req or resp.
	Start(req *http.Request, resp *http.Response) Meter
}

// A Meter reads the units of one answer from its body as the caller reads
// it. A Meter is used by one goroutine at a time.
type Meter interface {
	// Write is given every body byte the caller reads, in order, in
	// pieces of any size, as they pass. It must not keep p, must not
	// change it, and cannot fail: a body it does not understand gives
	// Unknown units at Done.
	Write(p []byte)
	// Done is called once, at the body's end or when it is closed:
	// complete is true when the body was read to its end (io.EOF), false
	// when it was closed before, or its reading failed. It returns the
	// units found. Calls after the first return the same Units; Write
	// after Done does nothing.
	Done(complete bool) Units
}
