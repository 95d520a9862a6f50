package memory

import (
	"cmp"
	"context"
	"fmt"
	"math"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/apipool-ng/apipool/clock"
	"github.com/apipool-ng/apipool/errdefs"
	"github.com/apipool-ng/apipool/recorder"
	"github.com/apipool-ng/apipool/status"
)

const (
	// secondSlots is the span of the second tier: the last 5 minutes.
	secondSlots = 300
	// minuteHistSlots is the span of the minute latency histograms.
	minuteHistSlots = 60

	// DefaultRetention is the retention of a store made without
	// [WithRetention].
	DefaultRetention = 24 * time.Hour
	// MinRetention and MaxRetention bound the retention.
	MinRetention = 5 * time.Minute
	MaxRetention = 31 * 24 * time.Hour
	// DefaultMaxKeys is the key limit of a store made without [WithMaxKeys].
	DefaultMaxKeys = 1024
	// DefaultMaxSeries is the series limit of a store made without
	// [WithMaxSeries].
	DefaultMaxSeries = 8192
	// DefaultMaxFuture is how far ahead of the clock an event's time may be
	// for a store made without [WithMaxFuture].
	DefaultMaxFuture = time.Minute
)

// Status slots: the counts of a time bucket are indexed by a dense slot
// rather than by status id. Every status that package status defines has its
// own slot; all the ids it does not define share slotOther.
const (
	slotOther = 11
	numSlots  = 12
)

// Histogram classes.
const (
	classSuccess = 0
	classLimit   = 1
	classFailed  = 2 // every other status, Unknown included
	numClasses   = 3
)

var (
	slotOf      [256]uint8
	classOf     [256]uint8
	slotStatus  [numSlots]status.Status // a status for each slot
	slotsByHand = [...]status.Status{status.Unknown, status.Success, status.Failed, status.ReachLimit,
		status.InvalidKey, status.ServerError, status.ClientError, status.Timeout,
		status.Canceled, status.NetworkError, status.NoKeyAvailable}
)

func init() {
	for i := range slotOf {
		slotOf[i] = slotOther
		classOf[i] = classFailed
	}
	for i, s := range slotsByHand {
		slotOf[s] = uint8(i)
		slotStatus[i] = s
	}
	slotStatus[slotOther] = status.Status(255) // undefined, of class Failed
	classOf[status.Success] = classSuccess
	classOf[status.ReachLimit] = classLimit
}

// Values of keyState.newest other than a time.
const (
	notStarted = -1 // no event yet
	evicted    = -2 // removed from the store: look the key up again
)

// seriesID names a series: the events of one key, model and client.
type seriesID struct{ key, model, client string }

// is reports whether id and o name the same series.
func (id *seriesID) is(o *seriesID) bool {
	return same(id.key, o.key) && same(id.model, o.model) && same(id.client, o.client)
}

// same reports whether a == b, without a call when they are the same
// bytes: the usual case of the strings of one event source.
func same(a, b string) bool {
	return len(a) == len(b) && (unsafe.StringData(a) == unsafe.StringData(b) || a == b)
}

// keyState is everything the store holds about one series: the events of
// one key with one model and one client (a key whose events carry no
// model or client has one series). Its mutex guards every field but id.
// Each tier is a ring of the time buckets that hold events, sorted by
// time: the last secondSlots seconds, the minutes of the retention, the
// last minuteHistSlots minutes' histograms and the hours' histograms up to
// newest, and the minutes of the retention whose events said what they
// consumed. When newest advances, the buckets it leaves behind are
// dropped, so a series' memory follows its events, not the retention.
type keyState struct {
	mu     sync.Mutex
	newest int64 // the newest event's Unix second, or notStarted or evicted
	id     seriesID

	secs      countRing // (second, slot) counts
	mins      countRing // (minute, slot) counts
	minHists  histRing  // histograms by minute
	hourHists histRing  // histograms and counts by hour
	sums      sumRing   // (minute, slot) sums of tokens, units and cost
	free      hists     // cleared histograms to reuse
}

