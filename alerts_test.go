package apipool_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/apipool-ng/apipool"
)

// alertLog collects a pool's alerts, as WithAlerts delivers them.
type alertLog struct {
	mu   sync.Mutex
	list []apipool.Alert
	ch   chan apipool.Alert
}

func newAlertLog() *alertLog { return &alertLog{ch: make(chan apipool.Alert, 1024)} }

func (l *alertLog) f(a apipool.Alert) {
	l.mu.Lock()
	l.list = append(l.list, a)
	l.mu.Unlock()
	l.ch <- a
}

func (l *alertLog) next(t testing.TB) apipool.Alert {
	t.Helper()
	return await(t, l.ch, "an alert")
}

func (l *alertLog) all() []apipool.Alert {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.list)
}

// kinds lists the alerts delivered, as "kind key".
func (l *alertLog) kinds() []string {
	var out []string
	for _, a := range l.all() {
		out = append(out, strings.TrimSpace(a.Kind.String()+" "+a.KeyID))
	}
	return out
}

// switchable answers each secret as its entry in the map says (200 "ok"
// for the others); the test changes the map as it goes.
type switchable struct {
	mu sync.Mutex
	m  map[string]reply
}

func (s *switchable) set(secret string, r reply) {
	s.mu.Lock()
	if s.m == nil {
		s.m = map[string]reply{}
	}
	s.m[secret] = r
	s.mu.Unlock()
}

func (s *switchable) reset(secret string) {
	s.mu.Lock()
	delete(s.m, secret)
	s.mu.Unlock()
}

func (s *switchable) handler(in seen) reply {
	s.mu.Lock()
	defer s.mu.Unlock()
	if r, ok := s.m[in.Secret]; ok {
		return r
	}
	return reply{Status: 200, Body: "ok"}
}

func closePool(t testing.TB, p *apipool.Transport) {
	t.Helper()
	if err := p.Close(context.Background()); err != nil {
		t.Fatalf("Close: %v", err)
	}
}

// A key the upstream rejects raises one AlertKeyDisabled, with its retry
// time; its trial request, accepted, raises AlertKeyEnabled.
func TestAlertsKeyDisabledThenEnabled(t *testing.T) {
	clk := newClock()
	up := &switchable{}
	up.set("s0", reply{Status: 401})
	log := newAlertLog()
	sel := &orderSelector{}
	sel.Set("k0", "k1")
	p := mustNew(t, keys(2), apipool.WithBase(newUpstream(up.handler)), apipool.WithClock(clk), apipool.WithSelector(sel),
		apipool.WithDisabledRetry(time.Minute, time.Hour), apipool.WithAlerts(log.f, apipool.AlertSettings{Pool: "api"}))

	if resp, _ := mustDo(t, p); resp.StatusCode != 200 {
		t.Fatalf("status %d, want 200 from k1", resp.StatusCode)
	}
	a := log.next(t)
	want := apipool.Alert{Kind: apipool.AlertKeyDisabled, Pool: "api", KeyID: "k0", Time: t0, Until: t0.Add(time.Minute), Reason: "upstream answered 401 Unauthorized"}
	if a != want {
		t.Fatalf("alert %+v,\nwant %+v", a, want)
	}

	up.reset("s0")
	clk.Advance(time.Minute)
	mustDo(t, p) // k0's trial
	a = log.next(t)
	if a.Kind != apipool.AlertKeyEnabled || a.KeyID != "k0" || !a.Time.Equal(t0.Add(time.Minute)) || a.Pool != "api" || a.Reason == "" {
		t.Fatalf("alert %+v, want k0 enabled at t0+1m", a)
	}
	closePool(t, p)
	if got := log.kinds(); !slices.Equal(got, []string{"key.disabled k0", "key.enabled k0"}) {
		t.Fatalf("alerts %q", got)
	}
}

