package apipool

import (
	"fmt"
	"math"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"golang.org/x/time/rate"
)

// keyState is a key and everything the pool tracks of it. Fields read on
// the request path are atomics: no pool-wide lock is taken per request.
type keyState struct {
	key    Key
	fp     string
	secret string
	// headerValue is the precomputed value slice for header injection,
	// shared read-only by every request (capacity == length, so an append
	// by a base transport copies).
	headerValue []string

	breaker         *keyBreaker
	breakerState    atomic.Int32 // BreakerState
	breakerOpenedAt atomic.Int64 // wall-clock ns when it last opened
	breakerPending  atomic.Bool

	cooldownUntil atomic.Int64 // pool-clock ns; 0 means none
	disabled      atomic.Pointer[disableInfo]
	removed       atomic.Bool
	inFlight      atomic.Int64

	perSecond, perMinute *rate.Limiter
	// With shared state: a daily-quota block leased from the store.
	leaseMu  sync.Mutex
	leaseDay uint64
	leased   int
	limited  bool           // the key has a rate or daily limit
	loc      *time.Location // where the quota day starts
	// day packs the quota day (high 32 bits, days since the epoch in the
	// quota location) and the requests counted that day (low 32 bits).
	day atomic.Uint64
}

type disableInfo struct {
	reason string
	at     time.Time
}

// keySet is an immutable snapshot of the pool's keys; adding or removing
// a key publishes a new one.
type keySet struct {
	keys        []*keyState
	byID        map[string]*keyState
	cumWeight   []int64
	totalWeight int64
}

func newKeySet(keys []*keyState) *keySet {
	ks := &keySet{keys: keys, byID: make(map[string]*keyState, len(keys)), cumWeight: make([]int64, len(keys))}
	for i, k := range keys {
		ks.byID[k.key.ID] = k
		ks.totalWeight += int64(k.weight())
		ks.cumWeight[i] = ks.totalWeight
	}
	return ks
}

func (k *keyState) weight() int {
	if k.key.Weight <= 0 {
		return 1
	}
	return k.key.Weight
}

// validateKey checks one key; i is its index for error messages, or -1.
func validateKey(k Key, i int) error {
	field := func(f string) string {
		if i < 0 {
			return "Key(" + strconv.Quote(k.ID) + ")." + f
		}
		return fmt.Sprintf("keys[%d].%s", i, f)
	}
	switch {
	case k.ID == "":
		return &ConfigError{Field: field("ID"), Reason: "empty ID"}
	case len(k.ID) > 256:
		return &ConfigError{Field: field("ID"), Reason: "longer than 256 bytes"}
	case !utf8.ValidString(k.ID):
		return &ConfigError{Field: field("ID"), Reason: "not valid UTF-8"}
	case k.Secret == "":
		return &ConfigError{Field: field("Secret"), Reason: "empty secret"}
	case string(k.Secret) == k.ID:
		f := "Key.ID" // not field("ID"), which quotes the ID: the secret
		if i >= 0 {
			f = field("ID")
		}
		return &ConfigError{Field: f, Reason: "the ID is the secret itself; IDs appear in stats and spans"}
	case k.Weight < 0:
		return &ConfigError{Field: field("Weight"), Reason: fmt.Sprintf("negative weight %d", k.Weight)}
	case k.Weight > 1_000_000:
		return &ConfigError{Field: field("Weight"), Reason: fmt.Sprintf("weight %d above 1000000", k.Weight)}
	case k.MaxInFlight < 0:
		return &ConfigError{Field: field("MaxInFlight"), Reason: fmt.Sprintf("negative limit %d", k.MaxInFlight)}
	case k.PerSecond < 0 || math.IsNaN(k.PerSecond) || math.IsInf(k.PerSecond, 0):
		return &ConfigError{Field: field("PerSecond"), Reason: fmt.Sprintf("want a finite rate >= 0, got %v", k.PerSecond)}
	case k.PerMinute < 0:
		return &ConfigError{Field: field("PerMinute"), Reason: fmt.Sprintf("negative limit %d", k.PerMinute)}
	case k.PerDay < 0 || k.PerDay > math.MaxInt32:
		return &ConfigError{Field: field("PerDay"), Reason: fmt.Sprintf("want 0 to %d, got %d", math.MaxInt32, k.PerDay)}
	}
	for j := 0; j < len(k.Secret); j++ {
		if c := k.Secret[j]; c < ' ' || c == 0x7f {
			return &ConfigError{Field: field("Secret"), Reason: "contains a control character"}
		}
	}
	return nil
}

func (t *Transport) newKeyState(k Key) *keyState {
	ks := &keyState{key: k, secret: string(k.Secret), fp: Fingerprint(t.cfg.fingerprintKey, k.Secret), loc: t.cfg.quotaLoc}
	switch t.cfg.inject {
	case injectBearer:
		ks.headerValue = []string{"Bearer " + ks.secret}
	case injectHeader:
		ks.headerValue = []string{ks.secret}
	}
	ks.headerValue = ks.headerValue[:len(ks.headerValue):len(ks.headerValue)]
	if k.PerSecond > 0 {
		ks.perSecond = rate.NewLimiter(rate.Limit(k.PerSecond), max(1, int(math.Ceil(k.PerSecond))))
	}
	if k.PerMinute > 0 {
		ks.perMinute = rate.NewLimiter(rate.Limit(float64(k.PerMinute)/60), k.PerMinute)
	}
	ks.breaker = newKeyBreaker(t.cfg.breaker, ks)
	ks.limited = k.PerSecond > 0 || k.PerMinute > 0 || k.PerDay > 0
	return ks
}

