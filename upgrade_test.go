package apipool_test

import (
	"bufio"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/apipool-ng/apipool"
	"github.com/apipool-ng/apipool/status"
)

// upgradeServer answers an upgrade request with 101 and then echoes what
// it reads on the raw connection, line by line. limitFirst answers the
// first request 429 instead. It records the Authorization each request
// brought.
func upgradeServer(t *testing.T, limitFirst bool) (*httptest.Server, *atomic.Value) {
	t.Helper()
	var auths atomic.Value
	auths.Store([]string{})
	var n atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		auths.Store(append(auths.Load().([]string), r.Header.Get("Authorization")))
		if limitFirst && n.Add(1) == 1 {
			w.Header().Set("Retry-After", "60")
			w.WriteHeader(http.StatusTooManyRequests)
			return
		}
		if !strings.EqualFold(r.Header.Get("Upgrade"), "websocket") || !strings.Contains(strings.ToLower(r.Header.Get("Connection")), "upgrade") {
			t.Errorf("upstream: Connection %q, Upgrade %q: not an upgrade", r.Header.Get("Connection"), r.Header.Get("Upgrade"))
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		conn, brw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			t.Errorf("hijack: %v", err)
			return
		}
		defer conn.Close()
		brw.WriteString("HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n")
		brw.Flush()
		for {
			line, err := brw.ReadString('\n')
			if err != nil {
				return
			}
			brw.WriteString("echo " + line)
			brw.Flush()
		}
	}))
	t.Cleanup(srv.Close)
	return srv, &auths
}

func newUpgradeRequest(t *testing.T, url string) *http.Request {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Connection", "Upgrade")
	req.Header.Set("Upgrade", "websocket")
	req.Header.Set("Authorization", "Bearer caller-token")
	return req
}

// An upgrade through the pool goes out with a pool key in place of the
// caller's credential; the 101 answer's body is the connection, an
// io.ReadWriteCloser that carries bytes both ways; the key stays in flight
// while it is open and is freed once, on Close, however often Close runs.
func TestUpgradeHoldsKeyUntilClose(t *testing.T) {
	srv, auths := upgradeServer(t, false)
	p := mustNew(t, keys(1), apipool.WithBase(srv.Client().Transport))

	resp, err := p.RoundTrip(newUpgradeRequest(t, srv.URL+"/v1/realtime"))
	if err != nil {
		t.Fatalf("RoundTrip: %v", err)
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("status %d, want 101", resp.StatusCode)
	}
	if got := auths.Load().([]string); len(got) != 1 || got[0] != "Bearer s0" {
		t.Fatalf("upstream saw Authorization %q, want only the pool's key", got)
	}
	rwc, ok := resp.Body.(io.ReadWriteCloser)
	if !ok {
		t.Fatalf("101 body %T is not an io.ReadWriteCloser", resp.Body)
	}
	if got := snapshotByID(p)["k0"].InFlight; got != 1 {
		t.Fatalf("InFlight %d while the connection is open, want 1", got)
	}
	br := bufio.NewReader(rwc)
	for _, msg := range []string{"hello\n", "again\n"} {
		if _, err := io.WriteString(rwc, msg); err != nil {
			t.Fatalf("write: %v", err)
		}
		line, err := br.ReadString('\n')
		if err != nil || line != "echo "+msg {
			t.Fatalf("read %q, %v; want %q", line, err, "echo "+msg)
		}
	}
	if got := snapshotByID(p)["k0"].InFlight; got != 1 {
		t.Fatalf("InFlight %d after traffic both ways, want 1", got)
	}
	if err := rwc.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if got := snapshotByID(p)["k0"].InFlight; got != 0 {
		t.Fatalf("InFlight %d after Close, want 0", got)
	}
	rwc.Close() // a second Close frees nothing more
	if got := snapshotByID(p)["k0"].InFlight; got != 0 {
		t.Fatalf("InFlight %d after a second Close, want 0", got)
	}
	// The key is free for the next request.
	resp2, err := p.RoundTrip(newUpgradeRequest(t, srv.URL+"/v1/realtime"))
	if err != nil {
		t.Fatalf("second RoundTrip: %v", err)
	}
	resp2.Body.Close()
	if got := snapshotByID(p)["k0"].InFlight; got != 0 {
		t.Fatalf("InFlight %d after the second connection closed, want 0", got)
	}
}

