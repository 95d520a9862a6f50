// Command sqlite records the quickstart's traffic into a SQLite file, so
// that the usage counts outlive the process: an in-process fake API with a
// per-key quota and Retry-After and one revoked key, a few thousand
// requests through the pool, every attempt recorded by recorder/sql in the
// file -db (usage.db by default, created if missing). It then prints this
// run's usage and the file's, over every run so far: run it twice and the
// second report counts both runs.
//
//	go run ./examples/sqlite -db usage.db
//	sqlite3 usage.db 'SELECT key_id, COUNT(*) FROM apipool_events GROUP BY key_id'
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/apipool-ng/apipool"
	"github.com/apipool-ng/apipool/internal/demoapi"
	"github.com/apipool-ng/apipool/recorder"
	sqlrec "github.com/apipool-ng/apipool/recorder/sql"
	"github.com/apipool-ng/apipool/status"
)

func main() {
	db := flag.String("db", "usage.db", "SQLite file for the usage events (created if missing)")
	n := flag.Int("requests", 3000, "requests to send")
	workers := flag.Int("workers", 32, "goroutines sending them")
	flag.Parse()
	if err := run(os.Stdout, *db, *n, *workers); err != nil {
		fmt.Fprintln(os.Stderr, "sqlite example:", err)
		os.Exit(1)
	}
}

func run(out io.Writer, file string, requests, workers int) error {
	ctx := context.Background()
	store, err := sqlrec.Open(ctx, "sqlite", file)
	if err != nil {
		return err
	}
	srv := httptest.NewServer(demoapi.New())
	defer srv.Close()
	pool, err := apipool.New(demoapi.Keys(),
		apipool.WithRecorder(store),
		apipool.WithMaxWait(10*time.Second),
		apipool.WithProbe(apipool.ProbeRequest(http.MethodGet, srv.URL+demoapi.Path), 0))
	if err != nil {
		store.Close(ctx)
		return err
	}
	client := &http.Client{Transport: pool, Timeout: 30 * time.Second}

	start := time.Now()
	ok, failed := demoapi.Send(client, srv.URL+demoapi.Path, requests, workers)
	fmt.Fprintf(out, "sent %d requests in %.1fs: %d answered 200, %d failed\n",
		requests, time.Since(start).Seconds(), ok, failed)

	// Flush makes every attempt recorded so far visible to queries.
	fctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := store.Flush(fctx); err != nil {
		pool.Close(ctx)
		return err
	}
	thisRun := recorder.Query{Since: start, Until: time.Now().Add(time.Second)}
	run, err := store.UsageByKey(ctx, thisRun)
	if err != nil {
		pool.Close(ctx)
		return err
	}
	everything, err := store.UsageByKey(ctx, recorder.Query{})
	if err != nil {
		pool.Close(ctx)
		return err
	}
	limited, err := store.UsageCount(ctx, recorder.Query{Status: status.ReachLimit})
	if err != nil {
		pool.Close(ctx)
		return err
	}
	fmt.Fprintf(out, "this run: %d attempts %s\n", sum(run), format(run))
	fmt.Fprintf(out, "in %s, every run so far: %d attempts %s, %d rate limited\n", file, sum(everything), format(everything), limited)

	// Closing the pool closes the store: it writes what is left.
	cctx, cancel2 := context.WithTimeout(ctx, 30*time.Second)
	defer cancel2()
	if err := pool.Close(cctx); err != nil {
		return err
	}
	if failed > 0 {
		return fmt.Errorf("%d requests failed", failed)
	}
	return nil
}

func sum(m map[string]int64) int64 {
	var n int64
	for _, v := range m {
		n += v
	}
	return n
}

func format(m map[string]int64) string {
	ids := make([]string, 0, len(m))
	for id := range m {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	parts := make([]string, len(ids))
	for i, id := range ids {
		parts[i] = fmt.Sprintf("%s=%d", id, m[id])
	}
	return "{" + strings.Join(parts, " ") + "}"
}
