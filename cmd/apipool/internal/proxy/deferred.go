package proxy

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/apipool-ng/apipool/recorder"
)

// deferredQueueSize bounds the events a deferred store holds in memory
// while its database is unreachable: about 200 bytes each plus their
// strings, so some 2-4 MB. Events beyond it are dropped and counted.
const deferredQueueSize = 10_000

// The wait between attempts to open the store doubles, jittered, from
// deferredMinBackoff to deferredMaxBackoff; each attempt gets at most
// deferredAttemptTimeout. Tests shorten them.
var (
	deferredMinBackoff     = 500 * time.Millisecond
	deferredMaxBackoff     = 30 * time.Second
	deferredAttemptTimeout = 10 * time.Second
)

// deferredStore is a recorder that starts at once while its database is
// unreachable: it keeps trying to open the real store in the background
// and meanwhile holds events in a bounded queue (deferredQueueSize),
// dropping and counting those beyond it. Once the store opens, the queued
// events are handed to it and later ones go straight through.
type deferredStore struct {
	name string // "sql/postgres", for logs and /readyz
	open func(context.Context) (recorder.Recorder, error)
	log  *slog.Logger

	rec atomic.Pointer[recorder.Recorder] // set once the store is open

	mu      sync.Mutex
	queue   []recorder.Event
	closed  bool
	lastErr error
	since   time.Time // when the store was first found unreachable

	dropped atomic.Uint64
	cancel  context.CancelFunc
	done    chan struct{}
}

// newDeferredStore starts the background opener; firstErr is the error of
// the attempt the caller already made.
func newDeferredStore(name string, firstErr error, open func(context.Context) (recorder.Recorder, error), log *slog.Logger) *deferredStore {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	ctx, cancel := context.WithCancel(context.Background())
	d := &deferredStore{name: name, open: open, log: log, lastErr: firstErr, since: time.Now(), cancel: cancel, done: make(chan struct{})}
	log.Warn("stats store unreachable: serving anyway, queueing events in memory and retrying in the background",
		"store", name, "queue", deferredQueueSize, "err", firstErr)
	go d.run(ctx)
	return d
}

func (d *deferredStore) run(ctx context.Context) {
	defer close(d.done)
	wait := deferredMinBackoff
	for failures := 1; ; failures++ {
		// Full jitter on the upper half: replicas restarted together do not
		// knock in step.
		t := time.NewTimer(wait/2 + rand.N(wait/2+1))
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		wait = min(2*wait, deferredMaxBackoff)
		actx, cancel := context.WithTimeout(ctx, deferredAttemptTimeout)
		r, err := d.open(actx)
		cancel()
		if err == nil {
			if !d.opened(r) {
				// Closed meanwhile: Close is waiting for us; close r here.
				r.Close(context.Background())
			}
			return
		}
		if ctx.Err() != nil {
			return
		}
		d.mu.Lock()
		d.lastErr = err
		d.mu.Unlock()
		if failures == 1 || failures%10 == 0 {
			d.log.Warn("stats store still unreachable", "store", d.name, "attempts", failures+1,
				"queued", d.QueueLen(), "dropped", d.dropped.Load(), "err", err)
		}
	}
}

// opened hands the queue to r and makes Record forward to it. It reports
// false when the deferred store was closed first.
func (d *deferredStore) opened(r recorder.Recorder) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return false
	}
	// r.Record does no I/O: the lock is held for a copy of the queue
	// into r's own (larger) one, so no event overtakes the queued ones.
	for _, e := range d.queue {
		r.Record(e)
	}
	n := len(d.queue)
	d.queue = nil
	d.lastErr = nil
	d.rec.Store(&r)
	d.log.Info("stats store reachable: writing the queued events", "store", d.name,
		"queued", n, "dropped", d.dropped.Load(), "down_for", time.Since(d.since).Round(time.Millisecond))
	return true
}

// Record queues e, or hands it to the store once open. It never blocks on
// I/O.
func (d *deferredStore) Record(e recorder.Event) {
	if r := d.rec.Load(); r != nil {
		(*r).Record(e)
		return
	}
	d.mu.Lock()
	if r := d.rec.Load(); r != nil {
		d.mu.Unlock()
		(*r).Record(e)
		return
	}
	if d.closed || len(d.queue) >= deferredQueueSize {
		d.mu.Unlock()
		d.dropped.Add(1)
		return
	}
	if e.Time.IsZero() {
		e.Time = time.Now()
	}
	d.queue = append(d.queue, e)
	d.mu.Unlock()
}

// Dropped counts the events dropped while waiting (queue full, or lost at
// Close) plus those the store dropped since.
func (d *deferredStore) Dropped() uint64 {
	n := d.dropped.Load()
	if r := d.rec.Load(); r != nil {
		if dc, ok := (*r).(recorder.DropCounter); ok {
			n += dc.Dropped()
		}
	}
	return n
}

