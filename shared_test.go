package apipool_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/apipool-ng/apipool"
)

// memShared is an in-process SharedState: what three pools in one test
// share instead of Redis. fail makes every call fail, as a store down.
type memShared struct {
	mu       sync.Mutex
	cool     map[string]time.Time
	disabled map[string]string
	used     map[string]int // id/day -> requests granted
	subs     map[chan apipool.StateChange]bool
	fail     atomic.Bool
	reject   string // a key ID whose changes Publish rejects for good
	takes    atomic.Int64
}

var errDown = errors.New("store down")

func newMemShared() *memShared {
	return &memShared{cool: map[string]time.Time{}, disabled: map[string]string{}, used: map[string]int{}, subs: map[chan apipool.StateChange]bool{}}
}

func (m *memShared) Publish(_ context.Context, c apipool.StateChange) error {
	if m.fail.Load() {
		return errDown
	}
	if c.KeyID == m.reject {
		return fmt.Errorf("bad key %q: %w", c.KeyID, apipool.ErrRejectedChange)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	switch c.Kind {
	case apipool.ChangeCooldown:
		if !c.Until.After(m.cool[c.KeyID]) {
			return nil
		}
		m.cool[c.KeyID] = c.Until
	case apipool.ChangeDisable:
		m.disabled[c.KeyID] = c.Reason
	case apipool.ChangeEnable:
		delete(m.disabled, c.KeyID)
		delete(m.cool, c.KeyID)
	}
	for ch := range m.subs {
		select {
		case ch <- c:
		default:
		}
	}
	return nil
}

func (m *memShared) Watch(ctx context.Context, apply func(apipool.StateChange)) error {
	if m.fail.Load() {
		return errDown
	}
	ch := make(chan apipool.StateChange, 1024)
	m.mu.Lock()
	m.subs[ch] = true
	var state []apipool.StateChange
	for id, u := range m.cool {
		state = append(state, apipool.StateChange{KeyID: id, Kind: apipool.ChangeCooldown, Until: u})
	}
	for id, r := range m.disabled {
		state = append(state, apipool.StateChange{KeyID: id, Kind: apipool.ChangeDisable, Reason: r})
	}
	m.mu.Unlock()
	defer func() {
		m.mu.Lock()
		delete(m.subs, ch)
		m.mu.Unlock()
	}()
	for _, c := range state {
		apply(c)
	}
	apply(apipool.StateChange{Kind: apipool.ChangeSynced})
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case c := <-ch:
			apply(c)
		case <-tick.C:
			if m.fail.Load() {
				return errDown
			}
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

func (m *memShared) Take(_ context.Context, id string, l apipool.Limits, now time.Time, n int) (int, time.Time, error) {
	m.takes.Add(1)
	if m.fail.Load() {
		return 0, time.Time{}, errDown
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	k := id + "/" + itoa(int(l.Day))
	left := l.PerDay - m.used[k]
	if left <= 0 {
		next := time.Unix(int64(l.Day+1)*86400, 0)
		return 0, next, nil
	}
	g := min(n, left)
	m.used[k] += g
	return g, time.Time{}, nil
}

func stateOf(p *apipool.Transport, id string) apipool.KeyStatus {
	for _, s := range p.Snapshot() {
		if s.ID == id {
			return s
		}
	}
	return apipool.KeyStatus{}
}

// upstream answers by key: "Bearer s1" is rate limited, "Bearer s2" is
// revoked, the others succeed; it counts requests per key.
type upstream struct {
	mu   sync.Mutex
	seen map[string]int
}

func (u *upstream) RoundTrip(r *http.Request) (*http.Response, error) {
	auth := r.Header.Get("Authorization")
	u.mu.Lock()
	if u.seen == nil {
		u.seen = map[string]int{}
	}
	u.seen[auth]++
	u.mu.Unlock()
	code := 200
	h := http.Header{}
	switch auth {
	case "Bearer s1":
		code = 429
		h.Set("Retry-After", "60")
	case "Bearer s2":
		code = 401
	}
	return &http.Response{StatusCode: code, Header: h, Body: io.NopCloser(strings.NewReader("")), Request: r}, nil
}

func (u *upstream) count(auth string) int {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.seen[auth]
}

func TestSharedStateCooldownAndDisableReachEveryReplica(t *testing.T) {
	store := newMemShared()
	up := &upstream{}
	clk := newClock()
	var pools []*apipool.Transport
	for i := 0; i < 3; i++ {
		p := mustNew(t, keys(4), apipool.WithBase(up), apipool.WithClock(clk), apipool.WithSharedState(store), apipool.WithStrategy(apipool.RoundRobin))
		t.Cleanup(func() { p.Close(context.Background()) })
		pools = append(pools, p)
	}
	// Through pool 0 alone: k0 ok, k1 429 -> k2 401 -> k3 ok.
	for i := 0; i < 2; i++ {
		resp, err := (&http.Client{Transport: pools[0]}).Get("http://api.test/")
		if err != nil || resp.StatusCode != 200 {
			t.Fatalf("request %d: %v %v", i, resp, err)
		}
		resp.Body.Close()
	}
	if up.count("Bearer s1") != 1 || up.count("Bearer s2") != 1 {
		t.Fatalf("upstream saw s1 %d, s2 %d times; want 1, 1", up.count("Bearer s1"), up.count("Bearer s2"))
	}
	want := clk.Now().Add(60 * time.Second)
	for i, p := range pools[1:] {
		eventually(t, "the cooldown to reach pool "+itoa(i+1), func() bool { return stateOf(p, "k1").CoolingUntil.Equal(want) })
		eventually(t, "the disable to reach pool "+itoa(i+1), func() bool { return stateOf(p, "k2").Disabled })
	}
	// The other pools never send k1 or k2 now.
	for _, p := range pools[1:] {
		for i := 0; i < 8; i++ {
			resp, err := (&http.Client{Transport: p}).Get("http://api.test/")
			if err != nil || resp.StatusCode != 200 {
				t.Fatalf("%v %v", resp, err)
			}
			resp.Body.Close()
		}
	}
	if up.count("Bearer s1") != 1 || up.count("Bearer s2") != 1 {
		t.Fatalf("after the change reached them, other pools still sent s1 (%d) or s2 (%d)", up.count("Bearer s1"), up.count("Bearer s2"))
	}
	// Enabling through pool 2 reaches pool 0.
	if err := pools[2].Enable("k2"); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the enable to reach pool 0", func() bool { return !stateOf(pools[0], "k2").Disabled })
}

func TestSharedStateDailyQuotaHoldsAcrossReplicas(t *testing.T) {
	store := newMemShared()
	up := &upstream{}
	clk := newClock()
	ks := []apipool.Key{{ID: "q", Secret: "sq", PerDay: 250}}
	var pools []*apipool.Transport
	for i := 0; i < 3; i++ {
		p := mustNew(t, ks, apipool.WithBase(up), apipool.WithClock(clk), apipool.WithSharedState(store), apipool.WithMaxWait(0))
		t.Cleanup(func() { p.Close(context.Background()) })
		pools = append(pools, p)
	}
	var ok, refused atomic.Int64
	var wg sync.WaitGroup
	for g := 0; g < 30; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := &http.Client{Transport: pools[g%3]}
			for i := 0; i < 20; i++ {
				resp, err := c.Get("http://api.test/")
				if errors.Is(err, apipool.ErrNoKeyAvailable) {
					refused.Add(1)
					continue
				}
				if err != nil {
					t.Error(err)
					return
				}
				resp.Body.Close()
				ok.Add(1)
			}
		}()
	}
	wg.Wait()
	if got := up.count("Bearer sq"); got > 250 {
		t.Fatalf("upstream saw %d requests on a key with a quota of 250 across replicas", got)
	}
	if ok.Load()+refused.Load() != 600 || ok.Load() < 250-3*2 {
		// Each replica may hold at most one unused leased block (2 here).
		t.Fatalf("ok %d, refused %d", ok.Load(), refused.Load())
	}
	if store.takes.Load() >= ok.Load() {
		t.Errorf("%d round trips to the store for %d requests: the daily quota is not leased in blocks", store.takes.Load(), ok.Load())
	}
}

func TestSharedStateDownKeepsRequestsFlowing(t *testing.T) {
	store := newMemShared()
	store.fail.Store(true)
	up := &upstream{}
	ks := []apipool.Key{{ID: "a", Secret: "sa", PerDay: 1000}, {ID: "b", Secret: "sb"}}
	p := mustNew(t, ks, apipool.WithBase(up), apipool.WithSharedState(store))
	defer p.Close(context.Background())
	for i := 0; i < 10; i++ {
		resp, err := (&http.Client{Transport: p}).Get("http://api.test/")
		if err != nil || resp.StatusCode != 200 {
			t.Fatalf("with the store down: %v %v", resp, err)
		}
		resp.Body.Close()
	}
	h := p.SharedStateHealth()
	if h.Available || h.Errors == 0 || !errors.Is(h.LastError, errDown) {
		t.Fatalf("health while down = %+v", h)
	}
	// While the store is down, requests do not each wait on it: Take is
	// tried again only after a backoff that doubles.
	if n := store.takes.Load(); n >= 10 {
		t.Errorf("%d Takes for 10 requests while the store was down", n)
	}
	store.fail.Store(false)
	eventually(t, "sharing to resume", func() bool { return p.SharedStateHealth().Available })
}

func TestSharedStateNilIsAConfigError(t *testing.T) {
	_, err := apipool.New(keys(1), apipool.WithSharedState(nil))
	if !errors.Is(err, apipool.ErrInvalidConfig) || !strings.Contains(err.Error(), "WithSharedState") {
		t.Fatalf("err = %v", err)
	}
}

// A change the store rejects for good is dropped and counted, and the
// changes queued after it still go out.
func TestSharedStateRejectedChangeIsDropped(t *testing.T) {
	store := newMemShared()
	store.reject = "k1"
	up := &upstream{}
	a := mustNew(t, keys(3), apipool.WithBase(up), apipool.WithSharedState(store))
	defer a.Close(context.Background())
	b := mustNew(t, keys(3), apipool.WithBase(up), apipool.WithSharedState(store))
	defer b.Close(context.Background())
	if err := a.Disable("k1", "x"); err != nil {
		t.Fatal(err)
	}
	if err := a.Disable("k0", "y"); err != nil {
		t.Fatal(err)
	}
	eventually(t, "k0's change to reach the other pool", func() bool { return stateOf(b, "k0").Disabled })
	if h := a.SharedStateHealth(); h.Dropped != 1 {
		t.Fatalf("health %+v, want the rejected change dropped and counted", h)
	}
	if stateOf(b, "k1").Disabled {
		t.Fatal("the rejected change reached the other pool")
	}
}
