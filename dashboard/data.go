package dashboard

import (
	"context"
	"errors"
	"net/http"
	"slices"
	"sync"
	"time"

	"github.com/apipool-ng/apipool"
	"github.com/apipool-ng/apipool/recorder"
	"github.com/apipool-ng/apipool/status"
)

// windowSpec is one of the windows the page offers: its length, the step
// of its count series and the step of its latency series.
type windowSpec struct {
	name         string
	d, step, lat time.Duration
}

var windows = []windowSpec{
	{"15m", 15 * time.Minute, time.Minute, time.Minute},
	{"1h", time.Hour, time.Minute, 5 * time.Minute},
	{"24h", 24 * time.Hour, 10 * time.Minute, time.Hour},
}

const defaultWindow = "1h"

// errMultiLen reports a MultiStats answer with a map missing.
var errMultiLen = errors.New("the store's multi-filter answer has the wrong number of maps")

// queryTimeout bounds the stats queries of one API call.
const queryTimeout = 10 * time.Second

func parseWindow(r *http.Request) (windowSpec, bool) {
	name := r.URL.Query().Get("window")
	if name == "" {
		name = defaultWindow
	}
	for _, w := range windows {
		if w.name == name {
			return w, true
		}
	}
	return windowSpec{}, false
}

const badWindow = "apipool/dashboard: window must be one of 15m, 1h, 24h"

// KeyRow is a row of the key table, as GET /api/keys returns it. Pointer
// fields are null when unknown: usage fields without stats, shares and
// latencies without requests in the window.
type KeyRow struct {
	ID          string `json:"id"`
	Fingerprint string `json:"fingerprint"`
	// State is the pool's summary: active, cooling, disabled,
	// breaker-open or limited.
	State          string     `json:"state"`
	CoolingUntil   *time.Time `json:"cooling_until"`
	CoolingReason  string     `json:"cooling_reason"`
	Disabled       bool       `json:"disabled"`
	DisabledReason string     `json:"disabled_reason"`
	DisabledAt     *time.Time `json:"disabled_at"`
	// Breaker is closed, half-open or open.
	Breaker   string `json:"breaker"`
	InFlight  int64  `json:"in_flight"`
	QuotaLeft *int64 `json:"quota_left"` // today's quota left; null without a daily quota
	// DisabledRetryAt is when a trial request tests a disabled key
	// again; null when only Enable or a probe puts it back.
	DisabledRetryAt *time.Time `json:"disabled_retry_at"`
	// Hold says why the key cannot take a request now ("" when it can),
	// HoldUntil until when, where known.
	Hold      string     `json:"hold"`
	HoldUntil *time.Time `json:"hold_until"`
	// ProviderRemaining, ProviderLimit and ProviderReset are the
	// upstream's own count for the key, from its rate-limit headers,
	// where known.
	ProviderRemaining *int64     `json:"provider_remaining"`
	ProviderLimit     *int64     `json:"provider_limit"`
	ProviderReset     *time.Time `json:"provider_reset"`
	// LearnedLimit is the limit the pool learned from the key's 429s
	// (apipool.WithLimitLearning): at most LearnedLimit requests in any
	// LearnedWindowMS milliseconds (1,000 or 60,000); null when none was
	// learned.
	LearnedLimit    *int   `json:"learned_limit"`
	LearnedWindowMS *int64 `json:"learned_window_ms"`
	Weight          int    `json:"weight"`
	// Tier is the key's tier (0 first: see apipool.Key.Tier).
	Tier int `json:"tier"`
	// Tokens and Cost are what the key's answers in the window stated
	// (input and output tokens) and cost, summed over the attempts that
	// stated them; null when none did, or the store does not sum
	// (recorder.TotalsStats). TokensUnknown and CostUnknown count the
	// attempts whose tokens, or cost, are not known (null when the
	// store does not sum): the page shows "unknown", never zero.
	Tokens        *int64   `json:"tokens"`
	TokensUnknown *int64   `json:"tokens_unknown"`
	Cost          *float64 `json:"cost"`
	CostUnknown   *int64   `json:"cost_unknown"`
	// Attempts through the key in the window, and how many succeeded
	// or were rate limited.
	Requests         *int64   `json:"requests"`
	Succeeded        *int64   `json:"succeeded"`
	RateLimited      *int64   `json:"rate_limited"`
	SuccessShare     *float64 `json:"success_share"`
	RateLimitedShare *float64 `json:"rate_limited_share"`
	// Latency quantiles of the successful attempts, in milliseconds.
	P50MS *float64 `json:"p50_ms"`
	P99MS *float64 `json:"p99_ms"`
}

