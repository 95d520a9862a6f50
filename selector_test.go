package apipool_test

import (
	"errors"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"

	"github.com/apipool-ng/apipool"
)

// countPicks sends n requests through p, from g goroutines, and returns
// how many went out with each secret.
func countPicks(t *testing.T, p *apipool.Transport, up *fakeUpstream, n, g int) map[string]int {
	t.Helper()
	var wg sync.WaitGroup
	for w := 0; w < g; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < n/g; i++ {
				resp, err := p.RoundTrip(newGet(t, "http://api.test/"))
				if err != nil {
					t.Error(err)
					return
				}
				resp.Body.Close()
			}
		}()
	}
	wg.Wait()
	counts := map[string]int{}
	for _, s := range up.Secrets() {
		counts[s]++
	}
	return counts
}

// Round-robin spreads requests exactly evenly, even under concurrency.
func TestRoundRobinSpreadsEvenly(t *testing.T) {
	t.Parallel()
	up := newUpstream(nil)
	p := mustNew(t, keys(10), apipool.WithBase(up), apipool.WithStrategy(apipool.RoundRobin))
	counts := countPicks(t, p, up, 1000, 20)
	for i := 0; i < 10; i++ {
		if c := counts["s"+itoa(i)]; c != 100 {
			t.Fatalf("counts %v, want 100 each", counts)
		}
	}
	// Sequential requests take the keys in turn.
	up.Reset()
	countPicks(t, p, up, 20, 1)
	got := up.Secrets()
	for i := 1; i < len(got); i++ {
		if prev, cur := got[i-1], got[i]; cur == prev {
			t.Fatalf("same key twice in a row: %v", got)
		}
	}
}

// Weighted picks follow the weights. Bounds are ±20% of the expectation
// over 10,000 picks: more than six standard deviations for every key, so
// the test does not flake.
func TestWeightedRoughlyProportional(t *testing.T) {
	t.Parallel()
	ks := keys(4)
	for i := range ks {
		ks[i].Weight = i + 1 // 1, 2, 3, 4
	}
	up := newUpstream(nil)
	p := mustNew(t, ks, apipool.WithBase(up), apipool.WithStrategy(apipool.Weighted))
	counts := countPicks(t, p, up, 10000, 4)
	for i := range ks {
		want := 1000 * (i + 1)
		if c := counts["s"+itoa(i)]; c < want*8/10 || c > want*12/10 {
			t.Fatalf("counts %v, want about 1000, 2000, 3000, 4000", counts)
		}
	}
}

// A heavy key out of use does not skew the others.
func TestWeightedSkipsIneligibleKeys(t *testing.T) {
	t.Parallel()
	ks := keys(3)
	ks[0].Weight, ks[1].Weight, ks[2].Weight = 1, 1, 8
	up := newUpstream(nil)
	p := mustNew(t, ks, apipool.WithBase(up), apipool.WithStrategy(apipool.Weighted))
	p.Disable("k2", "")
	counts := countPicks(t, p, up, 4000, 1)
	if counts["s2"] != 0 {
		t.Fatalf("disabled key picked: %v", counts)
	}
	for _, s := range []string{"s0", "s1"} {
		if c := counts[s]; c < 1700 || c > 2300 {
			t.Fatalf("counts %v, want about 2000 each", counts)
		}
	}
}

// Random picks spread over every key.
func TestRandomSpreads(t *testing.T) {
	t.Parallel()
	up := newUpstream(nil)
	p := mustNew(t, keys(4), apipool.WithBase(up), apipool.WithStrategy(apipool.Random))
	counts := countPicks(t, p, up, 8000, 4)
	for i := 0; i < 4; i++ {
		if c := counts["s"+itoa(i)]; c < 1600 || c > 2400 {
			t.Fatalf("counts %v, want about 2000 each", counts)
		}
	}
	// Ineligible keys are never picked.
	p.Disable("k1", "")
	up.Reset()
	if counts := countPicks(t, p, up, 400, 1); counts["s1"] != 0 {
		t.Fatalf("disabled key picked: %v", counts)
	}
}

