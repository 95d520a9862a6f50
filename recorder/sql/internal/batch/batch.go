// Package batch is the write path of recorder/sql, its one user: a bounded
// in-memory queue that Record feeds without doing I/O, and one background
// goroutine that writes the queue in batches, by size and by interval,
// retrying a failed batch as it is (the same items, in the same order)
// after a jittered backoff until it succeeds or Close gives up.
// (recorder/clickhouse has a writer of its own, which also spills to a
// file and replays it; see its writer.go.)
//
// The store gives New a WriteFunc that writes one batch (in one
// transaction) and learns from its attempt number whether the same batch
// failed before, so that it can check whether a commit whose answer was
// lost went through. Every item that is not written is counted: dropped
// when the queue is full or closed, or lost when Close's context ends
// first.
package batch

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/apipool-ng/apipool/errdefs"
)

// Config configures a Writer. Zero fields take the defaults named.
type Config struct {
	// BatchSize is the most items per write; a batch is written when this
	// many are queued or FlushInterval after the last one was, whichever
	// comes first. Default: 5,000.
	BatchSize int
	// FlushInterval: see BatchSize. Default: 1s.
	FlushInterval time.Duration
	// QueueSize bounds the items waiting, besides the batch being written.
	// Default: 100,000. It is raised to BatchSize when smaller.
	QueueSize int
	// Block makes Put wait for room when the queue is full, instead of
	// dropping the item.
	Block bool
	// MinBackoff and MaxBackoff bound the wait between failed attempts.
	// Defaults: 100ms and 10s.
	MinBackoff, MaxBackoff time.Duration
	// OnError, when set, is called on the writer goroutine after each
	// failed attempt, with the number of failures in a row.
	OnError func(err error, failures, items int)
	// OnRecover, when set, is called on the writer goroutine when a write
	// succeeds after failures.
	OnRecover func(failures int)
	// OnIdle, when set, is called on the writer goroutine at each
	// FlushInterval tick that finds nothing to write (not while a failed
	// batch waits for its retry), with the context that Close cancels:
	// for housekeeping that must run even when no items come.
	OnIdle func(ctx context.Context)
}

// Defaults of Config's zero fields.
const (
	DefaultBatchSize     = 5000
	DefaultFlushInterval = time.Second
	DefaultQueueSize     = 100_000
	DefaultMinBackoff    = 100 * time.Millisecond
	DefaultMaxBackoff    = 10 * time.Second
)

// WithDefaults returns c with the defaults for its zero fields, or an error
// when a field is negative or MinBackoff exceeds MaxBackoff.
func (c Config) WithDefaults() (Config, error) {
	if c.BatchSize == 0 {
		c.BatchSize = DefaultBatchSize
	}
	if c.FlushInterval == 0 {
		c.FlushInterval = DefaultFlushInterval
	}
	if c.QueueSize == 0 {
		c.QueueSize = DefaultQueueSize
	}
	if c.MinBackoff == 0 {
		c.MinBackoff = DefaultMinBackoff
	}
	if c.MaxBackoff == 0 {
		c.MaxBackoff = DefaultMaxBackoff
	}
	switch {
	case c.BatchSize < 0 || c.QueueSize < 0:
		return c, errors.New("BatchSize and QueueSize must not be negative")
	case c.FlushInterval < 0 || c.MinBackoff < 0 || c.MaxBackoff < 0:
		return c, errors.New("FlushInterval, MinBackoff and MaxBackoff must not be negative")
	case c.MinBackoff > c.MaxBackoff:
		return c, fmt.Errorf("MinBackoff %v exceeds MaxBackoff %v", c.MinBackoff, c.MaxBackoff)
	}
	c.QueueSize = max(c.QueueSize, c.BatchSize)
	return c, nil
}

// WriteFunc writes one batch. attempt is 0 the first time a batch is
// written and counts the failures of the same batch after. It must not
// keep batch after it returns. ctx is canceled when Close gives up.
type WriteFunc[T any] func(ctx context.Context, batch []T, attempt int) error

