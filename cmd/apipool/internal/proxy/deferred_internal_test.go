package proxy

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/apipool-ng/apipool/recorder"
)

// sliceRec is a recorder that keeps its events in order.
type sliceRec struct {
	mu     sync.Mutex
	events []recorder.Event
	closed atomic.Bool
}

func (r *sliceRec) Record(e recorder.Event) {
	r.mu.Lock()
	r.events = append(r.events, e)
	r.mu.Unlock()
}

func (r *sliceRec) Close(context.Context) error { r.closed.Store(true); return nil }

func (r *sliceRec) len() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.events)
}

func poll(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

func shortBackoff(t *testing.T) {
	minB, maxB := deferredMinBackoff, deferredMaxBackoff
	deferredMinBackoff, deferredMaxBackoff = time.Millisecond, 5*time.Millisecond
	t.Cleanup(func() { deferredMinBackoff, deferredMaxBackoff = minB, maxB })
}

var errDown = errors.New("connection refused")

// TestDeferredQueueThenForward: events beyond the queue are dropped and
// counted; once the store opens the queued ones reach it in order, then
// later ones go straight through.
func TestDeferredQueueThenForward(t *testing.T) {
	shortBackoff(t)
	var up atomic.Bool
	var tries atomic.Int64
	rec := &sliceRec{}
	d := newDeferredStore("test", errDown, func(ctx context.Context) (recorder.Recorder, error) {
		tries.Add(1)
		if !up.Load() {
			return nil, errDown
		}
		return rec, nil
	}, nil)
	for i := range deferredQueueSize + 5 {
		d.Record(recorder.Event{Attempt: i})
	}
	if d.Dropped() != 5 || d.QueueLen() != deferredQueueSize {
		t.Fatalf("dropped %d, queued %d; want 5, %d", d.Dropped(), d.QueueLen(), deferredQueueSize)
	}
	poll(t, "a few retries", func() bool { return tries.Load() >= 3 })
	if d.Open() || !errors.Is(d.Err(), errDown) {
		t.Fatalf("open %v, err %v while down", d.Open(), d.Err())
	}
	up.Store(true)
	poll(t, "the store to open", d.Open)
	if d.Err() != nil {
		t.Fatalf("Err %v once open", d.Err())
	}
	d.Record(recorder.Event{Attempt: -1})
	if n := rec.len(); n != deferredQueueSize+1 {
		t.Fatalf("the store got %d events, want %d", n, deferredQueueSize+1)
	}
	for i, e := range rec.events[:deferredQueueSize] {
		if e.Attempt != i || e.Time.IsZero() {
			t.Fatalf("event %d: %+v", i, e)
		}
	}
	if err := d.Close(context.Background()); err != nil || !rec.closed.Load() {
		t.Fatalf("Close: %v, store closed %v", err, rec.closed.Load())
	}
	if d.Dropped() != 5 {
		t.Fatalf("dropped %d after Close", d.Dropped())
	}
}

// TestDeferredCloseBeforeOpen: Close before the store opened reports the
// queued events lost and counts them; Record after Close drops.
func TestDeferredCloseBeforeOpen(t *testing.T) {
	shortBackoff(t)
	d := newDeferredStore("sql/postgres", errDown, func(ctx context.Context) (recorder.Recorder, error) {
		return nil, errDown
	}, nil)
	for range 7 {
		d.Record(recorder.Event{})
	}
	err := d.Close(context.Background())
	if !errors.Is(err, errEventsLost) {
		t.Fatalf("Close: %v", err)
	}
	const want = "recorder sql/postgres: stats store never became reachable (last error: connection refused): 7 events lost, 7 dropped in all"
	if err.Error() != want {
		t.Fatalf("Close: %q, want %q", err, want)
	}
	d.Record(recorder.Event{})
	if d.Dropped() != 8 || d.QueueLen() != 0 {
		t.Fatalf("dropped %d, queued %d", d.Dropped(), d.QueueLen())
	}
	if err := d.Close(context.Background()); !errors.Is(err, recorder.ErrClosed) {
		t.Fatalf("second Close: %v", err)
	}
}

// TestDeferredOpenAfterClose: an open that ends after Close gave up
// waiting for it closes the store it opened rather than leaking it.
func TestDeferredOpenAfterClose(t *testing.T) {
	shortBackoff(t)
	release := make(chan struct{})
	started := make(chan struct{}, 1)
	rec := &sliceRec{}
	d := newDeferredStore("test", errDown, func(ctx context.Context) (recorder.Recorder, error) {
		select {
		case started <- struct{}{}:
		default:
		}
		<-release // an open that ignores its context
		return rec, nil
	}, nil)
	d.Record(recorder.Event{})
	<-started
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := d.Close(ctx); !errors.Is(err, errEventsLost) {
		t.Fatalf("Close: %v", err)
	}
	close(release)
	poll(t, "the late store to be closed", rec.closed.Load)
	if d.Open() || rec.len() != 0 {
		t.Fatalf("open %v, events %d", d.Open(), rec.len())
	}
}
