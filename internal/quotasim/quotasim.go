// Package quotasim runs the quota scenario of issue 29, for the library's
// benchmark (bench/quota_test.go) and the proxy's
// (cmd/apipool/internal/proxy/quota_bench_test.go): a provider that gives
// each of 10 keys 10 requests per one-second window, aligned to the
// clock's second, and answers 429 with "Retry-After: 1" beyond, each
// answer 50 ms after the request by default; an open-loop load of 150
// requests/s (1.5 times the 100/s the keys allow together) from 64 client
// slots, each request with a 2 s deadline.
//
// The scenario runs on the real clock (Run) or in virtual time (RunVirtual,
// a testing/synctest bubble): there every clock the scenario reads (the
// provider's windows, the arrivals, the pool's clock.System, the requests'
// context deadlines, the timers) is the bubble's, which jumps ahead
// whenever every goroutine of the run waits, so that 30 windows take well
// under a second, and a busy machine moves nothing within a window. The
// provider is an in-process http.RoundTripper (the pool's base); what
// stands between the clients and it (the pool alone, or the proxy) is the
// caller's Setup.
package quotasim

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
	"testing/synctest"
	"time"

	"github.com/apipool-ng/apipool"
)

// The scenario's figures.
const (
	Keys      = 10
	PerWindow = 10
	Rate      = 150.0
	Clients   = 64
	Deadline  = 2 * time.Second
	// Settle is how many windows the "after" figures leave out: the pool
	// learns the keys' quotas in them.
	Settle = 5
	// DefaultLatency is the provider's time to answer unless QUOTA_LATENCY
	// says otherwise. With answers at once, requests to a key never
	// overlap and what the pool does with requests in flight is never
	// tested; 50 ms makes them overlap (5 in flight at 100/s).
	DefaultLatency = 50 * time.Millisecond
)

// Mode is one way of running the scenario.
type Mode struct {
	Name string
	// Headers: every answer carries OpenAI's x-ratelimit-limit-requests,
	// x-ratelimit-remaining-requests and x-ratelimit-reset-requests.
	Headers bool
	// PerSecond is set as Key.PerSecond on every key (0: none).
	PerSecond float64
}

// Modes are the scenario's modes: no rate-limit headers, headers, and
// PerSecond set on the keys.
var Modes = []Mode{
	{Name: "no-headers"},
	{Name: "headers", Headers: true},
	{Name: "per-second", PerSecond: PerWindow},
}

// KeysFor returns the scenario's keys for mode.
func KeysFor(mode Mode) []apipool.Key {
	keys := make([]apipool.Key, Keys)
	for i := range keys {
		keys[i] = apipool.Key{ID: "key-" + strconv.Itoa(i), Secret: apipool.Secret("sk-quota-" + strconv.Itoa(i) + "-0123456789abcdef"), PerSecond: mode.PerSecond}
	}
	return keys
}

var retryAfterOne = []string{"1"}

// Provider is the fake provider, an in-process http.RoundTripper given to
// the pool as its base. Each key (known by its Authorization header) may
// make perWindow requests in each second of the clock; the rest are
// answered 429 with "Retry-After: 1". It counts, per window and key, the
// successes and the 429s. With headers on, every answer says the key's
// limit, what it has left in the window and how long until the window
// resets, the reset alternately as "420ms" and "0.42s" (rounded up to the
// millisecond, so that it is never early). With a latency, each answer
// comes that long after the request is counted.
type Provider struct {
	perWindow int
	headers   bool
	latency   time.Duration
	keyOf     map[string]int // Authorization header value -> key index
	nkeys     int

	mu      sync.Mutex
	windows map[int64][]count // Unix second -> per key
	unknown atomic.Int64      // requests without a known key
	trace   *trace            // nil: no trace
}

// count is one key's count in one window.
type count struct {
	ok, limited int
	// first is when the key's first success came, as an offset into the
	// window.
	first time.Duration
}

// NewProvider returns the provider of keys.
func NewProvider(keys []apipool.Key, perWindow int, headers bool, latency time.Duration) *Provider {
	p := &Provider{perWindow: perWindow, headers: headers, latency: latency, nkeys: len(keys),
		keyOf: make(map[string]int, len(keys)), windows: map[int64][]count{}}
	for i, k := range keys {
		p.keyOf["Bearer "+k.Secret.Reveal()] = i
	}
	return p
}

