package apipool_test

import (
	"errors"
	"testing"
	"time"

	"github.com/apipool-ng/apipool"
)

// tierKeys are two tier-0 keys of 10 requests in any second and two
// tier-1 keys without a limit, given out of order.
func tierKeys() []apipool.Key {
	return []apipool.Key{
		{ID: "t1-a", Secret: "s-t1a", Tier: 1},
		{ID: "t0-a", Secret: "s-t0a", PerSecond: 10},
		{ID: "t1-b", Secret: "s-t1b", Tier: 1},
		{ID: "t0-b", Secret: "s-t0b", PerSecond: 10},
	}
}

var tier0 = map[string]bool{"s-t0a": true, "s-t0b": true}

// Tiers, the measure: two tier-0 keys of 10 a second and two
// tier-1 keys, offered 1.5 times tier 0's capacity for 20 windows on the
// fake clock. Tier 0 serves its whole quota (at least 99% of it), tier 1
// the rest and only the rest: no request goes to tier 1 while a tier-0
// key is free; none fails, none waits.
func TestTiersFillTheBestTierFirst(t *testing.T) {
	clk := newClock()
	up := newUpstream(nil)
	p := mustNew(t, tierKeys(), apipool.WithBase(up), apipool.WithClock(clk), apipool.WithRecorder(nil), apipool.WithMaxWait(0))
	const windows, perWindow = 20, 30
	for w := range windows {
		for j := range perWindow {
			// Arrivals evenly spaced, each window's first at its start.
			clk.Set(t0.Add(time.Duration(w)*time.Second + time.Duration(j)*time.Second/perWindow))
			free0 := false // a tier-0 key is free now
			for _, s := range p.Snapshot() {
				if s.Tier == 0 && s.Reason == "" {
					free0 = true
				}
			}
			_, _, err := do(t, p)
			if err != nil {
				t.Fatalf("window %d, request %d failed: %v", w, j, err)
			}
			calls := up.Calls()
			got := calls[len(calls)-1].Secret
			if free0 && !tier0[got] {
				t.Fatalf("window %d, request %d went to tier 1 (%s) while a tier-0 key was free", w, j, got)
			}
		}
	}
	n0 := up.Count("s-t0a") + up.Count("s-t0b")
	n1 := up.Count("s-t1a") + up.Count("s-t1b")
	quota := windows * 20
	t.Logf("tier 0 served %d of its quota of %d (%.1f%%), tier 1 %d; %d requests, %d waited", n0, quota, 100*float64(n0)/float64(quota), n1, windows*perWindow, p.Waits())
	if n0*100 < quota*99 {
		t.Errorf("tier 0 served %d, below 99%% of its quota %d", n0, quota)
	}
	if n0 > quota || n0+n1 != windows*perWindow {
		t.Errorf("tier 0 %d, tier 1 %d: want tier 0 at most %d and %d in all", n0, n1, quota, windows*perWindow)
	}
	if p.Waits() != 0 {
		t.Errorf("%d requests waited: a tier with a free key must take them at once", p.Waits())
	}
	// Round-robin takes turns within each tier.
	if a, b := up.Count("s-t1a"), up.Count("s-t1b"); a-b > 1 || b-a > 1 {
		t.Errorf("tier 1 split %d/%d, want turns", a, b)
	}
}

// A tier-0 key back from a cooldown takes the very next request; while it
// cools down, tier 1 serves at once.
func TestTierBackFromCooldownTakesTheNextRequest(t *testing.T) {
	clk := newClock()
	limited := true
	up := newUpstream(func(s seen) reply {
		if s.Secret == "s-a" && limited {
			limited = false
			return reply{Status: 429, Header: hdr("Retry-After", "2")}
		}
		return reply{Status: 200, Body: s.Secret}
	})
	ks := []apipool.Key{{ID: "a", Secret: "s-a"}, {ID: "b", Secret: "s-b", Tier: 1}, {ID: "c", Secret: "s-c", Tier: 2}}
	p := mustNew(t, ks, apipool.WithBase(up), apipool.WithClock(clk), apipool.WithRecorder(nil), apipool.WithMaxWait(0))
	if _, body := mustDo(t, p); body != "s-b" {
		t.Fatalf("first request ended on %q, want tier 1's key after tier 0's 429", body)
	}
	for i := range 5 {
		clk.Advance(300 * time.Millisecond)
		if _, body := mustDo(t, p); body != "s-b" {
			t.Fatalf("request %d while a cools down went to %q, want tier 1 (s-b)", i, body)
		}
	}
	clk.Advance(500 * time.Millisecond) // 2s since the 429: a is back
	if _, body := mustDo(t, p); body != "s-a" {
		t.Fatalf("the first request after the cooldown went to %q, want tier 0's key", body)
	}
	if got := up.Secrets(); got[0] != "s-a" || got[1] != "s-b" {
		t.Errorf("first request's attempts %v, want s-a then s-b", got[:2])
	}
	if up.Count("s-c") != 0 {
		t.Error("tier 2 was used while tier 1 was free")
	}
}

