package bench

import (
	"errors"
	"io"
	"math/rand/v2"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"github.com/apipool-ng/apipool"
	"github.com/apipool-ng/apipool/clock"
)

// stormBase answers 429 with "Retry-After: 1" to 30% of requests, at
// random, and a 200 to the rest, at once.
type stormBase struct {
	calls atomic.Int64
}

var retryAfterOne = []string{"1"}

const tooManyBody = `{"error":"rate limited"}`

func (s *stormBase) RoundTrip(r *http.Request) (*http.Response, error) {
	s.calls.Add(1)
	if rand.Uint32N(10) >= 3 {
		return cannedBase{}.RoundTrip(r)
	}
	return &http.Response{
		Status: "429 Too Many Requests", StatusCode: http.StatusTooManyRequests,
		Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1,
		Header:        http.Header{"Content-Type": jsonContentType, "Retry-After": retryAfterOne},
		Body:          newBody(tooManyBody),
		ContentLength: int64(len(tooManyBody)),
		Request:       r,
	}, nil
}

// jumpClock is a pool clock that compresses waits: a timer for d fires
// after a moment of real time (jumpDelay) and moves the clock on to the end
// of the wait; a timer stopped before then (its waiter woken by an event)
// moves nothing. Cooldowns then end without sleeping, so that a storm
// benchmark measures the pool's work, not the upstream's Retry-After. It
// starts a day behind the wall clock, so that the events it stamps stay
// within the recorder's bounds (the in-memory store refuses events more
// than a minute ahead of time.Now).
type jumpClock struct {
	offset atomic.Int64 // added to time.Now
}

// jumpDelay is the real time a wait of any length takes on a jumpClock.
const jumpDelay = 20 * time.Microsecond

func newJumpClock() *jumpClock {
	c := &jumpClock{}
	c.offset.Store(int64(-24 * time.Hour))
	return c
}

func (c *jumpClock) Now() time.Time { return time.Now().Add(time.Duration(c.offset.Load())) }

func (c *jumpClock) NewTimer(d time.Duration) clock.Timer {
	target := c.Now().Add(d)
	jt := &jumpTimer{ch: make(chan time.Time, 1)}
	jt.t = time.AfterFunc(jumpDelay, func() {
		now := time.Now()
		for {
			old := c.offset.Load()
			if now.Add(time.Duration(old)).After(target) || c.offset.CompareAndSwap(old, int64(target.Sub(now))) {
				break
			}
		}
		jt.ch <- target
	})
	return jt
}

type jumpTimer struct {
	t  *time.Timer
	ch chan time.Time
}

func (t *jumpTimer) C() <-chan time.Time { return t.ch }
func (t *jumpTimer) Stop() bool          { return t.t.Stop() }

// BenchmarkRateLimitStorm measures a 10-key pool, with its defaults, under
// a storm of rate limits: 30% of the upstream's answers are 429 with
// "Retry-After: 1", sent from GOMAXPROCS goroutines. Each 429 cools its key
// down for a second and the request moves to another key; when every key
// cools down, requests wait for the first to recover. The pool runs on a
// clock that compresses those waits (jumpClock), so that the figure is the
// pool's own cost per successful request (ns/success), retries and
// discarded 429 answers included; upstream-calls/success says how many
// answers each success took, and failed/op the share of requests that did
// not succeed: a 429 on every attempt, or no key free within the pool's
// wait (on the shared jump clock, one request's wait moves time on for
// the others too).
func BenchmarkRateLimitStorm(b *testing.B) {
	base := &stormBase{}
	p := newPool(b, testKeys(10), base, apipool.WithClock(newJumpClock()))
	warmUp(b, p, newRequest(b), 20)
	base.calls.Store(0)
	var ok, failed atomic.Int64
	b.ResetTimer()
	b.ReportAllocs()
	done := measureCPU(b)
	b.RunParallel(func(pb *testing.PB) {
		req := newRequest(b)
		for pb.Next() {
			resp, err := p.RoundTrip(req)
			if err != nil {
				if !errors.Is(err, apipool.ErrNoKeyAvailable) {
					b.Error(err)
					return
				}
				failed.Add(1)
				continue
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				ok.Add(1)
			} else {
				failed.Add(1)
			}
		}
	})
	done()
	if n := ok.Load(); n > 0 {
		b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(n), "ns/success")
		b.ReportMetric(float64(base.calls.Load())/float64(n), "upstream-calls/success")
	}
	b.ReportMetric(float64(failed.Load())/float64(b.N), "failed/op")
	if s, isMem := p.Recorder().(interface{ TooNew() uint64 }); isMem && s.TooNew() > 0 {
		b.Errorf("the recorder refused %d events as too new: the jump clock ran ahead of the wall clock", s.TooNew())
	}
}
