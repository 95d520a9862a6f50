package apipool_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/apipool-ng/apipool"
	"github.com/apipool-ng/apipool/sharedstate"
	"github.com/apipool-ng/apipool/status"
	"github.com/apipool-ng/apipool/usage"
)

// tokenAPI is an upstream whose answers state the tokens the request asks
// for in its X-Tokens header ("input,output"), as OpenAI's chat
// completions state them.
func tokenAPI() *fakeUpstream {
	return newUpstream(func(s seen) reply {
		in, out, _ := strings.Cut(s.Header.Get("X-Tokens"), ",")
		return reply{Status: 200, Header: hdr("Content-Type", "application/json", "X-Used", s.Secret),
			Body: `{"model":"gpt-4o","choices":[],"usage":{"prompt_tokens":` + in + `,"completion_tokens":` + out + `}}`}
	})
}

// spendReq sends one request that spends in+out tokens, reads its body to
// the end and closes it (which counts the spend); it returns the secret of
// the key used (tokenAPI's X-Used).
func spendReq(t testing.TB, p *apipool.Transport, ctx context.Context, in, out int) (string, error) {
	t.Helper()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://api.test/v1/chat/completions", nil)
	req.Header.Set("X-Tokens", itoa(in)+","+itoa(out))
	resp, err := p.RoundTrip(req)
	if err != nil {
		return "", err
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.Header.Get("X-Used"), nil
}

// budgetUse returns key id's use of budget kind in the pool's snapshot.
func budgetUse(t testing.TB, p *apipool.Transport, id string, kind apipool.BudgetKind) apipool.BudgetUse {
	t.Helper()
	for _, u := range snapshotByID(p)[id].Budgets {
		if u.Kind == kind {
			return u
		}
	}
	t.Fatalf("key %s: no %s budget in the snapshot", id, kind)
	return apipool.BudgetUse{}
}

// The Measure section's budget test: 4 keys with a token budget in two
// tiers, demand above it, sequential requests of varying size. Every key
// stops within one request's units of its budget, the pool moves on to the
// next key and then the next tier, nothing fails while a key has budget
// left, the request that finds none fails at once with a *NoKeyError whose
// RetryAt is the period's end, and when the period ends the keys come back.
func TestBudgetKeysStopWithinOneRequest(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name   string
		budget apipool.Budget
		kind   apipool.BudgetKind
		reason string
		loc    *time.Location
		next   func(now time.Time) time.Time // the period's end
	}{
		{"per-day", apipool.Budget{TokensPerDay: 10_000}, apipool.BudgetTokensPerDay, "token budget per day used up",
			time.FixedZone("UTC-5", -5*3600), func(now time.Time) time.Time {
				l := now.In(time.FixedZone("UTC-5", -5*3600))
				return time.Date(l.Year(), l.Month(), l.Day()+1, 0, 0, 0, 0, l.Location())
			}},
		{"per-minute", apipool.Budget{TokensPerMinute: 10_000}, apipool.BudgetTokensPerMinute, "token budget per minute used up",
			time.UTC, func(now time.Time) time.Time { return now.Truncate(time.Minute).Add(time.Minute) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			clk := newClockAt(t0.Add(17 * time.Second))
			up := tokenAPI()
			ks := keys(4)
			for i := range ks {
				ks[i].Budget = tc.budget
				ks[i].Tier = i / 2
			}
			p := mustNew(t, ks, apipool.WithBase(up), apipool.WithClock(clk), apipool.WithUsage(usage.OpenAI(), nil),
				apipool.WithQuotaLocation(tc.loc), apipool.WithRecorder(nil))
			limit := float64(10_000)
			const largest = 977 + 311
			spentAt := map[string]int{} // the request after which each key was used up
			n := 0
			var lastErr error
			for ; n < 1000; n++ {
				in, out := 100+(n*37)%878, 10+(n*13)%302 // 100..977 and 10..311: varying sizes
				secret, err := spendReq(t, p, context.Background(), in, out)
				if err != nil {
					lastErr = err
					break
				}
				id := "k" + strings.TrimPrefix(secret, "s")
				if _, ok := spentAt[id]; ok {
					t.Fatalf("request %d went to %s, used up after request %d", n, id, spentAt[id])
				}
				if tier := int(id[1]-'0') / 2; tier == 1 {
					for _, k := range []string{"k0", "k1"} {
						if _, ok := spentAt[k]; !ok {
							t.Fatalf("request %d went to tier 1 (%s) while %s of tier 0 had budget left", n, id, k)
						}
					}
				}
				if u := budgetUse(t, p, id, tc.kind); u.Used >= limit {
					spentAt[id] = n
				}
			}
			if len(spentAt) != 4 {
				t.Fatalf("the first failure (%v) came after %d requests with only %v used up; want every key used up first", lastErr, n, spentAt)
			}
			nk := noKey(t, lastErr)
			end := tc.next(clk.Now())
			if !nk.RetryAt.Equal(end) || nk.Limited != 4 {
				t.Fatalf("NoKeyError %v: RetryAt %v Limited %d, want the period's end %v and 4 limited", nk, nk.RetryAt, nk.Limited, end)
			}
			for _, h := range nk.Held {
				if h.Reason != tc.reason || h.State != apipool.KeyLimited || !h.Until.Equal(end) {
					t.Errorf("held %+v, want %q until %v", h, tc.reason, end)
				}
			}
			for _, s := range p.Snapshot() {
				u := budgetUse(t, p, s.KeyID, tc.kind)
				if u.Used < limit || u.Used >= limit+largest {
					t.Errorf("key %s spent %v of %v: want it stopped within one request's units (%d)", s.KeyID, u.Used, limit, largest)
				}
				if s.State != apipool.KeyLimited || s.Reason != tc.reason || !s.Until.Equal(end) || !u.Until.Equal(end) {
					t.Errorf("snapshot %s: state %s hold %q until %v (budget until %v), want limited, %q until %v", s.KeyID, s.State, s.Reason, s.Until, u.Until, tc.reason, end)
				}
			}
			// The period ends: the keys are back, their counts new.
			clk.Set(end)
			if _, err := spendReq(t, p, context.Background(), 10, 10); err != nil {
				t.Fatalf("after the period's end: %v", err)
			}
			for _, s := range p.Snapshot() {
				if s.State != apipool.KeyActive {
					t.Errorf("key %s %s after the period's end, want active", s.KeyID, s.State)
				}
			}
		})
	}
}

