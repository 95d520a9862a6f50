package apipool

import (
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/hashicorp/go-retryablehttp"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/apipool-ng/apipool/clock"
	"github.com/apipool-ng/apipool/internal/creds"
	"github.com/apipool-ng/apipool/recorder"
	"github.com/apipool-ng/apipool/sharedstate"
	"github.com/apipool-ng/apipool/status"
	"github.com/apipool-ng/apipool/usage"
)

// Option configures a Transport. Options are applied in order by New; an
// option given bad values makes New return a *ConfigError.
type Option interface {
	apply(*config) error
}

type optionFunc func(*config) error

func (f optionFunc) apply(c *config) error { return f(c) }

// Injector applies a key's secret to an outgoing request. The request is
// the pool's own copy: its Header and URL may be modified in place.
type Injector func(r *http.Request, secret Secret)

type injectMode uint8

const (
	injectBearer injectMode = iota
	injectHeader
	injectQuery
	injectFunc
)

// Defaults, as documented on the options that change them.
const (
	DefaultMaxAttempts     = 4
	DefaultCooldown        = 30 * time.Second
	DefaultMaxCooldown     = time.Hour
	DefaultMaxWait         = 5 * time.Second
	DefaultMaxBufferedBody = 1 << 20
	DefaultBackoffMin      = 100 * time.Millisecond
	DefaultBackoffMax      = 2 * time.Second
)

// drainLimit bounds how much of an answer the pool reads to reuse its
// connection before it resends the request on another key.
const drainLimit = 64 << 10

type config struct {
	stripHeaders     []string
	stripParams      []string
	attemptTimeout   time.Duration
	rateLimitHeaders RateLimitHeaderMode
	disabledRetryMin time.Duration
	disabledRetryMax time.Duration
	steer            bool
	noLearn          bool // WithLimitLearning(false)
	budgetParser     status.BudgetParser

	// Routing (routing.go): nil and zero without its options.
	modelOf     func(*http.Request, []byte) string
	scope       CooldownScope
	sessionOf   func(*http.Request, []byte) string
	maxSessions int

	base           http.RoundTripper
	strategy       Strategy
	selector       Selector
	inject         injectMode
	injectName     string
	injector       Injector
	hosts          map[string]bool
	classifier     *status.Classifier
	breaker        BreakerSettings
	onBreaker      func(keyID string, from, to BreakerState)
	cooldown       time.Duration
	maxCooldown    time.Duration
	maxAttempts    int
	maxWait        time.Duration
	retryNonIdem   bool
	backoff        retryablehttp.Backoff
	backoffMin     time.Duration
	backoffMax     time.Duration
	maxBuffered    int64
	recorder       recorder.Recorder
	recorderSet    bool
	probe          Probe
	probeInterval  time.Duration
	clock          clock.Clock
	logger         *slog.Logger
	fingerprintKey []byte
	quotaLoc       *time.Location
	tracerProvider trace.TracerProvider
	meterProvider  metric.MeterProvider
	propagator     propagation.TextMapPropagator
	shared         sharedstate.Store
	usage          usage.Reader // WithUsage, or nil
	prices         usage.Prices
	includeUsage   bool

	alertFunc func(Alert) // WithAlerts (alerts.go)
	alerts    AlertSettings

	clients *ClientBudgets // WithClientBudgets (budgets.go), or nil
}

func defaultConfig() config {
	return config{
		base:        nil,
		strategy:    RoundRobin,
		inject:      injectBearer,
		classifier:  status.Default(),
		cooldown:    DefaultCooldown,
		maxCooldown: DefaultMaxCooldown,
		maxAttempts: DefaultMaxAttempts,
		maxWait:     DefaultMaxWait,
		backoff:     retryablehttp.DefaultBackoff,
		backoffMin:  DefaultBackoffMin,
		backoffMax:  DefaultBackoffMax,
		maxBuffered: DefaultMaxBufferedBody,
		clock:       clock.System{},
		quotaLoc:    time.UTC,

		stripHeaders:     creds.Headers,
		stripParams:      creds.Params,
		disabledRetryMin: DefaultDisabledRetry,
		disabledRetryMax: DefaultDisabledRetryMax,
		steer:            true,
	}
}

