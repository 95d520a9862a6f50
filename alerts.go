package apipool

import (
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/apipool-ng/apipool/clock"
)

// AlertKind says what an Alert reports. Its String is the name a webhook
// or a log gives it ("key.disabled"); ParseAlertKind reads it back.
type AlertKind uint8

// The kinds of alert.
const (
	// AlertKeyDisabled: the key was taken out of use (the upstream
	// rejected it, a probe failed, or Disable). Until is when a trial
	// request tests it again; zero when only Enable or a passing probe
	// puts it back. A key the upstream rejected is alerted when the
	// request that met the rejection is over, and not at all when a
	// second key rejected that request too: the request was at fault,
	// and the first key was put back at once (so that every key revoked,
	// or a malformed request sent again and again, raises no alert per
	// request).
	AlertKeyDisabled AlertKind = iota + 1
	// AlertKeyEnabled: a disabled key is back in use (its trial request
	// or a probe passed, or Enable).
	AlertKeyEnabled
	// AlertKeyCooling: the upstream rate-limited the key for at least
	// AlertSettings.CoolingThreshold; Until is when its cooldown ends.
	// Sent once per cooldown: a cooldown extended while it lasts is not
	// alerted again.
	AlertKeyCooling
	// AlertBreakerOpen: the key's circuit breaker opened (server errors,
	// network errors or timeouts in a row); Until is when it lets a trial
	// request through.
	AlertBreakerOpen
	// AlertBreakerClosed: the key's breaker closed again after its trial
	// requests succeeded.
	AlertBreakerClosed
	// AlertNoKey: a request found no key within its wait, every key being
	// disabled, cooling down, at a limit or busy: it failed with a
	// *NoKeyError, or got the last key's answer (a 429, say) for want of
	// another key. Not raised when the request's own context ended the
	// wait. No KeyID; Until is when the next key frees up, if known. At
	// most one per AlertSettings.NoKeyInterval.
	AlertNoKey
	// AlertKeysBack: after an AlertNoKey, a request took a key again.
	AlertKeysBack
	// AlertBudgetNear: a budget (Key.Budget: KeyID says which key; or a
	// client's, WithClientBudgets: Client says which) is 80% used; Until
	// is when its period ends. Once per budget and period.
	AlertBudgetNear
	// AlertBudgetSpent: a budget is used up: the key rests, or the
	// client's requests are refused, until Until, when its period ends.
	// Once per budget and period. With a shared store that counts spend
	// (sharedstate.Spender), the replica whose spend crossed the threshold
	// in the store raises it, so the replicas raise one between them
	// (each its own, while the store fails).
	AlertBudgetSpent
)

var alertKindNames = [...]string{
	AlertKeyDisabled:   "key.disabled",
	AlertKeyEnabled:    "key.enabled",
	AlertKeyCooling:    "key.cooling",
	AlertBreakerOpen:   "key.breaker_open",
	AlertBreakerClosed: "key.breaker_closed",
	AlertNoKey:         "pool.no_key",
	AlertKeysBack:      "pool.keys_back",
	AlertBudgetNear:    "budget.near",
	AlertBudgetSpent:   "budget.spent",
}

// String names the kind: "key.disabled", "key.enabled", "key.cooling",
// "key.breaker_open", "key.breaker_closed", "pool.no_key",
// "pool.keys_back", "budget.near", "budget.spent" ("unknown" for any other
// value).
func (k AlertKind) String() string {
	if k > 0 && int(k) < len(alertKindNames) {
		return alertKindNames[k]
	}
	return "unknown"
}

// MarshalText writes the kind's name, so that JSON shows it as a string.
func (k AlertKind) MarshalText() ([]byte, error) {
	if k == 0 || int(k) >= len(alertKindNames) {
		return nil, fmt.Errorf("apipool: unknown alert kind %d", uint8(k))
	}
	return []byte(alertKindNames[k]), nil
}

