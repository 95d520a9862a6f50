package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/apipool-ng/apipool"
)

// The quota scenario (issue 29): a provider that gives each of 10 keys 10
// requests per one-second window, aligned to the wall clock's second, and
// answers 429 with "Retry-After: 1" beyond, each answer 50 ms after the
// request by default; an open-loop load of 150 requests/s (1.5 times the
// 100/s the keys allow together) from 64 client slots, each request with a
// 2 s deadline; the library alone (http.Client{Transport: pool}) between
// them, on the real clock.
//
// The real clock, not the pool's WithClock: the provider's windows, the
// arrivals and the requests' context deadlines (which the pool reads with
// time.Until) all run on the wall clock, and a clock that compresses the
// pool's waits (jumpClock) would move the pool away from the provider's
// windows. A run of N windows takes N seconds.
const (
	quotaKeys      = 10
	quotaPerWindow = 10
	quotaRate      = 150.0
	quotaClients   = 64
	quotaDeadline  = 2 * time.Second
	// quotaSettle is how many windows the "after" figures leave out: the
	// pool learns the keys' quotas in them.
	quotaSettle = 5
	// quotaLatencyDefault is the provider's time to answer unless
	// QUOTA_LATENCY says otherwise. With answers at once, requests to a
	// key never overlap and what the pool does with requests in flight
	// is never tested; 50 ms makes them overlap (5 in flight at 100/s).
	quotaLatencyDefault = 50 * time.Millisecond
)

// quotaMode is one way of running the scenario.
type quotaMode struct {
	name string
	// headers: every answer carries OpenAI's x-ratelimit-limit-requests,
	// x-ratelimit-remaining-requests and x-ratelimit-reset-requests.
	headers bool
	// perSecond is set as Key.PerSecond on every key (0: none).
	perSecond float64
}

var quotaModes = []quotaMode{
	{name: "no-headers"},
	{name: "headers", headers: true},
	{name: "per-second", perSecond: quotaPerWindow},
}

// quotaProvider is the fake provider, an in-process http.RoundTripper used
// as the pool's base. Each key (known by its Authorization header) may
// make perWindow requests in each wall-clock second; the rest are answered
// 429 with "Retry-After: 1". It counts, per window and key, the successes
// and the 429s. With headers on, every answer says the key's limit, what
// it has left in the window and how long until the window resets, the
// reset alternately as "420ms" and "0.42s" (rounded up to the
// millisecond, so that it is never early). With a latency, each answer
// comes that long after the request is counted.
type quotaProvider struct {
	perWindow int
	headers   bool
	latency   time.Duration
	keyOf     map[string]int // Authorization header value -> key index
	nkeys     int

	mu      sync.Mutex
	windows map[int64][]quotaCount // Unix second -> per key
	unknown atomic.Int64           // requests without a known key
	// trace, when not nil, gets a line per request: its time, key and
	// answer (see QUOTA_TRACE).
	trace *quotaTrace
}

// quotaTrace collects the lines of a run's trace: "t,who,what,detail", t
// in seconds from the first window's start.
type quotaTrace struct {
	start time.Time
	mu    sync.Mutex
	lines []string
}

func (t *quotaTrace) add(at time.Time, who, what, detail string) {
	if t == nil {
		return
	}
	line := strconv.FormatFloat(at.Sub(t.start).Seconds(), 'f', 4, 64) + "," + who + "," + what + "," + detail
	t.mu.Lock()
	t.lines = append(t.lines, line)
	t.mu.Unlock()
}

// quotaCount is one key's count in one window.
type quotaCount struct {
	ok, limited int
	// first and last are when the key's first and last successes came,
	// as offsets into the window.
	first, last time.Duration
}

func newQuotaProvider(keys []apipool.Key, perWindow int, headers bool, latency time.Duration) *quotaProvider {
	p := &quotaProvider{perWindow: perWindow, headers: headers, latency: latency, nkeys: len(keys),
		keyOf: make(map[string]int, len(keys)), windows: map[int64][]quotaCount{}}
	for i, k := range keys {
		p.keyOf["Bearer "+k.Secret.Reveal()] = i
	}
	return p
}

