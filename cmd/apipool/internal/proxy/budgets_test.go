package proxy_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/apipool-ng/apipool"
	"github.com/apipool-ng/apipool/usage"
)

// readUsage is the pools' usage reader for these tests (the file's
// upstreams say nothing of usage here).
func readUsage(string) []apipool.Option {
	return []apipool.Option{apipool.WithUsage(usage.OpenAI(), nil)}
}

const chat = `{"model":"fake-1","messages":[{"role":"user","content":"hi"}]}` // the fake API's answer: 8 tokens

// A token past its budget gets 429 at once from the proxy: Retry-After
// until the period's end, and a JSON body that names the budget, its limit,
// what was spent and until when; nothing reaches the upstream. Another
// token goes on. The secrets and tokens reach no log (newEnv checks).
func TestClientBudget429(t *testing.T) {
	e := newEnv(t, envOpts{extra: "    budgets: {tokens_per_day: 20}\n", pool: readUsage})
	for i := range 3 { // 8, 16, 24 tokens
		resp := e.do("POST", "/openai/v1/chat/completions", token, chat)
		if body := readAll(t, resp); resp.StatusCode != 200 {
			t.Fatalf("request %d: %d %s", i, resp.StatusCode, body)
		}
	}
	before := len(e.api.Requests())
	resp := e.do("POST", "/openai/v1/chat/completions", token, chat)
	body := readAll(t, resp)
	if resp.StatusCode != http.StatusTooManyRequests {
		t.Fatalf("past the budget: %d %s, want 429", resp.StatusCode, body)
	}
	now := time.Now().UTC()
	midnight := now.Truncate(24 * time.Hour).Add(24 * time.Hour)
	ra, err := strconv.Atoi(resp.Header.Get("Retry-After"))
	if left := midnight.Sub(now).Seconds(); err != nil || float64(ra) < left-5 || float64(ra) > left+5 {
		t.Errorf("Retry-After %q, want the seconds to the day's end (%.0f)", resp.Header.Get("Retry-After"), left)
	}
	var v struct {
		Error struct {
			Message, Type, Code, Budget, Until string
			Limit, Used                        float64
		}
	}
	if err := json.Unmarshal([]byte(body), &v); err != nil {
		t.Fatalf("body %q: %v", body, err)
	}
	if v.Error.Type != "budget_exceeded" || v.Error.Code != "apipool_proxy" || v.Error.Budget != "tokens_per_day" ||
		v.Error.Limit != 20 || v.Error.Used != 24 || v.Error.Until != midnight.Format(time.RFC3339) ||
		!strings.Contains(v.Error.Message, "tokens_per_day") || !strings.Contains(v.Error.Message, midnight.Format(time.RFC3339)) {
		t.Errorf("body %s", body)
	}
	if resp.Header.Get("X-Apipool-Error") != "budget_exceeded" || resp.Header.Get("X-Request-Id") == "" {
		t.Errorf("headers %v", resp.Header)
	}
	if n := len(e.api.Requests()); n != before {
		t.Errorf("the refused request reached the upstream (%d requests, %d before)", n, before)
	}
	// The other token has no budget.
	resp = e.do("POST", "/other/v1/chat/completions", token2, chat, "Host", "other.test")
	if b := readAll(t, resp); resp.StatusCode != 200 {
		t.Fatalf("the other token: %d %s", resp.StatusCode, b)
	}
	if !strings.Contains(e.logs.String(), `"reason":"budget"`) {
		t.Errorf("the refusal is not logged:\n%s", e.logs.String())
	}
	// A reload that raises the budget lets the token in at once; what it
	// spent stays counted.
	y, _ := os.ReadFile(e.cfgPath)
	if err := os.WriteFile(e.cfgPath, []byte(strings.Replace(string(y), "tokens_per_day: 20}", "tokens_per_day: 30}", 1)), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := e.srv.Reload(); err != nil {
		t.Fatal(err)
	}
	resp = e.do("POST", "/openai/v1/chat/completions", token, chat) // 32 of 30
	if b := readAll(t, resp); resp.StatusCode != 200 {
		t.Fatalf("after the raise: %d %s", resp.StatusCode, b)
	}
	resp = e.do("POST", "/openai/v1/chat/completions", token, chat)
	if b := readAll(t, resp); resp.StatusCode != 429 || !strings.Contains(b, `"used":32`) {
		t.Fatalf("past the raised budget: %d %s", resp.StatusCode, b)
	}
}

// key_budgets: every key of the upstream stops at its budget, the pool
// moves on to the next key, and once every key is used up the caller gets
// the proxy's 503 with Retry-After until the period's end.
func TestKeyBudgetsThroughProxy(t *testing.T) {
	e := newEnv(t, envOpts{yaml: func(url, keyFile string) string {
		y := fmt.Sprintf(baseYAML, sha(token), "", sha(token2), url, keyFile, url)
		return strings.Replace(y, "    max_wait: 0s\n", "    max_wait: 0s\n    key_budgets: {tokens_per_day: 16}\n    usage: {reader: openai}\n", 1)
	}})
	for i := range 4 { // 2 keys × 2 requests of 8 tokens
		resp := e.do("POST", "/openai/v1/chat/completions", token, chat)
		if body := readAll(t, resp); resp.StatusCode != 200 {
			t.Fatalf("request %d: %d %s", i, resp.StatusCode, body)
		}
	}
	if a, b := e.api.Served()[secretA], e.api.Served()[secretB]; a != 2 || b != 2 {
		t.Fatalf("requests per key %d and %d, want 2 each (16 tokens)", a, b)
	}
	resp := e.do("POST", "/openai/v1/chat/completions", token, chat)
	body := readAll(t, resp)
	if resp.StatusCode != http.StatusServiceUnavailable || !strings.Contains(body, "no_key_available") || resp.Header.Get("Retry-After") == "" {
		t.Fatalf("every key used up: %d %v %s", resp.StatusCode, resp.Header, body)
	}
	for _, s := range e.srv.Pool("openai").Snapshot() {
		if s.Reason != "token budget per day used up" || len(s.Budgets) != 1 || s.Budgets[0].Used != 16 {
			t.Errorf("key %s: hold %q, budgets %+v", s.KeyID, s.Reason, s.Budgets)
		}
	}
}
