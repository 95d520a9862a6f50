package quotasim

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"testing"
	"testing/synctest"
	"time"
)

// An HTTP server and client talk over Pipes inside a synctest bubble, and
// the bubble's time moves while they wait: an answer held a virtual second
// comes a second later by the bubble's clock, at once in real time. Close
// ends Accept and refuses new dials.
func TestPipesInBubble(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p := NewPipes()
		srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			time.Sleep(time.Second)
			io.WriteString(w, "ok")
		})}
		served := make(chan error, 1)
		go func() { served <- srv.Serve(p) }()
		tr := &http.Transport{DialContext: p.DialContext}
		start := time.Now()
		resp, err := (&http.Client{Transport: tr}).Get("http://pipe.test/")
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if string(body) != "ok" || time.Since(start) != time.Second {
			t.Fatalf("got %q after %v, want \"ok\" after 1s of the bubble's time", body, time.Since(start))
		}
		tr.CloseIdleConnections()
		srv.Shutdown(context.Background())
		if err := <-served; !errors.Is(err, http.ErrServerClosed) {
			t.Fatalf("Serve returned %v", err)
		}
		if _, err := p.DialContext(context.Background(), "tcp", "pipe"); !errors.Is(err, net.ErrClosed) {
			t.Fatalf("a dial after Close: %v, want net.ErrClosed", err)
		}
	})
}