// Two keys rejecting one request put the fault on the request: the first
// key, disabled, is put back, and nothing is alerted (every key revoked
// would otherwise raise a key.disabled and a key.enabled per request). A
// key whose rejection stands (the next key accepted the request) is
// alerted once.
func TestAlertsForgivenKeyNotAlerted(t *testing.T) {
	up := &switchable{}
	up.set("s0", reply{Status: 401})
	up.set("s1", reply{Status: 401})
	log := newAlertLog()
	sel := &orderSelector{}
	sel.Set("k0", "k1")
	p := mustNew(t, keys(2), apipool.WithBase(newUpstream(up.handler)), apipool.WithClock(newClock()), apipool.WithSelector(sel),
		apipool.WithAlerts(log.f, apipool.AlertSettings{}))
	for i := 0; i < 3; i++ {
		if resp, _ := mustDo(t, p); resp.StatusCode != 401 {
			t.Fatalf("status %d", resp.StatusCode)
		}
	}
	up.reset("s1")
	if resp, _ := mustDo(t, p); resp.StatusCode != 200 {
		t.Fatalf("status %d after k1 is accepted again", resp.StatusCode)
	}
	closePool(t, p)
	if got := log.kinds(); !slices.Equal(got, []string{"key.disabled k0"}) {
		t.Fatalf("alerts %q, want only k0's disable, once its rejection stood", got)
	}
}

// A cooldown of the threshold or longer is alerted once; a shorter one is
// not; a new long cooldown after the first ended is alerted again.
func TestAlertsCoolingThreshold(t *testing.T) {
	clk := newClock()
	up := &switchable{}
	up.set("s0", reply{Status: 429, Header: hdr("Retry-After", "600")})
	log := newAlertLog()
	sel := &orderSelector{}
	sel.Set("k0", "k1")
	p := mustNew(t, keys(2), apipool.WithBase(newUpstream(up.handler)), apipool.WithClock(clk), apipool.WithSelector(sel),
		apipool.WithMaxWait(0), apipool.WithAlerts(log.f, apipool.AlertSettings{CoolingThreshold: 5 * time.Minute}))

	mustDo(t, p) // k0 429 for 10 minutes, then k1
	a := log.next(t)
	if a.Kind != apipool.AlertKeyCooling || a.KeyID != "k0" || !a.Until.Equal(t0.Add(10*time.Minute)) || !strings.Contains(a.Reason, "10m0s") {
		t.Fatalf("alert %+v, want k0 cooling until t0+10m", a)
	}
	// k1 is rate limited for 4m59s: under the threshold.
	up.set("s1", reply{Status: 429, Header: hdr("Retry-After", "299")})
	if resp, _ := mustDo(t, p); resp.StatusCode != 429 {
		t.Fatalf("status %d", resp.StatusCode)
	}
	// The cooldowns end; k0 is rate limited for long again.
	clk.Advance(11 * time.Minute)
	up.reset("s1")
	mustDo(t, p)
	closePool(t, p)
	got := log.kinds()
	if want := []string{"key.cooling k0", "pool.no_key", "pool.keys_back", "key.cooling k0"}; !slices.Equal(got, want) {
		t.Fatalf("alerts %q, want %q", got, want)
	}
	if last := log.all()[3]; !last.Until.Equal(t0.Add(21 * time.Minute)) {
		t.Fatalf("second cooling alert until %v, want t0+21m", last.Until)
	}
}