// keyEntry is a key's series, sorted by model, then client (the order in
// which queries lock them), copied on write under Store.mu.
type keyEntry struct {
	series atomic.Pointer[[]*keyState]
}

func cmpSeries(k *keyState, id seriesID) int {
	return cmp.Or(strings.Compare(k.id.model, id.model), strings.Compare(k.id.client, id.client))
}

// find returns the series id of the key, or nil.
func (e *keyEntry) find(id seriesID) *keyState {
	all := *e.series.Load()
	if len(all) <= 8 {
		// The usual case: a key of a few models and clients (one series
		// when its events have neither). Equal strings of one event source
		// mostly share their bytes, which == checks first.
		for _, k := range all {
			if same(k.id.model, id.model) && same(k.id.client, id.client) {
				return k
			}
		}
		return nil
	}
	if i, ok := slices.BinarySearchFunc(all, id, cmpSeries); ok {
		return all[i]
	}
	return nil
}

type config struct {
	minutes   int64 // retention in minutes: the minute ring's size
	hours     int64 // the hour ring's size
	maxKeys   int
	maxSeries int
	maxFuture int64 // seconds
	clock     clock.Clock
}

// Option configures a [Store]. Options are applied in order by [New]; an
// option given a value out of its range makes New return a
// *errdefs.ConfigError (matching apipool.ErrInvalidConfig).
type Option interface {
	apply(*config) error
}

type optionFunc func(*config) error

func (f optionFunc) apply(c *config) error { return f(c) }

// WithRetention sets how long events are kept, relative to the newest event
// the store has accepted (not to the clock). It is rounded up to a whole
// minute and must be within [MinRetention, MaxRetention]. The default is
// [DefaultRetention].
func WithRetention(d time.Duration) Option {
	return optionFunc(func(c *config) error {
		if d < MinRetention || d > MaxRetention {
			return &errdefs.ConfigError{Field: "memory.WithRetention", Reason: fmt.Sprintf("%v is outside [%v, %v]", d, MinRetention, MaxRetention)}
		}
		c.minutes = int64((d + time.Minute - 1) / time.Minute)
		return nil
	})
}

// WithMaxKeys bounds the number of keys the store tracks, the key "" of
// keyless events included. When it is full, a new key takes the place of keys
// whose events all fell out of the retention; if there are none, the new
// key's events are dropped and counted in [Store.Dropped]. n must be at
// least 1. The default is [DefaultMaxKeys]. [WithMaxSeries] bounds the
// keys' combinations with models and clients.
func WithMaxKeys(n int) Option {
	return optionFunc(func(c *config) error {
		if n < 1 {
			return &errdefs.ConfigError{Field: "memory.WithMaxKeys", Reason: fmt.Sprintf("want at least 1, got %d", n)}
		}
		c.maxKeys = n
		return nil
	})
}

// WithMaxSeries bounds the number of series the store tracks: one for
// each key, model and client that events came with (Event.Model,
// Event.Client), so one per key when events carry neither. When it is
// full, a new series takes the place of series whose events all fell out
// of the retention; if there are none, the new series' events are dropped
// and counted in [Store.Dropped]. n must be at least 1. The default is
// [DefaultMaxSeries]. Each series takes its own memory (see the package
// documentation): models and clients are the caller's (a model comes from
// the request), and this bounds what they can make the store hold.
func WithMaxSeries(n int) Option {
	return optionFunc(func(c *config) error {
		if n < 1 {
			return &errdefs.ConfigError{Field: "memory.WithMaxSeries", Reason: fmt.Sprintf("want at least 1, got %d", n)}
		}
		c.maxSeries = n
		return nil
	})
}

