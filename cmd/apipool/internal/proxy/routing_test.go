package proxy_test

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/apipool-ng/apipool/cmd/apipool/internal/config"
	"github.com/apipool-ng/apipool/cmd/apipool/internal/fakeapi"
	"github.com/apipool-ng/apipool/cmd/apipool/internal/proxy"
	"github.com/apipool-ng/apipool/recorder"
	"github.com/apipool-ng/apipool/status"
)

// routingEnv is a proxy with one upstream, openai, in front of the fake
// API, its key file holding "k0 secrets[0]", "k1 secrets[1]"...;
// settings (YAML indented for the upstream) are added to it.
func routingEnv(t *testing.T, settings string, secrets ...string) *env {
	t.Helper()
	return newEnv(t, envOpts{secrets: secrets, yaml: func(up, kf string) string {
		return fmt.Sprintf(`tokens: [{name: main, sha256: %s}]
upstreams:
  - name: openai
    prefix: /openai
    target: '%s'
    keys: {file: %s}
    max_wait: 0s
%s`, sha(token), up, kf, settings)
	}})
}

// chat posts a chat completion for model (stream: a streamed one, with
// extra JSON members) and returns the answer and its body.
func (e *env) chat(model string, stream bool, extra string, hdr ...string) (*http.Response, string) {
	e.t.Helper()
	body := fmt.Sprintf(`{"model":%q,"messages":[{"role":"user","content":"hi"}]`, model)
	if stream {
		body += `,"stream":true`
	}
	body += extra + "}"
	resp := e.do("POST", "/openai/v1/chat/completions", token, body, append([]string{"Content-Type", "application/json"}, hdr...)...)
	return resp, readAll(e.t, resp)
}

// lastKey is the pool key of the last request the fake API saw.
func (e *env) lastKey() string {
	e.t.Helper()
	reqs := e.api.Requests()
	if len(reqs) == 0 {
		e.t.Fatal("the fake API saw no request")
	}
	return strings.TrimPrefix(reqs[len(reqs)-1].Header.Get("Authorization"), "Bearer ")
}

// Kept returns the events recorded so far.
func (r *testRecorder) Kept() []recorder.Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.kept)
}

// waitEvents waits until the recorder holds n events, and returns them.
// The pool records an answer's event once its body was read to its end or
// closed: after the caller may have read the last byte.
func (e *env) waitEvents(n int) []recorder.Event {
	e.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for {
		if evs := e.rec.Kept(); len(evs) >= n {
			return evs
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("%d events recorded after 30s, want %d", len(e.rec.Kept()), n)
		}
		<-tick.C
	}
}

// TestProxyTiers: the tier-0 key takes every request while it is free;
// while it is not (disabled, or resting after a 429) the requests go to
// tier 1 at once, none fails, and the next request after it is free again
// is its own (issue 25 items 1 and 4).
func TestProxyTiers(t *testing.T) {
	e := routingEnv(t, "    key_tiers: {k0: 1, k1: 0, k2: 1}\n", secretA, secretB, secretNew)
	for range 6 {
		if resp, body := e.chat("fake-1", false, ""); resp.StatusCode != 200 {
			t.Fatalf("status %d: %s", resp.StatusCode, body)
		}
	}
	if s := e.api.Served(); s[secretB] != 6 {
		t.Fatalf("the tier-0 key served %d of 6 requests: %v", s[secretB], s)
	}
	pool := e.srv.Pool("openai")
	if err := pool.Disable("openai/k1", "test"); err != nil {
		t.Fatal(err)
	}
	for range 4 {
		if resp, body := e.chat("fake-1", false, ""); resp.StatusCode != 200 {
			t.Fatalf("with tier 0 disabled: status %d: %s", resp.StatusCode, body)
		}
		if k := e.lastKey(); k != secretA && k != secretNew {
			t.Fatalf("with tier 0 disabled, a request went to %q", k)
		}
	}
	if err := pool.Enable("openai/k1"); err != nil {
		t.Fatal(err)
	}
	if resp, _ := e.chat("fake-1", false, ""); resp.StatusCode != 200 || e.lastKey() != secretB {
		t.Errorf("after tier 0 came back: status %d, key %q, want the tier-0 key", resp.StatusCode, e.lastKey())
	}
	for _, k := range pool.Snapshot() {
		want := map[string]int{"openai/k0": 1, "openai/k1": 0, "openai/k2": 1}[k.KeyID]
		if k.Tier != want {
			t.Errorf("%s: tier %d, want %d", k.KeyID, k.Tier, want)
		}
	}

	// A tier-0 key that answers 429: the request moves to tier 1 and
	// succeeds; the key rests, and tier 1 takes the next requests.
	e2 := newEnv(t, envOpts{secrets: []string{secretA}, limited: []string{secretLim}, yaml: func(up, kf string) string {
		return fmt.Sprintf("tokens: [{name: main, sha256: %s}]\nupstreams:\n  - {name: openai, prefix: /openai, target: '%s', keys: {file: %s}, max_wait: 0s, key_tiers: {k0: 1, k1: 0}}\n", sha(token), up, kf)
	}})
	for i := range 3 {
		if resp, body := e2.chat("fake-1", false, ""); resp.StatusCode != 200 {
			t.Fatalf("request %d: status %d: %s", i, resp.StatusCode, body)
		}
	}
	if l, s := e2.api.Limited()[secretLim], e2.api.Served()[secretA]; l != 1 || s != 3 {
		t.Errorf("the limited tier-0 key was tried %d times (want 1), tier 1 served %d (want 3)", l, s)
	}
}

