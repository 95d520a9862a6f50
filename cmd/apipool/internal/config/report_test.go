package config

import (
	"strings"
	"testing"

	"github.com/apipool-ng/apipool"
)

// An unknown setting hid every other error, and some errors had no field
// path (issue 27 item 4): now all are reported at once, in the order of
// the file, each with its field, and a near miss names the setting meant.
func TestAllErrorsAtOnce(t *testing.T) {
	y := "tokens:\n  - name: a\n    sha256: " + goodHash + "\n" +
		"upstreams:\n  - name: u\n    prefix: /u\n    target: api.openai.com\n" +
		"    strategyy: random\n" + // line 8
		"    keys: {env: APIPOOL_T_ALL_KEYS}\n" +
		"    probe: {pth: /x, interval: 5}\n" + // line 10
		"redis: {adr: 'r:6379'}\n" // line 11
	t.Setenv("APIPOOL_T_ALL_KEYS", "sk-1")
	_, err := Parse("f.yaml", []byte(y))
	if err == nil {
		t.Fatal("no error")
	}
	want := []string{
		"f.yaml:7: upstreams[0].target: want an http or https URL",
		"f.yaml:8: upstreams[0].strategyy: unknown setting; did you mean strategy?",
		"f.yaml:10: upstreams[0].probe.pth: unknown setting; did you mean path?",
		"f.yaml:10: upstreams[0].probe.interval: want a duration",
		"f.yaml:10: upstreams[0].probe.path: missing",
		"f.yaml:11: redis.adr: unknown setting; did you mean addr?",
		"f.yaml:11: redis.addr: missing",
	}
	lines := strings.Split(err.Error(), "\n")
	if len(lines) != len(want) {
		t.Fatalf("want %d errors, got:\n%v", len(want), err)
	}
	for i, w := range want {
		if !strings.HasPrefix(lines[i], w) {
			t.Errorf("error %d: %q, want it to start with %q", i, lines[i], w)
		}
	}
}

// The parser names the line where the construct it read began; a tab
// breaking the indentation is named at its own line.
func TestTabLine(t *testing.T) {
	for _, y := range []string{
		"tokens:\n  - name: a\n\tsha256: x\n",
		"upstreams:\n  - name: u\n    keys: {env: X}\n\tprefix: /u\n",
	} {
		want := strings.Count(y[:strings.IndexByte(y, '\t')], "\n") + 1
		_, err := Parse("f.yaml", []byte(y))
		if err == nil {
			t.Fatal("no error")
		}
		es := err.(Errors)
		if len(es) != 1 || es[0].Line != want || !strings.Contains(es[0].Reason, "a tab in the indentation") {
			t.Errorf("%q: %v; want line %d, a tab", y, err, want)
		}
	}
}

// A ${VAR} unquoted in a one-line {...} breaks the YAML (issue 27 item
// 6): the error says to quote it.
func TestVarInFlowHint(t *testing.T) {
	for _, y := range []string{
		"upstreams: [{name: u, target: ${UPSTREAM_URL}, prefix: /u}]\n",
		"tokens: []\nupstreams:\n  - {name: u, target: ${UPSTREAM_URL}, prefix: /u}\n",
		"upstreams:\n  - name: u\n    keys: {env: ${KEYS}}\n",
	} {
		_, err := Parse("f.yaml", []byte(y))
		if err == nil || !strings.Contains(err.Error(), "a ${VAR} inside {...} or [...] must be quoted") {
			t.Errorf("%q: %v; want the hint to quote it", y, err)
		}
		if es, ok := err.(Errors); !ok || es[0].Line != strings.Count(y, "\n") {
			t.Errorf("%q: %v; want the last line", y, err)
		}
	}
	if unquotedVarInFlow("a: {b: '${X}', c: \"${Y}\"}") || unquotedVarInFlow("target: ${X}") || unquotedVarInFlow("a: [x] # {${X}}") {
		t.Error("a quoted ${VAR}, one outside {...}, or one in a comment, taken as unquoted in {...}")
	}
}

// The error for an unknown strategy lists the valid names and the near
// one (issue 27 item 7); StrategyNames are apipool's.
func TestStrategyNames(t *testing.T) {
	for i, n := range StrategyNames {
		if s, err := apipool.ParseStrategy(n); err != nil || int(s) != i || s.String() != n {
			t.Errorf("%s: %v, %v", n, s, err)
		}
	}
	if s := apipool.Strategy(len(StrategyNames)); s.String() != "unknown strategy" {
		t.Errorf("apipool has a strategy %q that StrategyNames lacks", s)
	}
	kf := writeKeys(t, "sk-one\n", 0o600)
	y := strings.Replace(minimal(kf), "    keys:", "    strategy: roundrobin\n    keys:", 1)
	_, err := Parse("f.yaml", []byte(y))
	want := `f.yaml:8: upstreams[0].strategy: want round-robin, random, weighted, least-in-flight, most-quota-left, got "roundrobin"; did you mean round-robin?`
	if err == nil || err.Error() != want {
		t.Errorf("error:\n%v\nwant:\n%s", err, want)
	}
}
