package apipool_test

import (
	"context"
	"errors"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/apipool-ng/apipool"
)

// Keys come and go while 50 goroutines send requests: every request is
// answered, and a request started after RemoveKey returned never uses the
// removed key.
func TestAddRemoveKeysWhileRequestsFlow(t *testing.T) {
	t.Parallel()
	var (
		mu        sync.Mutex
		gen       int
		removedAt = map[string]int{} // secret -> gen once RemoveKey returned
	)
	up := newUpstream(func(s seen) reply {
		g, _ := strconv.Atoi(s.Header.Get("X-Gen"))
		mu.Lock()
		at, removed := removedAt[s.Secret]
		mu.Unlock()
		if removed && g >= at {
			t.Errorf("key %s used by a request started after its removal", s.Secret)
		}
		return reply{Status: 200, Body: "ok"}
	})
	p := mustNew(t, keys(10), apipool.WithBase(up), apipool.WithStrategy(apipool.LeastInFlight))

	stop := make(chan struct{})
	var answered, sent atomic.Int64
	var wg sync.WaitGroup
	for w := 0; w < 50; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				mu.Lock()
				g := gen
				mu.Unlock()
				req := newGet(t, "http://api.test/")
				req.Header.Set("X-Gen", strconv.Itoa(g))
				sent.Add(1)
				resp, err := p.RoundTrip(req)
				if err != nil {
					t.Errorf("request failed: %v", err)
					return
				}
				resp.Body.Close()
				if resp.StatusCode == 200 {
					answered.Add(1)
				}
			}
		}()
	}
	wg.Add(1)
	go func() { // dashboards read snapshots meanwhile
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			p.Snapshot()
			time.Sleep(100 * time.Microsecond)
		}
	}()

	// Churn: add a key, remove the oldest, 40 times.
	oldest := 0
	for i := 0; i < 40; i++ {
		if err := p.AddKey(apipool.Key{ID: "n" + itoa(i), Secret: apipool.Secret("sn" + itoa(i))}); err != nil {
			t.Fatal(err)
		}
		var id, secret string
		if oldest < 10 {
			id, secret = "k"+itoa(oldest), "s"+itoa(oldest)
		} else {
			id, secret = "n"+itoa(oldest-10), "sn"+itoa(oldest-10)
		}
		oldest++
		if err := p.RemoveKey(id); err != nil {
			t.Fatal(err)
		}
		mu.Lock()
		gen++
		removedAt[secret] = gen
		mu.Unlock()
		time.Sleep(200 * time.Microsecond) // let requests flow between changes
	}
	close(stop)
	wg.Wait()
	if answered.Load() != sent.Load() || sent.Load() < 50 {
		t.Fatalf("%d requests answered of %d sent", answered.Load(), sent.Load())
	}

	snap := p.Snapshot()
	if len(snap) != 10 {
		t.Fatalf("%d keys left, want 10", len(snap))
	}
	for i, s := range snap {
		if s.KeyID != "n"+itoa(30+i) || s.InFlight != 0 {
			t.Fatalf("key %d: %+v", i, s)
		}
	}
	up.Reset()
	for i := 0; i < 100; i++ {
		mustDo(t, p)
	}
	for _, s := range up.Secrets() {
		mu.Lock()
		_, removed := removedAt[s]
		mu.Unlock()
		if removed {
			t.Fatalf("removed key %s used", s)
		}
	}
}

// A key removed while its response is open: the response finishes, the
// key is not picked again.
func TestRemoveKeyInFlight(t *testing.T) {
	t.Parallel()
	up := newUpstream(func(s seen) reply { return reply{Status: 200, Body: "body of " + s.Secret} })
	p := mustNew(t, keys(2), apipool.WithBase(up))
	resp, err := p.RoundTrip(newGet(t, "http://api.test/")) // k0
	if err != nil {
		t.Fatal(err)
	}
	if err := p.RemoveKey("k0"); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 5; i++ {
		mustDo(t, p)
	}
	buf := make([]byte, 64)
	n, _ := resp.Body.Read(buf)
	resp.Body.Close()
	if string(buf[:n]) != "body of s0" {
		t.Fatalf("in-flight body %q", buf[:n])
	}
	if got := up.Count("s0"); got != 1 {
		t.Fatalf("removed key used %d times, want 1 (before removal)", got)
	}
	if snap := p.Snapshot(); len(snap) != 1 || snap[0].KeyID != "k1" {
		t.Fatalf("snapshot %+v", snap)
	}
	// A key added back under a removed key's ID is a new key.
	if err := p.AddKey(apipool.Key{ID: "k0", Secret: "s0-new"}); err != nil {
		t.Fatal(err)
	}
	up.Reset()
	mustDo(t, p)
	mustDo(t, p)
	if up.Count("s0-new") != 1 || up.Count("s0") != 0 {
		t.Fatalf("after AddKey: %v, want one request on each key, none with the removed secret", up.Secrets())
	}
}

