package usage

import (
	"errors"
	"math"
	"strings"
	"testing"

	"github.com/apipool-ng/apipool/errdefs"
)

var table = Prices{
	"gpt-4o":            {Input: 2.5, Output: 10, CachedInput: 1.25},
	"gpt-4o*":           {Input: 5, Output: 15},
	"gpt-4o-mini*":      {Input: 0.15, Output: 0.6, CachedInput: 0.075},
	"gpt-4o-mini-audio": {Input: 10, Output: 20},
	"claude-*":          {Input: 3, Output: 15, CachedInput: 0.3},
}

func TestLookup(t *testing.T) {
	for _, tc := range []struct {
		model string
		want  Price
		ok    bool
	}{
		{"gpt-4o", table["gpt-4o"], true},                       // exact
		{"gpt-4o-2024-08-06", table["gpt-4o*"], true},           // prefix
		{"gpt-4o-mini-2024-07-18", table["gpt-4o-mini*"], true}, // the longest prefix
		{"gpt-4o-mini-audio", table["gpt-4o-mini-audio"], true}, // exact beats the longest prefix
		{"gpt-4o-mini", table["gpt-4o-mini*"], true},            // a prefix matches its own name
		{"claude-sonnet-4-5", table["claude-*"], true},
		{"gpt-4", Price{}, false},
		{"GPT-4o", Price{}, false}, // case counts
		{"", Price{}, false},
		{strings.Repeat("gpt-4o", 100), table["gpt-4o*"], true}, // longer than the stack buffer
	} {
		got, ok := table.Lookup(tc.model)
		if got != tc.want || ok != tc.ok {
			t.Errorf("%q: got %+v, %v; want %+v, %v", tc.model, got, ok, tc.want, tc.ok)
		}
	}
	if _, ok := (Prices{"*": {Input: 1}}).Lookup("anything"); !ok {
		t.Error(`"*" does not match every model`)
	}
	if _, ok := Prices(nil).Lookup("gpt-4o"); ok {
		t.Error("a nil table has a price")
	}
}

func TestCost(t *testing.T) {
	u := Units{InputTokens: 1_000_000, OutputTokens: 500_000, CachedTokens: 400_000, Units: -1}
	// 600k uncached at 2.5, 400k cached at 1.25, 500k out at 10
	if c, ok := table.Cost("gpt-4o", u); !ok || math.Abs(c-(1.5+0.5+5)) > 1e-9 {
		t.Errorf("gpt-4o: %v, %v", c, ok)
	}
	// no CachedInput: cached tokens at the input price
	if c, ok := table.Cost("gpt-4o-2024-08-06", u); !ok || math.Abs(c-(5+7.5)) > 1e-9 {
		t.Errorf("gpt-4o*: %v, %v", c, ok)
	}
	if c, ok := table.Cost("gpt-4o", Units{}); !ok || c != 0 {
		t.Errorf("zero tokens: %v, %v", c, ok)
	}
	for name, u := range map[string]Units{
		"unknown":               Unknown(),
		"input unknown":         {InputTokens: -1, OutputTokens: 5},
		"output unknown":        {InputTokens: 5, OutputTokens: -1},
		"cached unknown":        {InputTokens: 5, OutputTokens: 5, CachedTokens: -1},
		"cached > input":        {InputTokens: 5, OutputTokens: 5, CachedTokens: 6},
		"units only, no tokens": {InputTokens: -1, OutputTokens: -1, CachedTokens: -1, Units: 3},
	} {
		if c, ok := table.Cost("gpt-4o", u); ok || c != 0 {
			t.Errorf("%s: %v, %v; want not known", name, c, ok)
		}
	}
	if c, ok := table.Cost("o3-pro", u); ok || c != 0 {
		t.Errorf("a model missing from the table: %v, %v; want not known", c, ok)
	}
	if _, ok := (Prices{"m": {Input: math.NaN()}}).Cost("m", u); ok {
		t.Error("a NaN price gives a cost")
	}
}

func TestValidate(t *testing.T) {
	if err := table.Validate(); err != nil {
		t.Fatal(err)
	}
	if err := (Prices{}).Validate(); err != nil {
		t.Fatal(err)
	}
	err := Prices{
		"ok":         {Input: 1},
		"neg":        {Input: -1},
		"nan":        {Output: math.NaN()},
		"inf":        {CachedInput: math.Inf(1)},
		"gpt-*-mini": {Input: 1},
		"a**":        {Input: 1},
		"":           {Input: 1},
	}.Validate()
	if !errors.Is(err, errdefs.ErrInvalidConfig) {
		t.Fatalf("%v does not match ErrInvalidConfig", err)
	}
	var fields []string
	for _, e := range err.(interface{ Unwrap() []error }).Unwrap() {
		var ce *errdefs.ConfigError
		if !errors.As(e, &ce) {
			t.Fatalf("%v is not a *ConfigError", e)
		}
		fields = append(fields, ce.Field)
	}
	want := []string{`usage.Prices[""]`, `usage.Prices["a**"]`, `usage.Prices["gpt-*-mini"]`, `usage.Prices["inf"].CachedInput`, `usage.Prices["nan"].Output`, `usage.Prices["neg"].Input`}
	if strings.Join(fields, " ") != strings.Join(want, " ") {
		t.Fatalf("fields %q, want %q", fields, want)
	}
}

// Cost is on every answer's path: it allocates nothing.
func TestCostAllocs(t *testing.T) {
	u := Units{InputTokens: 10, OutputTokens: 10}
	if a := testing.AllocsPerRun(100, func() { table.Cost("gpt-4o-mini-2024-07-18", u) }); a != 0 {
		t.Fatalf("%v allocations", a)
	}
}