// Resends go through the untried keys in tier order, then the tried ones.
func TestTierResendOrder(t *testing.T) {
	failing := map[string]bool{"s-a": true, "s-b": true, "s-c": true}
	up := newUpstream(func(s seen) reply {
		if failing[s.Secret] {
			return reply{Status: 500}
		}
		return reply{Status: 200}
	})
	ks := []apipool.Key{{ID: "c", Secret: "s-c", Tier: 1}, {ID: "a", Secret: "s-a"}, {ID: "b", Secret: "s-b"}, {ID: "d", Secret: "s-d", Tier: 2}}
	p := mustNew(t, ks, apipool.WithBase(up), noBackoff, apipool.WithRecorder(nil), apipool.WithBreaker(apipool.BreakerSettings{Disabled: true}))
	mustDo(t, p)
	got := up.Secrets()
	want := []string{"s-a", "s-b", "s-c", "s-d"}
	if len(got) != 4 || !(got[0] == "s-a" && got[1] == "s-b" || got[0] == "s-b" && got[1] == "s-a") || got[2] != "s-c" || got[3] != "s-d" {
		t.Fatalf("attempts %v, want tier 0's two keys, then %v", got, want[2:])
	}
	// With every key tried, the tried ones go again in tier order.
	failing["s-d"] = true
	up.Reset()
	resp, _ := mustDo(t, p)
	if resp.StatusCode != 500 {
		t.Fatalf("status %d", resp.StatusCode)
	}
	got = up.Secrets()
	if len(got) != apipool.DefaultMaxAttempts || !tier0Pair(got[0], got[1]) || got[2] != "s-c" || got[3] != "s-d" {
		t.Fatalf("attempts %v, want tier 0, tier 1, tier 2", got)
	}
}

func tier0Pair(a, b string) bool { return a == "s-a" && b == "s-b" || a == "s-b" && b == "s-a" }

// Weights apply within a tier: a heavy key of a later tier takes nothing
// while the first tier has a key.
func TestTierWeightsWithinTier(t *testing.T) {
	up := newUpstream(nil)
	ks := []apipool.Key{{ID: "a", Secret: "s-a", Weight: 3}, {ID: "b", Secret: "s-b", Weight: 1}, {ID: "c", Secret: "s-c", Weight: 1000, Tier: 1}}
	p := mustNew(t, ks, apipool.WithBase(up), apipool.WithStrategy(apipool.Weighted), apipool.WithRecorder(nil))
	const n = 4000
	for range n {
		mustDo(t, p)
	}
	a, b, c := up.Count("s-a"), up.Count("s-b"), up.Count("s-c")
	if c != 0 {
		t.Fatalf("tier 1 took %d requests while tier 0 had keys", c)
	}
	if share := float64(a) / n; share < 0.72 || share > 0.78 {
		t.Errorf("a took %.3f of tier 0's requests (a %d, b %d), want 0.75 ± 0.03", share, a, b)
	}
	// With tier 0 out, the weights of tier 1 alone count.
	if err := p.Disable("a", ""); err != nil {
		t.Fatal(err)
	}
	if err := p.Disable("b", ""); err != nil {
		t.Fatal(err)
	}
	up.Reset()
	for range 10 {
		mustDo(t, p)
	}
	if up.Count("s-c") != 10 {
		t.Fatalf("tier 1 got %d of 10", up.Count("s-c"))
	}
}

// Every built-in strategy looks at the best tier first, and moves on to
// the next when the tier is held.
func TestTierStrategies(t *testing.T) {
	for _, s := range []apipool.Strategy{apipool.RoundRobin, apipool.Random, apipool.Weighted, apipool.LeastInFlight, apipool.MostQuotaLeft} {
		t.Run(s.String(), func(t *testing.T) {
			up := newUpstream(nil)
			ks := keys(40) // more than 32: the scan strategies sample
			for i := range ks {
				ks[i].Tier = i % 3
			}
			p := mustNew(t, ks, apipool.WithBase(up), apipool.WithStrategy(s), apipool.WithRecorder(nil))
			for range 60 {
				mustDo(t, p)
			}
			for _, c := range up.Calls() {
				if n := secretIndex(c.Secret); n%3 != 0 {
					t.Fatalf("a request went to tier %d (%s) while tier 0 was free", n%3, c.Secret)
				}
			}
			for i := 0; i < 40; i += 3 {
				if err := p.Disable("k"+itoa(i), ""); err != nil {
					t.Fatal(err)
				}
			}
			up.Reset()
			for range 60 {
				mustDo(t, p)
			}
			for _, c := range up.Calls() {
				if n := secretIndex(c.Secret); n%3 != 1 {
					t.Fatalf("with tier 0 disabled, a request went to tier %d (%s)", n%3, c.Secret)
				}
			}
		})
	}
}

