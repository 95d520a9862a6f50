package redisstate_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/apipool-ng/apipool"
	"github.com/apipool-ng/apipool/internal/fakeclock"
	"github.com/apipool-ng/apipool/internal/redistest"
)

// sendLog is the upstream of the window tests: it answers 200 at once and
// records when each request reached it, on its clock.
type sendLog struct {
	now func() time.Time
	mu  sync.Mutex
	at  []time.Time
}

func (s *sendLog) RoundTrip(r *http.Request) (*http.Response, error) {
	at := s.now()
	s.mu.Lock()
	s.at = append(s.at, at)
	s.mu.Unlock()
	return &http.Response{StatusCode: 200, Header: http.Header{}, Body: io.NopCloser(strings.NewReader("")), Request: r}, nil
}

// times returns the recorded times, in order.
func (s *sendLog) times() []time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	at := slices.Clone(s.at)
	slices.SortFunc(at, func(a, b time.Time) int { return a.Compare(b) })
	return at
}

// worstWindow slides a window of length w over every request of at
// (sorted) and returns the most requests any one window held, and where
// that window starts. A window [a, a+w) holding the most requests can
// always start at a request, so those are the only starts to try.
func worstWindow(at []time.Time, w time.Duration) (int, time.Time) {
	worst, from := 0, time.Time{}
	j := 0
	for i := range at {
		if j < i {
			j = i
		}
		for j < len(at) && at[j].Sub(at[i]) < w {
			j++
		}
		if j-i > worst {
			worst, from = j-i, at[i]
		}
	}
	return worst, from
}

// windowPools returns n pools (replicas: each has its own client and
// store) sharing one key with limits k through Redis, on clock clk (nil:
// the real clock), sending to up.
func windowPools(t *testing.T, srv *redistest.Server, n int, k apipool.Key, up http.RoundTripper, opts ...apipool.Option) []*apipool.Transport {
	t.Helper()
	prefix := testPrefix(t)
	var pools []*apipool.Transport
	for range n {
		r := newReplica(t, srv, prefix)
		p, err := apipool.New([]apipool.Key{k}, append([]apipool.Option{apipool.WithBase(up), apipool.WithSharedState(r.Store)}, opts...)...)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { p.Close(context.Background()) })
		pools = append(pools, p)
	}
	return pools
}

// roundTrip sends one request through p: true when it went out, false
// when no key was free (ErrNoKeyAvailable); any other error fails t.
func roundTrip(t *testing.T, p *apipool.Transport) bool {
	req, _ := http.NewRequest(http.MethodGet, "http://api.test/v1/things", nil)
	resp, err := p.RoundTrip(req)
	if errors.Is(err, apipool.ErrNoKeyAvailable) {
		return false
	}
	if err != nil {
		t.Error(err)
		return false
	}
	resp.Body.Close()
	return true
}

// TestWindowsThreePoolsRealClock: three pools (replicas) share one key with
// PerSecond 20 through one Redis, on the real clock, each sending from four
// goroutines as fast as the limit allows for three seconds. The upstream
// records when each request reached it; no window of a second holds more
// than 20.
func TestWindowsThreePoolsRealClock(t *testing.T) {
	if testing.Short() {
		t.Skip("runs for 3 s")
	}
	srv := redistest.Shared(t)
	const limit, run = 20, 3 * time.Second
	up := &sendLog{now: time.Now}
	pools := windowPools(t, srv, 3, apipool.Key{ID: "k", Secret: "s", PerSecond: limit}, up)
	end := time.Now().Add(run)
	var wg sync.WaitGroup
	for i := range 12 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Now().Before(end) {
				roundTrip(t, pools[i%3])
			}
		}()
	}
	wg.Wait()
	at := up.times()
	worst, from := worstWindow(at, time.Second)
	t.Logf("PerSecond %d, 3 pools, real clock: %d requests in %v, worst second %d (from +%v)", limit, len(at), run, worst, from.Sub(at[0]))
	if worst > limit {
		t.Errorf("a second held %d requests, want at most %d", worst, limit)
	}
	// At least the first second's worth and the next two (but for the
	// deadlines' slack): the limit was used, not only kept.
	if len(at) < 2*limit {
		t.Errorf("%d requests in %v, want at least %d", len(at), run, 2*limit)
	}
}

