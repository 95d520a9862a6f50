// Package redisstate shares the key state of apipool pools across the
// replicas of a service, on Redis: it implements [sharedstate.Store].
//
//	rdb := redis.NewClient(&redis.Options{
//		Addr:                  "redis:6379",
//		DialTimeout:           time.Second,
//		DialerRetries:         1,
//		ReadTimeout:           500 * time.Millisecond,
//		WriteTimeout:          500 * time.Millisecond,
//		ContextTimeoutEnabled: true,
//		MaxRetries:            -1,
//	})
//	store, err := redisstate.New(rdb)
//	...
//	pool, err := apipool.New(keys, apipool.WithSharedState(store))
//
// Any [redis.UniversalClient] works: a standalone client, a Sentinel
// failover client or a Cluster client. Every key the store uses begins with
// the hash tag "{prefix}", so all of them live in one hash slot and its Lua
// scripts may touch several of them in a Cluster.
//
// # What is kept in Redis
//
// With the default prefix "apipool":
//
//	{apipool}:cooldown         hash: key ID → cooldown deadline, ms since the epoch
//	{apipool}:disabled         hash: key ID → {"reason": ..., "at": ms}
//	{apipool}:learned          hash: key ID → {"n": limit, "w": window in ms, "at": ms}; expires a
//	                           day after the last limit set, and an entry set more than a day ago
//	                           is removed by the next Watch
//	{apipool}:epoch            a random value that changes when Redis loses its data
//	{apipool}:day:<day>:<id>   counter of key id's requests on quota day <day>; expires after 2 days
//	{apipool}:second:<id>      sorted set: the times of key id's requests in its per-second window
//	{apipool}:second-n:<id>    hash: how many requests count at each of those times, and in all
//	{apipool}:minute:<id>      sorted set: the same for the per-minute window
//	{apipool}:minute-n:<id>    hash: the same for the per-minute window
//	{apipool}:spend:<scope>:<budget>:<period>:<id>
//	                           float: what key (scope "key") or client ("client") <id> spent
//	                           against a budget in a period; expires a minute after the period
//	{apipool}:changes          the pub/sub channel of changes
//
// A cooldown is set by a Lua script that keeps the later deadline and
// publishes the change only when the deadline moved. A disable keeps the
// first reason when the key is already disabled (and then publishes
// nothing); an enable removes the key's entries from both hashes and always
// publishes. Messages are small JSON objects; see [Store.Watch].
//
// A limit a pool learned from a key's 429s (apipool.WithLimitLearning,
// sharedstate.Learned) is kept by a Lua script that keeps the one set later
// (to the millisecond; at the same millisecond, the lower) and publishes
// the change only when it kept it. A Watch reports the learned limits set
// within the last day: one left unchanged for a day is forgotten (a pool
// that runs keeps it; one that starts learns it anew), so that a limit
// learned long ago does not hold a key back for ever. An enable leaves the
// learned limit as it is. The pools enforce a learned limit through
// [Store.Take], as the key's PerSecond or PerMinute when it is the
// smaller, so it holds across the replicas together.
//
// # Limits
//
// [Store.Take] runs one Lua script per call, which enforces all of a key's
// limits at once, with the meaning they have in one pool (see
// [apipool.Key]):
//
//   - PerSecond and PerMinute are sliding windows: no interval of one
//     second holds more than PerSecond requests (a fraction is dropped;
//     below 1, one request in any 1/PerSecond seconds), none of one minute
//     more than PerMinute, wherever the interval starts. Each window is a
//     log of the times requests count as sent (a sorted set of times and a
//     hash of how many at each, with the total): a request fits when fewer
//     than the limit count in the window's length before now. It takes
//     memory per time in the window, at most the limit per key (a leased
//     block shares one time); a token bucket (GCRA) would keep one number,
//     but lets a burst of the limit follow a full window, and a fixed
//     window allows twice the limit across a boundary. Most calls read the
//     hash alone; the script costs Redis about 2 to 3 times what the GCRA
//     script it replaced did (measured: 9 to 15 µs a call against 5 to 6,
//     on a busy 2-core machine).
//   - PerDay is a counter per key and quota day: the calendar day in the
//     pool's quota location, as the pool names it (Limits.Day).
//
// The pool sends the requests a Take grants before a deadline it gives
// ([sharedstate.Limits].Lease: a few milliseconds more than Takes take, 100 ms
// for a leased block), and the script counts them as sent then. So no
// window of any replica's requests, taken together, holds more than the
// limit: the bound across replicas is the limit itself, with no
// allowance, measured when the requests are sent. A request counts up to
// its deadline's slack longer than it needs to, which costs a limit kept
// busy that share of its requests (at PerSecond, 1% for 10 ms of slack;
// 10% for leased blocks; nothing to speak of at PerMinute). Requests never
// sent are not given back.
//
// # Budgets
//
// [Store.Spend] (sharedstate.Spender) counts what keys and clients spend
// against their budgets (apipool.Budget): one float per budget, period and
// key or client, added to with INCRBYFLOAT and expiring a minute after the
// period ends. A pool sends its spends off the request path, merged, and
// takes in the totals Redis answers: a replica knows the others' spend as
// of its own last spend on the key. So a key may overshoot its budget by
// the units of the requests in flight on it across the replicas when the
// count reaches the budget, and of those each replica starts before its
// next answer on the key tells it the total (at most its own requests in
// flight again): at most twice the requests in flight on the key across
// the replicas at once, times the largest answer's units.
//
// # Clocks
//
// The script uses the caller's now, not Redis's TIME, so that the pool's
// clock rules (and tests need no sleeps). The replicas' clocks must agree
// (NTP) for the rate limits to hold across them: a replica whose clock
// runs ahead of the others' by d does not count what they sent in the
// first d of a window, so that window can hold that many more requests
// (about d's worth at a steady rate: one for 1 ms of skew at PerSecond
// 1000; never more than the limit again). Daily quotas are exact whatever
// the clocks, except around midnight, where a replica counts against the
// day its own clock says.
//
// # Faults
//
// Every method returns an error when Redis fails and counts it in
// [Store.Stats]. How promptly depends on the client, so set it up as above:
// go-redis honours context deadlines only with ContextTimeoutEnabled, and
// otherwise waits up to its ReadTimeout (3 s by default); by default it
// dials 5 times, 100 ms apart (DialerRetries), and retries a failed command
// 3 times (MaxRetries), so that a Take on the request path would wait about
// 400 ms for a Redis that refuses connections instead of failing at once.
// The store bounds each call with its own timeout too (see [WithTimeout]).
package redisstate

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/apipool-ng/apipool"
	"github.com/apipool-ng/apipool/clock"
	"github.com/apipool-ng/apipool/sharedstate"
)

