package proxy_test

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// TestRedirectKeepsRoute: a redirect to the upstream itself comes back as
// a path on the proxy, under the upstream's prefix (less the target's base
// path), so that a caller that follows it reaches the upstream again
// (issue 27, item 10). Other Locations are left as they are.
func TestRedirectKeepsRoute(t *testing.T) {
	var upURL string
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/base/v1/dir": // as http.ServeMux and FileServer do
			http.Redirect(w, r, "/base/v1/dir/", http.StatusMovedPermanently)
		case "/base/v1/dir/":
			fmt.Fprintf(w, "listing of %s", r.URL.Path)
		case "/base/v1/absolute":
			w.Header().Set("Location", upURL+"/base/v1/dir/?page=2#top")
			w.WriteHeader(http.StatusFound)
		case "/base/v1/created":
			w.Header().Set("Location", "/base/v1/things/a%2Fb")
			w.WriteHeader(http.StatusCreated)
		case "/base/v1/relative":
			w.Header().Set("Location", "dir/")
			w.WriteHeader(http.StatusFound)
		case "/base/v1/elsewhere":
			w.Header().Set("Location", "https://elsewhere.example/v1/dir/")
			w.WriteHeader(http.StatusFound)
		case "/base/v1/outside":
			w.Header().Set("Location", "/other/v1/dir/")
			w.WriteHeader(http.StatusFound)
		default:
			http.NotFound(w, r)
		}
	}))
	t.Cleanup(up.Close)
	upURL = up.URL
	e := newEnv(t, envOpts{secrets: []string{secretA}, yaml: func(_, kf string) string {
		return fmt.Sprintf(`tokens: [{name: a, sha256: %s}]
upstreams:
  - {name: openai, prefix: /openai, target: '%s/base', keys: {file: %s}, max_wait: 0s}
`, sha(token), up.URL, kf)
	}})

	// A caller that follows redirects gets the upstream's page.
	resp := e.do("GET", "/openai/v1/dir", token, "")
	body := readAll(t, resp)
	if resp.StatusCode != 200 || body != "listing of /base/v1/dir/" {
		t.Fatalf("following the redirect: status %d, body %q", resp.StatusCode, body)
	}

	for _, c := range []struct{ path, want string }{
		{"/openai/v1/dir", "/openai/v1/dir/"},
		{"/openai/v1/absolute", "/openai/v1/dir/?page=2#top"},
		{"/openai/v1/created", "/openai/v1/things/a%2Fb"},
		{"/openai/v1/relative", "dir/"},
		{"/openai/v1/elsewhere", "https://elsewhere.example/v1/dir/"},
		{"/openai/v1/outside", "/other/v1/dir/"},
	} {
		resp, _ := e.get(c.path)
		if got := resp.Header.Get("Location"); got != c.want {
			t.Errorf("%s: Location %q, want %q", c.path, got, c.want)
		}
	}
	if !strings.HasPrefix(upURL, "http://127.0.0.1:") {
		t.Fatalf("upstream URL %s", upURL)
	}
}
