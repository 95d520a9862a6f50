package config

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/apipool-ng/apipool/usage"
)

func TestUsageSection(t *testing.T) {
	kf := writeKeys(t, "k0 sk-zero-AAAA\n", 0o600)
	y := upstreamWith(kf, `    usage:
      reader: openai
      include_usage: true
      prices:
        gpt-4o: {input: 2.5, output: 10, cached_input: 1.25}
        gpt-4o-mini*: {input: 0.15, output: 0.6}
        "*": {input: 0, output: 0}
`)
	c, err := Parse("f.yaml", []byte(y))
	if err != nil {
		t.Fatal(err)
	}
	want := Usage{Reader: "openai", IncludeUsage: true, Prices: usage.Prices{
		"gpt-4o":       {Input: 2.5, Output: 10, CachedInput: 1.25},
		"gpt-4o-mini*": {Input: 0.15, Output: 0.6},
		"*":            {},
	}}
	if got := c.Upstreams[0].Usage; !reflect.DeepEqual(got, want) {
		t.Errorf("usage %+v, want %+v", got, want)
	}

	// A prices file, relative to the config file's directory.
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "prices.yaml"), []byte("# per million tokens\nclaude-sonnet-4*: {input: 3, output: 15, cached_input: 0.3}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	c, err = Parse(filepath.Join(dir, "apipool.yaml"), []byte(upstreamWith(kf, "    usage: {reader: anthropic, prices_file: prices.yaml}\n")))
	if err != nil {
		t.Fatal(err)
	}
	want = Usage{Reader: "anthropic", PricesFile: filepath.Join(dir, "prices.yaml"), Prices: usage.Prices{"claude-sonnet-4*": {Input: 3, Output: 15, CachedInput: 0.3}}}
	if got := c.Upstreams[0].Usage; !reflect.DeepEqual(got, want) {
		t.Errorf("usage %+v, want %+v", got, want)
	}

	// A header reader; no section: no reader.
	c, err = Parse("f.yaml", []byte(upstreamWith(kf, "    usage: {reader: 'header:x-credits-used'}\n")))
	if err != nil || !reflect.DeepEqual(c.Upstreams[0].Usage, Usage{Reader: "header", Header: "X-Credits-Used"}) {
		t.Errorf("header reader: %v %+v", err, c)
	}
	c, err = Parse("f.yaml", []byte(minimal(kf)))
	if err != nil || c.Upstreams[0].Usage.Reader != "" || c.Upstreams[0].Usage.Prices != nil {
		t.Errorf("no usage: %v %+v", err, c.Upstreams[0].Usage)
	}
}

func TestUsageErrors(t *testing.T) {
	kf := writeKeys(t, "k0 sk-zero-AAAA\n", 0o600)
	up := func(s string) string { return upstreamWith(kf, s) }
	dir := plainTempDir(t) // a path errors show
	pf := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	bad := pf("bad.yaml", "gpt-4o: {input: 2.5, output: 10}\ngpt-*o: {input: 1, output: 2}\no3:\n  input: cheap\n  output: 8\nx: {input: 1, outptu: 2}\n")
	cases := []struct{ name, yaml, want string }{
		{"reader missing", up("    usage: {include_usage: true}\n"), "f.yaml:8: upstreams[0].usage.reader: missing: openai, anthropic, gemini, auto"},
		{"reader misspelt", up("    usage: {reader: opneai}\n"), `f.yaml:8: upstreams[0].usage.reader: want openai, anthropic, gemini, auto or header:NAME, got "opneai"; did you mean openai?`},
		{"reader header without a name", up("    usage: {reader: 'header:'}\n"), "f.yaml:8: upstreams[0].usage.reader: header:NAME wants a header name"},
		{"setting misspelt", up("    usage: {reader: openai, include_usgae: true}\n"), "f.yaml:8: upstreams[0].usage.include_usgae: unknown setting; did you mean include_usage?"},
		{"include_usage with anthropic", up("    usage:\n      reader: anthropic\n      include_usage: true\n"), "f.yaml:10: upstreams[0].usage.include_usage: asks OpenAI-style streams for their usage: it needs reader openai or auto"},
		{"prices and prices_file", up("    usage:\n      reader: openai\n      prices_file: p.yaml\n      prices: {a: {input: 1, output: 1}}\n"), "f.yaml:11: upstreams[0].usage.prices: give prices or prices_file, not both"},
		{"prices with a header reader", up("    usage:\n      reader: 'header:X-Credits'\n      prices: {a: {input: 1, output: 1}}\n"), "f.yaml:10: upstreams[0].usage.reader: header:NAME reads an API's own unit, and prices are per million tokens"},
		{"negative price", up("    usage:\n      reader: openai\n      prices:\n        gpt-4o: {input: -1, output: 1}\n"), `f.yaml:11: upstreams[0].usage.prices["gpt-4o"].input: want a price of 0 or more, per million tokens`},
		{"infinite price", up("    usage:\n      reader: openai\n      prices:\n        gpt-4o: {input: .inf, output: 1}\n"), `f.yaml:11: upstreams[0].usage.prices["gpt-4o"].input: want a price of 0 or more`},
		{"output missing", up("    usage:\n      reader: openai\n      prices:\n        gpt-4o: {input: 1}\n"), `f.yaml:11: upstreams[0].usage.prices["gpt-4o"].output: missing: the price per million tokens (0 for free)`},
		{"a pattern with '*' inside", up("    usage:\n      reader: openai\n      prices:\n        'gpt-*-mini': {input: 1, output: 1}\n"), `f.yaml:11: upstreams[0].usage.prices["gpt-*-mini"]: a pattern has one '*', at its end`},
		{"empty table", up("    usage:\n      reader: openai\n      prices: {}\n"), "f.yaml:10: upstreams[0].usage.prices: an empty table prices nothing"},
		{"price not a number", up("    usage:\n      reader: openai\n      prices:\n        gpt-4o: {input: cheap, output: 1}\n"), `f.yaml:11: upstreams[0].usage.prices["gpt-4o"].input: want a number`},
		{"price setting misspelt", up("    usage:\n      reader: openai\n      prices:\n        gpt-4o: {input: 1, output: 1, cached_inptu: 0.5}\n"), `f.yaml:11: upstreams[0].usage.prices["gpt-4o"].cached_inptu: unknown setting; did you mean cached_input?`},
		{"prices file missing", up("    usage: {reader: openai, prices_file: " + filepath.Join(dir, "none.yaml") + "}\n"), "f.yaml:8: upstreams[0].usage.prices_file: the prices file " + filepath.Join(dir, "none.yaml") + ": no such file or directory"},
		{"prices file: its errors at its lines", up("    usage: {reader: openai, prices_file: " + bad + "}\n"), bad + ":4: prices[\"o3\"].input: want a number\n" + bad + ":6: prices[\"x\"].outptu: unknown setting; did you mean output?"},
		{"prices file: the library's check at its line", up("    usage: {reader: openai, prices_file: " + pf("star.yaml", "gpt-4o: {input: 2.5, output: 10}\ngpt-*o: {input: 1, output: 2}\n") + "}\n"), "star.yaml:2: prices[\"gpt-*o\"]: a pattern has one '*', at its end"},
		{"prices file: empty", up("    usage: {reader: openai, prices_file: " + pf("empty.yaml", "# nothing\n") + "}\n"), "empty.yaml is empty"},
		{"prices file: syntax", up("    usage: {reader: openai, prices_file: " + pf("syntax.yaml", "a: {input: 1\n") + "}\n"), "syntax.yaml:"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := Parse("f.yaml", []byte(c.yaml))
			var es Errors
			if !errors.As(err, &es) {
				t.Fatalf("error %v (%T), want Errors", err, err)
			}
			if !strings.Contains(err.Error(), c.want) {
				t.Fatalf("error:\n%v\nwant it to contain:\n%s", err, c.want)
			}
		})
	}
}

