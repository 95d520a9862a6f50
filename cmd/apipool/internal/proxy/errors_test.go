package proxy_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"testing"
)

// proxyErr is what tells the proxy's own answer: X-Apipool-Error, and
// the JSON error's type and code.
type proxyErr struct {
	header, typ, code string
}

func answerOf(t *testing.T, resp *http.Response, body string) proxyErr {
	t.Helper()
	var v struct {
		Error struct{ Type, Code string }
	}
	json.Unmarshal([]byte(body), &v)
	return proxyErr{resp.Header.Get("X-Apipool-Error"), v.Error.Type, v.Error.Code}
}

// TestProxyAnswersRecognisable: each answer the proxy makes itself
// carries X-Apipool-Error with its JSON error's type, and code
// apipool_proxy; an upstream's answer passed on carries neither, even when
// the upstream sends the header itself (issue 27, item 9).
func TestProxyAnswersRecognisable(t *testing.T) {
	e := newEnv(t, envOpts{extra: "    rate: 1\n    burst: 1\n"})
	for _, c := range []struct {
		name, path, tok string
		hdr             []string
		status          int
		typ             string
	}{
		{"no token", "/openai/v1/models", "", nil, 401, "unauthorized"},
		{"wrong token", "/openai/v1/models", "not-the-token-" + canary, nil, 401, "unauthorized"},
		{"no route", "/nowhere", token, nil, 404, "not_found"},
		{"token not allowed here", "/openai/v1/models", token2, nil, 403, "forbidden"},
		{"dot segments", "/openai/%2e%2e/x", token, nil, 400, "invalid_request"},
		{"first request of the token", "/openai/v1/models", token, nil, 200, ""},
		{"token over its rate", "/openai/v1/models", token, nil, 429, "rate_limited"},
	} {
		resp := e.do("GET", c.path, c.tok, "", c.hdr...)
		body := readAll(t, resp)
		got := answerOf(t, resp, body)
		want := proxyErr{c.typ, c.typ, "apipool_proxy"}
		if c.typ == "" {
			want = proxyErr{}
		}
		if resp.StatusCode != c.status || got != want {
			t.Errorf("%s: status %d, %+v; want %d, %+v", c.name, resp.StatusCode, got, c.status, want)
		}
	}
}

// TestUpstreamAnswersPassedAsTheyAre: what a caller sees when the pool's
// keys fail. Every key refused (401): the upstream's own 401, request
// after request (a second key refusing the same request puts the first
// back: the request is at fault). Every key limited (429): the upstream's
// own 429 on the first request that meets them all, then, while they cool
// down, the proxy's 503 no_key_available with Retry-After. An upstream's
// answer carries no X-Apipool-Error, even when the upstream sends one.
func TestUpstreamAnswersPassedAsTheyAre(t *testing.T) {
	for _, c := range []struct {
		name     string
		status   int
		fromPool bool // the second answer is the proxy's 503
	}{{"every key refused", 401, false}, {"every key limited", 429, true}} {
		t.Run(c.name, func(t *testing.T) {
			e := echoEnv(t, func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Retry-After", "60")
				w.Header().Set("X-Apipool-Error", "spoofed")
				w.Header().Set("Content-Type", "application/json")
				w.WriteHeader(c.status)
				fmt.Fprintf(w, `{"error":{"message":"upstream says %d","type":"upstream_type","code":"upstream_code"}}`, c.status)
			}, scrubA, scrubB)
			upstreams := proxyErr{"", "upstream_type", "upstream_code"}
			resp, body := e.get("/openai/v1/models")
			if got := answerOf(t, resp, body); resp.StatusCode != c.status || got != upstreams {
				t.Errorf("first request: status %d, %+v; want the upstream's %d, %+v", resp.StatusCode, got, c.status, upstreams)
			}
			resp, body = e.get("/openai/v1/models")
			got := answerOf(t, resp, body)
			switch {
			case !c.fromPool && (resp.StatusCode != c.status || got != upstreams):
				t.Errorf("next request: status %d, %+v; want the upstream's %d again", resp.StatusCode, got, c.status)
			case c.fromPool && (resp.StatusCode != 503 || got != proxyErr{"no_key_available", "no_key_available", "apipool_proxy"}):
				t.Errorf("next request: status %d, %+v; want the proxy's 503 no_key_available", resp.StatusCode, got)
			case c.fromPool && resp.Header.Get("Retry-After") == "":
				t.Error("503 without Retry-After while the keys cool down")
			}
		})
	}
}
