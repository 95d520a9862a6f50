package apipool

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/apipool-ng/apipool/recorder"
	"github.com/apipool-ng/apipool/status"
)

// Probe checks that a key works, typically with one cheap request (list
// models, fetch quota) through client, which sends every request with the
// key under test and no retries. It returns nil when the key is usable.
// Whatever it returns, an answer that the classifier rates as an invalid
// key marks the key unusable.
type Probe func(ctx context.Context, client *http.Client) error

// ProbeRequest returns a Probe that sends one request with the given
// method to url and passes when the answer is a success (2xx or 3xx).
func ProbeRequest(method, url string) Probe {
	return func(ctx context.Context, client *http.Client) error {
		req, err := http.NewRequestWithContext(ctx, method, url, nil)
		if err != nil {
			return err
		}
		resp, err := client.Do(req)
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode >= 400 {
			return errors.New("apipool: probe answered " + resp.Status)
		}
		return nil
	}
}

// ProbeResult is what a probe found of one key.
type ProbeResult struct {
	KeyID string
	// Usable is true when the probe passed; the key is then enabled.
	Usable bool
	// Status is the status of the probe's last answer, if it made any
	// request through the client.
	Status status.Status
	// Err is the probe's error, with the key's secret removed from it.
	Err error
}

// ErrNoProbe is returned by CheckUsable when the pool has no probe.
var ErrNoProbe = errors.New("apipool: no probe configured (see WithProbe)")

// CheckUsable runs the pool's probe on every key at once, as apipool-ng's
// check_usable does, and returns one result per key in the pool's order.
// A key that passes is enabled; a key the upstream rejects as invalid is
// disabled; other failures (network errors, timeouts) leave its state as
// it was.
func (t *Transport) CheckUsable(ctx context.Context) ([]ProbeResult, error) {
	if t.cfg.probe == nil {
		return nil, ErrNoProbe
	}
	keys := t.keys.Load().keys
	return t.probeKeys(ctx, keys), nil
}

func (t *Transport) probeKeys(ctx context.Context, keys []*keyState) []ProbeResult {
	out := make([]ProbeResult, len(keys))
	var wg sync.WaitGroup
	sem := make(chan struct{}, 16)
	for i, k := range keys {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			out[i] = t.probeKey(ctx, k)
		}()
	}
	wg.Wait()
	return out
}

func (t *Transport) probeKey(ctx context.Context, k *keyState) ProbeResult {
	pt := &pinnedTransport{t: t, k: k}
	client := &http.Client{Transport: pt}
	err := t.cfg.probe(ContextWithOperation(ctx, "apipool.probe"), client)
	res := ProbeResult{KeyID: k.key.ID, Status: pt.last()}
	now := t.cfg.clock.Now()
	switch {
	case res.Status == status.InvalidKey:
		res.Err = errors.New("apipool: key rejected by the upstream")
		if err != nil {
			res.Err = redact(err, k.secret)
		}
		t.disable(k, "probe: upstream rejected the key", now, true, false)
	case err != nil:
		res.Err = redact(err, k.secret)
	default:
		res.Usable = true
		if k.disabled.Load() != nil && t.enable(k, true) {
			if t.cfg.logger != nil {
				t.cfg.logger.Info("apipool: key re-enabled by probe", "key", k.key.ID)
			}
			t.alertEnabled(k, now, "a probe passed: the key is back in use")
		}
	}
	return res
}

// pinnedTransport sends every request of a probe with one key, once,
// through the pool's attempt path (a call pinned to the key): the same
// copy, credential handling, classification, key updates and usage event
// as any request, but no pick, no wait and no resend.
type pinnedTransport struct {
	t  *Transport
	k  *keyState
	st atomic.Uint32 // the last answer's status
}

func (p *pinnedTransport) last() status.Status { return status.Status(p.st.Load()) }

