package proxy_test

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/apipool-ng/apipool/cmd/apipool/internal/fakeapi"
)

// need returns the path of a program the test needs. Without it the test
// fails when CI=true and is skipped elsewhere.
func need(t *testing.T, name, hint string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("%s is missing (CI=true): %s", name, hint)
		}
		t.Skipf("%s is missing: %s", name, hint)
	}
	return p
}

// TestCurl runs curl, a client no one here wrote, through the proxy: a
// plain call, and a streamed one read with -N while the upstream holds the
// rest of the stream.
func TestCurl(t *testing.T) {
	curl := need(t, "curl", "apt-get install -y curl (scripts/install-test-deps.sh does)")
	e := newEnv(t, envOpts{limited: []string{secretLim}})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	args := func(extra ...string) []string {
		return append([]string{"-sS", "--fail-with-body", "-H", "Authorization: Bearer " + token, "-H", "Content-Type: application/json"}, extra...)
	}
	for i := 0; i < 6; i++ {
		out, err := exec.CommandContext(ctx, curl, args("-d", `{"model":"fake-1","messages":[]}`, e.url+"/openai/v1/chat/completions")...).CombinedOutput()
		if err != nil {
			t.Fatalf("curl: %v\n%s", err, out)
		}
		var c struct {
			Choices []struct{ Message struct{ Content string } }
		}
		if err := json.Unmarshal(out, &c); err != nil || len(c.Choices) != 1 || c.Choices[0].Message.Content == "" {
			t.Fatalf("curl answer %q: %v", out, err)
		}
	}

	release := e.api.Hold()
	cmd := exec.CommandContext(ctx, curl, args("-N", "-d", `{"model":"fake-1","stream":true}`, e.url+"/openai/v1/chat/completions")...)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	rd := bufio.NewReader(stdout)
	first, err := rd.ReadString('\n')
	if err != nil || !strings.HasPrefix(first, "data: ") || !strings.Contains(first, fakeapi.Words[0]) {
		t.Fatalf("first streamed line %q, %v", first, err)
	}
	// curl printed the first event while the upstream still held the
	// others: the proxy flushed it as it arrived.
	release()
	rest, _ := io.ReadAll(rd)
	if err := cmd.Wait(); err != nil {
		t.Fatalf("curl -N: %v", err)
	}
	if !strings.HasSuffix(string(rest), "data: [DONE]\n\n") || strings.Count(string(rest), "data: ") != len(fakeapi.Words) {
		t.Fatalf("rest of the stream: %q", rest)
	}
	checkRotation(t, e)
}

func checkRotation(t *testing.T, e *env) {
	t.Helper()
	served := e.api.Served()
	if served[secretA] == 0 || served[secretB] == 0 {
		t.Errorf("keys did not rotate: %v", served)
	}
	if e.api.Limited()[secretLim] == 0 {
		t.Errorf("the rate-limited key was never tried: keys did not rotate over it")
	}
	if e.api.SawText(token) {
		t.Error("the caller's token reached the upstream")
	}
	for _, r := range e.api.Requests() {
		if a := r.Header.Get("Authorization"); a != "Bearer "+secretA && a != "Bearer "+secretB && a != "Bearer "+secretLim {
			t.Errorf("upstream Authorization %q is not a pool key", a)
		}
	}
}

// nodeModules installs the pinned openai package (testdata/node's
// package-lock.json) once into the user's cache directory, and returns the
// directory holding node_modules.
func nodeModules(t *testing.T, npm string) string {
	t.Helper()
	src := filepath.Join("..", "..", "testdata", "node")
	lock, err := os.ReadFile(filepath.Join(src, "package-lock.json"))
	if err != nil {
		t.Fatal(err)
	}
	pkg, err := os.ReadFile(filepath.Join(src, "package.json"))
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(append(append([]byte{}, pkg...), lock...))
	cache, err := os.UserCacheDir()
	if err != nil {
		cache = os.TempDir()
	}
	root := filepath.Join(cache, "apipool-test-node")
	dir := filepath.Join(root, hex.EncodeToString(sum[:8]))
	if _, err := os.Stat(filepath.Join(dir, "node_modules", "openai", "package.json")); err == nil {
		return dir
	}
	if err := os.MkdirAll(root, 0o755); err != nil {
		t.Fatal(err)
	}
	tmp, err := os.MkdirTemp(root, "install-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(tmp)
	for name, b := range map[string][]byte{"package.json": pkg, "package-lock.json": lock} {
		if err := os.WriteFile(filepath.Join(tmp, name), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, npm, "ci", "--no-audit", "--no-fund", "--ignore-scripts", "--loglevel=error")
	cmd.Dir = tmp
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("npm ci (the pinned openai package): %v\n%s", err, out)
	}
	if err := os.Rename(tmp, dir); err != nil && !os.IsExist(err) {
		if _, serr := os.Stat(filepath.Join(dir, "node_modules")); serr != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// TestNodeOpenAI runs the official openai npm package (pinned in
// testdata/node) under Node against the proxy: chat completions and a
// streamed completion, with the client's own retries off.
func TestNodeOpenAI(t *testing.T) {
	node := need(t, "node", "Node.js 20 or later with npm")
	npm := need(t, "npm", "Node.js 20 or later with npm")
	dir := nodeModules(t, npm)
	script, err := os.ReadFile(filepath.Join("..", "..", "testdata", "node", "client.mjs"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "client.mjs"), script, 0o644); err != nil {
		t.Fatal(err)
	}
	e := newEnv(t, envOpts{limited: []string{secretLim}})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, node, "client.mjs")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "BASE_URL="+e.url+"/openai/v1", "PROXY_TOKEN="+token, "CALLS=6",
		"OPENAI_API_KEY=", "OPENAI_BASE_URL=")
	out, err := cmd.Output()
	if err != nil {
		var stderr string
		if ee, ok := err.(*exec.ExitError); ok {
			stderr = string(ee.Stderr)
		}
		t.Fatalf("node: %v\n%s\n%s", err, out, stderr)
	}
	var res struct {
		Contents []string
		Text     string
		Chunks   int
		Models   []string
	}
	if err := json.Unmarshal(out, &res); err != nil {
		t.Fatalf("node printed %q: %v", out, err)
	}
	if len(res.Contents) != 6 || res.Contents[0] != "Hello from the fake API." {
		t.Errorf("completions %q", res.Contents)
	}
	if res.Text != strings.Join(fakeapi.Words, "") || res.Chunks != len(fakeapi.Words) {
		t.Errorf("streamed %q in %d chunks", res.Text, res.Chunks)
	}
	if len(res.Models) != 1 || res.Models[0] != "fake-1" {
		t.Errorf("models %q", res.Models)
	}
	checkRotation(t, e)
}
