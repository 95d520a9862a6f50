package redisstate_test

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/apipool-ng/apipool/internal/redistest"
	"github.com/apipool-ng/apipool/redisstate"
	"github.com/apipool-ng/apipool/sharedstate"
)

// t0 is a fixed instant for tests that pass now: day 20454 in UTC.
var t0 = time.Date(2026, 1, 1, 10, 0, 0, 0, time.UTC)

func day(t time.Time) uint64 { return uint64(t.Unix() / 86400) }

// TestTakeInvalidAndUnlimited: bad arguments are refused, and a key
// without limits is granted what it asks, without a round trip (the
// client's server does not exist).
func TestTakeInvalidAndUnlimited(t *testing.T) {
	rdb := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1"})
	defer rdb.Close()
	s, _ := redisstate.New(rdb)
	ctx := context.Background()
	for name, c := range map[string]struct {
		id string
		l  sharedstate.Limits
		n  int
	}{
		"n 0":           {"k", sharedstate.Limits{PerDay: 5}, 0},
		"n negative":    {"k", sharedstate.Limits{PerDay: 5}, -1},
		"empty id":      {"", sharedstate.Limits{PerDay: 5}, 1},
		"negative rate": {"k", sharedstate.Limits{PerSecond: -1}, 1},
		"NaN rate":      {"k", sharedstate.Limits{PerSecond: math.NaN()}, 1},
		"infinite rate": {"k", sharedstate.Limits{PerSecond: math.Inf(1)}, 1},
		"negative min":  {"k", sharedstate.Limits{PerMinute: -1}, 1},
		"negative day":  {"k", sharedstate.Limits{PerDay: -1}, 1},
	} {
		if g, _, err := s.Take(ctx, c.id, c.l, t0, c.n); !errors.Is(err, redisstate.ErrInvalid) || g != 0 {
			t.Errorf("%s: granted %d, %v; want ErrInvalid", name, g, err)
		}
	}
	if g, at, err := s.Take(ctx, "k", sharedstate.Limits{Day: 7}, t0, 25); g != 25 || !at.IsZero() || err != nil {
		t.Errorf("no limits: %d, %v, %v", g, at, err)
	}
	if st := s.Stats(); st.Errors != 0 {
		t.Errorf("stats %+v", st)
	}
}

func TestTakeDailyQuota(t *testing.T) {
	srv := redistest.Shared(t)
	a := newReplica(t, srv, testPrefix(t))
	ctx := ctxT(t)
	l := sharedstate.Limits{PerDay: 10, Day: day(t0)}
	var got []int
	for range 5 {
		g, at, err := a.Take(ctx, "k", l, t0, 3)
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, g)
		if g == 0 {
			// Used up: the next quarter hour, when a day may begin in
			// some time zone.
			if want := t0.Add(15 * time.Minute); !at.Equal(want) {
				t.Errorf("retryAt %v, want %v", at, want)
			}
		} else if !at.IsZero() {
			t.Errorf("retryAt %v with a grant", at)
		}
	}
	if want := []int{3, 3, 3, 1, 0}; !equalInts(got, want) {
		t.Errorf("grants %v, want %v", got, want)
	}
	// Other keys and other days count apart.
	if g, _, _ := a.Take(ctx, "k2", l, t0, 4); g != 4 {
		t.Errorf("other key: %d", g)
	}
	next := l
	next.Day++
	if g, _, _ := a.Take(ctx, "k", next, t0.Add(24*time.Hour), 4); g != 4 {
		t.Errorf("next day: %d", g)
	}
	// The counter outlives the day in every time zone, and then goes.
	ttl, err := a.rdb.PTTL(ctx, "{"+a.Prefix()+"}:day:20454:k").Result()
	if err != nil || ttl < 47*time.Hour || ttl > 48*time.Hour {
		t.Errorf("day counter TTL %v (%v)", ttl, err)
	}
}

