package config

import (
	"encoding/base64"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/apipool-ng/apipool"
	"github.com/apipool-ng/apipool/cmd/apipool/internal/webhook"
)

// hookSecret is a made-up signing secret: the canary's bytes padded to
// 32, base64 after whsec_.
var hookSecret = webhook.SecretPrefix + base64.StdEncoding.EncodeToString([]byte(canary+"-padding-"))

func TestAlertsSection(t *testing.T) {
	t.Setenv("APIPOOL_T_HOOK_SECRET", hookSecret)
	kf := writeKeys(t, "sk-one\n", 0o600)
	y := minimal(kf) + `alerts:
  cooling_threshold: 10m
  no_key_interval: 30s
  webhooks:
    - name: ops
      url: https://hooks.example.com/apipool?channel=ops
      secret: ${APIPOOL_T_HOOK_SECRET}
      kinds: [key.disabled, pool.no_key]
      timeout: 5s
      max_attempts: 3
    - url: http://127.0.0.1:9000/hook
      secret: ${APIPOOL_T_HOOK_SECRET}
`
	c, err := Parse("f.yaml", []byte(y))
	if err != nil {
		t.Fatal(err)
	}
	a := c.Alerts
	if a.CoolingThreshold != 10*time.Minute || a.NoKeyInterval != 30*time.Second || len(a.Webhooks) != 2 {
		t.Fatalf("alerts %+v", a)
	}
	w := a.Webhooks[0]
	if w.Name != "ops" || w.URL.String() != "https://hooks.example.com/apipool?channel=ops" || string(w.Secret) != canary+"-padding-" ||
		!slices.Equal(w.Kinds, []apipool.AlertKind{apipool.AlertKeyDisabled, apipool.AlertNoKey}) || w.Timeout != 5*time.Second || w.MaxAttempts != 3 {
		t.Errorf("webhook %+v", w)
	}
	if w := a.Webhooks[1]; w.Name != "" || w.Kinds != nil || w.Timeout != webhook.DefaultTimeout || w.MaxAttempts != 0 {
		t.Errorf("defaults %+v", w)
	}
	c, err = Parse("f.yaml", []byte(minimal(kf)))
	if err != nil || c.Alerts.CoolingThreshold != 0 || len(c.Alerts.Webhooks) != 0 {
		t.Errorf("without alerts: %+v %v", c.Alerts, err)
	}
}