// A breaker that opens and closes again raises AlertBreakerOpen, with
// when it half-opens, then AlertBreakerClosed.
func TestAlertsBreaker(t *testing.T) {
	up := &switchable{}
	up.set("s0", reply{Status: 500})
	log := newAlertLog()
	clk := newClock()
	const timeout = 50 * time.Millisecond
	p := mustNew(t, keys(1), apipool.WithBase(newUpstream(up.handler)), apipool.WithClock(clk), apipool.WithMaxAttempts(1),
		apipool.WithMaxWait(0), apipool.WithBreaker(apipool.BreakerSettings{Failures: 2, Timeout: timeout}),
		apipool.WithAlerts(log.f, apipool.AlertSettings{Pool: "api"}))
	for range 2 {
		if resp, _ := mustDo(t, p); resp.StatusCode != 500 {
			t.Fatalf("status %d", resp.StatusCode)
		}
	}
	a := log.next(t)
	if a.Kind != apipool.AlertBreakerOpen || a.KeyID != "k0" || a.Until.Before(t0) || a.Until.After(t0.Add(timeout)) {
		t.Fatalf("alert %+v, want k0's breaker open until at most t0+%v", a, timeout)
	}
	up.reset("s0")
	// The breaker's timeout follows the wall clock (gobreaker's own).
	eventually(t, "a request to pass the half-open breaker", func() bool {
		resp, _, err := do(t, p)
		return err == nil && resp.StatusCode == 200
	})
	closePool(t, p)
	var got []string
	for _, k := range log.kinds() {
		if strings.HasPrefix(k, "key.") {
			got = append(got, k)
		}
	}
	if want := []string{"key.breaker_open k0", "key.breaker_closed k0"}; !slices.Equal(got, want) {
		t.Fatalf("key alerts %q, want %q", got, want)
	}
}

// Requests that find no key raise at most one AlertNoKey per interval,
// the next one counting those between; once a request takes a key again,
// AlertKeysBack.
func TestAlertsNoKeyRateLimited(t *testing.T) {
	clk := newClock()
	log := newAlertLog()
	p := mustNew(t, keys(1), apipool.WithBase(newUpstream(nil)), apipool.WithClock(clk), apipool.WithMaxWait(0),
		apipool.WithAlerts(log.f, apipool.AlertSettings{NoKeyInterval: time.Minute}))
	if err := p.Disable("k0", "maintenance"); err != nil {
		t.Fatal(err)
	}
	for range 3 {
		_, _, err := do(t, p)
		noKey(t, err)
	}
	clk.Advance(time.Minute)
	_, _, err := do(t, p)
	noKey(t, err)
	if err := p.Enable("k0"); err != nil {
		t.Fatal(err)
	}
	mustDo(t, p)
	mustDo(t, p)
	closePool(t, p)
	got := log.all()
	kinds := log.kinds()
	if want := []string{"key.disabled k0", "pool.no_key", "pool.no_key", "key.enabled k0", "pool.keys_back"}; !slices.Equal(kinds, want) {
		t.Fatalf("alerts %q, want %q", kinds, want)
	}
	if d := got[0]; d.Reason != "maintenance" || !d.Until.IsZero() {
		t.Errorf("disable alert %+v: want reason maintenance, no retry time", d)
	}
	if n := got[1]; !n.Time.Equal(t0) || !n.Until.IsZero() || !strings.Contains(n.Reason, `"k0" disabled`) || strings.Contains(n.Reason, "more requests") {
		t.Errorf("first no-key alert %+v", n)
	}
	if n := got[2]; !n.Time.Equal(t0.Add(time.Minute)) || !strings.Contains(n.Reason, "2 more requests found no key") {
		t.Errorf("second no-key alert %+v: want the 2 requests in between counted", n)
	}
}

