// Command dashboard runs the quickstart's traffic continuously through a
// pool against the in-process fake API, and serves the pool's dashboard
// on localhost, printing its URL:
//
//	go run ./examples/dashboard
//	dashboard: http://127.0.0.1:8080/apipool/
//
// Every second it sends a burst of requests from 32 goroutines; bursts
// above the fake API's quota (150 requests per key per 500ms) get 429s, so
// keys cool down and come back, and the revoked key stays disabled. Stop
// it with Ctrl-C.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/signal"
	"time"

	"github.com/apipool-ng/apipool"
	"github.com/apipool-ng/apipool/dashboard"
	"github.com/apipool-ng/apipool/internal/demoapi"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:8080", "address to serve the dashboard on (keep it on loopback)")
	burst := flag.Int("burst", 700, "requests sent each second")
	actions := flag.Bool("actions", true, "let the page disable, enable and probe keys")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if err := run(ctx, os.Stdout, *addr, *burst, *actions); err != nil {
		fmt.Fprintln(os.Stderr, "dashboard:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, out io.Writer, addr string, burst int, actions bool) error {
	api := httptest.NewServer(demoapi.New())
	defer api.Close()
	pool, err := apipool.New(demoapi.Keys(),
		apipool.WithMaxWait(10*time.Second),
		apipool.WithProbe(apipool.ProbeRequest(http.MethodGet, api.URL+demoapi.Path), time.Minute))
	if err != nil {
		return err
	}
	defer pool.Close(context.Background())
	if _, err := pool.CheckUsable(ctx); err != nil {
		return err
	}

	var opts []dashboard.Option
	if actions {
		opts = append(opts, dashboard.WithActions())
	}
	mux := http.NewServeMux()
	mux.Handle("/apipool/", http.StripPrefix("/apipool", dashboard.Handler(pool, opts...)))
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	fmt.Fprintf(out, "dashboard: http://%s/apipool/\n", ln.Addr())

	client := &http.Client{Transport: pool, Timeout: 30 * time.Second}
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		demoapi.Send(client, api.URL+demoapi.Path, burst, 32)
		select {
		case <-ctx.Done():
			shut, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			srv.Shutdown(shut)
			if err := <-served; !errors.Is(err, http.ErrServerClosed) {
				return err
			}
			return nil
		case err := <-served:
			return err
		case <-tick.C:
		}
	}
}
