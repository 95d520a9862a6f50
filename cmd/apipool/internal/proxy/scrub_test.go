package proxy_test

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httptrace"
	"net/textproto"
	"strconv"
	"strings"
	"testing"
	"time"
)

// The pool secrets of the scrub tests: OpenAI-like, with the canary, and
// distinct last four characters (the part masked forms show).
const (
	scrubA = "sk-proj-" + canary + "aB3dE5gH7jK9mN1pQ3sT5vX7zqQz9w"
	scrubB = "sk-proj-" + canary + "Zy8xW6vU4tS2rQ0pO8nM6lK4jH2Lm5n"
	scrubC = "sk-proj-" + canary + "Cc1Dd2Ee3Ff4Gg5Hh6Ii7Jj8Kk9Ll0"
	// notAKey shares nothing with the secrets.
	notAKey = "nk-other-0123456789abcdefghij"
)

// leak returns what of a secret text holds: the canary, or a run of 8 or
// more characters of one of secrets, or "".
func leak(text string, secrets ...string) string {
	if strings.Contains(text, canary) {
		return "the canary"
	}
	for _, s := range secrets {
		for i := 0; i+8 <= len(s); i++ {
			if strings.Contains(text, s[i:i+8]) {
				return fmt.Sprintf("the 8 characters at %d of a secret", i)
			}
		}
	}
	return ""
}

// shown is text safe to print in a test's failure.
func shown(text string) string {
	if len(text) > 2000 {
		text = text[:2000] + "..."
	}
	return strings.ReplaceAll(text, canary, "<CANARY>")
}

// echoEnv is a proxy in front of handler, with the pool keys secrets.
func echoEnv(t *testing.T, handler http.HandlerFunc, secrets ...string) *env {
	t.Helper()
	up := httptest.NewServer(handler)
	t.Cleanup(up.Close)
	return newEnv(t, envOpts{secrets: secrets, yaml: func(_, kf string) string {
		return fmt.Sprintf(`tokens: [{name: a, sha256: %s}]
upstreams:
  - {name: openai, prefix: /openai, target: '%s', keys: {file: %s}, max_wait: 0s}
`, sha(token), up.URL, kf)
	}})
}

// usedKey is the pool key a request to the fake upstream carries.
func usedKey(r *http.Request) string {
	return strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")
}

// rawClient neither asks for nor decodes compression by itself: the test
// sees the bytes the proxy sent.
// It does not follow redirects.
var rawClient = &http.Client{
	Transport:     &http.Transport{DisableCompression: true},
	CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
}

// get sends GET path to the proxy with the token and returns the answer,
// its body decoded when the proxy sent it gzip'd. The headers of
// informational (1xx) answers are added to the answer's as X-Test-1xx.
func (e *env) get(path string, hdr ...string) (*http.Response, string) {
	e.t.Helper()
	var info []string
	trace := &httptrace.ClientTrace{Got1xxResponse: func(code int, h textproto.MIMEHeader) error {
		var b bytes.Buffer
		http.Header(h).Write(&b)
		info = append(info, fmt.Sprintf("%d %s", code, b.String()))
		return nil
	}}
	r, _ := http.NewRequestWithContext(httptrace.WithClientTrace(context.Background(), trace), "GET", e.url+path, nil)
	r.Header.Set("Authorization", "Bearer "+token)
	for i := 0; i+1 < len(hdr); i += 2 {
		r.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := rawClient.Do(r)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	resp.Header["X-Test-1xx"] = info
	var body io.Reader = resp.Body
	if resp.Header.Get("Content-Encoding") == "gzip" {
		zr, err := gzip.NewReader(resp.Body)
		if err != nil {
			e.t.Fatal(err)
		}
		body = zr
	}
	b, err := io.ReadAll(body)
	if err != nil {
		e.t.Fatalf("reading the answer: %v", err)
	}
	return resp, string(b)
}

// noLeak fails t when the answer's status line, headers or body hold a
// secret, or any 8 characters of one.
func noLeak(t *testing.T, resp *http.Response, body string, secrets ...string) {
	t.Helper()
	if l := leak(body, secrets...); l != "" {
		t.Errorf("the body holds %s:\n%s", l, shown(body))
	}
	var h bytes.Buffer
	resp.Header.Write(&h)
	resp.Trailer.Write(&h)
	if l := leak(resp.Status+"\n"+h.String(), secrets...); l != "" {
		t.Errorf("the headers hold %s:\n%s", l, shown(h.String()))
	}
}

// TestScrubIssue27: the issue's case. Both keys answer 401 quoting
// themselves; the caller gets the 401 without the key.
func TestScrubIssue27(t *testing.T) {
	e := echoEnv(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusUnauthorized)
		fmt.Fprintf(w, `{"error":{"message":"Invalid API key provided: %s","type":"invalid_request_error"}}`, usedKey(r))
	}, scrubA, scrubB)
	resp, body := e.get("/openai/v1/models")
	if resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("status %d, want the upstream's 401: %s", resp.StatusCode, shown(body))
	}
	noLeak(t, resp, body, scrubA, scrubB)
	if !strings.Contains(body, "Invalid API key provided: [REDACTED]") {
		t.Errorf("want the key replaced by [REDACTED]: %s", shown(body))
	}
	if got, want := resp.Header.Get("Content-Length"), strconv.Itoa(len(body)); got != want {
		t.Errorf("Content-Length %q, body of %s bytes", got, want)
	}
}

