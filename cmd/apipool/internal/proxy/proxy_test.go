package proxy_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/apipool-ng/apipool/cmd/apipool/internal/fakeapi"
)

func TestAuth(t *testing.T) {
	e := newEnv(t, envOpts{})
	cases := []struct {
		name string
		hdr  []string
		path string
		want int
	}{
		{"missing", nil, "/openai/v1/models", 401},
		{"wrong", []string{"Authorization", "Bearer not-the-token-at-all-xx"}, "/openai/v1/models", 401},
		{"other scheme", []string{"Authorization", "Basic " + token}, "/openai/v1/models", 401},
		{"right", []string{"Authorization", "Bearer " + token}, "/openai/v1/models", 200},
		{"right, lower-case scheme", []string{"Authorization", "bearer " + token}, "/openai/v1/models", 200},
		{"x-api-key", []string{"X-Api-Key", token}, "/openai/v1/models", 200},
		{"api-key", []string{"Api-Key", token}, "/openai/v1/models", 200},
		{"x-goog-api-key", []string{"X-Goog-Api-Key", token}, "/openai/v1/models", 200},
		{"query key", nil, "/openai/v1/models?key=" + token + "&keep=1", 200},
		{"token limited to another upstream", []string{"Authorization", "Bearer " + token2}, "/openai/v1/models", 403},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			resp := e.do("GET", c.path, "", "", c.hdr...)
			body := readAll(t, resp)
			if resp.StatusCode != c.want {
				t.Fatalf("status %d, want %d: %s", resp.StatusCode, c.want, body)
			}
			if c.want == 401 && resp.Header.Get("WWW-Authenticate") == "" {
				t.Error("401 without WWW-Authenticate")
			}
		})
	}
	// Only the two 200-expected kinds with the real token reached the
	// fake, each with a pool key and none with the caller's token.
	reqs := e.api.Requests()
	if len(reqs) != 6 {
		t.Fatalf("the fake saw %d requests, want 6", len(reqs))
	}
	if e.api.SawText(token) || e.api.SawText(token2) {
		t.Fatal("a proxy token reached the upstream")
	}
	for _, r := range reqs {
		a := r.Header.Get("Authorization")
		if a != "Bearer "+secretA && a != "Bearer "+secretB {
			t.Errorf("upstream Authorization %q is not a pool key", a)
		}
		if r.Header.Get("X-Api-Key") != "" || r.Header.Get("Api-Key") != "" || r.Header.Get("X-Goog-Api-Key") != "" {
			t.Errorf("a caller credential header reached the upstream: %v", r.Header)
		}
		if strings.Contains(r.RawQuery, "key=") && !strings.Contains(r.RawQuery, "keep=1") {
			t.Errorf("query %q", r.RawQuery)
		}
	}
	if last := reqs[len(reqs)-1]; last.RawQuery != "keep=1" {
		t.Errorf("the query-key request reached the upstream with query %q, want keep=1", last.RawQuery)
	}
}

func TestCallerCredentialsStripped(t *testing.T) {
	e := newEnv(t, envOpts{})
	resp := e.do("POST", "/openai/v1/things?api_key=caller-"+canary+"&apikey=x&key=y&a=b", token, `{}`,
		"X-Api-Key", "caller-"+canary, "Api-Key", "caller-"+canary, "X-Goog-Api-Key", "caller-"+canary,
		"Proxy-Authorization", "Basic caller-"+canary)
	if resp.StatusCode != 200 {
		t.Fatalf("status %d: %s", resp.StatusCode, readAll(t, resp))
	}
	readAll(t, resp)
	if e.api.SawText("caller-") || e.api.SawText(token) {
		t.Fatalf("caller credentials reached the upstream: %+v", e.api.Requests())
	}
	if q := e.api.Requests()[0].RawQuery; q != "a=b" {
		t.Errorf("upstream query %q, want a=b", q)
	}
}