// finish settles what depends on several options.
func (c *config) finish() {
	// Names given to WithStripCredentials are compared with canonical
	// header keys: canonicalise them (a copy: the caller's slice and the
	// defaults stay as they are).
	hs := make([]string, len(c.stripHeaders))
	for i, h := range c.stripHeaders {
		hs[i] = http.CanonicalHeaderKey(h)
	}
	if c.inject == injectHeader || c.inject == injectQuery {
		// The pool's own header or parameter is replaced anyway; it needs
		// no separate stripping.
		hs = slices.DeleteFunc(hs, func(h string) bool { return h == c.injectName })
	}
	c.stripHeaders = hs
}

// WithStripCredentials sets the credentials the pool removes from every
// request before it applies its key, whatever the injection: the header
// names and query parameter names an SDK may have filled with a
// placeholder key. The defaults are DefaultStripHeaders (Authorization,
// X-Api-Key, Api-Key, X-Goog-Api-Key) and DefaultStripParams (api_key, key,
// apikey). The same parameters are removed from requests to hosts the pool
// does not key, and the headers from redirect hops to them. Nil slices
// keep the defaults; empty ones remove nothing.
func WithStripCredentials(headers, params []string) Option {
	return optionFunc(func(c *config) error {
		if headers != nil {
			c.stripHeaders = make([]string, 0, len(headers))
			for i, h := range headers {
				if !validHeaderName(h) {
					return &ConfigError{Field: fmt.Sprintf("WithStripCredentials.headers[%d]", i), Reason: fmt.Sprintf("%q is not a valid header name", h)}
				}
				c.stripHeaders = append(c.stripHeaders, http.CanonicalHeaderKey(h))
			}
		}
		if params != nil {
			for i, p := range params {
				if p == "" {
					return &ConfigError{Field: fmt.Sprintf("WithStripCredentials.params[%d]", i), Reason: "empty parameter name"}
				}
			}
			c.stripParams = slices.Clone(params)
		}
		return nil
	})
}

// WithAttemptTimeout bounds each attempt (to its response headers and
// through its body) with a timeout of the pool's own. An attempt that it
// ends counts as a timeout of the key: its breaker hears of it and the
// request may be resent. The caller's own deadline or cancel never counts
// against a key. 0, the default, sets none.
func WithAttemptTimeout(d time.Duration) Option {
	return optionFunc(func(c *config) error {
		if d < 0 {
			return &ConfigError{Field: "WithAttemptTimeout", Reason: fmt.Sprintf("negative duration %v", d)}
		}
		c.attemptTimeout = d
		return nil
	})
}

// Defaults of WithDisabledRetry.
const (
	DefaultDisabledRetry    = time.Minute
	DefaultDisabledRetryMax = time.Hour
)

// WithDisabledRetry sets when a key that the upstream rejected (401, or a
// failed probe) is tried again by itself: one trial request after first,
// then after a backoff that doubles with each rejection in a row, up to
// max. A trial the upstream accepts puts the key back in use. The defaults
// are 1 minute doubling to 1 hour. first 0 disables keys for good: only
// Enable or a passing probe puts them back. Keys disabled with Disable
// get no trial whatever this says: they too stay disabled until Enable or
// a passing probe.
func WithDisabledRetry(first, max time.Duration) Option {
	return optionFunc(func(c *config) error {
		if first < 0 || max < 0 || first > 0 && max < first {
			return &ConfigError{Field: "WithDisabledRetry", Reason: fmt.Sprintf("want 0 <= first <= max, got first %v, max %v", first, max)}
		}
		c.disabledRetryMin, c.disabledRetryMax = first, max
		return nil
	})
}