// TestScrubErrorAnswers: each way an upstream's error answer can quote a
// pool key, the one used or another.
func TestScrubErrorAnswers(t *testing.T) {
	maskedA := scrubA[:11] + "...****..." + scrubA[len(scrubA)-4:]
	cases := []struct {
		name    string
		handler func(w http.ResponseWriter, r *http.Request)
		check   func(t *testing.T, resp *http.Response, body string)
	}{
		{"every key of the pool not only the one used", func(w http.ResponseWriter, r *http.Request) {
			w.WriteHeader(http.StatusBadRequest)
			fmt.Fprintf(w, "keys seen: %s, %s; plain text after", scrubA, scrubB)
		}, func(t *testing.T, resp *http.Response, body string) {
			if body != "keys seen: [REDACTED], [REDACTED]; plain text after" {
				t.Errorf("body %q", shown(body))
			}
		}},
		{"escaped forms", func(w http.ResponseWriter, r *http.Request) {
			w.WriteHeader(http.StatusBadRequest)
			// A secret with characters that JSON and URLs escape.
			fmt.Fprintf(w, `{"url":"https://x.test/?key=%s","json":"%s"}`, "sk%2Fslash%2B"+canary+"%2Bplus", `sk\/slash+`+canary+`+plus`)
		}, nil},
		{"masked: head and tail of the key", func(w http.ResponseWriter, r *http.Request) {
			w.WriteHeader(http.StatusUnauthorized)
			fmt.Fprintf(w, `{"error":{"message":"Incorrect API key provided: %s. You can find your API key at https://platform.example/api-keys."}}`, maskedA)
		}, func(t *testing.T, resp *http.Response, body string) {
			if strings.Contains(body, scrubA[len(scrubA)-4:]) || strings.Contains(body, scrubA[8:11]) {
				t.Errorf("the masked form's visible head or tail reached the caller: %s", shown(body))
			}
			if !strings.Contains(body, "provided: [REDACTED]. You can find") {
				t.Errorf("body %s", shown(body))
			}
		}},
		{"masked: last four only", func(w http.ResponseWriter, r *http.Request) {
			w.WriteHeader(http.StatusUnauthorized)
			fmt.Fprintf(w, "key ****************%s is revoked; key ...%s too", scrubA[len(scrubA)-4:], scrubB[len(scrubB)-4:])
		}, func(t *testing.T, resp *http.Response, body string) {
			if body != "key [REDACTED] is revoked; key [REDACTED] too" {
				t.Errorf("body %q", shown(body))
			}
		}},
		{"gzip'd", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Encoding", "gzip")
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusForbidden)
			zw := gzip.NewWriter(w)
			fmt.Fprintf(zw, `{"error":"key %s may not use this model"}`, usedKey(r))
			zw.Close()
		}, func(t *testing.T, resp *http.Response, body string) {
			if body != `{"error":"key [REDACTED] may not use this model"}` {
				t.Errorf("body %q", shown(body))
			}
		}},
		{"unknown content encoding", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Encoding", "br")
			w.WriteHeader(http.StatusBadRequest)
			// Not brotli: the proxy cannot tell, and must not pass it.
			fmt.Fprintf(w, "key %s", usedKey(r))
		}, func(t *testing.T, resp *http.Response, body string) {
			if resp.StatusCode != http.StatusBadGateway || resp.Header.Get("Content-Encoding") != "" {
				t.Errorf("status %d, Content-Encoding %q: want the proxy's 502", resp.StatusCode, resp.Header.Get("Content-Encoding"))
			}
		}},
		{"a key as the content encoding", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Encoding", usedKey(r))
			w.WriteHeader(http.StatusBadRequest)
			io.WriteString(w, "x")
		}, func(t *testing.T, resp *http.Response, body string) {
			if resp.StatusCode != http.StatusBadGateway {
				t.Errorf("status %d: want the proxy's 502", resp.StatusCode)
			}
		}},
		{"headers", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("X-Debug-Key", usedKey(r))
			w.Header().Set("Www-Authenticate", `Bearer error="invalid_token", key="`+scrubB+`"`)
			w.Header().Set("Trailer", "X-Trailer-Key")
			w.WriteHeader(http.StatusUnauthorized)
			io.WriteString(w, "no key here")
			w.Header().Set("X-Trailer-Key", usedKey(r))
		}, func(t *testing.T, resp *http.Response, body string) {
			if got := resp.Header.Get("X-Debug-Key"); got != "[REDACTED]" {
				t.Errorf("X-Debug-Key %q", shown(got))
			}
			if got := resp.Header.Get("Www-Authenticate"); got != `Bearer error="invalid_token", key="[REDACTED]"` {
				t.Errorf("Www-Authenticate %q", shown(got))
			}
		}},
		{"unannounced trailers of a success", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			io.WriteString(w, `{"ok":true}`)
			w.(http.Flusher).Flush() // chunked, of unknown length
			w.Header().Set(http.TrailerPrefix+"X-Trailer-Key", usedKey(r))
		}, nil},
		{"unannounced trailers of a streamed success", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "text/event-stream")
			io.WriteString(w, "data: ok\n\n")
			w.(http.Flusher).Flush()
			w.Header().Set(http.TrailerPrefix+"X-Trailer-Key", usedKey(r))
		}, func(t *testing.T, resp *http.Response, body string) {
			if got := resp.Trailer.Get("X-Trailer-Key"); got == "" {
				t.Errorf("the trailer did not come through: the case tests nothing")
			}
		}},
		{"a header of a success", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("X-Debug-Key", usedKey(r))
			w.Header().Set("Location", "/v1/x?key="+usedKey(r))
			io.WriteString(w, `{"ok":true}`)
		}, nil},
		{"a redirect's Location", func(w http.ResponseWriter, r *http.Request) {
			http.Redirect(w, r, "/v1/elsewhere/"+usedKey(r)+"?k="+scrubB, http.StatusFound)
		}, nil},
		{"an informational answer's headers", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Link", "</"+usedKey(r)+">; rel=preload")
			w.WriteHeader(http.StatusEarlyHints)
			w.Header().Del("Link")
			w.WriteHeader(http.StatusTeapot)
		}, nil},
		{"a streamed error", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "text/event-stream")
			w.WriteHeader(http.StatusInternalServerError)
			rc := http.NewResponseController(w)
			k := usedKey(r)
			// The key is cut between two writes the upstream flushes.
			fmt.Fprintf(w, "event: error\ndata: {\"key\":\"%s", k[:15])
			rc.Flush()
			fmt.Fprintf(w, "%s\"}\n\n", k[15:])
			rc.Flush()
		}, func(t *testing.T, resp *http.Response, body string) {
			if resp.StatusCode != 500 || body != "event: error\ndata: {\"key\":\"[REDACTED]\"}\n\n" {
				t.Errorf("status %d, body %q", resp.StatusCode, shown(body))
			}
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			e := echoEnv(t, c.handler, scrubA, scrubB, "sk/slash+"+canary+"+plus")
			resp, body := e.get("/openai/v1/models", "Accept-Encoding", "gzip")
			noLeak(t, resp, body, scrubA, scrubB, "sk/slash+"+canary+"+plus", "sk%2Fslash%2B"+canary+"%2Bplus", `sk\/slash+`+canary+`+plus`)
			if c.check != nil {
				c.check(t, resp, body)
			}
			if cl := resp.Header.Get("Content-Length"); cl != "" && cl != strconv.Itoa(len(body)) && resp.Header.Get("Content-Encoding") == "" {
				t.Errorf("Content-Length %s, body of %d bytes", cl, len(body))
			}
		})
	}
}