type keysResponse struct {
	Time       time.Time `json:"time"`
	Window     string    `json:"window"`
	Stats      bool      `json:"stats"`
	StatsError string    `json:"stats_error,omitempty"`
	Keys       []KeyRow  `json:"keys"`
}

type totalsResponse struct {
	Time       time.Time      `json:"time"`
	Window     string         `json:"window"`
	Stats      bool           `json:"stats"`
	StatsError string         `json:"stats_error,omitempty"`
	Keys       int            `json:"keys"`
	States     map[string]int `json:"states"`
	InFlight   int64          `json:"in_flight"`
	// Attempts in the window (every event, with or without a key).
	Requests            *int64   `json:"requests"`
	PerSecond           *float64 `json:"per_second"`
	LastMinutePerSecond *float64 `json:"last_minute_per_second"`
	Succeeded           *int64   `json:"succeeded"`
	SuccessShare        *float64 `json:"success_share"`
	RateLimited         *int64   `json:"rate_limited"`
	RateLimitedShare    *float64 `json:"rate_limited_share"`
	NoKeyErrors         *int64   `json:"no_key_errors"`
	Waits               *int64   `json:"waits"`
}

// Series is one named line of a chart.
type Series struct {
	Name   string     `json:"name"`
	Values []*float64 `json:"values"`
}

type usageResponse struct {
	Time   time.Time `json:"time"`
	Window string    `json:"window"`
	Stats  bool      `json:"stats"`
	// Times are the starts of the count buckets, in Unix seconds, Step
	// apart; the series' values are requests per minute.
	Step  int64    `json:"step_seconds"`
	Times []int64  `json:"times"`
	ByKey []Series `json:"by_key"`
	// ByStatus: success, rate limited, failed (other than no key) and no
	// key available, in that order; they add up to every attempt.
	ByStatus []Series `json:"by_status"`
	// LatencyTimes are the starts of the latency buckets, LatencyStep
	// apart; Latency holds "<key> p50" and "<key> p99" of successful
	// attempts, in milliseconds, null where a bucket had none.
	LatencyStep  int64    `json:"latency_step_seconds"`
	LatencyTimes []int64  `json:"latency_times"`
	Latency      []Series `json:"latency"`
}