// Requests in flight at once overshoot a budget by at most their units:
// the count grows when each answer's body ends, so every request that took
// the key before the count reached the budget is spent in full, and the
// key rests only after. The bound: requests in flight on the key at once ×
// the largest answer's units.
func TestBudgetOvershootBoundConcurrent(t *testing.T) {
	t.Parallel()
	clk := newClock()
	up := tokenAPI()
	ks := keys(1)
	ks[0].Budget = apipool.Budget{TokensPerDay: 1000}
	p := mustNew(t, ks, apipool.WithBase(up), apipool.WithClock(clk), apipool.WithUsage(usage.OpenAI(), nil), apipool.WithRecorder(nil))
	if _, err := spendReq(t, p, context.Background(), 900, 0); err != nil {
		t.Fatal(err)
	}
	// 8 requests take the key at once (900 < 1000: it is free), and hold
	// their answers unread.
	const inFlight, each = 8, 400
	var bodies []io.ReadCloser
	for range inFlight {
		req := newGet(t, "http://api.test/v1/chat/completions")
		req.Header.Set("X-Tokens", "300,100")
		resp, err := p.RoundTrip(req)
		if err != nil {
			t.Fatalf("a request in the burst: %v", err)
		}
		bodies = append(bodies, resp.Body)
	}
	for _, b := range bodies {
		io.Copy(io.Discard, b)
		b.Close()
	}
	u := budgetUse(t, p, "k0", apipool.BudgetTokensPerDay)
	if u.Used != 900+inFlight*each {
		t.Fatalf("spent %v, want every answer counted: %d", u.Used, 900+inFlight*each)
	}
	if over := u.Used - u.Limit; over <= 0 || over >= inFlight*each {
		t.Fatalf("overshoot %v, want above 0 and below the bound %d (in flight × largest)", over, inFlight*each)
	}
	_, err := spendReq(t, p, context.Background(), 1, 1)
	noKey(t, err)
}