// WithRateLimitHeaders sets what the rate-limit headers of the responses
// the caller gets describe: the key that answered (RateLimitHeadersAsIs,
// the default), the pool (RateLimitHeadersPool), or nothing
// (RateLimitHeadersRemove). Use RateLimitHeadersPool with SDKs that track
// these headers and refuse calls on their own, such as go-github.
func WithRateLimitHeaders(m RateLimitHeaderMode) Option {
	return optionFunc(func(c *config) error {
		if m > RateLimitHeadersRemove {
			return &ConfigError{Field: "WithRateLimitHeaders", Reason: fmt.Sprintf("unknown mode %d", m)}
		}
		c.rateLimitHeaders = m
		return nil
	})
}

// WithProviderBudget turns on or off (default on) the reading of each
// key's budget from the providers' rate-limit headers (status.ParseBudget:
// OpenAI, Anthropic, GitHub, IETF RateLimit): with it, a key whose answers
// say its quota is used up rests until the reset, before any 429, and no
// more requests go to a key at once than it has left. A reset given as a
// time to wait ("0.42s", OpenAI's) counts from when the provider counted
// the request, which providers do as it arrives: from 50 ms after the
// request was sent, or from its answer when that came sooner (counted
// from a slow answer, the key would rest that much past the reset; at
// 500 ms per answer that left 18% of the quota unused). parser, when
// not nil, reads an API's own headers instead; its now is that time.
// (WithRateLimitHeaders is another matter: what the headers of the
// answers the caller gets say.)
func WithProviderBudget(on bool, parser status.BudgetParser) Option {
	return optionFunc(func(c *config) error {
		c.steer, c.budgetParser = on, parser
		return nil
	})
}

// WithLimitLearning turns on or off (default on) the learning of a key's
// rate limit from its 429s, for upstreams that send no rate-limit headers:
// a 429 after n successes within the window its Retry-After suggests (a
// second or a minute; a longer Retry-After, a quota of hours or days,
// teaches nothing) limits the key to n requests in any such window from
// then on, so that it is not sent requests the upstream would refuse.
// Each later 429 under that limit lowers it by one; 16n successes without
// one raise it by one, a wait that doubles each time a raise is refused
// (up to 512n). A raise refused at its own request (a 429 after the old
// limit's n in the window) puts the old limit back without a cooldown for
// the Retry-After: that limit holds the key until its oldest request in
// the window is a window old, by when an upstream window of that length,
// fixed or sliding, has reset. A key whose answers carry rate-limit
// headers (WithProviderBudget) is steered by them instead.
// Snapshot shows what was learned (KeyStatus.LearnedLimit).
//
// With WithSharedState, what a pool learns is shared: each limit it learns,
// lowers or raises is published (sharedstate.Learned), every replica
// adopts the latest (set last, to the millisecond; at the same millisecond
// the lower), and a replica that starts or reconnects gets it with the
// store's state (redisstate keeps it a day after it was last set). The
// limit then holds across the replicas together, not per replica: it goes
// to the store's Take as the key's PerSecond or PerMinute when it is the
// smaller (it never raises a configured limit), so the store's windows
// count every replica's requests. Each replica counts its own successes:
// the first limit learned while several replicas send at once may be
// below the upstream's (the successes of the one that got the 429), and a
// raise comes after 16n successes of one replica since the last change,
// so about as many times later as there are replicas sharing the key.
// Without shared state, each pool learns and paces on its own.
func WithLimitLearning(on bool) Option {
	return optionFunc(func(c *config) error {
		c.noLearn = !on
		return nil
	})
}

// WithBase sets the transport that sends the requests. Nil, the default,
// means http.DefaultTransport.
//
// The pool sends the base its own copy of each request, and reuses the
// copy's header map for a later request once the response body is
// closed, as the http.RoundTripper contract allows; for a request without
// a body (and without the legacy Request.Cancel) it reuses the whole copy.
// A base that keeps requests for later (a test double that records them,
// say) must keep r.Clone(r.Context()) rather than r.
func WithBase(rt http.RoundTripper) Option {
	return optionFunc(func(c *config) error { c.base = rt; return nil })
}