func (p *quotaProvider) RoundTrip(r *http.Request) (*http.Response, error) {
	now := time.Now()
	if r.Body != nil {
		r.Body.Close()
	}
	k, known := p.keyOf[r.Header.Get("Authorization")]
	if !known {
		p.unknown.Add(1)
		return quotaAnswer(r, http.StatusUnauthorized, http.Header{}), nil
	}
	sec := now.Unix()
	into := now.Sub(time.Unix(sec, 0))
	p.mu.Lock()
	w := p.windows[sec]
	if w == nil {
		w = make([]quotaCount, p.nkeys)
		p.windows[sec] = w
	}
	c := &w[k]
	n := c.ok + c.limited + 1
	allowed := n <= p.perWindow
	if allowed {
		if c.ok == 0 {
			c.first = into
		}
		c.ok++
		c.last = into
	} else {
		c.limited++
	}
	p.mu.Unlock()
	p.trace.add(now, "provider", "key-"+strconv.Itoa(k), map[bool]string{true: "200", false: "429"}[allowed])

	h := make(http.Header, 4)
	if p.headers {
		ms := (time.Second - into + time.Millisecond - 1) / time.Millisecond // rounded up
		reset := strconv.FormatInt(int64(ms), 10) + "ms"
		if n%2 == 1 {
			reset = strconv.FormatFloat(float64(ms)/1000, 'f', -1, 64) + "s"
		}
		h["X-Ratelimit-Limit-Requests"] = []string{strconv.Itoa(p.perWindow)}
		h["X-Ratelimit-Remaining-Requests"] = []string{strconv.Itoa(max(p.perWindow-n, 0))}
		h["X-Ratelimit-Reset-Requests"] = []string{reset}
	}
	code := http.StatusOK
	if !allowed {
		code = http.StatusTooManyRequests
		h["Retry-After"] = retryAfterOne
	}
	if p.latency > 0 {
		t := time.NewTimer(p.latency)
		select {
		case <-t.C:
		case <-r.Context().Done():
			t.Stop()
			return nil, r.Context().Err()
		}
	}
	return quotaAnswer(r, code, h), nil
}

func quotaAnswer(r *http.Request, code int, h http.Header) *http.Response {
	return &http.Response{StatusCode: code, Status: strconv.Itoa(code) + " " + http.StatusText(code),
		Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1, Header: h, Body: http.NoBody, Request: r}
}

// quotaResult is what one run of the scenario measured.
type quotaResult struct {
	mode    string
	windows []quotaWindow // the full windows of the run, in order

	// The client's side: requests that arrived, found no free slot
	// (dropped), succeeded, were answered 429, failed (an error: no key
	// within the deadline, or none to wait for), or were still running
	// when the load stopped (cut off, not counted as failed).
	arrived, dropped, ok, client429, other, failed, cutOff int64
	// failedNoKey: failures that were a *apipool.NoKeyError; failedDeadline:
	// those that the request's deadline ended.
	failedNoKey, failedDeadline int64
	latencies                   []time.Duration // of the successes, sorted
	unknownKey                  int64
}

// quotaWindow is one full window's count at the provider, over all keys.
type quotaWindow struct {
	ok, limited int
	// keysLate counts the keys whose first success came 100 ms or more into
	// the window, or that had none; firstMax is the latest first success.
	keysLate int
	firstMax time.Duration
}

