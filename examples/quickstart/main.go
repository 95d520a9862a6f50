// Command quickstart shows apipool end to end with no server and no
// network: it starts an in-process fake API that enforces a per-key quota
// with Retry-After, has one revoked key and some latency, sends a few
// thousand requests through an http.Client whose transport is the pool,
// and prints what the pool saw, per key, with apipool-ng's two queries.
//
//	go run ./examples/quickstart
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
	"github.com/apipool-ng/apipool/status"
)

func main() {
	n := flag.Int("requests", 3000, "requests to send")
	workers := flag.Int("workers", 32, "goroutines sending them")
	flag.Parse()
	if err := run(os.Stdout, *n, *workers); err != nil {
		fmt.Fprintln(os.Stderr, "quickstart:", err)
		os.Exit(1)
	}
}

func run(out io.Writer, requests, workers int) error {
	srv := httptest.NewServer(demoapi.New())
	defer srv.Close()

	keys := demoapi.Keys()
	pool, err := apipool.New(keys,
		apipool.WithMaxWait(10*time.Second),
		apipool.WithProbe(apipool.ProbeRequest(http.MethodGet, srv.URL+demoapi.Path), 0))
	if err != nil {
		return err
	}
	defer pool.Close(context.Background())
	client := &http.Client{Transport: pool, Timeout: 30 * time.Second}

	// apipool-ng's manager.check_usable(): probe every key at once.
	report, err := pool.CheckUsable(context.Background())
	if err != nil {
		return err
	}
	demoapi.PrintReport(out, report)

	start := time.Now()
	ok, failed := demoapi.Send(client, srv.URL+demoapi.Path, requests, workers)
	elapsed := time.Since(start)
	fmt.Fprintf(out, "sent %d requests through %d keys from %d goroutines in %.1fs: %d answered 200, %d failed\n\n",
		requests, len(keys), workers, elapsed.Seconds(), ok, failed)

	ctx := context.Background()
	stats := pool.Stats()
	all := recorder.Query{Since: start.Add(-time.Minute), Until: time.Now().Add(time.Minute)}
	byKey, err := stats.UsageByKey(ctx, all)
	if err != nil {
		return err
	}
	lat, err := stats.LatencyByKey(ctx, recorder.Query{Since: all.Since, Until: all.Until, Status: status.Success})
	if err != nil {
		return err
	}
	count := func(id string, s status.Status) int64 {
		n, err := stats.UsageCount(ctx, recorder.Query{Since: all.Since, Until: all.Until, KeyID: id, Status: s})
		if err != nil {
			return -1
		}
		return n
	}
	demoapi.PrintTable(out, pool.Snapshot(), byKey, lat, count)

	// apipool-ng's two queries.
	perKey, err := pool.RecentAttemptsByKey(ctx, time.Hour)
	if err != nil {
		return err
	}
	limited, err := pool.RecentAttempts(ctx, time.Hour, status.ReachLimit, "")
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "\nusage_count_stats_in_recent_n_seconds(3600) = %s\n", formatCounts(perKey))
	fmt.Fprintf(out, "usage_count_in_recent_n_seconds(3600, status_id=%d %q) = %d\n", status.ReachLimit.ID(), status.ReachLimit.String(), limited)
	if failed > 0 {
		return fmt.Errorf("%d requests failed", failed)
	}
	return nil
}

func formatCounts(m map[string]int64) string {
	ids := make([]string, 0, len(m))
	for id := range m {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	var b strings.Builder
	b.WriteByte('{')
	for i, id := range ids {
		if i > 0 {
			b.WriteString(", ")
		}
		fmt.Fprintf(&b, "%q: %d", id, m[id])
	}
	b.WriteByte('}')
	return b.String()
}
