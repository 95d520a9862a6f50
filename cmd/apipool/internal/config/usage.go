package config

import (
	"bytes"
	"errors"
	"io"
	"math"
	"net/http"
	"os"
	"reflect"
	"slices"
	"strings"

	"github.com/apipool-ng/apipool"
	"github.com/apipool-ng/apipool/usage"
	"go.yaml.in/yaml/v3"
)

// Usage (issue 26): the units each answer consumed (tokens, or an API's
// own unit), read by a reader of package usage, and priced from a table
// given in the file or in a prices file.

// Usage is an upstream's usage settings. Reader "" means none: the
// events carry no units.
type Usage struct {
	// Reader is "openai", "anthropic", "gemini", "auto" or "header".
	Reader string
	// Header is reader header:NAME's header (canonical form).
	Header string
	// Prices is the price table, per million tokens; nil: no cost.
	Prices usage.Prices
	// PricesFile is the file the table came from (resolved), or "" when
	// the config file gives it.
	PricesFile string
	// IncludeUsage asks OpenAI-style streams for their usage when the
	// caller did not (apipool.WithIncludeUsage).
	IncludeUsage bool
}

// UsageReaders are usage.reader's values, but header:NAME.
var UsageReaders = []string{"openai", "anthropic", "gemini", "auto"}

// MaxPricesFile bounds a prices file.
const MaxPricesFile = 4 << 20

type usageT struct {
	Line         int
	Reader       Value[string]    `yaml:"reader"`
	PricesFile   Value[string]    `yaml:"prices_file"`
	Prices       namedMap[priceT] `yaml:"prices"`
	IncludeUsage Value[bool]      `yaml:"include_usage"`
}

type priceT struct {
	Line        int
	Input       Value[float64] `yaml:"input"`
	Output      Value[float64] `yaml:"output"`
	CachedInput Value[float64] `yaml:"cached_input"`
}

func (v *validator) usage(u *usageT, at string) Usage {
	var out Usage
	if u == nil {
		return out
	}
	switch r := u.Reader.V; {
	case !u.Reader.Set:
		v.fail(u.Line, at+".reader", "missing: openai, anthropic, gemini, auto (any of those three) or header:NAME (a number in a response header)")
	case slices.Contains(UsageReaders, r):
		out.Reader = r
	case strings.HasPrefix(r, "header:"):
		name := strings.TrimPrefix(r, "header:")
		if !validHeaderName(name) {
			v.fail(u.Reader.Line, at+".reader", "header:NAME wants a header name, such as header:X-Credits-Used")
			break
		}
		if _, err := usage.Header(name); err != nil {
			v.fail(u.Reader.Line, at+".reader", "header:NAME: %v", err)
			break
		}
		out.Reader, out.Header = "header", http.CanonicalHeaderKey(name)
	default:
		v.fail(u.Reader.Line, at+".reader", "want openai, anthropic, gemini, auto or header:NAME, got %s%s", shown(u.Reader), didYouMean(u.Reader, UsageReaders))
	}
	tokens := out.Reader != "header" // the readers of tokens, which prices price
	switch {
	case u.PricesFile.Set && u.Prices.Set:
		v.fail(u.Prices.Line, at+".prices", "give prices or prices_file, not both")
	case (u.PricesFile.Set || u.Prices.Set) && u.Reader.Set && !tokens:
		line := u.Prices.Line
		if u.PricesFile.Set {
			line = u.PricesFile.Line
		}
		v.fail(line, at+".reader", "header:NAME reads an API's own unit, and prices are per million tokens: use one of the token readers (openai, anthropic, gemini, auto), or no prices")
	case u.PricesFile.Set:
		out.PricesFile = v.resolve(u.PricesFile.V)
		out.Prices = v.pricesFile(u.PricesFile, out.PricesFile, at+".prices_file")
	case u.Prices.Set && len(u.Prices.Entries) == 0:
		v.fail(u.Prices.Line, at+".prices", "an empty table prices nothing: give model: {input: N, output: N}, or leave prices out")
	case u.Prices.Set:
		out.Prices = v.prices(&u.Prices)
	}
	if x := u.IncludeUsage; x.Set {
		out.IncludeUsage = x.V
		if x.V && u.Reader.Set && out.Reader != "openai" && out.Reader != "auto" {
			v.fail(x.Line, at+".include_usage", "asks OpenAI-style streams for their usage: it needs reader openai or auto")
		}
	}
	return out
}