// No usage error shows a secret written where a reader, a model or a
// price belongs, nor the path of a prices file that looks like a key.
func TestUsageNoSecretInErrors(t *testing.T) {
	noScrub = true
	defer func() { noScrub = false }()
	setCanaryEnv(t)
	kf := writeKeys(t, "k0 sk-zero-AAAA\n", 0o600)
	C := canary
	dir := plainTempDir(t)
	secretPrices := filepath.Join(dir, "p.yaml")
	if err := os.WriteFile(secretPrices, []byte("'"+C+"*x': {input: 1, output: "+C+"}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	cases := []struct{ name, settings, want string }{
		{"the key as a reader", "    usage: {reader: " + C + "}\n", "usage.reader: want openai, anthropic, gemini, auto or header:NAME, got a value that is not shown"},
		{"the key as a reader's header", "    usage: {reader: 'header:" + C + "/'}\n", "usage.reader: header:NAME wants a header name"},
		{"a reader from a variable", "    usage: {reader: '${CANARY_VALUE}'}\n", "got the value of ${CANARY_VALUE} (not shown)"},
		{"the key as a model", "    usage:\n      reader: openai\n      prices:\n        '" + C + "*x': {input: 1, output: 1}\n", "usage.prices[entry 1]: a pattern has one '*', at its end"},
		{"the key as a price", "    usage:\n      reader: openai\n      prices:\n        gpt-4o: {input: " + C + ", output: 1}\n", `usage.prices["gpt-4o"].input: want a number`},
		{"a price from a variable", "    usage:\n      reader: openai\n      prices:\n        gpt-4o: {input: '${CANARY_VALUE}', output: 1}\n", "want a number (the value comes from ${CANARY_VALUE} and is not shown)"},
		{"the key as the prices file", "    usage: {reader: openai, prices_file: " + C + "}\n", "usage.prices_file: the prices file (its name is not shown: it looks like a secret, not a path)"},
		{"the prices file from a variable", "    usage: {reader: openai, prices_file: '${CANARY_VALUE}'}\n", "the prices file named by ${CANARY_VALUE}"},
		{"the key in the prices file", "    usage: {reader: openai, prices_file: " + secretPrices + "}\n", secretPrices + ":1: prices[entry 1].output: want a number"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := Parse("f.yaml", []byte(upstreamWith(kf, c.settings)))
			if err == nil {
				t.Fatal("no error")
			}
			msg := err.Error()
			if l := leaks(msg); len(l) > 0 {
				t.Errorf("LEAK: the error shows %q:\n%s", l, msg)
			}
			if !strings.Contains(msg, c.want) {
				t.Errorf("error:\n%s\nwant it to contain:\n%s", msg, c.want)
			}
		})
	}
}

// plainTempDir is a temporary directory whose path errors show: not
// t.TempDir's, whose test name (TestUsageErrors123...) looks like a key.
func plainTempDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "apipool-prices-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}