func TestAddRemoveKeyErrors(t *testing.T) {
	t.Parallel()
	p := mustNew(t, keys(2), apipool.WithBase(newUpstream(nil)))
	var ce *apipool.ConfigError
	err := p.AddKey(apipool.Key{ID: "k1", Secret: "other"})
	if !errors.As(err, &ce) || !errors.Is(err, apipool.ErrInvalidConfig) {
		t.Fatalf("duplicate AddKey: %v, want a *ConfigError", err)
	}
	for _, bad := range []apipool.Key{{ID: "", Secret: "x"}, {ID: "k9", Secret: ""}, {ID: "k9", Secret: "x", PerDay: -1}, {ID: "k9", Secret: "x", MaxInFlight: -3}} {
		if err := p.AddKey(bad); !errors.As(err, &ce) {
			t.Fatalf("AddKey(%v): %v, want a *ConfigError", bad, err)
		}
	}
	for _, f := range []func(string) error{p.RemoveKey, p.Enable, func(id string) error { return p.Disable(id, "x") }} {
		if err := f("nope"); !errors.Is(err, apipool.ErrUnknownKey) {
			t.Fatalf("err %v, want ErrUnknownKey", err)
		}
	}
	if err := p.RemoveKey("k0"); err != nil {
		t.Fatal(err)
	}
	if err := p.RemoveKey("k0"); !errors.Is(err, apipool.ErrUnknownKey) {
		t.Fatalf("second RemoveKey: %v", err)
	}
	if len(p.Snapshot()) != 1 {
		t.Fatal("failed calls changed the pool")
	}
	// The last key stays: a pool holds one at least.
	if err := p.RemoveKey("k1"); !errors.As(err, &ce) || !strings.Contains(err.Error(), `"k1" is the pool's last key`) {
		t.Fatalf("RemoveKey of the last key: %v, want a *ConfigError naming it", err)
	}
	// A secret another key holds is refused, named by ID only.
	if err := p.AddKey(apipool.Key{ID: "k2", Secret: "s1"}); !errors.As(err, &ce) || !strings.Contains(err.Error(), `key "k2" has the same secret as key "k1"`) || strings.Contains(err.Error(), "s1") {
		t.Fatalf("AddKey with k1's secret: %v", err)
	}
	if len(p.Snapshot()) != 1 {
		t.Fatal("failed calls changed the pool")
	}
}

// ReplaceKey swaps a key's secret in one step, even the last key's: the
// next request uses the new secret, the new key starts afresh, and a
// request in flight finishes with the old one.
func TestReplaceKey(t *testing.T) {
	t.Parallel()
	clk := newClock()
	up := newUpstream(bySecret(map[string]reply{"old": {Status: 429, Header: hdr("Retry-After", "60")}}))
	p := mustNew(t, []apipool.Key{{ID: "only", Secret: "old"}}, apipool.WithBase(up), apipool.WithClock(clk), apipool.WithMaxWait(0))
	if resp, _ := mustDo(t, p); resp.StatusCode != 429 {
		t.Fatalf("%d, want the old secret's 429", resp.StatusCode)
	}
	if s := p.Snapshot()[0]; s.State != apipool.KeyCooling {
		t.Fatalf("%+v, want the old key cooling", s)
	}
	if err := p.ReplaceKey(apipool.Key{ID: "only", Secret: "new", Weight: 2}); err != nil {
		t.Fatal(err)
	}
	if s := p.Snapshot(); len(s) != 1 || s[0].State != apipool.KeyActive || s[0].Weight != 2 || s[0].Fingerprint != apipool.Fingerprint(nil, "new") {
		t.Fatalf("after ReplaceKey: %+v, want one fresh key with the new secret", s)
	}
	up.Reset()
	if resp, _ := mustDo(t, p); resp.StatusCode != 200 || !reflect.DeepEqual(up.Secrets(), []string{"new"}) {
		t.Fatalf("%d with %v, want 200 with the new secret", resp.StatusCode, up.Secrets())
	}
	var ce *apipool.ConfigError
	if err := p.ReplaceKey(apipool.Key{ID: "nope", Secret: "x"}); !errors.Is(err, apipool.ErrUnknownKey) || !strings.Contains(err.Error(), "nope") {
		t.Fatalf("ReplaceKey of an unknown ID: %v", err)
	}
	if err := p.ReplaceKey(apipool.Key{ID: "only", Secret: ""}); !errors.As(err, &ce) {
		t.Fatalf("ReplaceKey with an empty secret: %v", err)
	}
}

