package redisstate_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/apipool-ng/apipool"
	"github.com/apipool-ng/apipool/internal/fakeclock"
	"github.com/apipool-ng/apipool/internal/redistest"
	"github.com/apipool-ng/apipool/redisstate"
	"github.com/apipool-ng/apipool/sharedstate"
)

// fakeAPI is the upstream the pools share: an API with a global daily quota
// per key, which it checks, and switches that make a key rate limited
// (429, Retry-After: 60) or revoked (401).
type fakeAPI struct {
	clk   *fakeclock.Clock
	quota int

	mu       sync.Mutex
	used     map[string]int // "secret/day" -> requests
	seen     map[string]int // secret -> requests, all days
	answered map[string]int // "secret code" -> responses
	limited  map[string]bool
	revoked  map[string]bool
	over     []string // requests beyond a key's quota
}

func newFakeAPI(clk *fakeclock.Clock, quota int) *fakeAPI {
	return &fakeAPI{clk: clk, quota: quota, used: map[string]int{}, seen: map[string]int{}, answered: map[string]int{}, limited: map[string]bool{}, revoked: map[string]bool{}}
}

func (a *fakeAPI) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	secret := strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")
	a.mu.Lock()
	defer a.mu.Unlock()
	day := a.clk.Now().Unix() / 86400
	k := fmt.Sprintf("%s/%d", secret, day)
	a.used[k]++
	a.seen[secret]++
	code := http.StatusOK
	switch {
	case a.used[k] > a.quota:
		a.over = append(a.over, fmt.Sprintf("%s: request %d of a quota of %d", k, a.used[k], a.quota))
		code = http.StatusTooManyRequests
	case a.revoked[secret]:
		code = http.StatusUnauthorized
	case a.limited[secret]:
		w.Header().Set("Retry-After", "60")
		code = http.StatusTooManyRequests
	}
	a.answered[fmt.Sprintf("%s %d", secret, code)]++
	w.WriteHeader(code)
}

func (a *fakeAPI) count(secret string) int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.seen[secret]
}

func (a *fakeAPI) answers(secret string, code int) int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.answered[fmt.Sprintf("%s %d", secret, code)]
}

func (a *fakeAPI) set(m map[string]bool, secret string, on bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	m[secret] = on
}

