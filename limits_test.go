package apipool_test

import (
	"errors"
	"io"
	"net/http"
	"reflect"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/apipool-ng/apipool"
)

// An open response body holds its key's in-flight slot until it is closed
// or read to the end.
func TestMaxInFlight(t *testing.T) {
	t.Parallel()
	up := newUpstream(func(s seen) reply { return reply{Status: 200, Body: "hello " + s.Secret} })
	p := mustNew(t, []apipool.Key{{ID: "k0", Secret: "s0", MaxInFlight: 2}}, apipool.WithBase(up), apipool.WithClock(newClock()), apipool.WithMaxWait(0))
	open := func() *http.Response {
		t.Helper()
		resp, err := p.RoundTrip(newGet(t, "http://api.test/"))
		if err != nil {
			t.Fatal(err)
		}
		return resp
	}
	r1, r2 := open(), open()
	if s := p.Snapshot()[0]; s.InFlight != 2 || s.State != "limited" {
		t.Fatalf("snapshot %+v, want 2 in flight, limited", s)
	}
	_, _, err := do(t, p)
	if nk := noKey(t, err); nk.Limited != 1 {
		t.Fatalf("%+v, want 1 key at a limit", nk)
	}
	if len(up.Calls()) != 2 {
		t.Fatal("a third request went out")
	}

	r1.Body.Close()
	r3 := open() // the slot r1 freed
	_, _, err = do(t, p)
	noKey(t, err)

	if b, _ := io.ReadAll(r2.Body); string(b) != "hello s0" {
		t.Fatalf("body %q", b)
	}
	// r2 read to EOF, not closed: its slot is free.
	r4 := open()
	r3.Body.Close()
	r4.Body.Close()
	r2.Body.Close() // a late Close frees nothing twice
	if s := p.Snapshot()[0]; s.InFlight != 0 || s.State != "active" {
		t.Fatalf("snapshot %+v, want 0 in flight", s)
	}
	if resp, _ := mustDo(t, p); resp.StatusCode != 200 {
		t.Fatal(resp.StatusCode)
	}
}

// A key at its in-flight cap is skipped for another.
func TestMaxInFlightMovesToAnotherKey(t *testing.T) {
	t.Parallel()
	ks := keys(2)
	ks[0].MaxInFlight = 1
	up := newUpstream(nil)
	sel := &orderSelector{}
	sel.Set("k0", "k1")
	p := mustNew(t, ks, apipool.WithBase(up), apipool.WithSelector(sel))
	held, err := p.RoundTrip(newGet(t, "http://api.test/"))
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 3; i++ {
		mustDo(t, p)
	}
	held.Body.Close()
	mustDo(t, p)
	want := []string{"s0", "s1", "s1", "s1", "s0"}
	if got := up.Secrets(); !reflect.DeepEqual(got, want) {
		t.Fatalf("picks %v, want %v", got, want)
	}
}

// Rate limits follow the pool's clock, and never let more than the limit
// through in any window of their length (a sliding window, not a token
// bucket that would let twice the limit through in the first window).
func TestPerSecondLimit(t *testing.T) {
	t.Parallel()
	clk := newClock()
	up := newUpstream(nil)
	p := mustNew(t, []apipool.Key{{ID: "k0", Secret: "s0", PerSecond: 2}}, apipool.WithBase(up), apipool.WithClock(clk), apipool.WithMaxWait(0))
	mustDo(t, p)
	clk.Advance(400 * time.Millisecond)
	mustDo(t, p)
	_, _, err := do(t, p)
	nk := noKey(t, err)
	if nk.Limited != 1 || !nk.RetryAt.Equal(t0.Add(time.Second)) {
		t.Fatalf("%+v, want RetryAt when the first request leaves the window, 1s after it", nk)
	}
	if len(nk.Held) != 1 || nk.Held[0].KeyID != "k0" || nk.Held[0].Reason != "rate limit" || !nk.Held[0].Until.Equal(nk.RetryAt) {
		t.Fatalf("held %+v, want k0 held by its rate limit until RetryAt", nk.Held)
	}
	if s := p.Snapshot()[0]; s.State != "limited" {
		t.Fatalf("state %q", s.State)
	}
	clk.Advance(599 * time.Millisecond)
	_, _, err = do(t, p)
	noKey(t, err)
	clk.Advance(time.Millisecond) // 1s after the first: one slot frees
	mustDo(t, p)
	_, _, err = do(t, p)
	noKey(t, err)
	clk.Advance(400 * time.Millisecond) // 1s after the second
	mustDo(t, p)
	if n := len(up.Calls()); n != 4 {
		t.Fatalf("%d requests went out, want 4", n)
	}
}