// A 429 before the upgrade is resent on another key, as for any request
// without a body; the 101 that follows is final, and holds only its key.
func TestUpgradeAfterRateLimitIsResent(t *testing.T) {
	srv, auths := upgradeServer(t, true)
	p := mustNew(t, keys(2), apipool.WithBase(srv.Client().Transport), noBackoff)

	resp, err := p.RoundTrip(newUpgradeRequest(t, srv.URL+"/ws"))
	if err != nil {
		t.Fatalf("RoundTrip: %v", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("status %d, want 101", resp.StatusCode)
	}
	got := auths.Load().([]string)
	if len(got) != 2 || got[0] == got[1] || !strings.HasPrefix(got[0], "Bearer s") || !strings.HasPrefix(got[1], "Bearer s") {
		t.Fatalf("upstream saw Authorization %q, want two different pool keys", got)
	}
	inflight := 0
	for _, s := range p.Snapshot() {
		inflight += int(s.InFlight)
	}
	if inflight != 1 {
		t.Fatalf("%d keys in flight while the connection is open, want 1", inflight)
	}
	resp.Body.Close()
	for _, s := range p.Snapshot() {
		if s.InFlight != 0 {
			t.Fatalf("key %s InFlight %d after Close, want 0", s.KeyID, s.InFlight)
		}
	}
}

// A base whose 101 body cannot be written (not what net/http returns) gets
// the usual body wrapper: the key is still held until the body is closed.
func TestUpgradeUnwritableBodyHoldsKey(t *testing.T) {
	body := newTrackedBody("")
	base := roundTripperFunc(func(r *http.Request) (*http.Response, error) {
		return &http.Response{StatusCode: http.StatusSwitchingProtocols, Header: http.Header{"Upgrade": {"websocket"}}, Body: body, Request: r}, nil
	})
	p := mustNew(t, keys(1), apipool.WithBase(base))
	resp, err := p.RoundTrip(newUpgradeRequest(t, "http://api.example.test/ws"))
	if err != nil {
		t.Fatal(err)
	}
	if got := snapshotByID(p)["k0"].InFlight; got != 1 {
		t.Fatalf("InFlight %d before Close, want 1", got)
	}
	resp.Body.Close()
	if !body.Closed() {
		t.Fatal("base body not closed")
	}
	if got := snapshotByID(p)["k0"].InFlight; got != 0 {
		t.Fatalf("InFlight %d after Close, want 0", got)
	}
}

// A 101 is never resent, even when a classifier hook calls it a rate
// limit: the connection has switched protocols and is the caller's.
func TestUpgradeIsNeverResent(t *testing.T) {
	srv, auths := upgradeServer(t, false)
	hook := func(resp *http.Response) (status.Status, bool) {
		return status.ReachLimit, resp.StatusCode == http.StatusSwitchingProtocols
	}
	p := mustNew(t, keys(2), apipool.WithBase(srv.Client().Transport), apipool.WithClassifier(status.Config{Hook: hook}), noBackoff)
	resp, err := p.RoundTrip(newUpgradeRequest(t, srv.URL+"/ws"))
	if err != nil {
		t.Fatalf("RoundTrip: %v", err)
	}
	if n := len(auths.Load().([]string)); n != 1 {
		t.Fatalf("the upstream got %d upgrade requests, want 1", n)
	}
	rwc, ok := resp.Body.(io.ReadWriteCloser)
	if !ok {
		t.Fatalf("101 body %T is not an io.ReadWriteCloser", resp.Body)
	}
	io.WriteString(rwc, "x\n")
	if line, err := bufio.NewReader(rwc).ReadString('\n'); err != nil || line != "echo x\n" {
		t.Fatalf("read %q, %v", line, err)
	}
	rwc.Close()
	for _, s := range p.Snapshot() {
		if s.InFlight != 0 {
			t.Fatalf("key %s InFlight %d after Close, want 0", s.KeyID, s.InFlight)
		}
	}
}

// A key a browser-style client puts in the WebSocket subprotocol (OpenAI's
// "openai-insecure-api-key.<key>") is stripped like any other credential:
// the pool's key is the only one on the wire.
func TestSubprotocolCredentialStripped(t *testing.T) {
	up := newUpstream(func(seen) reply { return reply{Status: 200} })
	p := mustNew(t, keys(1), apipool.WithBase(up))
	req := newGet(t, "http://api.test/v1/realtime")
	req.Header.Set("Sec-WebSocket-Protocol", "realtime, openai-insecure-api-key.sk-callers-own")
	resp, err := p.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if got := up.Calls()[0].Header.Values("Sec-WebSocket-Protocol"); len(got) != 1 || got[0] != "realtime" {
		t.Fatalf("Sec-WebSocket-Protocol went out as %q, want only \"realtime\"", got)
	}
	if got := req.Header.Get("Sec-WebSocket-Protocol"); got != "realtime, openai-insecure-api-key.sk-callers-own" {
		t.Fatalf("the caller's request was changed: %q", got)
	}
}
