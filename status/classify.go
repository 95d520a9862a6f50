package status

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/apipool-ng/apipool/errdefs"
)

// Config configures a [Classifier]. The zero value means the defaults:
// 429 is a rate limit, 401 means an invalid key, and 403 is a rate limit
// when the answer carries rate-limit evidence (a Retry-After, or a
// rate-limit budget used up, as GitHub sends), else a client error: a
// plain 403 (a permission, a region) says nothing of the key.
type Config struct {
	// RateLimitCodes are the HTTP status codes that mean the key is rate
	// limited. Nil means {429}. Some APIs also use 403 or 402.
	RateLimitCodes []int
	// InvalidKeyCodes are the HTTP status codes that mean the key is not
	// valid (revoked, wrong, unpaid). Nil means {401}; in the first release
	// it meant {401, 403}. A code listed in both lists counts as a rate
	// limit.
	InvalidKeyCodes []int
	// EvidenceCodes are the HTTP status codes that count as a rate limit
	// when the answer carries rate-limit evidence (see
	// [RateLimitEvidence]), and as their other class without it. Nil
	// means {403}; an empty non-nil slice turns this off.
	EvidenceCodes []int
	// Hook, when set, runs first on every response. If it returns ok, its
	// status is used; otherwise the codes above decide. It may read the
	// response's headers but must not read or close its body.
	Hook func(resp *http.Response) (s Status, ok bool)
}

// Classifier maps a response, or a transport error, to a Status. Build one
// with [NewClassifier]; the zero value is not usable. It is safe for
// concurrent use and never reads a response body.
type Classifier struct {
	codes    [600]Status
	evidence [600]bool
	hook     func(*http.Response) (Status, bool)
}

// ConfigError reports a bad classifier configuration: Field names the
// Config field at fault ("InvalidKeyCodes[1]"), Reason says why. It
// matches errdefs.ErrInvalidConfig (apipool.ErrInvalidConfig), as every
// apipool configuration error does. It is a type of its own, rather than
// errdefs.ConfigError, so that errors.As finds it inside the
// apipool.ConfigError of apipool.WithClassifier, which holds it as its
// cause.
type ConfigError struct {
	Field  string
	Reason string
}

func (e *ConfigError) Error() string {
	return "apipool: invalid configuration: status.Config." + e.Field + ": " + e.Reason
}

// Is makes errors.Is(err, errdefs.ErrInvalidConfig) true.
func (e *ConfigError) Is(target error) bool { return target == errdefs.ErrInvalidConfig }

// NewClassifier validates c and returns a classifier. Codes outside
// 100..599 are an error: a *ConfigError.
func NewClassifier(c Config) (*Classifier, error) {
	cl := &Classifier{hook: c.Hook}
	for code := 100; code < 600; code++ {
		switch {
		case code >= 200 && code < 400:
			cl.codes[code] = Success
		case code >= 500:
			cl.codes[code] = ServerError
		case code >= 400:
			cl.codes[code] = ClientError
		default:
			cl.codes[code] = Success // 1xx reaching the caller (101 Switching Protocols)
		}
	}
	inv := c.InvalidKeyCodes
	if inv == nil {
		inv = []int{http.StatusUnauthorized}
	}
	rl := c.RateLimitCodes
	if rl == nil {
		rl = []int{http.StatusTooManyRequests}
	}
	for i, code := range inv {
		if code < 100 || code > 599 {
			return nil, &ConfigError{Field: fmt.Sprintf("InvalidKeyCodes[%d]", i), Reason: fmt.Sprintf("%d is not an HTTP status code (100-599)", code)}
		}
		cl.codes[code] = InvalidKey
	}
	for i, code := range rl {
		if code < 100 || code > 599 {
			return nil, &ConfigError{Field: fmt.Sprintf("RateLimitCodes[%d]", i), Reason: fmt.Sprintf("%d is not an HTTP status code (100-599)", code)}
		}
		cl.codes[code] = ReachLimit
	}
	ev := c.EvidenceCodes
	if ev == nil {
		ev = []int{http.StatusForbidden}
	}
	for i, code := range ev {
		if code < 100 || code > 599 {
			return nil, &ConfigError{Field: fmt.Sprintf("EvidenceCodes[%d]", i), Reason: fmt.Sprintf("%d is not an HTTP status code (100-599)", code)}
		}
		cl.evidence[code] = true
	}
	return cl, nil
}

var defaultClassifier, _ = NewClassifier(Config{})

// Default returns the classifier with the default configuration.
func Default() *Classifier { return defaultClassifier }

// Classify returns the status of one attempt: of err when it is not nil,
// else of resp. It is ClassifyAt with the time now.
func (c *Classifier) Classify(resp *http.Response, err error) Status {
	return c.ClassifyAt(resp, err, time.Now())
}

// ClassifyAt returns the status of one attempt, reading rate-limit resets
// relative to now: of err when it is not nil, else of resp.
func (c *Classifier) ClassifyAt(resp *http.Response, err error, now time.Time) Status {
	if err != nil {
		return ClassifyError(err)
	}
	if resp == nil {
		return NetworkError
	}
	if c.hook != nil {
		if s, ok := c.hook(resp); ok && s.Valid() {
			return s
		}
	}
	if resp.StatusCode < 100 || resp.StatusCode > 599 {
		return Failed
	}
	if c.evidence[resp.StatusCode] && RateLimitEvidence(resp.Header, now) {
		return ReachLimit
	}
	return c.codes[resp.StatusCode]
}

// ClassifyError maps a transport error to Canceled, Timeout or NetworkError.
func ClassifyError(err error) Status {
	switch {
	case err == nil:
		return Success
	case errors.Is(err, context.Canceled):
		return Canceled
	case errors.Is(err, context.DeadlineExceeded):
		return Timeout
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return Timeout
	}
	return NetworkError
}