// RoundTrip answers r as the provider.
func (p *Provider) RoundTrip(r *http.Request) (*http.Response, error) {
	now := time.Now()
	if r.Body != nil {
		r.Body.Close()
	}
	k, known := p.keyOf[r.Header.Get("Authorization")]
	if !known {
		p.unknown.Add(1)
		return answer(r, http.StatusUnauthorized, http.Header{}), nil
	}
	sec := now.Unix()
	into := now.Sub(time.Unix(sec, 0))
	p.mu.Lock()
	w := p.windows[sec]
	if w == nil {
		w = make([]count, p.nkeys)
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
	return answer(r, code, h), nil
}

func answer(r *http.Request, code int, h http.Header) *http.Response {
	return &http.Response{StatusCode: code, Status: strconv.Itoa(code) + " " + http.StatusText(code),
		Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1, Header: h, Body: http.NoBody, Request: r}
}

// trace collects the lines of a run's trace: "t,who,what,detail", t in
// seconds from the first window's start.
type trace struct {
	start time.Time
	mu    sync.Mutex
	lines []string
}

func (t *trace) add(at time.Time, who, what, detail string) {
	if t == nil {
		return
	}
	line := strconv.FormatFloat(at.Sub(t.start).Seconds(), 'f', 4, 64) + "," + who + "," + what + "," + detail
	t.mu.Lock()
	t.lines = append(t.lines, line)
	t.mu.Unlock()
}

// Target is what the clients send their requests through, made by a Setup
// for one run.
type Target struct {
	Client *http.Client
	URL    string      // what each request GETs
	Header http.Header // set on each request (a proxy's token); nil: none
	// Snapshot, when set, shows the pool's keys for the trace.
	Snapshot func() []apipool.KeyStatus
}

// Setup makes the Target of one run: a pool of env.Keys over
// env.Provider, or a proxy whose pool has them. It runs in the run's
// goroutine (in virtual time, inside the bubble): what it starts, it
// stops with tb.Cleanup.
type Setup func(tb testing.TB, env Env) Target

// Env is what a Setup builds on.
type Env struct {
	Keys     []apipool.Key // the mode's keys (KeysFor)
	Provider *Provider
	// Virtual: the run is in virtual time (RunVirtual); a server must
	// then be reached through an in-memory network (Pipes).
	Virtual bool
}

// Options say how to run the scenario.
type Options struct {
	Mode    Mode
	Latency time.Duration // the provider's time to answer
	// Next is called at the start of each window: the load goes on while
	// it returns true (a window a call), then stops at the end of the
	// last window.
	Next func() bool
	// Trace, when not empty, is the prefix of the run's trace file
	// (Trace-<mode>.csv): each request at the provider (key, 200 or 429),
	// each client request's start, drop and end (latency, status or
	// error), and every 10 ms each key as Target.Snapshot shows it; times
	// in seconds from the first window.
	Trace string
}

// Result is what one run measured.
type Result struct {
	Mode    string
	Windows []Window // the full windows of the run, in order

	// The clients' side: requests that arrived, found no free slot
	// (dropped), succeeded, were answered 429, got another answer, failed
	// (an error, or a 503 from a proxy: no key within the deadline, or
	// none to wait for), or were still running when the load stopped (cut
	// off, not counted as failed).
	Arrived, Dropped, OK, Client429, Other, Failed, CutOff int64
	// FailedNoKey: failures that were a *apipool.NoKeyError or a 503;
	// FailedDeadline: those that the request's deadline ended.
	FailedNoKey, FailedDeadline int64
	Latencies                   []time.Duration // of the successes, sorted
	// UnknownKey counts the requests that reached the provider without
	// one of its keys.
	UnknownKey int64
}

// Window is one full window's count at the provider, over all keys.
type Window struct {
	OK, Limited int
	// KeysLate counts the keys whose first success came 100 ms or more
	// into the window, or that had none; FirstMax is the latest first
	// success.
	KeysLate int
	FirstMax time.Duration
}

// Run runs the scenario on the clock of the calling goroutine: it waits
// for the clock's next second, starts the load there and calls o.Next at
// the start of each window; the requests still running at the end are
// cancelled.
func Run(tb testing.TB, o Options, setup Setup) Result {
	return run(tb, o, setup, false)
}

func run(tb testing.TB, o Options, setup Setup, virtual bool) Result {
	keys := KeysFor(o.Mode)
	prov := NewProvider(keys, PerWindow, o.Mode.Headers, o.Latency)
	if o.Trace != "" {
		prov.trace = &trace{}
	}
	tg := setup(tb, Env{Keys: keys, Provider: prov, Virtual: virtual})

	res := Result{Mode: o.Mode.Name}
	var mu sync.Mutex // guards res's client counts and latencies
	runCtx, cut := context.WithCancel(context.Background())
	defer cut()
	slots := make(chan struct{}, Clients)
	var wg sync.WaitGroup

	var end atomic.Int64 // Unix ns of the last window's end, once known
	end.Store(1<<63 - 1)
	one := func(id int) {
		defer wg.Done()
		defer func() { <-slots }()
		start := time.Now()
		ctx, cancel := context.WithTimeout(runCtx, Deadline)
		defer cancel()
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, tg.URL, nil)
		if err != nil {
			panic(err)
		}
		for k, v := range tg.Header {
			req.Header[k] = v
		}
		resp, err := tg.Client.Do(req)
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
			res.CutOff++
		case err != nil:
			res.Failed++
			if errors.As(err, &nk) {
				res.FailedNoKey++
			}
			if errors.Is(err, context.DeadlineExceeded) {
				res.FailedDeadline++
			}
		case code == http.StatusServiceUnavailable:
			res.Failed++ // the proxy's answer to a NoKeyError
			res.FailedNoKey++
		case code == http.StatusOK:
			res.OK++
			res.Latencies = append(res.Latencies, d)
		case code == http.StatusTooManyRequests:
			res.Client429++
		default:
			res.Other++
		}
	}

	// Start at the next second: every window of the run is then a full
	// one.
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
		rate := Rate
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
			res.Arrived++
			mu.Unlock()
			select {
			case slots <- struct{}{}:
				prov.trace.add(time.Now(), "client", "start-"+strconv.Itoa(i), "")
				wg.Add(1)
				go one(i)
			default:
				prov.trace.add(time.Now(), "client", "drop-"+strconv.Itoa(i), "")
				mu.Lock()
				res.Dropped++
				mu.Unlock()
			}
		}
	}()
	var snapDone chan struct{}
	if prov.trace != nil && tg.Snapshot != nil {
		snapDone = make(chan struct{})
		go func() { // what the pool thinks of each key, every 10 ms
			defer close(snapDone)
			tick := time.NewTicker(10 * time.Millisecond)
			defer tick.Stop()
			for {
				select {
				case <-stop:
					return
				case now := <-tick.C:
					for _, ks := range tg.Snapshot() {
						reset := ""
						if !ks.ProviderReset.IsZero() {
							reset = strconv.FormatFloat(ks.ProviderReset.Sub(start).Seconds(), 'f', 4, 64)
						}
						hold := ""
						if ks.Reason != "" {
							hold = ks.Reason + " until " + strconv.FormatFloat(ks.Until.Sub(start).Seconds(), 'f', 4, 64)
						}
						prov.trace.add(now, "pool", ks.KeyID, fmt.Sprintf("inflight=%d remaining=%d reset=%s hold=%s learned=%d/%v", ks.InFlight, ks.ProviderRemaining, reset, hold, ks.LearnedLimit, ks.LearnedWindow))
					}
				}
			}
		}()
	}
	n := int64(0)
	for o.Next() {
		n++
		time.Sleep(time.Until(time.Unix(startSec+n, 0)))
	}
	end.Store(time.Unix(startSec+n, 0).UnixNano())
	close(stop)
	<-loadDone
	if snapDone != nil {
		<-snapDone
	}
	cut()
	wg.Wait()

	res.UnknownKey = prov.unknown.Load()
	prov.mu.Lock()
	for s := startSec; s < startSec+n; s++ {
		var w Window
		for _, c := range prov.windows[s] {
			w.OK += c.ok
			w.Limited += c.limited
			if c.ok == 0 || c.first >= 100*time.Millisecond {
				w.KeysLate++
			}
			w.FirstMax = max(w.FirstMax, c.first)
		}
		if prov.windows[s] == nil {
			w.KeysLate = Keys
		}
		res.Windows = append(res.Windows, w)
	}
	prov.mu.Unlock()
	slices.Sort(res.Latencies)
	if prov.trace != nil {
		name := o.Trace + "-" + o.Mode.Name + ".csv"
		prov.trace.mu.Lock()
		data := "t,who,what,detail\n" + strings.Join(prov.trace.lines, "\n") + "\n"
		prov.trace.mu.Unlock()
		if err := os.WriteFile(name, []byte(data), 0o644); err != nil {
			tb.Error(err)
		}
	}
	return res
}