func (p *pinnedTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	t := p.t
	if req == nil || req.URL == nil {
		return nil, errors.New("apipool: nil request or URL")
	}
	if !t.keyAllowed(req) {
		return t.passThrough(req)
	}
	c := &call{t: t, req: req, ks: t.keys.Load(), bufLen: -1, pinned: p.k}
	c.cand = Candidates{ks: c.ks, call: c}
	resp, err := c.run()
	p.st.Store(uint32(c.final))
	return resp, err
}

// probeLoop probes the disabled keys at the configured interval.
func (t *Transport) probeLoop() {
	defer close(t.probeDone)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		<-t.stopProbe
		cancel()
	}()
	for {
		tm := t.cfg.clock.NewTimer(t.cfg.probeInterval)
		select {
		case <-t.stopProbe:
			tm.Stop()
			return
		case <-tm.C():
		}
		var disabled []*keyState
		for _, k := range t.keys.Load().keys {
			if k.disabled.Load() != nil && !k.removed.Load() {
				disabled = append(disabled, k)
			}
		}
		if len(disabled) > 0 {
			t.probeKeys(ctx, disabled)
		}
	}
}

// Close makes later requests fail with ErrClosed, cancels the background
// work (the probe loop and the probes it runs, the shared-state loops),
// closes the recorder, flushing it within ctx, waits within ctx for the
// background work to end (and for WithAlerts' callback to take the alerts
// queued before Close), and closes the base transport's idle
// connections. Requests in flight finish.
//
// The recorder does not wait for the background work: it gets all the
// time ctx has left once that work is cancelled, so a probe stuck on a
// slow endpoint costs it nothing. Events that come after the recorder
// closed (of requests in flight, or of a probe that ignored its
// cancellation) are dropped, and counted by recorders that count drops.
// The pool closes the recorder once, in the first call of Close, even when
// ctx has already ended: the recorder then does with what it holds what
// it does when its time is up (spills it, or counts it lost).
//
// Close returns nil once everything has ended. Otherwise it returns a
// *CloseError: the work still running when ctx ended, which a later Close
// with a longer deadline waits for again (errors.Is finds
// ErrCloseIncomplete, and ctx's error), and the recorder's error, which
// every later Close reports again (errors.As finds the recorder's own
// error type). Close may be called concurrently and repeatedly.
//
// The pool closes the recorder it was given with WithRecorder. To share one
// store among several pools, give each pool recorder.KeepOpen(store) and
// close the store yourself after closing the pools.
func (t *Transport) Close(ctx context.Context) error {
	cs := &t.closing
	cs.once.Do(t.beginClose)
	e := &CloseError{}
	if t.ownsRec {
		if cs.recStarted.CompareAndSwap(false, true) {
			cs.recErr = t.rec.Close(ctx)
			close(cs.recDone)
		} else if !finished(ctx, cs.recDone) {
			e.RecorderClosing = true
		}
		if !e.RecorderClosing {
			e.Recorder = cs.recErr
		}
	}
	for _, w := range cs.background {
		if !finished(ctx, w.done) {
			e.Running = append(e.Running, w.name)
		}
	}
	t.CloseIdleConnections()
	if e.incomplete() {
		e.Ctx = ctx.Err()
	} else if e.Recorder == nil {
		return nil
	}
	return e
}

// closeState is Close's progress, kept across calls so that a later Close
// finishes what an earlier one could not.
type closeState struct {
	once       sync.Once
	background []backgroundWork // set by the first Close, inside once
	recStarted atomic.Bool      // a Close has started the recorder's Close
	recDone    chan struct{}    // closed when the recorder's Close returned
	recErr     error            // what it returned, set before recDone closes
}

// backgroundWork is work of the pool's own, cancelled when Close starts.
type backgroundWork struct {
	name string
	done <-chan struct{} // closed when it has ended
}

