package config

import (
	"errors"
	"maps"
	"slices"
	"strings"
	"testing"

	"github.com/apipool-ng/apipool"
)

// upstreamWith puts settings (indented for the upstream) into minimal's
// upstream, before its keys.
func upstreamWith(keyFile, settings string) string {
	return strings.Replace(minimal(keyFile), "    keys:", settings+"    keys:", 1)
}

// A key file line may end with tier= and models=; key_tiers and
// key_models give them by ID (the variable's keys' only way); routing
// names the model and session sources and the cooldown scope.
func TestRoutingSection(t *testing.T) {
	kf := writeKeys(t, "# tier and models on the line\n"+
		"k0 sk-zero-AAAA tier=0 models=gpt-4o*,gpt-4.1\n"+
		"k1 sk-one-BBBB models=o3 tier=2\n"+
		"sk-plain-CCCC tier=1\n"+
		"k3 sk-three-DDDD\n"+
		"k4 sk-four-EEEE=\n", 0o600)
	t.Setenv("APIPOOL_T_KEYS", "e1 sk-env-FFFF")
	y := strings.Replace(upstreamWith(kf, `    routing:
      model: json
      cooldown_scope: model
      sessions: {header: x-session-id}
      max_sessions: 500
    key_tiers: {k3: 1, e1: 3}
    key_models:
      k3: [claude-*]
      e1: gemini-2.0-flash
`), "keys: {file: "+kf+"}", "keys: {file: "+kf+", env: APIPOOL_T_KEYS}", 1)
	c, err := Parse("f.yaml", []byte(y))
	if err != nil {
		t.Fatal(err)
	}
	u := c.Upstreams[0]
	want := Routing{Model: "json", CooldownScope: apipool.ScopeModel, SessionHeader: "X-Session-Id", MaxSessions: 500}
	if u.Routing != want {
		t.Errorf("routing %+v, want %+v", u.Routing, want)
	}
	type tm struct {
		tier   int
		models []string
	}
	got := map[string]tm{}
	for _, k := range u.Keys {
		got[strings.TrimPrefix(k.ID, "openai/")] = tm{k.Tier, k.Models}
	}
	for id, w := range map[string]tm{
		"k0": {0, []string{"gpt-4o*", "gpt-4.1"}},
		"k1": {2, []string{"o3"}},
		"k3": {1, []string{"claude-*"}},
		"k4": {0, nil},
		"e1": {3, []string{"gemini-2.0-flash"}},
	} {
		if g, ok := got[id]; !ok || g.tier != w.tier || !slices.Equal(g.models, w.models) {
			t.Errorf("key %s: %+v, want %+v", id, g, w)
		}
	}
	var plain *apipool.Key
	for i, k := range u.Keys {
		if k.Secret.Reveal() == "sk-plain-CCCC" {
			plain = &u.Keys[i]
		}
		if k.Secret.Reveal() == "sk-four-EEEE=" && k.ID != "openai/k4" {
			t.Errorf("a secret ending in '=' (base64) is read as %q", k.ID)
		}
	}
	if plain == nil || plain.Tier != 1 || len(plain.ID) != len("openai/")+8 {
		t.Errorf("the unnamed key: %+v", plain)
	}
	if len(u.Keys) != 6 {
		t.Errorf("%d keys, want 6", len(u.Keys))
	}

	// Weights, for the weighted strategy: on the line or in key_weights.
	t.Setenv("APIPOOL_T_WKEYS", "e1 sk-env-FFFF")
	kfw := writeKeys(t, "k0 sk-zero-AAAA weight=3 tier=1\nk1 sk-one-BBBB\n", 0o600)
	y = strings.Replace(upstreamWith(kfw, "    strategy: weighted\n    key_weights: {e1: 7}\n"), "keys: {file: "+kfw+"}", "keys: {file: "+kfw+", env: APIPOOL_T_WKEYS}", 1)
	if c, err = Parse("f.yaml", []byte(y)); err != nil {
		t.Fatal(err)
	}
	weights := map[string]int{}
	for _, k := range c.Upstreams[0].Keys {
		weights[strings.TrimPrefix(k.ID, "openai/")] = k.Weight
	}
	if want := map[string]int{"k0": 3, "k1": 0, "e1": 7}; !maps.Equal(weights, want) {
		t.Errorf("weights %v, want %v (0: the library's 1)", weights, want)
	}

	// A key_tiers entry names an unnamed key by its fingerprint's 8 digits.
	id := strings.TrimPrefix(plain.ID, "openai/")
	kf2 := writeKeys(t, "sk-plain-CCCC\n", 0o600)
	c, err = Parse("f.yaml", []byte(upstreamWith(kf2, "    key_tiers: {"+id+": 4}\n")))
	if err != nil || c.Upstreams[0].Keys[0].Tier != 4 {
		t.Errorf("key_tiers by fingerprint: %v %+v", err, c)
	}

	// Sessions from a JSON field; the defaults.
	c, err = Parse("f.yaml", []byte(upstreamWith(kf2, "    routing: {sessions: {json: metadata.user_id}}\n")))
	if err != nil {
		t.Fatal(err)
	}
	if r := c.Upstreams[0].Routing; r != (Routing{SessionJSON: "metadata.user_id"}) || !r.Sessions() {
		t.Errorf("routing %+v", r)
	}
	c, err = Parse("f.yaml", []byte(minimal(kf2)))
	if err != nil || c.Upstreams[0].Routing != (Routing{}) || c.Upstreams[0].Routing.Sessions() {
		t.Errorf("no routing: %+v, %v", c.Upstreams[0].Routing, err)
	}
}

