package apipool_test

import (
	"context"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/apipool-ng/apipool"
	"github.com/apipool-ng/apipool/sharedstate"
)

// fixedWindowAPI is an upstream that sends no rate-limit headers and
// allows limit requests per key in each second of its clock (a fixed
// window), answering 429 with Retry-After: 1 beyond. It counts the
// successes and the 429s.
type fixedWindowAPI struct {
	now   func() time.Time
	limit int

	mu          sync.Mutex
	used        map[string]int // "authorization/second" -> requests
	ok, limited int
}

func newFixedWindowAPI(now func() time.Time, limit int) *fixedWindowAPI {
	return &fixedWindowAPI{now: now, limit: limit, used: map[string]int{}}
}

func (a *fixedWindowAPI) RoundTrip(r *http.Request) (*http.Response, error) {
	k := r.Header.Get("Authorization") + "/" + strconv.FormatInt(a.now().Unix(), 10)
	a.mu.Lock()
	a.used[k]++
	over := a.used[k] > a.limit
	if over {
		a.limited++
	} else {
		a.ok++
	}
	a.mu.Unlock()
	code, h := http.StatusOK, http.Header{}
	if over {
		code = http.StatusTooManyRequests
		h.Set("Retry-After", "1")
	}
	return &http.Response{StatusCode: code, Header: h, Body: http.NoBody, Request: r}, nil
}

// counts returns the successes and the 429s since the last reset.
func (a *fixedWindowAPI) counts() (ok, limited int) {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.ok, a.limited
}

func (a *fixedWindowAPI) reset() {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.ok, a.limited = 0, 0
}

// learnStore is an in-process store that shares changes and learned limits
// as memShared does (the latest learned limit wins, and a Watch replays
// it) and enforces the rate limits of Take as sliding windows, as
// windowShared does. It records what is published and what Takes are
// given.
type learnStore struct {
	*memShared
	win *windowShared

	rec       sync.Mutex
	published []sharedstate.Change
	limits    map[string][]sharedstate.Limits // key ID -> the Limits of its Takes
}

func newLearnStore() *learnStore {
	return &learnStore{memShared: newMemShared(), win: newWindowShared(), limits: map[string][]sharedstate.Limits{}}
}

func (s *learnStore) Publish(ctx context.Context, c sharedstate.Change) error {
	s.rec.Lock()
	s.published = append(s.published, c)
	s.rec.Unlock()
	return s.memShared.Publish(ctx, c)
}

func (s *learnStore) Take(ctx context.Context, id string, l sharedstate.Limits, now time.Time, n int) (int, time.Time, error) {
	s.rec.Lock()
	s.limits[id] = append(s.limits[id], l)
	s.rec.Unlock()
	return s.win.Take(ctx, id, l, now, n)
}

func (s *learnStore) learnedChanges() []sharedstate.Change {
	s.rec.Lock()
	defer s.rec.Unlock()
	var out []sharedstate.Change
	for _, c := range s.published {
		if c.Kind == sharedstate.Learned {
			out = append(out, c)
		}
	}
	return out
}

// learned returns what p learned for key id: its limit and window.
func learned(p *apipool.Transport, id string) (int, time.Duration) {
	s := stateOf(p, id)
	return s.LearnedLimit, s.LearnedWindow
}

// agreed waits until every pool holds the same learned limit for key id,
// and returns it.
func agreed(t *testing.T, pools []*apipool.Transport, id string) int {
	t.Helper()
	var n int
	eventually(t, "the pools to agree on the learned limit", func() bool {
		n0, w0 := learned(pools[0], id)
		for _, p := range pools[1:] {
			if n, w := learned(p, id); n != n0 || w != w0 {
				return false
			}
		}
		n = n0
		return true
	})
	return n
}

