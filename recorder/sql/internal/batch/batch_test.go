package batch

import (
	"context"
	"errors"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/apipool-ng/apipool/errdefs"
)

// recorderW records the batches written, failing while fail is set.
type recorderW struct {
	mu       sync.Mutex
	fail     bool
	attempts [][]int
	attemptN []int
	written  []int
	gate     chan struct{} // when not nil, each write waits for a value
}

func (r *recorderW) write(ctx context.Context, b []int, attempt int) error {
	if r.gate != nil {
		select {
		case <-r.gate:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.attempts = append(r.attempts, slices.Clone(b))
	r.attemptN = append(r.attemptN, attempt)
	if r.fail {
		return errors.New("down")
	}
	r.written = append(r.written, b...)
	return nil
}

func (r *recorderW) setFail(v bool) {
	r.mu.Lock()
	r.fail = v
	r.mu.Unlock()
}

func newW(t *testing.T, cfg Config, r *recorderW) *Writer[int] {
	t.Helper()
	cfg, err := cfg.WithDefaults()
	if err != nil {
		t.Fatal(err)
	}
	w := New(cfg, r.write)
	t.Cleanup(func() { w.Close(context.Background()) })
	return w
}

// TestRetrySameBatch: a failed batch is written again as it was, with a
// growing attempt number, and every item lands once, in order.
func TestRetrySameBatch(t *testing.T) {
	r := &recorderW{fail: true}
	w := newW(t, Config{BatchSize: 10, FlushInterval: time.Hour, MinBackoff: time.Millisecond, MaxBackoff: 2 * time.Millisecond}, r)
	for i := range 25 {
		w.Put(i)
	}
	// Wait until the first batch failed twice.
	for {
		r.mu.Lock()
		n := len(r.attempts)
		r.mu.Unlock()
		if n >= 2 {
			break
		}
		time.Sleep(time.Millisecond)
	}
	r.setFail(false)
	if err := w.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if !slices.Equal(r.written, seq(25)) {
		t.Errorf("written %v", r.written)
	}
	if !slices.Equal(r.attempts[0], r.attempts[1]) || r.attemptN[0] != 0 || r.attemptN[1] != 1 {
		t.Errorf("first attempts %v (#%d) and %v (#%d): want the same batch, attempts 0 and 1", r.attempts[0], r.attemptN[0], r.attempts[1], r.attemptN[1])
	}
	if w.Dropped() != 0 || w.Len() != 0 || w.Err() != nil {
		t.Errorf("Dropped %d, Len %d, Err %v", w.Dropped(), w.Len(), w.Err())
	}
}

func seq(n int) []int {
	s := make([]int, n)
	for i := range s {
		s[i] = i
	}
	return s
}

// TestDropWhenFull: a full queue drops and counts; Block waits instead.
func TestDropWhenFull(t *testing.T) {
	r := &recorderW{gate: make(chan struct{})}
	w := newW(t, Config{BatchSize: 5, QueueSize: 20, FlushInterval: time.Hour}, r)
	for i := range 100 {
		w.Put(i)
	}
	// At most a batch of 5 is out of the queue; the queue holds 20.
	if d := w.Dropped(); d < 75 || d > 80 {
		t.Errorf("Dropped = %d, want 75 to 80", d)
	}
	close(r.gate)
	if err := w.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	r.mu.Lock()
	n := len(r.written)
	r.mu.Unlock()
	if uint64(n)+w.Dropped() != 100 {
		t.Errorf("%d written + %d dropped != 100", n, w.Dropped())
	}
}

func TestBlockWhenFull(t *testing.T) {
	r := &recorderW{gate: make(chan struct{})}
	w := newW(t, Config{BatchSize: 5, QueueSize: 5, FlushInterval: time.Hour, Block: true}, r)
	done := make(chan struct{})
	go func() {
		for i := range 50 {
			w.Put(i)
		}
		close(done)
	}()
	stop := make(chan struct{})
	go func() {
		for {
			select {
			case r.gate <- struct{}{}:
			case <-stop:
				return
			}
		}
	}()
	<-done
	if err := w.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	close(stop)
	if err := w.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	if w.Dropped() != 0 || len(r.written) != 50 {
		t.Errorf("Dropped %d, written %d; want 0, 50", w.Dropped(), len(r.written))
	}
}

// TestCloseGivesUp: Close with a failing write gives up at its context's
// end and counts what is left; Put after Close drops.
func TestCloseGivesUp(t *testing.T) {
	r := &recorderW{fail: true}
	w := newW(t, Config{BatchSize: 10, FlushInterval: time.Millisecond, MinBackoff: time.Millisecond, MaxBackoff: time.Millisecond}, r)
	for i := range 35 {
		w.Put(i)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	lost, err := w.Close(ctx)
	if lost != 35 || err == nil || err.Error() != "down" {
		t.Errorf("Close = %d, %v; want 35 lost, the write's error", lost, err)
	}
	if w.Put(1) || w.Dropped() != 36 {
		t.Errorf("Put after Close queued, or Dropped = %d (want 36)", w.Dropped())
	}
	if lost, err := w.Close(context.Background()); lost != 0 || err != nil {
		t.Errorf("second Close = %d, %v", lost, err)
	}
	if err := w.Flush(context.Background()); !errors.Is(err, errdefs.ErrClosed) {
		t.Errorf("Flush after Close = %v", err)
	}
}

// TestCloseWrites: Close writes everything, full batch or not.
func TestCloseWrites(t *testing.T) {
	r := &recorderW{}
	w := newW(t, Config{BatchSize: 1000, FlushInterval: time.Hour}, r)
	for i := range 1234 {
		w.Put(i)
	}
	if lost, err := w.Close(context.Background()); lost != 0 || err != nil {
		t.Fatalf("Close = %d, %v", lost, err)
	}
	if !slices.Equal(r.written, seq(1234)) || len(r.attempts) != 2 {
		t.Errorf("written %d items in %d batches", len(r.written), len(r.attempts))
	}
}

// TestFlushDeadline: Flush's error wraps its context's and the write's.
func TestFlushDeadline(t *testing.T) {
	r := &recorderW{fail: true}
	w := newW(t, Config{BatchSize: 10, FlushInterval: time.Hour, MinBackoff: time.Millisecond, MaxBackoff: time.Millisecond}, r)
	w.Put(1)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Millisecond)
	defer cancel()
	err := w.Flush(ctx)
	if !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "last error: down") {
		t.Errorf("Flush = %v", err)
	}
	r.setFail(false) // so that Close, without a deadline, ends
}

func TestConfig(t *testing.T) {
	c, err := Config{}.WithDefaults()
	if err != nil || c.BatchSize != DefaultBatchSize || c.QueueSize != DefaultQueueSize || c.FlushInterval != DefaultFlushInterval {
		t.Errorf("defaults: %+v, %v", c, err)
	}
	if c, _ := (Config{BatchSize: 500, QueueSize: 10}).WithDefaults(); c.QueueSize != 500 {
		t.Errorf("QueueSize %d, want raised to the batch size", c.QueueSize)
	}
	for _, bad := range []Config{{BatchSize: -1}, {QueueSize: -1}, {FlushInterval: -1}, {MinBackoff: time.Second, MaxBackoff: time.Millisecond}} {
		if _, err := bad.WithDefaults(); err == nil {
			t.Errorf("%+v accepted", bad)
		}
	}
}

func TestBackoff(t *testing.T) {
	for a, want := range []time.Duration{100, 200, 400, 800, 1000, 1000} {
		want *= time.Millisecond
		lo, hi := backoffDelay(a, 100*time.Millisecond, time.Second, 0), backoffDelay(a, 100*time.Millisecond, time.Second, 0.999999)
		if lo != want/2 || hi > want || hi < want*99/100 {
			t.Errorf("attempt %d: [%v, %v], want [%v, %v]", a, lo, hi, want/2, want)
		}
	}
	if d := backoffDelay(1000, time.Millisecond, time.Second, 0.5); d > time.Second {
		t.Errorf("attempt 1000: %v", d)
	}
}

// TestOnIdle: a writer that receives nothing still calls OnIdle at its
// ticks, with a context that Close cancels.
func TestOnIdle(t *testing.T) {
	calls := make(chan context.Context, 100)
	w := newW(t, Config{FlushInterval: time.Millisecond, OnIdle: func(ctx context.Context) {
		select {
		case calls <- ctx:
		default:
		}
	}}, &recorderW{})
	ctx := <-calls
	if ctx.Err() != nil {
		t.Fatalf("OnIdle's context is done before Close: %v", ctx.Err())
	}
	w.Close(context.Background())
	if ctx.Err() == nil {
		t.Error("OnIdle's context is not canceled by Close")
	}
}
