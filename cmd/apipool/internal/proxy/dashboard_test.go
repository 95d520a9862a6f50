package proxy_test

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"strings"
	"testing"

	"github.com/apipool-ng/apipool"
	"github.com/apipool-ng/apipool/cmd/apipool/internal/config"
	"github.com/apipool-ng/apipool/cmd/apipool/internal/proxy"
)

// TestDashboardBehindItsOwnAuth mounts a stand-in dashboard: it answers
// only with a dashboard user's password, never with a proxy token.
func TestDashboardBehindItsOwnAuth(t *testing.T) {
	e := newEnv(t, envOpts{noServe: true, yaml: func(up, kf string) string {
		return `tokens: [{name: a, sha256: ` + sha(token) + `}]
dashboard:
  enabled: true
  users: [{name: ops, password_sha256: ` + sha("ops-password") + `}]
upstreams:
  - {name: openai, prefix: /openai, target: '` + up + `', keys: {file: ` + kf + `}}
`
	}})
	cfg, err := config.Load(e.cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	srv, err := proxy.New(context.Background(), cfg, proxy.Options{Dashboard: func(name string, p *apipool.Transport) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			fmt.Fprintf(w, "dashboard of %s (%d keys) at %s", name, len(p.Snapshot()), r.URL.Path)
		})
	}})
	if err != nil {
		t.Fatal(err)
	}
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	go srv.Serve(ln, nil)
	defer srv.Shutdown(context.Background())
	base := "http://" + ln.Addr().String() + "/dashboard/openai/"
	get := func(user, pass, bearer string) (int, string) {
		r, _ := http.NewRequest("GET", base+"keys", nil)
		if user != "" {
			r.SetBasicAuth(user, pass)
		}
		if bearer != "" {
			r.Header.Set("Authorization", "Bearer "+bearer)
		}
		resp, err := http.DefaultClient.Do(r)
		if err != nil {
			t.Fatal(err)
		}
		return resp.StatusCode, readAll(t, resp)
	}
	if code, _ := get("", "", ""); code != 401 {
		t.Errorf("no credentials: %d", code)
	}
	if code, _ := get("ops", "wrong", ""); code != 401 {
		t.Errorf("wrong password: %d", code)
	}
	if code, _ := get("", "", token); code != 401 {
		t.Errorf("a proxy token opened the dashboard: %d", code)
	}
	code, body := get("ops", "ops-password", "")
	if code != 200 || body != "dashboard of openai (2 keys) at /keys" {
		t.Errorf("right password: %d %q", code, body)
	}
}

// TestRealDashboard mounts package dashboard as serve does.
func TestRealDashboard(t *testing.T) {
	e := newEnv(t, envOpts{noServe: true, yaml: func(up, kf string) string {
		return `tokens: [{name: a, sha256: ` + sha(token) + `}]
dashboard:
  enabled: true
  actions: true
  users: [{name: ops, password_sha256: ` + sha("ops-password") + `}]
upstreams:
  - {name: openai, prefix: /openai, target: '` + up + `', keys: {file: ` + kf + `}, probe: {path: /v1/models}}
`
	}})
	cfg, err := config.Load(e.cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	srv, err := proxy.New(context.Background(), cfg, proxy.Options{Dashboard: proxy.DashboardHandler(cfg.Dashboard.Actions)})
	if err != nil {
		t.Fatal(err)
	}
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	go srv.Serve(ln, nil)
	defer srv.Shutdown(context.Background())
	base := "http://" + ln.Addr().String()
	r, _ := http.NewRequest("GET", base+"/openai/v1/models", nil)
	r.Header.Set("Authorization", "Bearer "+token)
	if resp, err := http.DefaultClient.Do(r); err != nil || resp.StatusCode != 200 {
		t.Fatalf("proxy request: %v %v", resp, err)
	} else {
		readAll(t, resp)
	}
	get := func(path string) (int, string, http.Header) {
		r, _ := http.NewRequest("GET", base+path, nil)
		r.SetBasicAuth("ops", "ops-password")
		resp, err := http.DefaultClient.Do(r)
		if err != nil {
			t.Fatal(err)
		}
		return resp.StatusCode, readAll(t, resp), resp.Header
	}
	code, page, hdr := get("/dashboard/openai/")
	if code != 200 || !strings.Contains(page, "apipool: openai") || hdr.Get("Content-Security-Policy") == "" {
		t.Fatalf("page: %d %.200q", code, page)
	}
	code, keys, _ := get("/dashboard/openai/api/keys?window=15m")
	if code != 200 || !strings.Contains(keys, "openai/k0") || !strings.Contains(keys, "openai/k1") {
		t.Fatalf("api/keys: %d %s", code, keys)
	}
	if strings.Contains(page+keys, canary) {
		t.Fatal("the dashboard shows a secret")
	}
}
