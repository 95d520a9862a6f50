package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestExampleFile keeps cmd/apipool/apipool.example.yaml valid.
func TestExampleFile(t *testing.T) {
	c := exampleConfig(t)
	if len(c.Upstreams) != 2 || len(c.Upstreams[0].Keys) != 2 || len(c.Upstreams[1].Keys) != 2 || c.Tokens[0].Rate != 5 || c.Tokens[1].Rate != 20 {
		t.Fatalf("%+v", c)
	}
	// Routing and usage, as the example's comments say.
	o, g := c.Upstreams[0], c.Upstreams[1]
	if o.Routing != (Routing{Model: "json", CooldownScope: 1, SessionHeader: "X-Session-Id", MaxSessions: 10000}) ||
		o.Usage.Reader != "openai" || !o.Usage.IncludeUsage || len(o.Usage.Prices) != 2 {
		t.Errorf("openai: routing %+v, usage %+v", o.Routing, o.Usage)
	}
	if g.Routing.Model != "path" || g.Keys[1].ID != "gemini/g2" || g.Keys[1].Tier != 1 || len(g.Keys[0].Models) != 1 {
		t.Errorf("gemini: routing %+v, keys %v", g.Routing, g.Keys)
	}
}

// exampleConfig loads cmd/apipool/apipool.example.yaml, with its key file
// and variables.
func exampleConfig(t *testing.T) *Config {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "..", "apipool.example.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	kf := writeKeys(t, "k1 sk-one\nk2 sk-two\n", 0o600)
	b = []byte(strings.ReplaceAll(string(b), "/etc/apipool/openai.keys", kf))
	for k, v := range map[string]string{
		"APIPOOL_FINGERPRINT_KEY": "fp", "APIPOOL_WEB_TOKEN": "a-web-token-long-enough",
		"GEMINI_KEYS": "g1 gkey-one-1111,g2 gkey-two-2222", "CLICKHOUSE_PASSWORD": "pw", "REDIS_PASSWORD": "pw",
		"APIPOOL_WEBHOOK_SECRET": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
	} {
		t.Setenv(k, v)
	}
	c, err := Parse("apipool.example.yaml", b)
	if err != nil {
		t.Fatal(err)
	}
	return c
}
