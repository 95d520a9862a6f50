package redisstate_test

import (
	"context"
	"errors"
	"io"
	"math"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/apipool-ng/apipool"
	"github.com/apipool-ng/apipool/internal/fakeclock"
	"github.com/apipool-ng/apipool/internal/redistest"
	"github.com/apipool-ng/apipool/redisstate"
	"github.com/apipool-ng/apipool/sharedstate"
	"github.com/apipool-ng/apipool/usage"
)

// Spend: counts add up across replicas, a key's and a client's of the same
// name apart, each period apart, and each count expires a minute after its
// period; bad spends are refused before any round trip.
func TestSpend(t *testing.T) {
	srv := redistest.Shared(t)
	prefix := testPrefix(t)
	clk := fakeclock.New(t0)
	a, b := newReplica(t, srv, prefix, redisstate.WithClock(clk)), newReplica(t, srv, prefix, redisstate.WithClock(clk))
	ctx := context.Background()
	end := t0.Truncate(24 * time.Hour).Add(24 * time.Hour)
	sp := func(scope sharedstate.SpendScope, id string, period uint64, amount float64) sharedstate.Spend {
		return sharedstate.Spend{Scope: scope, ID: id, Budget: "tokens_per_day", Period: period, End: end, Amount: amount}
	}
	got, err := a.Spend(ctx, []sharedstate.Spend{sp(sharedstate.SpendKey, "x", 7, 100), sp(sharedstate.SpendClient, "x", 7, 0.25), sp(sharedstate.SpendKey, "x", 7, 50)})
	if err != nil || len(got) != 3 || got[0] != 100 || got[1] != 0.25 || got[2] != 150 {
		t.Fatalf("first spends: %v, %v; want 100, 0.25, 150", got, err)
	}
	got, err = b.Spend(ctx, []sharedstate.Spend{sp(sharedstate.SpendKey, "x", 7, 1), sp(sharedstate.SpendKey, "x", 8, 1), sp(sharedstate.SpendClient, "x", 7, 0.5)})
	if err != nil || got[0] != 151 || got[1] != 1 || got[2] != 0.75 {
		t.Fatalf("the other replica's: %v, %v; want 151 (the key's total), 1 (another period), 0.75", got, err)
	}
	key := "{" + prefix + "}:spend:key:tokens_per_day:7:x"
	if ttl, err := a.rdb.PTTL(ctx, key).Result(); err != nil || ttl > end.Sub(t0)+time.Minute || ttl < end.Sub(t0)+time.Minute-time.Minute/2 {
		t.Fatalf("%s expires in %v (%v), want a minute after the period's end (%v on the store's clock)", key, ttl, err, end.Sub(t0)+time.Minute)
	}

	down := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1"})
	defer down.Close()
	s, _ := redisstate.New(down)
	for name, bad := range map[string]sharedstate.Spend{
		"scope":    {Scope: "team", ID: "x", Budget: "tokens_per_day", End: end},
		"empty id": {Scope: sharedstate.SpendKey, Budget: "tokens_per_day", End: end},
		"budget":   {Scope: sharedstate.SpendKey, ID: "x", Budget: "tokens:day", End: end},
		"no end":   {Scope: sharedstate.SpendKey, ID: "x", Budget: "tokens_per_day"},
		"negative": {Scope: sharedstate.SpendKey, ID: "x", Budget: "tokens_per_day", End: end, Amount: -1},
		"NaN":      {Scope: sharedstate.SpendKey, ID: "x", Budget: "tokens_per_day", End: end, Amount: math.NaN()},
	} {
		if _, err := s.Spend(ctx, []sharedstate.Spend{bad}); !errors.Is(err, redisstate.ErrInvalid) {
			t.Errorf("%s: %v, want ErrInvalid", name, err)
		}
	}
	if st := s.Stats(); st.Errors != 0 {
		t.Errorf("a refused spend went to Redis: %+v", st)
	}
}

// tokensBase answers every request with the tokens its X-Tokens header
// names, as OpenAI's chat completions state them.
type tokensBase struct{}

func (tokensBase) RoundTrip(r *http.Request) (*http.Response, error) {
	if r.Body != nil {
		r.Body.Close()
	}
	body := `{"usage":{"prompt_tokens":` + r.Header.Get("X-Tokens") + `,"completion_tokens":0}}`
	return &http.Response{StatusCode: 200, Header: http.Header{"Content-Type": {"application/json"}},
		Body: io.NopCloser(strings.NewReader(body)), ContentLength: int64(len(body)), Request: r}, nil
}

func spend(t *testing.T, p *apipool.Transport, ctx context.Context, tokens int) error {
	t.Helper()
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, "http://api.test/v1/chat/completions", nil)
	req.Header.Set("X-Tokens", strconv.Itoa(tokens))
	resp, err := p.RoundTrip(req)
	if err != nil {
		return err
	}
	io.Copy(io.Discard, resp.Body)
	return resp.Body.Close()
}

