package proxy_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/apipool-ng/apipool"
	"github.com/apipool-ng/apipool/cmd/apipool/internal/config"
	"github.com/apipool-ng/apipool/cmd/apipool/internal/fakeapi"
	"github.com/apipool-ng/apipool/cmd/apipool/internal/proxy"
	"github.com/apipool-ng/apipool/recorder"
	"github.com/apipool-ng/apipool/recorder/memory"
)

// The secrets hold a canary, so that a test can look for them in logs.
const (
	canary    = "CANARY7f3a"
	secretA   = "sk-a-" + canary + "-aaaaaaaa"
	secretB   = "sk-b-" + canary + "-bbbbbbbb"
	secretLim = "sk-limited-" + canary + "-cccccccc"
	token     = "proxy-token-" + canary + "-0123456789"
	token2    = "other-token-" + canary + "-9876543210"
)

func sha(s string) string {
	h := sha256.Sum256([]byte(s))
	return hex.EncodeToString(h[:])
}

// syncBuffer is a bytes.Buffer safe for the logger's concurrent writes.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// testRecorder is a memory store that notes its Close and any event
// recorded after it, and keeps the events (Kept, routing_test.go).
type testRecorder struct {
	*memory.Store
	events atomic.Int64
	closed atomic.Bool
	late   atomic.Int64
	mu     sync.Mutex
	kept   []recorder.Event
}

func (r *testRecorder) Record(e recorder.Event) {
	if r.closed.Load() {
		r.late.Add(1)
	}
	r.events.Add(1)
	r.mu.Lock()
	r.kept = append(r.kept, e)
	r.mu.Unlock()
	r.Store.Record(e)
}

func (r *testRecorder) Close(ctx context.Context) error {
	r.closed.Store(true)
	return r.Store.Close(ctx)
}

// env is a proxy in front of a fake API.
type env struct {
	t        *testing.T
	api      *fakeapi.API
	upstream *httptest.Server
	srv      *proxy.Server
	url      string // the proxy's base URL
	rec      *testRecorder
	logs     *syncBuffer
	dir      string
	cfgPath  string
	keyFile  string
	served   chan error
}

type envOpts struct {
	extra   string // YAML appended to the token list's first token
	secrets []string
	limited []string
	noServe bool
	ownRec  bool              // use the configured recorder, not a testRecorder
	rec     recorder.Recorder // use this recorder (e.rec stays nil)
	yaml    func(upstreamURL, keyFile string) string
	pool    func(upstream string) []apipool.Option // proxy.Options.PoolOptions
}

const baseYAML = `listen: 127.0.0.1:0
log: {format: json, level: debug}
server:
  shutdown_timeout: 20s
reload: {interval: 0s}
tokens:
  - name: main
    sha256: %s
%s  - name: other
    sha256: %s
    upstreams: [other]
upstreams:
  - name: openai
    prefix: /openai
    target: %s
    keys:
      file: %s
    max_wait: 0s
    probe: {path: /v1/models}
  - name: other
    prefix: /other
    host: other.test
    target: %s
    keys:
      env: APIPOOL_TEST_OTHER_KEYS
`

func newEnv(t *testing.T, o envOpts) *env {
	t.Helper()
	if o.secrets == nil {
		o.secrets = []string{secretA, secretB}
	}
	e := &env{t: t, logs: &syncBuffer{}, dir: t.TempDir()}
	e.api = fakeapi.New(o.secrets, o.limited...)
	e.upstream = httptest.NewServer(e.api)
	t.Cleanup(e.upstream.Close)
	e.keyFile = filepath.Join(e.dir, "openai.keys")
	var lines []string
	for i, s := range append(append([]string{}, o.secrets...), o.limited...) {
		lines = append(lines, fmt.Sprintf("k%d %s", i, s))
	}
	e.writeKeys(strings.Join(lines, "\n"))
	t.Setenv("APIPOOL_TEST_OTHER_KEYS", secretA)
	y := fmt.Sprintf(baseYAML, sha(token), o.extra, sha(token2), e.upstream.URL, e.keyFile, e.upstream.URL)
	if o.yaml != nil {
		y = o.yaml(e.upstream.URL, e.keyFile)
	}
	e.cfgPath = filepath.Join(e.dir, "apipool.yaml")
	if err := os.WriteFile(e.cfgPath, []byte(y), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Load(e.cfgPath)
	if err != nil {
		t.Fatalf("config: %v", err)
	}
	log := slog.New(slog.NewJSONHandler(e.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	po := proxy.Options{Logger: log, PoolOptions: o.pool}
	if o.rec != nil {
		po.Recorder = o.rec
	} else if !o.ownRec {
		store, err := memory.New()
		if err != nil {
			t.Fatal(err)
		}
		e.rec = &testRecorder{Store: store}
		po.Recorder = e.rec
	}
	e.srv, err = proxy.New(context.Background(), cfg, po)
	if err != nil {
		t.Fatal(err)
	}
	if o.noServe {
		t.Cleanup(func() { e.srv.Shutdown(context.Background()) })
		return e
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	e.url = "http://" + ln.Addr().String()
	e.served = make(chan error, 1)
	go func() { e.served <- e.srv.Serve(ln, nil) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		e.srv.Shutdown(ctx)
		<-e.served
		if strings.Contains(e.logs.String(), canary) {
			t.Errorf("a secret or token reached the logs:\n%s", e.logs.String())
		}
	})
	return e
}

func (e *env) writeKeys(s string) {
	e.t.Helper()
	tmp := e.keyFile + ".tmp"
	if err := os.WriteFile(tmp, []byte(s+"\n"), 0o600); err != nil {
		e.t.Fatal(err)
	}
	if err := os.Rename(tmp, e.keyFile); err != nil {
		e.t.Fatal(err)
	}
}

// do sends a request to the proxy with the given token ("" for none).
func (e *env) do(method, path, tok string, body string, hdr ...string) *http.Response {
	e.t.Helper()
	var r *http.Request
	var err error
	if body != "" {
		r, err = http.NewRequest(method, e.url+path, strings.NewReader(body))
	} else {
		r, err = http.NewRequest(method, e.url+path, nil)
	}
	if err != nil {
		e.t.Fatal(err)
	}
	if tok != "" {
		r.Header.Set("Authorization", "Bearer "+tok)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		if hdr[i] == "Host" {
			r.Host = hdr[i+1]
			continue
		}
		r.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := http.DefaultClient.Do(r)
	if err != nil {
		e.t.Fatal(err)
	}
	return resp
}

func readAll(t *testing.T, resp *http.Response) string {
	t.Helper()
	defer resp.Body.Close()
	var b bytes.Buffer
	if _, err := b.ReadFrom(resp.Body); err != nil {
		t.Fatal(err)
	}
	return b.String()
}

// rawRequest writes raw bytes to the proxy and returns the status line.
func rawRequest(t *testing.T, addr, raw string) string {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(30 * time.Second))
	if _, err := c.Write([]byte(raw)); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 4096)
	n, _ := c.Read(buf)
	line, _, _ := strings.Cut(string(buf[:n]), "\r\n")
	return line
}
