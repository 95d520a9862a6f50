package apipool_test

import (
	"context"
	"io"
	"net/http"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/apipool-ng/apipool"
)

// quotaUpstream is a fake API that gives each key a quota per window of
// real time, as providers do, answering 429 with the time left in the
// window beyond it. With headers on, every answer also says what is left
// and when the window resets (OpenAI's x-ratelimit-*-requests).
type quotaUpstream struct {
	window  time.Duration
	quota   int
	headers bool
	start   time.Time

	mu   sync.Mutex
	used map[string]map[int64]int // key -> window -> requests seen
	over map[string]map[int64]int // key -> window -> 429s answered
}

func newQuotaUpstream(window time.Duration, quota int, headers bool) *quotaUpstream {
	return &quotaUpstream{window: window, quota: quota, headers: headers, start: time.Now(),
		used: map[string]map[int64]int{}, over: map[string]map[int64]int{}}
}

func (q *quotaUpstream) RoundTrip(r *http.Request) (*http.Response, error) {
	secret := secretOf(r)
	el := time.Since(q.start)
	w := int64(el / q.window)
	left := q.window - el%q.window
	q.mu.Lock()
	if q.used[secret] == nil {
		q.used[secret], q.over[secret] = map[int64]int{}, map[int64]int{}
	}
	q.used[secret][w]++
	n := q.used[secret][w]
	limited := n > q.quota
	if limited {
		q.over[secret][w]++
	}
	q.mu.Unlock()
	h := http.Header{}
	if q.headers {
		h.Set("X-Ratelimit-Limit-Requests", strconv.Itoa(q.quota))
		h.Set("X-Ratelimit-Remaining-Requests", strconv.Itoa(max(q.quota-n, 0)))
		h.Set("X-Ratelimit-Reset-Requests", strconv.FormatInt(left.Milliseconds()+1, 10)+"ms")
	}
	code := 200
	if limited {
		code = 429
		h.Set("Retry-After-Ms", strconv.FormatInt(left.Milliseconds()+1, 10))
	}
	return &http.Response{StatusCode: code, Status: strconv.Itoa(code) + " " + http.StatusText(code),
		Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1, Header: h, Body: http.NoBody, Request: r}, nil
}

// overPerWindow returns the most 429s one key got in one window.
func (q *quotaUpstream) overPerWindow() (worst int, total int) {
	q.mu.Lock()
	defer q.mu.Unlock()
	for _, m := range q.over {
		for _, n := range m {
			worst = max(worst, n)
			total += n
		}
	}
	return worst, total
}

// Demand at twice the pool's quota, and more: every request succeeds
// within its wait budget, none is handed a 429 while it could still wait.
// With the provider's rate-limit headers, the upstream sees at most one
// request per key per window beyond its quota (the trial after a reset).
// Nothing here depends on the machine's speed: a slow machine spreads the
// same requests over more windows.
func TestStormWaitsInsteadOfFailing(t *testing.T) {
	t.Parallel()
	for _, headers := range []bool{true, false} {
		t.Run("headers="+strconv.FormatBool(headers), func(t *testing.T) {
			t.Parallel()
			const keysN, quota, requests, workers = 4, 5, 400, 40
			up := newQuotaUpstream(100*time.Millisecond, quota, headers)
			p := mustNew(t, keys(keysN), apipool.WithBase(up), apipool.WithMaxWait(2*time.Minute))
			defer p.Close(context.Background())
			var wg sync.WaitGroup
			var mu sync.Mutex
			failures := map[string]int{}
			jobs := make(chan struct{}, requests)
			for range requests {
				jobs <- struct{}{}
			}
			close(jobs)
			for range workers {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for range jobs {
						resp, err := p.RoundTrip(newGet(t, "http://api.test/v1/x"))
						mu.Lock()
						switch {
						case err != nil:
							failures[err.Error()]++
						case resp.StatusCode != 200:
							failures["status "+resp.Status]++
						}
						mu.Unlock()
						if err == nil {
							io.Copy(io.Discard, resp.Body)
							resp.Body.Close()
						}
					}
				}()
			}
			wg.Wait()
			if len(failures) > 0 {
				t.Fatalf("failed requests: %v", failures)
			}
			worst, total := up.overPerWindow()
			t.Logf("upstream 429s: %d in all, at most %d per key per window", total, worst)
			if headers && worst > 1 {
				t.Fatalf("a key got %d requests beyond its quota in one window, want at most 1", worst)
			}
		})
	}
}
