package proxy

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/apipool-ng/apipool"
)

// TestProxyErrorCallerCanceled: when the caller has gone away, the
// proxy's answer is 499 canceled (logged as the caller's cancel, not as
// a failed upstream) whatever error the pool returned: a wait for a key
// cut short, or what tearing down the upstream connection left (issue 27
// item 17). With the caller still there the same errors are a 503 and a
// 502, as before.
func TestProxyErrorCallerCanceled(t *testing.T) {
	for _, c := range []struct {
		name     string
		err      error
		canceled bool
		code     int
		log      string
	}{
		{"no key, caller gone", &apipool.NoKeyError{Keys: 3}, true, 499, "request canceled by the caller"},
		{"EOF, caller gone", io.EOF, true, 499, "request canceled by the caller"},
		{"no key", &apipool.NoKeyError{Keys: 3}, false, http.StatusServiceUnavailable, "upstream request failed"},
		{"EOF", io.EOF, false, http.StatusBadGateway, "upstream request failed"},
	} {
		t.Run(c.name, func(t *testing.T) {
			var logs bytes.Buffer
			s := &Server{log: slog.New(slog.NewTextHandler(&logs, nil))}
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			if c.canceled {
				cancel()
			}
			r := httptest.NewRequestWithContext(ctx, http.MethodPost, "/v1/chat", nil)
			w := httptest.NewRecorder()
			s.proxyError(w, r, c.err)
			if w.Code != c.code || !strings.Contains(logs.String(), c.log) {
				t.Fatalf("status %d, log %q; want %d, %q", w.Code, logs.String(), c.code, c.log)
			}
		})
	}
}