// poll waits until cond holds, failing t after 10 seconds. It polls; a
// fixed sleep is never the assertion.
func poll(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not so after 10s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

func keyState(p *apipool.Transport, id string) apipool.KeyStatus {
	for _, s := range p.Snapshot() {
		if s.KeyID == id {
			return s
		}
	}
	return apipool.KeyStatus{}
}

// get sends one request through p and returns the status, or the error.
func get(p *apipool.Transport, url string) (int, error) {
	resp, err := (&http.Client{Transport: p}).Get(url)
	if err != nil {
		return 0, err
	}
	resp.Body.Close()
	return resp.StatusCode, nil
}

// TestThreePoolsShareOneRedis runs three pools, each with its own store and
// client as three replicas have, on one Redis and one upstream with a
// global daily quota per key, on a fake clock:
//
//  1. a 429 seen through one pool cools the key in all, until its
//     Retry-After;
//  2. a key revoked through one is skipped by all;
//  3. the quota is never exceeded when all three send at once, and is used
//     up exactly;
//  4. with Redis stopped, requests keep flowing on local state and the
//     fault shows in the pools' health and the stores' stats; started
//     again, sharing resumes.
func TestThreePoolsShareOneRedis(t *testing.T) {
	srv := redistest.StartPrivate(t) // its own: phase 4 stops it
	prefix := testPrefix(t)
	const quota = 30
	clk := fakeclock.New(time.Now().Truncate(time.Millisecond))
	api := newFakeAPI(clk, quota)
	up := httptest.NewServer(api)
	defer up.Close()
	url := up.URL + "/v1/things"

	ks := make([]apipool.Key, 4)
	for i := range ks {
		ks[i] = apipool.Key{ID: fmt.Sprintf("k%d", i), Secret: apipool.Secret(fmt.Sprintf("s%d", i)), PerDay: quota}
	}
	var pools []*apipool.Transport
	var stores []replica
	for range 3 {
		r := newReplica(t, srv, prefix)
		p, err := apipool.New(ks,
			apipool.WithBase(up.Client().Transport),
			apipool.WithClock(clk),
			apipool.WithSharedState(r.Store),
			apipool.WithStrategy(apipool.RoundRobin),
			apipool.WithMaxWait(0),
		)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { p.Close(context.Background()) })
		pools, stores = append(pools, p), append(stores, r)
	}
	send := func(p *apipool.Transport, n int) {
		t.Helper()
		for range n {
			if code, err := get(p, url); err != nil || code != http.StatusOK {
				t.Fatalf("request: %d, %v", code, err)
			}
		}
	}

	t.Run("429 cools the key in every pool", func(t *testing.T) {
		api.set(api.limited, "s1", true)
		for i := 0; api.answers("s1", 429) == 0; i++ {
			if i == 8 {
				t.Fatal("pool 0 did not send s1 in 8 requests")
			}
			send(pools[0], 1)
		}
		until := clk.Now().Add(60 * time.Second)
		for i, p := range pools {
			poll(t, fmt.Sprintf("k1 cooling in pool %d", i), func() bool { return keyState(p, "k1").CoolingUntil.Equal(until) })
		}
		api.set(api.limited, "s1", false)
		before := api.count("s1")
		send(pools[1], 6)
		send(pools[2], 6)
		if got := api.count("s1"); got != before {
			t.Fatalf("s1 sent %d times while cooling", got-before)
		}
		clk.Advance(61 * time.Second)
		send(pools[1], 4) // round robin over the four keys
		send(pools[2], 4)
		if got := api.count("s1"); got != before+2 {
			t.Fatalf("after its Retry-After, s1 sent %d times by pools 1 and 2, want 2", got-before)
		}
	})

	t.Run("a revoked key is skipped by every pool", func(t *testing.T) {
		api.set(api.revoked, "s2", true)
		for i := 0; api.answers("s2", 401) == 0; i++ {
			if i == 8 {
				t.Fatal("pool 1 did not send s2 in 8 requests")
			}
			send(pools[1], 1)
		}
		for i, p := range pools {
			poll(t, fmt.Sprintf("k2 disabled in pool %d", i), func() bool { return keyState(p, "k2").Disabled })
		}
		before := api.count("s2")
		send(pools[0], 6)
		send(pools[2], 6)
		send(pools[1], 6)
		if n := api.count("s2") - before; n != 0 {
			t.Fatalf("s2 sent %d times after it was revoked", n)
		}
		if n := api.answers("s2", 401); n != 1 {
			t.Errorf("s2 answered 401 %d times, want once", n)
		}
		if r := keyState(pools[2], "k2").DisabledReason; !strings.Contains(r, "401") {
			t.Errorf("reason in another pool: %q", r)
		}
	})

	t.Run("the daily quota holds across pools", func(t *testing.T) {
		var wg sync.WaitGroup
		var mu sync.Mutex
		var ok, refused int
		for g := range 12 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for range 20 {
					code, err := get(pools[g%3], url)
					mu.Lock()
					switch {
					case errors.Is(err, apipool.ErrNoKeyAvailable):
						refused++
					case err != nil || code != http.StatusOK:
						t.Errorf("request: %d, %v", code, err)
					default:
						ok++
					}
					mu.Unlock()
				}
			}()
		}
		wg.Wait()
		api.mu.Lock()
		over := api.over
		api.mu.Unlock()
		if len(over) > 0 {
			t.Fatalf("quota exceeded %d times: %s", len(over), over[0])
		}
		// Every key in use sent exactly its quota (blocks of one: the
		// quota is small), the revoked one only its 401.
		day := clk.Now().Unix() / 86400
		for _, s := range []string{"s0", "s1", "s3"} {
			api.mu.Lock()
			n := api.used[fmt.Sprintf("%s/%d", s, day)]
			api.mu.Unlock()
			if n != quota {
				t.Errorf("%s sent %d requests today, want the quota, %d", s, n, quota)
			}
		}
		t.Logf("%d requests answered, %d refused for want of quota", ok, refused)
	})

	t.Run("Redis stopped and started again", func(t *testing.T) {
		clk.Advance(24 * time.Hour) // a new quota day
		if err := srv.Stop(); err != nil {
			t.Fatal(err)
		}
		// Requests keep flowing, on local state; the fault shows.
		for _, p := range pools {
			send(p, 5)
		}
		for i, p := range pools {
			poll(t, fmt.Sprintf("pool %d reporting the fault", i), func() bool {
				h := p.SharedStateHealth()
				return !h.Available && h.Errors > 0 && h.LastError != nil
			})
		}
		for i, r := range stores {
			if st := r.Stats(); st.Errors == 0 || st.LastError == nil {
				t.Errorf("store %d: %+v", i, st)
			}
		}
		if err := srv.Start(); err != nil {
			t.Fatal(err)
		}
		for i, p := range pools {
			poll(t, fmt.Sprintf("pool %d sharing again", i), func() bool {
				send(p, 1) // a Take, which reports success
				return p.SharedStateHealth().Available
			})
		}
		// A cooldown through pool 2 reaches the others: each Watch is back.
		api.set(api.limited, "s3", true)
		for i := 0; api.answers("s3", 429) == 0; i++ {
			if i == 8 {
				t.Fatal("pool 2 did not send s3 in 8 requests")
			}
			send(pools[2], 1)
		}
		api.set(api.limited, "s3", false)
		until := clk.Now().Add(60 * time.Second)
		for i, p := range pools {
			poll(t, fmt.Sprintf("k3 cooling in pool %d", i), func() bool { return keyState(p, "k3").CoolingUntil.Equal(until) })
		}
		// The revoked key stayed disabled in every pool, though Redis
		// lost it.
		for i, p := range pools {
			if !keyState(p, "k2").Disabled {
				t.Errorf("k2 enabled in pool %d after Redis restarted", i)
			}
		}
	})
}