// UnmarshalText reads a kind's name, as ParseAlertKind does.
func (k *AlertKind) UnmarshalText(b []byte) error {
	v, err := ParseAlertKind(string(b))
	if err != nil {
		return err
	}
	*k = v
	return nil
}

// AlertKinds returns every kind, in the order of the constants.
func AlertKinds() []AlertKind {
	out := make([]AlertKind, 0, len(alertKindNames)-1)
	for k := 1; k < len(alertKindNames); k++ {
		out = append(out, AlertKind(k))
	}
	return out
}

// ParseAlertKind returns the kind with the given name (as String spells
// it), or a *ConfigError.
func ParseAlertKind(name string) (AlertKind, error) {
	for k := 1; k < len(alertKindNames); k++ {
		if alertKindNames[k] == name {
			return AlertKind(k), nil
		}
	}
	return 0, &ConfigError{Field: "alert kind", Reason: "unknown alert kind " + quote(name) + "; want one of " + strings.Join(alertKindNames[1:], ", ")}
}

// Alert is one change of a key's or the pool's state that an operator may
// want to hear of (see WithAlerts). It never holds a secret: keys are
// named by their IDs.
type Alert struct {
	Kind AlertKind
	// Pool is AlertSettings.Pool, the name the pool was given ("" when
	// none).
	Pool string
	// KeyID is the key the alert is about; "" for an alert about the
	// whole pool (AlertNoKey, AlertKeysBack) or a client's budget.
	KeyID string
	// Client is the client whose budget an AlertBudgetNear or
	// AlertBudgetSpent is about (see ContextWithClient); "" otherwise.
	Client string
	// Time is when the change happened, on the pool's clock.
	Time time.Time
	// Until is when the state the alert reports ends, when known (see
	// each kind); zero otherwise.
	Until time.Time
	// Reason says why, in a few words.
	Reason string
}

// Defaults of AlertSettings.
const (
	DefaultAlertCoolingThreshold = 5 * time.Minute
	DefaultAlertNoKeyInterval    = time.Minute
	DefaultAlertQueueSize        = 256
)

// AlertSettings configures the pool's alerts (WithAlerts). The zero value
// means the defaults below.
type AlertSettings struct {
	// Pool names the pool in its alerts (Alert.Pool), such as the
	// upstream API's name.
	Pool string
	// CoolingThreshold is the shortest cooldown that raises an
	// AlertKeyCooling (default 5 minutes).
	CoolingThreshold time.Duration
	// NoKeyInterval is the least time between two AlertNoKey of the pool
	// (default 1 minute). The requests that found no key in between are
	// counted in the next one's Reason.
	NoKeyInterval time.Duration
	// QueueSize bounds the alerts waiting for the callback (default 256,
	// at most 1,048,576). When it is full, new alerts are dropped and
	// counted (AlertStats.Dropped).
	QueueSize int
}

// WithAlerts calls f with every alert of the pool (see AlertKind for the
// kinds): f runs on a goroutine of the pool's own, one alert at a time, in
// the order the alerts were raised, so that a slow f never holds up a
// request. Alerts wait for it in a queue of s.QueueSize; when the queue is
// full, they are dropped and counted (Transport.AlertStats). Close delivers
// the alerts queued before it began, within its context, and ends the
// goroutine; alerts raised after Close began are dropped and counted.
//
// With shared state (WithSharedState), a change is alerted by the pool
// that made it, not by the replicas that apply it: a key disabled by one
// replica raises one AlertKeyDisabled, not one per replica.
func WithAlerts(f func(Alert), s AlertSettings) Option {
	return optionFunc(func(c *config) error {
		switch {
		case f == nil:
			return &ConfigError{Field: "WithAlerts", Reason: "nil function"}
		case s.CoolingThreshold < 0:
			return &ConfigError{Field: "WithAlerts.CoolingThreshold", Reason: fmt.Sprintf("negative duration %v", s.CoolingThreshold)}
		case s.NoKeyInterval < 0:
			return &ConfigError{Field: "WithAlerts.NoKeyInterval", Reason: fmt.Sprintf("negative duration %v", s.NoKeyInterval)}
		case s.QueueSize < 0 || s.QueueSize > 1<<20:
			return &ConfigError{Field: "WithAlerts.QueueSize", Reason: fmt.Sprintf("want 0 (the default) to 1048576, got %d", s.QueueSize)}
		}
		if s.CoolingThreshold == 0 {
			s.CoolingThreshold = DefaultAlertCoolingThreshold
		}
		if s.NoKeyInterval == 0 {
			s.NoKeyInterval = DefaultAlertNoKeyInterval
		}
		if s.QueueSize == 0 {
			s.QueueSize = DefaultAlertQueueSize
		}
		c.alertFunc, c.alerts = f, s
		return nil
	})
}