// WithMaxFuture sets how far ahead of the clock an event's time may be.
// Later events are rejected and counted in [Store.TooNew], so that one event
// with a wild time cannot push every other out of the retention. It is
// rounded up to a whole second and must not be negative. The default is
// [DefaultMaxFuture].
func WithMaxFuture(d time.Duration) Option {
	return optionFunc(func(c *config) error {
		if d < 0 {
			return &errdefs.ConfigError{Field: "memory.WithMaxFuture", Reason: fmt.Sprintf("negative duration %v", d)}
		}
		c.maxFuture = int64((d + time.Second - 1) / time.Second)
		return nil
	})
}

// WithClock sets the clock that [WithMaxFuture] is measured against
// (clock.System by default). The store reads its Now only for events newer
// than every event it has accepted, at most about once per second of event
// time, and never asks it for a timer.
func WithClock(clk clock.Clock) Option {
	return optionFunc(func(c *config) error {
		if clk == nil {
			return &errdefs.ConfigError{Field: "memory.WithClock", Reason: "nil clock"}
		}
		c.clock = clk
		return nil
	})
}

// Store is the in-memory usage store. Make one with [New]; the zero value is
// not usable. It is safe for concurrent use.
type Store struct {
	cfg     config
	keys    atomic.Pointer[map[string]*keyEntry] // copy on write
	nSeries atomic.Int64                         // the number of series, changed under mu

	mu     sync.Mutex // serialises adding and evicting keys, and Close
	closed atomic.Bool

	newest    atomic.Int64 // the newest accepted event's Unix second, -1 if none
	notTooNew atomic.Int64 // the latest second found within WithMaxFuture of the clock
	lastEvict atomic.Int64 // the minute of newest at the last eviction scan

	dropped, tooOld, tooNew atomic.Uint64

	stripes stripes // events on their way to their keys (stripe.go)
}

var (
	_ recorder.Recorder    = (*Store)(nil)
	_ recorder.Stats       = (*Store)(nil)
	_ recorder.DropCounter = (*Store)(nil)
	_ recorder.TotalsStats = (*Store)(nil)
)

// New returns an empty store. Without options it keeps 24 hours
// ([DefaultRetention]) of up to 1024 keys ([DefaultMaxKeys]) in up to
// 8192 series ([DefaultMaxSeries]) and rejects events more than a minute
// ahead of the system clock ([DefaultMaxFuture]).
// It returns a *errdefs.ConfigError, matching apipool.ErrInvalidConfig,
// for a nil option or an option given a value out of its range.
func New(opts ...Option) (*Store, error) {
	c := config{maxKeys: DefaultMaxKeys, maxSeries: DefaultMaxSeries, clock: clock.System{}, maxFuture: int64(DefaultMaxFuture / time.Second),
		minutes: int64(DefaultRetention / time.Minute)}
	for i, o := range opts {
		if o == nil {
			return nil, &errdefs.ConfigError{Field: "memory.options", Reason: fmt.Sprintf("option %d is nil", i)}
		}
		if err := o.apply(&c); err != nil {
			return nil, err
		}
	}
	// The hour ring covers every hour the minute ring touches.
	c.hours = (c.minutes+59)/60 + 1
	s := &Store{cfg: c}
	s.keys.Store(&map[string]*keyEntry{})
	s.newest.Store(-1)
	s.notTooNew.Store(-1)
	s.lastEvict.Store(math.MinInt64)
	s.stripes.init()
	return s, nil
}

// Retention returns the store's retention.
func (s *Store) Retention() time.Duration { return time.Duration(s.cfg.minutes) * time.Minute }

// Dropped returns how many events were dropped: recorded after Close, or
// for a new key or series when the store already held WithMaxKeys keys or
// WithMaxSeries series. It does not
// count the events of [Store.TooOld] and [Store.TooNew].
func (s *Store) Dropped() uint64 {
	s.flush()
	return s.dropped.Load()
}

// TooOld returns how many events were not kept because they were already
// out of the retention when recorded: older than the retention relative to
// the newest accepted event, or before 1970.
func (s *Store) TooOld() uint64 {
	s.flush()
	return s.tooOld.Load()
}

