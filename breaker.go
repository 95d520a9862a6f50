package apipool

import (
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sony/gobreaker/v2"

	"github.com/apipool-ng/apipool/status"
)

// BreakerState is a key's circuit-breaker state: closed (requests flow),
// open (the key is skipped) or half-open (a few trial requests).
type BreakerState = gobreaker.State

// The breaker states.
const (
	BreakerClosed   = gobreaker.StateClosed
	BreakerHalfOpen = gobreaker.StateHalfOpen
	BreakerOpen     = gobreaker.StateOpen
)

// BreakerSettings configures the circuit breaker each key has
// (sony/gobreaker v2). Server errors, network errors and timeouts count as
// failures; rate limits, invalid keys, client errors and cancellations are
// not counted either way. The zero value means the defaults below.
//
// The breaker's timing follows the wall clock, not the pool's Clock:
// gobreaker reads time.Now itself.
type BreakerSettings struct {
	// Failures is how many failures in a row open the breaker
	// (default 5).
	Failures uint32
	// Timeout is how long the breaker stays open before it lets trial
	// requests through (default 30s).
	Timeout time.Duration
	// HalfOpenRequests is how many trial requests a half-open breaker
	// lets through, and how many must succeed to close it (default 1).
	HalfOpenRequests uint32
	// Interval, when above 0, clears the closed breaker's counts at that
	// interval. 0 keeps them until a success resets the run of failures.
	Interval time.Duration
	// ReadyToTrip, when set, replaces Failures: it decides from the
	// counts whether a failure opens the breaker.
	ReadyToTrip func(gobreaker.Counts) bool
	// Disabled turns the breakers off: no key is ever skipped for its
	// breaker.
	Disabled bool
}

func (s BreakerSettings) validate() error {
	if s.Timeout < 0 || s.Interval < 0 {
		return &ConfigError{Field: "WithBreaker", Reason: fmt.Sprintf("negative duration (Timeout %v, Interval %v)", s.Timeout, s.Interval)}
	}
	return nil
}

func (s BreakerSettings) timeout() time.Duration {
	if s.Timeout == 0 {
		return 30 * time.Second
	}
	return s.Timeout
}

// errBreakerFailure is what the pool reports to a breaker for an attempt
// that counts as a failure; errBreakerExcluded for one that counts neither
// way.
var (
	errBreakerFailure  = errors.New("apipool: attempt failed")
	errBreakerExcluded = errors.New("apipool: attempt not counted")
)

// breakerOutcome maps an attempt's status to what its breaker is told.
func breakerOutcome(s status.Status) error {
	switch s {
	case status.Success:
		return nil
	case status.ServerError, status.NetworkError, status.Timeout, status.Failed:
		return errBreakerFailure
	default:
		return errBreakerExcluded
	}
}

type breakerChange struct {
	from, to BreakerState
}

// keyBreaker is a key's gobreaker plus what the pool mirrors of it:
// gobreaker calls OnStateChange under its own lock, so the change is
// mirrored into atomics there and queued, and the user's callback runs
// later from flush, outside every lock.
type keyBreaker struct {
	cb      *gobreaker.TwoStepCircuitBreaker[struct{}]
	mu      sync.Mutex
	pending []breakerChange

	// fast is set when the breaker trips on failures in a row alone (no
	// ReadyToTrip of the user's): see keyState.breakerFast. failRun is
	// then nonzero when failures were reported since the last success
	// that was.
	fast    bool
	failRun atomic.Uint64
}

func newKeyBreaker(s BreakerSettings, k *keyState) *keyBreaker {
	if s.Disabled {
		return nil
	}
	kb := &keyBreaker{fast: s.ReadyToTrip == nil}
	failures := s.Failures
	if failures == 0 {
		failures = 5
	}
	trip := s.ReadyToTrip
	if trip == nil {
		trip = func(c gobreaker.Counts) bool { return c.ConsecutiveFailures >= failures }
	}
	kb.cb = gobreaker.NewTwoStepCircuitBreaker[struct{}](gobreaker.Settings{
		Name:         k.key.ID,
		MaxRequests:  s.HalfOpenRequests,
		Interval:     s.Interval,
		Timeout:      s.timeout(),
		ReadyToTrip:  trip,
		IsSuccessful: func(err error) bool { return err == nil },
		IsExcluded:   func(err error) bool { return err == errBreakerExcluded },
		OnStateChange: func(_ string, from, to BreakerState) {
			k.breakerState.Store(int32(to))
			if to == BreakerOpen {
				k.breakerOpenedAt.Store(time.Now().UnixNano())
			}
			kb.mu.Lock()
			kb.pending = append(kb.pending, breakerChange{from, to})
			kb.mu.Unlock()
			k.breakerPending.Store(true)
		},
	})
	return kb
}

