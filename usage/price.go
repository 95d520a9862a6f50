package usage

import (
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"

	"github.com/apipool-ng/apipool/errdefs"
)

// Price is what a model's tokens cost, per million tokens, in the
// currency of the table it is in. The zero Price makes every token free:
// a model that costs nothing is listed with it.
type Price struct {
	Input, Output float64
	// CachedInput is the price of the input tokens read from the prompt
	// cache; 0 means they cost Input.
	CachedInput float64
}

// Cost returns what u's tokens cost at p. ok is false, and cost 0, when
// u's input, output or cached tokens are not known, or the cached tokens
// exceed the input tokens: unknown is never counted as free.
func (p Price) Cost(u Units) (cost float64, ok bool) {
	if u.InputTokens < 0 || u.OutputTokens < 0 || u.CachedTokens < 0 || u.CachedTokens > u.InputTokens {
		return 0, false
	}
	cached := p.CachedInput
	if cached == 0 {
		cached = p.Input
	}
	cost = (float64(u.InputTokens-u.CachedTokens)*p.Input + float64(u.CachedTokens)*cached + float64(u.OutputTokens)*p.Output) / 1e6
	if math.IsNaN(cost) || math.IsInf(cost, 0) || cost < 0 {
		return 0, false
	}
	return cost, true
}

// Prices is a price table: model names to their Price. A key is a model's
// exact name ("gpt-4o-2024-08-06"), or a prefix pattern ending in '*'
// ("gpt-4o*", or "*" for every model). A model's Price is that of its
// exact name if present, else that of the longest pattern it starts with.
// Names are compared as they are, case included. Nothing is fetched: the
// table is what the user gives. A Prices is safe for concurrent reads.
type Prices map[string]Price

// Lookup returns the Price of model, and whether the table has one.
func (p Prices) Lookup(model string) (Price, bool) {
	if pr, ok := p[model]; ok {
		return pr, true
	}
	// The longest pattern first: model[:n] + "*" for n from len(model)
	// down, built in one buffer (a map index by string(bytes) does not
	// allocate).
	var arr [128]byte
	buf := append(arr[:0], model...)
	buf = append(buf, '*')
	for n := len(model); n >= 0; n-- {
		buf[n] = '*'
		if pr, ok := p[string(buf[:n+1])]; ok {
			return pr, true
		}
	}
	return Price{}, false
}

// Cost returns what u cost with model: ok is false, and cost 0, for a model
// the table has no Price for, or units whose tokens are not known (see
// Price.Cost). A missing model is never counted as free.
func (p Prices) Cost(model string, u Units) (cost float64, ok bool) {
	pr, ok := p.Lookup(model)
	if !ok {
		return 0, false
	}
	return pr.Cost(u)
}

// Validate checks every entry: a key must not be empty and may hold one
// '*', at its end; a price must be a finite number of at least 0. It
// returns nil, or one *ConfigError (apipool.ErrInvalidConfig) per fault,
// joined, in the order of the keys, each with a Field naming the model
// and the price: usage.Prices["gpt-4o"].Input.
func (p Prices) Validate() error {
	keys := make([]string, 0, len(p))
	for k := range p {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	var errs []error
	for _, k := range keys {
		field := "usage.Prices[" + strconv.Quote(k) + "]"
		switch i := strings.IndexByte(k, '*'); {
		case k == "":
			errs = append(errs, &errdefs.ConfigError{Field: field, Reason: "empty model name"})
		case i >= 0 && i != len(k)-1:
			errs = append(errs, &errdefs.ConfigError{Field: field, Reason: "a pattern has one '*', at its end"})
		}
		pr := p[k]
		for _, f := range []struct {
			name string
			v    float64
		}{{"Input", pr.Input}, {"Output", pr.Output}, {"CachedInput", pr.CachedInput}} {
			if math.IsNaN(f.v) || math.IsInf(f.v, 0) || f.v < 0 {
				errs = append(errs, &errdefs.ConfigError{Field: field + "." + f.name, Reason: fmt.Sprintf("price %v is not a finite number of at least 0", f.v)})
			}
		}
	}
	return errors.Join(errs...)
}