// TooNew returns how many events were not kept because their time was
// further ahead of the clock than WithMaxFuture allows.
func (s *Store) TooNew() uint64 { return s.tooNew.Load() }

// Record counts e in the buckets of its own time, e.Time. It never blocks
// on I/O and allocates only when a key's buckets outgrow their rings (see
// the package documentation). It holds e with other events recorded on the
// same processor within two seconds, up to 64, and counts them in their
// keys' buckets together; queries, Dropped and TooOld count every event
// held first, so they see every event recorded before them.
func (s *Store) Record(e recorder.Event) {
	if s.closed.Load() {
		s.dropped.Add(1)
		return
	}
	sec := e.Time.Unix()
	if sec < 0 {
		s.tooOld.Add(1)
		return
	}
	s.admit(sec)
	g := s.newest.Load()
	if sec > g {
		// Newer than every event counted: checked against the clock
		// once per second of event time (an event held is not counted
		// yet, so newest may lag behind the seconds checked).
		if ok := s.notTooNew.Load(); sec > ok {
			if sec > s.cfg.clock.Now().Unix()+s.cfg.maxFuture {
				s.tooNew.Add(1)
				return
			}
			for ok < sec && !s.notTooNew.CompareAndSwap(ok, sec) {
				ok = s.notTooNew.Load()
			}
		}
	} else if sec/60 <= g/60-s.cfg.minutes {
		s.tooOld.Add(1)
		return
	}
	p := pendingEvent{key: e.KeyID, sec: sec, slot: slotOf[e.Status], class: classOf[e.Status], bin: uint8(binOf(e.Latency))}
	if e.Model == "" && e.Client == "" && e.InputTokens < 0 && e.OutputTokens < 0 && e.CachedTokens < 0 && !(e.Units >= 0) && !(e.Cost >= 0) {
		s.hold(p, nil) // the common case of an API without a usage reader
		return
	}
	p.ext = true
	s.hold(p, &pendingExt{e.Model, e.Client, consumed{e.InputTokens, e.OutputTokens, e.CachedTokens, amount(e.Units), amount(e.Cost)}})
}

// find returns the series id, or nil.
func (s *Store) find(id seriesID) *keyState {
	if e := (*s.keys.Load())[id.key]; e != nil {
		return e.find(id)
	}
	return nil
}

// full reports whether adding the series id would pass a limit (an
// answer out of date unless s.mu is held).
func (s *Store) full(id seriesID) bool {
	m := *s.keys.Load()
	return s.nSeries.Load() >= int64(s.cfg.maxSeries) || len(m) >= s.cfg.maxKeys && m[id.key] == nil
}