// prices checks a price table's entries, each at its line, and returns
// the table (nil when it has errors, or no entry).
func (v *validator) prices(m *namedMap[priceT]) usage.Prices {
	out := usage.Prices{}
	ok := true
	for _, e := range m.Entries {
		p := e.V
		if !p.Input.Set && !p.Output.Set && !p.CachedInput.Set {
			v.fail(e.Line, e.Field, "give input and output (and cached_input, when it differs from input), each a price per million tokens")
			ok = false
			continue
		}
		for _, f := range []struct {
			name string
			x    Value[float64]
		}{{"input", p.Input}, {"output", p.Output}, {"cached_input", p.CachedInput}} {
			if !f.x.Set && f.name != "cached_input" {
				v.fail(p.Line, e.Field+"."+f.name, "missing: the price per million tokens (0 for free)")
				ok = false
			}
			if math.IsNaN(f.x.V) || math.IsInf(f.x.V, 0) || f.x.V < 0 {
				v.fail(f.x.Line, e.Field+"."+f.name, "want a price of 0 or more, per million tokens")
				ok = false
			}
		}
		price := usage.Price{Input: p.Input.V, Output: p.Output.V, CachedInput: p.CachedInput.V}
		// The library's check, for the names (and as the last guard).
		if err := (usage.Prices{e.Name: price}).Validate(); err != nil {
			var ce *apipool.ConfigError
			reason := "refused by the price table's check"
			if errors.As(err, &ce) {
				reason = ce.Reason
			}
			if !strings.HasPrefix(reason, "price ") { // the prices were reported above
				v.fail(e.Line, e.Field, "%s: a name is a model's (gpt-4o-2024-08-06), or a prefix and one '*' at its end (gpt-4o*, or * for every model)", reason)
			}
			ok = false
			continue
		}
		out[e.Name] = price
	}
	if !ok || len(out) == 0 {
		return nil
	}
	return out
}

// pricesFile reads a price table from its own YAML file: a mapping of
// model names to {input, output, cached_input}. Its errors name that file
// and its lines.
func (v *validator) pricesFile(x Value[string], file, field string) usage.Prices {
	label := pathLabel(x, file)
	f, err := os.Open(file)
	if err != nil {
		v.fail(x.Line, field, "the prices file %s: %v", label, errors.Unwrap(err))
		return nil
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, MaxPricesFile+1))
	switch {
	case err != nil:
		v.fail(x.Line, field, "the prices file %s: cannot read it", label)
		return nil
	case len(data) > MaxPricesFile:
		v.fail(x.Line, field, "the prices file %s: larger than %d bytes", label, MaxPricesFile)
		return nil
	}
	name := file
	if !pathShown(x) {
		name = "the prices file" // its path is not to be shown
	}
	var doc yaml.Node
	dec := yaml.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&doc); err != nil {
		if err == io.EOF {
			v.fail(x.Line, field, "the prices file %s is empty", label)
			return nil
		}
		v.errs = append(v.errs, syntaxError(name, data, err))
		return nil
	}
	d := &decoder{file: name, lookup: v.lookup}
	var m namedMap[priceT]
	if len(doc.Content) == 1 {
		d.node(doc.Content[0], reflect.ValueOf(&m).Elem(), "prices")
	}
	if len(d.errs) > 0 {
		v.errs = append(v.errs, d.errs...)
		return nil
	}
	pv := &validator{file: name, dir: v.dir, lookup: v.lookup}
	out := pv.prices(&m)
	v.errs = append(v.errs, pv.errs...)
	if len(pv.errs) == 0 && len(out) == 0 {
		v.fail(x.Line, field, "the prices file %s holds no price", label)
	}
	if len(pv.errs) > 0 {
		return nil
	}
	return out
}