// dayIndex is the quota day of now in loc, in days since the epoch.
func dayIndex(now time.Time, loc *time.Location) uint64 {
	if loc == time.UTC {
		s := now.Unix()
		if s < 0 {
			return 0
		}
		return uint64(s / 86400)
	}
	_, off := now.In(loc).Zone()
	s := now.Unix() + int64(off)
	if s < 0 {
		return 0
	}
	return uint64(s / 86400)
}

// dayStart returns when quota day d starts in loc: its local midnight.
func dayStart(d uint64, loc *time.Location) time.Time {
	y, m, dd := time.Unix(int64(d)*86400, 0).UTC().Date()
	return time.Date(y, m, dd, 0, 0, 0, 0, loc)
}

// quotaLeft returns today's quota left, or -1 without a daily quota.
func (k *keyState) quotaLeft(now time.Time) int64 {
	if k.key.PerDay == 0 {
		return -1
	}
	return int64(k.key.PerDay) - int64(k.dayUsed(now))
}

func (k *keyState) dayUsed(now time.Time) uint32 {
	v := k.day.Load()
	if v>>32 != k.dayOf(now) {
		return 0
	}
	return uint32(v)
}

func (k *keyState) dayOf(now time.Time) uint64 { return dayIndex(now, k.loc) }

// takeDay counts one request against today's quota, if any is left.
func (k *keyState) takeDay(now time.Time) bool {
	if k.key.PerDay == 0 {
		return true
	}
	day := k.dayOf(now)
	for {
		v := k.day.Load()
		used := uint32(v)
		if v>>32 != day {
			used = 0
		}
		if int64(used) >= int64(k.key.PerDay) {
			return false
		}
		if k.day.CompareAndSwap(v, day<<32|uint64(used+1)) {
			return true
		}
	}
}

// giveDay returns a request taken by takeDay that was not sent.
func (k *keyState) giveDay(now time.Time) {
	if k.key.PerDay == 0 {
		return
	}
	day := k.dayOf(now)
	for {
		v := k.day.Load()
		if v>>32 != day || uint32(v) == 0 {
			return
		}
		if k.day.CompareAndSwap(v, v-1) {
			return
		}
	}
}

// cool extends the key's cooldown to until, unless it already ends later.
// It reports whether the deadline moved.
func (k *keyState) cool(until time.Time) bool {
	u := until.UnixNano()
	for {
		old := k.cooldownUntil.Load()
		if old >= u {
			return false
		}
		if k.cooldownUntil.CompareAndSwap(old, u) {
			return true
		}
	}
}

func (k *keyState) breakerOpen(timeout time.Duration) bool {
	if k.breaker == nil || BreakerState(k.breakerState.Load()) != BreakerOpen {
		return false
	}
	return time.Now().UnixNano() < k.breakerOpenedAt.Load()+int64(timeout)
}

// KeyStatus is a key's state at one moment, for dashboards and tests.
type KeyStatus struct {
	ID          string
	Fingerprint string
	// State sums up the rest: "active", "cooling", "disabled",
	// "breaker-open" or "limited" (at a rate, in-flight or daily limit).
	State          string
	CoolingUntil   time.Time // zero when not cooling down
	Disabled       bool
	DisabledReason string
	DisabledAt     time.Time
	Breaker        BreakerState
	InFlight       int64
	QuotaLeft      int64 // today's quota left, or -1 without a daily quota
	Weight         int
}

// snapshot reads the key's state at now (pool clock).
func (t *Transport) snapshotKey(k *keyState, now time.Time) KeyStatus {
	s := KeyStatus{
		ID: k.key.ID, Fingerprint: k.fp, State: "active",
		Breaker: BreakerClosed, InFlight: k.inFlight.Load(), QuotaLeft: k.quotaLeft(now), Weight: k.weight(),
	}
	if k.breaker != nil {
		s.Breaker = k.breaker.cb.State()
	}
	if u := k.cooldownUntil.Load(); u > now.UnixNano() {
		s.CoolingUntil = time.Unix(0, u)
	}
	if d := k.disabled.Load(); d != nil {
		s.Disabled, s.DisabledReason, s.DisabledAt = true, d.reason, d.at
	}
	switch {
	case s.Disabled:
		s.State = "disabled"
	case !s.CoolingUntil.IsZero():
		s.State = "cooling"
	case s.Breaker == BreakerOpen:
		s.State = "breaker-open"
	case !t.withinLimits(k, now):
		s.State = "limited"
	}
	return s
}

// withinLimits reports whether k is below its in-flight, rate and daily
// limits at now, without taking anything.
func (t *Transport) withinLimits(k *keyState, now time.Time) bool {
	if m := k.key.MaxInFlight; m > 0 && k.inFlight.Load() >= int64(m) {
		return false
	}
	if k.key.PerDay > 0 && int64(k.dayUsed(now)) >= int64(k.key.PerDay) {
		return false
	}
	if k.perSecond != nil && k.perSecond.TokensAt(now) < 1 {
		return false
	}
	if k.perMinute != nil && k.perMinute.TokensAt(now) < 1 {
		return false
	}
	return true
}

// keyHeader returns the header name and value slice for header injection.
func (t *Transport) keyHeader() string {
	if t.cfg.inject == injectBearer {
		return "Authorization"
	}
	return t.cfg.injectName
}