// runQuota runs the scenario in the given mode on the real clock. It
// waits for the wall clock's next second, starts the load there, and
// calls next at the start of each window: the load goes on while next
// returns true (a window a call), then stops at the end of the last
// window; the requests still running are cancelled. latency is the
// provider's time to answer.
//
// With QUOTA_TRACE set, it writes a trace of the run to
// $QUOTA_TRACE-<mode>.csv: each request at the provider (key, 200 or
// 429), each client request's start, drop and end (latency, status or
// error), and every 10 ms each key as the pool's Snapshot shows it (in
// flight, the provider's remaining count and reset as the pool believes
// them, what holds the key); times in seconds from the first window.
func runQuota(tb testing.TB, mode quotaMode, latency time.Duration, next func() bool) quotaResult {
	keys := testKeys(quotaKeys)
	for i := range keys {
		keys[i].PerSecond = mode.perSecond
	}
	prov := newQuotaProvider(keys, quotaPerWindow, mode.headers, latency)
	traceTo := os.Getenv("QUOTA_TRACE")
	if traceTo != "" {
		prov.trace = &quotaTrace{}
	}
	pool := newPool(tb, keys, prov)
	client := &http.Client{Transport: pool}

	res := quotaResult{mode: mode.name}
	var mu sync.Mutex // guards res's client counts and latencies
	runCtx, cut := context.WithCancel(context.Background())
	defer cut()
	slots := make(chan struct{}, quotaClients)
	var wg sync.WaitGroup

	var end atomic.Int64 // Unix ns of the last window's end, once known
	end.Store(1<<63 - 1)
	one := func(id int) {
		defer wg.Done()
		defer func() { <-slots }()
		start := time.Now()
		ctx, cancel := context.WithTimeout(runCtx, quotaDeadline)
		defer cancel()
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, target, nil)
		if err != nil {
			panic(err)
		}
		resp, err := client.Do(req)
		code := 0
		if err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			code = resp.StatusCode
		}
		done := time.Now()
		d := done.Sub(start)
		if prov.trace != nil {
			detail := strconv.Itoa(code)
			if err != nil {
				detail = strings.ReplaceAll(err.Error(), ",", ";")
			}
			prov.trace.add(done, "client", "done-"+strconv.Itoa(id), strconv.FormatInt(d.Microseconds(), 10)+"us "+detail)
		}
		var nk *apipool.NoKeyError
		mu.Lock()
		defer mu.Unlock()
		switch {
		case done.UnixNano() >= end.Load() || runCtx.Err() != nil:
			// Answered after the last window, or cut off at its end.
			res.cutOff++
		case err != nil:
			res.failed++
			if errors.As(err, &nk) {
				res.failedNoKey++
			}
			if errors.Is(err, context.DeadlineExceeded) {
				res.failedDeadline++
			}
		case code == http.StatusOK:
			res.ok++
			res.latencies = append(res.latencies, d)
		case code == http.StatusTooManyRequests:
			res.client429++
		default:
			res.other++
		}
	}

	// Start at the next second of the wall clock: every window of the run
	// is then a full one.
	startSec := time.Now().Unix() + 1
	start := time.Unix(startSec, 0)
	if prov.trace != nil {
		prov.trace.start = start
	}
	time.Sleep(time.Until(start))
	stop := make(chan struct{})
	loadDone := make(chan struct{})
	go func() { // the open-loop arrivals
		defer close(loadDone)
		rate := quotaRate
		interval := time.Duration(float64(time.Second) / rate)
		t := time.NewTimer(0)
		defer t.Stop()
		for i := 0; ; i++ {
			if d := time.Until(start.Add(time.Duration(i) * interval)); d > 0 {
				t.Reset(d)
				select {
				case <-t.C:
				case <-stop:
					return
				}
			}
			select {
			case <-stop:
				return
			default:
			}
			mu.Lock()
			res.arrived++
			mu.Unlock()
			select {
			case slots <- struct{}{}:
				prov.trace.add(time.Now(), "client", "start-"+strconv.Itoa(i), "")
				wg.Add(1)
				go one(i)
			default:
				prov.trace.add(time.Now(), "client", "drop-"+strconv.Itoa(i), "")
				mu.Lock()
				res.dropped++
				mu.Unlock()
			}
		}
	}()
	if prov.trace != nil {
		go func() { // what the pool thinks of each key, every 10 ms
			tick := time.NewTicker(10 * time.Millisecond)
			defer tick.Stop()
			for {
				select {
				case <-stop:
					return
				case now := <-tick.C:
					for _, ks := range pool.Snapshot() {
						reset := ""
						if !ks.ProviderReset.IsZero() {
							reset = strconv.FormatFloat(ks.ProviderReset.Sub(start).Seconds(), 'f', 4, 64)
						}
						hold := ""
						if ks.Hold != "" {
							hold = ks.Hold + " until " + strconv.FormatFloat(ks.HoldUntil.Sub(start).Seconds(), 'f', 4, 64)
						}
						prov.trace.add(now, "pool", ks.ID, fmt.Sprintf("inflight=%d remaining=%d reset=%s hold=%s learned=%d/%v", ks.InFlight, ks.ProviderRemaining, reset, hold, ks.LearnedLimit, ks.LearnedWindow))
					}
				}
			}
		}()
	}
	n := int64(0)
	for next() {
		n++
		time.Sleep(time.Until(time.Unix(startSec+n, 0)))
	}
	end.Store(time.Unix(startSec+n, 0).UnixNano())
	close(stop)
	<-loadDone
	cut()
	wg.Wait()

	res.unknownKey = prov.unknown.Load()
	prov.mu.Lock()
	for s := startSec; s < startSec+n; s++ {
		var w quotaWindow
		for _, c := range prov.windows[s] {
			w.ok += c.ok
			w.limited += c.limited
			if c.ok == 0 || c.first >= 100*time.Millisecond {
				w.keysLate++
			}
			w.firstMax = max(w.firstMax, c.first)
		}
		if prov.windows[s] == nil {
			w.keysLate = quotaKeys
		}
		res.windows = append(res.windows, w)
	}
	prov.mu.Unlock()
	slices.Sort(res.latencies)
	if prov.trace != nil {
		name := traceTo + "-" + mode.name + ".csv"
		prov.trace.mu.Lock()
		data := "t,who,what,detail\n" + strings.Join(prov.trace.lines, "\n") + "\n"
		prov.trace.mu.Unlock()
		if err := os.WriteFile(name, []byte(data), 0o644); err != nil {
			tb.Error(err)
		}
	}
	return res
}

