package proxy_test

import (
	"bytes"
	"context"
	"encoding/json"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/apipool-ng/apipool/cmd/apipool/internal/config"
	"github.com/apipool-ng/apipool/cmd/apipool/internal/proxy"
)

// waitFor polls cond until it holds or a generous deadline passes.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func keyIDs(e *env) []string {
	var ids []string
	for _, k := range e.srv.Pool("openai").Snapshot() {
		ids = append(ids, k.KeyID)
	}
	return ids
}

func TestReloadKeys(t *testing.T) {
	const secretC = "sk-c-" + canary + "-cccccccc"
	e := newEnv(t, envOpts{secrets: []string{secretA, secretB, secretC}})
	e.writeKeys("k0 " + secretA + "\nk1 " + secretB) // k2 (C) not yet
	if err := e.srv.Reload(); err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(keyIDs(e), ","); got != "openai/k0,openai/k1" {
		t.Fatalf("keys after the first reload: %s", got)
	}
	// A request in flight on an old key...
	release := e.api.Hold()
	done := make(chan int, 1)
	go func() {
		resp := e.do("GET", "/openai/v1/slow", token, "")
		readAll(t, resp)
		done <- resp.StatusCode
	}()
	waitFor(t, "the held request", func() bool { return len(e.api.Requests()) == 1 })
	held := e.api.Requests()[0].Header.Get("Authorization")

	// ...survives a reload that removes every old key.
	e.writeKeys("k2 " + secretC)
	if err := e.srv.Reload(); err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(keyIDs(e), ","); got != "openai/k2" {
		t.Fatalf("keys after the second reload: %s", got)
	}
	release()
	if code := <-done; code != 200 {
		t.Fatalf("the request in flight during the reload: status %d", code)
	}
	if held == "Bearer "+secretC {
		t.Fatal("the held request used the new key already")
	}
	before := e.api.Served()[secretC]
	for i := 0; i < 3; i++ {
		resp := e.do("GET", "/openai/v1/models", token, "")
		if readAll(t, resp); resp.StatusCode != 200 {
			t.Fatalf("status %d", resp.StatusCode)
		}
	}
	if e.api.Served()[secretC]-before != 3 {
		t.Fatalf("requests after the reload did not all use the new key: %v", e.api.Served())
	}
	// A changed secret under the same ID is replaced.
	e.writeKeys("k2 " + secretA)
	if err := e.srv.Reload(); err != nil {
		t.Fatal(err)
	}
	before = e.api.Served()[secretA]
	resp := e.do("GET", "/openai/v1/models", token, "")
	readAll(t, resp)
	if e.api.Served()[secretA] != before+1 {
		t.Fatal("the replaced secret is not used")
	}
}

func TestReloadBadFileKeepsRunningConfig(t *testing.T) {
	e := newEnv(t, envOpts{})
	if err := os.Chmod(e.keyFile, 0o644); err != nil {
		t.Fatal(err)
	}
	err := e.srv.Reload()
	if err == nil || !strings.Contains(err.Error(), "open to other users") {
		t.Fatalf("reload of a world-readable key file: %v", err)
	}
	if len(keyIDs(e)) != 2 {
		t.Fatalf("keys changed after a failed reload: %v", keyIDs(e))
	}
	resp := e.do("GET", "/openai/v1/models", token, "")
	if readAll(t, resp); resp.StatusCode != 200 {
		t.Fatalf("status %d", resp.StatusCode)
	}
}

func TestReloadTokens(t *testing.T) {
	e := newEnv(t, envOpts{})
	const newToken = "new-token-" + canary + "-abcdefabcdef"
	y, _ := os.ReadFile(e.cfgPath)
	os.WriteFile(e.cfgPath, bytes.Replace(y, []byte(sha(token)), []byte(sha(newToken)), 1), 0o600)
	if err := e.srv.Reload(); err != nil {
		t.Fatal(err)
	}
	resp := e.do("GET", "/openai/v1/models", token, "")
	if readAll(t, resp); resp.StatusCode != 401 {
		t.Fatalf("old token after reload: status %d", resp.StatusCode)
	}
	resp = e.do("GET", "/openai/v1/models", newToken, "")
	if readAll(t, resp); resp.StatusCode != 200 {
		t.Fatalf("new token after reload: status %d", resp.StatusCode)
	}
}

func TestReloadOnFileChange(t *testing.T) {
	const secretC = "sk-c-" + canary + "-cccccccc"
	e := newEnv(t, envOpts{secrets: []string{secretA, secretB, secretC}})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go e.srv.Watch(ctx, 10*time.Millisecond)
	e.writeKeys("only " + secretC)
	waitFor(t, "the key file change to be picked up", func() bool {
		ids := keyIDs(e)
		return len(ids) == 1 && ids[0] == "openai/only"
	})
}

