package proxy_test

import (
	"bufio"
	"context"
	"crypto/rand"
	"crypto/sha1"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"
)

// A minimal RFC 6455 implementation, enough for the tests: the opening
// handshake, single-frame text and close messages, masked from the client
// and unmasked from the server.

const (
	opText  = 0x1
	opClose = 0x8
)

func wsAccept(key string) string {
	h := sha1.Sum([]byte(key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"))
	return base64.StdEncoding.EncodeToString(h[:])
}

// wsWrite writes one final frame; a client's is masked (RFC 6455 5.3).
func wsWrite(w io.Writer, op byte, payload []byte, masked bool) error {
	var hdr []byte
	hdr = append(hdr, 0x80|op)
	var mbit byte
	if masked {
		mbit = 0x80
	}
	switch n := len(payload); {
	case n < 126:
		hdr = append(hdr, mbit|byte(n))
	case n < 1<<16:
		hdr = append(hdr, mbit|126)
		hdr = binary.BigEndian.AppendUint16(hdr, uint16(n))
	default:
		hdr = append(hdr, mbit|127)
		hdr = binary.BigEndian.AppendUint64(hdr, uint64(n))
	}
	p := append([]byte(nil), payload...)
	if masked {
		var key [4]byte
		rand.Read(key[:])
		hdr = append(hdr, key[:]...)
		for i := range p {
			p[i] ^= key[i%4]
		}
	}
	_, err := w.Write(append(hdr, p...))
	return err
}

// wsRead reads one final frame; wantMasked says which side it comes from.
func wsRead(r io.Reader, wantMasked bool) (op byte, payload []byte, err error) {
	var h [2]byte
	if _, err := io.ReadFull(r, h[:]); err != nil {
		return 0, nil, err
	}
	if h[0]&0x80 == 0 {
		return 0, nil, errors.New("fragmented frame")
	}
	masked := h[1]&0x80 != 0
	if masked != wantMasked {
		return 0, nil, fmt.Errorf("frame masked %v, want %v", masked, wantMasked)
	}
	n := uint64(h[1] & 0x7f)
	switch n {
	case 126:
		var b [2]byte
		if _, err := io.ReadFull(r, b[:]); err != nil {
			return 0, nil, err
		}
		n = uint64(binary.BigEndian.Uint16(b[:]))
	case 127:
		var b [8]byte
		if _, err := io.ReadFull(r, b[:]); err != nil {
			return 0, nil, err
		}
		n = binary.BigEndian.Uint64(b[:])
	}
	var key [4]byte
	if masked {
		if _, err := io.ReadFull(r, key[:]); err != nil {
			return 0, nil, err
		}
	}
	payload = make([]byte, n)
	if _, err := io.ReadFull(r, payload); err != nil {
		return 0, nil, err
	}
	if masked {
		for i := range payload {
			payload[i] ^= key[i%4]
		}
	}
	return h[0] & 0x0f, payload, nil
}

// wsUpstream is a WebSocket server: it greets, echoes text frames with a
// prefix, and answers a close frame with one. It records the headers of
// every upgrade request it got.
type wsUpstream struct {
	*httptest.Server
	mu      sync.Mutex
	headers []http.Header
	closed  chan struct{} // a close frame came and was answered
}

func newWSUpstream(t *testing.T) *wsUpstream {
	u := &wsUpstream{closed: make(chan struct{}, 4)}
	u.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		u.mu.Lock()
		u.headers = append(u.headers, r.Header.Clone())
		u.mu.Unlock()
		key := r.Header.Get("Sec-WebSocket-Key")
		if !strings.EqualFold(r.Header.Get("Upgrade"), "websocket") || !strings.Contains(strings.ToLower(r.Header.Get("Connection")), "upgrade") || key == "" || r.Header.Get("Sec-WebSocket-Version") != "13" {
			t.Errorf("upstream: not a WebSocket handshake: %v", r.Header)
			http.Error(w, "not a websocket handshake", http.StatusBadRequest)
			return
		}
		conn, brw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			t.Errorf("hijack: %v", err)
			return
		}
		defer conn.Close()
		// The upstream (wrongly) names the key it got in a header: the
		// proxy must not pass it on.
		fmt.Fprintf(brw, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: %s\r\nX-Seen-Authorization: %s\r\n\r\n",
			wsAccept(key), r.Header.Get("Authorization"))
		wsWrite(brw, opText, []byte("hello from upstream"), false)
		brw.Flush()
		for {
			op, p, err := wsRead(brw, true)
			if err != nil {
				return
			}
			switch op {
			case opText:
				wsWrite(brw, opText, append([]byte("echo: "), p...), false)
				brw.Flush()
			case opClose:
				wsWrite(brw, opClose, p, false)
				brw.Flush()
				u.closed <- struct{}{}
				return
			}
		}
	}))
	t.Cleanup(u.Close)
	return u
}

func (u *wsUpstream) Headers() []http.Header {
	u.mu.Lock()
	defer u.mu.Unlock()
	return append([]http.Header(nil), u.headers...)
}