// Least-in-flight sends each request to a key with the fewest responses
// still open.
func TestLeastInFlightPrefersIdleKeys(t *testing.T) {
	t.Parallel()
	up := newUpstream(func(s seen) reply { return reply{Status: 200, Body: s.Secret} })
	p := mustNew(t, keys(3), apipool.WithBase(up), apipool.WithStrategy(apipool.LeastInFlight))
	open := map[string]*http.Response{}
	hold := func() string {
		t.Helper()
		resp, err := p.RoundTrip(newGet(t, "http://api.test/"))
		if err != nil {
			t.Fatal(err)
		}
		s := up.Secrets()[len(up.Secrets())-1]
		open[s] = resp
		return s
	}
	a := hold()
	b := hold()
	c := hold()
	if a == b || b == c || a == c {
		t.Fatalf("held responses on %s, %s, %s: want three different keys", a, b, c)
	}
	// Every key has one open: free b's, and b is the idle one.
	open[b].Body.Close()
	for i := 0; i < 5; i++ {
		resp, body := mustDo(t, p) // read and closed: b stays idle
		if resp.StatusCode != 200 || body != b {
			t.Fatalf("request %d went to %s, want the idle key %s", i, body, b)
		}
	}
	// Read to EOF without Close also frees the key.
	io.ReadAll(open[c].Body)
	x := hold()
	if x != b && x != c {
		t.Fatalf("went to %s, want an idle key (%s or %s)", x, b, c)
	}
	for _, s := range p.Snapshot() {
		want := int64(1)
		if "s"+s.KeyID[1:] != a && "s"+s.KeyID[1:] != x {
			want = 0
		}
		if s.InFlight != want {
			t.Fatalf("%s: %d in flight, want %d", s.KeyID, s.InFlight, want)
		}
	}
}

// Most-quota-left sends each request to a key with the most of its daily
// quota left; a key without a daily quota counts as unlimited.
func TestMostQuotaLeft(t *testing.T) {
	t.Parallel()
	ks := keys(3)
	ks[0].PerDay, ks[1].PerDay, ks[2].PerDay = 5, 3, 8
	up := newUpstream(nil)
	p := mustNew(t, ks, apipool.WithBase(up), apipool.WithClock(newClock()), apipool.WithStrategy(apipool.MostQuotaLeft))
	for i := 0; i < 16; i++ {
		before := snapshotByID(p)
		var most int64
		for _, s := range before {
			most = max(most, s.QuotaLeft)
		}
		mustDo(t, p)
		used := up.Secrets()[i]
		if q := before["k"+used[1:]].QuotaLeft; q != most {
			t.Fatalf("request %d used %s with %d left, while a key had %d", i, used, q, most)
		}
	}
	if got := up.Secrets()[0]; got != "s2" {
		t.Fatalf("first pick %s, want s2 (8 left)", got)
	}
	// Unlimited beats any quota.
	ks = keys(2)
	ks[0].PerDay = 1000
	up = newUpstream(nil)
	p = mustNew(t, ks, apipool.WithBase(up), apipool.WithClock(newClock()), apipool.WithStrategy(apipool.MostQuotaLeft))
	for i := 0; i < 5; i++ {
		mustDo(t, p)
	}
	if n := up.Count("s1"); n != 5 {
		t.Fatalf("unlimited key used %d times of 5", n)
	}
}

// A custom Selector decides, within the eligible keys.
func TestCustomSelector(t *testing.T) {
	t.Parallel()
	ks := keys(4)
	ks[3].Weight = 7
	ks[3].PerDay = 100
	var mu sync.Mutex
	var infos []apipool.KeyInfo
	last := selectorFunc(func(c *apipool.Candidates) int {
		for i := c.Len() - 1; i >= 0; i-- {
			if c.Eligible(i) {
				mu.Lock()
				infos = append(infos, c.Info(i))
				mu.Unlock()
				return i
			}
		}
		return -1
	})
	up := newUpstream(nil)
	p := mustNew(t, ks, apipool.WithBase(up), apipool.WithClock(newClock()), apipool.WithSelector(last), apipool.WithMaxWait(0))
	for i := 0; i < 3; i++ {
		mustDo(t, p)
	}
	p.Disable("k3", "")
	mustDo(t, p)
	if got := up.Secrets(); len(got) != 4 || got[0] != "s3" || got[2] != "s3" || got[3] != "s2" {
		t.Fatalf("picks %v, want s3 s3 s3 s2", got)
	}
	if i := infos[1]; i.KeyID != "k3" || i.Weight != 7 || i.QuotaLeft != 99 || i.InFlight != 0 {
		t.Fatalf("KeyInfo %+v", i)
	}
	if i := infos[3]; i.KeyID != "k2" || i.Weight != 1 || i.QuotaLeft != -1 {
		t.Fatalf("KeyInfo %+v", i)
	}

	// WithSelector wins over an earlier WithStrategy, and a later
	// WithStrategy over WithSelector.
	up = newUpstream(nil)
	p = mustNew(t, keys(4), apipool.WithBase(up), apipool.WithStrategy(apipool.Random), apipool.WithSelector(last))
	mustDo(t, p)
	mustDo(t, p)
	if got := up.Secrets(); got[0] != "s3" || got[1] != "s3" {
		t.Fatalf("picks %v", got)
	}
	up = newUpstream(nil)
	p = mustNew(t, keys(4), apipool.WithBase(up), apipool.WithSelector(last), apipool.WithStrategy(apipool.RoundRobin))
	mustDo(t, p)
	mustDo(t, p)
	if got := up.Secrets(); got[0] != "s0" || got[1] != "s1" {
		t.Fatalf("picks %v, want round-robin", got)
	}
}