func TestGracefulShutdown(t *testing.T) {
	e := newEnv(t, envOpts{})
	release := e.api.Hold()
	const n = 4
	var wg sync.WaitGroup
	codes := make(chan int, n)
	bodies := make(chan string, n)
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r, _ := http.NewRequest("GET", e.url+"/openai/v1/slow", nil)
			r.Header.Set("Authorization", "Bearer "+token)
			resp, err := (&http.Client{Transport: &http.Transport{}}).Do(r)
			if err != nil {
				t.Errorf("in-flight request cut: %v", err)
				return
			}
			bodies <- readAll(t, resp)
			codes <- resp.StatusCode
		}()
	}
	waitFor(t, "the requests to reach the upstream", func() bool { return len(e.api.Requests()) == n })

	shut := make(chan error, 1)
	go func() { shut <- e.srv.Shutdown(context.Background()) }()
	waitFor(t, "readiness to drop", func() bool { return !e.srv.Ready() })
	addr := strings.TrimPrefix(e.url, "http://")
	waitFor(t, "the listener to close", func() bool {
		c, err := net.Dial("tcp", addr)
		if err == nil {
			c.Close()
		}
		return err != nil
	})
	if e.rec.closed.Load() {
		t.Fatal("the recorder closed while requests were in flight")
	}
	release()
	wg.Wait()
	close(codes)
	for c := range codes {
		if c != 200 {
			t.Errorf("in-flight request: status %d", c)
		}
	}
	close(bodies)
	for b := range bodies {
		var v struct{ OK bool }
		if json.Unmarshal([]byte(b), &v) != nil || !v.OK {
			t.Errorf("in-flight request body %q", b)
		}
	}
	if err := <-shut; err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	if err := <-e.served; err != nil {
		t.Fatalf("Serve: %v", err)
	}
	e.served <- nil // for the cleanup
	if !e.rec.closed.Load() {
		t.Fatal("the recorder was not closed")
	}
	if got := e.rec.events.Load(); got != n {
		t.Fatalf("the recorder holds %d events, want %d", got, n)
	}
	if e.rec.late.Load() != 0 {
		t.Fatal("events were recorded after the recorder closed")
	}
}

func TestHealthAndReady(t *testing.T) {
	e := newEnv(t, envOpts{})
	for _, p := range []string{"/healthz", "/readyz"} {
		resp, err := http.Get(e.url + p)
		if err != nil {
			t.Fatal(err)
		}
		if readAll(t, resp); resp.StatusCode != 200 {
			t.Errorf("%s: %d", p, resp.StatusCode)
		}
	}
	// No /metrics without telemetry.prometheus, and no token needed for
	// health.
	resp, _ := http.Get(e.url + "/metrics")
	if readAll(t, resp); resp.StatusCode != 401 {
		t.Errorf("/metrics without Prometheus: %d, want 401 (it is an upstream path then)", resp.StatusCode)
	}
}

func TestCheck(t *testing.T) {
	e := newEnv(t, envOpts{noServe: true})
	kf := e.keyFile
	os.WriteFile(kf, []byte("good "+secretA+"\nbad sk-revoked-"+canary+"\n"), 0o600)
	cfg, err := config.Load(e.cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	res, err := proxy.Check(context.Background(), cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	bad, skipped := proxy.PrintCheck(&out, res)
	if bad != 1 || skipped != 1 {
		t.Fatalf("unusable %d, skipped %d; want 1 and 1 (the other upstream has no probe):\n%s", bad, skipped, out.String())
	}
	table := out.String()
	rows := map[string]string{}
	for _, line := range strings.Split(table, "\n") {
		if f := strings.Fields(line); len(f) >= 3 {
			rows[f[1]] = strings.Join(f[2:], " ")
		}
	}
	if r := rows["openai/good"]; r != "yes success" {
		t.Errorf("good key row %q", r)
	}
	if r := rows["openai/bad"]; !strings.HasPrefix(r, "NO invalid key") {
		t.Errorf("bad key row %q", r)
	}
	if strings.Contains(table, canary) {
		t.Fatalf("the table shows a secret:\n%s", table)
	}
}

func TestReportFromStats(t *testing.T) {
	e := newEnv(t, envOpts{limited: []string{secretLim}})
	for i := 0; i < 5; i++ {
		resp := e.do("GET", "/openai/v1/models", token, "")
		readAll(t, resp)
	}
	rep, err := proxy.BuildReport(context.Background(), e.rec.Store, time.Hour, time.Now().Add(time.Second))
	if err != nil {
		t.Fatal(err)
	}
	if rep.UsageCount["success"] != 5 || rep.UsageCount["reach limit"] != 1 || rep.UsageCount["all"] != 6 {
		t.Fatalf("usage counts %v", rep.UsageCount)
	}
	var sum int64
	for _, k := range rep.Keys {
		sum += k.Success
		if k.Key == "openai/k2" && k.ReachLimit != 1 {
			t.Errorf("limited key row %+v", k)
		}
	}
	if sum != 5 || len(rep.UsageByKey) != 3 {
		t.Fatalf("per key %+v, by key %v", rep.Keys, rep.UsageByKey)
	}
	for _, f := range []string{"table", "csv", "json"} {
		var b bytes.Buffer
		if err := rep.Write(&b, f); err != nil || !strings.Contains(b.String(), "openai/k2") {
			t.Errorf("%s: %v\n%s", f, err, b.String())
		}
	}
	var back proxy.Report
	var b bytes.Buffer
	rep.Write(&b, "json")
	if err := json.Unmarshal(b.Bytes(), &back); err != nil || back.UsageCount["all"] != 6 {
		t.Errorf("json round trip: %v %+v", err, back)
	}
}