// WithStrategy sets how a key is picked for each attempt. The default is
// RoundRobin.
func WithStrategy(s Strategy) Option {
	return optionFunc(func(c *config) error {
		if !s.valid() {
			return &ConfigError{Field: "WithStrategy", Reason: fmt.Sprintf("unknown strategy %d", int(s))}
		}
		c.strategy, c.selector = s, nil
		return nil
	})
}

// WithSelector sets a custom Selector, in place of a Strategy.
func WithSelector(s Selector) Option {
	return optionFunc(func(c *config) error {
		if s == nil {
			return &ConfigError{Field: "WithSelector", Reason: "nil selector"}
		}
		c.selector = s
		return nil
	})
}

// WithBearer sends the secret as "Authorization: Bearer <secret>". This is
// the default.
func WithBearer() Option {
	return optionFunc(func(c *config) error { c.inject, c.injectName = injectBearer, ""; return nil })
}

// WithHeader sends the secret as the value of the named header, such as
// "X-Api-Key".
func WithHeader(name string) Option {
	return optionFunc(func(c *config) error {
		if !validHeaderName(name) {
			return &ConfigError{Field: "WithHeader", Reason: fmt.Sprintf("%q is not a valid header name", name)}
		}
		c.inject, c.injectName = injectHeader, http.CanonicalHeaderKey(name)
		return nil
	})
}

// WithQueryParam sends the secret as the named URL query parameter, such
// as "key". The pool redacts it from the errors it returns; prefer a header
// where the API allows one, since URLs end up in logs.
func WithQueryParam(name string) Option {
	return optionFunc(func(c *config) error {
		if name == "" {
			return &ConfigError{Field: "WithQueryParam", Reason: "empty parameter name"}
		}
		c.inject, c.injectName = injectQuery, name
		return nil
	})
}

// WithInjector applies the secret with a function of the caller's, for
// schemes the other options do not cover (a signature, say).
func WithInjector(f Injector) Option {
	return optionFunc(func(c *config) error {
		if f == nil {
			return &ConfigError{Field: "WithInjector", Reason: "nil function"}
		}
		c.inject, c.injector = injectFunc, f
		return nil
	})
}

// WithHosts limits the hosts a key is sent to. A host is a name as in
// URL.Host, with or without a port ("api.example.com",
// "api.example.com:8443", "[::1]"), in any case; a name without a port
// matches any port, and a name with one only the URLs that name that port
// ("api.example.com:443" does not match https://api.example.com/, which
// names none). Requests to other hosts pass through with no key and no
// retries. A port past 65535, or a name ending with a dot (which no
// request's host has), is refused.
//
// Without WithHosts a key is sent to whichever host a request names, except
// on a redirect: a request that follows a redirect to a host other than the
// original request's goes out with no key.
func WithHosts(hosts ...string) Option {
	return optionFunc(func(c *config) error {
		if len(hosts) == 0 {
			return &ConfigError{Field: "WithHosts", Reason: "no host given"}
		}
		c.hosts = make(map[string]bool, len(hosts))
		for i, h := range hosts {
			h = strings.ToLower(strings.TrimSpace(h))
			if h == "" || strings.ContainsAny(h, "/ @?#") {
				return &ConfigError{Field: fmt.Sprintf("WithHosts[%d]", i), Reason: fmt.Sprintf("%q is not a host name", hosts[i])}
			}
			name := h
			if hn, port, err := net.SplitHostPort(h); err == nil {
				if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
					return &ConfigError{Field: fmt.Sprintf("WithHosts[%d]", i), Reason: fmt.Sprintf("%q has no port from 1 to 65535", hosts[i])}
				}
				name = hn
			}
			if strings.HasSuffix(name, ".") {
				return &ConfigError{Field: fmt.Sprintf("WithHosts[%d]", i), Reason: fmt.Sprintf("%q ends with a dot, which no request's host does: drop it", hosts[i])}
			}
			if len(h) > 2 && h[0] == '[' && h[len(h)-1] == ']' {
				// An IPv6 address without a port, as URL.Host writes
				// it: matched against URL.Hostname, which drops the
				// brackets.
				h = h[1 : len(h)-1]
			}
			c.hosts[h] = true
		}
		return nil
	})
}

