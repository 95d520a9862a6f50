package apipool_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/apipool-ng/apipool"
	"github.com/apipool-ng/apipool/sharedstate"
)

// memShared is an in-process sharedstate.Store: what three pools in one test
// share instead of Redis. fail makes every call fail, as a store down.
type memShared struct {
	mu       sync.Mutex
	cool     map[string]time.Time
	disabled map[string]string
	learned  map[string]sharedstate.Change // id -> the latest Learned change
	used     map[string]int                // id/day -> requests granted
	subs     map[chan sharedstate.Change]bool
	fail     atomic.Bool
	reject   string // a key ID whose changes Publish rejects for good
	takes    atomic.Int64
	// failPublish makes Publish alone fail; lost makes the next Watch's
	// Synced say that the store lost its state (Change.Lost).
	failPublish, lost atomic.Bool
}

var errDown = errors.New("store down")

func newMemShared() *memShared {
	return &memShared{cool: map[string]time.Time{}, disabled: map[string]string{}, learned: map[string]sharedstate.Change{}, used: map[string]int{}, subs: map[chan sharedstate.Change]bool{}}
}

func (m *memShared) Publish(_ context.Context, c sharedstate.Change) error {
	if m.fail.Load() || m.failPublish.Load() {
		return errDown
	}
	if c.KeyID == m.reject {
		return fmt.Errorf("bad key %q: %w", c.KeyID, sharedstate.ErrRejected)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	switch c.Kind {
	case sharedstate.Cooldown:
		if !c.Until.After(m.cool[c.KeyID]) {
			return nil
		}
		m.cool[c.KeyID] = c.Until
	case sharedstate.Disable:
		m.disabled[c.KeyID] = c.Reason
	case sharedstate.Enable:
		delete(m.disabled, c.KeyID)
		delete(m.cool, c.KeyID)
	case sharedstate.Learned:
		// The later At wins, to the millisecond; at the same, the lower.
		if o, ok := m.learned[c.KeyID]; ok {
			if at, oat := c.At.UnixMilli(), o.At.UnixMilli(); at < oat || at == oat && c.Limit >= o.Limit {
				return nil
			}
		}
		m.learned[c.KeyID] = c
	}
	for ch := range m.subs {
		select {
		case ch <- c:
		default:
		}
	}
	return nil
}

func (m *memShared) Watch(ctx context.Context, apply func(sharedstate.Change)) error {
	if m.fail.Load() {
		return errDown
	}
	ch := make(chan sharedstate.Change, 1024)
	m.mu.Lock()
	m.subs[ch] = true
	var state []sharedstate.Change
	for id, u := range m.cool {
		state = append(state, sharedstate.Change{KeyID: id, Kind: sharedstate.Cooldown, Until: u})
	}
	for id, r := range m.disabled {
		state = append(state, sharedstate.Change{KeyID: id, Kind: sharedstate.Disable, Reason: r})
	}
	for _, c := range m.learned {
		state = append(state, c)
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
	apply(sharedstate.Change{Kind: sharedstate.Synced, Lost: m.lost.Swap(false)})
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

func (m *memShared) Take(_ context.Context, id string, l sharedstate.Limits, now time.Time, n int) (int, time.Time, error) {
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
		if s.KeyID == id {
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
	// Every pool watches the store before any change is made: a pool
	// that starts watching later gets the state as it is then, and a key
	// enabled meanwhile is simply not disabled in it.
	for i, p := range pools {
		eventually(t, "pool "+itoa(i)+" to have synced", func() bool { return p.SharedStateHealth().Synced })
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

// windowShared is an in-process sharedstate.Store that enforces PerSecond and
// PerMinute as the sliding windows Key documents, counting the requests
// granted as sent at now+Lease, as redisstate does. during, when set, runs
// inside each Take (to move a fake clock while the store "works").
type windowShared struct {
	mu     sync.Mutex
	at     map[string][]time.Time // "id/s", "id/m" -> times counted
	leases []time.Duration        // the Lease of every Take, in order
	takes  atomic.Int64
	during func()
}

func newWindowShared() *windowShared { return &windowShared{at: map[string][]time.Time{}} }

func (w *windowShared) Publish(context.Context, sharedstate.Change) error { return nil }

func (w *windowShared) Watch(ctx context.Context, _ func(sharedstate.Change)) error {
	<-ctx.Done()
	return ctx.Err()
}

func (w *windowShared) Take(_ context.Context, id string, l sharedstate.Limits, now time.Time, n int) (int, time.Time, error) {
	w.takes.Add(1)
	if w.during != nil {
		w.during()
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	w.leases = append(w.leases, l.Lease)
	type win struct {
		key   string
		limit int
		len   time.Duration
	}
	var wins []win
	switch {
	case l.PerSecond >= 1:
		wins = append(wins, win{id + "/s", int(l.PerSecond), time.Second})
	case l.PerSecond > 0:
		wins = append(wins, win{id + "/s", 1, time.Duration(float64(time.Second) / l.PerSecond)})
	}
	if l.PerMinute > 0 {
		wins = append(wins, win{id + "/m", l.PerMinute, time.Minute})
	}
	g := n
	var retry time.Time
	for _, x := range wins {
		var held []time.Time
		for _, a := range w.at[x.key] {
			if a.After(now.Add(-x.len)) {
				held = append(held, a)
			}
		}
		slices.SortFunc(held, func(a, b time.Time) int { return a.Compare(b) })
		w.at[x.key] = held
		if free := x.limit - len(held); free < g {
			g = max(free, 0)
		}
		if len(held) >= x.limit {
			if r := held[len(held)-x.limit].Add(x.len); r.After(retry) {
				retry = r
			}
		}
	}
	if g == 0 {
		return 0, retry, nil
	}
	for _, x := range wins {
		for range g {
			w.at[x.key] = append(w.at[x.key], now.Add(l.Lease))
		}
	}
	return g, time.Time{}, nil
}

// TestSharedRateWindowsThreePools: three pools share a key's rate limits
// through a store that counts what it grants as sent at the deadline the
// pool gives (sharedstate.Limits.Lease); each sends as fast as the limits allow, on a
// fake clock. No window holds more than the limit across the three, with
// single requests (PerSecond 5) and with leased blocks (PerSecond 200:
// blocks of 16; PerMinute 1200: blocks of 2), and leased blocks need fewer
// Takes than requests (refused Takes included).
func TestSharedRateWindowsThreePools(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		name      string
		key       apipool.Key
		w         time.Duration
		limit     int
		run, step time.Duration
		block     bool
	}{
		{"PerSecond 5", apipool.Key{PerSecond: 5}, time.Second, 5, 5 * time.Second, 10 * time.Millisecond, false},
		{"PerSecond 200", apipool.Key{PerSecond: 200}, time.Second, 200, 3 * time.Second, 5 * time.Millisecond, true},
		{"PerMinute 1200", apipool.Key{PerMinute: 1200}, time.Minute, 1200, 3 * time.Minute, 100 * time.Millisecond, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			clk := newClock()
			store := newWindowShared()
			up := &sendTimes{now: clk.Now}
			k := c.key
			k.ID, k.Secret = "k0", "s0"
			var pools []*apipool.Transport
			for range 3 {
				pools = append(pools, mustNew(t, []apipool.Key{k}, apipool.WithBase(up), apipool.WithClock(clk), apipool.WithSharedState(store), apipool.WithMaxWait(0)))
			}
			sendStepped(t, clk, pools, c.run, c.step)
			at := up.times()
			worst := worstWindow(at, c.w)
			if worst > c.limit {
				t.Errorf("a window of %v held %d requests across the pools, want at most %d", c.w, worst, c.limit)
			}
			// Every window's worth is used but for the time the deadlines
			// keep requests counted: 2 ms a request alone, 100 ms a block.
			windows := int(c.run / c.w)
			if min := c.limit * windows * 9 / 10; len(at) < min {
				t.Errorf("%d requests in %v, want at least %d", len(at), c.run, min)
			}
			takes := store.takes.Load()
			if c.block && takes >= int64(len(at)) {
				t.Errorf("%d Takes for %d requests: blocks not leased", takes, len(at))
			}
			t.Logf("%d requests, %d Takes, worst window %d", len(at), takes, worst)
		})
	}
}

// The deadline a pool gives a Take (sharedstate.Limits.Lease) is a little more than
// Takes take, on the pool's clock: 2 ms when they take no time, a block's
// 100 ms for a block. A grant that comes back after its deadline is not
// used: the pool takes once more, with a deadline fitted to the slow Take;
// a store late twice in a row counts as failing (the local limits decide).
func TestSharedTakeDeadline(t *testing.T) {
	t.Parallel()
	clk := newClock()
	store := newWindowShared()
	up := &sendTimes{now: clk.Now}
	single := mustNew(t, []apipool.Key{{ID: "k0", Secret: "s0", PerSecond: 5}}, apipool.WithBase(up), apipool.WithClock(clk), apipool.WithSharedState(store), apipool.WithMaxWait(0))
	block := mustNew(t, []apipool.Key{{ID: "k1", Secret: "s1", PerSecond: 200}}, apipool.WithBase(up), apipool.WithClock(clk), apipool.WithSharedState(store), apipool.WithMaxWait(0))
	mustDo(t, single)
	mustDo(t, block)
	if want := []time.Duration{2 * time.Millisecond, 100 * time.Millisecond}; !slices.Equal(store.leases, want) {
		t.Fatalf("leases %v, want %v", store.leases, want)
	}

	// Late once: the grant is not used, and the second Take, given twice
	// the time the first took (and 2 ms), is.
	late := 1
	store.during = func() {
		if late > 0 {
			late--
			clk.Advance(30 * time.Millisecond)
		}
	}
	clk.Advance(time.Second)
	before := len(up.times())
	mustDo(t, single)
	if want := []time.Duration{2 * time.Millisecond, 62 * time.Millisecond}; !slices.Equal(store.leases[2:], want) {
		t.Fatalf("leases %v, want %v after the first", store.leases, want)
	}
	if n := len(up.times()) - before; n != 1 {
		t.Fatalf("%d requests sent, want 1", n)
	}
	if h := single.SharedStateHealth(); !h.Available || h.Errors != 0 {
		t.Fatalf("health %+v after one late Take", h)
	}

	// Late twice: the store counts as failing; the request goes on with
	// the local limits.
	store.during = func() { clk.Advance(time.Second) }
	mustDo(t, single)
	if h := single.SharedStateHealth(); h.Available || h.Errors != 1 || h.LastError == nil || !strings.Contains(h.LastError.Error(), "after the") {
		t.Fatalf("health %+v after two late Takes", h)
	}
	// Within the backoff that follows, requests do not call the store;
	// after it, one probes it, and finds it on time.
	takes := store.takes.Load()
	mustDo(t, single)
	if n := store.takes.Load() - takes; n != 0 {
		t.Fatalf("%d Takes within the backoff", n)
	}
	store.during = nil
	clk.Advance(time.Second)
	mustDo(t, single)
	if n := store.takes.Load() - takes; n != 1 || !single.SharedStateHealth().Available {
		t.Fatalf("%d Takes after the backoff (want 1), health %+v", n, single.SharedStateHealth())
	}
}
