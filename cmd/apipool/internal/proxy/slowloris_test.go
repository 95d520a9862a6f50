package proxy_test

import (
	"fmt"
	"io"
	"net"
	"strings"
	"testing"
	"time"
)

// TestSlowClientsAreCut checks that a client trickling its headers, or
// its body, loses its connection (read_header_timeout, read_timeout), and
// that the slow body never reached the upstream whole.
func TestSlowClientsAreCut(t *testing.T) {
	e := newEnv(t, envOpts{yaml: func(up, kf string) string {
		return fmt.Sprintf(`tokens: [{name: a, sha256: %s}]
server: {read_header_timeout: 200ms, read_timeout: 300ms}
upstreams:
  - {name: openai, prefix: /openai, target: '%s', keys: {file: %s}}
`, sha(token), up, kf)
	}})
	addr := strings.TrimPrefix(e.url, "http://")
	cut := func(name, partial string) {
		t.Run(name, func(t *testing.T) {
			c, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			if _, err := io.WriteString(c, partial); err != nil {
				t.Fatal(err)
			}
			// The client sends nothing more; the server must end the
			// exchange by itself (a generous bound, not a timing claim).
			c.SetReadDeadline(time.Now().Add(30 * time.Second))
			b, err := io.ReadAll(c)
			if ne, ok := err.(net.Error); ok && ne.Timeout() {
				t.Fatalf("the server kept the connection open; read %q", b)
			}
			if strings.HasPrefix(string(b), "HTTP/1.1 200") {
				t.Fatalf("a truncated request was answered 200: %q", b)
			}
		})
	}
	cut("headers", "POST /openai/v1/echo HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "+token+"\r\nX-Slow: ")
	cut("body", "POST /openai/v1/echo HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "+token+"\r\nContent-Length: 100\r\n\r\n0123456789")
	for _, r := range e.api.Requests() {
		if r.BodyLen == 100 {
			t.Fatal("the upstream got the whole slow body")
		}
	}
}

// TestLongStreamOutlivesReadTimeout checks that read_timeout bounds the
// request body only: an answer streamed for longer than it is not cut.
func TestLongStreamOutlivesReadTimeout(t *testing.T) {
	e := newEnv(t, envOpts{yaml: func(up, kf string) string {
		return fmt.Sprintf(`tokens: [{name: a, sha256: %s}]
server: {read_timeout: 100ms}
upstreams:
  - {name: openai, prefix: /openai, target: '%s', keys: {file: %s}}
`, sha(token), up, kf)
	}})
	release := e.api.Hold()
	resp := e.do("POST", "/openai/v1/chat/completions", token, `{"model":"m","stream":true}`)
	defer resp.Body.Close()
	buf := make([]byte, 4096)
	if _, err := resp.Body.Read(buf); err != nil {
		t.Fatal(err)
	}
	// Hold the stream for ten times the read timeout: a deadline left on
	// the connection would cut it (waiting longer only makes the test
	// stricter, so a slow machine cannot make it fail wrongly).
	time.Sleep(time.Second)
	release()
	rest, err := io.ReadAll(resp.Body)
	if err != nil || !strings.HasSuffix(string(rest), "data: [DONE]\n\n") {
		t.Fatalf("the stream was cut: %q, %v", rest, err)
	}
}