// TestScrubLargeErrorAnswer: an error answer past the bound is cut at it,
// keeps its status, and holds no key: neither before the bound, nor across
// it, nor after it.
func TestScrubLargeErrorAnswer(t *testing.T) {
	const bound = 1 << 20
	for _, gz := range []bool{false, true} {
		t.Run(fmt.Sprintf("gzip %v", gz), func(t *testing.T) {
			e := echoEnv(t, func(w http.ResponseWriter, r *http.Request) {
				k := usedKey(r)
				var b bytes.Buffer
				b.WriteString("start " + k + " ")
				for b.Len() < bound-10 {
					b.WriteString("filler text, no secret here. ")
				}
				b.Truncate(bound - 10)
				b.WriteString(k) // across the bound
				for b.Len() < 3*bound {
					b.WriteString("more filler " + k + " ")
				}
				w.Header().Set("Content-Type", "text/plain")
				if gz {
					w.Header().Set("Content-Encoding", "gzip")
					w.WriteHeader(http.StatusServiceUnavailable)
					zw := gzip.NewWriter(w)
					zw.Write(b.Bytes())
					zw.Close()
					return
				}
				w.WriteHeader(http.StatusServiceUnavailable)
				w.Write(b.Bytes())
			}, scrubA, scrubB)
			resp, body := e.get("/openai/v1/models", "Accept-Encoding", "gzip")
			noLeak(t, resp, body, scrubA, scrubB)
			if resp.StatusCode != http.StatusServiceUnavailable {
				t.Errorf("status %d, want the upstream's 503", resp.StatusCode)
			}
			if len(body) > bound || len(body) < bound-100 {
				t.Errorf("got %d bytes, want the first MiB", len(body))
			}
			if !strings.HasPrefix(body, "start [REDACTED] filler") || !strings.HasSuffix(body, "[REDACTED]") {
				t.Errorf("body starts %q, ends %q", shown(body[:min(40, len(body))]), shown(body[max(0, len(body)-40):]))
			}
			if resp.Header.Get("X-Apipool-Truncated") == "" {
				t.Error("no X-Apipool-Truncated header")
			}
		})
	}
}