// The callback never holds up a request: while it blocks, requests that
// raise alerts finish; the alerts past the queue's size are dropped and
// counted; those queued are delivered in order by Close.
func TestAlertsNeverBlockARequest(t *testing.T) {
	up := &switchable{}
	up.set("s1", reply{Status: 401})
	entered, release := make(chan struct{}), make(chan struct{})
	var mu sync.Mutex
	var got []string
	first := true
	f := func(a apipool.Alert) {
		mu.Lock()
		got = append(got, a.Kind.String()+" "+a.KeyID)
		block := first
		first = false
		mu.Unlock()
		if block {
			close(entered)
			<-release
		}
	}
	sel := &orderSelector{}
	sel.Set("k1", "k0")
	p := mustNew(t, keys(2), apipool.WithBase(newUpstream(up.handler)), apipool.WithClock(newClock()), apipool.WithSelector(sel),
		apipool.WithMaxWait(0), apipool.WithAlerts(f, apipool.AlertSettings{QueueSize: 2}))
	if err := p.Disable("k0", ""); err != nil {
		t.Fatal(err)
	}
	await(t, entered, "the callback to take the first alert")
	// k1 is rejected (an alert), and no key is left (another): the queue
	// is full, and the request is answered all the same.
	res := await(t, goRoundTrip(p, newGet(t, "http://api.test/")), "the request, while the callback blocks")
	if res.err != nil || res.resp.StatusCode != 401 {
		t.Fatalf("request: %v %v", res.resp, res.err)
	}
	res.resp.Body.Close()
	if err := p.Enable("k0"); err != nil { // dropped: the queue is full
		t.Fatal(err)
	}
	if s := p.AlertStats(); s.Dropped != 1 || s.Queued != 2 || s.Delivered != 0 {
		t.Fatalf("stats %+v, want 1 dropped, 2 queued", s)
	}
	close(release)
	closePool(t, p)
	if s := p.AlertStats(); s.Dropped != 1 || s.Queued != 0 || s.Delivered != 3 {
		t.Fatalf("stats after Close %+v, want 3 delivered, 1 dropped", s)
	}
	mu.Lock()
	defer mu.Unlock()
	if want := []string{"key.disabled k0", "key.disabled k1", "pool.no_key "}; !slices.Equal(got, want) {
		t.Fatalf("delivered %q, want %q in that order", got, want)
	}
}

// Close waits for the callback within its context, names it when it has
// not returned, and a later Close waits again; alerts raised after Close
// are dropped and counted.
func TestAlertsClose(t *testing.T) {
	entered, release := make(chan struct{}), make(chan struct{})
	var once sync.Once
	f := func(apipool.Alert) {
		once.Do(func() { close(entered) })
		<-release
	}
	p, err := apipool.New(keys(1), apipool.WithBase(newUpstream(nil)), apipool.WithClock(newClock()), apipool.WithAlerts(f, apipool.AlertSettings{}))
	if err != nil {
		t.Fatal(err)
	}
	p.Disable("k0", "")
	await(t, entered, "the callback")
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	err = p.Close(ctx)
	var ce *apipool.CloseError
	if !errors.As(err, &ce) || !errors.Is(err, apipool.ErrCloseIncomplete) || !slices.Contains(ce.Running, "alerts") {
		t.Fatalf("Close = %v, want a CloseError naming alerts", err)
	}
	p.Enable("k0") // after Close: dropped
	close(release)
	if err := p.Close(context.Background()); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if s := p.AlertStats(); s.Delivered != 1 || s.Dropped != 1 {
		t.Fatalf("stats %+v, want 1 delivered, 1 dropped", s)
	}
}

// With shared state, the pool that made a change alerts it; the replicas
// that apply it do not.
func TestAlertsOnlyTheReplicaThatMadeTheChange(t *testing.T) {
	store := newMemShared()
	up := &upstream{} // s2 is revoked
	clk := newClock()
	logA, logB := newAlertLog(), newAlertLog()
	sel := &orderSelector{}
	sel.Set("k2", "k0")
	a := mustNew(t, keys(3), apipool.WithBase(up), apipool.WithClock(clk), apipool.WithSharedState(store), apipool.WithSelector(sel),
		apipool.WithAlerts(logA.f, apipool.AlertSettings{Pool: "a"}))
	b := mustNew(t, keys(3), apipool.WithBase(up), apipool.WithClock(clk), apipool.WithSharedState(store),
		apipool.WithAlerts(logB.f, apipool.AlertSettings{Pool: "b"}))
	for _, p := range []*apipool.Transport{a, b} {
		eventually(t, "the pools to have synced", func() bool { return p.SharedStateHealth().Synced })
	}
	resp, err := (&http.Client{Transport: a}).Get("http://api.test/")
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("%v %v", resp, err)
	}
	resp.Body.Close()
	eventually(t, "the disable to reach b", func() bool { return stateOf(b, "k2").Disabled })
	if err := b.Enable("k2"); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the enable to reach a", func() bool { return !stateOf(a, "k2").Disabled })
	closePool(t, a)
	closePool(t, b)
	if got := logA.kinds(); !slices.Equal(got, []string{"key.disabled k2"}) {
		t.Errorf("pool a alerted %q, want its own disable only", got)
	}
	if got := logB.kinds(); !slices.Equal(got, []string{"key.enabled k2"}) {
		t.Errorf("pool b alerted %q, want its own enable only", got)
	}
}