// Writer queues items and writes them in batches on its own goroutine.
// Its methods are safe for concurrent use.
type Writer[T any] struct {
	cfg   Config
	write WriteFunc[T]

	mu      sync.Mutex
	notFull sync.Cond
	q       deque[T]
	enq     uint64 // items ever queued
	closed  bool
	wake    chan struct{} // the queue reached a batch

	dropped  atomic.Uint64
	pendingN atomic.Int64 // items in the batch being written

	errMu   sync.Mutex
	lastErr error

	ctx     context.Context // canceled when Close gives up
	cancel  context.CancelFunc
	flushCh chan *flushReq
	closeCh chan context.Context
	done    chan struct{}

	closeOnce sync.Once
	lost      int64 // set by the goroutine before done closes
	lostErr   error
}

type flushReq struct {
	target uint64
	done   chan error // buffered
}

// New starts a Writer; cfg should have been through WithDefaults.
func New[T any](cfg Config, write WriteFunc[T]) *Writer[T] {
	w := &Writer[T]{
		cfg:     cfg,
		write:   write,
		wake:    make(chan struct{}, 1),
		flushCh: make(chan *flushReq),
		closeCh: make(chan context.Context, 1),
		done:    make(chan struct{}),
	}
	w.notFull.L = &w.mu
	w.ctx, w.cancel = context.WithCancel(context.Background())
	go w.run()
	return w
}

// Put queues v. It does no I/O. When the queue is full it drops v, or with
// Config.Block waits for room; after Close it drops v. Dropped items are
// counted. It reports whether v was queued.
func (w *Writer[T]) Put(v T) bool {
	w.mu.Lock()
	for w.q.n >= w.cfg.QueueSize && !w.closed {
		if !w.cfg.Block {
			w.mu.Unlock()
			w.dropped.Add(1)
			return false
		}
		w.notFull.Wait()
	}
	if w.closed {
		w.mu.Unlock()
		w.dropped.Add(1)
		return false
	}
	w.q.push(v)
	w.enq++
	n := w.q.n
	w.mu.Unlock()
	if n == w.cfg.BatchSize {
		select {
		case w.wake <- struct{}{}:
		default:
		}
	}
	return true
}

// Dropped returns the number of items dropped: put while the queue was
// full or after Close, or left unwritten when Close gave up.
func (w *Writer[T]) Dropped() uint64 { return w.dropped.Load() }

// Len returns the number of items held: queued, or in the batch being
// written.
func (w *Writer[T]) Len() int {
	w.mu.Lock()
	n := w.q.n
	w.mu.Unlock()
	return n + int(w.pendingN.Load())
}

// Err returns the error of the last write attempt, or nil if it succeeded.
func (w *Writer[T]) Err() error {
	w.errMu.Lock()
	defer w.errMu.Unlock()
	return w.lastErr
}

func (w *Writer[T]) setErr(err error) {
	w.errMu.Lock()
	w.lastErr = err
	w.errMu.Unlock()
}

// Flush returns when every item put before the call is written, or when
// ctx ends: its error then wraps ctx's error and the last write error.
func (w *Writer[T]) Flush(ctx context.Context) error {
	w.mu.Lock()
	req := &flushReq{target: w.enq, done: make(chan error, 1)}
	w.mu.Unlock()
	select {
	case w.flushCh <- req:
	case <-w.done:
		return errdefs.ErrClosed
	case <-ctx.Done():
		return w.ctxErr(ctx)
	}
	select {
	case err := <-req.done:
		return err
	case <-ctx.Done():
		return w.ctxErr(ctx)
	}
}

func (w *Writer[T]) ctxErr(ctx context.Context) error {
	if last := w.Err(); last != nil {
		return fmt.Errorf("%w; last error: %w", ctx.Err(), last)
	}
	return ctx.Err()
}

// Close stops taking items and writes what is held, retrying failures
// until ctx ends. It returns how many items it could not write (they are
// also counted in Dropped) and why: the last write error, or ctx's. A
// batch whose write was cut short by ctx counts as not written, though
// the database may have committed it. Close after Close returns 0, nil.
func (w *Writer[T]) Close(ctx context.Context) (lost int64, err error) {
	first := false
	w.closeOnce.Do(func() {
		first = true
		w.mu.Lock()
		w.closed = true
		w.notFull.Broadcast()
		w.mu.Unlock()
		w.closeCh <- ctx
		go func() {
			select {
			case <-ctx.Done():
				w.cancel()
			case <-w.done:
			}
		}()
	})
	<-w.done
	if !first {
		return 0, nil
	}
	w.cancel()
	return w.lost, w.lostErr
}