// parallel runs fns, at most limit at a time, and returns the first error.
func parallel(limit int, fns ...func() error) error {
	sem := make(chan struct{}, limit)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var first error
	for _, fn := range fns {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			if err := fn(); err != nil {
				mu.Lock()
				if first == nil {
					first = err
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	return first
}

func ptr[T any](v T) *T { return &v }

func share(n, total int64) *float64 {
	if total <= 0 {
		return nil
	}
	return ptr(float64(n) / float64(total))
}

func ms(d time.Duration) *float64 { return ptr(float64(d.Microseconds()) / 1000) }

// keys builds the key table over win.
func (h *handler) keys(ctx context.Context, win windowSpec) keysResponse {
	now := h.cfg.clock.Now()
	snap := h.pool.Snapshot()
	out := keysResponse{Time: now.UTC(), Window: win.name, Stats: h.stats != nil, Keys: make([]KeyRow, len(snap))}
	for i, s := range snap {
		out.Keys[i] = h.row(s)
	}
	if h.stats == nil {
		return out
	}
	q := recorder.Query{Since: now.Add(-win.d), Until: now.Add(time.Nanosecond)}
	// Two queries where the store answers MultiStats itself.
	var counts []map[string]int64
	var lat map[string]recorder.Latency
	err := parallel(2,
		func() (err error) {
			counts, err = h.stats.UsageByKeyMulti(ctx, q, []status.Status{status.Unknown, status.Success, status.ReachLimit})
			return
		},
		func() (err error) { lat, err = h.stats.LatencyByKey(ctx, with(q, status.Success)); return },
	)
	if err == nil && len(counts) != 3 {
		err = errMultiLen
	}
	if err != nil {
		out.StatsError = "apipool/dashboard: stats: " + err.Error()
		return out
	}
	all, succ, limited := counts[0], counts[1], counts[2]
	var totals map[string]recorder.Totals
	if h.sums != nil {
		if totals, err = h.sums.TotalsBy(ctx, q, recorder.ByKey); err != nil {
			out.StatsError = "apipool/dashboard: stats: " + err.Error()
			totals = nil
		}
	}
	for i := range out.Keys {
		k := &out.Keys[i]
		n := all[k.ID]
		k.Requests, k.Succeeded, k.RateLimited = ptr(n), ptr(succ[k.ID]), ptr(limited[k.ID])
		k.SuccessShare, k.RateLimitedShare = share(succ[k.ID], n), share(limited[k.ID], n)
		if l, ok := lat[k.ID]; ok && l.Count > 0 {
			k.P50MS, k.P99MS = ms(l.P50), ms(l.P99)
		}
		if totals != nil {
			t := totals[k.ID]
			k.TokensUnknown, k.CostUnknown = ptr(t.TokensUnknown), ptr(t.CostUnknown)
			if t.Events > t.TokensUnknown {
				k.Tokens = ptr(t.InputTokens + t.OutputTokens)
			}
			if t.Events > t.CostUnknown {
				k.Cost = ptr(t.Cost)
			}
		}
	}
	return out
}

func with(q recorder.Query, st status.Status) recorder.Query {
	q.Status = st
	return q
}

func (h *handler) row(s apipool.KeyStatus) KeyRow {
	k := KeyRow{
		ID: s.KeyID, Fingerprint: s.Fingerprint, State: string(s.State), CoolingReason: s.CoolingReason,
		Disabled: s.Disabled, DisabledReason: s.DisabledReason, Breaker: s.Breaker.String(),
		InFlight: s.InFlight, Weight: s.Weight, Tier: s.Tier, Hold: s.Reason,
		CoolingUntil: timePtr(s.CoolingUntil), DisabledAt: timePtr(s.DisabledAt),
		DisabledRetryAt: timePtr(s.DisabledRetryAt), HoldUntil: timePtr(s.Until),
		QuotaLeft: countPtr(s.QuotaLeft), ProviderRemaining: countPtr(s.ProviderRemaining),
		ProviderLimit: countPtr(s.ProviderLimit), ProviderReset: timePtr(s.ProviderReset),
	}
	if s.LearnedLimit > 0 {
		k.LearnedLimit, k.LearnedWindowMS = ptr(s.LearnedLimit), ptr(s.LearnedWindow.Milliseconds())
	}
	return k
}

// timePtr is t in UTC, or nil for the zero time (not known, or not set).
func timePtr(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	return ptr(t.UTC())
}

// countPtr is n, or nil for -1 (not known, or no such limit).
func countPtr(n int64) *int64 {
	if n < 0 {
		return nil
	}
	return ptr(n)
}

func (h *handler) totals(ctx context.Context, win windowSpec) totalsResponse {
	now := h.cfg.clock.Now()
	snap := h.pool.Snapshot()
	out := totalsResponse{Time: now.UTC(), Window: win.name, Stats: h.stats != nil, Keys: len(snap), States: map[string]int{}}
	for _, s := range snap {
		out.States[string(s.State)]++
		out.InFlight += s.InFlight
	}
	if h.cfg.waits != nil {
		out.Waits = ptr(h.cfg.waits())
	} else if w, ok := h.pool.(interface{ Waits() int64 }); ok {
		out.Waits = ptr(w.Waits())
	}
	if h.stats == nil {
		return out
	}
	until := now.Add(time.Nanosecond)
	q := recorder.Query{Since: now.Add(-win.d), Until: until}
	var counts []map[string]int64
	var lastMin int64
	err := parallel(2,
		func() (err error) {
			counts, err = h.stats.UsageByKeyMulti(ctx, q, []status.Status{status.Unknown, status.Success, status.ReachLimit, status.NoKeyAvailable})
			return
		},
		func() (err error) {
			lastMin, err = h.stats.UsageCount(ctx, recorder.Query{Since: now.Add(-time.Minute), Until: until})
			return
		},
	)
	if err == nil && len(counts) != 4 {
		err = errMultiLen
	}
	if err != nil {
		out.StatsError = "apipool/dashboard: stats: " + err.Error()
		return out
	}
	sum := func(m map[string]int64) (n int64) {
		for _, v := range m {
			n += v
		}
		return n
	}
	all, succ, limited, noKey := sum(counts[0]), sum(counts[1]), sum(counts[2]), sum(counts[3])
	out.Requests, out.Succeeded, out.RateLimited, out.NoKeyErrors = ptr(all), ptr(succ), ptr(limited), ptr(noKey)
	out.PerSecond = ptr(float64(all) / win.d.Seconds())
	out.LastMinutePerSecond = ptr(float64(lastMin) / 60)
	out.SuccessShare, out.RateLimitedShare = share(succ, all), share(limited, all)
	return out
}

// windowed serves an API call over the window the request names: 400 for
// a bad window, the stats queries bounded by queryTimeout, build's answer
// as JSON, or 503 when build fails.
func windowed[T any](build func(context.Context, windowSpec) (T, error)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		win, ok := parseWindow(r)
		if !ok {
			writeError(w, http.StatusBadRequest, badWindow)
			return
		}
		ctx, cancel := context.WithTimeout(r.Context(), queryTimeout)
		defer cancel()
		out, err := build(ctx, win)
		if err != nil {
			writeError(w, http.StatusServiceUnavailable, "apipool/dashboard: stats: "+err.Error())
			return
		}
		writeJSON(w, out)
	}
}

// always adapts a build that reports its stats errors in its answer.
func always[T any](build func(context.Context, windowSpec) T) func(context.Context, windowSpec) (T, error) {
	return func(ctx context.Context, win windowSpec) (T, error) { return build(ctx, win), nil }
}

// buckets returns the starts of the n = d/step buckets of step that end
// with the one holding now.
func buckets(now time.Time, d, step time.Duration) []time.Time {
	n := int(d / step)
	last := now.Truncate(step)
	out := make([]time.Time, n)
	for i := range out {
		out[i] = last.Add(-time.Duration(n-1-i) * step)
	}
	return out
}

func unix(ts []time.Time) []int64 {
	out := make([]int64, len(ts))
	for i, t := range ts {
		out[i] = t.Unix()
	}
	return out
}

// statusSeries are the stacked chart's series and their filters; the
// failed series leaves out the no-key one, which Failed matches too.
var statusSeries = []struct {
	name string
	st   status.Status
}{
	{"success", status.Success},
	{"rate limited", status.ReachLimit},
	{"failed", status.Failed},
	{"no key available", status.NoKeyAvailable},
}

func (h *handler) usage(ctx context.Context, win windowSpec) (usageResponse, error) {
	now := h.cfg.clock.Now()
	starts := buckets(now, win.d, win.step)
	latStarts := buckets(now, win.d, win.lat)
	out := usageResponse{
		Time: now.UTC(), Window: win.name, Stats: h.stats != nil,
		Step: int64(win.step / time.Second), Times: unix(starts),
		LatencyStep: int64(win.lat / time.Second), LatencyTimes: unix(latStarts),
		ByKey: []Series{}, ByStatus: []Series{}, Latency: []Series{},
	}
	if h.stats == nil {
		return out, nil
	}
	until := now.Add(time.Nanosecond)
	q := recorder.Query{Since: starts[0], Until: until}
	perMin := float64(time.Minute) / float64(win.step)

	// Count series: every attempt per key, and one per status, in one
	// query where the store answers MultiStats; then the latency of the
	// busiest keys, in another.
	filters := []status.Status{status.Unknown}
	for _, s := range statusSeries {
		filters = append(filters, s.st)
	}
	series, err := h.stats.SeriesMulti(ctx, q, win.step, filters)
	if err == nil && len(series) != len(filters) {
		err = errMultiLen
	}
	if err != nil {
		return out, err
	}
	all, byStatus := series[0], series[1:]
	index := func(t time.Time) int {
		if t.Before(starts[0]) {
			return -1
		}
		if i := int(t.Sub(starts[0]) / win.step); i < len(starts) {
			return i
		}
		return -1
	}
	// add sums buckets into counts.
	add := func(counts []int64, bs []recorder.Bucket, sign int64) {
		for _, b := range bs {
			if i := index(b.Start); i >= 0 {
				counts[i] += sign * b.Count
			}
		}
	}
	rates := func(counts []int64) []*float64 {
		v := make([]*float64, len(counts))
		for i, c := range counts {
			v[i] = ptr(float64(c) * perMin)
		}
		return v
	}
	noKey := make([]int64, len(starts))
	for _, bs := range byStatus[3] {
		add(noKey, bs, 1)
	}
	for i, s := range statusSeries {
		counts := make([]int64, len(starts))
		for _, bs := range byStatus[i] {
			add(counts, bs, 1)
		}
		if s.st == status.Failed {
			for j := range counts {
				counts[j] -= noKey[j]
			}
		}
		out.ByStatus = append(out.ByStatus, Series{Name: s.name, Values: rates(counts)})
	}

	// Per key: the busiest chartKeys keys, the rest as "other keys".
	type keyTotal struct {
		id string
		n  int64
	}
	var ranked []keyTotal
	for id, bs := range all {
		if id == "" { // events without a key: the no-key series
			continue
		}
		var n int64
		for _, b := range bs {
			n += b.Count
		}
		ranked = append(ranked, keyTotal{id, n})
	}
	slices.SortFunc(ranked, func(a, b keyTotal) int {
		if a.n != b.n {
			if a.n > b.n {
				return -1
			}
			return 1
		}
		if a.id < b.id {
			return -1
		}
		if a.id > b.id {
			return 1
		}
		return 0
	})
	top := ranked[:min(len(ranked), h.cfg.chartKeys)]
	for _, kt := range top {
		counts := make([]int64, len(starts))
		add(counts, all[kt.id], 1)
		out.ByKey = append(out.ByKey, Series{Name: kt.id, Values: rates(counts)})
	}
	if len(ranked) > len(top) {
		counts := make([]int64, len(starts))
		for _, kt := range ranked[len(top):] {
			add(counts, all[kt.id], 1)
		}
		out.ByKey = append(out.ByKey, Series{Name: "other keys", Values: rates(counts)})
	}

	// Latency, for the top keys.
	if len(top) == 0 {
		return out, nil
	}
	topIDs := make([]string, len(top))
	for i, kt := range top {
		topIDs[i] = kt.id
	}
	lats, err := h.stats.LatencySeries(ctx, recorder.Query{Since: latStarts[0], Until: until, Status: status.Success}, win.lat, topIDs)
	if err != nil {
		return out, err
	}
	latIndex := func(t time.Time) int {
		if t.Before(latStarts[0]) {
			return -1
		}
		if i := int(t.Sub(latStarts[0]) / win.lat); i < len(latStarts) {
			return i
		}
		return -1
	}
	for _, kt := range top {
		p50 := Series{Name: kt.id + " p50", Values: make([]*float64, len(latStarts))}
		p99 := Series{Name: kt.id + " p99", Values: make([]*float64, len(latStarts))}
		for _, b := range lats[kt.id] {
			if i := latIndex(b.Start); i >= 0 && b.Count > 0 {
				p50.Values[i], p99.Values[i] = ms(b.P50), ms(b.P99)
			}
		}
		out.Latency = append(out.Latency, p50, p99)
	}
	return out, nil
}