// A cost budget per month counts the price table's cost, in the quota
// location's calendar month; a model missing from the table counts
// nothing (its cost is not known).
func TestBudgetCostPerMonth(t *testing.T) {
	t.Parallel()
	loc := time.FixedZone("UTC+9", 9*3600)
	clk := newClockAt(time.Date(2026, 3, 31, 12, 0, 0, 0, loc))
	up := tokenAPI()
	ks := keys(2)
	ks[0].Budget = apipool.Budget{CostPerMonth: 0.01}
	prices := usage.Prices{"*": {Input: 2, Output: 10}} // per million tokens
	p := mustNew(t, ks, apipool.WithBase(up), apipool.WithClock(clk), apipool.WithUsage(usage.OpenAI(), prices),
		apipool.WithQuotaLocation(loc), apipool.WithRecorder(nil), apipool.WithSelector(selectorFunc(func(c *apipool.Candidates) int {
			for i := 0; i < c.Len(); i++ {
				if c.Eligible(i) {
					return i // k0 first, while it may
				}
			}
			return -1
		})))
	// Each request costs (1000×2 + 100×10)/1e6 = 0.003.
	var used []string
	for range 6 {
		secret, err := spendReq(t, p, context.Background(), 1000, 100)
		if err != nil {
			t.Fatal(err)
		}
		used = append(used, secret)
	}
	if got := strings.Join(used, " "); got != "s0 s0 s0 s0 s1 s1" {
		t.Fatalf("keys used %s; want k0 for 4 requests (0.012 >= 0.01), then k1", got)
	}
	u := budgetUse(t, p, "k0", apipool.BudgetCostPerMonth)
	end := time.Date(2026, 4, 1, 0, 0, 0, 0, loc)
	if u.Used < 0.0119 || u.Used > 0.0121 || !u.Until.Equal(end) {
		t.Fatalf("use %+v, want 0.012 until %v", u, end)
	}
	clk.Set(end)
	if secret, _ := spendReq(t, p, context.Background(), 1, 1); secret != "s0" {
		t.Fatalf("a new month: key %s, want k0 back", secret)
	}
	// A model the table lacks: its cost is not known, and counts nothing.
	gpt := apipool.WithModel(func(*http.Request, []byte) string { return "gpt-4o" })
	p2 := mustNew(t, ks, apipool.WithBase(up), apipool.WithClock(clk), apipool.WithUsage(usage.OpenAI(), usage.Prices{"claude-*": {Input: 3}}), gpt, apipool.WithRecorder(nil))
	// Without WithModel, and without a "*" price, no answer has a model
	// to price: New refuses the cost budget rather than count nothing.
	_, err := apipool.New(ks, apipool.WithUsage(usage.OpenAI(), usage.Prices{"claude-*": {Input: 3}}))
	var ce *apipool.ConfigError
	if !errors.As(err, &ce) || ce.Field != "keys[0].Budget" || !strings.Contains(ce.Reason, "WithModel") {
		t.Fatalf("a cost budget without WithModel or a \"*\" price: %v", err)
	}
	for range 6 {
		if _, err := spendReq(t, p2, context.Background(), 1000, 100); err != nil {
			t.Fatal(err)
		}
	}
	if u := budgetUse(t, p2, "k0", apipool.BudgetCostPerMonth); u.Used != 0 {
		t.Fatalf("unknown cost counted %v, want nothing", u.Used)
	}
}

