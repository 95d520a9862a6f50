package proxy_test

import (
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
)

// TestBodyReplayWithinBufferBound: a body within max_buffered_body is
// resent whole on another key after a 429; a larger one is streamed once,
// so the caller gets the 429 rather than a resend with a partial body.
func TestBodyReplayWithinBufferBound(t *testing.T) {
	for _, c := range []struct {
		name   string
		size   int
		replay bool
	}{{"within the bound", 4 << 10, true}, {"over the bound", 64 << 10, false}} {
		t.Run(c.name, func(t *testing.T) {
			e := newEnv(t, envOpts{secrets: []string{secretA}, limited: []string{secretLim}, yaml: func(up, kf string) string {
				return fmt.Sprintf(`tokens: [{name: a, sha256: %s}]
upstreams:
  - {name: openai, prefix: /openai, target: '%s', keys: {file: %s}, max_buffered_body: 16KiB, max_wait: 0s}
`, sha(token), up, kf)
			}})
			body := strings.Repeat("z", c.size)
			// Two keys in turn: within two requests one meets the
			// rate-limited key first.
			codes := map[int]int{}
			for i := 0; i < 2 && e.api.Limited()[secretLim] == 0; i++ {
				// An io.Reader without a length: the proxy sees a
				// chunked body, as from a streaming client.
				r, _ := http.NewRequest("POST", e.url+"/openai/v1/echo", io.MultiReader(strings.NewReader(body)))
				r.Header.Set("Authorization", "Bearer "+token)
				resp, err := http.DefaultClient.Do(r)
				if err != nil {
					t.Fatal(err)
				}
				got := readAll(t, resp)
				codes[resp.StatusCode]++
				if resp.StatusCode == 200 && got != body {
					t.Fatalf("echoed %d bytes, want %d", len(got), len(body))
				}
			}
			if e.api.Limited()[secretLim] != 1 {
				t.Fatalf("the rate-limited key was not met: %v", e.api.Limited())
			}
			for _, r := range e.api.Requests() {
				if r.BodyLen != c.size {
					t.Errorf("the upstream got a body of %d bytes, want %d", r.BodyLen, c.size)
				}
			}
			if c.replay && codes[200] != len(e.api.Requests())-1 {
				t.Errorf("answers %v: want every request to succeed after the resend", codes)
			}
			if !c.replay && codes[429] != 1 {
				t.Errorf("answers %v: want the 429 passed to the caller once", codes)
			}
		})
	}
}
