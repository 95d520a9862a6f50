package bench

import (
	"io"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/apipool-ng/apipool"
)

// windowedAPI is a fake provider that gives each key a quota per window of
// real time and answers 429 beyond it. With headers on, every answer says
// what is left and when the window resets, in the given family's headers.
type windowedAPI struct {
	window time.Duration
	quota  int64
	family string // "openai", "anthropic", "github", "ietf", or "" for none
	start  time.Time

	mu   sync.Mutex
	used map[string]map[int64]int64

	ok, limited atomic.Int64
}

func (a *windowedAPI) RoundTrip(r *http.Request) (*http.Response, error) {
	secret := r.Header.Get("Authorization")
	el := time.Since(a.start)
	w := int64(el / a.window)
	left := a.window - el%a.window
	a.mu.Lock()
	if a.used[secret] == nil {
		a.used[secret] = map[int64]int64{}
	}
	a.used[secret][w]++
	n := a.used[secret][w]
	a.mu.Unlock()
	h := http.Header{}
	rem := strconv.FormatInt(max(a.quota-n, 0), 10)
	ms := left.Milliseconds() + 1
	switch a.family {
	case "openai":
		h.Set("X-Ratelimit-Limit-Requests", strconv.FormatInt(a.quota, 10))
		h.Set("X-Ratelimit-Remaining-Requests", rem)
		h.Set("X-Ratelimit-Reset-Requests", strconv.FormatInt(ms, 10)+"ms")
	case "anthropic":
		h.Set("Anthropic-Ratelimit-Requests-Limit", strconv.FormatInt(a.quota, 10))
		h.Set("Anthropic-Ratelimit-Requests-Remaining", rem)
		h.Set("Anthropic-Ratelimit-Requests-Reset", time.Now().Add(left).UTC().Format(time.RFC3339Nano))
	case "ietf":
		h.Set("Ratelimit-Policy", `"default";q=`+strconv.FormatInt(a.quota, 10)+`;w=1`)
		// The t parameter is whole seconds: the window must be a second or
		// more for these headers to steer (see runSteering).
		h.Set("Ratelimit", `"default";r=`+rem+`;t=`+strconv.FormatInt(int64((left+time.Second-1)/time.Second), 10))
	}
	code := http.StatusOK
	if n > a.quota {
		code = http.StatusTooManyRequests
		h.Set("Retry-After-Ms", strconv.FormatInt(ms, 10))
		a.limited.Add(1)
	} else {
		a.ok.Add(1)
	}
	return &http.Response{StatusCode: code, Status: strconv.Itoa(code) + " " + http.StatusText(code),
		Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1, Header: h, Body: http.NoBody, Request: r}, nil
}

// BenchmarkSteering measures how many 429s the upstream answers per 1,000
// successes, with the pool reading the providers' rate-limit headers
// (steer=on) and without (steer=off), for 10 keys with a quota of 10
// requests per 50 ms window each (2,000 requests/s in all; for the IETF
// fields, whose resets are whole seconds, 100 per second), under demand
// at 70% and 150% of that, paced on the wall clock. Each op is one request;
// upstream-429/1k-success is the figure the steering issue targets (below
// 5 with it on), failed/op the share of requests that did not succeed.
// Run it with -benchtime=3000x or so: its time per op is the pacing's.
func BenchmarkSteering(b *testing.B) {
	for _, family := range []string{"openai", "anthropic", "ietf"} {
		for _, demand := range []float64{0.7, 1.5} {
			for _, steer := range []bool{true, false} {
				name := family + "/demand=" + strconv.Itoa(int(demand*100)) + "%/steer=" + map[bool]string{true: "on", false: "off"}[steer]
				b.Run(name, func(b *testing.B) { runSteering(b, family, demand, steer) })
			}
		}
	}
}

func runSteering(b *testing.B, family string, demand float64, steer bool) {
	const keys = 10
	quota, window := int64(10), 50*time.Millisecond
	if family == "ietf" {
		// The IETF fields give resets in whole seconds.
		quota, window = 100, time.Second
	}
	api := &windowedAPI{window: window, quota: quota, family: family, start: time.Now(), used: map[string]map[int64]int64{}}
	p := newPool(b, testKeys(keys), api, apipool.WithMaxWait(time.Minute), apipool.WithProviderBudget(steer, nil))
	capacity := float64(keys*quota) / window.Seconds()
	interval := time.Duration(float64(time.Second) / (capacity * demand))
	var wg sync.WaitGroup
	var failed atomic.Int64
	b.ResetTimer()
	start := time.Now()
	for i := 0; i < b.N; i++ {
		if d := time.Until(start.Add(time.Duration(i) * interval)); d > 0 {
			time.Sleep(d)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			req, _ := http.NewRequest(http.MethodGet, target, nil)
			resp, err := p.RoundTrip(req)
			if err != nil {
				failed.Add(1)
				return
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				failed.Add(1)
			}
		}()
	}
	wg.Wait()
	b.StopTimer()
	if ok := api.ok.Load(); ok > 0 {
		b.ReportMetric(float64(api.limited.Load())*1000/float64(ok), "upstream-429/1k-success")
	}
	b.ReportMetric(float64(failed.Load())/float64(b.N), "failed/op")
}