// TestProxyModelRouting: keys scoped to models take only their models'
// requests; a request for a model no key serves is answered 400
// unknown_model at once, without reaching the upstream; a request without
// a model takes any key (issue 25 items 2 and 4).
func TestProxyModelRouting(t *testing.T) {
	e := routingEnv(t, "    routing: {model: json, cooldown_scope: model}\n    key_models: {k0: [fake-1], k1: ['fake-2*']}\n", secretA, secretB)
	for _, c := range []struct{ model, key string }{
		{"fake-1", secretA}, {"fake-2-mini", secretB}, {"fake-1", secretA}, {"fake-2", secretB},
	} {
		resp, body := e.chat(c.model, false, "")
		if resp.StatusCode != 200 || e.lastKey() != c.key {
			t.Errorf("model %s: status %d, key %q; want 200 by %q (%s)", c.model, resp.StatusCode, e.lastKey(), c.key, body)
		}
	}
	seen := len(e.api.Requests())
	resp, body := e.chat("gpt-x", false, "")
	var v struct {
		Error struct{ Type, Message, Code string }
	}
	if err := json.Unmarshal([]byte(body), &v); err != nil {
		t.Fatalf("unknown model: %q: %v", body, err)
	}
	if resp.StatusCode != 400 || resp.Header.Get("X-Apipool-Error") != "unknown_model" || v.Error.Type != "unknown_model" ||
		v.Error.Message != `no key of upstream openai serves model "gpt-x"` || v.Error.Code != "apipool_proxy" {
		t.Errorf("unknown model: status %d, X-Apipool-Error %q, body %s", resp.StatusCode, resp.Header.Get("X-Apipool-Error"), body)
	}
	if n := len(e.api.Requests()); n != seen {
		t.Errorf("a request for an unknown model reached the upstream")
	}
	if !strings.Contains(e.logs.String(), `"msg":"refused: no key serves the request's model"`) {
		t.Errorf("the refusal is not logged as one")
	}
	// A long model name is cut.
	_, body = e.chat(strings.Repeat("m", 300), false, "")
	if !strings.Contains(body, `serves model \"`+strings.Repeat("m", 128)+`...\"`) {
		t.Errorf("a long model: %s", body)
	}
	// No model: any key.
	if resp := e.do("GET", "/openai/v1/models", token, ""); resp.StatusCode != 200 {
		t.Errorf("a request without a model: status %d", resp.StatusCode)
	}
	// The events carry the model.
	evs := e.waitEvents(5)
	if evs[0].Model != "fake-1" || evs[1].Model != "fake-2-mini" {
		t.Errorf("events' models %q, %q", evs[0].Model, evs[1].Model)
	}
}