func TestPerMinuteLimit(t *testing.T) {
	t.Parallel()
	clk := newClock()
	up := newUpstream(nil)
	p := mustNew(t, []apipool.Key{{ID: "k0", Secret: "s0", PerMinute: 3}}, apipool.WithBase(up), apipool.WithClock(clk), apipool.WithMaxWait(0))
	for i := 0; i < 3; i++ {
		mustDo(t, p)
		clk.Advance(10 * time.Second)
	}
	_, _, err := do(t, p)
	nk := noKey(t, err)
	if !nk.RetryAt.Equal(t0.Add(time.Minute)) {
		t.Fatalf("RetryAt %v, want a minute after the first request", nk.RetryAt)
	}
	clk.Advance(29 * time.Second) // t0+59s: the first is still in the window
	_, _, err = do(t, p)
	noKey(t, err)
	clk.Advance(time.Second)
	mustDo(t, p)
	_, _, err = do(t, p)
	noKey(t, err)
}

// In no window of a minute do more than PerMinute requests go out, however
// the requests come: the token bucket it replaced let twice the limit
// through in the first minute.
func TestPerMinuteSlidingWindow(t *testing.T) {
	t.Parallel()
	clk := newClock()
	up := newUpstream(nil)
	const limit = 10
	p := mustNew(t, []apipool.Key{{ID: "k0", Secret: "s0", PerMinute: limit}}, apipool.WithBase(up), apipool.WithClock(clk), apipool.WithMaxWait(0))
	var sent []time.Time
	for step := 0; step < 600; step++ { // ten minutes in steps of a second
		for i := 0; i < 3; i++ {
			if resp, _, err := do(t, p); err == nil {
				resp.Body.Close()
				sent = append(sent, clk.Now())
			}
		}
		clk.Advance(time.Second)
	}
	for i := range sent {
		n := 0
		for j := i; j < len(sent) && sent[j].Sub(sent[i]) < time.Minute; j++ {
			n++
		}
		if n > limit {
			t.Fatalf("%d requests in the minute from %v, want at most %d", n, sent[i], limit)
		}
	}
	if len(sent) < 10*limit {
		t.Fatalf("%d requests in ten minutes, want %d (the limit every minute)", len(sent), 10*limit)
	}
}

// Within WithMaxWait, a request waits for its rate limit to allow it.
func TestRateLimitWait(t *testing.T) {
	t.Parallel()
	clk := newClock()
	up := newUpstream(nil)
	p := mustNew(t, []apipool.Key{{ID: "k0", Secret: "s0", PerSecond: 1}}, apipool.WithBase(up), apipool.WithClock(clk))
	mustDo(t, p)
	ch := goRoundTrip(p, newGet(t, "http://api.test/"))
	waitTimer(t, clk)
	clk.Advance(time.Second + 10*time.Millisecond)
	if r := await(t, ch, "rate-limited request"); r.err != nil || r.resp.StatusCode != 200 {
		t.Fatalf("%+v", r)
	}
}

