package dashboard

import (
	"crypto/sha256"
	"fmt"
	"time"

	"github.com/apipool-ng/apipool"
	"github.com/apipool-ng/apipool/clock"
	"github.com/apipool-ng/apipool/recorder"
)

// optionError returns the *apipool.ConfigError of a bad option (or New
// argument) named field.
func optionError(field, format string, args ...any) error {
	return &apipool.ConfigError{Field: "dashboard." + field, Reason: fmt.Sprintf(format, args...)}
}

// Option configures a dashboard. Options are sealed: they are made by the
// With functions of this package only. They are applied in order by New;
// an option given a bad value makes New return a *apipool.ConfigError
// (matching apipool.ErrInvalidConfig).
type Option interface {
	apply(*config) error
}

type optionFunc func(*config) error

func (f optionFunc) apply(c *config) error { return f(c) }

// Refresh bounds.
const (
	DefaultRefresh = 3 * time.Second
	MinRefresh     = 250 * time.Millisecond
	MaxRefresh     = 10 * time.Minute
)

// DefaultChartKeys is how many keys the per-key charts draw by default.
const DefaultChartKeys = 8

type config struct {
	stats     recorder.Stats
	statsSet  bool
	bearer    *[sha256.Size]byte // hash of the token
	basicUser *[sha256.Size]byte
	basicPass *[sha256.Size]byte
	actions   bool
	refresh   time.Duration
	clock     clock.Clock
	waits     func() int64
	chartKeys int
	title     string
}

func defaultConfig() config {
	return config{refresh: DefaultRefresh, clock: clock.System{}, chartKeys: DefaultChartKeys, title: "apipool"}
}

// WithStats sets where the dashboard reads usage stats from. By default it
// reads the pool's own (Pool.Stats): whatever store the pool records
// into. A nil stats hides the usage columns and charts (they show "-").
func WithStats(stats recorder.Stats) Option {
	return optionFunc(func(c *config) error {
		c.stats, c.statsSet = stats, true
		return nil
	})
}

// WithAuthToken requires every request to carry the header
// "Authorization: Bearer <token>". It suits scripts and authenticating
// proxies; for a browser, use WithBasicAuth (browsers send it by
// themselves once asked). Both may be set: either then passes. The token
// is compared in constant time. An empty token is an error.
func WithAuthToken(token string) Option {
	return optionFunc(func(c *config) error {
		if token == "" {
			return optionError("WithAuthToken", "empty token")
		}
		h := sha256.Sum256([]byte(token))
		c.bearer = &h
		return nil
	})
}

// WithBasicAuth requires HTTP basic authentication with this user and
// password, compared in constant time. An empty user or password is an
// error.
func WithBasicAuth(user, password string) Option {
	return optionFunc(func(c *config) error {
		if user == "" || password == "" {
			return optionError("WithBasicAuth", "empty user or password")
		}
		u, p := sha256.Sum256([]byte(user)), sha256.Sum256([]byte(password))
		c.basicUser, c.basicPass = &u, &p
		return nil
	})
}

// WithActions turns on the page's actions: disable and enable a key, and
// probe every key (the pool's CheckUsable). They are off by default. They
// are POST requests checked against cross-site request forgery; still,
// turn them on only with WithAuthToken or WithBasicAuth, or behind an
// authenticating proxy.
func WithActions() Option {
	return optionFunc(func(c *config) error {
		c.actions = true
		return nil
	})
}

// WithRefresh sets how often the page polls for new data: DefaultRefresh
// (3s) by default, between MinRefresh and MaxRefresh.
func WithRefresh(d time.Duration) Option {
	return optionFunc(func(c *config) error {
		if d < MinRefresh || d > MaxRefresh {
			return optionError("WithRefresh", "%v is outside [%v, %v]", d, MinRefresh, MaxRefresh)
		}
		c.refresh = d
		return nil
	})
}

// WithWaits sets a function that returns how many times requests have
// waited for a key to free up, shown in the pool totals. Without it, the
// pool's own count (apipool.Transport.Waits) is shown.
func WithWaits(waits func() int64) Option {
	return optionFunc(func(c *config) error {
		c.waits = waits
		return nil
	})
}

// WithChartKeys sets how many keys the per-key charts draw, the busiest
// in the window first, the rest summed as "other keys": DefaultChartKeys
// (8) by default, from 1 to 64.
func WithChartKeys(n int) Option {
	return optionFunc(func(c *config) error {
		if n < 1 || n > 64 {
			return optionError("WithChartKeys", "%d is outside [1, 64]", n)
		}
		c.chartKeys = n
		return nil
	})
}

// WithTitle sets the page's title, "apipool" by default.
func WithTitle(title string) Option {
	return optionFunc(func(c *config) error {
		if title == "" {
			return optionError("WithTitle", "empty title")
		}
		c.title = title
		return nil
	})
}

// WithClock sets the clock that windows end at (clock.System by default),
// for tests that record events at fixed times. The dashboard reads its Now
// only, and never asks it for a timer.
func WithClock(clk clock.Clock) Option {
	return optionFunc(func(c *config) error {
		if clk == nil {
			return optionError("WithClock", "nil clock")
		}
		c.clock = clk
		return nil
	})
}
