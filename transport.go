package apipool

import (
	"errors"
	"net/http"
	"sync"
	"sync/atomic"

	"github.com/apipool-ng/apipool/recorder"
	"github.com/apipool-ng/apipool/recorder/memory"
	"github.com/apipool-ng/apipool/sharedstate"
)

// Transport is an http.RoundTripper that sends each request with a key
// from its pool. Create one with New; the zero value is not usable. It is
// safe for concurrent use, and is meant to be shared: create one per
// upstream API and keep it for the program's life.
//
// Per the http.RoundTripper contract, RoundTrip never modifies the
// caller's request (it sends copies, which it reuses once the response
// body is closed: see WithBase), returns a 429 or 5xx answer as a response
// rather than an error, never returns a response together with an error,
// and always closes the request body.
type Transport struct {
	cfg      config
	base     http.RoundTripper
	selector Selector
	// ownSelector: selector is a built-in one, which picks only eligible
	// keys.
	ownSelector bool
	rec         recorder.Recorder
	ownsRec     bool // the pool made rec, or was given it to close
	stats       recorder.Stats

	tel    telemetry
	shared *sharedSync // nil without WithSharedState
	// keySpender is the shared store when it counts spend
	// (sharedstate.Spender); spends sends the spends to it and to the
	// client budgets' store: nil when neither is (budgets.go).
	keySpender sharedstate.Spender
	spends     *spendSync
	alerts     *alerter     // nil without WithAlerts (alerts.go)
	waiters    waitQueue    // requests waiting for a key, in arrival order
	waits      atomic.Int64 // requests that waited for a key

	// Requests that two keys rejected (forgive), and when that was last
	// logged (Unix ns on the pool's clock): at most once a minute.
	forgiven, forgivenLogged atomic.Int64

	keys   atomic.Pointer[keySet]
	keysMu sync.Mutex // serialises AddKey and RemoveKey

	sessions *sessionTable // nil without WithSessions (sessions.go)

	closed    atomic.Bool
	closing   closeState // Close's progress across calls (pool.go)
	stopProbe chan struct{}
	probeDone chan struct{}
}

var _ http.RoundTripper = (*Transport)(nil)

// New returns a Transport over keys. It returns a *ConfigError (matching
// ErrInvalidConfig) naming the problem when keys is empty, an ID or a
// secret repeats, a secret is empty, begins or ends with white space or is
// "[REDACTED]" (a Key read back from its own JSON), an ID or a secret holds
// a control character, a limit is negative or out of its range, or an
// option is given bad values. When several keys are bad, the error joins
// one *ConfigError per key (errors.As finds the first).
func New(keys []Key, opts ...Option) (*Transport, error) {
	cfg := defaultConfig()
	for i, o := range opts {
		if o == nil {
			return nil, &ConfigError{Field: "options", Reason: "option " + itoa(i) + " is nil"}
		}
		if err := o.apply(&cfg); err != nil {
			return nil, err
		}
	}
	if cfg.scope == ScopeModel && cfg.modelOf == nil {
		return nil, &ConfigError{Field: "WithCooldownScope", Reason: "ScopeModel needs WithModel: without it no request has a model to rest"}
	}
	cfg.finish()
	t := &Transport{cfg: cfg, base: cfg.base}
	t.tel.t = t
	if t.base == nil {
		t.base = http.DefaultTransport
	}
	t.selector = cfg.selector
	if t.selector == nil {
		t.selector, t.ownSelector = newSelector(cfg.strategy), true
	}
	if err := t.validateKeys(keys); err != nil {
		return nil, err
	}
	states := make([]*keyState, len(keys))
	for i, k := range keys {
		states[i] = t.newKeyState(k)
	}
	t.keys.Store(newKeySet(states))
	if cfg.sessionOf != nil {
		t.sessions = newSessionTable(cfg.maxSessions)
	}
	switch {
	case !cfg.recorderSet:
		m, err := memory.New(memory.WithClock(cfg.clock))
		if err != nil {
			return nil, err
		}
		t.rec, t.stats, t.ownsRec = m, m, true
	case cfg.recorder == nil:
		t.rec, t.stats = recorder.Nop{}, recorder.NoStats{}
	default:
		t.rec, t.ownsRec = cfg.recorder, true
		var ok bool
		if t.stats, ok = cfg.recorder.(recorder.Stats); !ok {
			t.stats = recorder.NoStats{}
		}
	}
	t.startAlerts()
	if cfg.probe != nil && cfg.probeInterval > 0 {
		t.stopProbe, t.probeDone = make(chan struct{}), make(chan struct{})
		go t.probeLoop()
	}
	if cfg.shared != nil {
		t.startShared(cfg.shared)
		t.keySpender, _ = cfg.shared.(sharedstate.Spender)
	}
	t.startSpends()
	t.tel.meter() // the key gauges report from now, not from the first request
	return t, nil
}

