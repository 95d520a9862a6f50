package proxy_test

import (
	"bytes"
	"context"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/apipool-ng/apipool/cmd/apipool/internal/config"
	"github.com/apipool-ng/apipool/cmd/apipool/internal/proxy"
)

func runMain(stdin string, args ...string) (code int, stdout, stderr string) {
	var o, e bytes.Buffer
	code = proxy.Main(context.Background(), args, strings.NewReader(stdin), &o, &e)
	return code, o.String(), e.String()
}

func TestMainCommands(t *testing.T) {
	e := newEnv(t, envOpts{noServe: true})
	bad := filepath.Join(e.dir, "bad.yaml")
	os.WriteFile(bad, []byte("listen: nope\n"), 0o600)

	code, out, _ := runMain("s3cret-token-value\n", "hash-token")
	if code != 0 || strings.TrimSpace(out) != sha("s3cret-token-value") {
		t.Errorf("hash-token: %d %q", code, out)
	}
	if code, out, _ = runMain("", "validate", "-config", e.cfgPath); code != 0 || !strings.Contains(out, "ok (2 upstreams, 3 keys, 2 tokens)") {
		t.Errorf("validate: %d %q", code, out)
	}
	code, _, errOut := runMain("", "validate", "-config", bad)
	if code != proxy.ExitBadConfig || !strings.Contains(errOut, "bad.yaml:1: listen: want host:port") {
		t.Errorf("validate of a bad file: %d %q", code, errOut)
	}
	if code, _, _ = runMain("", "frobnicate"); code != proxy.ExitBadConfig {
		t.Errorf("unknown command: %d", code)
	}
	if code, _, _ = runMain(""); code != proxy.ExitBadConfig {
		t.Errorf("no command: %d", code)
	}
	code, _, errOut = runMain("", "report", "-config", e.cfgPath)
	if code != proxy.ExitBadConfig || !strings.Contains(errOut, "memory recorder") {
		t.Errorf("report with the memory recorder: %d %q", code, errOut)
	}
	if code, _, _ = runMain("", "report", "-config", e.cfgPath, "-format", "xml"); code != proxy.ExitBadConfig {
		t.Errorf("report -format xml: %d", code)
	}
	// check: one key is unusable, so the exit status is 1.
	os.WriteFile(e.keyFile, []byte("good "+secretA+"\nbad sk-revoked-"+canary+"\n"), 0o600)
	code, out, errOut = runMain("", "check", "-config", e.cfgPath)
	if code != proxy.ExitFailure || !strings.Contains(out, "openai/bad") || !strings.Contains(errOut, "1 of 2 keys unusable") {
		t.Errorf("check with a revoked key: %d\n%s\n%s", code, out, errOut)
	}
	os.WriteFile(e.keyFile, []byte("good "+secretA+"\n"), 0o600)
	if code, out, _ = runMain("", "check", "-config", e.cfgPath); code != 0 {
		t.Errorf("check with good keys: %d\n%s", code, out)
	}
	if strings.Contains(out+errOut, canary) {
		t.Error("a secret was printed")
	}
}

// TestRunSignals runs the command's serve loop: SIGHUP reloads the keys,
// SIGTERM stops it with exit status 0.
func TestRunSignals(t *testing.T) {
	const secretC = "sk-c-" + canary + "-cccccccc"
	e := newEnv(t, envOpts{noServe: true, secrets: []string{secretA, secretB, secretC}})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan int, 1)
	go func() { done <- proxy.Run(context.Background(), e.srv, ln, nil) }()
	url := "http://" + ln.Addr().String()
	// Once /healthz answers, Run has registered for the signals.
	waitFor(t, "the server", func() bool {
		resp, err := http.Get(url + "/healthz")
		if err == nil {
			resp.Body.Close()
		}
		return err == nil
	})
	e.writeKeys("c " + secretC)
	syscall.Kill(os.Getpid(), syscall.SIGHUP)
	waitFor(t, "the reload", func() bool { ids := keyIDs(e); return len(ids) == 1 && ids[0] == "openai/c" })
	syscall.Kill(os.Getpid(), syscall.SIGTERM)
	if code := <-done; code != 0 {
		t.Fatalf("Run returned %d", code)
	}
	if !e.rec.closed.Load() {
		t.Fatal("the recorder was not closed")
	}
}

func TestPrometheusMetrics(t *testing.T) {
	e := newEnv(t, envOpts{noServe: true, yaml: func(up, kf string) string {
		return `tokens: [{name: a, sha256: ` + sha(token) + `}]
telemetry: {prometheus: true}
admin: {listen: 127.0.0.1:0}
upstreams:
  - {name: openai, prefix: /openai, target: '` + up + `', keys: {file: ` + kf + `}}
`
	}})
	cfg, _ := config.Load(e.cfgPath)
	if cfg.AdminListen == "" || e.srv.AdminHandler() == nil {
		t.Fatal("no admin handler")
	}
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	aln, _ := net.Listen("tcp", "127.0.0.1:0")
	go e.srv.Serve(ln, aln)
	resp := e.doURL(t, "http://"+ln.Addr().String()+"/openai/v1/models")
	if resp.StatusCode != 200 {
		t.Fatalf("status %d", resp.StatusCode)
	}
	// The admin endpoints are on the admin listener only.
	r, err := http.Get("http://" + ln.Addr().String() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	if readAll(t, r); r.StatusCode != 401 {
		t.Errorf("/metrics on the proxy listener: %d, want 401 (an upstream path)", r.StatusCode)
	}
	r, err = http.Get("http://" + aln.Addr().String() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(r.Body)
	r.Body.Close()
	for _, want := range []string{"http_server_request_duration_seconds_bucket", "apipool_upstream=\"openai\"", "http_client_request_duration_seconds"} {
		if !strings.Contains(string(body), want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	if strings.Contains(string(body), canary) {
		t.Error("/metrics shows a secret")
	}
}

func (e *env) doURL(t *testing.T, u string) *http.Response {
	r, _ := http.NewRequest("GET", u, nil)
	r.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(r)
	if err != nil {
		t.Fatal(err)
	}
	readAll(t, resp)
	return resp
}