// TestScrubStreamedSuccess: a streamed success is passed as it comes,
// each event when the upstream flushes it, with a key inside masked even
// when it is cut between two writes; so is a long success of unknown
// length.
func TestScrubStreamedSuccess(t *testing.T) {
	next := make(chan struct{})
	e := echoEnv(t, func(w http.ResponseWriter, r *http.Request) {
		k := usedKey(r)
		rc := http.NewResponseController(w)
		if r.URL.Path == "/v1/big" {
			w.Header().Set("Content-Type", "application/octet-stream")
			for i := 0; i < 3<<10; i++ {
				fmt.Fprintf(w, "%01023d\n", i) // 3 MiB, chunked
			}
			io.WriteString(w, k)
			return
		}
		w.Header().Set("Content-Type", "text/event-stream")
		io.WriteString(w, "data: first\n\n")
		rc.Flush()
		select {
		case <-next:
		case <-r.Context().Done():
			return
		}
		fmt.Fprintf(w, "data: {\"k\":\"%s", k[:20])
		rc.Flush()
		fmt.Fprintf(w, "%s\"}\n\ndata: [DONE]\n\n", k[20:])
	}, scrubA, scrubB)

	r, _ := http.NewRequest("GET", e.url+"/openai/v1/stream", nil)
	r.Header.Set("Authorization", "Bearer "+token)
	resp, err := rawClient.Do(r)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	br := bufio.NewReader(resp.Body)
	first := make(chan string, 1)
	go func() {
		line, _ := br.ReadString('\n')
		first <- line
	}()
	select {
	case line := <-first:
		if line != "data: first\n" {
			t.Fatalf("first line %q", line)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("the first event did not reach the caller before the upstream sent the rest: the stream is held back")
	}
	close(next)
	rest, err := io.ReadAll(br)
	if err != nil {
		t.Fatal(err)
	}
	noLeak(t, resp, string(rest), scrubA, scrubB)
	if want := "\ndata: {\"k\":\"" + stars(rest) + "\"}\n\ndata: [DONE]\n\n"; string(rest) != want {
		t.Errorf("rest %q, want %q", shown(string(rest)), want)
	}

	resp, body := e.get("/openai/v1/big")
	noLeak(t, resp, body, scrubA, scrubB)
	if resp.StatusCode != 200 || len(body) < 3<<20 || body[3<<20:] != stars(body) {
		t.Errorf("status %d, %d bytes, want 200 and every byte, the key masked", resp.StatusCode, len(body))
	}
}

// stars returns as many '*' as either key has characters, the one that
// was used, by the number of '*' in text.
func stars[T string | []byte](text T) string {
	n := strings.Count(string(text), "*")
	if n != len(scrubA) && n != len(scrubB) {
		n = len(scrubA)
	}
	return strings.Repeat("*", n)
}

// TestScrubFollowsKeyChanges: a key added by a reload is scrubbed from
// the first answer that can use it, and a removed one still is for as long
// as a request that took it may run.
func TestScrubFollowsKeyChanges(t *testing.T) {
	e := echoEnv(t, func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusBadRequest)
		fmt.Fprintf(w, "used %s; known %s %s %s", usedKey(r), scrubA, notAKey, scrubC)
	}, scrubA)
	e.writeKeys("c " + scrubC)
	if err := e.srv.Reload(); err != nil {
		t.Fatal(err)
	}
	resp, body := e.get("/openai/v1/models")
	noLeak(t, resp, body, scrubA, scrubC)
	// notAKey was never a pool key: it passes.
	if body != "used [REDACTED]; known [REDACTED] "+notAKey+" [REDACTED]" {
		t.Errorf("body %q", shown(body))
	}
}