// A daily quota resets at midnight UTC by default.
func TestPerDayResetsAtMidnightUTC(t *testing.T) {
	t.Parallel()
	start := time.Date(2026, 3, 1, 23, 59, 0, 0, time.UTC)
	midnight := time.Date(2026, 3, 2, 0, 0, 0, 0, time.UTC)
	clk := newClockAt(start)
	up := newUpstream(nil)
	p := mustNew(t, []apipool.Key{{ID: "k0", Secret: "s0", PerDay: 2}}, apipool.WithBase(up), apipool.WithClock(clk), apipool.WithMaxWait(0))
	if q := p.Snapshot()[0].QuotaLeft; q != 2 {
		t.Fatalf("quota left %d, want 2", q)
	}
	mustDo(t, p)
	mustDo(t, p)
	if s := p.Snapshot()[0]; s.QuotaLeft != 0 || s.State != "limited" {
		t.Fatalf("snapshot %+v", s)
	}
	_, _, err := do(t, p)
	if nk := noKey(t, err); !nk.RetryAt.Equal(midnight) || nk.Limited != 1 {
		t.Fatalf("%+v, want RetryAt at midnight UTC", nk)
	}
	clk.Set(midnight.Add(-time.Millisecond))
	_, _, err = do(t, p)
	noKey(t, err)
	clk.Set(midnight)
	mustDo(t, p)
	if q := p.Snapshot()[0].QuotaLeft; q != 1 {
		t.Fatalf("quota left %d after the reset and one request, want 1", q)
	}
	if n := len(up.Calls()); n != 3 {
		t.Fatalf("%d requests went out, want 3", n)
	}
}

// WithQuotaLocation moves the start of the quota day.
func TestPerDayWithQuotaLocation(t *testing.T) {
	t.Parallel()
	loc := time.FixedZone("UTC-5", -5*3600)
	start := time.Date(2026, 3, 1, 23, 0, 0, 0, time.UTC) // 18:00 there
	localMidnight := time.Date(2026, 3, 2, 0, 0, 0, 0, loc)
	clk := newClockAt(start)
	up := newUpstream(nil)
	p := mustNew(t, []apipool.Key{{ID: "k0", Secret: "s0", PerDay: 1}}, apipool.WithBase(up), apipool.WithClock(clk), apipool.WithMaxWait(0), apipool.WithQuotaLocation(loc))
	mustDo(t, p)
	_, _, err := do(t, p)
	if nk := noKey(t, err); !nk.RetryAt.Equal(localMidnight) {
		t.Fatalf("RetryAt %v, want %v", nk.RetryAt, localMidnight)
	}
	clk.Set(time.Date(2026, 3, 2, 0, 0, 0, 0, time.UTC)) // UTC midnight: no reset here
	_, _, err = do(t, p)
	noKey(t, err)
	clk.Set(localMidnight)
	mustDo(t, p)
}

// A daily quota spread over keys: exhausting one moves requests to the
// others, and the pool's total is the sum.
func TestPerDayAcrossKeys(t *testing.T) {
	t.Parallel()
	ks := keys(3)
	for i := range ks {
		ks[i].PerDay = 4
	}
	up := newUpstream(nil)
	p := mustNew(t, ks, apipool.WithBase(up), apipool.WithClock(newClock()), apipool.WithMaxWait(0))
	for i := 0; i < 12; i++ {
		mustDo(t, p)
	}
	_, _, err := do(t, p)
	if nk := noKey(t, err); nk.Limited != 3 {
		t.Fatalf("%+v", nk)
	}
	for i := 0; i < 3; i++ {
		if n := up.Count("s" + itoa(i)); n != 4 {
			t.Fatalf("key %d used %d times, want 4", i, n)
		}
	}
}

// sendTimes is a base transport that records, on its clock, when each
// request reached it, and answers 200.
type sendTimes struct {
	now func() time.Time
	mu  sync.Mutex
	at  []time.Time
}

func (s *sendTimes) RoundTrip(r *http.Request) (*http.Response, error) {
	at := s.now()
	s.mu.Lock()
	s.at = append(s.at, at)
	s.mu.Unlock()
	return &http.Response{StatusCode: 200, Header: http.Header{}, Body: http.NoBody, Request: r}, nil
}

// times returns the recorded times, in order.
func (s *sendTimes) times() []time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	at := slices.Clone(s.at)
	slices.SortFunc(at, func(a, b time.Time) int { return a.Compare(b) })
	return at
}

