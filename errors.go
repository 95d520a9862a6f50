package apipool

import (
	"errors"
	"strconv"
	"strings"
	"time"

	"github.com/apipool-ng/apipool/errdefs"
)

// ErrNoKeyAvailable is matched (errors.Is) by the error RoundTrip returns
// when no key can be used for a request within the wait allowed. The error
// is a *NoKeyError, which tells when the next key frees up.
var ErrNoKeyAvailable = errors.New("apipool: no key available")

// ErrUnknownKey is returned for a key ID the pool does not hold.
var ErrUnknownKey = errors.New("apipool: unknown key")

// ErrClosed is returned by RoundTrip after Close. It is the one error of
// every apipool package for a call after Close: the usage stores return it
// too (recorder.ErrClosed is the same error), and errdefs.ErrClosed is its
// name for packages that cannot import this one.
var ErrClosed = errdefs.ErrClosed

// NoKeyError is returned when no key is eligible for a request. It matches
// ErrNoKeyAvailable.
type NoKeyError struct {
	// RetryAt is the earliest time a key is expected to free up (a
	// cooldown ending, a breaker half-opening, a rate-limit window moving
	// on, a provider's quota resetting, a new quota day, a budget's
	// period ending, a disabled key's next trial); zero when no key will free up at a known time (all
	// disabled for good, or held by requests in flight).
	RetryAt time.Time
	// Keys counts the keys in the pool that serve the request's model
	// (every key, without Key.Models); Disabled, Cooling, BreakerOpen and
	// Limited count those in each of those states (KeyState).
	Keys, Disabled, Cooling, BreakerOpen, Limited int
	// Held says, per key in the pool's order (by tier, then as given),
	// why it was not eligible and until when. The keys that do not serve
	// the request's model are not listed: they were never candidates. A
	// key in state KeyActive there was free but taken by other requests
	// first.
	Held []KeyHold

	eventBound bool  // some key is held until a request in flight ends
	ctxErr     error // the request's context ended the wait: its error
}

// KeyHold is a key's state in one word and, when the key cannot take a
// request, why and until when. NoKeyError.Held gives one per key that
// could not be used; KeyStatus (Transport.Snapshot) embeds one, with an
// empty Reason and a zero Until while the key can take a request.
type KeyHold struct {
	KeyID string
	// State is the key's state (see KeyState).
	State KeyState
	// Reason says more, in a few words: "disabled" (KeyDisabled);
	// "cooling down", "provider quota used up" or "cooling down for the
	// model" (the key rests for the request's model: WithCooldownScope)
	// (KeyCooling); "breaker open" (KeyBreakerOpen); "in-flight cap",
	// "rate limit", "daily quota", "trial in flight", or a budget of
	// Key.Budget used up until its period's end ("token budget per
	// minute used up", "token budget per day used up", "cost budget per
	// day used up", "cost budget per month used up") (KeyLimited);
	// "lost a race" (KeyActive: the key was free but taken by other
	// requests first).
	Reason string
	// Until is when the key is expected to free up; zero when not known
	// (it frees when a request in flight ends, or never by itself).
	Until time.Time
}

func (e *NoKeyError) Error() string {
	var b strings.Builder
	b.WriteString("apipool: no key available (")
	b.WriteString(strconv.Itoa(e.Keys))
	if e.Keys == 1 {
		b.WriteString(" key")
	} else {
		b.WriteString(" keys")
	}
	for _, c := range [...]struct {
		n    int
		what string
	}{{e.Disabled, "disabled"}, {e.Cooling, "cooling"}, {e.BreakerOpen, "breaker open"}, {e.Limited, "at a limit"}} {
		if c.n > 0 {
			b.WriteString(", ")
			b.WriteString(strconv.Itoa(c.n))
			b.WriteByte(' ')
			b.WriteString(c.what)
		}
	}
	b.WriteByte(')')
	for i, h := range e.Held {
		if i == 4 {
			b.WriteString(", ...")
			break
		}
		if i == 0 {
			b.WriteString(": ")
		} else {
			b.WriteString(", ")
		}
		b.WriteString(strconv.Quote(h.KeyID))
		b.WriteByte(' ')
		b.WriteString(h.Reason)
		if !h.Until.IsZero() {
			b.WriteString(" until ")
			b.WriteString(h.Until.UTC().Format(timeFormat))
		}
	}
	if !e.RetryAt.IsZero() {
		b.WriteString("; next key free at ")
		b.WriteString(e.RetryAt.UTC().Format(timeFormat))
	}
	if e.ctxErr != nil {
		b.WriteString(": ")
		b.WriteString(e.ctxErr.Error())
	}
	return b.String()
}

// timeFormat is how errors print times: to the millisecond.
const timeFormat = "2006-01-02T15:04:05.000Z07:00"

// Is makes errors.Is(err, ErrNoKeyAvailable) true.
func (e *NoKeyError) Is(target error) bool { return target == ErrNoKeyAvailable }

// Unwrap returns the request context's error when the request's deadline
// or cancel ended its wait for a key, so that errors.Is(err,
// context.DeadlineExceeded) or context.Canceled holds as well; nil
// otherwise.
func (e *NoKeyError) Unwrap() error { return e.ctxErr }

// ConfigError reports bad configuration: Field names what is wrong
// ("keys[2].Secret", "WithMaxAttempts"), Reason says why, and Err holds
// the error of another package that refused the value, if any (the
// *status.ConfigError under WithClassifier). It matches ErrInvalidConfig.
// It is package errdefs's ConfigError, which every apipool package
// returns for bad configuration (their Field starts with the package's
// name: "memory.WithRetention", "sql.Config.DSN").
type ConfigError = errdefs.ConfigError

// ErrInvalidConfig is matched (errors.Is) by every configuration error of
// every apipool package: a *ConfigError, or the status package's
// *status.ConfigError. It is errdefs.ErrInvalidConfig.
var ErrInvalidConfig = errdefs.ErrInvalidConfig
