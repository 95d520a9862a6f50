package redisstate_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/apipool-ng/apipool"
	"github.com/apipool-ng/apipool/internal/fakeclock"
	"github.com/apipool-ng/apipool/internal/redistest"
	"github.com/apipool-ng/apipool/redisstate"
	"github.com/apipool-ng/apipool/sharedstate"
)

func learnedString(cs []sharedstate.Change) string {
	s := make([]string, len(cs))
	for i, c := range cs {
		if c.Kind == sharedstate.Learned {
			s[i] = fmt.Sprintf("%s learned %d/%v %d", c.KeyID, c.Limit, c.Window, c.At.UnixMilli())
		} else {
			s[i] = changeString(c)
		}
	}
	return strings.Join(s, "; ")
}

// A learned limit is kept in Redis when it is the latest: set later, to
// the millisecond, or at the same millisecond and lower; only then is it
// published. A Watch's state has it until a day after it was set, and it
// never makes a key reported enabled. An invalid one is refused.
func TestLearnedLatestWinsAndExpires(t *testing.T) {
	srv := redistest.Shared(t)
	prefix := testPrefix(t)
	clk := fakeclock.New(time.Now().Truncate(time.Second))
	a := newReplica(t, srv, prefix, redisstate.WithClock(clk))
	b := newReplica(t, srv, prefix, redisstate.WithClock(clk))
	ctx := ctxT(t)
	at := clk.Now()
	w := startWatch(t, b)
	if st := w.state(t); len(st) != 0 {
		t.Fatalf("state %s, want none", learnedString(st))
	}
	learnedAt := func(n int, w time.Duration, at time.Time) sharedstate.Change {
		return sharedstate.Change{KeyID: "k1", Kind: sharedstate.Learned, Limit: n, Window: w, At: at}
	}
	for _, c := range []sharedstate.Change{
		learnedAt(10, time.Second, at),
		learnedAt(12, time.Second, at.Add(500*time.Microsecond)), // same ms, higher: not kept
		learnedAt(10, time.Second, at),                           // the same: not kept
		learnedAt(9, time.Second, at.Add(200*time.Microsecond)),  // same ms, lower: kept
		learnedAt(20, time.Second, at.Add(-time.Second)),         // older: not kept
		learnedAt(11, time.Second, at.Add(time.Second)),          // later: kept
	} {
		if err := a.Publish(ctx, c); err != nil {
			t.Fatal(err)
		}
	}
	ms := at.UnixMilli()
	want := fmt.Sprintf("k1 learned 10/1s %d; k1 learned 9/1s %d; k1 learned 11/1s %d", ms, ms, ms+1000)
	if got := learnedString(w.sync(t, a.Store)); got != want {
		t.Errorf("published:\n got %s\nwant %s", got, want)
	}
	for _, c := range []sharedstate.Change{
		learnedAt(0, time.Second, at),
		learnedAt(10, 0, at),
		learnedAt(10, 1500*time.Microsecond, at),
		learnedAt(10, 2*time.Hour, at),
	} {
		if err := a.Publish(ctx, c); !errors.Is(err, redisstate.ErrInvalid) || !errors.Is(err, sharedstate.ErrRejected) {
			t.Errorf("Publish(%+v) = %v, want ErrInvalid", c, err)
		}
	}

	// A replica that starts (or Watches again) gets it in the state; the
	// one that heard it as a change reports no enable for it.
	if err := w.stop(); !errors.Is(err, context.Canceled) {
		t.Fatal(err)
	}
	wantState := fmt.Sprintf("k1 learned 11/1s %d", ms+1000)
	if got := learnedString(startWatch(t, b).state(t)); got != wantState {
		t.Errorf("state again:\n got %s\nwant %s", got, wantState)
	}
	late := newReplica(t, srv, prefix, redisstate.WithClock(clk))
	wl := startWatch(t, late)
	if got := learnedString(wl.state(t)); got != wantState {
		t.Errorf("state of a new replica:\n got %s\nwant %s", got, wantState)
	}
	wl.stop()
	key := "{" + prefix + "}:learned"
	if ttl := late.rdb.PTTL(ctx, key).Val(); ttl <= 23*time.Hour || ttl > 24*time.Hour {
		t.Errorf("the learned hash expires in %v, want a day", ttl)
	}

	// A day after it was set, it is no longer in the state, and is gone.
	clk.Advance(24*time.Hour + 2*time.Second)
	if st := startWatch(t, late).state(t); len(st) != 0 {
		t.Errorf("state a day later: %s, want none", learnedString(st))
	}
	if n := late.rdb.HLen(ctx, key).Val(); n != 0 {
		t.Errorf("%d learned limits left in Redis a day after they were set", n)
	}
}

// fixedWindowAPI is an upstream that sends no rate-limit headers and
// allows limit requests per key in each second of its clock (a fixed
// window), answering 429 with Retry-After: 1 beyond. It counts the
// successes and the 429s, and remembers every header it was sent.
type fixedWindowAPI struct {
	now   func() time.Time
	limit int

	mu          sync.Mutex
	used        map[string]int // "authorization/second" -> requests
	ok, limited int
}