// RunVirtual runs the scenario (Run) in virtual time, in a synctest
// bubble: setup and everything it starts run inside it, and must stop by
// the end of the run (tb.Cleanup of the t setup is given runs inside). A
// network between the clients and a server in the bubble must be an
// in-memory one (see Pipes): a goroutine waiting on a socket does not let
// the bubble's time move.
func RunVirtual(t *testing.T, o Options, setup Setup) Result {
	var res Result
	synctest.Test(t, func(t *testing.T) { res = run(t, o, setup, true) })
	return res
}

// Capacity returns the successes of windows[from:] as a percentage of
// what the keys allow in them, the worst window's, and the upstream's
// 429s per success; ok is false when there is no such window.
func (r *Result) Capacity(from int) (overall, worst, perSuccess float64, ok bool) {
	if from >= len(r.Windows) {
		return 0, 0, 0, false
	}
	per := float64(Keys * PerWindow)
	var succ, lim int
	worst = 100
	for _, w := range r.Windows[from:] {
		succ += w.OK
		lim += w.Limited
		worst = min(worst, float64(w.OK)*100/per)
	}
	overall = float64(succ) * 100 / (per * float64(len(r.Windows)-from))
	if succ > 0 {
		perSuccess = float64(lim) / float64(succ)
	}
	return overall, worst, perSuccess, true
}