func TestOpenRelayRefused(t *testing.T) {
	e := newEnv(t, envOpts{})
	addr := strings.TrimPrefix(e.url, "http://")
	auth := "Authorization: Bearer " + token + "\r\n"
	cases := []struct {
		name, raw, want string
	}{
		{"CONNECT", "CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n" + auth + "\r\n", "400"},
		{"absolute-form", "GET http://example.com/openai/v1/models HTTP/1.1\r\nHost: example.com\r\n" + auth + "\r\n", "400"},
		{"absolute-form to the proxy's own name", "GET http://" + addr + "/openai/v1/models HTTP/1.1\r\nHost: " + addr + "\r\n" + auth + "\r\n", "400"},
		{"dot segments", "GET /openai/../other/v1/models HTTP/1.1\r\nHost: x\r\n" + auth + "\r\n", "400"},
		{"encoded dot segments", "GET /openai/%2e%2e/admin HTTP/1.1\r\nHost: x\r\n" + auth + "\r\n", "400"},
		{"unknown host and path", "GET /v1/models HTTP/1.1\r\nHost: evil.example.com\r\n" + auth + "\r\n", "404"},
		{"host-routed upstream, wrong host", "GET /other/v1/models HTTP/1.1\r\nHost: evil.example.com\r\n" + auth + "\r\n", "404"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			line := rawRequest(t, addr, c.raw)
			if !strings.Contains(line, " "+c.want+" ") {
				t.Fatalf("got %q, want status %s", line, c.want)
			}
		})
	}
	if n := len(e.api.Requests()); n != 0 {
		t.Fatalf("the upstream saw %d requests, want none: %+v", n, e.api.Requests())
	}
	// The Host header picks among configured upstreams only.
	line := rawRequest(t, addr, "GET /other/v1/models HTTP/1.1\r\nHost: other.test\r\nAuthorization: Bearer "+token2+"\r\nConnection: close\r\n\r\n")
	if !strings.Contains(line, " 200 ") {
		t.Fatalf("host-routed request: %q", line)
	}
}

func TestBodyLimit(t *testing.T) {
	e := newEnv(t, envOpts{extra: "    max_body: 1KiB\n"})
	big := strings.Repeat("x", 2048)
	resp := e.do("POST", "/openai/v1/echo", token, big)
	if resp.StatusCode != http.StatusRequestEntityTooLarge {
		t.Fatalf("declared length: status %d, want 413", resp.StatusCode)
	}
	readAll(t, resp)
	// A chunked body (no length) is cut while it streams.
	r, _ := http.NewRequest("POST", e.url+"/openai/v1/echo", io.MultiReader(strings.NewReader(big)))
	r.Header.Set("Authorization", "Bearer "+token)
	r.ContentLength = -1
	resp, err := http.DefaultClient.Do(r)
	if err != nil {
		t.Fatal(err)
	}
	body := readAll(t, resp)
	if resp.StatusCode != http.StatusRequestEntityTooLarge {
		t.Fatalf("chunked: status %d, want 413: %s", resp.StatusCode, body)
	}
	// Within the limit, the body arrives whole.
	small := strings.Repeat("y", 1000)
	resp = e.do("POST", "/openai/v1/echo", token, small)
	if got := readAll(t, resp); resp.StatusCode != 200 || got != small {
		t.Fatalf("small body: status %d, %d bytes", resp.StatusCode, len(got))
	}
}

func TestRateLimit(t *testing.T) {
	// One request per 1000 s with a burst of 2: the third is refused
	// however slow the machine.
	e := newEnv(t, envOpts{extra: "    rate: 0.001\n    burst: 2\n"})
	for i := 0; i < 2; i++ {
		resp := e.do("GET", "/openai/v1/models", token, "")
		if readAll(t, resp); resp.StatusCode != 200 {
			t.Fatalf("request %d: status %d", i, resp.StatusCode)
		}
	}
	resp := e.do("GET", "/openai/v1/models", token, "")
	readAll(t, resp)
	if resp.StatusCode != http.StatusTooManyRequests || resp.Header.Get("Retry-After") == "" {
		t.Fatalf("third request: status %d, Retry-After %q; want 429 with Retry-After", resp.StatusCode, resp.Header.Get("Retry-After"))
	}
	// Another token has its own budget.
	resp = e.do("GET", "/other/v1/models", token2, "", "Host", "other.test")
	if readAll(t, resp); resp.StatusCode != 200 {
		t.Fatalf("other token: status %d", resp.StatusCode)
	}
}