// beginClose is the first Close's start: no new requests, and every piece
// of background work cancelled at once, so that none of it holds up the
// recorder.
func (t *Transport) beginClose() {
	t.closed.Store(true)
	t.waiters.wakeAll()
	t.tel.close()
	cs := &t.closing
	cs.recDone = make(chan struct{})
	if t.stopProbe != nil {
		close(t.stopProbe) // cancels the probes in flight
		cs.background = append(cs.background, backgroundWork{"probes", t.probeDone})
	}
	if ss := t.spends; ss != nil {
		ss.stop() // spends not yet sent count in this replica only
		cs.background = append(cs.background, backgroundWork{"spends", ss.done})
	}
	if a := t.alerts; a != nil {
		a.close() // the alerts queued are delivered, then its goroutine ends
		cs.background = append(cs.background, backgroundWork{"alerts", a.done})
	}
	if sh := t.shared; sh != nil {
		sh.cancel()
		done := make(chan struct{})
		go func() {
			sh.stop(context.Background()) // waits for the loops
			close(done)
		}()
		cs.background = append(cs.background, backgroundWork{"shared state", done})
	}
}

// finished reports whether done is closed, waiting for it until ctx ends.
// Work already over counts as finished whatever ctx's state.
func finished(ctx context.Context, done <-chan struct{}) bool {
	select {
	case <-done:
		return true
	default:
	}
	select {
	case <-done:
		return true
	case <-ctx.Done():
		return false
	}
}

// ErrCloseIncomplete is matched (errors.Is) by a *CloseError that leaves
// work for a later Close to wait for.
var ErrCloseIncomplete = errors.New("apipool: close incomplete")

// CloseError is what Close returns when it could not finish everything.
type CloseError struct {
	// Running names the background work still running when ctx ended:
	// "probes" (a probe that ignores its context's cancellation), "shared
	// state", "alerts" (WithAlerts' callback, still taking the alerts
	// queued before Close). It was cancelled when the first Close started;
	// a later Close waits for it again.
	Running []string
	// RecorderClosing is true when the recorder's Close, run by another
	// call of Close, had not returned when ctx ended. A later Close waits
	// for it again.
	RecorderClosing bool
	// Recorder is what the recorder's Close returned (it tells what the
	// recorder could not write, in its own error type). The recorder is
	// closed once; every later Close reports this again.
	Recorder error
	// Ctx is ctx's error when Running or RecorderClosing is set.
	Ctx error
}

func (e *CloseError) incomplete() bool { return len(e.Running) > 0 || e.RecorderClosing }

func (e *CloseError) Error() string {
	var b strings.Builder
	b.WriteString("apipool: close")
	if e.incomplete() {
		b.WriteString(": still running after cancel: ")
		b.WriteString(strings.Join(e.Running, ", "))
		if e.RecorderClosing {
			if len(e.Running) > 0 {
				b.WriteString(", ")
			}
			b.WriteString("the recorder's Close")
		}
		if e.Ctx != nil {
			b.WriteString(" (")
			b.WriteString(e.Ctx.Error())
			b.WriteString("); a later Close waits for it")
		}
	}
	if e.Recorder != nil {
		if e.incomplete() {
			b.WriteByte(';')
		}
		b.WriteString(" recorder: ")
		b.WriteString(e.Recorder.Error())
	}
	return b.String()
}

// Is makes errors.Is(err, ErrCloseIncomplete) true when work is left.
func (e *CloseError) Is(target error) bool { return target == ErrCloseIncomplete && e.incomplete() }

// Unwrap returns ctx's error and the recorder's, those that are set.
func (e *CloseError) Unwrap() []error {
	var out []error
	for _, err := range [...]error{e.Ctx, e.Recorder} {
		if err != nil {
			out = append(out, err)
		}
	}
	return out
}

// AddKey adds a key to the pool while requests flow. It returns a
// *ConfigError for a bad key or an ID already in the pool.
func (t *Transport) AddKey(k Key) error {
	if err := t.checkKey(k, -1); err != nil {
		return err
	}
	t.keysMu.Lock()
	defer t.keysMu.Unlock()
	old := t.keys.Load()
	if _, dup := old.byID[k.ID]; dup {
		return &ConfigError{Field: "AddKey", Reason: "duplicate ID " + quote(k.ID)}
	}
	if err := old.sameSecret("AddKey", k, nil); err != nil {
		return err
	}
	keys := append(old.keys[:len(old.keys):len(old.keys)], t.newKeyState(k))
	t.keys.Store(newKeySet(keys))
	return nil
}