// worstWindow slides a window of length w over the sorted times at and
// returns the most that any one window [a, a+w) holds. A fullest window
// can always start at a request, so those are the starts tried.
func worstWindow(at []time.Time, w time.Duration) int {
	worst, j := 0, 0
	for i := range at {
		j = max(j, i)
		for j < len(at) && at[j].Sub(at[i]) < w {
			j++
		}
		worst = max(worst, j-i)
	}
	return worst
}

// sendStepped drives pools on the fake clock for d: in each step, two
// goroutines per pool send until the limits refuse, then the clock moves
// by step. Time never moves while a request is on its way, so the times
// the upstream records are the times the limits counted.
func sendStepped(t *testing.T, clk clockAdapter, pools []*apipool.Transport, d, step time.Duration) {
	t.Helper()
	end := clk.Now().Add(d)
	for clk.Now().Before(end) {
		if !sendUntilRefused(t, pools) {
			return
		}
		clk.Advance(step)
	}
}

// sendUntilRefused sends from two goroutines per pool until every one is
// refused (ErrNoKeyAvailable); it reports false when a request failed
// otherwise (reported as a test error).
func sendUntilRefused(t *testing.T, pools []*apipool.Transport) bool {
	t.Helper()
	var wg sync.WaitGroup
	for i := range 2 * len(pools) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				resp, err := pools[i%len(pools)].RoundTrip(newGet(t, "http://api.test/"))
				if err != nil {
					if !errors.Is(err, apipool.ErrNoKeyAvailable) {
						t.Error(err)
					}
					return
				}
				resp.Body.Close()
			}
		}()
	}
	wg.Wait()
	return !t.Failed()
}

// TestRateLimitWindowsOnePool: one pool sending as fast as its key's rate
// limits allow, from two goroutines, on a fake clock: no window of each
// limit's length holds more than the limit, wherever it starts, and every
// window's worth is used (so the test does not pass by sending nothing).
// PerSecond drops a fraction above 1, and below 1 allows one request in
// 1/PerSecond seconds.
func TestRateLimitWindowsOnePool(t *testing.T) {
	t.Parallel()
	type win struct {
		w     time.Duration
		limit int
	}
	for _, c := range []struct {
		name      string
		key       apipool.Key
		wins      []win
		run, step time.Duration
		want      int // requests sent in all
	}{
		{"PerSecond 20", apipool.Key{PerSecond: 20}, []win{{time.Second, 20}}, 10 * time.Second, 10 * time.Millisecond, 200},
		{"PerSecond 2.5", apipool.Key{PerSecond: 2.5}, []win{{time.Second, 2}}, 10 * time.Second, 10 * time.Millisecond, 20},
		{"PerSecond 0.5", apipool.Key{PerSecond: 0.5}, []win{{2 * time.Second, 1}, {time.Second, 1}}, 10 * time.Second, 100 * time.Millisecond, 5},
		{"PerMinute 60", apipool.Key{PerMinute: 60}, []win{{time.Minute, 60}}, 5 * time.Minute, 250 * time.Millisecond, 300},
		{"PerSecond 20 and PerMinute 600", apipool.Key{PerSecond: 20, PerMinute: 600}, []win{{time.Second, 20}, {time.Minute, 600}}, 2 * time.Minute, 50 * time.Millisecond, 1200},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			clk := newClock()
			up := &sendTimes{now: clk.Now}
			k := c.key
			k.ID, k.Secret = "k0", "s0"
			p := mustNew(t, []apipool.Key{k}, apipool.WithBase(up), apipool.WithClock(clk), apipool.WithMaxWait(0))
			sendStepped(t, clk, []*apipool.Transport{p}, c.run, c.step)
			at := up.times()
			for _, w := range c.wins {
				if worst := worstWindow(at, w.w); worst > w.limit {
					t.Errorf("a window of %v held %d requests, want at most %d", w.w, worst, w.limit)
				}
			}
			if len(at) != c.want {
				t.Errorf("%d requests sent in %v, want %d", len(at), c.run, c.want)
			}
		})
	}
}
