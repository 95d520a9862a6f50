package proxy_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"testing"

	"github.com/apipool-ng/apipool/cmd/apipool/internal/config"
	"github.com/apipool-ng/apipool/cmd/apipool/internal/proxy"
)

// secretNew is the key the tests add through the admin API: the fake API
// knows it, the key file does not.
const (
	secretNew  = "sk-new-" + canary + "-dddddddd"
	adminPass  = "admin-pass-" + canary
	adminAPI   = "/admin/api/v1/upstreams/openai"
	jsonCT     = "application/json"
	adminYAMLs = "admin:\n  users: [{name: root, password_sha256: %s}]\n"
)

// adminEnv is a proxy with admin users, its key file holding k0 (A) and
// k1 (B); the fake API knows secretNew too.
func adminEnv(t *testing.T) *env {
	t.Helper()
	// The fake API knows secretNew; the server never saw it: its key
	// file is another.
	return newEnv(t, envOpts{secrets: []string{secretA, secretB, secretNew}, yaml: func(up, kf string) string {
		kf += ".admin"
		if err := os.WriteFile(kf, []byte("k0 "+secretA+"\nk1 "+secretB+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		return fmt.Sprintf(baseYAML, sha(token), "", sha(token2), up, kf, up) + fmt.Sprintf(adminYAMLs, sha(adminPass))
	}})
}

// admin calls the admin API as root, with a JSON content type for every
// method but GET; it returns the status and the body, and checks that no
// answer ever holds the canary.
func (e *env) admin(method, path, body string) (int, string) {
	e.t.Helper()
	hdr := []string{"Authorization", ""}
	if method != "GET" {
		hdr = append(hdr, "Content-Type", jsonCT)
	}
	return e.adminAs("root", adminPass, method, path, body, hdr...)
}

func (e *env) adminAs(user, pass, method, path, body string, hdr ...string) (int, string) {
	e.t.Helper()
	var r *http.Request
	if body != "" {
		r, _ = http.NewRequest(method, e.url+path, strings.NewReader(body))
	} else {
		r, _ = http.NewRequest(method, e.url+path, nil)
	}
	if user != "" {
		r.SetBasicAuth(user, pass)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		if hdr[i] == "Authorization" {
			continue
		}
		r.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := http.DefaultClient.Do(r)
	if err != nil {
		e.t.Fatal(err)
	}
	out := readAll(e.t, resp)
	if strings.Contains(out, canary) {
		e.t.Errorf("LEAK: %s %s answered with the canary: %s", method, path, out)
	}
	if resp.StatusCode >= 400 && resp.Header.Get("X-Apipool-Error") == "" {
		e.t.Errorf("%s %s: error %d without X-Apipool-Error", method, path, resp.StatusCode)
	}
	return resp.StatusCode, out
}

type adminKeys struct {
	Keys []struct {
		ID             string `json:"id"`
		Fingerprint    string `json:"fingerprint"`
		State          string `json:"state"`
		Disabled       bool   `json:"disabled"`
		DisabledReason string `json:"disabled_reason"`
		InKeyFile      bool   `json:"in_key_file"`
	} `json:"keys"`
}

// keys lists the pool through the admin API: "ID:state" items, sorted as
// the pool has them.
func (e *env) adminKeys() string {
	e.t.Helper()
	code, body := e.admin("GET", adminAPI+"/keys", "")
	if code != 200 {
		e.t.Fatalf("list: %d %s", code, body)
	}
	var v adminKeys
	if err := json.Unmarshal([]byte(body), &v); err != nil {
		e.t.Fatal(err)
	}
	var out []string
	for _, k := range v.Keys {
		if k.Fingerprint == "" {
			e.t.Errorf("%s: no fingerprint", k.ID)
		}
		s := k.ID + ":" + k.State
		if !k.InKeyFile {
			s += "(api)"
		}
		out = append(out, s)
	}
	return strings.Join(out, ",")
}

func TestAdminListAddUseScrub(t *testing.T) {
	e := adminEnv(t)
	if got, want := e.adminKeys(), "openai/k0:active,openai/k1:active"; got != want {
		t.Fatalf("list: %s, want %s", got, want)
	}
	// Before it is added, an answer quoting the new secret passes as is:
	// the index does not know it (the check below is not vacuous).
	resp := e.do("POST", "/openai/v1/echo", token, "quote "+secretNew)
	// (The canary in it is scrubbed, as the other secrets share it: its
	// own tail is not.)
	if body := readAll(t, resp); !strings.Contains(body, "dddddddd") {
		t.Fatalf("the echo: %q", body)
	}
	code, body := e.admin("POST", adminAPI+"/keys", `{"id": "k9", "secret": "`+secretNew+`"}`)
	if code != 201 || !strings.Contains(body, `"id":"openai/k9"`) {
		t.Fatalf("add: %d %s", code, body)
	}
	if got, want := e.adminKeys(), "openai/k0:active,openai/k1:active,openai/k9:active(api)"; got != want {
		t.Fatalf("list after add: %s, want %s", got, want)
	}
	// With k0 and k1 disabled, the proxy must use the new key.
	for _, id := range []string{"k0", "k1"} {
		if code, body := e.admin("POST", adminAPI+"/keys/"+id+"/disable", ""); code != 200 {
			t.Fatalf("disable %s: %d %s", id, code, body)
		}
	}
	resp = e.do("GET", "/openai/v1/models", token, "")
	if readAll(t, resp); resp.StatusCode != 200 || e.api.Served()[secretNew] != 1 {
		t.Fatalf("a request after the add: %d, served %v", resp.StatusCode, e.api.Served())
	}
	// An answer quoting the new secret is scrubbed of it.
	resp = e.do("POST", "/openai/v1/echo", token, "quote "+secretNew)
	if body := readAll(t, resp); strings.Contains(body, "dddddddd") || !strings.HasPrefix(body, "quote ") {
		t.Fatalf("the added secret was not scrubbed from the answer: %q", body)
	}
	// A duplicate ID, a duplicate secret, a bad ID, a bad body.
	for _, c := range []struct{ body, want string }{
		{`{"id": "k9", "secret": "sk-other-secret-1"}`, "409"},
		{`{"id": "k8", "secret": "` + secretA + `"}`, "409"},
		{`{"id": "` + secretA + `", "secret": "sk-other-secret-2"}`, "400"},
		{`{"id": "k8", "secret": "` + secretNew + ` two"}`, "400"},
		{`{"id": "k8", "secret": "sk-x", "` + secretNew + `": 1}`, "400"},
		{`not json ` + secretNew, "400"},
	} {
		if code, body := e.admin("POST", adminAPI+"/keys", c.body); fmt.Sprint(code) != c.want {
			t.Errorf("add %s: %d %s, want %s", strings.ReplaceAll(c.body, canary, "<C>"), code, body, c.want)
		}
	}
	if code, _ := e.admin("GET", "/admin/api/v1/upstreams/nope/keys", ""); code != 404 {
		t.Errorf("an unknown upstream: %d", code)
	}
}

func TestAdminRemoveDisableEnable(t *testing.T) {
	e := adminEnv(t)
	code, body := e.admin("POST", adminAPI+"/keys/k0/disable", `{"reason": "rotating it"}`)
	if code != 200 || !strings.Contains(body, `"disabled":true`) || !strings.Contains(body, "disabled by admin root: rotating it") {
		t.Fatalf("disable: %d %s", code, body)
	}
	if got, want := e.adminKeys(), "openai/k0:disabled,openai/k1:active"; got != want {
		t.Fatalf("list after disable: %s, want %s", got, want)
	}
	for i := 0; i < 3; i++ {
		resp := e.do("GET", "/openai/v1/models", token, "")
		readAll(t, resp)
	}
	if s := e.api.Served(); s[secretA] != 0 || s[secretB] != 3 {
		t.Fatalf("a disabled key was used: %v", s)
	}
	if code, body := e.admin("POST", adminAPI+"/keys/k0/enable", ""); code != 200 || !strings.Contains(body, `"disabled":false`) {
		t.Fatalf("enable: %d %s", code, body)
	}
	if got, want := e.adminKeys(), "openai/k0:active,openai/k1:active"; got != want {
		t.Fatalf("list after enable: %s, want %s", got, want)
	}
	if code, body := e.admin("DELETE", adminAPI+"/keys/k1", ""); code != 200 {
		t.Fatalf("remove: %d %s", code, body)
	}
	if got, want := e.adminKeys(), "openai/k0:active"; got != want {
		t.Fatalf("list after remove: %s, want %s", got, want)
	}
	// The last key stays; unknown keys are 404.
	if code, _ := e.admin("DELETE", adminAPI+"/keys/k0", ""); code != 409 {
		t.Errorf("removing the last key: %d", code)
	}
	for _, p := range []string{"/keys/k1/disable", "/keys/k1/enable", "/keys/" + secretA + "/disable"} {
		if code, _ := e.admin("POST", adminAPI+p, ""); code != 404 {
			t.Errorf("%s: %d", strings.ReplaceAll(p, canary, "<C>"), code)
		}
	}
	// The removed secret is still scrubbed (a request may hold it).
	resp := e.do("POST", "/openai/v1/echo", token, "quote "+secretB)
	if body := readAll(t, resp); strings.Contains(body, "bbbbbbbb") {
		t.Fatalf("a removed secret was not scrubbed: %q", body)
	}
}

func TestAdminProbe(t *testing.T) {
	e := adminEnv(t)
	code, body := e.admin("POST", adminAPI+"/probe", "")
	if code != 200 || strings.Count(body, `"usable":true`) != 2 {
		t.Fatalf("probe: %d %s", code, body)
	}
	// upstream "other" has no probe.
	if code, body := e.admin("POST", "/admin/api/v1/upstreams/other/probe", ""); code != 409 {
		t.Fatalf("probe without a probe: %d %s", code, body)
	}
}

func TestAdminAuthAndCSRF(t *testing.T) {
	e := adminEnv(t)
	for _, c := range []struct{ user, pass, bearer string }{
		{"", "", ""},
		{"root", "wrong", ""},
		{"nobody", adminPass, ""},
		{"", "", token}, // a proxy token is not an admin login
	} {
		hdr := []string{"Content-Type", jsonCT}
		r, _ := http.NewRequest("GET", e.url+adminAPI+"/keys", nil)
		if c.user != "" {
			r.SetBasicAuth(c.user, c.pass)
		}
		if c.bearer != "" {
			r.Header.Set("Authorization", "Bearer "+c.bearer)
		}
		r.Header.Set(hdr[0], hdr[1])
		resp, err := http.DefaultClient.Do(r)
		if err != nil {
			t.Fatal(err)
		}
		body := readAll(t, resp)
		if resp.StatusCode != 401 || resp.Header.Get("X-Apipool-Error") != "unauthorized" || resp.Header.Get("WWW-Authenticate") == "" {
			t.Errorf("user %q: %d %s", c.user, resp.StatusCode, body)
		}
	}
	// A state-changing call without a JSON content type (a form, or none)
	// changes nothing.
	for _, ct := range []string{"", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x", "text/plain"} {
		code, _ := e.adminAs("root", adminPass, "POST", adminAPI+"/keys/k0/disable", "reason=x", "Content-Type", ct)
		if code != 415 {
			t.Errorf("content type %q: %d", ct, code)
		}
		// No body at all: disable would take it, were it not for its type.
		code, _ = e.adminAs("root", adminPass, "POST", adminAPI+"/keys/k0/disable", "", "Content-Type", ct)
		if code != 415 {
			t.Errorf("empty body, content type %q: %d", ct, code)
		}
		code, _ = e.adminAs("root", adminPass, "POST", adminAPI+"/keys", "id=k7&secret="+secretNew, "Content-Type", ct)
		if code != 415 {
			t.Errorf("add, content type %q: %d", ct, code)
		}
	}
	if got, want := e.adminKeys(), "openai/k0:active,openai/k1:active"; got != want {
		t.Fatalf("a refused call changed the pool: %s", got)
	}
}

// The key file wins for membership at a reload; a kept key's disabled
// state stays.
func TestAdminReloadSemantics(t *testing.T) {
	e := adminEnv(t)
	steps := []struct{ method, path, body string }{
		{"POST", "/keys", `{"id": "k9", "secret": "` + secretNew + `"}`}, // not in the file
		{"DELETE", "/keys/k1", ""},                                       // in the file
		{"POST", "/keys/k0/disable", ""},                                 // kept by the reload
	}
	for _, s := range steps {
		if code, body := e.admin(s.method, adminAPI+s.path, s.body); code >= 300 {
			t.Fatalf("%s %s: %d %s", s.method, s.path, code, body)
		}
	}
	if got, want := e.adminKeys(), "openai/k0:disabled,openai/k9:active(api)"; got != want {
		t.Fatalf("before the reload: %s, want %s", got, want)
	}
	if err := e.srv.Reload(); err != nil {
		t.Fatal(err)
	}
	if got, want := e.adminKeys(), "openai/k0:disabled,openai/k1:active"; got != want {
		t.Fatalf("after the reload: %s, want %s", got, want)
	}
	// The reload's removal of k9 keeps its secret scrubbed a while.
	resp := e.do("POST", "/openai/v1/echo", token, "quote "+secretNew)
	if body := readAll(t, resp); strings.Contains(body, "dddddddd") {
		t.Fatalf("the secret of a key the reload removed was not scrubbed: %q", body)
	}
}

// Every call is logged with its user, route, key and status, never with
// a secret (the env's cleanup fails on the canary in the logs).
func TestAdminLogged(t *testing.T) {
	e := adminEnv(t)
	e.admin("POST", adminAPI+"/keys", `{"id": "k9", "secret": "`+secretNew+`"}`)
	e.admin("POST", adminAPI+"/keys/"+secretNew+"/disable", "")
	e.adminAs("", "", "GET", adminAPI+"/keys", "")
	var lines []map[string]any
	for _, l := range strings.Split(e.logs.String(), "\n") {
		var m map[string]any
		if json.Unmarshal([]byte(l), &m) == nil && m["msg"] == "admin" {
			lines = append(lines, m)
		}
	}
	if len(lines) != 3 {
		t.Fatalf("%d admin log lines:\n%s", len(lines), e.logs.String())
	}
	want := []string{
		"root POST POST /admin/api/v1/upstreams/{name}/keys openai openai/k9 201",
		"root POST POST /admin/api/v1/upstreams/{name}/keys/{id}/disable openai  404",
		" GET /admin/api/v1/   401",
	}
	for i, m := range lines {
		got := fmt.Sprint(m["user"], " ", m["method"], " ", m["route"], " ", m["upstream"], " ", m["key"], " ", m["status"])
		if got != want[i] {
			t.Errorf("log line %d: %q, want %q", i, got, want[i])
		}
	}
}

// With admin.listen, the admin API is on the admin listener only.
func TestAdminOnAdminListener(t *testing.T) {
	e := newEnv(t, envOpts{noServe: true, yaml: func(up, kf string) string {
		return fmt.Sprintf(baseYAML, sha(token), "", sha(token2), up, kf, up) +
			"admin:\n  listen: 127.0.0.1:0\n  users: [{name: root, password_sha256: " + sha(adminPass) + "}]\n"
	}})
	cfg, err := config.Load(e.cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	srv, err := proxy.New(context.Background(), cfg, proxy.Options{})
	if err != nil {
		t.Fatal(err)
	}
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	aln, _ := net.Listen("tcp", "127.0.0.1:0")
	go srv.Serve(ln, aln)
	defer srv.Shutdown(context.Background())
	get := func(addr string) int {
		r, _ := http.NewRequest("GET", "http://"+addr+adminAPI+"/keys", nil)
		r.SetBasicAuth("root", adminPass)
		resp, err := http.DefaultClient.Do(r)
		if err != nil {
			t.Fatal(err)
		}
		readAll(t, resp)
		return resp.StatusCode
	}
	if code := get(aln.Addr().String()); code != 200 {
		t.Errorf("admin listener: %d", code)
	}
	if code := get(ln.Addr().String()); code == 200 {
		t.Errorf("the main listener served the admin API")
	}
}

// Without admin.users there is no admin API: its paths go to the proxy.
func TestAdminAPIOffWithoutUsers(t *testing.T) {
	e := newEnv(t, envOpts{})
	r, _ := http.NewRequest("GET", e.url+adminAPI+"/keys", nil)
	r.SetBasicAuth("root", adminPass)
	r.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(r)
	if err != nil {
		t.Fatal(err)
	}
	readAll(t, resp)
	if resp.StatusCode != 404 || resp.Header.Get("X-Apipool-Error") != "not_found" {
		t.Errorf("%d %s", resp.StatusCode, resp.Header.Get("X-Apipool-Error"))
	}
}

// Admin calls, reloads and requests at once (for -race): every request
// is answered, and the pool ends as the key file says.
func TestAdminConcurrent(t *testing.T) {
	e := adminEnv(t)
	var wg sync.WaitGroup
	wg.Add(3)
	go func() {
		defer wg.Done()
		for i := 0; i < 10; i++ {
			e.admin("POST", adminAPI+"/keys", `{"id": "k9", "secret": "`+secretNew+`"}`)
			e.admin("GET", adminAPI+"/keys", "")
			e.admin("POST", adminAPI+"/keys/k1/disable", "")
			e.admin("POST", adminAPI+"/keys/k1/enable", "")
			e.admin("DELETE", adminAPI+"/keys/k9", "")
		}
	}()
	go func() {
		defer wg.Done()
		for i := 0; i < 10; i++ {
			if err := e.srv.Reload(); err != nil {
				t.Error(err)
			}
		}
	}()
	go func() {
		defer wg.Done()
		for i := 0; i < 20; i++ {
			resp := e.do("GET", "/openai/v1/models", token, "")
			if readAll(t, resp); resp.StatusCode != 200 {
				t.Errorf("status %d", resp.StatusCode)
			}
		}
	}()
	wg.Wait()
	if err := e.srv.Reload(); err != nil {
		t.Fatal(err)
	}
	if got, want := e.adminKeys(), "openai/k0:active,openai/k1:active"; got != want {
		t.Fatalf("after all: %s, want %s", got, want)
	}
}

// TestAdminAddAfterReloadTakesNewBudgets: a key added through the admin
// API gets the key_budgets (and key_limits) of the last reload, as the
// key file's keys do, not those of the start.
func TestAdminAddAfterReloadTakesNewBudgets(t *testing.T) {
	budget := func(n int) string {
		return fmt.Sprintf("    max_wait: 0s\n    key_budgets: {tokens_per_day: %d}\n    usage: {reader: openai}\n", n)
	}
	e := newEnv(t, envOpts{secrets: []string{secretA, secretB, secretNew}, yaml: func(up, kf string) string {
		kf += ".admin"
		if err := os.WriteFile(kf, []byte("k0 "+secretA+"\nk1 "+secretB+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		y := fmt.Sprintf(baseYAML, sha(token), "", sha(token2), up, kf, up) + fmt.Sprintf(adminYAMLs, sha(adminPass))
		return strings.Replace(y, "    max_wait: 0s\n", budget(16), 1)
	}})
	y, err := os.ReadFile(e.cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	y2 := strings.Replace(string(y), budget(16), budget(24), 1)
	if y2 == string(y) {
		t.Fatal("the test's config has no key_budgets to change")
	}
	if err := os.WriteFile(e.cfgPath, []byte(y2), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := e.srv.Reload(); err != nil {
		t.Fatal(err)
	}
	if code, body := e.admin("POST", adminAPI+"/keys", `{"id": "k9", "secret": "`+secretNew+`"}`); code != http.StatusCreated {
		t.Fatalf("add: %d %s", code, body)
	}
	for _, s := range e.srv.Pool("openai").Snapshot() {
		if s.KeyID == "openai/k9" && (len(s.Budgets) != 1 || s.Budgets[0].Limit != 24) {
			t.Errorf("the added key's budgets %+v, want tokens_per_day 24 (the reloaded key_budgets)", s.Budgets)
		}
	}
}