// TestTakeQuotaAcrossReplicas: three replicas, each with its own client and
// eight goroutines, take blocks of a daily quota at once: exactly the quota
// is granted, no more, no less.
func TestTakeQuotaAcrossReplicas(t *testing.T) {
	srv := redistest.Shared(t)
	prefix := testPrefix(t)
	const quota = 1000
	l := sharedstate.Limits{PerDay: quota, Day: day(t0)}
	var granted, calls atomic.Int64
	var wg sync.WaitGroup
	for r := range 3 {
		s := newReplica(t, srv, prefix)
		for g := range 8 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				rnd := rand.New(rand.NewPCG(uint64(r), uint64(g)))
				for {
					n := 1 + rnd.IntN(7)
					got, _, err := s.Take(context.Background(), "shared", l, t0, n)
					calls.Add(1)
					if err != nil {
						t.Error(err)
						return
					}
					if got < 0 || got > n {
						t.Errorf("granted %d of %d", got, n)
					}
					granted.Add(int64(got))
					if got == 0 {
						return
					}
				}
			}()
		}
	}
	wg.Wait()
	if g := granted.Load(); g != quota {
		t.Errorf("granted %d in all, want exactly %d", g, quota)
	}
	t.Logf("%d takes", calls.Load())
}

// TestTakePerSecond: a sliding window of a second: the limit at once,
// then nothing until the first leaves the window, a second later.
func TestTakePerSecond(t *testing.T) {
	srv := redistest.Shared(t)
	a := newReplica(t, srv, testPrefix(t))
	ctx := ctxT(t)
	l := sharedstate.Limits{PerSecond: 5}
	take := func(now time.Time, n int) (int, time.Time) {
		t.Helper()
		g, at, err := a.Take(ctx, "k", l, now, n)
		if err != nil {
			t.Fatal(err)
		}
		return g, at
	}
	if g, _ := take(t0, 3); g != 3 {
		t.Errorf("first: %d", g)
	}
	if g, _ := take(t0.Add(300*time.Millisecond), 10); g != 2 {
		t.Errorf("the rest of the window: %d", g)
	}
	// Full until the three of t0 leave the window, a second after them.
	g, at := take(t0.Add(300*time.Millisecond), 1)
	if want := t0.Add(time.Second); g != 0 || !at.Equal(want) {
		t.Errorf("full: %d, retry at +%v, want +%v", g, at.Sub(t0), want.Sub(t0))
	}
	if g, _ := take(t0.Add(time.Second-time.Microsecond), 1); g != 0 {
		t.Errorf("1µs early: %d", g)
	}
	if g, _ := take(at, 5); g != 3 {
		t.Errorf("at retryAt: %d, want the 3 that left", g)
	}
	g, at = take(at, 1)
	if want := t0.Add(1300 * time.Millisecond); g != 0 || !at.Equal(want) {
		t.Errorf("full again: %d, retry at +%v, want +%v", g, at.Sub(t0), want.Sub(t0))
	}
	// Long after, the whole window is free, and no more.
	if g, _ := take(t0.Add(10*time.Second), 10); g != 5 {
		t.Errorf("after a rest: %d", g)
	}
	// The state expires 2 to 3 seconds after its newest request left the
	// window (a second after it).
	for _, k := range []string{"second", "second-n"} {
		ttl, err := a.rdb.PTTL(ctx, "{"+a.Prefix()+"}:"+k+":k").Result()
		if err != nil || ttl <= 2*time.Second || ttl > 3*time.Second {
			t.Errorf("%s TTL %v (%v)", k, ttl, err)
		}
	}
	if n, err := a.rdb.Exists(ctx, "{"+a.Prefix()+"}:minute:k", "{"+a.Prefix()+"}:minute-n:k").Result(); err != nil || n != 0 {
		t.Errorf("a minute window without PerMinute: %d, %v", n, err)
	}
}

// TestTakeFractionalPerSecond: a fraction above 1 is dropped (2.5 allows 2
// in any second); below 1, one request in any 1/PerSecond seconds.
func TestTakeFractionalPerSecond(t *testing.T) {
	a := newReplica(t, redistest.Shared(t), testPrefix(t))
	ctx := ctxT(t)
	for _, c := range []struct {
		p     float64
		burst int
		free  time.Duration
	}{
		{2.5, 2, time.Second},
		{1.5, 1, time.Second},
		{0.5, 1, 2 * time.Second},
		{0.25, 1, 4 * time.Second},
	} {
		id := fmt.Sprint(c.p)
		l := sharedstate.Limits{PerSecond: c.p}
		g, _, err := a.Take(ctx, id, l, t0, 10)
		if err != nil || g != c.burst {
			t.Errorf("PerSecond %v: granted %d, %v; want %d", c.p, g, err, c.burst)
		}
		g, at, _ := a.Take(ctx, id, l, t0.Add(c.free/2), 1)
		if g != 0 || !at.Equal(t0.Add(c.free)) {
			t.Errorf("PerSecond %v: granted %d, retry at +%v; want 0, +%v", c.p, g, at.Sub(t0), c.free)
		}
	}
}