// breakerFast reports whether an attempt may go out with k without
// asking k's breaker first: the breaker is closed and trips on failures
// in a row alone, so its answer is certain and only the attempt's outcome
// matters (reportLate). A request then pays no gobreaker lock, clock read
// or done closure unless it fails.
func (k *keyState) breakerFast() bool {
	return k.breaker.fast && BreakerState(k.breakerState.Load()) == BreakerClosed
}

// reportLate tells k's breaker the outcome of an attempt that went out
// without asking it (breakerFast). Only a failure, and the first success
// after failures, can change a closed breaker that counts failures in a
// row, so other outcomes are not reported. An outcome that comes after the
// breaker left the closed state is dropped, as gobreaker drops outcomes
// of an earlier state.
func (k *keyState) reportLate(outcome error) {
	kb := k.breaker
	if outcome == errBreakerExcluded || BreakerState(k.breakerState.Load()) != BreakerClosed {
		return
	}
	if outcome == nil {
		n := kb.failRun.Load()
		if n == 0 {
			return
		}
		if done, err := kb.cb.Allow(); err == nil {
			done(nil)
		}
		kb.failRun.CompareAndSwap(n, 0) // a failure since keeps it set
		return
	}
	if done, err := kb.cb.Allow(); err == nil {
		done(outcome)
	}
	// Counted after the breaker heard of it: a success that still reads
	// 0 is then taken as having come before this failure.
	kb.failRun.Add(1)
}

// takePending returns and clears the queued state changes.
func (kb *keyBreaker) takePending() []breakerChange {
	kb.mu.Lock()
	p := kb.pending
	kb.pending = nil
	kb.mu.Unlock()
	return p
}

// breakerTicket is an attempt's permission from its key's breaker: the
// gobreaker done callback, or, on the fast path (breakerFast), a promise
// to report the outcome afterwards. The zero ticket reports nothing (a key
// without a breaker, a probe).
type breakerTicket struct {
	done func(error)
	late bool
}

// allow asks k's breaker for one attempt.
func (k *keyState) allow() (breakerTicket, bool) {
	if k.breaker == nil {
		return breakerTicket{}, true
	}
	if k.breakerFast() {
		return breakerTicket{late: true}, true
	}
	done, err := k.breaker.cb.Allow()
	if err != nil {
		return breakerTicket{}, false
	}
	return breakerTicket{done: done}, true
}

// finish reports the attempt's outcome to k's breaker, once.
func (tk *breakerTicket) finish(k *keyState, outcome error) {
	switch {
	case tk.done != nil:
		tk.done(outcome)
	case tk.late:
		k.reportLate(outcome)
	}
	*tk = breakerTicket{}
}

// flushBreaker delivers queued breaker state changes, outside every lock,
// and wakes a waiting request: a breaker that changed may let it through.
func (t *Transport) flushBreaker(k *keyState) {
	if !k.breakerPending.Load() || !k.breakerPending.CompareAndSwap(true, false) {
		return
	}
	var now time.Time
	for _, ch := range k.breaker.takePending() {
		if t.alerts != nil {
			if now.IsZero() {
				now = t.cfg.clock.Now()
			}
			t.alertBreaker(k, ch, now)
		}
		if t.cfg.logger != nil {
			t.cfg.logger.Info("apipool: breaker state changed", "key", k.key.ID, "from", ch.from.String(), "to", ch.to.String())
		}
		if t.cfg.onBreaker != nil {
			t.cfg.onBreaker(k.key.ID, ch.from, ch.to)
		}
	}
	t.waiters.wakeHead()
}
