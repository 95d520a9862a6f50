package apipool

import (
	"errors"
	"io"
	"math/rand/v2"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sony/gobreaker/v2"
)

// statusBase answers each request with the status code it holds.
type statusBase struct{ code atomic.Int32 }

func (b *statusBase) RoundTrip(r *http.Request) (*http.Response, error) {
	return &http.Response{StatusCode: int(b.code.Load()), Header: http.Header{}, Body: io.NopCloser(strings.NewReader("x")), Request: r}, nil
}

// A closed breaker that trips on failures in a row is not asked before
// each attempt (keyState.breakerFast); it must still end in the state, and
// with the run of failures, of a breaker asked and told of every attempt.
func TestBreakerFastPathMatchesGobreaker(t *testing.T) {
	t.Parallel()
	settings := BreakerSettings{Failures: 3, Timeout: time.Hour}
	codes := []int{200, 500, 404} // success, failure, excluded
	for seed := uint64(0); seed < 50; seed++ {
		base := &statusBase{}
		p, err := New([]Key{{ID: "a", Secret: "s"}}, WithBase(base), WithBreaker(settings),
			WithMaxAttempts(1), WithMaxWait(0), WithRecorder(nil))
		if err != nil {
			t.Fatal(err)
		}
		k := p.keys.Load().keys[0]
		ref := newKeyBreaker(settings, &keyState{key: Key{ID: "ref"}})
		rng := rand.New(rand.NewPCG(seed, 1))
		for step := 0; step < 40; step++ {
			code := codes[rng.IntN(len(codes))]
			base.code.Store(int32(code))
			req, _ := http.NewRequest(http.MethodGet, "http://api.test/", nil)
			resp, err := p.RoundTrip(req)
			if ref.cb.State() == gobreaker.StateOpen {
				var nk *NoKeyError
				if !errors.As(err, &nk) || nk.BreakerOpen != 1 {
					t.Fatalf("seed %d step %d: breaker open, got %v, want a NoKeyError", seed, step, err)
				}
				break
			}
			if err != nil {
				t.Fatalf("seed %d step %d: %v", seed, step, err)
			}
			resp.Body.Close()
			done, err := ref.cb.Allow()
			if err != nil {
				t.Fatalf("seed %d step %d: reference breaker refused: %v", seed, step, err)
			}
			switch code {
			case 200:
				done(nil)
			case 500:
				done(errBreakerFailure)
			default:
				done(errBreakerExcluded)
			}
			if got, want := k.breaker.cb.State(), ref.cb.State(); got != want {
				t.Fatalf("seed %d step %d (%d): state %v, want %v", seed, step, code, got, want)
			}
			if got, want := k.breaker.cb.Counts().ConsecutiveFailures, ref.cb.Counts().ConsecutiveFailures; got != want {
				t.Fatalf("seed %d step %d (%d): %d failures in a row, want %d", seed, step, code, got, want)
			}
		}
	}
}

// Out of the closed state the breaker is asked again: a half-open breaker
// lets its trial through and closes on its success, and the fast path
// resumes with a clean run of failures.
func TestBreakerFastPathHalfOpen(t *testing.T) {
	t.Parallel()
	base := &statusBase{}
	p, err := New([]Key{{ID: "a", Secret: "s"}}, WithBase(base), WithBreaker(BreakerSettings{Failures: 2, Timeout: time.Millisecond}),
		WithMaxAttempts(1), WithMaxWait(0), WithRecorder(nil))
	if err != nil {
		t.Fatal(err)
	}
	k := p.keys.Load().keys[0]
	send := func() error {
		req, _ := http.NewRequest(http.MethodGet, "http://api.test/", nil)
		resp, err := p.RoundTrip(req)
		if err == nil {
			resp.Body.Close()
		}
		return err
	}
	base.code.Store(500)
	send()
	send()
	if s := BreakerState(k.breakerState.Load()); s != BreakerOpen {
		t.Fatalf("after 2 failures: %v, want open", s)
	}
	deadline := time.Now().Add(20 * time.Second)
	// Wait out the breaker's timeout (1ms, on gobreaker's wall clock).
	for time.Now().UnixNano() < k.breakerOpenedAt.Load()+int64(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("breaker still open after 20s")
		}
		time.Sleep(time.Millisecond)
	}
	if k.breakerFast() {
		t.Fatal("fast path taken while the breaker is not closed")
	}
	base.code.Store(200)
	if err := send(); err != nil {
		t.Fatal(err)
	}
	if s := k.breaker.cb.State(); s != BreakerClosed {
		t.Fatalf("after the trial's success: %v, want closed", s)
	}
	if !k.breakerFast() {
		t.Fatal("fast path not taken again once closed")
	}
	base.code.Store(500)
	send()
	if s := k.breaker.cb.State(); s != BreakerClosed {
		t.Fatalf("one failure after closing: %v, want closed (the run starts anew)", s)
	}
}

// A ReadyToTrip of the user's reads every count, so its breaker is asked
// and told of every attempt.
func TestBreakerCustomTripCountsEveryAttempt(t *testing.T) {
	t.Parallel()
	base := &statusBase{}
	base.code.Store(200)
	p, err := New([]Key{{ID: "a", Secret: "s"}}, WithBase(base), WithRecorder(nil),
		WithBreaker(BreakerSettings{ReadyToTrip: func(c gobreaker.Counts) bool { return c.TotalFailures > c.Requests/2 }}))
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 3; i++ {
		req, _ := http.NewRequest(http.MethodGet, "http://api.test/", nil)
		resp, err := p.RoundTrip(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
	}
	if c := p.keys.Load().keys[0].breaker.cb.Counts(); c.Requests != 3 || c.TotalSuccesses != 3 {
		t.Fatalf("counts %+v, want 3 requests and 3 successes", c)
	}
}