// WithClassifier sets how responses and errors map to statuses. The
// default rates 429 as rate limited, 401 as an invalid key, and 403 as
// rate limited when it carries rate-limit evidence (Retry-After, or a
// budget used up: x-ratelimit-remaining: 0), else as a client error that
// changes no key (see status.Config). A bad Config makes New return a
// *ConfigError whose Err is the *status.ConfigError.
func WithClassifier(cfg status.Config) Option {
	return optionFunc(func(c *config) error {
		cl, err := status.NewClassifier(cfg)
		if err != nil {
			reason := err.Error()
			if se, ok := err.(*status.ConfigError); ok {
				reason = se.Field + ": " + se.Reason
			}
			return &ConfigError{Field: "WithClassifier", Reason: reason, Err: err}
		}
		c.classifier = cl
		return nil
	})
}

// WithCooldown sets how long a rate-limited key rests when the response
// says nothing of when to retry (default 30s), and the most any response
// can make it rest (default 1h).
func WithCooldown(fallback, max time.Duration) Option {
	return optionFunc(func(c *config) error {
		if fallback <= 0 || max <= 0 || fallback > max {
			return &ConfigError{Field: "WithCooldown", Reason: fmt.Sprintf("want 0 < fallback <= max, got fallback %v, max %v", fallback, max)}
		}
		c.cooldown, c.maxCooldown = fallback, max
		return nil
	})
}

// WithMaxAttempts bounds the attempts of one request that end in a server
// error, a network error or a timeout, the first included (default 4).
// Rate-limit answers are counted apart: a request resends past them on
// other keys, and waits for keys to free up, for as long as its wait
// budget lasts (WithMaxWait and its context), with at most twice as many
// rate-limited attempts as the pool has keys (at least 4). A key the upstream rejects
// (401) is resent once on another key; a second rejection goes back to the
// caller. 1 turns every resend off, that of a request that went out on a
// stale keep-alive connection (closed by the upstream, no answer) too;
// otherwise such an attempt is not counted here (see the README's
// Statuses).
func WithMaxAttempts(n int) Option {
	return optionFunc(func(c *config) error {
		if n < 1 || n > 100 {
			return &ConfigError{Field: "WithMaxAttempts", Reason: fmt.Sprintf("want 1 to 100, got %d", n)}
		}
		c.maxAttempts = n
		return nil
	})
}

// WithMaxWait bounds how long a request waits for a key to free up when
// none is eligible (default 5s), counting every wait of the request (and
// its backoffs after server errors), not the time its attempts take. The
// request's context deadline bounds it too. A request waits only when a
// key will free up within what is left. 0 means never wait: fail at once
// with a *NoKeyError.
func WithMaxWait(d time.Duration) Option {
	return optionFunc(func(c *config) error {
		if d < 0 {
			return &ConfigError{Field: "WithMaxWait", Reason: fmt.Sprintf("negative duration %v", d)}
		}
		c.maxWait = d
		return nil
	})
}

// WithRetryNonIdempotent lets server errors and network errors of
// non-idempotent requests (POST, PATCH) be resent. By default only
// idempotent methods, and requests with an Idempotency-Key header, are
// resent after such errors. Rate-limited and invalid-key answers are resent
// for any method regardless, since the upstream did no work.
func WithRetryNonIdempotent(on bool) Option {
	return optionFunc(func(c *config) error { c.retryNonIdem = on; return nil })
}

// WithBackoff sets the wait before resending after a server or network
// error, as a go-retryablehttp Backoff with its bounds. The default is
// retryablehttp.DefaultBackoff between 100ms and 2s.
func WithBackoff(b retryablehttp.Backoff, min, max time.Duration) Option {
	return optionFunc(func(c *config) error {
		switch {
		case b == nil:
			return &ConfigError{Field: "WithBackoff", Reason: "nil backoff function"}
		case min < 0:
			return &ConfigError{Field: "WithBackoff", Reason: fmt.Sprintf("negative min %v", min)}
		case max < min:
			return &ConfigError{Field: "WithBackoff", Reason: fmt.Sprintf("max %v below min %v", max, min)}
		}
		c.backoff, c.backoffMin, c.backoffMax = b, min, max
		return nil
	})
}