// sendLearning drives pools on the fake clock for d: in each step, two
// goroutines per pool send until the pool refuses, then, once every pool
// holds the same learned limit (the changes published in the step have
// reached them all), the clock moves by step.
func sendLearning(t *testing.T, clk clockAdapter, pools []*apipool.Transport, id string, d, step time.Duration) {
	t.Helper()
	end := clk.Now().Add(d)
	for clk.Now().Before(end) {
		if !sendUntilRefused(t, pools) {
			return
		}
		agreed(t, pools, id)
		clk.Advance(step)
	}
}

// TestSharedLearnedLimitHoldsAcrossReplicas: three pools share a key whose
// upstream allows 10 requests a second and sends no rate-limit headers.
// The limit one learns reaches the others, and holds across the three
// together (Take counts it): after the learning, the upstream's 429s stay
// a small share of the successes. A pool that starts later gets the
// learned limit from the store's state. No secret is published.
func TestSharedLearnedLimitHoldsAcrossReplicas(t *testing.T) {
	t.Parallel()
	const secret = "sk-learned-3f9a77"
	clk := newClock()
	store := newLearnStore()
	up := newFixedWindowAPI(clk.Now, 10)
	k := apipool.Key{ID: "k0", Secret: secret}
	newPool := func() *apipool.Transport {
		return mustNew(t, []apipool.Key{k}, apipool.WithBase(up), apipool.WithClock(clk), apipool.WithSharedState(store), apipool.WithMaxWait(0))
	}
	var pools []*apipool.Transport
	for range 3 {
		pools = append(pools, newPool())
	}
	for i, p := range pools {
		eventually(t, "pool "+itoa(i)+" to have synced", func() bool { return p.SharedStateHealth().Synced })
	}

	sendLearning(t, clk, pools, "k0", 5*time.Second, 10*time.Millisecond)
	n := agreed(t, pools, "k0")
	if _, w := learned(pools[0], "k0"); n < 1 || n > 10 || w != time.Second {
		t.Fatalf("learned %d in %v, want 1 to 10 in a second", n, w)
	}
	ok, limited := up.counts()
	t.Logf("learning (5 s): %d successes, %d 429s; learned %d a second", ok, limited, n)

	up.reset()
	const run = 60 * time.Second
	sendLearning(t, clk, pools, "k0", run, 10*time.Millisecond)
	ok, limited = up.counts()
	n = agreed(t, pools, "k0")
	t.Logf("after (%v): %d successes, %d 429s (%.4f per success); learned %d a second", run, ok, limited, float64(limited)/float64(max(ok, 1)), n)
	// Each replica learning and pacing alone sends up to three times the
	// limit. Shared, the 429s are the learner's probes of a raise (one
	// per 16n successes or more) and their echoes: a few in a hundred.
	if limited*20 > ok {
		t.Errorf("%d 429s for %d successes across the three pools, want at most 1 in 20", limited, ok)
	}
	// The key stays in use: at least one success every two seconds. (A
	// replica counts its own successes before a 429, so the first limit
	// learned while three send at once may be a third of the upstream's
	// or less, down to 1; it is then raised by one after 16n successes of
	// one replica, slowly by design.)
	if min := int(run / (2 * time.Second)); ok < min {
		t.Errorf("%d successes in %v, want at least %d", ok, run, min)
	}

	late := newPool()
	eventually(t, "the late pool to adopt the learned limit", func() bool {
		ln, lw := learned(late, "k0")
		return ln == n && lw == time.Second
	})

	pub := store.learnedChanges()
	if len(pub) == 0 {
		t.Fatal("no learned limit published")
	}
	// A raise is published too: after 16n successes of one replica, which
	// the minute's 600 or so give.
	raised := false
	for i, c := range pub {
		raised = raised || i > 0 && c.Limit > pub[i-1].Limit
		if c.KeyID != "k0" || c.Limit < 1 || c.Window != time.Second || c.At.IsZero() {
			t.Errorf("published %+v", c)
		}
		if s := fmt.Sprintf("%v %+v %#v", c, c, c); strings.Contains(s, secret) {
			t.Errorf("a published change holds the secret: %s", s)
		}
	}
	if !raised {
		t.Errorf("no raise published in %d learned limits", len(pub))
	}
}