// Alerts: 80% and 100% of a key's budget, each once per period, with the
// period's end; again in the next period.
func TestBudgetAlerts(t *testing.T) {
	t.Parallel()
	clk := newClock()
	up := tokenAPI()
	ks := keys(2)
	ks[0].Budget = apipool.Budget{TokensPerMinute: 1000}
	var mu sync.Mutex
	var got []apipool.Alert
	p := mustNew(t, ks, apipool.WithBase(up), apipool.WithClock(clk), apipool.WithUsage(usage.OpenAI(), nil), apipool.WithRecorder(nil),
		apipool.WithAlerts(func(a apipool.Alert) { mu.Lock(); got = append(got, a); mu.Unlock() }, apipool.AlertSettings{Pool: "p"}),
		apipool.WithSelector(selectorFunc(func(c *apipool.Candidates) int {
			for i := 0; i < c.Len(); i++ {
				if c.Eligible(i) {
					return i
				}
			}
			return -1
		})))
	for range 2 {
		for range 8 { // 300 tokens each: 80% at the 3rd, 100% at the 4th, then k1
			if _, err := spendReq(t, p, context.Background(), 200, 100); err != nil {
				t.Fatal(err)
			}
		}
		clk.Advance(time.Minute)
	}
	p.Close(context.Background())
	mu.Lock()
	defer mu.Unlock()
	var kinds []string
	for _, a := range got {
		if a.Kind != apipool.AlertBudgetNear && a.Kind != apipool.AlertBudgetSpent {
			continue
		}
		kinds = append(kinds, a.Kind.String())
		if a.KeyID != "k0" || a.Client != "" || a.Pool != "p" || a.Until.Sub(a.Time) > time.Minute || a.Until.Second() != 0 || !strings.Contains(a.Reason, "token budget per minute") {
			t.Errorf("alert %+v", a)
		}
	}
	if s := strings.Join(kinds, " "); s != "budget.near budget.spent budget.near budget.spent" {
		t.Fatalf("budget alerts %s, want near and spent once in each of the two minutes", s)
	}
}