// Two pools on one Redis share a key's spend and a client's: each learns
// the total with its own next answer, rests the key (or refuses the
// client) once the total reaches the budget, and the alerts come once
// between them, from the pool whose spend crossed each threshold.
func TestBudgetSharedAcrossPools(t *testing.T) {
	srv := redistest.Shared(t)
	prefix := testPrefix(t)
	clk := fakeclock.New(t0)
	var mu sync.Mutex
	alerts := map[string][]string{}
	newPool := func(name string) *apipool.Transport {
		r := newReplica(t, srv, prefix, redisstate.WithClock(clk))
		cb, err := apipool.NewClientBudgets(map[string]apipool.Budget{"team": {TokensPerDay: 500}}, r.Store)
		if err != nil {
			t.Fatal(err)
		}
		p, err := apipool.New([]apipool.Key{{ID: "k", Secret: "sk-1", Budget: apipool.Budget{TokensPerDay: 1000}}},
			apipool.WithBase(tokensBase{}), apipool.WithClock(clk), apipool.WithRecorder(nil), apipool.WithSharedState(r.Store),
			apipool.WithUsage(usage.OpenAI(), nil), apipool.WithClientBudgets(cb),
			apipool.WithAlerts(func(a apipool.Alert) {
				mu.Lock()
				alerts[a.Kind.String()] = append(alerts[a.Kind.String()], name+" "+a.KeyID+a.Client)
				mu.Unlock()
			}, apipool.AlertSettings{}))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { p.Close(context.Background()) })
		return p
	}
	a, b := newPool("a"), newPool("b")
	rdb := srv.Client(t)
	count := func(scope, id string) float64 {
		v, _ := rdb.Get(context.Background(), "{"+prefix+"}:spend:"+scope+":tokens_per_day:"+strconv.FormatUint(day(clk.Now()), 10)+":"+id).Float64()
		return v
	}
	held := func(p *apipool.Transport) string { return p.Snapshot()[0].Reason }
	used := func(p *apipool.Transport) float64 { return p.Snapshot()[0].Budgets[0].Used }
	waitFor := func(what string, cond func() bool) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for !cond() {
			if time.Now().After(deadline) {
				t.Fatalf("%s: not after 10s", what)
			}
			time.Sleep(time.Millisecond)
		}
	}

	for range 3 {
		if err := spend(t, a, context.Background(), 300); err != nil {
			t.Fatal(err)
		}
	}
	waitFor("a's 900 tokens in Redis", func() bool { return count("key", "k") == 900 })
	if err := spend(t, b, context.Background(), 200); err != nil {
		t.Fatalf("b, 200 tokens on a key with 100 left in all: %v (its own count was 0)", err)
	}
	waitFor("b learns the total of 1100", func() bool { return held(b) == "token budget per day used up" })
	if u := used(b); u != 1100 {
		t.Fatalf("b's count %v, want the replicas' total 1100", u)
	}
	if held(a) != "" {
		t.Fatal("a rests the key before any answer told it the total")
	}
	if err := spend(t, a, context.Background(), 10); err != nil {
		t.Fatal(err)
	}
	waitFor("a learns the total of 1110", func() bool { return held(a) == "token budget per day used up" })
	if err := spend(t, a, context.Background(), 1); !errors.Is(err, apipool.ErrNoKeyAvailable) {
		t.Fatalf("a past the budget: %v", err)
	}

	// A client's budget, across the two pools alike.
	team := apipool.ContextWithClient(context.Background(), "team")
	if err := spend(t, a, team, 0); !errors.Is(err, apipool.ErrNoKeyAvailable) {
		t.Fatalf("team on a: %v (the key rests)", err)
	}
	clk.Advance(24 * time.Hour)
	if err := spend(t, a, team, 400); err != nil {
		t.Fatal(err)
	}
	waitFor("a's 400 tokens in Redis", func() bool { return count("client", "team") == 400 })
	if err := spend(t, b, team, 200); err != nil {
		t.Fatal(err)
	}
	// b refuses once its spend's answer told it the total; until then
	// each request it lets through adds one token.
	waitFor("b refuses team at 600 of 500", func() bool { return errors.Is(spend(t, b, team, 1), apipool.ErrBudgetExceeded) })
	a.Close(context.Background())
	b.Close(context.Background())
	mu.Lock()
	defer mu.Unlock()
	// The key: 80% crossed by a's third spend (900), 100% by b's (1100).
	// The client: 80% crossed by a's spend (0 -> 400), 100% by b's (400
	// -> 600).
	if s := strings.Join(alerts["budget.near"], ","); s != "a k,a team" {
		t.Errorf("budget.near from %q, want a for the key and for the client, once each", s)
	}
	if s := strings.Join(alerts["budget.spent"], ","); s != "b k,b team" {
		t.Errorf("budget.spent from %q, want b for the key and for the client, once each", s)
	}
}