// TestTakeLease: the requests granted count as sent at now+Lease, so they
// stay in the window until a window after that.
func TestTakeLease(t *testing.T) {
	a := newReplica(t, redistest.Shared(t), testPrefix(t))
	ctx := ctxT(t)
	l := sharedstate.Limits{PerSecond: 4, Lease: 100 * time.Millisecond}
	if g, _, err := a.Take(ctx, "k", l, t0, 3); err != nil || g != 3 {
		t.Fatalf("granted %d, %v", g, err)
	}
	if g, _, _ := a.Take(ctx, "k", l, t0.Add(50*time.Millisecond), 3); g != 1 {
		t.Fatalf("the window's last: %d", g)
	}
	// The three of t0 count at +100ms and leave the window at +1.1s, the
	// one of +50ms at +1.15s.
	for _, c := range []struct {
		at         time.Duration
		want       int
		retryAfter time.Duration
	}{
		{500 * time.Millisecond, 0, 1100 * time.Millisecond},
		{1099 * time.Millisecond, 0, 1100 * time.Millisecond},
		{1100 * time.Millisecond, 3, 0},
		{1120 * time.Millisecond, 0, 1150 * time.Millisecond},
		{1150 * time.Millisecond, 1, 0},
	} {
		g, at, err := a.Take(ctx, "k", l, t0.Add(c.at), 3)
		if err != nil || g != c.want || (g == 0 && !at.Equal(t0.Add(c.retryAfter))) {
			t.Errorf("at +%v: granted %d, retry at +%v, %v; want %d, +%v", c.at, g, at.Sub(t0), err, c.want, c.retryAfter)
		}
	}
	// A deadline between microseconds counts at the next one, never
	// before it.
	sub := sharedstate.Limits{PerSecond: 1, Lease: 1500 * time.Nanosecond}
	if g, _, err := a.Take(ctx, "sub", sub, t0, 1); err != nil || g != 1 {
		t.Fatalf("granted %d, %v", g, err)
	}
	if g, at, _ := a.Take(ctx, "sub", sub, t0.Add(time.Second+time.Microsecond), 1); g != 0 || !at.Equal(t0.Add(time.Second+2*time.Microsecond)) {
		t.Errorf("granted %d, retry at +%v; want 0, +1.000002s", g, at.Sub(t0))
	}
	// Invalid: a negative lease.
	if _, _, err := a.Take(ctx, "k", sharedstate.Limits{PerSecond: 1, Lease: -1}, t0, 1); !errors.Is(err, redisstate.ErrInvalid) {
		t.Errorf("negative lease: %v", err)
	}
}

// A limit lowered below what its window holds frees a request once enough
// of the oldest left: here 8 of 10, the last of them at +200ms.
func TestTakeLimitLowered(t *testing.T) {
	a := newReplica(t, redistest.Shared(t), testPrefix(t))
	ctx := ctxT(t)
	for i, g := range []int{4, 3, 3} {
		if got, _, err := a.Take(ctx, "k", sharedstate.Limits{PerSecond: 10}, t0.Add(time.Duration(i)*100*time.Millisecond), g); err != nil || got != g {
			t.Fatalf("take %d: %d, %v", i, got, err)
		}
	}
	g, at, err := a.Take(ctx, "k", sharedstate.Limits{PerSecond: 3}, t0.Add(300*time.Millisecond), 1)
	if err != nil || g != 0 || !at.Equal(t0.Add(1200*time.Millisecond)) {
		t.Fatalf("lowered: %d, retry at +%v, %v; want 0, +1.2s", g, at.Sub(t0), err)
	}
	if g, _, _ := a.Take(ctx, "k", sharedstate.Limits{PerSecond: 3}, t0.Add(1200*time.Millisecond), 5); g != 3 {
		t.Fatalf("at +1.2s: %d, want 3", g)
	}
}

