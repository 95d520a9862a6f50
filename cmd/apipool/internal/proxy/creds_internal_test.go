package proxy

import (
	"io"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/apipool-ng/apipool"
	"github.com/apipool-ng/apipool/internal/creds"
)

// captureBase is a base transport that keeps the requests it is sent.
type captureBase struct {
	mu   sync.Mutex
	seen []*http.Request
}

func (c *captureBase) RoundTrip(r *http.Request) (*http.Response, error) {
	c.mu.Lock()
	c.seen = append(c.seen, r.Clone(r.Context()))
	c.mu.Unlock()
	return &http.Response{StatusCode: 200, Header: http.Header{}, Body: http.NoBody, Request: r}, nil
}

// withExtraCredential adds a header and a query parameter to the
// library's list for the test's length. Not parallel: the list is global.
func withExtraCredential(t *testing.T, header, param string) {
	t.Helper()
	h, p := creds.Headers, creds.Params
	creds.Headers = append(slices.Clip(h), header)
	creds.Params = append(slices.Clip(p), param)
	t.Cleanup(func() { creds.Headers, creds.Params = h, p })
}

// Issue 24 (6): one list of credentials. A header and a parameter added to
// the library's list are stripped by the library (a pool with the default
// list) and by the proxy's own stripping, and the proxy takes a caller's
// token from them; every name already on the list, escaped or not, and
// Proxy-Authorization (the proxy's addition) go too. The parameters left
// keep their order and encoding. Before, the proxy kept its own list and
// let the added names through.
func TestOneCredentialList(t *testing.T) {
	withExtraCredential(t, "X-Extra-Credential", "extra_cred")
	const secret = "caller-secret"
	newReq := func() *http.Request {
		r, err := http.NewRequest("GET", "http://api.test/v1/things?b=2&extra_cred="+secret+
			"&api%5Fkey="+secret+"&a=%2F1&key="+secret+"&apikey="+secret, nil)
		if err != nil {
			t.Fatal(err)
		}
		for _, h := range apipool.DefaultStripHeaders() {
			r.Header.Set(h, secret)
		}
		r.Header.Set("Proxy-Authorization", "Basic "+secret)
		r.Header.Set("X-Other", "kept")
		return r
	}
	check := func(who string, r *http.Request) {
		t.Helper()
		if r.URL.RawQuery != "b=2&a=%2F1" {
			t.Errorf("%s: query %q, want b=2&a=%%2F1", who, r.URL.RawQuery)
		}
		for name, vs := range r.Header {
			if strings.Contains(strings.Join(vs, ","), secret) {
				t.Errorf("%s: %s: %q left on the request", who, name, vs)
			}
		}
		if r.Header.Get("X-Other") != "kept" {
			t.Errorf("%s: X-Other removed", who)
		}
	}

	// The library.
	base := &captureBase{}
	pool, err := apipool.New([]apipool.Key{{ID: "k", Secret: "pool-key"}}, apipool.WithBase(base))
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close(t.Context())
	resp, err := pool.RoundTrip(newReq())
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	sent := base.seen[0]
	// The library leaves Proxy-Authorization alone (a program may set it
	// for its own forward proxy); the rest goes.
	sent.Header.Del("Proxy-Authorization")
	check("library", sent)
	if got := sent.Header.Get("Authorization"); got != "Bearer pool-key" {
		t.Errorf("library: Authorization %q, want the pool's key", got)
	}

	// The proxy.
	out := newReq()
	stripCredentials(out)
	check("proxy", out)
	if got := out.Header.Get("Proxy-Authorization"); got != "" {
		t.Errorf("proxy: Proxy-Authorization %q left", got)
	}

	// The proxy takes a token from the added names too.
	r, _ := http.NewRequest("GET", "http://proxy.test/openai/v1/models", nil)
	r.Header.Set("X-Extra-Credential", "tok-h")
	if tok, ok := credential(r); !ok || tok != "tok-h" {
		t.Errorf("credential from the added header: %q %v", tok, ok)
	}
	r, _ = http.NewRequest("GET", "http://proxy.test/openai/v1/models?a=1&extra_cred=tok-q", nil)
	if tok, ok := credential(r); !ok || tok != "tok-q" {
		t.Errorf("credential from the added parameter: %q %v", tok, ok)
	}
}
