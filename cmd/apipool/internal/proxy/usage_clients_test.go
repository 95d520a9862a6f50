package proxy_test

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/apipool-ng/apipool/cmd/apipool/internal/fakeapi"
)

// TestNodeOpenAIIncludeUsage runs the official openai npm package (pinned
// in testdata/node, testdata/node/usage.mjs) through a proxy whose
// upstream has usage.include_usage on (issue 26 item 2): a stream the
// client did not ask the usage of reaches it as the upstream sends such a
// stream (no usage member in any chunk, no usage chunk), the SDK's
// accumulating helper ends without usage, and a stream that asks for it
// gets it; the proxy's events have the tokens of all three.
func TestNodeOpenAIIncludeUsage(t *testing.T) {
	node := need(t, "node", "Node.js 20 or later with npm")
	npm := need(t, "npm", "Node.js 20 or later with npm")
	dir := nodeModules(t, npm)
	script, err := os.ReadFile(filepath.Join("..", "..", "testdata", "node", "usage.mjs"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "usage.mjs"), script, 0o644); err != nil {
		t.Fatal(err)
	}
	e := routingEnv(t, "    routing: {model: json}\n    usage: {reader: openai, include_usage: true, prices: {fake-1: {input: 1, output: 2}}}\n", secretA, secretB)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, node, "usage.mjs")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "BASE_URL="+e.url+"/openai/v1", "PROXY_TOKEN="+token, "OPENAI_API_KEY=", "OPENAI_BASE_URL=")
	out, err := cmd.Output()
	if err != nil {
		var stderr string
		if ee, ok := err.(*exec.ExitError); ok {
			stderr = string(ee.Stderr)
		}
		t.Fatalf("node: %v\n%s\n%s", err, out, stderr)
	}
	type seen struct {
		Text         string
		Chunks       int
		UsageMembers int
		Usage        *struct {
			PromptTokens     int `json:"prompt_tokens"`
			CompletionTokens int `json:"completion_tokens"`
		}
	}
	var res struct {
		Plain, Asked seen
		Helper       struct {
			Text  string
			Usage *struct{}
		}
	}
	if err := json.Unmarshal(out, &res); err != nil {
		t.Fatalf("node printed %q: %v", out, err)
	}
	words := strings.Join(fakeapi.Words, "")
	if p := res.Plain; p.Text != words || p.Chunks != len(fakeapi.Words) || p.UsageMembers != 0 || p.Usage != nil {
		t.Errorf("the stream that did not ask for usage: %+v; want %d chunks of %q, none with a usage member", p, len(fakeapi.Words), words)
	}
	if a := res.Asked; a.Text != words || a.Chunks != len(fakeapi.Words)+1 || a.Usage == nil ||
		a.Usage.PromptTokens != fakeapi.PromptTokens || a.Usage.CompletionTokens != fakeapi.CompletionTokens {
		t.Errorf("the stream that asked for usage: %+v; want %d chunks, the last with the usage", a, len(fakeapi.Words)+1)
	}
	if h := res.Helper; h.Text != words || h.Usage != nil {
		t.Errorf("the SDK's stream helper: %+v; want %q and no usage", h, words)
	}
	evs := e.waitEvents(3)
	for i, ev := range evs {
		if ev.InputTokens != fakeapi.PromptTokens || ev.OutputTokens != fakeapi.CompletionTokens || ev.Model != "fake-1" || ev.Cost <= 0 {
			t.Errorf("event %d: model %q, tokens %d/%d, cost %v", i, ev.Model, ev.InputTokens, ev.OutputTokens, ev.Cost)
		}
	}
}
