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
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"text/tabwriter"
	"time"

	"github.com/apipool-ng/apipool"
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

// fakeAPI answers GET /v1/echo for the bearer keys it knows. Each key may
// make quota requests per window; beyond that it answers 429 with
// Retry-After (seconds) and retry-after-ms. The revoked key gets 401.
type fakeAPI struct {
	quota   int
	window  time.Duration
	latency time.Duration
	revoked string

	mu    sync.Mutex
	start time.Time
	used  map[string]int // requests in the current window, per key
	win   int64
}

func (f *fakeAPI) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	key, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if !ok || key == "" {
		http.Error(w, `{"error":"missing key"}`, http.StatusUnauthorized)
		return
	}
	if key == f.revoked {
		http.Error(w, `{"error":"key revoked"}`, http.StatusUnauthorized)
		return
	}
	f.mu.Lock()
	now := time.Now()
	win := int64(now.Sub(f.start) / f.window)
	if win != f.win {
		f.win, f.used = win, map[string]int{}
	}
	f.used[key]++
	over := f.used[key] > f.quota
	left := f.start.Add(time.Duration(win+1) * f.window).Sub(now)
	f.mu.Unlock()
	if over {
		w.Header().Set("Retry-After", strconv.Itoa(int((left+time.Second-1)/time.Second)))
		w.Header().Set("Retry-After-Ms", strconv.FormatInt(left.Milliseconds()+1, 10))
		http.Error(w, `{"error":"rate limited"}`, http.StatusTooManyRequests)
		return
	}
	time.Sleep(f.latency)
	w.Header().Set("Content-Type", "application/json")
	io.WriteString(w, `{"echo":"ok"}`)
}

func run(out io.Writer, requests, workers int) error {
	api := &fakeAPI{quota: 150, window: 500 * time.Millisecond, latency: 2 * time.Millisecond, revoked: "sk-echo-revoked", start: time.Now(), used: map[string]int{}}
	srv := httptest.NewServer(api)
	defer srv.Close()

	keys := []apipool.Key{
		{ID: "alpha", Secret: "sk-alpha-0001"},
		{ID: "bravo", Secret: "sk-bravo-0002"},
		{ID: "charlie", Secret: "sk-charlie-0003"},
		{ID: "delta", Secret: "sk-delta-0004"},
		{ID: "echo", Secret: "sk-echo-revoked"},
	}
	pool, err := apipool.New(keys,
		apipool.WithMaxWait(10*time.Second),
		apipool.WithProbe(apipool.ProbeRequest(http.MethodGet, srv.URL+"/v1/echo"), 0))
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
	for _, r := range report {
		if r.Usable {
			fmt.Fprintf(out, "check_usable: %-8s usable\n", r.KeyID)
		} else {
			fmt.Fprintf(out, "check_usable: %-8s NOT usable (%s): %v\n", r.KeyID, r.Status, r.Err)
		}
	}
	fmt.Fprintln(out)

	start := time.Now()
	var ok, failed atomic.Int64
	jobs := make(chan int)
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range jobs {
				resp, err := client.Get(srv.URL + "/v1/echo")
				if err != nil {
					failed.Add(1)
					continue
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode == http.StatusOK {
					ok.Add(1)
				} else {
					failed.Add(1)
				}
			}
		}()
	}
	for i := 0; i < requests; i++ {
		jobs <- i
	}
	close(jobs)
	wg.Wait()
	elapsed := time.Since(start)
	fmt.Fprintf(out, "sent %d requests through %d keys from %d goroutines in %.1fs: %d answered 200, %d failed\n\n",
		requests, len(keys), workers, elapsed.Seconds(), ok.Load(), failed.Load())

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
	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "KEY\tATTEMPTS\tSUCCESS\tRATE LIMITED\tINVALID\tP50\tP99\tSTATE\t")
	for _, s := range pool.Snapshot() {
		l := lat[s.ID]
		fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%d\t%s\t%s\t%s\t\n", s.ID, byKey[s.ID],
			count(s.ID, status.Success), count(s.ID, status.ReachLimit), count(s.ID, status.InvalidKey),
			round(l.P50), round(l.P99), s.State)
	}
	tw.Flush()

	// apipool-ng's two queries.
	perKey, err := pool.UsageCountByKey(ctx, time.Hour)
	if err != nil {
		return err
	}
	limited, err := pool.UsageCount(ctx, time.Hour, status.ReachLimit, "")
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "\nusage_count_stats_in_recent_n_seconds(3600) = %s\n", formatCounts(perKey))
	fmt.Fprintf(out, "usage_count_in_recent_n_seconds(3600, status_id=%d %q) = %d\n", status.ReachLimit.ID(), status.ReachLimit.String(), limited)
	if failed.Load() > 0 {
		return fmt.Errorf("%d requests failed", failed.Load())
	}
	return nil
}

func round(d time.Duration) string {
	if d == 0 {
		return "-"
	}
	return d.Round(100 * time.Microsecond).String()
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