// RemoveKey removes a key from the pool. Requests already using it
// finish; no new attempt picks it. It returns an error matching
// ErrUnknownKey for an ID the pool does not hold, and a *ConfigError for
// the pool's last key: a pool holds one key at least (to swap the last
// key for another, use ReplaceKey).
func (t *Transport) RemoveKey(id string) error {
	t.keysMu.Lock()
	defer t.keysMu.Unlock()
	old := t.keys.Load()
	k, ok := old.byID[id]
	if !ok {
		return unknownKey(id)
	}
	if len(old.keys) == 1 {
		return &ConfigError{Field: "RemoveKey", Reason: "key " + quote(id) + " is the pool's last key; a pool holds one key at least (ReplaceKey swaps a key for another)"}
	}
	k.removed.Store(true)
	keys := make([]*keyState, 0, len(old.keys)-1)
	for _, o := range old.keys {
		if o != k {
			keys = append(keys, o)
		}
	}
	t.keys.Store(newKeySet(keys))
	return nil
}

// ReplaceKey puts k in the place of the pool's key with the same ID, in
// one step: a new secret, new limits or weight. The new key starts afresh
// (no cooldown, not disabled, its own breaker and counts); requests
// already using the old one finish with it. It returns an error matching
// ErrUnknownKey when the pool holds no key with k's ID, and a
// *ConfigError for a bad key.
func (t *Transport) ReplaceKey(k Key) error {
	if err := t.checkKey(k, -1); err != nil {
		return err
	}
	t.keysMu.Lock()
	defer t.keysMu.Unlock()
	old := t.keys.Load()
	prev, ok := old.byID[k.ID]
	if !ok {
		return unknownKey(k.ID)
	}
	if err := old.sameSecret("ReplaceKey", k, prev); err != nil {
		return err
	}
	keys := make([]*keyState, len(old.keys))
	for i, o := range old.keys {
		keys[i] = o
		if o == prev {
			keys[i] = t.newKeyState(k)
			keys[i].adoptSpend(prev, t.cfg.clock.Now()) // the spend is the ID's
		}
	}
	prev.removed.Store(true)
	t.keys.Store(newKeySet(keys))
	return nil
}

// SetKeys makes keys the pool's keys, in one step, as the reload of a key
// file wants: a key the pool holds with every field the same (ID, secret,
// weight, tier, models, limits and budget; a Weight of 0 is 1) keeps its
// state (cooldown, disable, breaker, counts); any other is a new key, which
// starts afresh (a disabled key given a new weight is in use again); the
// pool's keys missing from keys are removed (requests
// already using them finish). keys is checked as New checks it (one key
// at least, no ID or secret twice), every bad key reported at once, and
// on an error the pool is left as it was.
func (t *Transport) SetKeys(keys []Key) error {
	if err := t.validateKeys(keys); err != nil {
		return err
	}
	t.keysMu.Lock()
	defer t.keysMu.Unlock()
	old := t.keys.Load()
	states := make([]*keyState, len(keys))
	kept := make(map[*keyState]bool, len(keys))
	for i, k := range keys {
		if o, ok := old.byID[k.ID]; ok && sameKey(o.key, k) {
			states[i], kept[o] = o, true
			continue
		}
		states[i] = t.newKeyState(k)
		if o, ok := old.byID[k.ID]; ok {
			states[i].adoptSpend(o, t.cfg.clock.Now()) // the spend is the ID's
		}
	}
	for _, o := range old.keys {
		if !kept[o] {
			o.removed.Store(true)
		}
	}
	t.keys.Store(newKeySet(states))
	return nil
}

// sameKey reports whether a and b are the same key: every field equal, a
// Weight of 0 being 1.
func sameKey(a, b Key) bool {
	return a.ID == b.ID && a.Secret == b.Secret && max(a.Weight, 1) == max(b.Weight, 1) && a.Tier == b.Tier &&
		slices.Equal(a.Models, b.Models) && a.MaxInFlight == b.MaxInFlight &&
		a.PerSecond == b.PerSecond && a.PerMinute == b.PerMinute && a.PerDay == b.PerDay && a.Budget == b.Budget
}

