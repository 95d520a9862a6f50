package proxy_test

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/apipool-ng/apipool"
	"github.com/apipool-ng/apipool/recorder"
)

// heldRecorder stands for a recorder that writes to a store: Record holds
// events, and Close writes them out one by one, each write checking ctx as
// real I/O does, so that a Close whose context has ended writes nothing.
type heldRecorder struct {
	mu      sync.Mutex
	held    []recorder.Event
	written int
	closed  bool
}

func (r *heldRecorder) Record(e recorder.Event) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.closed {
		r.held = append(r.held, e)
	}
}

func (r *heldRecorder) Close(ctx context.Context) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.closed = true
	for ; len(r.held) > 0; r.held = r.held[1:] {
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("held: %d events not written: %w", len(r.held), err)
		}
		r.written++
	}
	return nil
}

func (r *heldRecorder) state() (held, written int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.held), r.written
}

// stuckProbes is a base transport whose requests to /stuck never end
// until released, whatever their context (a slow endpoint behind a base
// that ignores cancellation); it passes the others on.
type stuckProbes struct {
	entered chan struct{}
	release chan struct{}
}

func (b *stuckProbes) RoundTrip(r *http.Request) (*http.Response, error) {
	if r.URL.Path == "/stuck" {
		select {
		case b.entered <- struct{}{}:
		default:
		}
		<-b.release
		return nil, context.Canceled
	}
	return http.DefaultTransport.RoundTrip(r)
}

// TestShutdownStuckProbeLosesNoEvents: the openai pool's probe is stuck
// (its base ignores cancellation) when the server shuts down, with
// shutdown_timeout 2s. The pools close side by side within half of it,
// and the recorder then flushes with the rest: every event of the requests
// served is written, and Shutdown names the probes still running. Before,
// the pools closed one after the other with the whole shutdown_timeout,
// the stuck one took all of it, and the recorder was closed with its
// context over: no event was written.
func TestShutdownStuckProbeLosesNoEvents(t *testing.T) {
	rec := &heldRecorder{}
	base := &stuckProbes{entered: make(chan struct{}, 1), release: make(chan struct{})}
	e := newEnv(t, envOpts{
		rec: rec,
		yaml: func(up, kf string) string {
			y := strings.Replace(baseYAML, "shutdown_timeout: 20s", "shutdown_timeout: 2s", 1)
			return fmt.Sprintf(y, sha(token), "", sha(token2), up, kf, up)
		},
		pool: func(name string) []apipool.Option {
			if name != "openai" {
				return nil
			}
			return []apipool.Option{apipool.WithBase(base),
				apipool.WithProbe(apipool.ProbeRequest("GET", "http://probe.test/stuck"), 10*time.Millisecond)}
		},
	})
	t.Cleanup(func() { close(base.release) }) // before the env's own cleanup
	const n = 20
	for i := range n {
		resp := e.do("GET", "/openai/v1/models", token, "")
		if readAll(t, resp); resp.StatusCode != 200 {
			t.Fatalf("request %d: status %d", i, resp.StatusCode)
		}
	}
	p := e.srv.Pool("openai")
	if err := p.Disable(p.Snapshot()[1].KeyID, "so that the probe loop probes it"); err != nil {
		t.Fatal(err)
	}
	select {
	case <-base.entered:
	case <-time.After(30 * time.Second):
		t.Fatal("the probe loop did not probe the disabled key within 30s")
	}
	if held, _ := rec.state(); held != n {
		t.Fatalf("%d events held before Shutdown, want %d", held, n)
	}
	err := e.srv.Shutdown(context.Background())
	if _, written := rec.state(); written != n {
		t.Fatalf("%d of %d events written; Shutdown: %v", written, n, err)
	}
	if err == nil || !strings.Contains(err.Error(), "upstream openai") || !strings.Contains(err.Error(), "probes") || strings.Contains(err.Error(), "recorder") {
		t.Fatalf("Shutdown: %v, want the openai pool's probes named as still running, and no recorder error", err)
	}
}