// TestProxySessions: the requests of one session (a header, or a field of
// the JSON body) all go to one key, while the sessions spread over the
// keys (issue 25 items 3 and 4).
func TestProxySessions(t *testing.T) {
	for _, c := range []struct {
		name, settings string
		session        func(s string) (extra string, hdr []string)
	}{
		{"header", "    routing: {sessions: {header: X-Session-Id}, max_sessions: 100}\n", func(s string) (string, []string) {
			return "", []string{"X-Session-Id", s}
		}},
		{"json", "    routing:\n      sessions: {json: metadata.user_id}\n", func(s string) (string, []string) {
			return `,"metadata":{"user_id":"` + s + `"}`, nil
		}},
	} {
		t.Run(c.name, func(t *testing.T) {
			e := routingEnv(t, c.settings, secretA, secretB, secretNew)
			keyOf := map[string]map[string]int{}
			for i := range 16 {
				s := fmt.Sprintf("session-%d", i%4)
				extra, hdr := c.session(s)
				if resp, body := e.chat("fake-1", false, extra, hdr...); resp.StatusCode != 200 {
					t.Fatalf("status %d: %s", resp.StatusCode, body)
				}
				if keyOf[s] == nil {
					keyOf[s] = map[string]int{}
				}
				keyOf[s][e.lastKey()]++
			}
			used := map[string]bool{}
			for s, keys := range keyOf {
				if len(keys) != 1 {
					t.Errorf("%s went to %d keys: %v", s, len(keys), keys)
				}
				for k := range keys {
					used[k] = true
				}
			}
			if len(used) < 2 {
				t.Errorf("4 sessions took %d key: the sessions did not spread", len(used))
			}
		})
	}
}

// TestProxyUsage: the usage reader puts each answer's tokens and cost on
// its event, streamed answers included; include_usage asks a stream that
// did not ask for its usage, and the caller gets the stream it would have
// got without it, byte for byte; a caller that asks gets the usage chunk
// (issue 26 items 1-3, proxy side).
func TestProxyUsage(t *testing.T) {
	e := routingEnv(t, `    usage:
      reader: openai
      include_usage: true
      prices:
        fake-1: {input: 1, output: 2}
`, secretA)
	// The stream as the fake API sends it without include_usage.
	direct := func(extra string) string {
		r, _ := http.NewRequest("POST", e.upstream.URL+"/v1/chat/completions", strings.NewReader(`{"model":"fake-1","stream":true`+extra+`}`))
		r.Header.Set("Authorization", "Bearer "+secretA)
		resp, err := http.DefaultClient.Do(r)
		if err != nil {
			t.Fatal(err)
		}
		return readAll(t, resp)
	}
	plain := direct("")
	if strings.Contains(plain, "usage") || !strings.Contains(direct(`,"stream_options":{"include_usage":true}`), `"prompt_tokens":3`) {
		t.Fatal("the fake API does not stream its usage only when asked")
	}
	const cost = (fakeapi.PromptTokens*1 + fakeapi.CompletionTokens*2) / 1e6
	for i, c := range []struct {
		name          string
		stream        bool
		extra         string
		wantBody      func(string) bool
		tokens        bool
		wantUsageSeen bool
	}{
		{"completion", false, "", func(b string) bool { return strings.Contains(b, `"prompt_tokens":3`) }, true, true},
		{"stream, usage not asked for", true, "", func(b string) bool { return b == plain }, true, false},
		{"stream, usage asked for", true, `,"stream_options":{"include_usage":true}`, func(b string) bool {
			return strings.Contains(b, `"choices":[]`) && strings.Contains(b, `"prompt_tokens":3`) && strings.HasSuffix(b, "data: [DONE]\n\n")
		}, true, true},
		{"stream, usage refused", true, `,"stream_options":{"include_usage":false}`, func(b string) bool { return b == plain }, false, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			resp, body := e.chat("fake-1", c.stream, c.extra)
			if resp.StatusCode != 200 || !c.wantBody(body) {
				t.Errorf("status %d, body:\n%s", resp.StatusCode, body)
			}
			if got := strings.Contains(body, `"usage"`); got != c.wantUsageSeen {
				t.Errorf("the caller saw usage: %v, want %v", got, c.wantUsageSeen)
			}
			ev := e.waitEvents(i + 1)[i]
			if ev.Model != "" || ev.Client != "main" || ev.Status != status.Success {
				t.Errorf("event: model %q (no model source: none), client %q, status %v", ev.Model, ev.Client, ev.Status)
			}
			in, out, cst := int64(-1), int64(-1), -1.0
			if c.tokens {
				in, out = fakeapi.PromptTokens, fakeapi.CompletionTokens
			}
			if ev.InputTokens != in || ev.OutputTokens != out {
				t.Errorf("event's tokens %d in, %d out; want %d, %d", ev.InputTokens, ev.OutputTokens, in, out)
			}
			// No model source: the table prices nothing (-1, not 0).
			if ev.Cost != cst {
				t.Errorf("cost %v without a model, want -1", ev.Cost)
			}
		})
	}

	// With the model known (routing.model), the cost.
	e = routingEnv(t, "    routing: {model: json}\n    usage: {reader: auto, prices: {'fake-*': {input: 1, output: 2}}}\n", secretA)
	e.chat("fake-1", false, "")
	if ev := e.waitEvents(1)[0]; ev.Model != "fake-1" || ev.InputTokens != 3 || ev.Cost != cost {
		t.Errorf("priced event: model %q, %d input tokens, cost %v; want fake-1, 3, %v", ev.Model, ev.InputTokens, ev.Cost, cost)
	}
}