// learnedTTL is how long a learned limit is kept after it was last set
// (sharedstate.Learned): a day. A key in use sets it again each time it
// lowers or raises it; one left alone for a day learns its limit anew.
const learnedTTL = 24 * time.Hour

// Defaults, as documented on the options that change them.
const (
	DefaultPrefix        = "apipool"
	DefaultTimeout       = time.Second
	DefaultCheckInterval = 15 * time.Second
)

// ErrInvalid is matched (errors.Is) by the errors of calls given arguments
// that no retry can make work: an empty key ID, an unknown change kind, a
// negative limit. It also matches sharedstate.ErrRejected, so the pool
// drops such a change rather than publish it again. (New's errors for a
// bad option or a nil client are configuration errors instead: an
// *apipool.ConfigError, matching apipool.ErrInvalidConfig.)
var ErrInvalid error = invalidError{}

type invalidError struct{}

func (invalidError) Error() string        { return "redisstate: invalid argument" }
func (invalidError) Is(target error) bool { return target == sharedstate.ErrRejected }

// Store is an [sharedstate.Store] on Redis. Create it with [New]; the
// zero Store is not usable. It is safe for concurrent use. It does not own
// the client: close the client when done with the store.
type Store struct {
	c        redis.UniversalClient
	prefix   string
	timeout  time.Duration
	interval time.Duration
	clock    clock.Clock

	// Redis keys and the channel, all beginning with "{prefix}".
	cooldownKey, disabledKey, learnedKey, epochKey, channel string
	dayPrefix, secondPrefix, minutePrefix                   string
	spendPrefix                                             string

	errs      atomic.Uint64
	malformed atomic.Uint64
	lastErr   atomic.Pointer[errRecord]

	// watchMu guards what Watch remembers between its calls.
	watchMu sync.Mutex
	// reported holds the keys Watch has reported disabled or cooling, and
	// not enabled since; epoch is the value of the epoch key Watch or
	// Publish last read; lost, that a Publish found it changed and no
	// Watch has said so yet.
	reported map[string]struct{}
	epoch    string
	lost     bool
}