// Snapshot tells every key's state.
func TestSnapshotStates(t *testing.T) {
	t.Parallel()
	clk := newClock()
	up := newUpstream(bySecret(map[string]reply{
		"s-cool": {Status: 429, Header: hdr("Retry-After", "60")},
		"s-brk":  {Status: 500},
	}))
	sel := &orderSelector{}
	ks := []apipool.Key{
		{ID: "active", Secret: "s-active", Weight: 3},
		{ID: "cool", Secret: "s-cool"},
		{ID: "dis", Secret: "s-dis"},
		{ID: "brk", Secret: "s-brk"},
		{ID: "lim", Secret: "s-lim", PerDay: 1},
	}
	p := mustNew(t, ks, apipool.WithBase(up), apipool.WithClock(clk), apipool.WithSelector(sel), apipool.WithMaxWait(0), apipool.WithMaxAttempts(1),
		apipool.WithBreaker(apipool.BreakerSettings{Failures: 1, Timeout: time.Hour}))
	for _, id := range []string{"cool", "brk", "lim"} {
		sel.Set(id)
		mustDo(t, p)
	}
	if err := p.Disable("dis", "maintenance"); err != nil {
		t.Fatal(err)
	}
	sel.Set("active")
	held, err := p.RoundTrip(newGet(t, "http://api.test/"))
	if err != nil {
		t.Fatal(err)
	}
	defer held.Body.Close()

	snap := p.Snapshot()
	if len(snap) != 5 {
		t.Fatalf("%d keys", len(snap))
	}
	for i, s := range snap {
		if s.KeyID != ks[i].ID || s.Fingerprint != apipool.Fingerprint(nil, ks[i].Secret) {
			t.Fatalf("key %d: %+v, want the pool's order and fingerprints", i, s)
		}
	}
	m := snapshotByID(p)
	check := func(id string, state apipool.KeyState, ok bool) {
		t.Helper()
		if m[id].State != state || !ok {
			t.Errorf("%s: %+v, want state %q", id, m[id], state)
		}
	}
	a := m["active"]
	check("active", "active", a.InFlight == 1 && a.Weight == 3 && a.QuotaLeft == -1 && a.Breaker == apipool.BreakerClosed && !a.Disabled && a.CoolingUntil.IsZero())
	c := m["cool"]
	check("cool", "cooling", c.CoolingUntil.Equal(t0.Add(time.Minute)) && c.InFlight == 0 && c.Weight == 1)
	d := m["dis"]
	check("dis", "disabled", d.Disabled && d.DisabledReason == "maintenance" && d.DisabledAt.Equal(t0))
	b := m["brk"]
	check("brk", "breaker-open", b.Breaker == apipool.BreakerOpen && b.InFlight == 0)
	l := m["lim"]
	check("lim", "limited", l.QuotaLeft == 0)

	// One vocabulary: with "active" disabled too, no key is free, and the
	// NoKeyError's counters and per-key states are the snapshot's states.
	if err := p.Disable("active", "for a moment"); err != nil {
		t.Fatal(err)
	}
	resp, err := p.RoundTrip(newGet(t, "http://api.test/"))
	var nk *apipool.NoKeyError
	if !errors.As(err, &nk) || resp != nil {
		t.Fatalf("all keys held: %v %v, want a *NoKeyError", resp, err)
	}
	if nk.Keys != 5 || nk.Disabled != 2 || nk.Cooling != 1 || nk.BreakerOpen != 1 || nk.Limited != 1 {
		t.Errorf("counters %+v, want 5 keys: 2 disabled, 1 cooling, 1 breaker-open, 1 limited", nk)
	}
	m = snapshotByID(p)
	for _, h := range nk.Held {
		if h.State != m[h.KeyID].State {
			t.Errorf("key %s: held as %q (%s), the snapshot says %q", h.KeyID, h.State, h.Reason, m[h.KeyID].State)
		}
	}
	if err := p.Enable("active"); err != nil {
		t.Fatal(err)
	}

	// Time moves on: the cooldown ends, the quota day turns.
	clk.Advance(24 * time.Hour)
	m = snapshotByID(p)
	if m["cool"].State != "active" || m["lim"].State != "active" || m["lim"].QuotaLeft != 1 || m["dis"].State != "disabled" {
		t.Fatalf("a day later: %+v", m)
	}
	if err := p.Enable("dis"); err != nil || snapshotByID(p)["dis"].State != "active" {
		t.Fatalf("Enable: %v %+v", err, snapshotByID(p)["dis"])
	}
}