// run is the writer goroutine.
func (w *Writer[T]) run() {
	defer close(w.done)
	ticker := time.NewTicker(w.cfg.FlushInterval)
	defer ticker.Stop()
	timer := time.NewTimer(0)
	<-timer.C
	rnd := rand.New(rand.NewPCG(rand.Uint64(), rand.Uint64()))

	var (
		pending  []T
		attempt  int
		taken    uint64 // items moved into batches
		settled  uint64 // items written, or lost
		forceTo  uint64 // write everything up to this many items, full batch or not
		closing  bool
		closeCtx context.Context
		waiters  []*flushReq
	)
	answer := func(err error, all bool) {
		k := 0
		for _, r := range waiters {
			if all || r.target <= settled {
				r.done <- err
			} else {
				waiters[k] = r
				k++
			}
		}
		clear(waiters[k:])
		waiters = waiters[:k]
	}
	handle := func(r *flushReq) {
		waiters = append(waiters, r)
		forceTo = max(forceTo, r.target)
	}
	for {
		answer(nil, false)
		if closing && closeCtx.Err() != nil {
			// Give up: what is left is lost.
			w.mu.Lock()
			rest := w.q.n
			w.q.drop()
			w.notFull.Broadcast()
			w.mu.Unlock()
			w.lost = int64(len(pending) + rest)
			w.pendingN.Store(0)
			w.dropped.Add(uint64(w.lost))
			if w.lost > 0 {
				w.lostErr = w.Err()
				if w.lostErr == nil {
					w.lostErr = closeCtx.Err()
				}
			}
			answer(errdefs.ErrClosed, true)
			return
		}
		if len(pending) == 0 {
			w.mu.Lock()
			n := w.q.n
			if n > 0 && (n >= w.cfg.BatchSize || closing || taken < forceTo) {
				pending = w.q.pop(pending[:0], w.cfg.BatchSize)
				w.notFull.Broadcast()
			}
			w.mu.Unlock()
			if len(pending) == 0 {
				if closing {
					answer(errdefs.ErrClosed, true)
					return
				}
				select {
				case <-w.wake:
				case <-ticker.C:
					w.mu.Lock()
					forceTo = w.enq
					idle := w.q.n == 0
					w.mu.Unlock()
					if idle && w.cfg.OnIdle != nil {
						w.cfg.OnIdle(w.ctx)
					}
				case r := <-w.flushCh:
					handle(r)
				case ctx := <-w.closeCh:
					closing, closeCtx = true, ctx
				}
				continue
			}
			taken += uint64(len(pending))
			w.pendingN.Store(int64(len(pending)))
			attempt = 0
		}
		err := w.write(w.ctx, pending, attempt)
		if err == nil {
			settled += uint64(len(pending))
			clear(pending)
			pending = pending[:0]
			w.pendingN.Store(0)
			if attempt > 0 && w.cfg.OnRecover != nil {
				w.cfg.OnRecover(attempt)
			}
			w.setErr(nil)
			continue
		}
		w.setErr(err)
		if w.cfg.OnError != nil {
			w.cfg.OnError(err, attempt+1, len(pending))
		}
		timer.Reset(backoffDelay(attempt, w.cfg.MinBackoff, w.cfg.MaxBackoff, rnd.Float64()))
		attempt++
	wait:
		for {
			var closeDone <-chan struct{}
			if closing {
				closeDone = closeCtx.Done()
			}
			select {
			case <-timer.C:
				break wait
			case <-w.wake:
			case <-ticker.C:
			case r := <-w.flushCh:
				handle(r)
			case ctx := <-w.closeCh:
				closing, closeCtx = true, ctx
				// Try once more at once: the caller is waiting.
				if !timer.Stop() {
					<-timer.C
				}
				break wait
			case <-closeDone:
				if !timer.Stop() {
					<-timer.C
				}
				break wait
			}
		}
	}
}

// backoffDelay returns the wait before retry number attempt (from 0):
// d = min(minD·2^attempt, maxD), jittered to a uniformly random point of
// [d/2, d]. u is a uniform random number in [0, 1).
func backoffDelay(attempt int, minD, maxD time.Duration, u float64) time.Duration {
	d := maxD
	if attempt < 62 && minD < maxD>>min(attempt, 62) {
		d = minD << attempt
	}
	return d/2 + time.Duration(u*float64(d-d/2))
}