// No alert shows a key's secret, whatever made it.
func TestAlertsNoSecret(t *testing.T) {
	const canary = "sk-ALERT-CANARY-7d1e"
	ks := []apipool.Key{{ID: "k0", Secret: canary + "-0"}, {ID: "k1", Secret: canary + "-1"}, {ID: "k2", Secret: canary + "-2"}}
	up := &switchable{}
	up.set(canary+"-0", reply{Status: 401, Body: "bad key " + canary + "-0"})
	up.set(canary+"-1", reply{Status: 429, Header: hdr("Retry-After", "3600"), Body: canary})
	up.set(canary+"-2", reply{Status: 500, Body: canary})
	log := newAlertLog()
	sel := &orderSelector{}
	sel.Set("k0", "k1", "k2")
	p := mustNew(t, ks, apipool.WithBase(newUpstream(up.handler)), apipool.WithClock(newClock()), apipool.WithSelector(sel),
		apipool.WithMaxWait(0), apipool.WithBackoff(func(_, _ time.Duration, _ int, _ *http.Response) time.Duration { return 0 }, 0, 0),
		apipool.WithBreaker(apipool.BreakerSettings{Failures: 1, Timeout: time.Hour}), apipool.WithAlerts(log.f, apipool.AlertSettings{}))
	for range 3 {
		do(t, p)
	}
	closePool(t, p)
	kinds := log.kinds()
	for _, want := range []string{"key.disabled k0", "key.cooling k1", "key.breaker_open k2", "pool.no_key"} {
		if !slices.Contains(kinds, want) {
			t.Errorf("no %q among %q", want, kinds)
		}
	}
	for _, a := range log.all() {
		j, err := json.Marshal(a)
		if err != nil {
			t.Fatal(err)
		}
		for _, s := range []string{fmt.Sprintf("%+v", a), fmt.Sprintf("%#v", a), string(j)} {
			if strings.Contains(s, "CANARY") {
				t.Errorf("an alert shows a secret: %s", s)
			}
		}
	}
}

func TestAlertsOptionErrors(t *testing.T) {
	f := func(apipool.Alert) {}
	for _, c := range []struct {
		name  string
		opt   apipool.Option
		field string
	}{
		{"nil func", apipool.WithAlerts(nil, apipool.AlertSettings{}), "WithAlerts"},
		{"negative threshold", apipool.WithAlerts(f, apipool.AlertSettings{CoolingThreshold: -1}), "WithAlerts.CoolingThreshold"},
		{"negative interval", apipool.WithAlerts(f, apipool.AlertSettings{NoKeyInterval: -time.Second}), "WithAlerts.NoKeyInterval"},
		{"queue too large", apipool.WithAlerts(f, apipool.AlertSettings{QueueSize: 1<<20 + 1}), "WithAlerts.QueueSize"},
		{"negative queue", apipool.WithAlerts(f, apipool.AlertSettings{QueueSize: -1}), "WithAlerts.QueueSize"},
	} {
		_, err := apipool.New(keys(1), c.opt)
		var ce *apipool.ConfigError
		if !errors.Is(err, apipool.ErrInvalidConfig) || !errors.As(err, &ce) || ce.Field != c.field {
			t.Errorf("%s: err %v, want a ConfigError on %s", c.name, err, c.field)
		}
	}
	if s := (&apipool.Transport{}).AlertStats(); s != (apipool.AlertStats{}) {
		t.Errorf("stats without alerts: %+v", s)
	}
}

