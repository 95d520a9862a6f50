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
		"GEMINI_KEYS": "g1,g2", "CLICKHOUSE_PASSWORD": "pw", "REDIS_PASSWORD": "pw",
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
