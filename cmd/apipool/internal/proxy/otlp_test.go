package proxy_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
)

// TestOTLPExport sends traces and metrics to a stand-in OTLP/HTTP
// collector; Shutdown flushes both.
func TestOTLPExport(t *testing.T) {
	var mu sync.Mutex
	got := map[string]int{}
	collector := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		got[r.Method+" "+r.URL.Path+" "+r.Header.Get("Content-Type")]++
		mu.Unlock()
		w.Header().Set("Content-Type", "application/x-protobuf")
		w.WriteHeader(http.StatusOK)
	}))
	defer collector.Close()
	e := newEnv(t, envOpts{yaml: func(up, kf string) string {
		return `tokens: [{name: a, sha256: ` + sha(token) + `}]
telemetry:
  otlp: {endpoint: '` + collector.URL + `', interval: 1h}
upstreams:
  - {name: openai, prefix: /openai, target: '` + up + `', keys: {file: ` + kf + `}}
`
	}})
	const callerTrace = "4bf92f3577b34da6a3ce929d0e0e4736"
	resp := e.do("GET", "/openai/v1/models", token, "", "Traceparent", "00-"+callerTrace+"-00f067aa0ba902b7-01")
	if readAll(t, resp); resp.StatusCode != 200 {
		t.Fatalf("status %d", resp.StatusCode)
	}
	if err := e.srv.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	for _, want := range []string{"POST /v1/traces application/x-protobuf", "POST /v1/metrics application/x-protobuf"} {
		if got[want] == 0 {
			t.Errorf("the collector got no %s; got %v", want, got)
		}
	}
	// The pool propagated the trace to the upstream.
	// The pool's spans joined the caller's trace and propagated it.
	if tp := e.api.Requests()[0].Header.Get("Traceparent"); !strings.Contains(tp, callerTrace) || strings.Contains(tp, "00f067aa0ba902b7") {
		t.Errorf("upstream traceparent %q, want the caller's trace with the pool's span", tp)
	}
}