func TestKeysRotateAroundRateLimitedKey(t *testing.T) {
	e := newEnv(t, envOpts{limited: []string{secretLim}})
	for i := 0; i < 12; i++ {
		resp := e.do("POST", "/openai/v1/chat/completions", token, `{"model":"m","messages":[]}`)
		body := readAll(t, resp)
		if resp.StatusCode != 200 {
			t.Fatalf("request %d: status %d: %s", i, resp.StatusCode, body)
		}
	}
	served := e.api.Served()
	if served[secretA] == 0 || served[secretB] == 0 {
		t.Fatalf("keys did not rotate: %v", served)
	}
	if n := e.api.Limited()[secretLim]; n != 1 {
		t.Fatalf("the rate-limited key was tried %d times, want once (then it cools down)", n)
	}
}

func TestRequestID(t *testing.T) {
	e := newEnv(t, envOpts{})
	resp := e.do("GET", "/openai/v1/models", token, "", "X-Request-Id", "caller-id-1")
	readAll(t, resp)
	if got := resp.Header.Values("X-Request-Id"); len(got) != 1 || got[0] != "caller-id-1" {
		t.Errorf("response X-Request-Id %q, want the caller's, once", got)
	}
	if got := e.api.Requests()[0].Header.Get("X-Request-Id"); got != "caller-id-1" {
		t.Errorf("upstream X-Request-Id %q, want the caller's", got)
	}
	resp = e.do("GET", "/openai/v1/models", token, "")
	readAll(t, resp)
	id := resp.Header.Get("X-Request-Id")
	if len(resp.Header.Values("X-Request-Id")) != 1 || len(id) != 32 || e.api.Requests()[1].Header.Get("X-Request-Id") != id {
		t.Errorf("added X-Request-Id %q, upstream saw %q", id, e.api.Requests()[1].Header.Get("X-Request-Id"))
	}
}

func TestStreamFlushedAsItArrives(t *testing.T) {
	e := newEnv(t, envOpts{})
	release := e.api.Hold()
	resp := e.do("POST", "/openai/v1/chat/completions", token, `{"model":"m","stream":true}`)
	defer resp.Body.Close()
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "text/event-stream" {
		t.Fatalf("status %d, type %q", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	// The first event arrives while the upstream still holds the rest.
	buf := make([]byte, 4096)
	n, err := resp.Body.Read(buf)
	if err != nil || !strings.HasPrefix(string(buf[:n]), "data: ") || !strings.Contains(string(buf[:n]), fakeapi.Words[0]) {
		t.Fatalf("first read: %q, %v", buf[:n], err)
	}
	release()
	rest, _ := io.ReadAll(resp.Body)
	if !strings.HasSuffix(string(rest), "data: [DONE]\n\n") {
		t.Fatalf("rest of the stream: %q", rest)
	}
}

func TestCallerCancelReachesUpstream(t *testing.T) {
	e := newEnv(t, envOpts{})
	release := e.api.Hold()
	defer release()
	ctx, cancel := context.WithCancel(context.Background())
	r, _ := http.NewRequestWithContext(ctx, "GET", e.url+"/openai/v1/slow", nil)
	r.Header.Set("Authorization", "Bearer "+token)
	errc := make(chan error, 1)
	go func() {
		resp, err := http.DefaultClient.Do(r)
		if err == nil {
			resp.Body.Close()
		}
		errc <- err
	}()
	// Wait until the upstream holds the request, then cancel.
	for len(e.api.Requests()) == 0 {
		time.Sleep(time.Millisecond)
	}
	cancel()
	select {
	case p := <-e.api.Canceled:
		if p != "/v1/slow" {
			t.Fatalf("canceled %q", p)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the upstream never saw the caller's cancel")
	}
	<-errc
}

func TestErrorsAreJSON(t *testing.T) {
	e := newEnv(t, envOpts{})
	resp := e.do("GET", "/openai/v1/models", "", "")
	var body struct {
		Error struct{ Message, Type string }
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil || body.Error.Type != "unauthorized" {
		t.Fatalf("body %+v, %v", body, err)
	}
	resp.Body.Close()
}