type errRecord struct {
	err error
	at  time.Time
}

var _ sharedstate.Store = (*Store)(nil)

// Option configures a Store. Options are sealed: they are made by the With
// functions of this package only. They are applied in order by New; an
// option given a bad value makes New return a *apipool.ConfigError
// (matching apipool.ErrInvalidConfig).
type Option interface {
	apply(*config) error
}

type optionFunc func(*config) error

func (f optionFunc) apply(c *config) error { return f(c) }

type config struct {
	prefix   string
	timeout  time.Duration
	interval time.Duration
	clock    clock.Clock
}

// optionError returns the *apipool.ConfigError of a bad option named
// field.
func optionError(field, format string, args ...any) error {
	return &apipool.ConfigError{Field: "redisstate." + field, Reason: fmt.Sprintf(format, args...)}
}

// WithPrefix sets the prefix of every Redis key and channel the store
// uses, as the hash tag "{prefix}". Pools that share keys must use the same
// prefix; pools with other keys may share a Redis under other prefixes. It
// must be non-empty, at most 128 bytes, without braces. The default is
// DefaultPrefix, "apipool".
func WithPrefix(p string) Option {
	return optionFunc(func(c *config) error {
		switch {
		case p == "":
			return optionError("WithPrefix", "empty prefix")
		case len(p) > 128:
			return optionError("WithPrefix", "prefix longer than 128 bytes")
		case strings.ContainsAny(p, "{}"):
			return optionError("WithPrefix", "prefix %q contains a brace", p)
		}
		c.prefix = p
		return nil
	})
}

// WithTimeout bounds each Publish and Take call, and each step of Watch
// other than waiting for messages (subscribing, reading the state), by
// adding a deadline to the caller's context. 0 adds none. The default is
// DefaultTimeout, one second. The client must honour context deadlines
// (ContextTimeoutEnabled) for it to cut a slow reply short.
func WithTimeout(d time.Duration) Option {
	return optionFunc(func(c *config) error {
		if d < 0 {
			return optionError("WithTimeout", "negative timeout %v", d)
		}
		c.timeout = d
		return nil
	})
}

// WithCheckInterval sets how long Watch waits for a message before it
// checks its connection with a PING; when the PING is not answered within
// as long again, Watch returns an error. A closed connection is noticed at
// once; this finds one that hangs. The default is DefaultCheckInterval,
// 15 seconds.
func WithCheckInterval(d time.Duration) Option {
	return optionFunc(func(c *config) error {
		if d <= 0 {
			return optionError("WithCheckInterval", "want a positive interval, got %v", d)
		}
		c.interval = d
		return nil
	})
}

// WithClock sets the clock (clock.System by default) that stamps a
// published change without a time of its own (sharedstate.Change.At) and that
// Watch measures cooldown deadlines and the age of learned limits against:
// give it the pool's clock
// (apipool.WithClock). The store reads its Now only. The timeouts of calls
// to Redis, and the times of Stats, follow the system clock.
func WithClock(clk clock.Clock) Option {
	return optionFunc(func(c *config) error {
		if clk == nil {
			return optionError("WithClock", "nil clock")
		}
		c.clock = clk
		return nil
	})
}

