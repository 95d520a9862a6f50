package proxy_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/apipool-ng/apipool/cmd/apipool/internal/proxy"
)

// The configuration mistakes of issue 27, each of which printed a key or
// a token: validate, serve, check and report print their errors, and a
// reload logs them, without any part of the secret.
func TestConfigErrorsShowNoSecret(t *testing.T) {
	const key = "sk-live-" + canary + "-SECRET"
	keys := "sk-a-" + canary + "-aaaa,sk-b-" + canary + "-bbbb"
	webToken := "web-token-" + canary + "-0123456789"
	t.Setenv("APIPOOL_T_OPENAI_KEYS", keys)
	t.Setenv("APIPOOL_T_WEB_TOKEN", webToken)
	// shows returns the first 8 characters in a row of a secret that s
	// shows, or the key's first 7, which yaml's type error quoted.
	shows := func(s string) string {
		if strings.Contains(s, key[:7]) {
			return key[:7]
		}
		for _, secret := range []string{key, keys, webToken} {
			for i := 0; i+8 <= len(secret); i++ {
				if strings.Contains(s, secret[i:i+8]) {
					return secret[i : i+8]
				}
			}
		}
		return ""
	}
	head := "tokens:\n  - name: web\n    sha256: " + sha(token) + "\nupstreams:\n  - name: openai\n    prefix: /openai\n"
	files := map[string]string{
		"env is a key":           head + "    target: https://api.example.com\n    keys: {env: " + key + "}\n",
		"env is ${VAR}":          head + "    target: https://api.example.com\n    keys: {env: '${APIPOOL_T_OPENAI_KEYS}'}\n",
		"token env is ${VAR}":    strings.Replace(head, "sha256: "+sha(token), "env: '${APIPOOL_T_WEB_TOKEN}'", 1) + "    target: https://api.example.com\n    keys: {env: APIPOOL_T_OPENAI_KEYS}\n",
		"target with a password": head + "    target: 'https://user:" + key + "@api.example.com'\n    keys: {env: APIPOOL_T_OPENAI_KEYS}\n",
		"target with a query":    head + "    target: 'https://api.example.com/v1?key=" + key + "'\n    keys: {env: APIPOOL_T_OPENAI_KEYS}\n",
		"keys is a key":          head + "    target: https://api.example.com\n    keys: " + key + "\n",
	}
	dir := t.TempDir()
	for name, y := range files {
		t.Run(name, func(t *testing.T) {
			p := filepath.Join(dir, strings.ReplaceAll(name, " ", "-")+".yaml")
			if err := os.WriteFile(p, []byte(y), 0o600); err != nil {
				t.Fatal(err)
			}
			for _, cmd := range []string{"validate", "serve", "check", "report"} {
				code, out, errOut := runMain("", cmd, "-config", p)
				if code != proxy.ExitBadConfig || !strings.Contains(errOut, "configuration errors") {
					t.Errorf("%s: exit status %d, stderr %q; want %d and the errors", cmd, code, errOut, proxy.ExitBadConfig)
				}
				if f := shows(out + errOut); f != "" {
					t.Errorf("%s printed a secret (%q):\n%s%s", cmd, f, out, errOut)
				}
			}
		})
	}
	t.Run("reload", func(t *testing.T) {
		e := newEnv(t, envOpts{noServe: true})
		for name, y := range files {
			if err := os.WriteFile(e.cfgPath, []byte(y), 0o600); err != nil {
				t.Fatal(err)
			}
			if err := e.srv.Reload(); err == nil {
				t.Fatalf("%s: the reload took a bad file", name)
			}
		}
		if logs := e.logs.String(); !strings.Contains(logs, "reload failed") || shows(logs) != "" {
			t.Errorf("want the reload's errors logged without a secret:\n%s", logs)
		}
	})
}