// wsDial opens a WebSocket through the proxy at addr, with tok as the
// proxy token, and returns the connection, its reader and the handshake
// answer.
func wsDial(t *testing.T, addr, path, tok string) (net.Conn, *bufio.Reader, *http.Response) {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	var kb [16]byte
	rand.Read(kb[:])
	key := base64.StdEncoding.EncodeToString(kb[:])
	req, _ := http.NewRequest(http.MethodGet, "http://"+addr+path, nil)
	req.Header.Set("Upgrade", "websocket")
	req.Header.Set("Connection", "Upgrade")
	req.Header.Set("Sec-WebSocket-Key", key)
	req.Header.Set("Sec-WebSocket-Version", "13")
	req.Header.Set("Authorization", "Bearer "+tok)
	if err := req.Write(conn); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, req)
	if err != nil {
		t.Fatalf("handshake: %v", err)
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("handshake: status %d: %s", resp.StatusCode, b)
	}
	if got := resp.Header.Get("Sec-WebSocket-Accept"); got != wsAccept(key) {
		t.Fatalf("Sec-WebSocket-Accept %q, want %q", got, wsAccept(key))
	}
	return conn, br, resp
}

// A WebSocket through the proxy: the upgrade reaches the upstream with the
// pool's key in place of the caller's proxy token, frames pass both ways,
// the key is in flight while the socket is open, longer than the
// upstream's timeout and the server's read timeout, and is freed once
// the client closes; the pool's key never reaches the client.
func TestWebSocketPassThrough(t *testing.T) {
	ws := newWSUpstream(t)
	e := newEnv(t, envOpts{secrets: []string{secretA}, yaml: func(_, kf string) string {
		return fmt.Sprintf(`listen: 127.0.0.1:0
server: {read_timeout: 1s, shutdown_timeout: 5s}
reload: {interval: 0s}
tokens: [{name: main, sha256: %s}]
upstreams:
  - {name: openai, prefix: /openai, target: '%s', keys: {file: %s}, max_wait: 0s, timeout: 1s}
`, sha(token), ws.URL, kf)
	}})
	pool := e.srv.Pool("openai")
	addr := strings.TrimPrefix(e.url, "http://")

	conn, br, resp := wsDial(t, addr, "/openai/v1/realtime?model=gpt-realtime", token)
	for name, vs := range resp.Header {
		for _, v := range vs {
			if strings.Contains(v, canary) {
				t.Errorf("handshake answer header %s: %q carries a secret", name, v)
			}
		}
	}
	hs := ws.Headers()
	if len(hs) != 1 {
		t.Fatalf("upstream got %d handshakes, want 1", len(hs))
	}
	if got := hs[0].Get("Authorization"); got != "Bearer "+secretA {
		t.Errorf("upstream got Authorization %q, want the pool's key", got)
	}
	for name, vs := range hs[0] {
		for _, v := range vs {
			if strings.Contains(v, token) {
				t.Errorf("upstream got the proxy token in %s", name)
			}
		}
	}
	if got := pool.Snapshot()[0].InFlight; got != 1 {
		t.Fatalf("InFlight %d while the socket is open, want 1", got)
	}

	op, p, err := wsRead(br, false)
	if err != nil || op != opText || string(p) != "hello from upstream" {
		t.Fatalf("first frame: op %d %q %v, want the upstream's greeting", op, p, err)
	}
	// Idle past the upstream's timeout and the server's read timeout:
	// neither bounds an open socket.
	time.Sleep(1500 * time.Millisecond)
	for _, msg := range []string{"ping", strings.Repeat("x", 300), strings.Repeat("y", 70000)} {
		if err := wsWrite(conn, opText, []byte(msg), true); err != nil {
			t.Fatalf("write: %v", err)
		}
		op, p, err := wsRead(br, false)
		if err != nil || op != opText || string(p) != "echo: "+msg {
			t.Fatalf("echo of %d bytes: op %d, %d bytes, %v", len(msg), op, len(p), err)
		}
	}
	if got := pool.Snapshot()[0].InFlight; got != 1 {
		t.Fatalf("InFlight %d after traffic both ways, want 1", got)
	}

	// The closing handshake, then the client closes the connection.
	if err := wsWrite(conn, opClose, []byte{0x03, 0xe8}, true); err != nil {
		t.Fatal(err)
	}
	op, _, err = wsRead(br, false)
	if err != nil || op != opClose {
		t.Fatalf("close answer: op %d, %v", op, err)
	}
	conn.Close()
	select {
	case <-ws.closed:
	case <-time.After(5 * time.Second):
		t.Fatal("the upstream never got the close frame")
	}
	deadline := time.Now().Add(5 * time.Second)
	for pool.Snapshot()[0].InFlight != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("InFlight %d after the socket closed, want 0", pool.Snapshot()[0].InFlight)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// The client dropping its connection without a closing handshake frees
// the key; so does the upstream hanging up first, once the client, told
// by the end of its stream, closes.
func TestWebSocketAbruptCloseFreesKey(t *testing.T) {
	ws := newWSUpstream(t)
	e := newEnv(t, envOpts{secrets: []string{secretA}, yaml: func(_, kf string) string {
		return fmt.Sprintf(`listen: 127.0.0.1:0
server: {shutdown_timeout: 5s}
reload: {interval: 0s}
tokens: [{name: main, sha256: %s}]
upstreams:
  - {name: openai, prefix: /openai, target: '%s', keys: {file: %s}, max_wait: 0s}
`, sha(token), ws.URL, kf)
	}})
	pool := e.srv.Pool("openai")
	addr := strings.TrimPrefix(e.url, "http://")
	waitFree := func(what string) {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for pool.Snapshot()[0].InFlight != 0 {
			if time.Now().After(deadline) {
				t.Fatalf("%s: InFlight %d, want 0", what, pool.Snapshot()[0].InFlight)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}

	conn, br, _ := wsDial(t, addr, "/openai/v1/realtime", token)
	if _, _, err := wsRead(br, false); err != nil {
		t.Fatal(err)
	}
	if got := pool.Snapshot()[0].InFlight; got != 1 {
		t.Fatalf("InFlight %d while open, want 1", got)
	}
	conn.Close()
	waitFree("after the client dropped the connection")

	// The upstream ends it: a close frame answered, and the upstream
	// hangs up.
	conn, br, _ = wsDial(t, addr, "/openai/v1/realtime", token)
	if _, _, err := wsRead(br, false); err != nil {
		t.Fatal(err)
	}
	wsWrite(conn, opClose, nil, true)
	if op, _, err := wsRead(br, false); err != nil || op != opClose {
		t.Fatalf("close answer: op %d, %v", op, err)
	}
	// The upstream's hang-up reaches the client as the end of the
	// stream (ReverseProxy half-closes the client's connection); the
	// client then closes, which ends the proxying and frees the key.
	conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := br.ReadByte(); err != io.EOF {
		t.Fatalf("after the upstream hung up the client read %v, want io.EOF", err)
	}
	conn.Close()
	waitFree("after the upstream hung up and the client closed")
}

// Without a valid proxy token, the upgrade is refused before any key is
// taken or the upstream is reached.
func TestWebSocketNeedsToken(t *testing.T) {
	ws := newWSUpstream(t)
	e := newEnv(t, envOpts{secrets: []string{secretA}, yaml: func(_, kf string) string {
		return fmt.Sprintf(`listen: 127.0.0.1:0
reload: {interval: 0s}
tokens: [{name: main, sha256: %s}]
upstreams:
  - {name: openai, prefix: /openai, target: '%s', keys: {file: %s}, max_wait: 0s}
`, sha(token), ws.URL, kf)
	}})
	conn, err := net.Dial("tcp", strings.TrimPrefix(e.url, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	req, _ := http.NewRequest(http.MethodGet, e.url+"/openai/v1/realtime", nil)
	req.Header.Set("Upgrade", "websocket")
	req.Header.Set("Connection", "Upgrade")
	req.Header.Set("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")
	req.Header.Set("Sec-WebSocket-Version", "13")
	req.Header.Set("Authorization", "Bearer not-the-token")
	req.Write(conn)
	resp, err := http.ReadResponse(bufio.NewReader(conn), req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("status %d, want 401", resp.StatusCode)
	}
	if n := len(ws.Headers()); n != 0 {
		t.Fatalf("the upstream got %d requests, want none", n)
	}
}

// Shutdown closes open sockets, which http.Server.Shutdown leaves alone,
// and frees their keys.
func TestWebSocketClosedOnShutdown(t *testing.T) {
	ws := newWSUpstream(t)
	e := newEnv(t, envOpts{secrets: []string{secretA}, yaml: func(_, kf string) string {
		return fmt.Sprintf(`listen: 127.0.0.1:0
server: {shutdown_timeout: 5s}
reload: {interval: 0s}
tokens: [{name: main, sha256: %s}]
upstreams:
  - {name: openai, prefix: /openai, target: '%s', keys: {file: %s}, max_wait: 0s}
`, sha(token), ws.URL, kf)
	}})
	pool := e.srv.Pool("openai")
	conn, br, _ := wsDial(t, strings.TrimPrefix(e.url, "http://"), "/openai/v1/realtime", token)
	if _, _, err := wsRead(br, false); err != nil {
		t.Fatal(err)
	}
	if got := pool.Snapshot()[0].InFlight; got != 1 {
		t.Fatalf("InFlight %d while open, want 1", got)
	}
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	e.srv.Shutdown(ctx)
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("Shutdown took %v with a socket open", d)
	}
	conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := br.ReadByte(); err == nil {
		t.Fatal("the socket is still open after Shutdown")
	} else if ne, ok := err.(net.Error); ok && ne.Timeout() {
		t.Fatal("the socket is still open after Shutdown (read timed out)")
	}
	deadline := time.Now().Add(5 * time.Second)
	for pool.Snapshot()[0].InFlight != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("InFlight %d after Shutdown, want 0", pool.Snapshot()[0].InFlight)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