// A selector that answers nonsense gets a NoKeyError, not a panic.
func TestBadSelectorAnswers(t *testing.T) {
	t.Parallel()
	for _, idx := range []int{-1, -7, 4, 1 << 40} {
		up := newUpstream(nil)
		p := mustNew(t, keys(4), apipool.WithBase(up), apipool.WithClock(newClock()), apipool.WithMaxWait(0),
			apipool.WithSelector(selectorFunc(func(*apipool.Candidates) int { return idx })))
		_, _, err := do(t, p)
		noKey(t, err)
		if len(up.Calls()) != 0 {
			t.Fatalf("Pick %d: a request went out", idx)
		}
	}
	// An ineligible pick is not taken either.
	up := newUpstream(nil)
	p := mustNew(t, keys(2), apipool.WithBase(up), apipool.WithClock(newClock()), apipool.WithMaxWait(0),
		apipool.WithSelector(selectorFunc(func(*apipool.Candidates) int { return 0 })))
	p.Disable("k0", "")
	_, _, err := do(t, p)
	noKey(t, err)
	if len(up.Calls()) != 0 {
		t.Fatal("the disabled key was used")
	}
}

func TestStrategies(t *testing.T) {
	t.Parallel()
	for _, s := range []apipool.Strategy{apipool.RoundRobin, apipool.Random, apipool.Weighted, apipool.LeastInFlight, apipool.MostQuotaLeft} {
		got, err := apipool.ParseStrategy(s.String())
		if err != nil || got != s {
			t.Fatalf("ParseStrategy(%q) = %v, %v", s.String(), got, err)
		}
		up := newUpstream(nil)
		p := mustNew(t, keys(3), apipool.WithBase(up), apipool.WithStrategy(s))
		if resp, _ := mustDo(t, p); resp.StatusCode != 200 {
			t.Fatalf("%v: status %d", s, resp.StatusCode)
		}
	}
	var zero apipool.Strategy
	if zero != apipool.RoundRobin {
		t.Fatal("the zero Strategy is not RoundRobin")
	}
	for _, bad := range []apipool.Strategy{-1, 5, 99} {
		_, err := apipool.New(keys(1), apipool.WithStrategy(bad))
		var ce *apipool.ConfigError
		if !errors.As(err, &ce) || !errors.Is(err, apipool.ErrInvalidConfig) || ce.Field != "WithStrategy" {
			t.Fatalf("Strategy(%d): err %v, want a *ConfigError on WithStrategy", int(bad), err)
		}
		if bad.String() != "unknown strategy" {
			t.Fatalf("String of Strategy(%d) = %q", int(bad), bad.String())
		}
	}
	if _, err := apipool.ParseStrategy("fastest"); !errors.Is(err, apipool.ErrInvalidConfig) {
		t.Fatalf("ParseStrategy(fastest): %v", err)
	}
}

// Above 32 keys LeastInFlight compares a few random keys rather than all:
// the load must still stay even. 1,000 requests held open over 100 keys
// (10 a key on average) leave no key with more than 14: by random picks
// alone the busiest key would hold about 20.
func TestLeastInFlightLargePoolStaysBalanced(t *testing.T) {
	p := mustNew(t, keys(100), apipool.WithBase(newUpstream(nil)), apipool.WithStrategy(apipool.LeastInFlight))
	var held []*http.Response
	for i := 0; i < 1000; i++ {
		resp, err := p.RoundTrip(newGet(t, "http://api.test/"))
		if err != nil {
			t.Fatal(err)
		}
		held = append(held, resp)
	}
	most := int64(0)
	for _, s := range p.Snapshot() {
		most = max(most, s.InFlight)
	}
	for _, r := range held {
		r.Body.Close()
	}
	if most > 14 {
		t.Fatalf("busiest key holds %d requests in flight, want at most 14 (average 10)", most)
	}
}

// An unknown strategy's error lists the valid names.
func TestParseStrategyListsNames(t *testing.T) {
	_, err := apipool.ParseStrategy("roundrobin")
	if err == nil || !strings.Contains(err.Error(), "round-robin, random, weighted, least-in-flight, most-quota-left") {
		t.Fatalf("ParseStrategy(\"roundrobin\") = %v, want the valid names listed", err)
	}
}