func TestCheckUsableWithoutProbe(t *testing.T) {
	t.Parallel()
	p := mustNew(t, keys(1), apipool.WithBase(newUpstream(nil)))
	if _, err := p.CheckUsable(context.Background()); !errors.Is(err, apipool.ErrNoProbe) {
		t.Fatalf("err %v, want ErrNoProbe", err)
	}
}

// CheckUsable probes every key at once and reports each; a probe error
// that is not an invalid key leaves the key as it was.
func TestCheckUsableReport(t *testing.T) {
	t.Parallel()
	up := newUpstream(bySecret(map[string]reply{
		"s1": {Status: 401},
		"s2": {Status: 503},
	}))
	p := mustNew(t, keys(3), apipool.WithBase(up), apipool.WithProbe(apipool.ProbeRequest("GET", "http://api.test/me"), 0))
	res, err := p.CheckUsable(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(res) != 3 || res[0].KeyID != "k0" || res[1].KeyID != "k1" || res[2].KeyID != "k2" {
		t.Fatalf("results %+v, want one per key in the pool's order", res)
	}
	if !res[0].Usable || res[1].Usable || res[2].Usable || res[2].Err == nil {
		t.Fatalf("results %+v", res)
	}
	m := snapshotByID(p)
	if m["k0"].Disabled || !m["k1"].Disabled || m["k2"].Disabled {
		t.Fatalf("after the probe: %+v", m)
	}
	for _, c := range up.Calls() {
		if c.URL != "http://api.test/me" {
			t.Fatalf("probe went to %s", c.URL)
		}
	}
}

// A probe records one usage event per key, at the pool clock's time, as a
// request's attempt does: the usage queries over a recent window count it.
func TestProbeEventsAtPoolTime(t *testing.T) {
	t.Parallel()
	clk := newClock()
	clk.Advance(90 * time.Second)
	rec := &captureRecorder{}
	up := newUpstream(bySecret(map[string]reply{"s1": {Status: 401}}))
	p := mustNew(t, keys(2), apipool.WithBase(up), apipool.WithClock(clk), apipool.WithRecorder(rec),
		apipool.WithProbe(apipool.ProbeRequest("GET", "http://api.test/me"), 0))
	if _, err := p.CheckUsable(context.Background()); err != nil {
		t.Fatal(err)
	}
	ev := rec.Events()
	if len(ev) != 2 {
		t.Fatalf("events %v, want one per key", rec)
	}
	for _, e := range ev {
		if !e.Time.Equal(t0.Add(90 * time.Second)) {
			t.Errorf("key %s: event at %v, want the pool clock's %v", e.KeyID, e.Time, t0.Add(90*time.Second))
		}
	}
}

// A request waiting for a key sees the keys added and removed meanwhile:
// a key rotation during the wait does not fail it.
func TestWaitingRequestSeesKeyChanges(t *testing.T) {
	t.Parallel()
	clk := newClock()
	up := newUpstream(bySecret(map[string]reply{"s0": {Status: 429, Header: hdr("Retry-After", "20")}}))
	p := mustNew(t, keys(1), apipool.WithBase(up), apipool.WithClock(clk), apipool.WithMaxWait(time.Minute))
	ch := goRoundTrip(p, newGet(t, "http://api.test/"))
	waitTimer(t, clk) // k0 answered 429; the request waits for it
	if err := p.AddKey(apipool.Key{ID: "k-new", Secret: "s-new"}); err != nil {
		t.Fatal(err)
	}
	if err := p.RemoveKey("k0"); err != nil {
		t.Fatal(err)
	}
	clk.Advance(20 * time.Second)
	r := await(t, ch, "the waiting request")
	if r.err != nil || r.resp.StatusCode != 200 || r.body != "ok s-new" {
		t.Fatalf("%+v, want 200 from the key added during the wait", r)
	}
}

// SetKeys makes a list the pool's keys in one step: an unchanged key keeps
// its state, a changed one starts afresh, a missing one goes, a secret may
// move to another ID (the last key renamed too), and a bad list changes
// nothing.
func TestSetKeys(t *testing.T) {
	t.Parallel()
	clk := newClock()
	up := newUpstream(bySecret(map[string]reply{"s-a": {Status: 429, Header: hdr("Retry-After", "60")}}))
	sel := &orderSelector{}
	p := mustNew(t, []apipool.Key{{ID: "a", Secret: "s-a"}, {ID: "b", Secret: "s-b"}, {ID: "c", Secret: "s-c"}},
		apipool.WithBase(up), apipool.WithClock(clk), apipool.WithSelector(sel), apipool.WithMaxAttempts(1))
	sel.Set("a")
	mustDo(t, p) // a cools down
	if err := p.SetKeys([]apipool.Key{{ID: "a", Secret: "s-a"}, {ID: "b", Secret: "s-b2"}, {ID: "d", Secret: "s-c"}}); err != nil {
		t.Fatal(err)
	}
	m := snapshotByID(p)
	if len(m) != 3 || m["a"].State != apipool.KeyCooling || m["b"].Fingerprint != apipool.Fingerprint(nil, "s-b2") || m["d"].Fingerprint != apipool.Fingerprint(nil, "s-c") {
		t.Fatalf("after SetKeys: %+v; want a still cooling, b with its new secret, c's secret under d", m)
	}
	if _, ok := m["c"]; ok {
		t.Fatal("c was not removed")
	}
	// A bad list: every problem named, the pool unchanged.
	err := p.SetKeys([]apipool.Key{{ID: "x", Secret: "s-x"}, {ID: "y", Secret: "s-x"}, {ID: "z", Secret: ""}})
	if !errors.Is(err, apipool.ErrInvalidConfig) || !strings.Contains(err.Error(), `"y" has the same secret`) || !strings.Contains(err.Error(), `empty secret (key "z")`) || strings.Contains(err.Error(), "s-x") {
		t.Fatalf("bad list: %v", err)
	}
	if err := p.SetKeys(nil); !errors.Is(err, apipool.ErrInvalidConfig) {
		t.Fatalf("empty list: %v", err)
	}
	if m := snapshotByID(p); len(m) != 3 || m["a"].State != apipool.KeyCooling {
		t.Fatalf("a refused list changed the pool: %+v", m)
	}
	// Weight 0 is weight 1: spelling it out changes nothing; another
	// weight makes a new key, which starts afresh.
	if err := p.SetKeys([]apipool.Key{{ID: "a", Secret: "s-a", Weight: 1}, {ID: "b", Secret: "s-b2"}, {ID: "d", Secret: "s-c"}}); err != nil {
		t.Fatal(err)
	}
	if m := snapshotByID(p); m["a"].State != apipool.KeyCooling {
		t.Fatalf("a given Weight 1 in place of 0: %s, want still cooling", m["a"].State)
	}
	if err := p.SetKeys([]apipool.Key{{ID: "a", Secret: "s-a", Weight: 2}, {ID: "b", Secret: "s-b2"}, {ID: "d", Secret: "s-c"}}); err != nil {
		t.Fatal(err)
	}
	if m := snapshotByID(p); m["a"].State != apipool.KeyActive || m["a"].Weight != 2 {
		t.Fatalf("a given Weight 2: %+v, want a new key, active", m["a"])
	}
	// Down to one key, then that key renamed: never an empty pool.
	if err := p.SetKeys([]apipool.Key{{ID: "only", Secret: "s-b2"}}); err != nil {
		t.Fatal(err)
	}
	if err := p.SetKeys([]apipool.Key{{ID: "renamed", Secret: "s-b2"}}); err != nil {
		t.Fatal(err)
	}
	sel.Set("renamed")
	up.Reset()
	if resp, _ := mustDo(t, p); resp.StatusCode != 200 || !reflect.DeepEqual(up.Secrets(), []string{"s-b2"}) {
		t.Fatalf("%d with %v after the rename", resp.StatusCode, up.Secrets())
	}
}