func TestTakePerMinuteAndDay(t *testing.T) {
	srv := redistest.Shared(t)
	a := newReplica(t, srv, testPrefix(t))
	ctx := ctxT(t)
	l := sharedstate.Limits{PerMinute: 3, PerDay: 4, Day: day(t0)}
	var got []int
	var at time.Time
	for i := range 4 {
		g, r, err := a.Take(ctx, "k", l, t0.Add(time.Duration(i)*10*time.Second), 1)
		if err != nil {
			t.Fatal(err)
		}
		got, at = append(got, g), r
	}
	if !equalInts(got, []int{1, 1, 1, 0}) || !at.Equal(t0.Add(time.Minute)) {
		t.Errorf("grants %v, retry at +%v; want [1 1 1 0], +1m", got, at.Sub(t0))
	}
	if g, _, _ := a.Take(ctx, "k", l, at.Add(-time.Millisecond), 1); g != 0 {
		t.Errorf("1ms before a minute: %d", g)
	}
	if g, _, _ := a.Take(ctx, "k", l, at, 2); g != 1 {
		t.Errorf("after a minute: %d", g)
	}
	// The day's quota (4) is used up: the later of the two limits holds.
	g, r, _ := a.Take(ctx, "k", l, t0.Add(time.Hour), 1)
	if g != 0 || !r.Equal(t0.Add(time.Hour+15*time.Minute)) {
		t.Errorf("quota used: %d, retry at +%v", g, r.Sub(t0))
	}
}

// windowModel is the sliding window the pool keeps locally, in Go: the
// times at which requests were granted, with how many at each.
type windowModel struct {
	n  int
	w  time.Duration
	at []time.Time
}

// free returns how many requests fit at now, and, when none does, when
// one does.
func (m *windowModel) free(now time.Time) (int, time.Time) {
	slices.SortFunc(m.at, func(a, b time.Time) int { return a.Compare(b) })
	held := 0
	for _, a := range m.at {
		if a.After(now.Add(-m.w)) {
			held++
		}
	}
	if held < m.n {
		return m.n - held, time.Time{}
	}
	// The oldest held requests leave until fewer than n remain.
	gone := 0
	for _, a := range m.at {
		if a.After(now.Add(-m.w)) {
			gone++
			if held-gone < m.n {
				return 0, a.Add(m.w)
			}
		}
	}
	panic("unreachable")
}

func (m *windowModel) add(now time.Time, g int, lease time.Duration) {
	for range g {
		m.at = append(m.at, now.Add(lease))
	}
}

// TestTakeMatchesLocalWindows: for random limits, leases and steps, Take
// grants what sliding windows (floor(PerSecond) in a second, one in
// 1/PerSecond seconds below 1, PerMinute in a minute) and a day counter
// would, and its retryAt is when they next allow a request.
func TestTakeMatchesLocalWindows(t *testing.T) {
	srv := redistest.Shared(t)
	a := newReplica(t, srv, testPrefix(t))
	ctx := ctxT(t)
	rnd := rand.New(rand.NewPCG(1, 2))
	rates := []float64{0, 0.3, 0.5, 1, 2, 2.5, 3, 5, 10, 250}
	minutes := []int{0, 1, 6, 30, 120}
	leases := []time.Duration{0, 0, 100 * time.Millisecond, 3 * time.Second, 4469 * time.Microsecond}
	for i := range 40 {
		id := "k" + string(rune('a'+i%26)) + string(rune('a'+i/26))
		l := sharedstate.Limits{PerSecond: rates[rnd.IntN(len(rates))], PerMinute: minutes[rnd.IntN(len(minutes))], Day: day(t0), Lease: leases[rnd.IntN(len(leases))]}
		if rnd.IntN(3) == 0 {
			l.PerDay = 1 + rnd.IntN(40)
		}
		var models []*windowModel
		switch {
		case l.PerSecond >= 1:
			models = append(models, &windowModel{n: int(l.PerSecond), w: time.Second})
		case l.PerSecond > 0:
			// 1/PerSecond seconds, rounded up to the microsecond.
			w := time.Duration(math.Ceil(1e6/l.PerSecond)) * time.Microsecond
			models = append(models, &windowModel{n: 1, w: w})
		}
		if l.PerMinute > 0 {
			models = append(models, &windowModel{n: l.PerMinute, w: time.Minute})
		}
		used := 0
		now := t0
		for step := range 60 {
			now = now.Add(time.Duration(rnd.IntN(1500)) * time.Millisecond)
			n := 1 + rnd.IntN(4)
			want := n
			var wantAt time.Time
			for _, m := range models {
				k, at := m.free(now)
				want = min(want, k)
				if at.After(wantAt) {
					wantAt = at
				}
			}
			if l.PerDay > 0 {
				want = min(want, l.PerDay-used)
				if used == l.PerDay {
					wantAt = now.Truncate(15 * time.Minute).Add(15 * time.Minute)
				}
			}
			g, at, err := a.Take(ctx, id, l, now, n)
			if err != nil {
				t.Fatal(err)
			}
			if g != want {
				t.Fatalf("key %d %+v step %d at +%v: granted %d of %d, want %d", i, l, step, now.Sub(t0), g, n, want)
			}
			if g == 0 && !at.Equal(wantAt) {
				t.Fatalf("key %d %+v step %d: retry at +%v, want +%v", i, l, step, at.Sub(t0), wantAt.Sub(t0))
			}
			for _, m := range models {
				m.add(now, g, l.Lease)
			}
			used += g
		}
	}
	// Every key the script wrote expires.
	keys, err := a.rdb.Keys(ctx, "{"+a.Prefix()+"}:*").Result()
	if err != nil || len(keys) == 0 {
		t.Fatalf("keys %v, %v", keys, err)
	}
	for _, k := range keys {
		if ttl, err := a.rdb.PTTL(ctx, k).Result(); err != nil || ttl <= 0 {
			t.Errorf("%s: TTL %v, %v", k, ttl, err)
		}
	}
}