// capacity returns the successes of windows[from:] as a percentage of
// what the keys allow in them, the worst window's, and the upstream's
// 429s per success; ok is false when there is no such window.
func (r *quotaResult) capacity(from int) (overall, worst, perSuccess float64, ok bool) {
	if from >= len(r.windows) {
		return 0, 0, 0, false
	}
	per := float64(quotaKeys * quotaPerWindow)
	var succ, lim int
	worst = 100
	for _, w := range r.windows[from:] {
		succ += w.ok
		lim += w.limited
		worst = min(worst, float64(w.ok)*100/per)
	}
	overall = float64(succ) * 100 / (per * float64(len(r.windows)-from))
	if succ > 0 {
		perSuccess = float64(lim) / float64(succ)
	}
	return overall, worst, perSuccess, true
}

// percentile returns the latency of successes at q (0..1), or 0.
func (r *quotaResult) percentile(q float64) time.Duration {
	if len(r.latencies) == 0 {
		return 0
	}
	return r.latencies[min(len(r.latencies)-1, int(q*float64(len(r.latencies))))]
}

// quotaSeconds returns QUOTA_SECONDS, the run's length in seconds (one
// window each), or def when it is not set.
func quotaSeconds(tb testing.TB, def int) int {
	v := os.Getenv("QUOTA_SECONDS")
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 {
		tb.Fatalf("QUOTA_SECONDS=%q: want a whole number of seconds >= 1", v)
	}
	return n
}

// quotaLatency returns QUOTA_LATENCY, the provider's time to answer (a Go
// duration), or quotaLatencyDefault when it is not set.
func quotaLatency(tb testing.TB) time.Duration {
	v := os.Getenv("QUOTA_LATENCY")
	if v == "" {
		return quotaLatencyDefault
	}
	d, err := time.ParseDuration(v)
	if err != nil || d < 0 {
		tb.Fatalf("QUOTA_LATENCY=%q: want a duration >= 0", v)
	}
	return d
}

func windowsOf(n int) func() bool {
	return func() bool {
		n--
		return n >= 0
	}
}

// BenchmarkQuota runs the quota scenario (see runQuota) in each mode, one
// op per one-second window of load on the real clock: -benchtime=20x runs
// 20 s of load per mode; -benchtime=1x (make bench-smoke) and the default
// -benchtime=1s run one window. QUOTA_SECONDS, when set, sets the windows
// instead (use it with the default -benchtime or 1x); QUOTA_LATENCY sets
// the provider's time to answer (default 50ms); QUOTA_TRACE=prefix writes
// each mode's trace to prefix-<mode>.csv (see runQuota). Metrics: capacity-% (the
// successes at the provider over what the keys allowed, every window),
// worst-window-% (the worst window's), upstream-429/success, the same two
// after the first 5 windows (settled-capacity-%, settled-429/success; only
// in longer runs), p99-ms (latency of the successes as the client saw
// them), and per request that arrived: client-failed (an error: no key in
// time), client-429 (a 429 handed to the client), dropped (no client slot
// free).
func BenchmarkQuota(b *testing.B) {
	for _, mode := range quotaModes {
		b.Run(mode.name, func(b *testing.B) {
			next := b.Loop
			if os.Getenv("QUOTA_SECONDS") != "" {
				next = windowsOf(quotaSeconds(b, 0))
			}
			r := runQuota(b, mode, quotaLatency(b), next)
			c, worst, per, _ := r.capacity(0)
			b.ReportMetric(c, "capacity-%")
			b.ReportMetric(worst, "worst-window-%")
			b.ReportMetric(per, "upstream-429/success")
			if c, _, per, ok := r.capacity(quotaSettle); ok {
				b.ReportMetric(c, "settled-capacity-%")
				b.ReportMetric(per, "settled-429/success")
			}
			b.ReportMetric(float64(r.percentile(0.99))/float64(time.Millisecond), "p99-ms")
			if r.arrived > 0 {
				b.ReportMetric(float64(r.failed)/float64(r.arrived), "client-failed/arrival")
				b.ReportMetric(float64(r.client429)/float64(r.arrived), "client-429/arrival")
				b.ReportMetric(float64(r.dropped)/float64(r.arrived), "dropped/arrival")
			}
			if r.unknownKey > 0 || r.other > 0 {
				b.Errorf("%d requests reached the provider without a known key; %d other answers", r.unknownKey, r.other)
			}
		})
	}
}