// A learned limit reaches Take as the key's PerSecond or PerMinute when it
// is the smaller, and never raises a configured one; a pool that does not
// learn limits ignores the learned limits it hears.
func TestSharedTakeCarriesLearnedLimit(t *testing.T) {
	t.Parallel()
	clk := newClock()
	store := newLearnStore()
	// The limits learned before the pools start: they come with the
	// Watch's state.
	for _, c := range []struct {
		id string
		n  int
		w  time.Duration
	}{{"a", 10, time.Second}, {"b", 10, time.Second}, {"c", 10, time.Second}, {"d", 100, time.Minute}, {"e", 100, time.Minute}} {
		if err := store.memShared.Publish(context.Background(), sharedstate.Change{KeyID: c.id, Kind: sharedstate.Learned, Limit: c.n, Window: c.w, At: clk.Now()}); err != nil {
			t.Fatal(err)
		}
	}
	ks := []apipool.Key{
		{ID: "a", Secret: "sa"},
		{ID: "b", Secret: "sb", PerSecond: 100},
		{ID: "c", Secret: "sc", PerSecond: 5},
		{ID: "d", Secret: "sd", PerMinute: 1000},
		{ID: "e", Secret: "se", PerSecond: 2, PerMinute: 50},
	}
	up := newFixedWindowAPI(clk.Now, 1000)
	p := mustNew(t, ks, apipool.WithBase(up), apipool.WithClock(clk), apipool.WithSharedState(store), apipool.WithStrategy(apipool.RoundRobin))
	eventually(t, "the pool to have synced", func() bool { return p.SharedStateHealth().Synced })
	for _, id := range []string{"a", "b", "c", "d", "e"} {
		if n, _ := learned(p, id); n == 0 {
			t.Fatalf("key %s: no learned limit adopted from the store's state", id)
		}
	}
	for range len(ks) {
		mustDo(t, p)
	}
	want := map[string]sharedstate.Limits{
		"a": {PerSecond: 10},
		"b": {PerSecond: 10},
		"c": {PerSecond: 5},
		"d": {PerMinute: 100},
		"e": {PerSecond: 2, PerMinute: 50},
	}
	store.rec.Lock()
	defer store.rec.Unlock()
	for id, w := range want {
		got := store.limits[id]
		if len(got) == 0 {
			t.Errorf("key %s: no Take", id)
			continue
		}
		if l := got[0]; l.PerSecond != w.PerSecond || l.PerMinute != w.PerMinute {
			t.Errorf("key %s: Take given PerSecond %v, PerMinute %d; want %v, %d", id, l.PerSecond, l.PerMinute, w.PerSecond, w.PerMinute)
		}
	}

	// Learning off: the learned limits are not adopted, and a key without
	// limits of its own makes no Take.
	off := newLearnStore()
	if err := off.memShared.Publish(context.Background(), sharedstate.Change{KeyID: "a", Kind: sharedstate.Learned, Limit: 1, Window: time.Second, At: clk.Now()}); err != nil {
		t.Fatal(err)
	}
	q := mustNew(t, ks[:1], apipool.WithBase(up), apipool.WithClock(clk), apipool.WithSharedState(off), apipool.WithLimitLearning(false))
	eventually(t, "the pool to have synced", func() bool { return q.SharedStateHealth().Synced })
	mustDo(t, q)
	mustDo(t, q)
	if n, _ := learned(q, "a"); n != 0 {
		t.Errorf("a pool without learning adopted a learned limit of %d", n)
	}
	off.rec.Lock()
	defer off.rec.Unlock()
	if len(off.limits["a"]) != 0 {
		t.Errorf("%d Takes for a key without limits in a pool that does not learn", len(off.limits["a"]))
	}
}
