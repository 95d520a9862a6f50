package apipool_test

import (
	"io"
	"net/http"
	"reflect"
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

// Rate limits follow the pool's clock.
func TestPerSecondLimit(t *testing.T) {
	t.Parallel()
	clk := newClock()
	up := newUpstream(nil)
	p := mustNew(t, []apipool.Key{{ID: "k0", Secret: "s0", PerSecond: 2}}, apipool.WithBase(up), apipool.WithClock(clk), apipool.WithMaxWait(0))
	mustDo(t, p)
	mustDo(t, p) // a burst of one second's worth
	_, _, err := do(t, p)
	nk := noKey(t, err)
	if nk.Limited != 1 || !nk.RetryAt.After(t0) || nk.RetryAt.After(t0.Add(600*time.Millisecond)) {
		t.Fatalf("%+v, want RetryAt about 500ms from now", nk)
	}
	if s := p.Snapshot()[0]; s.State != "limited" {
		t.Fatalf("state %q", s.State)
	}
	clk.Advance(499 * time.Millisecond)
	_, _, err = do(t, p)
	noKey(t, err)
	clk.Advance(time.Millisecond)
	mustDo(t, p)
	_, _, err = do(t, p)
	noKey(t, err)
	clk.Advance(time.Second)
	mustDo(t, p)
	mustDo(t, p)
	if n := len(up.Calls()); n != 5 {
		t.Fatalf("%d requests went out, want 5", n)
	}
}

func TestPerMinuteLimit(t *testing.T) {
	t.Parallel()
	clk := newClock()
	up := newUpstream(nil)
	p := mustNew(t, []apipool.Key{{ID: "k0", Secret: "s0", PerMinute: 3}}, apipool.WithBase(up), apipool.WithClock(clk), apipool.WithMaxWait(0))
	for i := 0; i < 3; i++ {
		mustDo(t, p)
	}
	_, _, err := do(t, p)
	nk := noKey(t, err)
	if nk.RetryAt.Before(t0.Add(20*time.Second)) || nk.RetryAt.After(t0.Add(21*time.Second)) {
		t.Fatalf("RetryAt %v, want about 20s from now", nk.RetryAt)
	}
	clk.Advance(19 * time.Second)
	_, _, err = do(t, p)
	noKey(t, err)
	clk.Advance(time.Second)
	mustDo(t, p)
	_, _, err = do(t, p)
	noKey(t, err)
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