// Stats returns the recorder's query interface. When the recorder answers
// no queries (WithRecorder(nil), or a recorder without Stats methods) it
// is recorder.NoStats, whose every query fails with recorder.ErrNoStats.
// The stores of this module also implement recorder.MultiStats and
// recorder.TotalsStats: reach them with a type assertion.
func (t *Transport) Stats() recorder.Stats { return t.stats }

// Waits returns how many requests have waited for a key to free up since
// the pool was made.
func (t *Transport) Waits() int64 { return t.waits.Load() }

// Recorder returns where the pool records usage events.
func (t *Transport) Recorder() recorder.Recorder { return t.rec }

// CloseIdleConnections forwards to the base transport, as http.Client
// expects of a wrapping transport.
func (t *Transport) CloseIdleConnections() {
	if c, ok := t.base.(interface{ CloseIdleConnections() }); ok {
		c.CloseIdleConnections()
	}
}

// RoundTrip sends req with a key from the pool, resending it on another
// key when the answer or error allows. See the package documentation.
func (t *Transport) RoundTrip(req *http.Request) (*http.Response, error) {
	if req == nil || req.URL == nil {
		if req != nil && req.Body != nil {
			req.Body.Close()
		}
		return nil, errors.New("apipool: nil request or URL")
	}
	if t.closed.Load() {
		closeBody(req)
		return nil, ErrClosed
	}
	if !t.keyAllowed(req) {
		return t.passThrough(req)
	}
	if t.cfg.clients != nil {
		if err := t.checkClient(req); err != nil {
			return t.refuseClient(req, err)
		}
	}
	c := newCall()
	c.t, c.req, c.ks, c.bufLen = t, req, t.keys.Load(), -1
	c.cand = Candidates{ks: c.ks, call: c}
	return c.run()
}

// validateKeys checks a pool's whole key list, as New and SetKeys take
// it: one key at least, every key valid, no ID or secret twice. It
// reports every bad key at once (errors.As finds the first
// *ConfigError).
func (t *Transport) validateKeys(keys []Key) error {
	if len(keys) == 0 {
		return &ConfigError{Field: "keys", Reason: "no keys"}
	}
	seen := make(map[string]int, len(keys))
	secrets := make(map[Secret]int, len(keys))
	var errs []error
	for i, k := range keys {
		if err := t.checkKey(k, i); err != nil {
			errs = append(errs, err)
			continue
		}
		if j, dup := seen[k.ID]; dup {
			errs = append(errs, &ConfigError{Field: "keys[" + itoa(i) + "].ID", Reason: "duplicate ID " + quote(k.ID) + " (also keys[" + itoa(j) + "])"})
			continue
		}
		if j, dup := secrets[k.Secret]; dup {
			errs = append(errs, &ConfigError{Field: "keys[" + itoa(i) + "].Secret", Reason: "key " + quote(k.ID) + " has the same secret as keys[" + itoa(j) + "] (" + quote(keys[j].ID) + ")"})
			continue
		}
		seen[k.ID], secrets[k.Secret] = i, i
	}
	if len(errs) == 1 {
		return errs[0]
	}
	return errors.Join(errs...)
}