// Each mistake of the routing settings is named with its file, line and
// field (or its key file line), with the setting meant when misspelt.
func TestRoutingErrors(t *testing.T) {
	kf := writeKeys(t, "k0 sk-zero-AAAA\nk1 sk-one-BBBB\n", 0o600)
	up := func(s string) string { return upstreamWith(kf, s) }
	file := func(content string) string { return minimal(writeKeys(t, content, 0o600)) }
	kfTier := writeKeys(t, "k0 sk-zero-AAAA tier=1\n", 0o600)
	cases := []struct{ name, yaml, want string }{
		{"model source", up("    routing: {model: jsn}\n"), `f.yaml:8: upstreams[0].routing.model: want json (the body's "model", OpenAI and Anthropic), path (/models/NAME:..., Gemini) or github (GitHub's rate-limit resource), got "jsn"; did you mean json?`},
		{"unknown routing setting", up("    routing: {modle: json}\n"), "f.yaml:8: upstreams[0].routing.modle: unknown setting; did you mean model?"},
		{"scope", up("    routing: {model: json, cooldown_scope: modle}\n"), `f.yaml:8: upstreams[0].routing.cooldown_scope: want key (a rate limit rests the key) or model (the key for that model only), got "modle"; did you mean model?`},
		{"scope model without a model", up("    routing:\n      cooldown_scope: model\n"), "f.yaml:9: upstreams[0].routing.cooldown_scope: model needs routing.model"},
		{"sessions: both", up("    routing:\n      sessions: {header: X-S, json: user}\n"), "f.yaml:9: upstreams[0].routing.sessions: give header or json, not both"},
		{"sessions: neither", up("    routing:\n      sessions: {}\n"), "f.yaml:9: upstreams[0].routing.sessions: give header (such as X-Session-Id) or json"},
		{"sessions: misspelt", up("    routing:\n      sessions: {heder: X-S}\n"), "f.yaml:9: upstreams[0].routing.sessions.heder: unknown setting; did you mean header?"},
		{"sessions: bad header", up("    routing:\n      sessions: {header: 'X S'}\n"), `f.yaml:9: upstreams[0].routing.sessions.header: want a header name such as X-Session-Id, got "X S"`},
		{"sessions: bad path", up("    routing:\n      sessions: {json: metadata..user_id}\n"), "f.yaml:9: upstreams[0].routing.sessions.json: want a field of the JSON body, or a dotted path into it, such as user, prompt_cache_key or metadata.user_id: it has an empty part"},
		{"max_sessions without sessions", up("    routing:\n      max_sessions: 10\n"), "f.yaml:9: upstreams[0].routing.max_sessions: needs routing.sessions"},
		{"max_sessions 0", up("    routing:\n      sessions: {header: X-S}\n      max_sessions: 0\n"), "f.yaml:10: upstreams[0].routing.max_sessions: want 1 to 10000000 (leave it out for 10000)"},
		{"key_tiers: unknown ID", up("    key_tiers: {k2: 1}\n"), `f.yaml:8: upstreams[0].key_tiers["k2"]: no key of this upstream has this ID (a key's ID is its key file line's first word, or the first 8 hex digits of its fingerprint when the line gives none); did you mean "k0"?`},
		{"key_tiers: negative", up("    key_tiers:\n      k1: -1\n"), `f.yaml:9: upstreams[0].key_tiers["k1"]: want a tier from 0 (the first) to 1000`},
		{"key_tiers: not a number", up("    key_tiers:\n      k1: first\n"), `f.yaml:9: upstreams[0].key_tiers["k1"]: want an integer`},
		{"key_tiers: twice", up("    key_tiers:\n      k1: 1\n      k1: 2\n"), `f.yaml:10: upstreams[0].key_tiers["k1"]: set twice (also on line 9)`},
		{"key_tiers: a list", up("    key_tiers: [k1]\n"), "f.yaml:8: upstreams[0].key_tiers: want a mapping of names to values, got a list"},
		{"key_models: without a model source", up("    key_models:\n      k1: [gpt-4o]\n"), `f.yaml:9: upstreams[0].key_models["k1"]: a key's models need routing.model (json, path or github)`},
		{"key_models: a bad pattern", up("    routing: {model: json}\n    key_models:\n      k1: [gpt-*o]\n"), `f.yaml:10: upstreams[0].key_models["k1"][0]: the model has a '*' before its end`},
		{"key_models: empty list", up("    routing: {model: json}\n    key_models:\n      k1: []\n"), `f.yaml:10: upstreams[0].key_models["k1"]: an empty list: leave the key out for every model`},
		{"key_models: unknown setting meant", up("    key_model: {k1: [a]}\n"), "f.yaml:8: upstreams[0].key_model: unknown setting; did you mean key_models?"},
		{"line: tier not a number", file("k0 sk-zero-AAAA tier=first\n"), "line 1: tier= wants a whole number from 0 (the first) to 1000"},
		{"line: tier twice", file("k0 sk-zero-AAAA tier=1 tier=2\n"), "line 1: tier= given twice"},
		{"line: bad models", file("k0 sk-zero-AAAA models=a,,b\n"), "line 1: models= item 2 is empty"},
		{"line: misspelt option", file("k0 sk-zero-AAAA teir=1\n"), "line 1: unknown option teir; did you mean tier?"},
		{"line: models without a model source", file("k0 sk-zero-AAAA models=gpt-4o\n"), "f.yaml:8: upstreams[0].keys.file: key openai/k0 lists models= in the key file: they need routing.model"},
		{"line and map", upstreamWith(kfTier, "    key_tiers: {k0: 2}\n"), `f.yaml:8: upstreams[0].key_tiers["k0"]: the key file's line gives this key's tier= already: give it in one place`},
		{"options in a variable", strings.Replace(minimal(kf), "{file: "+kf+"}", "{env: APIPOOL_T_OPTS}", 1), "APIPOOL_T_OPTS item 1: tier=, weight= and models= are key file options: give a variable's keys their tier, weight and models in key_tiers, key_weights and key_models"},
		{"line: weight 0", file("k0 sk-zero-AAAA weight=0\n"), "line 1: weight= wants a whole number from 1 to 1000000"},
		{"line: weight twice", file("k0 sk-zero-AAAA weight=1 weight=2\n"), "line 1: weight= given twice"},
		{"line: misspelt weight", file("k0 sk-zero-AAAA wieght=3\n"), "line 1: unknown option wieght; did you mean weight?"},
		{"line: unknown option, not quoted", file("k0 sk-zero-AAAA zqxjkv=3\n"), "line 1: an unknown option (not quoted: it may be part of a secret); the options are tier=N, weight=N and models=a,b*"},
		{"line: weight without weighted", file("k0 sk-zero-AAAA weight=3\n"), "f.yaml:8: upstreams[0].keys.file: key openai/k0 has weight= in the key file: weights are read by strategy: weighted only"},
		{"key_weights without weighted", up("    key_weights: {k0: 3}\n"), "f.yaml:8: upstreams[0].key_weights: weights are read by strategy: weighted only"},
		{"key_weights: unknown ID", up("    strategy: weighted\n    key_weights: {k9: 3}\n"), `f.yaml:9: upstreams[0].key_weights["k9"]: no key of this upstream has this ID`},
		{"key_weights: too big", up("    strategy: weighted\n    key_weights:\n      k1: 1000001\n"), `f.yaml:10: upstreams[0].key_weights["k1"]: want a weight from 1 to 1000000`},
		{"weight line and map", upstreamWith(writeKeys(t, "k0 sk-zero-AAAA weight=2\n", 0o600), "    strategy: weighted\n    key_weights: {k0: 2}\n"), `upstreams[0].key_weights["k0"]: the key file's line gives this key's weight= already: give it in one place`},
	}
	t.Setenv("APIPOOL_T_OPTS", "k0 sk-zero-AAAA tier=1")
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

// No routing error shows a secret: not a key file line's (whose options
// are checked next to it), nor a key written where an ID or a model
// belongs.
func TestRoutingNoSecretInErrors(t *testing.T) {
	noScrub = true
	defer func() { noScrub = false }()
	C := canary
	t.Setenv("CANARY_KEYS_OPT", "k0 "+C+" tier=1")
	cases := []struct{ name, keys, settings, want string }{
		{"tier holding the key", "k0 tier=" + C + "\n", "", "tier= wants a whole number"},
		{"models holding the key", "k0 x models=a," + C + "*x\n", "", "models= item 2 has a '*' before its end"},
		{"unknown option holding the key", "k0 " + C + " tir=" + C + " models=a\n", "", "unknown option tir; did you mean tier?"},
		{"key-like option name", "k0 " + C + " " + C + "=1\n", "", "want a secret, or an ID and a secret"},
		{"the key as a key_tiers ID", "k0 sk-zero-AAAA\n", "    key_tiers: {" + C + ": 1}\n", `key_tiers[entry 1]: no key of this upstream has this ID`},
		{"the key as a key_models ID", "k0 sk-zero-AAAA\n", "    routing: {model: json}\n    key_models: {" + C + ": [a]}\n", `key_models[entry 1]: no key of this upstream has this ID`},
		{"the key as a model", "k0 sk-zero-AAAA\n", "    routing: {model: json}\n    key_models: {k0: ['" + C + " x']}\n", `key_models["k0"][0]: the model holds a space`},
		{"the key as a model source", "k0 sk-zero-AAAA\n", "    routing: {model: " + C + "}\n", "routing.model: want json"},
		{"the key as a session header", "k0 sk-zero-AAAA\n", "    routing: {sessions: {header: '" + C + "/'}}\n", "routing.sessions.header: want a header name such as X-Session-Id, got a value that is not shown"},
		{"the key as a scope", "k0 sk-zero-AAAA\n", "    routing: {model: json, cooldown_scope: " + C + "}\n", "routing.cooldown_scope: want key"},
		{"the key as a routing setting", "k0 sk-zero-AAAA\n", "    routing: {" + C + ": 1}\n", "routing: unknown setting, whose name is not shown"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			kf := writeKeys(t, c.keys, 0o600)
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
	// The variable's keys: an option there is refused without its value.
	_, err := Parse("f.yaml", []byte(strings.Replace(minimal("x"), "{file: x}", "{env: CANARY_KEYS_OPT}", 1)))
	if err == nil || len(leaks(err.Error())) > 0 || !strings.Contains(err.Error(), "are key file options") {
		t.Errorf("options in a variable: %v", err)
	}
}
