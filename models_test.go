package apipool_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/apipool-ng/apipool"
	"github.com/apipool-ng/apipool/status"
)

// postJSON sends body as a POST through the pool. With getBody the
// request has GetBody (as http.NewRequest makes it for a strings.Reader);
// without, its body is a plain reader, which the pool buffers.
func postJSON(t testing.TB, p http.RoundTripper, url, body string, getBody bool, header ...string) (*http.Response, string, error) {
	t.Helper()
	var rd io.Reader = strings.NewReader(body)
	if !getBody {
		rd = io.NopCloser(rd)
	}
	req, err := http.NewRequestWithContext(context.Background(), http.MethodPost, url, rd)
	if err != nil {
		t.Fatal(err)
	}
	if !getBody {
		req.ContentLength = int64(len(body))
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := p.RoundTrip(req)
	if err != nil {
		return nil, "", err
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	return resp, string(b), nil
}

func modelBody(m string) string {
	return `{"messages":[{"role":"user","content":"hi"}],"model":"` + m + `","stream":false}`
}

// Keys serve the models they list; a request whose model no key serves
// fails at once, before any wait or upstream call, with an error that
// names the model; a request whose model is not known may take any key.
func TestModelsRestrictKeys(t *testing.T) {
	up := newUpstream(nil)
	rec := &captureRecorder{}
	ks := []apipool.Key{
		{ID: "gpt", Secret: "s-gpt", Models: []string{"gpt-4o*"}},
		{ID: "claude", Secret: "s-claude", Models: []string{"claude-*", "x-exact"}},
		{ID: "both", Secret: "s-both", Models: []string{"gpt-4o-mini", "claude-3-haiku"}},
	}
	p := mustNew(t, ks, apipool.WithBase(up), apipool.WithRecorder(rec), apipool.WithModel(apipool.ModelFromJSON), apipool.WithMaxWait(time.Hour))
	for _, getBody := range []bool{false, true} {
		for model, allowed := range map[string]map[string]bool{
			"gpt-4o":         {"s-gpt": true},
			"gpt-4o-mini":    {"s-gpt": true, "s-both": true},
			"claude-3-opus":  {"s-claude": true},
			"claude-3-haiku": {"s-claude": true, "s-both": true},
			"x-exact":        {"s-claude": true},
		} {
			up.Reset()
			for range 6 {
				if _, _, err := postJSON(t, p, "http://api.test/v1/chat", modelBody(model), getBody); err != nil {
					t.Fatalf("%s: %v", model, err)
				}
			}
			for _, s := range up.Secrets() {
				if !allowed[s] {
					t.Errorf("model %s (GetBody %v) went to %s", model, getBody, s)
				}
			}
			if len(allowed) == 2 && (up.Count("s-both") == 0 || up.Count("s-both") == 6) {
				t.Errorf("model %s: both keys serving it should share it: %v", model, up.Secrets())
			}
		}
	}
	// No model known: any key.
	up.Reset()
	for range 3 {
		mustDo(t, p)
	}
	if len(up.Calls()) != 3 || up.Count("s-gpt") != 1 {
		t.Errorf("requests without a model: %v, want each key in turn", up.Secrets())
	}
	// A model no key serves: at once, nothing sent, nothing waited.
	up.Reset()
	_, _, err := postJSON(t, p, "http://api.test/v1/chat", modelBody("llama-3"), false)
	var nm *apipool.NoModelError
	if !errors.As(err, &nm) || !errors.Is(err, apipool.ErrNoKeyForModel) || nm.Model != "llama-3" || nm.Keys != 3 {
		t.Fatalf("err = %v, want a *NoModelError for llama-3", err)
	}
	if errors.Is(err, apipool.ErrNoKeyAvailable) {
		t.Error("a model no key serves matches ErrNoKeyAvailable: callers would wait and retry for nothing")
	}
	if !strings.Contains(err.Error(), `"llama-3"`) {
		t.Errorf("error %q does not name the model", err)
	}
	if len(up.Calls()) != 0 || p.Waits() != 0 {
		t.Errorf("%d calls, %d waits for a model no key serves", len(up.Calls()), p.Waits())
	}
	ev := rec.Events()
	last := ev[len(ev)-1]
	if last.Model != "llama-3" || last.Status != status.NoKeyAvailable || last.ErrorType != "no_key_for_model" || last.KeyID != "" {
		t.Errorf("event %+v, want the model, no key available, no_key_for_model", last)
	}
	for _, e := range ev[:len(ev)-4] {
		if e.Model == "" || !strings.HasPrefix(e.Model, "gpt") && !strings.HasPrefix(e.Model, "claude") && e.Model != "x-exact" {
			t.Fatalf("event %+v has no model", e)
		}
	}
}

// A body larger than the replay buffer is streamed and not parsed: its
// model is not known, so any key may take it.
func TestModelOfLargeBodyNotKnown(t *testing.T) {
	up := newUpstream(nil)
	rec := &captureRecorder{}
	ks := []apipool.Key{{ID: "a", Secret: "s-a", Models: []string{"a"}}, {ID: "b", Secret: "s-b", Models: []string{"b"}}}
	p := mustNew(t, ks, apipool.WithBase(up), apipool.WithRecorder(rec), apipool.WithModel(apipool.ModelFromJSON), apipool.WithMaxBufferedBody(32))
	body := modelBody("zzz") // no key serves zzz, but the body is 70 bytes
	if _, _, err := postJSON(t, p, "http://api.test/v1/chat", body, false); err != nil {
		t.Fatalf("a body too large to parse failed: %v", err)
	}
	if got := up.Calls()[0].Body; got != body {
		t.Errorf("upstream got %q", got)
	}
	if m := rec.Events()[0].Model; m != "" {
		t.Errorf("event model %q, want none", m)
	}
	// Within the buffer, even with WithMaxAttempts(1), the model is read.
	p2 := mustNew(t, ks, apipool.WithBase(up), apipool.WithRecorder(nil), apipool.WithModel(apipool.ModelFromJSON), apipool.WithMaxAttempts(1))
	if _, _, err := postJSON(t, p2, "http://api.test/v1/chat", body, false); !errors.Is(err, apipool.ErrNoKeyForModel) {
		t.Errorf("err = %v, want no key for the model", err)
	}
}

func TestModelFromPath(t *testing.T) {
	for path, want := range map[string]string{
		"/v1beta/models/gemini-2.0-flash:generateContent":                             "gemini-2.0-flash",
		"/v1beta/models/gemini-1.5-pro:streamGenerateContent":                         "gemini-1.5-pro",
		"/v1/projects/p/locations/us/publishers/google/models/gemini-1.5-pro:predict": "gemini-1.5-pro",
		"/v1beta/models/text-embedding-004":                                           "text-embedding-004",
		"/v1beta/models/embedding-001/operations":                                     "embedding-001",
		"/v1beta/files":        "",
		"/v1/chat/completions": "",
	} {
		req := newGet(t, "https://generativelanguage.googleapis.com"+path)
		if got := apipool.ModelFromPath(req, nil); got != want {
			t.Errorf("ModelFromPath(%s) = %q, want %q", path, got, want)
		}
	}
}

func TestResourceFromGitHubPath(t *testing.T) {
	for path, want := range map[string]string{
		"/repos/o/r/issues":        "core",
		"/search/issues":           "search",
		"/search/code":             "code_search",
		"/search/commits":          "search",
		"/graphql":                 "graphql",
		"/api/v3/search/code":      "code_search",
		"/api/v3/repos/o/r":        "core",
		"/api/graphql":             "graphql",
		"/":                        "core",
		"/searchers/not-a-search/": "core",
	} {
		req := newGet(t, "https://api.github.com"+path)
		if got := apipool.ResourceFromGitHubPath(req, nil); got != want {
			t.Errorf("ResourceFromGitHubPath(%s) = %q, want %q", path, got, want)
		}
	}
}

// The measure: keys serving different models under a mixed load
// where one model is rate limited. Model "a" is allowed 2 requests per
// key and second by the upstream (429 and Retry-After: 1 beyond), model
// "b" is not limited. Each second, 20 requests of each arrive, mixed.
// With ScopeKey, a's rate limits rest whole keys, and b's requests lose
// the keys it shares with a; with ScopeModel, b's throughput on the
// shared keys is what it is when a is not limited at all. The three
// pools run in the same test, with the same arrivals.
func TestCooldownScopeModelKeepsOtherModels(t *testing.T) {
	ks := []apipool.Key{
		{ID: "a-only", Secret: "s-a", Models: []string{"a"}},
		{ID: "b-only", Secret: "s-b", Models: []string{"b"}},
		{ID: "shared-1", Secret: "s-1"},
		{ID: "shared-2", Secret: "s-2"},
	}
	type result struct{ bOK, bShared, aOK, bFailed int }
	run := func(scope apipool.CooldownScope, limitA bool) result {
		clk := newClock()
		used := map[string]int{} // requests of a per key in the current second
		second := int64(-1)
		up := newUpstream(func(s seen) reply {
			if sec := clk.Now().Unix(); sec != second {
				second, used = sec, map[string]int{}
			}
			if limitA && strings.Contains(s.Body, `"model":"a"`) {
				used[s.Secret]++
				if used[s.Secret] > 2 {
					return reply{Status: 429, Header: hdr("Retry-After", "1")}
				}
			}
			return reply{Status: 200}
		})
		p := mustNew(t, ks, apipool.WithBase(up), apipool.WithClock(clk), apipool.WithRecorder(nil), apipool.WithMaxWait(0),
			apipool.WithModel(apipool.ModelFromJSON), apipool.WithCooldownScope(scope))
		var r result
		for w := range 10 {
			for j := range 40 {
				clk.Set(t0.Add(time.Duration(w)*time.Second + time.Duration(j)*time.Second/40))
				m := "ab"[j%2 : j%2+1]
				before := len(up.Calls())
				resp, _, err := postJSON(t, p, "http://api.test/v1/chat", modelBody(m), false)
				ok := err == nil && resp.StatusCode == 200
				switch {
				case m == "a" && ok:
					r.aOK++
				case m == "b" && ok:
					r.bOK++
					if c := up.Calls(); len(c) > before && c[len(c)-1].Secret != "s-b" {
						r.bShared++
					}
				case m == "b":
					r.bFailed++
				}
			}
		}
		return r
	}
	base := run(apipool.ScopeModel, false)
	perModel := run(apipool.ScopeModel, true)
	perKey := run(apipool.ScopeKey, true)
	t.Logf("b's successes (on the shared keys), a's successes, of 200 each: a not limited %d (%d), %d; ScopeModel %d (%d), %d; ScopeKey %d (%d), %d",
		base.bOK, base.bShared, base.aOK, perModel.bOK, perModel.bShared, perModel.aOK, perKey.bOK, perKey.bShared, perKey.aOK)
	if base.bOK != 200 || perModel.bOK != 200 || perModel.bFailed != 0 {
		t.Errorf("b's successes: %d without a's limit, %d with ScopeModel; want all 200", base.bOK, perModel.bOK)
	}
	if perModel.bShared*100 < base.bShared*95 {
		t.Errorf("ScopeModel: b's throughput on the shared keys dropped to %d from %d", perModel.bShared, base.bShared)
	}
	if perKey.bShared*100 > base.bShared*70 {
		t.Errorf("ScopeKey: b's throughput on the shared keys %d did not drop from %d: the comparison shows nothing", perKey.bShared, base.bShared)
	}
	if perModel.aOK < 10*6/2 {
		t.Errorf("ScopeModel: a served %d, want at least half its quota of 6 a second (its rests run into the next second)", perModel.aOK)
	}
}

// GitHub's x-ratelimit-resource: with ScopeModel and
// ResourceFromGitHubPath, a used-up search quota rests the token for
// searches only; the core API goes on with it. Snapshot shows the rest.
func TestCooldownScopeGitHubResource(t *testing.T) {
	for _, scope := range []apipool.CooldownScope{apipool.ScopeModel, apipool.ScopeKey} {
		t.Run(scope.String(), func(t *testing.T) {
			clk := newClock()
			reset := strconv.FormatInt(t0.Add(time.Hour).Unix(), 10)
			up := newUpstream(func(s seen) reply {
				if strings.Contains(s.URL, "/search/code") {
					return reply{Status: 200, Header: hdr("X-Ratelimit-Limit", "10", "X-Ratelimit-Remaining", "9", "X-Ratelimit-Reset", reset, "X-Ratelimit-Resource", "code_search")}
				}
				if strings.Contains(s.URL, "/search/") {
					return reply{Status: 403, Header: hdr("X-Ratelimit-Limit", "30", "X-Ratelimit-Remaining", "0", "X-Ratelimit-Reset", reset, "X-Ratelimit-Resource", "search")}
				}
				return reply{Status: 200, Header: hdr("X-Ratelimit-Limit", "5000", "X-Ratelimit-Remaining", "4000", "X-Ratelimit-Reset", reset, "X-Ratelimit-Resource", "core")}
			})
			p := mustNew(t, []apipool.Key{{ID: "tok", Secret: "s-tok"}}, apipool.WithBase(up), apipool.WithClock(clk), apipool.WithRecorder(nil),
				apipool.WithMaxWait(0), apipool.WithModel(apipool.ResourceFromGitHubPath), apipool.WithCooldownScope(scope))
			resp, err := p.RoundTrip(newGet(t, "https://api.github.com/search/issues?q=x"))
			if err != nil || resp.StatusCode != 403 {
				t.Fatalf("search: %v %v", resp, err)
			}
			resp.Body.Close()
			clk.Advance(time.Minute)
			resp, err = p.RoundTrip(newGet(t, "https://api.github.com/repos/o/r"))
			if scope == apipool.ScopeKey {
				noKey(t, err) // the whole token rests
				return
			}
			if err != nil || resp.StatusCode != 200 {
				t.Fatalf("core after the search limit: %v, %v", resp, err)
			}
			resp.Body.Close()
			resp, err = p.RoundTrip(newGet(t, "https://api.github.com/search/code?q=y"))
			if err != nil || resp.StatusCode != 200 {
				t.Fatalf("code_search is a resource of its own: %v, %v", resp, err)
			}
			resp.Body.Close()
			_, err = p.RoundTrip(newGet(t, "https://api.github.com/search/commits?q=y"))
			nk := noKey(t, err)
			if len(nk.Held) != 1 || nk.Held[0].Reason != "cooling down for the model" || !nk.Held[0].Until.Equal(t0.Add(time.Hour)) || nk.Cooling != 1 {
				t.Errorf("NoKeyError %+v", nk)
			}
			s := p.Snapshot()[0]
			if s.Reason != "" || len(s.ModelCooldowns) != 1 || s.ModelCooldowns[0].Model != "search" || !s.ModelCooldowns[0].Until.Equal(t0.Add(time.Hour)) {
				t.Errorf("snapshot %+v, want the key free and search resting", s)
			}
			if n := len(up.Calls()); n != 3 {
				t.Errorf("%d calls upstream, want 3 (no search sent while it rests)", n)
			}
		})
	}
}

// A model's budget used up (a 200 that says remaining 0) rests that model
// only, until the reset, with ScopeModel.
func TestCooldownScopeModelBudget(t *testing.T) {
	clk := newClock()
	up := newUpstream(func(s seen) reply {
		if strings.Contains(s.Body, `"model":"a"`) {
			return reply{Status: 200, Header: hdr("X-Ratelimit-Limit-Requests", "10", "X-Ratelimit-Remaining-Requests", "0", "X-Ratelimit-Reset-Requests", "20s")}
		}
		return reply{Status: 200}
	})
	p := mustNew(t, []apipool.Key{{ID: "k", Secret: "s-k"}}, apipool.WithBase(up), apipool.WithClock(clk), apipool.WithRecorder(nil),
		apipool.WithMaxWait(0), apipool.WithModel(apipool.ModelFromJSON), apipool.WithCooldownScope(apipool.ScopeModel))
	if _, _, err := postJSON(t, p, "http://api.test/v1/chat", modelBody("a"), true); err != nil {
		t.Fatal(err)
	}
	if _, _, err := postJSON(t, p, "http://api.test/v1/chat", modelBody("b"), true); err != nil {
		t.Fatalf("model b after a's budget ran out: %v", err)
	}
	_, _, err := postJSON(t, p, "http://api.test/v1/chat", modelBody("a"), true)
	noKey(t, err)
	if s := p.Snapshot()[0]; s.ProviderRemaining != -1 {
		t.Errorf("the key's own budget took a model's headers: remaining %d", s.ProviderRemaining)
	}
	clk.Advance(21 * time.Second)
	if _, _, err := postJSON(t, p, "http://api.test/v1/chat", modelBody("a"), true); err != nil {
		t.Fatalf("model a after its reset: %v", err)
	}
}

// Models and scopes are checked: Key.Models and ScopeModel need
// WithModel, patterns are exact names or prefixes ending in '*'.
func TestModelConfig(t *testing.T) {
	withModel := apipool.WithModel(apipool.ModelFromJSON)
	for _, c := range []struct {
		name  string
		keys  []apipool.Key
		opts  []apipool.Option
		field string
	}{
		{"models without WithModel", []apipool.Key{{ID: "a", Secret: "s", Models: []string{"x"}}}, nil, "keys[0].Models"},
		{"empty model", []apipool.Key{{ID: "a", Secret: "s", Models: []string{"x", ""}}}, []apipool.Option{withModel}, "keys[0].Models[1]"},
		{"star inside", []apipool.Key{{ID: "a", Secret: "s", Models: []string{"gpt-*-mini"}}}, []apipool.Option{withModel}, "keys[0].Models[0]"},
		{"white space", []apipool.Key{{ID: "a", Secret: "s", Models: []string{"gpt-4o "}}}, []apipool.Option{withModel}, "keys[0].Models[0]"},
		{"control character", []apipool.Key{{ID: "a", Secret: "s", Models: []string{"gpt\x00"}}}, []apipool.Option{withModel}, "keys[0].Models[0]"},
		{"ScopeModel without WithModel", keys(1), []apipool.Option{apipool.WithCooldownScope(apipool.ScopeModel)}, "WithCooldownScope"},
		{"unknown scope", keys(1), []apipool.Option{apipool.WithCooldownScope(7)}, "WithCooldownScope"},
		{"nil model function", keys(1), []apipool.Option{apipool.WithModel(nil)}, "WithModel"},
		{"nil session source", keys(1), []apipool.Option{apipool.WithSessions(nil, 0)}, "WithSessions"},
		{"negative sessions", keys(1), []apipool.Option{apipool.WithSessions(apipool.SessionFromHeader("X-S"), -1)}, "WithSessions"},
		{"too many sessions", keys(1), []apipool.Option{apipool.WithSessions(apipool.SessionFromHeader("X-S"), apipool.MaxSessionsLimit+1)}, "WithSessions"},
	} {
		_, err := apipool.New(c.keys, c.opts...)
		var ce *apipool.ConfigError
		if !errors.As(err, &ce) || ce.Field != c.field || !errors.Is(err, apipool.ErrInvalidConfig) {
			t.Errorf("%s: err = %v, want a ConfigError on %s", c.name, err, c.field)
		}
	}
	p := mustNew(t, keys(1), apipool.WithBase(newUpstream(nil)), withModel)
	models := []string{"gpt-4o", "o1-*"}
	if err := p.AddKey(apipool.Key{ID: "m", Secret: "s-m", Models: models, Tier: 2}); err != nil {
		t.Fatal(err)
	}
	models[0] = "changed" // the pool keeps its own copy
	s := p.Snapshot()[1]
	if s.Tier != 2 || len(s.Models) != 2 || s.Models[0] != "gpt-4o" {
		t.Errorf("snapshot %+v", s)
	}
	if err := p.AddKey(apipool.Key{ID: "bad", Secret: "s-bad", Models: []string{"*x"}}); err == nil {
		t.Error("AddKey took a bad pattern")
	}
	b, _ := (apipool.Key{ID: "m", Secret: "s-m", Tier: 1, Models: []string{"a"}}).MarshalJSON()
	if !bytes.Contains(b, []byte(`"tier":1`)) || !bytes.Contains(b, []byte(`"models":["a"]`)) || bytes.Contains(b, []byte("s-m")) {
		t.Errorf("Key JSON %s", b)
	}
}

// Nothing the routing shows holds a secret: the log of a model's rest,
// the NoModelError, the events, the snapshot with its model cooldowns.
func TestCanaryAbsentFromRouting(t *testing.T) {
	var logs syncBuffer
	logger := slog.New(slog.NewJSONHandler(&logs, nil))
	rec := &captureRecorder{}
	up := newUpstream(func(s seen) reply {
		if strings.Contains(s.Body, `"model":"limited"`) {
			return reply{Status: 429, Header: hdr("Retry-After", "10")}
		}
		return reply{Status: 200}
	})
	ks := []apipool.Key{{ID: "k0", Secret: canary, Tier: 1, Models: []string{"limited", "ok"}}, {ID: "k1", Secret: canary + "1", Models: []string{"ok"}}}
	p := mustNew(t, ks, apipool.WithBase(up), apipool.WithClock(newClock()), apipool.WithLogger(logger), apipool.WithRecorder(rec), apipool.WithMaxWait(0),
		apipool.WithModel(apipool.ModelFromJSON), apipool.WithCooldownScope(apipool.ScopeModel), apipool.WithSessions(apipool.SessionFromJSON("user"), 0))
	p.Disable("k1", "")
	for _, m := range []string{"limited", "ok", "nobody"} {
		_, _, err := postJSON(t, p, "http://api.test/v1/chat", `{"model":"`+m+`","user":"u"}`, false)
		if m == "nobody" {
			if !errors.Is(err, apipool.ErrNoKeyForModel) {
				t.Fatalf("err = %v", err)
			}
			assertErrNoCanary(t, "NoModelError", err)
		}
	}
	if !strings.Contains(logs.String(), "resting for it") || len(snapshotByID(p)["k0"].ModelCooldowns) != 1 {
		t.Fatalf("no model rest logged or shown: the test checks nothing\n%s", logs.String())
	}
	assertNoCanary(t, "logs", logs.String())
	assertNoCanary(t, "events", fmt.Sprintf("%+v %#v", rec.Events(), rec.Events()))
	snap := p.Snapshot()
	assertNoCanary(t, "snapshot", fmt.Sprintf("%v %+v %#v", snap, snap, snap))
	b, _ := json.Marshal(snap)
	assertNoCanary(t, "snapshot JSON", string(b))
}