// stepped runs pools on a fake clock for d in steps: in each step, every
// pool sends from two goroutines until the limits refuse, then the clock
// moves on. The clock never moves while a request is between its key's
// reservation and the upstream, so the recorded times are exact.
func stepped(t *testing.T, clk *fakeclock.Clock, pools []*apipool.Transport, d, step time.Duration) {
	t.Helper()
	end := clk.Now().Add(d)
	for clk.Now().Before(end) {
		var wg sync.WaitGroup
		for i := range 2 * len(pools) {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for roundTrip(t, pools[i%len(pools)]) {
				}
			}()
		}
		wg.Wait()
		if t.Failed() {
			return
		}
		clk.Advance(step)
	}
}

// TestWindowsFakeClock: one pool and three pools sharing a key through
// Redis, on a fake clock that moves in steps, for several windows of each
// limit (five minutes of PerMinute take about a second); every window of
// the run is checked, and the limit must have been used.
func TestWindowsFakeClock(t *testing.T) {
	srv := redistest.Shared(t)
	for _, c := range []struct {
		name      string
		key       apipool.Key
		w         time.Duration // the window
		limit     int           // at most this many in any window
		run, step time.Duration
		pools     int
	}{
		{"PerSecond 20, 1 pool", apipool.Key{PerSecond: 20}, time.Second, 20, 5 * time.Second, 10 * time.Millisecond, 1},
		{"PerSecond 20, 3 pools", apipool.Key{PerSecond: 20}, time.Second, 20, 5 * time.Second, 10 * time.Millisecond, 3},
		{"PerSecond 200, 3 pools", apipool.Key{PerSecond: 200}, time.Second, 200, 3 * time.Second, 5 * time.Millisecond, 3},
		{"PerMinute 60, 1 pool", apipool.Key{PerMinute: 60}, time.Minute, 60, 5 * time.Minute, 250 * time.Millisecond, 1},
		{"PerMinute 60, 3 pools", apipool.Key{PerMinute: 60}, time.Minute, 60, 5 * time.Minute, 250 * time.Millisecond, 3},
		{"PerMinute 1200, 3 pools", apipool.Key{PerMinute: 1200}, time.Minute, 1200, 2 * time.Minute, 100 * time.Millisecond, 3},
		{"PerSecond 2.5, 3 pools", apipool.Key{PerSecond: 2.5}, time.Second, 2, 5 * time.Second, 10 * time.Millisecond, 3},
		{"PerSecond 0.5, 3 pools", apipool.Key{PerSecond: 0.5}, 2 * time.Second, 1, 10 * time.Second, 100 * time.Millisecond, 3},
	} {
		t.Run(c.name, func(t *testing.T) {
			clk := fakeclock.New(time.Now().Truncate(time.Second))
			up := &sendLog{now: clk.Now}
			k := c.key
			k.ID, k.Secret = "k", "s"
			pools := windowPools(t, srv, c.pools, k, up, apipool.WithClock(clk), apipool.WithMaxWait(0))
			stepped(t, clk, pools, c.run, c.step)
			at := up.times()
			worst, from := worstWindow(at, c.w)
			t.Logf("%s: %d requests in %v, worst window %d (from +%v)", c.name, len(at), c.run, worst, from.Sub(at[0]))
			if worst > c.limit {
				t.Errorf("a window of %v held %d requests, want at most %d", c.w, worst, c.limit)
			}
			// Every window's worth, but for what the deadlines given to
			// Takes keep counted (2 ms a request, 100 ms a block).
			if min := c.limit * int(c.run/c.w) * 9 / 10; len(at) < min {
				t.Errorf("%d requests in %v, want at least %d", len(at), c.run, min)
			}
		})
	}
}