// AlertStats counts a pool's alerts.
type AlertStats struct {
	// Delivered counts the alerts the callback returned from; Dropped,
	// those dropped because the queue was full or the pool closed;
	// Queued is how many wait for the callback now.
	Delivered, Dropped uint64
	Queued             int
}

// AlertStats counts the pool's alerts; the zero value without WithAlerts.
func (t *Transport) AlertStats() AlertStats {
	a := t.alerts
	if a == nil {
		return AlertStats{}
	}
	return AlertStats{Delivered: a.delivered.Load(), Dropped: a.dropped.Load(), Queued: len(a.queue)}
}

// alerter delivers a pool's alerts to the user's callback, on a goroutine
// of its own, through a bounded queue.
type alerter struct {
	f   func(Alert)
	set AlertSettings
	clk clock.Clock

	mu     sync.Mutex // serialises sends with close
	closed bool
	queue  chan Alert
	done   chan struct{} // closed when the goroutine has delivered the last alert

	delivered atomic.Uint64
	dropped   atomic.Uint64

	// AlertNoKey's rate limit: the pool-clock ns before which no other is
	// sent; the requests that found no key meanwhile; whether one was sent
	// and no request has taken a key since (AlertKeysBack is then due).
	noKeyNext  atomic.Int64
	noKeyQuiet atomic.Int64
	noKeyOut   atomic.Bool

	// The end of each key's alerted cooldown: another AlertKeyCooling is
	// sent for the key only once it has passed.
	coolMu  sync.Mutex
	cooling map[*keyState]time.Time
}

func (t *Transport) startAlerts() {
	if t.cfg.alertFunc == nil {
		return
	}
	a := &alerter{f: t.cfg.alertFunc, set: t.cfg.alerts, clk: t.cfg.clock,
		queue: make(chan Alert, t.cfg.alerts.QueueSize), done: make(chan struct{}), cooling: map[*keyState]time.Time{}}
	t.alerts = a
	go a.loop()
}

func (a *alerter) loop() {
	defer close(a.done)
	for al := range a.queue {
		a.f(al)
		a.delivered.Add(1)
	}
}

// close stops taking alerts; the goroutine delivers those queued, then
// ends (done).
func (a *alerter) close() {
	a.mu.Lock()
	if !a.closed {
		a.closed = true
		close(a.queue)
	}
	a.mu.Unlock()
}

// alert queues al for the user's callback, without blocking; it fills in
// the pool's name and, when al has none, the time. Every state change an
// operator may want to hear of comes through here: keystate.go's
// reportChange and disable, the breakers (flushBreaker), Enable and the
// probes, and the budgets.
func (t *Transport) alert(al Alert) {
	a := t.alerts
	if a == nil {
		return
	}
	al.Pool = a.set.Pool
	if al.Time.IsZero() {
		al.Time = t.cfg.clock.Now()
	}
	a.mu.Lock()
	if a.closed {
		a.dropped.Add(1)
	} else {
		select {
		case a.queue <- al:
		default:
			a.dropped.Add(1)
		}
	}
	a.mu.Unlock()
}