// A client past its budget is refused at once with a *BudgetError that
// names the budget and the period's end; nothing is sent, the event says
// so; other clients and requests without a client go on; the period's end
// or a raised budget lets it in again; its alerts name the client.
func TestClientBudget(t *testing.T) {
	t.Parallel()
	clk := newClock()
	up := tokenAPI()
	cb, err := apipool.NewClientBudgets(map[string]apipool.Budget{"team-a": {TokensPerDay: 1000}, "team-b": {TokensPerDay: 1000}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	rec := &captureRecorder{}
	var mu sync.Mutex
	var alerts []apipool.Alert
	p := mustNew(t, keys(2), apipool.WithBase(up), apipool.WithClock(clk), apipool.WithUsage(usage.OpenAI(), nil), apipool.WithRecorder(rec),
		apipool.WithClientBudgets(cb), apipool.WithAlerts(func(a apipool.Alert) { mu.Lock(); alerts = append(alerts, a); mu.Unlock() }, apipool.AlertSettings{}))
	a := apipool.ContextWithClient(context.Background(), "team-a")
	for i := range 4 {
		if _, err := spendReq(t, p, a, 300, 0); err != nil {
			t.Fatalf("request %d of team-a (%d tokens spent before): %v", i, 300*i, err)
		}
	}
	sent := len(up.Calls())
	_, err = spendReq(t, p, a, 1, 1)
	var be *apipool.BudgetError
	if !errors.As(err, &be) || !errors.Is(err, apipool.ErrBudgetExceeded) {
		t.Fatalf("err = %v, want a *BudgetError matching ErrBudgetExceeded", err)
	}
	end := t0.Truncate(24 * time.Hour).Add(24 * time.Hour)
	if be.Client != "team-a" || be.Budget != apipool.BudgetTokensPerDay || be.Limit != 1000 || be.Used != 1200 || !be.Until.Equal(end) {
		t.Fatalf("BudgetError %+v, want team-a's tokens_per_day 1200 of 1000 until %v", be, end)
	}
	if !strings.Contains(err.Error(), "tokens_per_day") || !strings.Contains(err.Error(), "team-a") {
		t.Fatalf("error %q names neither the budget nor the client", err)
	}
	if len(up.Calls()) != sent {
		t.Fatal("a refused request was sent")
	}
	evs := rec.Events()
	if e := evs[len(evs)-1]; e.Status != status.NoKeyAvailable || e.ErrorType != "client_budget" || e.Client != "team-a" || e.KeyID != "" {
		t.Fatalf("the refused request's event %+v", e)
	}
	for _, ctx := range []context.Context{apipool.ContextWithClient(context.Background(), "team-b"), apipool.ContextWithClient(context.Background(), "other"), context.Background()} {
		if _, err := spendReq(t, p, ctx, 300, 0); err != nil {
			t.Fatalf("client %q: %v", apipool.ClientFrom(ctx), err)
		}
	}
	var st []apipool.ClientStatus = p.ClientBudgets()
	if len(st) != 2 || st[0].Client != "team-a" || st[0].Budgets[0].Used != 1200 || st[1].Budgets[0].Used != 300 {
		t.Fatalf("ClientBudgets %+v", st)
	}
	// A raised budget lets the client in at once; the count stays.
	if err := cb.SetBudgets(map[string]apipool.Budget{"team-a": {TokensPerDay: 2000}}); err != nil {
		t.Fatal(err)
	}
	if _, err := spendReq(t, p, a, 300, 0); err != nil {
		t.Fatalf("after the budget was raised: %v", err)
	}
	if _, err := spendReq(t, p, a, 600, 0); err != nil {
		t.Fatal(err)
	}
	if _, err := spendReq(t, p, a, 1, 0); !errors.Is(err, apipool.ErrBudgetExceeded) {
		t.Fatalf("2100 of 2000: %v, want refused", err)
	}
	clk.Set(end)
	if _, err := spendReq(t, p, a, 1, 0); err != nil {
		t.Fatalf("a new day: %v", err)
	}
	p.Close(context.Background())
	mu.Lock()
	defer mu.Unlock()
	var kinds []string
	for _, al := range alerts {
		if al.Client == "team-a" {
			kinds = append(kinds, al.Kind.String())
		}
		if al.KeyID != "" && (al.Kind == apipool.AlertBudgetNear || al.Kind == apipool.AlertBudgetSpent) {
			t.Errorf("alert %+v about a key: the keys have no budget", al)
		}
	}
	// team-a: 80% and 100% of the first budget, then of the raised one
	// (a new budget, alerted anew within the same day).
	if s := strings.Join(kinds, " "); s != "budget.near budget.spent budget.near budget.spent" {
		t.Fatalf("team-a's alerts: %s", s)
	}
}

// Budgets refuse what they cannot count: a negative or non-finite
// budget, a token budget without WithUsage, a cost budget without a price
// table; every refusal a *ConfigError naming the field.
func TestBudgetConfig(t *testing.T) {
	t.Parallel()
	withUsage := apipool.WithUsage(usage.OpenAI(), nil)
	for _, tc := range []struct {
		b     apipool.Budget
		opts  []apipool.Option
		field string
	}{
		{apipool.Budget{TokensPerMinute: -1}, []apipool.Option{withUsage}, "keys[0].Budget.TokensPerMinute"},
		{apipool.Budget{TokensPerDay: 1 << 60}, []apipool.Option{withUsage}, "keys[0].Budget.TokensPerDay"},
		{apipool.Budget{CostPerDay: -0.5}, []apipool.Option{withUsage}, "keys[0].Budget.CostPerDay"},
		{apipool.Budget{CostPerMonth: 1 / zero()}, []apipool.Option{withUsage}, "keys[0].Budget.CostPerMonth"},
		{apipool.Budget{TokensPerDay: 10}, nil, "keys[0].Budget"},
		{apipool.Budget{CostPerDay: 10}, []apipool.Option{withUsage}, "keys[0].Budget"},
	} {
		ks := keys(1)
		ks[0].Budget = tc.b
		_, err := apipool.New(ks, tc.opts...)
		var ce *apipool.ConfigError
		if !errors.As(err, &ce) || ce.Field != tc.field || !errors.Is(err, apipool.ErrInvalidConfig) {
			t.Errorf("budget %+v: %v, want a *ConfigError for %s", tc.b, err, tc.field)
		}
	}
	for _, m := range []map[string]apipool.Budget{{"": {TokensPerDay: 1}}, {"a": {TokensPerDay: -1}}, {"a": {CostPerDay: -1}}} {
		if _, err := apipool.NewClientBudgets(m, nil); !errors.Is(err, apipool.ErrInvalidConfig) {
			t.Errorf("client budgets %v: %v, want a *ConfigError", m, err)
		}
	}
	if _, err := apipool.New(keys(1), apipool.WithClientBudgets(nil)); !errors.Is(err, apipool.ErrInvalidConfig) {
		t.Errorf("nil client budgets: %v", err)
	}
	// The JSON of a key shows its budget, never its secret.
	ks := keys(1)
	ks[0].Budget = apipool.Budget{TokensPerDay: 5, CostPerMonth: 1.5}
	b, _ := ks[0].MarshalJSON()
	if !strings.Contains(string(b), `"budget":{"tokens_per_day":5,"cost_per_month":1.5}`) || strings.Contains(string(b), "s0") {
		t.Errorf("JSON %s", b)
	}
}

func zero() float64 { return 0 }

// SetKeys and ReplaceKey keep what a key spent (it belongs to the ID): a
// raised budget lets a key that used up the old one go on at once, a
// lowered one holds it at once, and an answer the old key had in flight
// counts with the new one.
func TestBudgetKeptAcrossSetKeys(t *testing.T) {
	t.Parallel()
	clk := newClock()
	up := tokenAPI()
	ks := keys(2)
	ks[0].Budget = apipool.Budget{TokensPerDay: 1000}
	p := mustNew(t, ks, apipool.WithBase(up), apipool.WithClock(clk), apipool.WithUsage(usage.OpenAI(), nil), apipool.WithRecorder(nil))
	for snapshotByID(p)["k0"].Reason == "" {
		if _, err := spendReq(t, p, context.Background(), 200, 0); err != nil {
			t.Fatal(err)
		}
	}
	ks[0].Budget.TokensPerDay = 5000
	if err := p.SetKeys(ks); err != nil {
		t.Fatal(err)
	}
	if s := snapshotByID(p)["k0"]; s.Reason != "" || s.Budgets[0].Used != 1000 {
		t.Fatalf("after a raise: hold %q, used %v; want free with 1000 spent", s.Reason, s.Budgets[0].Used)
	}
	req := newGet(t, "http://api.test/v1/chat/completions")
	req.Header.Set("X-Tokens", "500,0")
	var resp *http.Response
	for resp == nil || resp.Header.Get("X-Used") != "s0" { // k0's answer, held
		if resp != nil {
			resp.Body.Close()
		}
		var err error
		if resp, err = p.RoundTrip(req); err != nil {
			t.Fatal(err)
		}
	}
	ks[0].Budget.TokensPerDay = 6000
	if err := p.SetKeys(ks); err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if s := snapshotByID(p)["k0"]; s.Budgets[0].Used != 1500 || s.Budgets[0].Limit != 6000 {
		t.Fatalf("the answer in flight across SetKeys: %+v, want 1500 of 6000", s.Budgets[0])
	}
	ks[0].Budget.TokensPerDay = 1200
	ks[0].Secret = "s0-new"
	if err := p.ReplaceKey(ks[0]); err != nil {
		t.Fatal(err)
	}
	if s := snapshotByID(p)["k0"]; s.Reason != "token budget per day used up" {
		t.Fatalf("after a cut: hold %q, want the budget used up", s.Reason)
	}
}

// No secret in what budgets say: errors, alerts, logs.
func TestBudgetNoSecret(t *testing.T) {
	t.Parallel()
	const canary = "sk-CANARY-budget-7f3a"
	clk := newClock()
	up := tokenAPI()
	var logs bytes.Buffer
	var mu sync.Mutex
	var alerts []string
	cb, _ := apipool.NewClientBudgets(map[string]apipool.Budget{"c": {TokensPerDay: 100}}, nil)
	p := mustNew(t, []apipool.Key{{ID: "only", Secret: canary, Budget: apipool.Budget{TokensPerDay: 100}}}, apipool.WithBase(up), apipool.WithClock(clk),
		apipool.WithUsage(usage.OpenAI(), nil), apipool.WithRecorder(nil), apipool.WithClientBudgets(cb),
		apipool.WithLogger(slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))),
		apipool.WithAlerts(func(a apipool.Alert) { mu.Lock(); alerts = append(alerts, a.Reason+a.KeyID+a.Client); mu.Unlock() }, apipool.AlertSettings{}))
	ctx := apipool.ContextWithClient(context.Background(), "c")
	spendReq(t, p, ctx, 120, 0)
	_, err1 := spendReq(t, p, ctx, 1, 0)
	_, err2 := spendReq(t, p, context.Background(), 1, 0)
	if !errors.Is(err1, apipool.ErrBudgetExceeded) || !errors.Is(err2, apipool.ErrNoKeyAvailable) {
		t.Fatalf("errors %v, %v", err1, err2)
	}
	p.Close(context.Background())
	mu.Lock()
	defer mu.Unlock()
	all := err1.Error() + err2.Error() + logs.String() + strings.Join(alerts, "\n") + strconv.Quote(p.Snapshot()[0].Reason)
	if len(alerts) < 3 {
		t.Fatalf("alerts %q, want the key's and the client's", alerts)
	}
	if strings.Contains(all, canary) {
		t.Fatalf("the secret appears in: %s", all)
	}
}