// Every error of the section names the file, the line and the field, and
// shows no secret: the signing secret, a URL's path or query, a kind
// that looks like a key.
func TestAlertsErrors(t *testing.T) {
	noScrub = true
	defer func() { noScrub = false }()
	setCanaryEnv(t)
	t.Setenv("APIPOOL_T_HOOK_SECRET", hookSecret)
	t.Setenv("APIPOOL_T_SHORT_SECRET", webhook.SecretPrefix+base64.StdEncoding.EncodeToString([]byte(canary[:20])))
	kf := writeKeys(t, "sk-one\n", 0o600)
	base := minimal(kf) // 8 lines: the alerts start on line 9
	hook := func(s string) string {
		return base + "alerts:\n  webhooks:\n    - url: https://hooks.example.com/x\n      secret: ${APIPOOL_T_HOOK_SECRET}\n" + s
	}
	C := canary
	for _, c := range []struct{ name, yaml, want string }{
		{"secret in the file", base + "alerts:\n  webhooks:\n    - url: https://h.example.com/x\n      secret: " + hookSecret + "\n", "f.yaml:12: alerts.webhooks[0].secret: is a secret: write it as ${VAR}"},
		{"secret not whsec_", base + "alerts:\n  webhooks:\n    - url: https://h.example.com/x\n      secret: ${CANARY_VALUE}\n", "f.yaml:12: alerts.webhooks[0].secret: ${CANARY_VALUE}: want a Standard Webhooks secret"},
		{"secret too short", base + "alerts:\n  webhooks:\n    - url: https://h.example.com/x\n      secret: ${APIPOOL_T_SHORT_SECRET}\n", "f.yaml:12: alerts.webhooks[0].secret: ${APIPOOL_T_SHORT_SECRET}: the secret holds 20 bytes; want 24 to 64"},
		{"secret missing", base + "alerts:\n  webhooks:\n    - url: https://h.example.com/x\n", "f.yaml:11: alerts.webhooks[0].secret: missing"},
		{"url missing", base + "alerts:\n  webhooks:\n    - secret: ${APIPOOL_T_HOOK_SECRET}\n", "f.yaml:11: alerts.webhooks[0].url: missing"},
		{"url scheme", base + "alerts:\n  webhooks:\n    - url: ftp://h.example.com/" + C + "\n      secret: ${APIPOOL_T_HOOK_SECRET}\n", "f.yaml:11: alerts.webhooks[0].url: want an http or https URL with a host and no user or fragment: its scheme is not http or https (the URL is not shown)"},
		{"url with a password", base + "alerts:\n  webhooks:\n    - url: 'https://u:" + C + "@h.example.com/'\n      secret: ${APIPOOL_T_HOOK_SECRET}\n", "alerts.webhooks[0].url: want an http or https URL with a host and no user or fragment: it holds a user"},
		{"url from a variable", base + "alerts:\n  webhooks:\n    - url: '${CANARY_URL}'\n      secret: ${APIPOOL_T_HOOK_SECRET}\n", "alerts.webhooks[0].url: want an http or https URL with a host and no user or fragment: it holds a user"},
		{"url without a host", base + "alerts:\n  webhooks:\n    - url: 'https:///" + C + "?k=" + C + "'\n      secret: ${APIPOOL_T_HOOK_SECRET}\n", "it has no host"},
		{"kind typo", hook("      kinds: [key.disabld]\n"), `f.yaml:13: alerts.webhooks[0].kinds[0]: want one of key.disabled, key.enabled, key.cooling, key.breaker_open, key.breaker_closed, pool.no_key, pool.keys_back, budget.near, budget.spent, got "key.disabld"; did you mean key.disabled?`},
		{"kind that is a key", hook("      kinds: [" + C + "]\n"), "alerts.webhooks[0].kinds[0]: want one of key.disabled"},
		{"no kinds", hook("      kinds: []\n"), "f.yaml:11: alerts.webhooks[0].kinds: an empty list would send nothing"},
		{"timeout zero", hook("      timeout: 0s\n"), "f.yaml:13: alerts.webhooks[0].timeout: want a duration above 0 and at most 5m"},
		{"timeout long", hook("      timeout: 1h\n"), "alerts.webhooks[0].timeout: want a duration above 0 and at most 5m"},
		{"attempts", hook("      max_attempts: 0\n"), "f.yaml:13: alerts.webhooks[0].max_attempts: want 1 to 100"},
		{"name", hook("      name: '" + C + " x'\n"), "alerts.webhooks[0].name: want a name of letters"},
		{"name twice", base + "alerts:\n  webhooks:\n    - {name: a, url: 'https://h.example.com/', secret: '${APIPOOL_T_HOOK_SECRET}'}\n    - {name: a, url: 'https://h.example.com/', secret: '${APIPOOL_T_HOOK_SECRET}'}\n", `f.yaml:12: alerts.webhooks[1].name: "a" names alerts.webhooks[0] too`},
		{"unknown setting", hook("      secrt: x\n"), "f.yaml:13: alerts.webhooks[0].secrt: unknown setting; did you mean secret?"},
		{"threshold zero", base + "alerts: {cooling_threshold: 0s}\n", "f.yaml:9: alerts.cooling_threshold: want a duration above 0"},
		{"interval", base + "alerts: {no_key_interval: " + C + "}\n", "f.yaml:9: alerts.no_key_interval: want a duration"},
		{"webhooks not a list", base + "alerts: {webhooks: " + C + "}\n", "f.yaml:9: alerts.webhooks: want a list"},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := Parse("f.yaml", []byte(c.yaml))
			if err == nil {
				t.Fatal("no error")
			}
			msg := err.Error()
			if l := leaks(msg); len(l) > 0 {
				t.Errorf("LEAK: the error shows %q:\n%s", l, msg)
			}
			for _, s := range []string{hookSecret, strings.TrimPrefix(hookSecret, webhook.SecretPrefix), "h.example.com/", "hooks.example.com"} {
				if strings.Contains(msg, s) {
					t.Errorf("LEAK: the error shows %q:\n%s", s, msg)
				}
			}
			if !strings.Contains(msg, c.want) {
				t.Errorf("error:\n%s\nwant it to contain:\n%s", msg, c.want)
			}
		})
	}
}

// The example file's alerts section loads.
func TestExampleAlerts(t *testing.T) {
	a := exampleConfig(t).Alerts
	if a.CoolingThreshold != 5*time.Minute || len(a.Webhooks) != 1 || len(a.Webhooks[0].Kinds) != 6 || len(a.Webhooks[0].Secret) != 24 {
		t.Fatalf("alerts %+v", a)
	}
}