// TestProxyUsageCompressed: a caller that asks for gzip (as most HTTP
// clients do) still has its answer's tokens counted: for a token reader
// the proxy asks the upstream for gzip itself, through its transport,
// which decodes it before the reader sees it. (The caller gets answers
// decoded anyway: the proxy decodes them to check them for keys.)
func TestProxyUsageCompressed(t *testing.T) {
	var gotAE []string
	up := func(w http.ResponseWriter, r *http.Request) {
		gotAE = append(gotAE, r.Header.Get("Accept-Encoding"))
		body := `{"id":"x","object":"chat.completion","choices":[],"usage":{"prompt_tokens":7,"completion_tokens":11,"total_tokens":18}}`
		w.Header().Set("Content-Type", "application/json")
		if strings.Contains(r.Header.Get("Accept-Encoding"), "gzip") {
			w.Header().Set("Content-Encoding", "gzip")
			zw := gzip.NewWriter(w)
			zw.Write([]byte(body))
			zw.Close()
			return
		}
		io.WriteString(w, body)
	}
	for _, c := range []struct {
		name, reader string
		tokens       int64
	}{{"token reader", "openai", 7}, {"header reader", "'header:X-Units'", -1}} {
		t.Run(c.name, func(t *testing.T) {
			gotAE = nil
			e := echoEnvWith(t, up, "usage: {reader: "+c.reader+"}", secretA)
			resp, body := e.get("/openai/v1/chat/completions", "Accept-Encoding", "gzip")
			if resp.StatusCode != 200 || !strings.Contains(body, `"prompt_tokens":7`) {
				t.Fatalf("status %d: %q", resp.StatusCode, body)
			}
			ev := e.waitEvents(1)[0]
			if ev.InputTokens != c.tokens {
				t.Errorf("input tokens %d, want %d", ev.InputTokens, c.tokens)
			}
			// Compressed from the upstream either way; decoded for the
			// caller either way (the proxy checks answers for keys).
			if resp.Header.Get("Content-Encoding") != "" || len(gotAE) != 1 || !strings.Contains(gotAE[0], "gzip") {
				t.Errorf("Content-Encoding to the caller %q, Accept-Encoding upstream %q", resp.Header.Get("Content-Encoding"), gotAE)
			}
		})
	}
}

// echoEnvWith is echoEnv with settings (one line of YAML, a flow
// mapping's members) added to the upstream.
func echoEnvWith(t *testing.T, handler http.HandlerFunc, settings string, secrets ...string) *env {
	t.Helper()
	up := httptest.NewServer(handler)
	t.Cleanup(up.Close)
	return newEnv(t, envOpts{secrets: secrets, yaml: func(_, kf string) string {
		return fmt.Sprintf(`tokens: [{name: a, sha256: %s}]
upstreams:
  - {name: openai, prefix: /openai, target: '%s', keys: {file: %s}, max_wait: 0s, %s}
`, sha(token), up.URL, kf, settings)
	}})
}