// alertDisabled alerts a disable of k that this pool made.
func (t *Transport) alertDisabled(k *keyState, info *disableInfo) {
	if t.alerts == nil || info == nil {
		return
	}
	t.alert(Alert{Kind: AlertKeyDisabled, KeyID: k.key.ID, Time: info.at, Until: info.retryAt, Reason: info.reason})
}

// alertEnabled alerts that k, disabled, is back in use, for reason.
func (t *Transport) alertEnabled(k *keyState, at time.Time, reason string) {
	if t.alerts == nil {
		return
	}
	t.alert(Alert{Kind: AlertKeyEnabled, KeyID: k.key.ID, Time: at, Reason: reason})
}

// alertCooling alerts a rate limit that cools k from at until until, when
// it is long enough and k is not in a cooldown already alerted.
func (t *Transport) alertCooling(k *keyState, at, until time.Time) {
	a := t.alerts
	if a == nil || until.Sub(at) < a.set.CoolingThreshold {
		return
	}
	a.coolMu.Lock()
	last, ok := a.cooling[k]
	if ok && last.After(at) {
		// The cooldown alerted goes on, longer now: no second alert.
		if until.After(last) {
			a.cooling[k] = until
		}
		a.coolMu.Unlock()
		return
	}
	a.cooling[k] = until
	a.coolMu.Unlock()
	t.alert(Alert{Kind: AlertKeyCooling, KeyID: k.key.ID, Time: at, Until: until,
		Reason: "rate limited by the upstream for " + until.Sub(at).Round(time.Second).String()})
}

// alertBreaker alerts a change of k's breaker at now.
func (t *Transport) alertBreaker(k *keyState, ch breakerChange, now time.Time) {
	switch {
	case ch.to == BreakerOpen:
		t.alert(Alert{Kind: AlertBreakerOpen, KeyID: k.key.ID, Time: now, Until: now.Add(max(k.breakerOpenLeft(), 0)),
			Reason: "the circuit breaker opened after failed attempts (server errors, network errors or timeouts)"})
	case ch.to == BreakerClosed && ch.from == BreakerHalfOpen:
		t.alert(Alert{Kind: AlertBreakerClosed, KeyID: k.key.ID, Time: now, Reason: "trial requests succeeded: the circuit breaker closed"})
	}
}

// alertNoKey alerts that a request found no key at now (err, a
// *NoKeyError), at most once per NoKeyInterval.
func (t *Transport) alertNoKey(now time.Time, err error) {
	a := t.alerts
	if a == nil {
		return
	}
	next := a.noKeyNext.Load()
	if now.UnixNano() < next || !a.noKeyNext.CompareAndSwap(next, now.Add(a.set.NoKeyInterval).UnixNano()) {
		a.noKeyQuiet.Add(1)
		return
	}
	a.noKeyOut.Store(true)
	al := Alert{Kind: AlertNoKey, Time: now, Reason: "no key available"}
	var nk *NoKeyError
	if errors.As(err, &nk) {
		al.Until = nk.RetryAt
		al.Reason = strings.TrimPrefix(nk.Error(), "apipool: ")
	}
	if n := a.noKeyQuiet.Swap(0); n > 0 {
		al.Reason += "; " + itoa(int(n)) + " more requests found no key since the last alert"
	}
	t.alert(al)
}

// alertKeysBack alerts, after an AlertNoKey, that a request took a key at
// now. It costs one atomic load when no AlertNoKey is out.
func (t *Transport) alertKeysBack(now time.Time) {
	a := t.alerts
	if a == nil || !a.noKeyOut.Load() || !a.noKeyOut.CompareAndSwap(true, false) {
		return
	}
	t.alert(Alert{Kind: AlertKeysBack, Time: now, Reason: "a request took a key again"})
}