// TestScrubAcceptEncoding: the upstream is asked only for the codings the
// proxy can decode to scrub (gzip, deflate), or for none.
func TestScrubAcceptEncoding(t *testing.T) {
	e := echoEnv(t, func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "%q", r.Header.Values("Accept-Encoding"))
	}, scrubA)
	for _, c := range []struct{ in, want string }{
		{"br, zstd, gzip;q=0.5", `["gzip"]`},
		{"deflate, gzip, br, zstd", `["deflate, gzip"]`},
		{"br", `[]`},
		{"gzip;q=0, br", `[]`},
		{"*", `["gzip"]`},
	} {
		if _, body := e.get("/openai/v1/x", "Accept-Encoding", c.in); body != c.want {
			t.Errorf("Accept-Encoding %q reached the upstream as %s, want %s", c.in, body, c.want)
		}
	}
}

// A compressed error answer cut short by the upstream (its connection
// closed before the declared length) is not passed on half-read: the
// read error is the proxy's, a 502, not a partial body.
func TestScrubCutCompressedAnswer(t *testing.T) {
	const canary = "sk-CANARYcut-9f3eA7c1Qx5Zt2Lm"
	e := echoEnv(t, func(w http.ResponseWriter, r *http.Request) {
		var b bytes.Buffer
		zw := gzip.NewWriter(&b)
		fmt.Fprintf(zw, `{"error":"key %s is revoked", "pad": "%s"}`, usedKey(r), strings.Repeat("x", 4096))
		zw.Close()
		w.Header().Set("Content-Encoding", "gzip")
		w.Header().Set("Content-Length", strconv.Itoa(b.Len()+100)) // more than will come
		w.WriteHeader(http.StatusUnauthorized)
		w.Write(b.Bytes()[:b.Len()/2])
		w.(http.Flusher).Flush()
		conn, _, err := http.NewResponseController(w).Hijack()
		if err == nil {
			conn.Close()
		}
	}, canary)
	resp, body := e.get("/openai/v1/models")
	noLeak(t, resp, body, canary)
	if resp.StatusCode != http.StatusBadGateway {
		t.Fatalf("status %d, body %q; want the proxy's 502 for an answer it could not read whole", resp.StatusCode, shown(body))
	}
}

// A key a browser-style client puts in the WebSocket subprotocol is the
// caller's credential: the proxy does not pass it upstream.
func TestSubprotocolCredentialNotRelayed(t *testing.T) {
	got := make(chan []string, 1)
	e := echoEnv(t, func(w http.ResponseWriter, r *http.Request) {
		got <- r.Header.Values("Sec-WebSocket-Protocol")
		w.WriteHeader(http.StatusOK)
	})
	resp, _ := e.get("/openai/v1/models", "Sec-WebSocket-Protocol", "realtime, openai-insecure-api-key.sk-callers-own")
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d", resp.StatusCode)
	}
	if v := <-got; len(v) != 1 || v[0] != "realtime" {
		t.Fatalf("the upstream got Sec-WebSocket-Protocol %q, want only \"realtime\"", v)
	}
}