// Percentile returns the latency of successes at q (0..1), or 0.
func (r *Result) Percentile(q float64) time.Duration {
	if len(r.Latencies) == 0 {
		return 0
	}
	return r.Latencies[min(len(r.Latencies)-1, int(q*float64(len(r.Latencies))))]
}

// Check fails tb when requests reached the provider without a known key,
// or the clients got answers the scenario has no place for.
func (r *Result) Check(tb testing.TB) {
	if r.UnknownKey > 0 || r.Other > 0 {
		tb.Errorf("%s: %d requests reached the provider without a known key; %d other answers", r.Mode, r.UnknownKey, r.Other)
	}
}

// WindowsOf returns a Next that runs n windows.
func WindowsOf(n int) func() bool {
	return func() bool {
		n--
		return n >= 0
	}
}

// Seconds returns QUOTA_SECONDS, the run's length in seconds (one window
// each), or def when it is not set.
func Seconds(tb testing.TB, def int) int {
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

// Latency returns QUOTA_LATENCY, the provider's time to answer (a Go
// duration), or DefaultLatency when it is not set.
func Latency(tb testing.TB) time.Duration {
	v := os.Getenv("QUOTA_LATENCY")
	if v == "" {
		return DefaultLatency
	}
	d, err := time.ParseDuration(v)
	if err != nil || d < 0 {
		tb.Fatalf("QUOTA_LATENCY=%q: want a duration >= 0", v)
	}
	return d
}

// Selected reports whether QUOTA_MODES (a comma-separated list of mode
// names; empty: all) selects mode.
func Selected(mode Mode) bool {
	only := os.Getenv("QUOTA_MODES")
	return only == "" || slices.Contains(strings.Split(only, ","), mode.Name)
}

// RealClock reports whether QUOTA_CLOCK asks for the real clock ("real")
// rather than virtual time ("virtual" or empty, the default of the
// reports).
func RealClock(tb testing.TB) bool {
	switch v := os.Getenv("QUOTA_CLOCK"); v {
	case "", "virtual":
		return false
	case "real":
		return true
	default:
		tb.Fatalf("QUOTA_CLOCK=%q: want real or virtual", v)
		return false
	}
}

// ReportMetrics reports r's figures as b's metrics: capacity-% (the
// successes at the provider over what the keys allowed, every window),
// worst-window-% (the worst window's), upstream-429/success, the same two
// after the first Settle windows (settled-capacity-%,
// settled-429/success; only in longer runs), p99-ms (latency of the
// successes as the client saw them), and per request that arrived:
// client-failed (an error or a 503: no key in time), client-429 (a 429
// handed to the client), dropped (no client slot free).
func ReportMetrics(b *testing.B, r Result) {
	c, worst, per, _ := r.Capacity(0)
	b.ReportMetric(c, "capacity-%")
	b.ReportMetric(worst, "worst-window-%")
	b.ReportMetric(per, "upstream-429/success")
	if c, _, per, ok := r.Capacity(Settle); ok {
		b.ReportMetric(c, "settled-capacity-%")
		b.ReportMetric(per, "settled-429/success")
	}
	b.ReportMetric(float64(r.Percentile(0.99))/float64(time.Millisecond), "p99-ms")
	if r.Arrived > 0 {
		b.ReportMetric(float64(r.Failed)/float64(r.Arrived), "client-failed/arrival")
		b.ReportMetric(float64(r.Client429)/float64(r.Arrived), "client-429/arrival")
		b.ReportMetric(float64(r.Dropped)/float64(r.Arrived), "dropped/arrival")
	}
	r.Check(b)
}

// Report runs the scenario in each mode QUOTA_MODES selects, for
// QUOTA_SECONDS windows (default def), in virtual time unless
// QUOTA_CLOCK=real, and logs each window's successes and 429s and a table
// of the figures; through names what the clients send through (library,
// proxy). It returns the results.
func Report(t *testing.T, through string, def int, setup Setup) []Result {
	t.Helper()
	secs := Seconds(t, def)
	lat := Latency(t)
	real := RealClock(t)
	var rows []Result
	for _, mode := range Modes {
		if !Selected(mode) {
			continue
		}
		o := Options{Mode: mode, Latency: lat, Next: WindowsOf(secs), Trace: os.Getenv("QUOTA_TRACE")}
		var r Result
		if real {
			r = Run(t, o, setup)
		} else {
			r = RunVirtual(t, o, setup)
		}
		rows = append(rows, r)
		var ok, lim, late []string
		for _, w := range r.Windows {
			ok = append(ok, strconv.Itoa(w.OK))
			lim = append(lim, strconv.Itoa(w.Limited))
			late = append(late, fmt.Sprintf("%d/%dms", w.KeysLate, w.FirstMax.Milliseconds()))
		}
		t.Logf("%s: successes per window: %s", mode.Name, strings.Join(ok, " "))
		t.Logf("%s: upstream 429s per window: %s", mode.Name, strings.Join(lim, " "))
		t.Logf("%s: keys whose first success came 100ms or more into the window / the latest first success: %s", mode.Name, strings.Join(late, " "))
	}
	clock := "in virtual time"
	if real {
		clock = "on the real clock"
	}
	var sb strings.Builder
	fmt.Fprintf(&sb, "\nthrough the %s, %s: %d windows of 1 s per mode, provider latency %v, %d keys x %d per window, %.0f requests/s from %d client slots, deadline %v\n\n",
		through, clock, secs, lat, Keys, PerWindow, Rate, Clients, Deadline)
	sb.WriteString("| mode | capacity | worst window | upstream 429/success | capacity after 5 s | worst after 5 s | 429/success after 5 s | p50 / p99 latency | arrived | ok | client 429 | failed (no key / deadline) | dropped | cut off |\n")
	sb.WriteString("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n")
	for _, r := range rows {
		c, w, per, _ := r.Capacity(0)
		after := "| - | - | - "
		if c5, w5, per5, ok := r.Capacity(Settle); ok {
			after = fmt.Sprintf("| %.1f%% | %.0f%% | %.3f ", c5, w5, per5)
		}
		fmt.Fprintf(&sb, "| %s | %.1f%% | %.0f%% | %.3f %s| %d / %d ms | %d | %d | %d | %d (%d / %d) | %d | %d |\n",
			r.Mode, c, w, per, after, r.Percentile(0.5).Milliseconds(), r.Percentile(0.99).Milliseconds(),
			r.Arrived, r.OK, r.Client429, r.Failed, r.FailedNoKey, r.FailedDeadline, r.Dropped, r.CutOff)
		r.Check(t)
	}
	t.Log(sb.String())
	return rows
}