// sameSecret returns a *ConfigError when a key of ks other than except
// has k's secret (naming the IDs, never the secret).
func (ks *keySet) sameSecret(field string, k Key, except *keyState) error {
	for _, o := range ks.keys {
		if o != except && o.key.Secret == k.Secret {
			return &ConfigError{Field: field, Reason: "key " + quote(k.ID) + " has the same secret as key " + quote(o.key.ID)}
		}
	}
	return nil
}

// Disable takes a key out of use until Enable or a passing probe, with a
// reason shown in snapshots, logs and alerts. A secret of the pool's keys
// in reason (an upstream's error body quoting the key, say), as it is or
// URL-escaped, is replaced by "[REDACTED]".
func (t *Transport) Disable(id, reason string) error {
	ks := t.keys.Load()
	k, ok := ks.byID[id]
	if !ok {
		return unknownKey(id)
	}
	if reason == "" {
		reason = "disabled by the application"
	}
	secrets := make([]string, len(ks.keys))
	for i, o := range ks.keys {
		secrets[i] = o.secret
	}
	reason = scrubForms(reason, secretForms(secrets))
	t.disable(k, reason, t.cfg.clock.Now(), true, true)
	return nil
}

// Enable puts a disabled key back in use, and ends its cooldown.
func (t *Transport) Enable(id string) error {
	k, ok := t.keys.Load().byID[id]
	if !ok {
		return unknownKey(id)
	}
	if t.enable(k, true) {
		t.alertEnabled(k, t.cfg.clock.Now(), "enabled by the application")
	}
	return nil
}

// Snapshot returns every key's state now, in the pool's order: by tier
// (Key.Tier), and in the order the keys were given within a tier.
func (t *Transport) Snapshot() []KeyStatus {
	now := t.cfg.clock.Now()
	keys := t.keys.Load().keys
	out := make([]KeyStatus, len(keys))
	for i, k := range keys {
		out[i] = t.snapshotKey(k, now)
	}
	return out
}

// RecentAttemptsByKey returns the number of attempts per key ID over the
// last window, as apipool-ng's usage_count_stats_in_recent_n_seconds. It
// counts attempts, not requests: a request resent on another key counts
// once on each key it tried (the apipool.requests metric counts
// requests; in SQL, the events with attempt = 1). It needs a recorder
// that answers stats (the default one does), else it returns an error
// wrapping recorder.ErrNoStats.
func (t *Transport) RecentAttemptsByKey(ctx context.Context, window time.Duration) (map[string]int64, error) {
	if window <= 0 {
		return nil, badWindow(window)
	}
	now := t.cfg.clock.Now()
	return t.stats.UsageByKey(ctx, recorder.Query{Since: now.Add(-window), Until: now.Add(time.Nanosecond)})
}

// RecentAttempts returns the number of attempts over the last window with
// the given status (status.Unknown for any) and key ID ("" for any), as
// apipool-ng's usage_count_in_recent_n_seconds. Like RecentAttemptsByKey,
// it counts attempts, not requests.
func (t *Transport) RecentAttempts(ctx context.Context, window time.Duration, st status.Status, keyID string) (int64, error) {
	if window <= 0 {
		return 0, badWindow(window)
	}
	now := t.cfg.clock.Now()
	return t.stats.UsageCount(ctx, recorder.Query{Since: now.Add(-window), Until: now.Add(time.Nanosecond), Status: st, KeyID: keyID})
}

// badWindow is the error for a usage window that is not positive; it
// wraps recorder.ErrBadQuery.
func badWindow(w time.Duration) error {
	return fmt.Errorf("%w: the window %v is not positive", recorder.ErrBadQuery, w)
}

// unknownKey is ErrUnknownKey for id, naming it.
func unknownKey(id string) error { return fmt.Errorf("%w %s", ErrUnknownKey, quote(id)) }