// New returns a Store on client. It sends nothing to Redis: a Redis that
// is down makes the store's methods fail, not New. It returns a
// *apipool.ConfigError (matching apipool.ErrInvalidConfig) for a nil
// client, a nil option or an option given a bad value.
func New(client redis.UniversalClient, opts ...Option) (*Store, error) {
	if client == nil {
		return nil, optionError("client", "nil client")
	}
	c := config{prefix: DefaultPrefix, timeout: DefaultTimeout, interval: DefaultCheckInterval, clock: clock.System{}}
	for i, o := range opts {
		if o == nil {
			return nil, optionError("options", "option %d is nil", i)
		}
		if err := o.apply(&c); err != nil {
			return nil, err
		}
	}
	s := &Store{c: client, prefix: c.prefix, timeout: c.timeout, interval: c.interval, clock: c.clock}
	tag := "{" + s.prefix + "}:"
	s.cooldownKey = tag + "cooldown"
	s.disabledKey = tag + "disabled"
	s.learnedKey = tag + "learned"
	s.epochKey = tag + "epoch"
	s.channel = tag + "changes"
	s.dayPrefix = tag + "day:"
	s.secondPrefix = tag + "second"
	s.minutePrefix = tag + "minute"
	s.spendPrefix = tag + "spend:"
	return s, nil
}

// Prefix returns the prefix of the store's keys.
func (s *Store) Prefix() string { return s.prefix }

// Channel returns the pub/sub channel on which the store publishes
// changes.
func (s *Store) Channel() string { return s.channel }

// Stats are a Store's counters since New, for a metric or a health check.
type Stats struct {
	// Errors counts the calls that failed at Redis (Publish, Take, Watch
	// ending other than by its context). Calls whose context ended first,
	// and calls refused with ErrInvalid, do not count.
	Errors uint64
	// LastError is the latest of those failures, and LastErrorAt when it
	// happened; nil and zero when there was none.
	LastError   error
	LastErrorAt time.Time
	// Malformed counts the messages and stored entries Watch ignored
	// because it could not decode them.
	Malformed uint64
}

// Stats returns the store's counters.
func (s *Store) Stats() Stats {
	st := Stats{Errors: s.errs.Load(), Malformed: s.malformed.Load()}
	if r := s.lastErr.Load(); r != nil {
		st.LastError, st.LastErrorAt = r.err, r.at
	}
	return st
}

// fail records err, a failure of op at Redis, unless ctx ended first, and
// returns it wrapped.
func (s *Store) fail(ctx context.Context, op string, err error) error {
	if ctxDone(ctx) {
		<-ctx.Done()
		return fmt.Errorf("redisstate: %s: %w", op, ctx.Err())
	}
	err = fmt.Errorf("redisstate: %s: %w", op, err)
	s.errs.Add(1)
	s.lastErr.Store(&errRecord{err: err, at: time.Now()})
	return err
}

// ctxDone reports whether ctx is done or its deadline has passed (a read
// whose deadline was ctx's may fail just before ctx says it is done).
func ctxDone(ctx context.Context) bool {
	if ctx.Err() != nil {
		return true
	}
	dl, ok := ctx.Deadline()
	return ok && !time.Now().Before(dl)
}

// callCtx bounds one call by the store's timeout.
func (s *Store) callCtx(ctx context.Context) (context.Context, context.CancelFunc) {
	if s.timeout > 0 {
		return context.WithTimeout(ctx, s.timeout)
	}
	return ctx, func() {}
}

func (s *Store) dayKey(id string, day uint64) string {
	return s.dayPrefix + strconv.FormatUint(day, 10) + ":" + id
}

// secondKey is the log of key id's per-second window (a sorted set of
// times), secondCountKey the hash of its counts; minuteKey and
// minuteCountKey the same for the per-minute window. The names differ
// before the ID ("second:" and "second-n:"), so that no ID makes one name
// another's.
func (s *Store) secondKey(id string) string      { return s.secondPrefix + ":" + id }
func (s *Store) secondCountKey(id string) string { return s.secondPrefix + "-n:" + id }
func (s *Store) minuteKey(id string) string      { return s.minutePrefix + ":" + id }
func (s *Store) minuteCountKey(id string) string { return s.minutePrefix + "-n:" + id }