func equalInts(a, b []int) bool {
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

// TestTakeExtremeLimits: very slow and very fast rates and large requests
// work (the state's expiry stays an integer Redis accepts).
func TestTakeExtremeLimits(t *testing.T) {
	srv := redistest.Shared(t)
	a := newReplica(t, srv, testPrefix(t))
	ctx := ctxT(t)
	for _, c := range []struct {
		l    sharedstate.Limits
		n    int
		want int
	}{
		{sharedstate.Limits{PerSecond: 1e-300}, 3, 1},
		{sharedstate.Limits{PerSecond: 1e-9, PerMinute: 1}, 3, 1},
		{sharedstate.Limits{PerSecond: 1e12}, 1 << 40, 1e12},
		{sharedstate.Limits{PerMinute: math.MaxInt32}, 5, 5},
		{sharedstate.Limits{PerDay: math.MaxInt32}, math.MaxInt32 + 10, math.MaxInt32},
	} {
		id := fmt.Sprintf("%+v", c.l)
		g, _, err := a.Take(ctx, id, c.l, t0, c.n)
		if err != nil || g != c.want {
			t.Errorf("%+v, n %d: granted %d, %v; want %d", c.l, c.n, g, err, c.want)
		}
		g, at, err := a.Take(ctx, id, c.l, t0, 1)
		if c.want < c.n && (err != nil || g != 0 || !at.After(t0)) {
			t.Errorf("%+v again: granted %d, retry at %v, %v", c.l, g, at, err)
		}
	}
}

// A used-up daily quota is retried at the end of the quota day the pool
// names, not a quarter hour later.
func TestTakeDailyQuotaRetryAtDayEnd(t *testing.T) {
	s := newReplica(t, redistest.Shared(t), testPrefix(t))
	now := time.Date(2026, 3, 1, 22, 7, 0, 0, time.UTC)
	end := time.Date(2026, 3, 2, 0, 0, 0, 0, time.UTC)
	l := sharedstate.Limits{PerDay: 1, Day: day(now), DayEnd: end}
	if g, _, err := s.Take(context.Background(), "k", l, now, 1); err != nil || g != 1 {
		t.Fatalf("first take: %d, %v", g, err)
	}
	g, at, err := s.Take(context.Background(), "k", l, now, 1)
	if err != nil || g != 0 || !at.Equal(end) {
		t.Fatalf("second take: %d, %v, %v; want 0 and retry at %v", g, at, err, end)
	}
}

// Invalid changes match sharedstate.ErrRejected, so the pool drops them.
func TestInvalidMatchesRejectedChange(t *testing.T) {
	s := newReplica(t, redistest.Shared(t), testPrefix(t))
	err := s.Publish(context.Background(), sharedstate.Change{KeyID: "", Kind: sharedstate.Disable})
	if !errors.Is(err, redisstate.ErrInvalid) || !errors.Is(err, sharedstate.ErrRejected) {
		t.Fatalf("err = %v", err)
	}
}
