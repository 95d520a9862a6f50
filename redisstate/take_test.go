package redisstate_test

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/apipool-ng/apipool"
	"github.com/apipool-ng/apipool/internal/redistest"
	"github.com/apipool-ng/apipool/redisstate"
	"github.com/redis/go-redis/v9"
	"golang.org/x/time/rate"
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
		l  apipool.Limits
		n  int
	}{
		"n 0":           {"k", apipool.Limits{PerDay: 5}, 0},
		"n negative":    {"k", apipool.Limits{PerDay: 5}, -1},
		"empty id":      {"", apipool.Limits{PerDay: 5}, 1},
		"negative rate": {"k", apipool.Limits{PerSecond: -1}, 1},
		"NaN rate":      {"k", apipool.Limits{PerSecond: math.NaN()}, 1},
		"infinite rate": {"k", apipool.Limits{PerSecond: math.Inf(1)}, 1},
		"negative min":  {"k", apipool.Limits{PerMinute: -1}, 1},
		"negative day":  {"k", apipool.Limits{PerDay: -1}, 1},
	} {
		if g, _, err := s.Take(ctx, c.id, c.l, t0, c.n); !errors.Is(err, redisstate.ErrInvalid) || g != 0 {
			t.Errorf("%s: granted %d, %v; want ErrInvalid", name, g, err)
		}
	}
	if g, at, err := s.Take(ctx, "k", apipool.Limits{Day: 7}, t0, 25); g != 25 || !at.IsZero() || err != nil {
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
	l := apipool.Limits{PerDay: 10, Day: day(t0)}
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
	l := apipool.Limits{PerDay: quota, Day: day(t0)}
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

func TestTakePerSecond(t *testing.T) {
	srv := redistest.Shared(t)
	a := newReplica(t, srv, testPrefix(t))
	ctx := ctxT(t)
	l := apipool.Limits{PerSecond: 5}
	take := func(now time.Time, n int) (int, time.Time) {
		t.Helper()
		g, at, err := a.Take(ctx, "k", l, now, n)
		if err != nil {
			t.Fatal(err)
		}
		return g, at
	}
	// A burst of one second's worth, then one every 200ms.
	if g, _ := take(t0, 3); g != 3 {
		t.Errorf("first: %d", g)
	}
	if g, _ := take(t0, 10); g != 2 {
		t.Errorf("rest of the burst: %d", g)
	}
	g, at := take(t0, 1)
	if want := t0.Add(200 * time.Millisecond); g != 0 || !at.Equal(want) {
		t.Errorf("empty: %d, retry at %v, want %v", g, at.Sub(t0), want.Sub(t0))
	}
	if g, _ := take(t0.Add(199*time.Millisecond), 1); g != 0 {
		t.Errorf("1ms early: %d", g)
	}
	if g, _ := take(at, 5); g != 1 {
		t.Errorf("at retryAt: %d", g)
	}
	// A second later the bucket is full again, and no fuller.
	if g, _ := take(t0.Add(10*time.Second), 10); g != 5 {
		t.Errorf("after a rest: %d", g)
	}
	ttl, err := a.rdb.PTTL(ctx, "{"+a.Prefix()+"}:rate:k").Result()
	if err != nil || ttl <= 0 || ttl > 3*time.Second {
		t.Errorf("rate state TTL %v (%v)", ttl, err)
	}
}

func TestTakePerMinuteAndDay(t *testing.T) {
	srv := redistest.Shared(t)
	a := newReplica(t, srv, testPrefix(t))
	ctx := ctxT(t)
	l := apipool.Limits{PerMinute: 3, PerDay: 4, Day: day(t0)}
	var got []int
	var at time.Time
	for range 4 {
		g, r, err := a.Take(ctx, "k", l, t0, 1)
		if err != nil {
			t.Fatal(err)
		}
		got, at = append(got, g), r
	}
	if !equalInts(got, []int{1, 1, 1, 0}) || !at.Equal(t0.Add(20*time.Second)) {
		t.Errorf("grants %v, retry at +%v; want [1 1 1 0], +20s", got, at.Sub(t0))
	}
	if g, _, _ := a.Take(ctx, "k", l, at, 2); g != 1 {
		t.Errorf("after 20s: %d", g)
	}
	// The day's quota (4) is used up: the later of the two limits holds.
	g, r, _ := a.Take(ctx, "k", l, t0.Add(time.Hour), 1)
	if g != 0 || !r.Equal(t0.Add(time.Hour+15*time.Minute)) {
		t.Errorf("quota used: %d, retry at +%v", g, r.Sub(t0))
	}
}

// TestTakeMatchesLocalBuckets: for random limits and steps, Take grants
// what the pool's local buckets (golang.org/x/time/rate, burst one second's
// or one minute's worth) and a day counter would, and its retryAt is when
// they next allow a request.
func TestTakeMatchesLocalBuckets(t *testing.T) {
	srv := redistest.Shared(t)
	a := newReplica(t, srv, testPrefix(t))
	ctx := ctxT(t)
	rnd := rand.New(rand.NewPCG(1, 2))
	rates := []float64{0, 0.5, 1, 2, 3, 5, 10, 250}
	minutes := []int{0, 1, 6, 30, 120}
	for i := range 40 {
		id := "k" + string(rune('a'+i%26)) + string(rune('a'+i/26))
		l := apipool.Limits{PerSecond: rates[rnd.IntN(len(rates))], PerMinute: minutes[rnd.IntN(len(minutes))], Day: day(t0)}
		if rnd.IntN(3) == 0 {
			l.PerDay = 1 + rnd.IntN(40)
		}
		var perSec, perMin *rate.Limiter
		if l.PerSecond > 0 {
			perSec = rate.NewLimiter(rate.Limit(l.PerSecond), max(1, int(math.Ceil(l.PerSecond))))
		}
		if l.PerMinute > 0 {
			perMin = rate.NewLimiter(rate.Limit(float64(l.PerMinute)/60), l.PerMinute)
		}
		used := 0
		now := t0
		for step := range 60 {
			now = now.Add(time.Duration(rnd.IntN(1500)) * time.Millisecond)
			n := 1 + rnd.IntN(4)
			want := n
			var wantAt time.Time
			for _, lim := range []*rate.Limiter{perSec, perMin} {
				if lim == nil {
					continue
				}
				tok := lim.TokensAt(now)
				if k := int(math.Floor(tok + 1e-9)); k < want {
					want = max(k, 0)
				}
				if tok < 1-1e-9 {
					at := now.Add(time.Duration((1 - tok) / float64(lim.Limit()) * float64(time.Second)))
					if at.After(wantAt) {
						wantAt = at
					}
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
			if g == 0 {
				if d := at.Sub(wantAt); d < -time.Millisecond || d > time.Millisecond {
					t.Fatalf("key %d %+v step %d: retry at +%v, want +%v", i, l, step, at.Sub(t0), wantAt.Sub(t0))
				}
			}
			if g > 0 {
				for _, lim := range []*rate.Limiter{perSec, perMin} {
					if lim != nil && !lim.AllowN(now, g) {
						t.Fatalf("model refused %d", g)
					}
				}
				used += g
			}
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
		l    apipool.Limits
		n    int
		want int
	}{
		{apipool.Limits{PerSecond: 1e-300}, 3, 1},
		{apipool.Limits{PerSecond: 1e-9, PerMinute: 1}, 3, 1},
		{apipool.Limits{PerSecond: 1e12}, 1 << 40, 1e12},
		{apipool.Limits{PerMinute: math.MaxInt32}, 5, 5},
		{apipool.Limits{PerDay: math.MaxInt32}, math.MaxInt32 + 10, math.MaxInt32},
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
	l := apipool.Limits{PerDay: 1, Day: day(now), DayEnd: end}
	if g, _, err := s.Take(context.Background(), "k", l, now, 1); err != nil || g != 1 {
		t.Fatalf("first take: %d, %v", g, err)
	}
	g, at, err := s.Take(context.Background(), "k", l, now, 1)
	if err != nil || g != 0 || !at.Equal(end) {
		t.Fatalf("second take: %d, %v, %v; want 0 and retry at %v", g, at, err, end)
	}
}

// Invalid changes match apipool.ErrRejectedChange, so the pool drops them.
func TestInvalidMatchesRejectedChange(t *testing.T) {
	s := newReplica(t, redistest.Shared(t), testPrefix(t))
	err := s.Publish(context.Background(), apipool.StateChange{KeyID: "", Kind: apipool.ChangeDisable})
	if !errors.Is(err, redisstate.ErrInvalid) || !errors.Is(err, apipool.ErrRejectedChange) {
		t.Fatalf("err = %v", err)
	}
}