func (a *fixedWindowAPI) RoundTrip(r *http.Request) (*http.Response, error) {
	k := r.Header.Get("Authorization") + "/" + strconv.FormatInt(a.now().Unix(), 10)
	a.mu.Lock()
	a.used[k]++
	over := a.used[k] > a.limit
	if over {
		a.limited++
	} else {
		a.ok++
	}
	a.mu.Unlock()
	code, h := http.StatusOK, http.Header{}
	if over {
		code = http.StatusTooManyRequests
		h.Set("Retry-After", "1")
	}
	return &http.Response{StatusCode: code, Header: h, Body: http.NoBody, Request: r}, nil
}

func (a *fixedWindowAPI) counts(reset bool) (ok, limited int) {
	a.mu.Lock()
	defer a.mu.Unlock()
	ok, limited = a.ok, a.limited
	if reset {
		a.ok, a.limited = 0, 0
	}
	return ok, limited
}

func learnedOf(p *apipool.Transport, id string) (int, time.Duration) {
	s := keyState(p, id)
	return s.LearnedLimit, s.LearnedWindow
}

// agree waits until every pool holds the same learned limit for id, and
// returns it.
func agree(t *testing.T, pools []*apipool.Transport, id string) int {
	t.Helper()
	var n int
	poll(t, "the pools to agree on the learned limit", func() bool {
		n0, w0 := learnedOf(pools[0], id)
		for _, p := range pools[1:] {
			if n, w := learnedOf(p, id); n != n0 || w != w0 {
				return false
			}
		}
		n = n0
		return true
	})
	return n
}

// TestThreePoolsShareLearnedLimit: three pools (replicas), each with its
// own store and client, share one key through one Redis, in front of an
// upstream that allows 10 requests a second per key and sends no
// rate-limit headers, on a fake clock that moves in steps (once every pool
// holds the same learned limit: the changes of a step have reached all).
// The limit one learns is adopted by all, and Redis's windows hold it
// across the three together: after the learning, the 429s are a small
// share of the successes. A fourth pool that starts later adopts the limit
// from the state its Watch reads. Redis holds no secret.
func TestThreePoolsShareLearnedLimit(t *testing.T) {
	srv := redistest.Shared(t)
	prefix := testPrefix(t)
	const secret = "sk-redis-learned-51c0e2"
	clk := fakeclock.New(time.Now().Truncate(time.Second))
	up := &fixedWindowAPI{now: clk.Now, limit: 10, used: map[string]int{}}
	k := apipool.Key{ID: "k", Secret: secret}
	var takes atomic.Int64
	newPool := func() *apipool.Transport {
		r := newReplica(t, srv, prefix, redisstate.WithClock(clk))
		store := countingStore{r.Store, &takes}
		p, err := apipool.New([]apipool.Key{k}, apipool.WithBase(up), apipool.WithClock(clk), apipool.WithSharedState(store), apipool.WithMaxWait(0))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { p.Close(context.Background()) })
		poll(t, "the pool to have synced", func() bool { return p.SharedStateHealth().Synced })
		return p
	}
	var pools []*apipool.Transport
	for range 3 {
		pools = append(pools, newPool())
	}
	run := func(d time.Duration) {
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
				t.FailNow()
			}
			agree(t, pools, "k")
			clk.Advance(10 * time.Millisecond)
		}
	}

	run(5 * time.Second)
	n := agree(t, pools, "k")
	if _, w := learnedOf(pools[0], "k"); n < 1 || n > 10 || w != time.Second {
		t.Fatalf("learned %d in %v, want 1 to 10 in a second", n, w)
	}
	ok, limited := up.counts(true)
	t.Logf("learning (5 s): %d successes, %d 429s; learned %d a second", ok, limited, n)

	const after = 30 * time.Second
	takes.Store(0)
	run(after)
	ok, limited = up.counts(false)
	// Redis counts the learned limit: every request a Take of its own
	// (10 a second leases no block).
	if n := takes.Load(); n < int64(ok) {
		t.Errorf("%d Takes for %d successes: the learned limit is not enforced through Redis", n, ok)
	}
	n = agree(t, pools, "k")
	t.Logf("after (%v): %d successes, %d 429s (%.4f per success); learned %d a second", after, ok, limited, float64(limited)/float64(max(ok, 1)), n)
	// Each replica pacing alone would send up to three times the limit;
	// shared, the 429s are the learner's probes of a raise.
	if limited*20 > ok {
		t.Errorf("%d 429s for %d successes across the three pools, want at most 1 in 20", limited, ok)
	}
	// At least one success every two seconds: a first limit learned while
	// three pools send at once may be as low as 1 (a replica counts its
	// own successes), and is raised slowly.
	if min := int(after / (2 * time.Second)); ok < min {
		t.Errorf("%d successes in %v, want at least one every two seconds (%d)", ok, after, min)
	}

	late := newPool()
	if ln, lw := learnedOf(late, "k"); ln != n || lw != time.Second {
		t.Errorf("a pool started later holds %d in %v once synced, want %d in 1s", ln, lw, n)
	}

	// What Redis holds names the key by its ID, never by its secret.
	ctx := ctxT(t)
	for _, pattern := range []string{"{" + prefix + "}*"} {
		keys, err := srv.Client(t).Keys(ctx, pattern).Result()
		if err != nil {
			t.Fatal(err)
		}
		for _, key := range keys {
			dump := key
			if typ := srv.Client(t).Type(ctx, key).Val(); typ == "hash" {
				dump += fmt.Sprint(srv.Client(t).HGetAll(ctx, key).Val())
			}
			if strings.Contains(dump, secret) {
				t.Errorf("Redis holds the secret: %s", dump)
			}
		}
	}
}