// addKey returns the state of series id, adding it for an event of second
// sec. It returns nil, and counts a drop, when the store is closed or full.
func (s *Store) addKey(id seriesID, sec int64) *keyState {
	// The retention is the newest accepted event's: this one's, when the
	// events newer than it are still held in other stripes.
	now := max(s.newest.Load(), sec)
	if s.full(id) && s.lastEvict.Load() == now/60 && s.find(id) == nil {
		// Full, and scanned for stale series in this minute already.
		s.dropped.Add(1)
		return nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed.Load() {
		s.dropped.Add(1)
		return nil
	}
	if ks := s.find(id); ks != nil {
		return ks
	}
	if s.full(id) {
		s.evictLocked(max(s.newest.Load(), sec))
		if s.full(id) {
			s.dropped.Add(1)
			return nil
		}
	}
	ks := &keyState{newest: notStarted, id: id}
	s.nSeries.Add(1)
	m := *s.keys.Load()
	if e := m[id.key]; e != nil {
		all := *e.series.Load()
		i, _ := slices.BinarySearchFunc(all, id, cmpSeries)
		na := slices.Insert(slices.Clip(all), i, ks)
		e.series.Store(&na)
		return ks
	}
	e := &keyEntry{}
	e.series.Store(&[]*keyState{ks})
	nm := make(map[string]*keyEntry, len(m)+1)
	for k, v := range m {
		nm[k] = v
	}
	nm[id.key] = e
	s.keys.Store(&nm)
	return ks
}

// evictLocked removes the series that hold no event within the retention
// ending at second g, and the keys left without series, at most once per
// minute of event time. s.mu is held.
func (s *Store) evictLocked(g int64) {
	if s.lastEvict.Load() == g/60 {
		return
	}
	s.lastEvict.Store(g / 60)
	m := *s.keys.Load()
	var nm map[string]*keyEntry // a copy, once a key goes
	for key, e := range m {
		all := *e.series.Load()
		var kept []*keyState // a copy, once a series goes
		for i, ks := range all {
			ks.mu.Lock()
			if g >= 0 && ks.newest/60 <= g/60-s.cfg.minutes {
				// A lockKey that finds it so looks its id up again,
				// and adds a new series under s.mu. Its buckets go
				// now: the stripes may still point to it (stripe.recent).
				ks.newest = evicted
				ks.secs, ks.mins, ks.sums = countRing{}, countRing{}, sumRing{}
				ks.minHists, ks.hourHists, ks.free = histRing{}, histRing{}, hists{}
				s.nSeries.Add(-1)
				if kept == nil {
					kept = append(make([]*keyState, 0, len(all)), all[:i]...)
				}
			} else if kept != nil {
				kept = append(kept, ks)
			}
			ks.mu.Unlock()
		}
		switch {
		case kept == nil:
		case len(kept) > 0:
			e.series.Store(&kept)
		default:
			if nm == nil {
				nm = make(map[string]*keyEntry, len(m))
				for k, v := range m {
					nm[k] = v
				}
			}
			delete(nm, key)
		}
	}
	if nm != nil {
		s.keys.Store(&nm)
	}
}

// add counts one event, u its usage or nil for none; it reports false
// when the event is older than the series' minute ring. k.mu is held.
func (k *keyState) add(sec int64, slot, class, bin int, u *consumed, c *config) bool {
	if k.newest == notStarted {
		k.newest = sec
	} else if sec > k.newest {
		k.advance(sec, c)
	}
	m, nm := sec/60, k.newest/60
	if m <= nm-c.minutes {
		return false
	}
	if sec > k.newest-secondSlots {
		k.secs.add(sec, uint8(slot))
	}
	k.mins.add(m, uint8(slot))
	if m > nm-minuteHistSlots {
		k.minHists.getOrAdd(m).hs.add(class, bin, &k.free)
	}
	h := k.hourHists.getOrAdd(sec / 3600)
	if h.n == nil {
		h.n = new([numSlots]uint64)
	}
	h.n[slot]++
	h.hs.add(class, bin, &k.free)
	if u != nil && u.known() {
		k.sums.add(m, uint8(slot), u)
	}
	return true
}

// advance moves newest to sec, dropping the buckets it leaves behind.
func (k *keyState) advance(sec int64, c *config) {
	k.secs.expire(sec - secondSlots + 1)
	m := sec / 60
	if m > k.newest/60 {
		k.mins.expire(m - c.minutes + 1)
		k.sums.expire(m - c.minutes + 1)
		k.minHists.expire(m-minuteHistSlots+1, &k.free)
		k.hourHists.expire(sec/3600-c.hours+1, &k.free)
	}
	k.newest = sec
}

// Close releases the store's data. Later calls to Record drop their event
// and count it in Dropped; later queries return recorder.ErrClosed. An event
// recorded concurrently with Close may be lost without being counted. Close
// always returns nil.
func (s *Store) Close(ctx context.Context) error {
	s.mu.Lock()
	s.closed.Store(true)
	s.keys.Store(&map[string]*keyEntry{})
	s.nSeries.Store(0)
	s.mu.Unlock()
	s.discard()
	return nil
}
