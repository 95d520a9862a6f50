package apipool

import (
	"errors"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// ErrNoKeyAvailable is matched (errors.Is) by the error RoundTrip returns
// when no key can be used for a request within the wait allowed. The error
// is a *NoKeyError, which tells when the next key frees up.
var ErrNoKeyAvailable = errors.New("apipool: no key available")

// ErrUnknownKey is returned for a key ID the pool does not hold.
var ErrUnknownKey = errors.New("apipool: unknown key")

// ErrClosed is returned by RoundTrip after Close.
var ErrClosed = errors.New("apipool: transport closed")

// NoKeyError is returned when no key is eligible for a request. It matches
// ErrNoKeyAvailable.
type NoKeyError struct {
	// RetryAt is the earliest time a key is expected to free up (a
	// cooldown ending, a breaker half-opening, a rate-limit token, a new
	// quota day); zero when no key will free up by itself (all disabled
	// or removed).
	RetryAt time.Time
	// Keys counts the keys in the pool; Disabled, CoolingDown,
	// BreakerOpen and Limited count why the others were not eligible
	// (a key may count in more than one).
	Keys, Disabled, CoolingDown, BreakerOpen, Limited int

	inFlightBound bool // some key is held by its in-flight cap alone
}

func (e *NoKeyError) Error() string {
	var b strings.Builder
	b.WriteString("apipool: no key available (")
	b.WriteString(strconv.Itoa(e.Keys))
	b.WriteString(" keys")
	for _, c := range [...]struct {
		n    int
		what string
	}{{e.Disabled, "disabled"}, {e.CoolingDown, "cooling down"}, {e.BreakerOpen, "breaker open"}, {e.Limited, "at a limit"}} {
		if c.n > 0 {
			b.WriteString(", ")
			b.WriteString(strconv.Itoa(c.n))
			b.WriteByte(' ')
			b.WriteString(c.what)
		}
	}
	b.WriteByte(')')
	if !e.RetryAt.IsZero() {
		b.WriteString("; next key free at ")
		b.WriteString(e.RetryAt.UTC().Format(time.RFC3339Nano))
	}
	return b.String()
}

// Is makes errors.Is(err, ErrNoKeyAvailable) true.
func (e *NoKeyError) Is(target error) bool { return target == ErrNoKeyAvailable }

// ConfigError reports bad configuration: Field names what is wrong
// ("keys[2].Secret", "WithMaxAttempts"), Reason says why.
type ConfigError struct {
	Field  string
	Reason string
}

func (e *ConfigError) Error() string {
	return "apipool: invalid configuration: " + e.Field + ": " + e.Reason
}

// ErrInvalidConfig is matched (errors.Is) by every *ConfigError.
var ErrInvalidConfig = errors.New("apipool: invalid configuration")

// Is makes errors.Is(err, ErrInvalidConfig) true.
func (e *ConfigError) Is(target error) bool { return target == ErrInvalidConfig }

// redactedError hides a secret that an underlying error's text contains
// (a URL with the key in its query, say). It does not unwrap, so the cause,
// secret and all, cannot be reached with errors.As; errors.Is still sees
// through it (context.Canceled, io.ErrUnexpectedEOF...), and it keeps the
// cause's Timeout and Temporary answers for net.Error checks.
type redactedError struct {
	msg string
	err error
}

func (e *redactedError) Error() string        { return e.msg }
func (e *redactedError) Is(target error) bool { return errors.Is(e.err, target) }
func (e *redactedError) Timeout() bool {
	t, ok := e.err.(interface{ Timeout() bool })
	return ok && t.Timeout()
}
func (e *redactedError) Temporary() bool {
	t, ok := e.err.(interface{ Temporary() bool })
	return ok && t.Temporary()
}

// redact returns err with every occurrence of the secrets removed from its
// text, as they are and URL-escaped (as a query parameter shows them in
// a URL), or err itself when its text holds none.
func redact(err error, secrets ...string) error {
	if err == nil {
		return nil
	}
	msg := err.Error()
	changed := false
	for _, s := range secrets {
		if s == "" {
			continue
		}
		for _, form := range [...]string{s, url.QueryEscape(s)} {
			if strings.Contains(msg, form) {
				msg = strings.ReplaceAll(msg, form, redacted)
				changed = true
			}
		}
	}
	if !changed {
		return err
	}
	return &redactedError{msg: msg, err: err}
}