// TestQuotaReport prints the quota scenario's figures as a table, every
// mode in turn, with each window's successes and 429s. It runs only with
// QUOTA_REPORT=1 (never in CI by default); QUOTA_SECONDS sets the windows
// per mode (default 6), QUOTA_LATENCY the provider's time to answer
// (default 50ms), QUOTA_TRACE a trace file prefix, as for BenchmarkQuota:
//
//	QUOTA_REPORT=1 QUOTA_SECONDS=20 go test -run TestQuotaReport -v .
//
// QUOTA_MODES=headers,no-headers runs only the modes named.
func TestQuotaReport(t *testing.T) {
	if os.Getenv("QUOTA_REPORT") != "1" {
		t.Skip("set QUOTA_REPORT=1 to run the quota scenario and print its figures")
	}
	secs := quotaSeconds(t, 6)
	lat := quotaLatency(t)
	var rows []quotaResult
	for _, mode := range quotaModes {
		if only := os.Getenv("QUOTA_MODES"); only != "" && !slices.Contains(strings.Split(only, ","), mode.name) {
			continue
		}
		r := runQuota(t, mode, lat, windowsOf(secs))
		rows = append(rows, r)
		var ok, lim, late []string
		for _, w := range r.windows {
			ok = append(ok, strconv.Itoa(w.ok))
			lim = append(lim, strconv.Itoa(w.limited))
			late = append(late, fmt.Sprintf("%d/%dms", w.keysLate, w.firstMax.Milliseconds()))
		}
		t.Logf("%s: successes per window: %s", mode.name, strings.Join(ok, " "))
		t.Logf("%s: upstream 429s per window: %s", mode.name, strings.Join(lim, " "))
		t.Logf("%s: keys whose first success came 100ms or more into the window / the latest first success: %s", mode.name, strings.Join(late, " "))
	}
	var sb strings.Builder
	fmt.Fprintf(&sb, "\n%d windows of 1 s per mode, provider latency %v, %d keys x %d per window, %.0f requests/s from %d client slots, deadline %v\n\n",
		secs, lat, quotaKeys, quotaPerWindow, quotaRate, quotaClients, quotaDeadline)
	sb.WriteString("| mode | capacity | worst window | upstream 429/success | capacity after 5 s | worst after 5 s | 429/success after 5 s | p50 / p99 latency | arrived | ok | client 429 | failed (no key / deadline) | dropped | cut off |\n")
	sb.WriteString("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n")
	for _, r := range rows {
		c, w, per, _ := r.capacity(0)
		after := "| - | - | - "
		if c5, w5, per5, ok := r.capacity(quotaSettle); ok {
			after = fmt.Sprintf("| %.1f%% | %.0f%% | %.3f ", c5, w5, per5)
		}
		fmt.Fprintf(&sb, "| %s | %.1f%% | %.0f%% | %.3f %s| %d / %d ms | %d | %d | %d | %d (%d / %d) | %d | %d |\n",
			r.mode, c, w, per, after, r.percentile(0.5).Milliseconds(), r.percentile(0.99).Milliseconds(),
			r.arrived, r.ok, r.client429, r.failed, r.failedNoKey, r.failedDeadline, r.dropped, r.cutOff)
		if r.unknownKey > 0 || r.other > 0 {
			t.Errorf("%s: %d requests reached the provider without a known key; %d other answers", r.mode, r.unknownKey, r.other)
		}
	}
	t.Log(sb.String())
}