// QueueLen is the events held: in the waiting queue, or the store's.
func (d *deferredStore) QueueLen() int {
	if r := d.rec.Load(); r != nil {
		if q, ok := (*r).(recorder.QueueLener); ok {
			return q.QueueLen()
		}
		return 0
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	return len(d.queue)
}

// Flush flushes the store once open; before, it has nothing it can write.
func (d *deferredStore) Flush(ctx context.Context) error {
	if r := d.rec.Load(); r != nil {
		if f, ok := (*r).(recorder.Flusher); ok {
			return f.Flush(ctx)
		}
	}
	return nil
}

// Err returns why the store is not open yet, or the store's own last error
// once it is (nil when it writes).
func (d *deferredStore) Err() error {
	if r := d.rec.Load(); r != nil {
		if e, ok := (*r).(interface{ Err() error }); ok {
			return e.Err()
		}
		return nil
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.lastErr
}

// Open reports whether the real store has opened.
func (d *deferredStore) Open() bool { return d.rec.Load() != nil }

// errEventsLost is wrapped by Close's error when the store never opened.
var errEventsLost = errors.New("stats store never became reachable")

// Close stops the opener and closes the store when it opened. When it
// never did, the queued events are lost: Close counts them as dropped and
// says so in its error.
func (d *deferredStore) Close(ctx context.Context) error {
	d.mu.Lock()
	if d.closed {
		d.mu.Unlock()
		return recorder.ErrClosed
	}
	d.closed = true
	d.mu.Unlock()
	d.cancel()
	select {
	case <-d.done:
	case <-ctx.Done():
	}
	if r := d.rec.Load(); r != nil {
		return (*r).Close(ctx)
	}
	d.mu.Lock()
	lost, last := len(d.queue), d.lastErr
	d.queue = nil
	d.mu.Unlock()
	d.dropped.Add(uint64(lost))
	return fmt.Errorf("recorder %s: %w (last error: %v): %d events lost, %d dropped in all",
		d.name, errEventsLost, last, lost, d.dropped.Load())
}

// storeDegraded returns, for /readyz, a secret-free line naming the stats
// store when it is not writing (not yet opened, or its last write or
// connection attempt failed), else "". The error itself (which may name
// hosts and users) goes to the log only.
func (s *Server) storeDegraded() string {
	e, ok := s.rec.(interface{ Err() error })
	if !ok {
		return ""
	}
	if e.Err() == nil {
		return ""
	}
	name := "stats store"
	if d, ok := s.rec.(*deferredStore); ok {
		name += " " + d.name
	} else if c := s.cfg.Load(); c != nil {
		name += " " + c.Recorder.Type
	}
	state := "failing"
	if d, ok := s.rec.(*deferredStore); ok && !d.Open() {
		state = "unreachable"
	}
	var held, dropped string
	if q, ok := s.rec.(recorder.QueueLener); ok {
		held = fmt.Sprintf(", %d events held", q.QueueLen())
	}
	if d, ok := s.rec.(recorder.DropCounter); ok {
		dropped = fmt.Sprintf(", %d dropped", d.Dropped())
	}
	return name + " " + state + held + dropped + " (see the log)"
}

// ErrStatsUnavailable is wrapped by the stats queries of a store that has
// not opened yet.
var ErrStatsUnavailable = errors.New("the stats store is not reachable yet")

// stats returns the open store's Stats, or an error saying why there is
// none.
func (d *deferredStore) stats() (recorder.Stats, error) {
	r := d.rec.Load()
	if r == nil {
		return nil, fmt.Errorf("recorder %s: %w: %v", d.name, ErrStatsUnavailable, d.Err())
	}
	st, ok := (*r).(recorder.Stats)
	if !ok {
		return nil, fmt.Errorf("recorder %s: %w: it answers no queries", d.name, ErrStatsUnavailable)
	}
	return st, nil
}

// The deferred store answers Stats through the store once open (the SQL
// store answers Stats, not MultiStats), so that pools and the dashboard
// keep their usage queries; before, the queries fail.

func (d *deferredStore) UsageByKey(ctx context.Context, q recorder.Query) (map[string]int64, error) {
	st, err := d.stats()
	if err != nil {
		return nil, err
	}
	return st.UsageByKey(ctx, q)
}

func (d *deferredStore) UsageCount(ctx context.Context, q recorder.Query) (int64, error) {
	st, err := d.stats()
	if err != nil {
		return 0, err
	}
	return st.UsageCount(ctx, q)
}

func (d *deferredStore) LatencyByKey(ctx context.Context, q recorder.Query) (map[string]recorder.Latency, error) {
	st, err := d.stats()
	if err != nil {
		return nil, err
	}
	return st.LatencyByKey(ctx, q)
}

func (d *deferredStore) Series(ctx context.Context, q recorder.Query, step time.Duration) (map[string][]recorder.Bucket, error) {
	st, err := d.stats()
	if err != nil {
		return nil, err
	}
	return st.Series(ctx, q, step)
}