// TestProxyRoutingReload: a reload applies the key file's tiers and
// models (the key file's options), keeps the state of the keys it does not
// change, and logs that a changed routing or usage section needs a
// restart.
func TestProxyRoutingReload(t *testing.T) {
	e := routingEnv(t, "    routing: {model: json}\n", secretA, secretB)
	pool := e.srv.Pool("openai")
	e.writeKeys("k0 " + secretA + " tier=1\nk1 " + secretB)
	if err := e.srv.Reload(); err != nil {
		t.Fatal(err)
	}
	for range 4 {
		e.chat("fake-1", false, "")
		if k := e.lastKey(); k != secretB {
			t.Fatalf("after k0 went to tier 1, a request took %q", k)
		}
	}
	if err := pool.Disable("openai/k1", "kept across the reload"); err != nil {
		t.Fatal(err)
	}
	e.writeKeys("k0 " + secretA + " models=fake-1\nk1 " + secretB + "\n")
	if err := e.srv.Reload(); err != nil {
		t.Fatal(err)
	}
	for _, k := range pool.Snapshot() {
		switch k.KeyID {
		case "openai/k0":
			if k.Tier != 0 || !slices.Equal(k.Models, []string{"fake-1"}) {
				t.Errorf("k0 after the reload: tier %d, models %q", k.Tier, k.Models)
			}
		case "openai/k1":
			if !k.Disabled {
				t.Error("k1, unchanged by the reload, lost its state (disabled)")
			}
		}
	}
	if resp, body := e.chat("fake-2", false, ""); resp.StatusCode != 503 {
		t.Errorf("fake-2 with k1 disabled and k0 serving fake-1 only: status %d: %s", resp.StatusCode, body)
	}
	// The routing and usage sections need a restart: said in the log.
	y, err := os.ReadFile(e.cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	y = bytes.Replace(y, []byte("routing: {model: json}"), []byte("routing: {model: json, sessions: {header: X-S}}\n    usage: {reader: openai}"), 1)
	if err := os.WriteFile(e.cfgPath, y, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := e.srv.Reload(); err != nil {
		t.Fatal(err)
	}
	for _, w := range []string{"reload: a changed routing section needs a restart", "reload: a changed usage section or prices file needs a restart"} {
		if !strings.Contains(e.logs.String(), w) {
			t.Errorf("the log does not say %q", w)
		}
	}

	// Models on the keys of a pool started without routing.model: the
	// pool refuses them; the reload fails, says so, and the keys stay.
	e = routingEnv(t, "", secretA, secretB)
	y, err = os.ReadFile(e.cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(e.cfgPath, append(y, "    routing: {model: json}\n"...), 0o600); err != nil {
		t.Fatal(err)
	}
	e.writeKeys("k0 " + secretA + " models=fake-1\nk1 " + secretB)
	if err := e.srv.Reload(); err == nil {
		t.Error("a reload giving models to the keys of a pool without a model source: no error")
	}
	if !strings.Contains(e.logs.String(), "reload: the pool refused the new keys") {
		t.Error("the refused keys are not logged")
	}
	for _, k := range e.srv.Pool("openai").Snapshot() {
		if k.Models != nil {
			t.Errorf("%s has models %q after a refused reload", k.KeyID, k.Models)
		}
	}
}

// TestAdminKeysRouting: the admin API's key listing shows each key's
// tier, its models (none: every model) and the models it rests for; a key
// added through it may be given a tier and models, checked as the key
// file's are (issue 25 item 1: "proxy key configuration and stats show
// the tier").
func TestAdminKeysRouting(t *testing.T) {
	settings := "    routing: {model: json, cooldown_scope: model}\n    key_tiers: {k1: 2}\n    key_models: {k0: [fake-1, 'fake-2*']}\n"
	e := newEnv(t, envOpts{secrets: []string{secretA, secretB, secretNew}, limited: []string{secretLim}, yaml: func(up, kf string) string {
		return fmt.Sprintf(`tokens: [{name: main, sha256: %s}]
upstreams:
  - name: openai
    prefix: /openai
    target: '%s'
    keys: {file: %s}
    max_wait: 0s
%s`, sha(token), up, kf, settings) + fmt.Sprintf(adminYAMLs, sha(adminPass))
	}})
	// k3 (the limited key) rests for fake-9 only, after its 429.
	e.writeKeys("k0 " + secretA + "\nk1 " + secretB + "\nk3 " + secretLim + " tier=0")
	if err := e.srv.Reload(); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		e.chat("fake-9", false, "")
	}
	type keyJSON struct {
		ID             string
		Tier           int
		Models         []string
		ModelCooldowns []struct {
			Model string
			Until time.Time
		} `json:"model_cooldowns"`
	}
	list := func() map[string]keyJSON {
		code, body := e.admin("GET", adminAPI+"/keys", "")
		var v struct{ Keys []keyJSON }
		if err := json.Unmarshal([]byte(body), &v); code != 200 || err != nil {
			t.Fatalf("list: %d %s %v", code, body, err)
		}
		out := map[string]keyJSON{}
		for _, k := range v.Keys {
			out[k.ID] = k
		}
		return out
	}
	keys := list()
	if k := keys["openai/k0"]; k.Tier != 0 || !slices.Equal(k.Models, []string{"fake-1", "fake-2*"}) {
		t.Errorf("k0: %+v", k)
	}
	if k := keys["openai/k1"]; k.Tier != 2 || k.Models != nil {
		t.Errorf("k1: %+v", k)
	}
	if k := keys["openai/k3"]; len(k.ModelCooldowns) != 1 || k.ModelCooldowns[0].Model != "fake-9" || k.ModelCooldowns[0].Until.IsZero() {
		t.Errorf("k3 after a 429 for fake-9: %+v", k)
	}
	code, body := e.admin("POST", adminAPI+"/keys", `{"id": "k9", "secret": "`+secretNew+`", "tier": 3, "models": ["fake-3"]}`)
	if code != 201 {
		t.Fatalf("add: %d %s", code, body)
	}
	if k := list()["openai/k9"]; k.Tier != 3 || !slices.Equal(k.Models, []string{"fake-3"}) {
		t.Errorf("k9 added: %+v", k)
	}
	for _, c := range []struct{ body, want string }{
		{`{"id": "k8", "secret": "sk-x-12345678", "tier": -1}`, "want a tier from 0"},
		{`{"id": "k8", "secret": "sk-x-12345678", "models": ["a*b"]}`, "models[0] has a '*' before its end"},
		{`{"id": "k8", "secret": "sk-x-12345678", "models": [""]}`, "models[0] is empty"},
		{`{"id": "k8", "secret": "sk-x-12345678", "weight": 2}`, "strategy is not weighted"},
		{`{"id": "k8", "secret": "sk-x-12345678", "weight": 1000001}`, "want a weight from 1 to 1000000"},
	} {
		if code, body := e.admin("POST", adminAPI+"/keys", c.body); code != 400 || !strings.Contains(body, c.want) {
			t.Errorf("%s: %d %s, want 400 %q", c.body, code, body, c.want)
		}
	}
}

// TestCheckRouting: check probes the keys of an upstream whose keys have
// tiers and models (the pool it builds has the upstream's model source).
func TestCheckRouting(t *testing.T) {
	e := routingEnv(t, "    probe: {path: /v1/models}\n    routing: {model: json}\n    key_models: {k0: [fake-1]}\n    key_tiers: {k1: 1}\n", secretA, secretB)
	cfg, err := config.Load(e.cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	res, err := proxy.Check(context.Background(), cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(res) != 2 || !res[0].Usable || !res[1].Usable {
		t.Errorf("check: %+v", res)
	}
}

// TestProxyWeights: key_weights give the weighted strategy its shares: a
// key weighted a million to one takes (all but, at odds of a millionth a
// request) every request.
func TestProxyWeights(t *testing.T) {
	e := routingEnv(t, "    strategy: weighted\n    key_weights: {k0: 1, k1: 1000000}\n", secretA, secretB)
	for range 20 {
		if resp, body := e.chat("fake-1", false, ""); resp.StatusCode != 200 {
			t.Fatalf("status %d: %s", resp.StatusCode, body)
		}
	}
	if s := e.api.Served(); s[secretB] < 19 {
		t.Fatalf("the key weighted 1000000 served %d of 20 requests: %v", s[secretB], s)
	}
	for _, k := range e.srv.Pool("openai").Snapshot() {
		if want := map[string]int{"openai/k0": 1, "openai/k1": 1_000_000}[k.KeyID]; k.Weight != want {
			t.Errorf("%s: weight %d, want %d", k.KeyID, k.Weight, want)
		}
	}
}
