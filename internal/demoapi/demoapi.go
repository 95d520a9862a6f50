// Package demoapi is what the examples share: an in-process fake API that
// enforces a per-key quota with Retry-After, has one revoked key and some
// latency; the keys the examples pool for it; a traffic generator sending
// requests from many goroutines through a client; and the printing of
// CheckUsable's report and of a stats table per key.
package demoapi

import (
	"fmt"
	"io"
	"net/http"
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

// Path is the one path the fake API answers.
const Path = "/v1/echo"

// Revoked is the secret the fake API rejects as revoked.
const Revoked = "sk-echo-revoked"

// API answers GET /v1/echo for the bearer keys it knows. Each key may make
// Quota requests per Window; beyond that it answers 429 with Retry-After
// (seconds) and retry-after-ms. The Revoked key gets 401. It counts every
// request it receives with a key: one per attempt.
type API struct {
	quota   int
	window  time.Duration
	latency time.Duration
	revoked string
	hits    atomic.Int64

	mu    sync.Mutex
	start time.Time
	used  map[string]int // requests in the current window, per key
	win   int64
}

// New returns the examples' fake API: 150 requests per key per 500ms,
// 2ms of latency per answer, and the key Revoked revoked. Its windows
// start now.
func New() *API {
	return &API{quota: 150, window: 500 * time.Millisecond, latency: 2 * time.Millisecond, revoked: Revoked, start: time.Now(), used: map[string]int{}}
}

// Hits returns how many requests with a key the API has received.
func (f *API) Hits() int64 { return f.hits.Load() }

func (f *API) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	key, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if !ok || key == "" {
		http.Error(w, `{"error":"missing key"}`, http.StatusUnauthorized)
		return
	}
	f.hits.Add(1)
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

// Keys returns the five keys the examples pool: four that work and echo,
// whose secret is Revoked.
func Keys() []apipool.Key {
	return []apipool.Key{
		{ID: "alpha", Secret: "sk-alpha-0001"},
		{ID: "bravo", Secret: "sk-bravo-0002"},
		{ID: "charlie", Secret: "sk-charlie-0003"},
		{ID: "delta", Secret: "sk-delta-0004"},
		{ID: "echo", Secret: Revoked},
	}
}

// Send sends requests GETs of url through client from workers goroutines
// and returns how many were answered 200 and how many failed (an error or
// another status).
func Send(client *http.Client, url string, requests, workers int) (ok, failed int64) {
	var nok, nfailed atomic.Int64
	jobs := make(chan int)
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range jobs {
				resp, err := client.Get(url)
				if err != nil {
					nfailed.Add(1)
					continue
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode == http.StatusOK {
					nok.Add(1)
				} else {
					nfailed.Add(1)
				}
			}
		}()
	}
	for i := range requests {
		jobs <- i
	}
	close(jobs)
	wg.Wait()
	return nok.Load(), nfailed.Load()
}

// PrintReport prints CheckUsable's report, a line per key, then a blank
// line.
func PrintReport(out io.Writer, report []apipool.ProbeResult) {
	for _, r := range report {
		if r.Usable {
			fmt.Fprintf(out, "check_usable: %-8s usable\n", r.KeyID)
		} else {
			fmt.Fprintf(out, "check_usable: %-8s NOT usable (%s): %v\n", r.KeyID, r.Status, r.Err)
		}
	}
	fmt.Fprintln(out)
}

// PrintTable prints a row per key of keys: its attempts (byKey), its
// successes, rate limits and invalid-key answers (count), its success
// latency quantiles (lat) and its state.
func PrintTable(out io.Writer, keys []apipool.KeyStatus, byKey map[string]int64, lat map[string]recorder.Latency, count func(id string, s status.Status) int64) {
	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "KEY\tATTEMPTS\tSUCCESS\tRATE LIMITED\tINVALID\tP50\tP99\tSTATE\t")
	for _, s := range keys {
		l := lat[s.KeyID]
		fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%d\t%s\t%s\t%s\t\n", s.KeyID, byKey[s.KeyID],
			count(s.KeyID, status.Success), count(s.KeyID, status.ReachLimit), count(s.KeyID, status.InvalidKey),
			round(l.P50), round(l.P99), s.State)
	}
	tw.Flush()
}

func round(d time.Duration) string {
	if d == 0 {
		return "-"
	}
	return d.Round(100 * time.Microsecond).String()
}
