package proxy_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/apipool-ng/apipool/cmd/apipool/internal/proxy"
	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"
)

// A key the upstream rejects (401) raises an alert that the proxy logs
// and POSTs to the configured webhook, before its shutdown ends: the
// receiver, which fails the first attempt, verifies the signature with the
// official Standard Webhooks library and gets the alert once. Neither the signing secret,
// nor the receiver URL's token, nor a pool key shows in the logs or the
// payload.
func TestAlertWebhookOnRejectedKey(t *testing.T) {
	proxy.ShortWebhookBackoff(t)
	hookSecret := "whsec_" + base64.StdEncoding.EncodeToString([]byte("hook-"+canary+"-0123456789abcdef"))
	t.Setenv("APIPOOL_T_WEBHOOK_SECRET", hookSecret)
	const badKey = "sk-bad-" + canary + "-dddddddd"

	wh, err := standardwebhooks.NewWebhook(hookSecret)
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	attempts := map[string]int{} // webhook-id -> attempts
	bodies := map[string][]byte{}
	var bad []string
	got := make(chan string, 10)
	rcv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		id := r.Header.Get("webhook-id")
		mu.Lock()
		defer mu.Unlock()
		if err := wh.Verify(body, r.Header); err != nil {
			bad = append(bad, err.Error())
		}
		attempts[id]++
		if len(attempts) == 1 && attempts[id] == 1 {
			w.WriteHeader(http.StatusInternalServerError) // the first attempt fails
			return
		}
		if bodies[id] == nil {
			bodies[id] = body
			got <- id
		}
		w.WriteHeader(http.StatusNoContent)
	}))
	defer rcv.Close()

	e := newEnv(t, envOpts{secrets: []string{secretA}, yaml: func(up, kf string) string {
		keys := filepath.Join(filepath.Dir(kf), "mixed.keys")
		if err := os.WriteFile(keys, []byte("bad "+badKey+"\ngood "+secretA+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		return fmt.Sprintf(`log: {format: json, level: debug}
tokens: [{name: a, sha256: %s}]
upstreams:
  - {name: openai, prefix: /openai, target: '%s', keys: {file: %s}}
alerts:
  webhooks:
    - name: ops
      url: '%s/hooks/apipool?token=%s-query'
      secret: ${APIPOOL_T_WEBHOOK_SECRET}
      kinds: [key.disabled]
`, sha(token), up, keys, rcv.URL, canary)
	}})
	// Round robin: within two requests one meets the bad key, is
	// answered by the good one all the same.
	for i := 0; i < 2; i++ {
		resp := e.do("GET", "/openai/v1/models", token, "")
		if b := readAll(t, resp); resp.StatusCode != 200 {
			t.Fatalf("request %d: %d %s", i, resp.StatusCode, b)
		}
	}
	// Shut down at once: the alert, queued in the pool and then in the
	// sender, is delivered (its retry included) before Shutdown returns.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := e.srv.Shutdown(ctx); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	var id string
	select {
	case id = <-got:
	default:
		t.Fatal("the alert was not delivered by the end of Shutdown")
	}

	mu.Lock()
	defer mu.Unlock()
	if len(bad) > 0 {
		t.Errorf("deliveries that do not verify: %q", bad)
	}
	if len(bodies) != 1 || attempts[id] != 2 {
		t.Fatalf("alerts %d, attempts %v: want one alert, accepted on its second attempt", len(bodies), attempts)
	}
	var msg struct {
		Type string `json:"type"`
		Data struct {
			Pool   string `json:"pool"`
			KeyID  string `json:"key_id"`
			Until  string `json:"until"`
			Reason string `json:"reason"`
		} `json:"data"`
	}
	if err := json.Unmarshal(bodies[id], &msg); err != nil {
		t.Fatal(err)
	}
	if msg.Type != "key.disabled" || msg.Data.Pool != "openai" || msg.Data.KeyID != "openai/bad" || !strings.Contains(msg.Data.Reason, "401") || msg.Data.Until == "" {
		t.Errorf("payload %s", bodies[id])
	}
	if strings.Contains(string(bodies[id]), canary) {
		t.Errorf("the payload shows a secret: %s", bodies[id])
	}
	logs := e.logs.String()
	if !strings.Contains(logs, `"msg":"alert"`) || !strings.Contains(logs, `"kind":"key.disabled"`) || !strings.Contains(logs, `"key":"openai/bad"`) {
		t.Errorf("the alert is not logged:\n%s", logs)
	}
	if !strings.Contains(logs, "webhook attempt failed; retrying") || !strings.Contains(logs, `"receiver":"ops"`) {
		t.Errorf("the failed attempt is not logged:\n%s", logs)
	}
	for _, s := range []string{hookSecret, strings.TrimPrefix(hookSecret, "whsec_"), "/hooks/apipool", canary} {
		if strings.Contains(logs, s) {
			t.Errorf("the logs show %q", s)
		}
	}
}