// Units not known count nothing: a body closed before its usage, and an
// answer without any.
func TestBudgetUnknownCountsNothing(t *testing.T) {
	t.Parallel()
	up := newUpstream(func(s seen) reply {
		if s.Header.Get("X-None") != "" {
			return reply{Status: 200, Header: hdr("Content-Type", "application/json"), Body: `{"choices":[]}`}
		}
		return reply{Status: 200, Header: hdr("Content-Type", "application/json"), Body: `{"choices":[],"usage":{"prompt_tokens":400,"completion_tokens":100}}`}
	})
	ks := keys(1)
	ks[0].Budget = apipool.Budget{TokensPerDay: 1000}
	p := mustNew(t, ks, apipool.WithBase(up), apipool.WithClock(newClock()), apipool.WithUsage(usage.OpenAI(), nil), apipool.WithRecorder(nil))
	for range 3 {
		resp, err := p.RoundTrip(newGet(t, "http://api.test/v1/chat/completions"))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Read(make([]byte, 5)) // closed before the usage
		resp.Body.Close()
		req := newGet(t, "http://api.test/v1/chat/completions")
		req.Header.Set("X-None", "1")
		if resp, err = p.RoundTrip(req); err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	if u := budgetUse(t, p, "k0", apipool.BudgetTokensPerDay); u.Used != 0 {
		t.Fatalf("spent %v, want nothing counted of units not known", u.Used)
	}
	resp, err := p.RoundTrip(newGet(t, "http://api.test/v1/chat/completions"))
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if u := budgetUse(t, p, "k0", apipool.BudgetTokensPerDay); u.Used != 500 {
		t.Fatalf("spent %v, want 500 once the usage is read", u.Used)
	}
}

// flakySpender is a sharedstate.Spender that keeps totals in memory and
// fails the calls its fail func says; each call's spends go to calls.
type flakySpender struct {
	mu     sync.Mutex
	fail   func(n int) bool
	n      int
	totals map[string]float64
	calls  chan []sharedstate.Spend
}

func (f *flakySpender) Spend(_ context.Context, spends []sharedstate.Spend) ([]float64, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.n++
	f.calls <- slices.Clone(spends)
	if f.fail(f.n) {
		return nil, errors.New("the store is down")
	}
	out := make([]float64, len(spends))
	for i, sp := range spends {
		k := sp.ID + "/" + sp.Budget
		f.totals[k] += sp.Amount
		out[i] = f.totals[k]
	}
	return out, nil
}

func (f *flakySpender) total(k string) float64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.totals[k]
}