// Every kind has a name that ParseAlertKind and JSON read back.
func TestAlertKindNames(t *testing.T) {
	seen := map[string]bool{}
	for _, k := range apipool.AlertKinds() {
		name := k.String()
		if name == "unknown" || seen[name] {
			t.Fatalf("kind %d: name %q", k, name)
		}
		seen[name] = true
		back, err := apipool.ParseAlertKind(name)
		if err != nil || back != k {
			t.Errorf("ParseAlertKind(%q) = %v, %v", name, back, err)
		}
		j, _ := json.Marshal(k)
		var k2 apipool.AlertKind
		if err := json.Unmarshal(j, &k2); err != nil || k2 != k || string(j) != `"`+name+`"` {
			t.Errorf("JSON %s -> %v, %v", j, k2, err)
		}
	}
	if len(seen) != 9 {
		t.Errorf("%d kinds, want 9", len(seen))
	}
	if _, err := apipool.ParseAlertKind("key.disabld"); !errors.Is(err, apipool.ErrInvalidConfig) || !strings.Contains(err.Error(), "key.disabled") {
		t.Errorf("ParseAlertKind of a typo: %v", err)
	}
	if apipool.AlertKind(0).String() != "unknown" || apipool.AlertKind(200).String() != "unknown" {
		t.Error("out-of-range kinds should read unknown")
	}
	if _, err := json.Marshal(apipool.AlertKind(0)); err == nil {
		t.Error("marshalling kind 0 should fail")
	}
}

// A cooldown extended while it lasts (another request in flight with the
// key answered 429 later) is not alerted twice.
func TestAlertsCoolingExtendedOnce(t *testing.T) {
	clk := newClock()
	arrived, proceed := make(chan struct{}, 2), make(chan struct{})
	h := func(in seen) reply {
		if in.Secret != "s0" {
			return reply{Status: 200}
		}
		arrived <- struct{}{}
		<-proceed
		return reply{Status: 429, Header: hdr("Retry-After", "600")}
	}
	log := newAlertLog()
	sel := &orderSelector{}
	sel.Set("k0", "k1")
	p := mustNew(t, keys(2), apipool.WithBase(newUpstream(h)), apipool.WithClock(clk), apipool.WithSelector(sel),
		apipool.WithAlerts(log.f, apipool.AlertSettings{}))
	r1 := goRoundTrip(p, newGet(t, "http://api.test/1"))
	await(t, arrived, "the first request")
	r2 := goRoundTrip(p, newGet(t, "http://api.test/2"))
	await(t, arrived, "the second request")
	proceed <- struct{}{}
	if a := log.next(t); a.Kind != apipool.AlertKeyCooling || !a.Until.Equal(t0.Add(10*time.Minute)) {
		t.Fatalf("alert %+v", a)
	}
	clk.Advance(time.Second)
	proceed <- struct{}{} // answered a second later: the cooldown moves to t0+10m1s
	for _, r := range []<-chan result{r1, r2} {
		if res := await(t, r, "a request"); res.err != nil || res.resp.StatusCode != 200 {
			t.Fatalf("%v %v", res.resp, res.err)
		}
	}
	if s := stateOf(p, "k0"); !s.CoolingUntil.Equal(t0.Add(10*time.Minute + time.Second)) {
		t.Fatalf("k0 cools until %v, want t0+10m1s", s.CoolingUntil)
	}
	closePool(t, p)
	if got := log.kinds(); !slices.Equal(got, []string{"key.cooling k0"}) {
		t.Fatalf("alerts %q, want one", got)
	}
}