func secretIndex(s string) int {
	n := 0
	for _, c := range s[1:] {
		n = 10*n + int(c-'0')
	}
	return n
}

// A Selector of the caller's is asked tier by tier: Eligible is true for
// the tier looked at only, and -1 passes the request on.
func TestTierCustomSelector(t *testing.T) {
	up := newUpstream(nil)
	ks := []apipool.Key{{ID: "b", Secret: "s-b", Tier: 1}, {ID: "a", Secret: "s-a"}}
	var looked []int
	sel := selectorFunc(func(c *apipool.Candidates) int {
		looked = append(looked, c.Tier())
		if c.Tier() == 0 {
			if !c.Eligible(0) || c.Eligible(1) || c.Info(0).KeyID != "a" || c.Info(0).Tier != 0 || c.Info(1).Tier != 1 {
				t.Errorf("tier 0's look: eligible %v %v, infos %+v %+v", c.Eligible(0), c.Eligible(1), c.Info(0), c.Info(1))
			}
			return -1 // pass
		}
		if c.Eligible(0) || !c.Eligible(1) {
			t.Errorf("tier 1's look: eligible %v %v", c.Eligible(0), c.Eligible(1))
		}
		return 0 // not eligible in this tier: refused
	})
	p := mustNew(t, ks, apipool.WithBase(up), apipool.WithSelector(sel), apipool.WithRecorder(nil), apipool.WithMaxWait(0))
	_, _, err := do(t, p)
	if !errors.Is(err, apipool.ErrNoKeyAvailable) {
		t.Fatalf("err = %v, want no key (the selector never picked an eligible key)", err)
	}
	if len(looked) < 2 || looked[0] != 0 || looked[1] != 1 {
		t.Errorf("tiers looked at: %v, want 0 then 1", looked)
	}
}

// Snapshot lists the keys by tier, showing each key's tier; a negative
// tier is refused by New and AddKey.
func TestTierConfig(t *testing.T) {
	p := mustNew(t, tierKeys(), apipool.WithBase(newUpstream(nil)), apipool.WithRecorder(nil))
	var ids []string
	var tiers []int
	for _, s := range p.Snapshot() {
		ids, tiers = append(ids, s.KeyID), append(tiers, s.Tier)
	}
	if want := []string{"t0-a", "t0-b", "t1-a", "t1-b"}; !equalStrings(ids, want) || tiers[0] != 0 || tiers[1] != 0 || tiers[2] != 1 || tiers[3] != 1 {
		t.Errorf("snapshot order %v tiers %v, want %v with tiers 0 0 1 1", ids, tiers, want)
	}
	if err := p.AddKey(apipool.Key{ID: "new", Secret: "s-new", Tier: 0}); err != nil {
		t.Fatal(err)
	}
	if s := p.Snapshot(); s[2].KeyID != "new" {
		t.Errorf("an added tier-0 key is at %q's place, want after the tier-0 keys", s[2].KeyID)
	}
	var ce *apipool.ConfigError
	err := p.AddKey(apipool.Key{ID: "neg", Secret: "s-neg", Tier: -1})
	if !errors.As(err, &ce) || ce.Field != `Key("neg").Tier` {
		t.Errorf("AddKey with tier -1: %v", err)
	}
	_, err = apipool.New([]apipool.Key{{ID: "a", Secret: "s-a"}, {ID: "b", Secret: "s-b", Tier: -2}})
	if !errors.As(err, &ce) || ce.Field != "keys[1].Tier" || !errors.Is(err, apipool.ErrInvalidConfig) {
		t.Errorf("New with tier -2: %v", err)
	}
}

func equalStrings(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// A pool without tiers keeps one tier: a request's attempts and the
// round-robin turns are as before.
func TestOneTierRoundRobinUnchanged(t *testing.T) {
	up := newUpstream(nil)
	p := mustNew(t, keys(3), apipool.WithBase(up), apipool.WithRecorder(nil))
	for range 6 {
		resp, err := p.RoundTrip(newGet(t, "http://api.test/x"))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
	}
	if got := up.Secrets(); !equalStrings(got, []string{"s0", "s1", "s2", "s0", "s1", "s2"}) {
		t.Errorf("turns %v", got)
	}
}