// WithMaxBufferedBody bounds how much of a request body without GetBody
// the pool keeps in memory so it can resend it (default 1 MiB). A larger
// body is streamed and sent once. 0 disables buffering.
func WithMaxBufferedBody(n int64) Option {
	return optionFunc(func(c *config) error {
		if n < 0 {
			return &ConfigError{Field: "WithMaxBufferedBody", Reason: fmt.Sprintf("negative size %d", n)}
		}
		c.maxBuffered = n
		return nil
	})
}

// WithRecorder sets where usage events go. The default is an in-memory
// store (package recorder/memory), which also answers Stats. Nil discards
// events.
func WithRecorder(r recorder.Recorder) Option {
	return optionFunc(func(c *config) error {
		c.recorder, c.recorderSet = r, true
		return nil
	})
}

// WithClock sets the pool's clock (clock.System by default): cooldowns,
// quotas, waits and latency all read it, and so does the pool's default
// recorder. It is for tests, which give a fake one (see package clock) so
// that nothing sleeps.
func WithClock(clk clock.Clock) Option {
	return optionFunc(func(c *config) error {
		if clk == nil {
			return &ConfigError{Field: "WithClock", Reason: "nil clock"}
		}
		c.clock = clk
		return nil
	})
}

// WithLogger sets a logger for key state changes (cooldowns, disabled and
// re-enabled keys, breaker changes). The default logs nothing. Secrets are
// never logged.
func WithLogger(l *slog.Logger) Option {
	return optionFunc(func(c *config) error { c.logger = l; return nil })
}

// WithFingerprintKey sets the HMAC key of key fingerprints. Give every
// replica of a service the same one so that their stats agree.
func WithFingerprintKey(k []byte) Option {
	return optionFunc(func(c *config) error {
		if len(k) == 0 {
			return &ConfigError{Field: "WithFingerprintKey", Reason: "empty key"}
		}
		c.fingerprintKey = append([]byte(nil), k...)
		return nil
	})
}

// WithQuotaLocation sets where a day starts for Key.PerDay (default UTC).
func WithQuotaLocation(loc *time.Location) Option {
	return optionFunc(func(c *config) error {
		if loc == nil {
			return &ConfigError{Field: "WithQuotaLocation", Reason: "nil location"}
		}
		c.quotaLoc = loc
		return nil
	})
}

// WithBreaker sets the per-key circuit breakers' settings.
func WithBreaker(s BreakerSettings) Option {
	return optionFunc(func(c *config) error {
		if err := s.validate(); err != nil {
			return err
		}
		c.breaker = s
		return nil
	})
}

// WithBreakerStateChange sets a function called when a key's breaker
// changes state. It runs outside the pool's and the breaker's locks, on the
// goroutine of the request that caused the change.
func WithBreakerStateChange(f func(keyID string, from, to BreakerState)) Option {
	return optionFunc(func(c *config) error { c.onBreaker = f; return nil })
}

// WithProbe sets the probe CheckUsable runs on each key. With an interval
// above 0, a background loop also probes disabled keys at that interval and
// re-enables those that pass; Close stops it.
func WithProbe(p Probe, interval time.Duration) Option {
	return optionFunc(func(c *config) error {
		if p == nil {
			return &ConfigError{Field: "WithProbe", Reason: "nil probe"}
		}
		if interval < 0 {
			return &ConfigError{Field: "WithProbe", Reason: fmt.Sprintf("negative interval %v", interval)}
		}
		c.probe, c.probeInterval = p, interval
		return nil
	})
}

func validHeaderName(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		ch := s[i]
		if ch <= ' ' || ch >= 0x7f || strings.IndexByte("\"(),/:;<=>?@[\\]{}", ch) >= 0 {
			return false
		}
	}
	return true
}