var _ sharedstate.Store = (*redisstate.Store)(nil)

// countingStore counts Take calls.
type countingStore struct {
	*redisstate.Store
	takes *atomic.Int64
}

func (c countingStore) Take(ctx context.Context, id string, l sharedstate.Limits, now time.Time, n int) (int, time.Time, error) {
	c.takes.Add(1)
	return c.Store.Take(ctx, id, l, now, n)
}

// TestThreePoolsLeaseDailyBlocks: with a quota large enough for the pools
// to lease blocks of it, three pools sending at once never exceed it, use
// it up but for the blocks leased and not used, and need fewer round trips
// than requests.
func TestThreePoolsLeaseDailyBlocks(t *testing.T) {
	srv := redistest.Shared(t)
	prefix := testPrefix(t)
	const quota = 400 // the pool leases blocks of quota/100 = 4
	clk := fakeclock.New(time.Now().Truncate(time.Millisecond))
	api := newFakeAPI(clk, quota)
	up := httptest.NewServer(api)
	defer up.Close()
	ks := []apipool.Key{{ID: "q", Secret: "sq", PerDay: quota}}
	var takes atomic.Int64
	var pools []*apipool.Transport
	for range 3 {
		r := newReplica(t, srv, prefix)
		p, err := apipool.New(ks, apipool.WithBase(up.Client().Transport), apipool.WithClock(clk),
			apipool.WithSharedState(countingStore{r.Store, &takes}), apipool.WithMaxWait(0))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { p.Close(context.Background()) })
		pools = append(pools, p)
	}
	var ok atomic.Int64
	var wg sync.WaitGroup
	for g := range 12 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 50 {
				code, err := get(pools[g%3], up.URL)
				if errors.Is(err, apipool.ErrNoKeyAvailable) {
					continue
				}
				if err != nil || code != http.StatusOK {
					t.Errorf("request: %d, %v", code, err)
					return
				}
				ok.Add(1)
			}
		}()
	}
	wg.Wait()
	api.mu.Lock()
	over, sent := api.over, api.seen["sq"]
	api.mu.Unlock()
	if len(over) > 0 {
		t.Fatalf("quota exceeded %d times: %s", len(over), over[0])
	}
	// Each pool may hold one block leased and not used: 3 at most.
	if sent < quota-3*3 || int64(sent) != ok.Load() {
		t.Errorf("sent %d (%d answered), want %d less at most 9 leased and unused", sent, ok.Load(), quota)
	}
	if n := takes.Load(); n*2 > int64(sent) {
		t.Errorf("%d Takes for %d requests: blocks not leased", n, sent)
	}
	t.Logf("%d requests sent with %d Takes", sent, takes.Load())
}