// A spend the shared store failed to take is not lost: it goes again with
// the next spends, merged with them, or on its own after a backoff when no
// spend comes, so the replicas' total catches up with what was spent.
func TestSpendRetriedAfterFailure(t *testing.T) {
	t.Parallel()
	clk := newClock()
	fs := &flakySpender{fail: func(n int) bool { return n == 1 || n == 3 }, totals: map[string]float64{}, calls: make(chan []sharedstate.Spend, 100)}
	cb, err := apipool.NewClientBudgets(map[string]apipool.Budget{"team": {TokensPerDay: 10_000}}, fs)
	if err != nil {
		t.Fatal(err)
	}
	p := mustNew(t, keys(1), apipool.WithBase(tokenAPI()), apipool.WithClock(clk), apipool.WithUsage(usage.OpenAI(), nil), apipool.WithClientBudgets(cb))
	ctx := apipool.ContextWithClient(context.Background(), "team")
	call := func(what string) []sharedstate.Spend {
		t.Helper()
		select {
		case c := <-fs.calls:
			return c
		case <-time.After(time.Minute): // a guard against a hang, not a timing
			t.Fatalf("no call to the store: %s", what)
			return nil
		}
	}
	amount := func(c []sharedstate.Spend) float64 {
		if len(c) != 1 || c[0].ID != "team" || c[0].Budget != "tokens_per_day" {
			t.Fatalf("spends %+v, want one of team's tokens_per_day", c)
		}
		return c[0].Amount
	}
	if _, err := spendReq(t, p, ctx, 300, 0); err != nil {
		t.Fatal(err)
	}
	if a := amount(call("the first spend")); a != 300 {
		t.Fatalf("first call: %v tokens, want 300", a)
	}
	// The first call failed: its 300 go with the next spend.
	if _, err := spendReq(t, p, ctx, 200, 0); err != nil {
		t.Fatal(err)
	}
	if a := amount(call("the second spend")); a != 500 {
		t.Fatalf("second call: %v tokens, want 500 (200 and the 300 that failed)", a)
	}
	// The third call fails and no spend follows: the backoff sends it.
	if _, err := spendReq(t, p, ctx, 100, 0); err != nil {
		t.Fatal(err)
	}
	if a := amount(call("the third spend")); a != 100 {
		t.Fatalf("third call: %v tokens, want 100", a)
	}
	for again := false; !again; {
		clk.Advance(time.Second)
		select {
		case c := <-fs.calls:
			if a := amount(c); a != 100 {
				t.Fatalf("the retry: %v tokens, want 100", a)
			}
			again = true
		case <-time.After(10 * time.Millisecond):
		}
	}
	if got := fs.total("team/tokens_per_day"); got != 600 {
		t.Fatalf("the store's total %v, want 600 (every token spent, once)", got)
	}
	if used := p.ClientBudgets()[0].Budgets[0].Used; used != 600 {
		t.Fatalf("the pool's count %v, want 600", used)
	}
}
