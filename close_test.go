package apipool_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/apipool-ng/apipool"
	"github.com/apipool-ng/apipool/recorder"
	"github.com/apipool-ng/apipool/sharedstate"
)

// durableRecorder stands for a recorder that writes to a store: Record
// holds events, and Close writes them out one by one, each write checking
// ctx as real I/O does, so that a Close whose context has ended writes
// nothing. Events recorded after Close are dropped and counted.
type durableRecorder struct {
	mu         sync.Mutex
	held       []recorder.Event
	written    []recorder.Event
	closed     bool
	closeCalls int
	dropped    int
	// entered receives when Close is called, returned when it returns;
	// gate, when set, holds Close until it is closed.
	entered, returned chan struct{}
	gate              chan struct{}
	// fail, when set, is returned by Close after it wrote what it could.
	fail error
}

func (r *durableRecorder) Record(e recorder.Event) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		r.dropped++
		return
	}
	r.held = append(r.held, e)
}

func newDurableRecorder() *durableRecorder {
	return &durableRecorder{entered: make(chan struct{}, 8), returned: make(chan struct{}, 8)}
}

func (r *durableRecorder) Close(ctx context.Context) error {
	r.entered <- struct{}{}
	defer func() { r.returned <- struct{}{} }()
	if r.gate != nil {
		<-r.gate
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.closed = true
	r.closeCalls++
	for len(r.held) > 0 {
		if err := ctx.Err(); err != nil {
			lost := len(r.held)
			r.held = nil
			return fmt.Errorf("durable: %d events not written: %w", lost, err)
		}
		r.written = append(r.written, r.held[0])
		r.held = r.held[1:]
	}
	return r.fail
}

// state returns how many events were written and dropped, and how many
// times Close ran.
func (r *durableRecorder) state() (written, dropped, closeCalls int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.written), r.dropped, r.closeCalls
}

// goClose runs p.Close(ctx) in the background.
func goClose(p *apipool.Transport, ctx context.Context) <-chan error {
	ch := make(chan error, 1)
	go func() { ch <- p.Close(ctx) }()
	return ch
}

// asCloseError asserts err is a *CloseError and returns it.
func asCloseError(t *testing.T, err error) *apipool.CloseError {
	t.Helper()
	var ce *apipool.CloseError
	if !errors.As(err, &ce) {
		t.Fatalf("Close: %v (%T), want a *apipool.CloseError", err, err)
	}
	return ce
}

// Issue 24 (5): a background probe stuck on a slow endpoint (it ignores
// its cancellation) while 100 requests are served. Close cancels the probe
// and hands the recorder the time left at once: all 100 events are
// written while the probe is still stuck, and Close, when its context
// ends, says the probes are still running (ErrCloseIncomplete, ctx's
// error). The recorder is closed once: a second Close, still too short,
// says the same and writes nothing twice; once the probe ends, a Close
// with time to wait finishes and returns nil. Before, Close waited out its
// context for the probe and closed the recorder with the context expired:
// none of the 100 events was written.
func TestCloseStuckProbeLosesNoEvents(t *testing.T) {
	t.Parallel()
	clk := newClock()
	entered := make(chan struct{}, 1)
	release := make(chan struct{})
	released := false
	defer func() {
		if !released {
			close(release)
		}
	}()
	up := newUpstream(func(s seen) reply {
		if strings.HasSuffix(s.URL, "/slow") {
			entered <- struct{}{}
			<-release // a slow endpoint behind a base that ignores cancellation
		}
		return reply{Status: 200}
	})
	rec := newDurableRecorder()
	p := mustNew(t, keys(2), apipool.WithBase(up), apipool.WithClock(clk), apipool.WithRecorder(rec),
		apipool.WithProbe(apipool.ProbeRequest("GET", "http://api.test/slow"), time.Minute))
	waitTimer(t, clk) // the probe loop waits for its first round
	if err := p.Disable("k1", "so that the probe loop probes it"); err != nil {
		t.Fatal(err)
	}
	clk.Advance(time.Minute)
	await(t, entered, "the probe loop entering the slow endpoint")
	for range 100 {
		mustDo(t, p)
	}

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	first := goClose(p, ctx)
	// The recorder is closed while the probe is stuck and ctx still has
	// all its time.
	awaitRecorder(t, rec.returned, first)
	cancel() // the caller's time is up; the probe is still stuck
	err := await(t, first, "the first Close")
	if w, _, _ := rec.state(); w != 100 {
		t.Fatalf("%d of 100 events written", w)
	}
	ce := asCloseError(t, err)
	if !slices.Equal(ce.Running, []string{"probes"}) || ce.RecorderClosing || ce.Recorder != nil {
		t.Fatalf("first Close: %+v, want the probes still running, the recorder closed", ce)
	}
	if !errors.Is(err, apipool.ErrCloseIncomplete) || !errors.Is(err, context.Canceled) {
		t.Fatalf("first Close: %v, want ErrCloseIncomplete and context.Canceled", err)
	}
	if !strings.Contains(err.Error(), "probes") {
		t.Fatalf("the error %q does not name the probes", err)
	}
	if _, err := p.RoundTrip(newGet(t, "http://api.test/v1/things")); !errors.Is(err, apipool.ErrClosed) {
		t.Fatalf("RoundTrip after Close: %v, want ErrClosed", err)
	}

	// Still stuck: a second Close whose context has ended says the same,
	// and does not close the recorder again.
	again := p.Close(ctx)
	if ce := asCloseError(t, again); !slices.Equal(ce.Running, []string{"probes"}) || !errors.Is(again, apipool.ErrCloseIncomplete) {
		t.Fatalf("second Close: %v", again)
	}

	// The slow endpoint answers; a Close with time to wait finishes.
	close(release)
	released = true
	long, cancelLong := context.WithTimeout(context.Background(), time.Minute)
	defer cancelLong()
	if err := p.Close(long); err != nil {
		t.Fatalf("third Close, the probe over: %v, want nil", err)
	}
	written, dropped, calls := rec.state()
	if written != 100 || calls != 1 {
		t.Fatalf("%d events written, recorder closed %d times; want 100, once", written, calls)
	}
	// The probe's own event came after the recorder closed.
	if dropped != 1 {
		t.Fatalf("%d events dropped, want the late probe's one", dropped)
	}
	if up.idleCalls.Load() == 0 {
		t.Fatal("Close left the base's idle connections open")
	}
}

// The shared-state loops are cancelled when Close starts too: a store
// whose Watch ignores its cancellation does not hold up the recorder, and
// a later Close waits for it.
func TestCloseStuckSharedStateLosesNoEvents(t *testing.T) {
	t.Parallel()
	store := &stuckWatch{entered: make(chan struct{}, 1), release: make(chan struct{})}
	released := false
	defer func() {
		if !released {
			close(store.release)
		}
	}()
	rec := newDurableRecorder()
	p := mustNew(t, keys(1), apipool.WithBase(newUpstream(nil)), apipool.WithRecorder(rec), apipool.WithSharedState(store))
	await(t, store.entered, "the watch loop calling Watch")
	for range 10 {
		mustDo(t, p)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	first := goClose(p, ctx)
	awaitRecorder(t, rec.returned, first)
	cancel()
	err := await(t, first, "the first Close")
	if ce := asCloseError(t, err); !slices.Equal(ce.Running, []string{"shared state"}) || ce.Recorder != nil {
		t.Fatalf("first Close: %v", err)
	}
	if w, _, _ := rec.state(); w != 10 {
		t.Fatalf("%d of 10 events written", w)
	}
	close(store.release)
	released = true
	if err := p.Close(context.Background()); err != nil {
		t.Fatalf("second Close, the watch over: %v", err)
	}
}

// stuckWatch is a sharedstate.Store whose Watch ignores its context until
// released.
type stuckWatch struct {
	entered chan struct{}
	release chan struct{}
}

func (s *stuckWatch) Publish(context.Context, sharedstate.Change) error { return nil }

func (s *stuckWatch) Watch(ctx context.Context, apply func(sharedstate.Change)) error {
	select {
	case s.entered <- struct{}{}:
	default:
	}
	<-s.release
	return ctx.Err()
}

func (s *stuckWatch) Take(_ context.Context, _ string, _ sharedstate.Limits, _ time.Time, n int) (int, time.Time, error) {
	return n, time.Time{}, nil
}

// A Close that runs while another is still closing the recorder waits for
// it within its own context; when that ends first, it says the recorder is
// still closing, and a later Close gets the recorder's answer. A
// recorder's error is reported by every later Close, but is not work left
// (no ErrCloseIncomplete): the recorder is closed once.
func TestCloseWaitsForTheRecorderAcrossCalls(t *testing.T) {
	t.Parallel()
	lost := errors.New("durable: 3 events lost")
	rec := newDurableRecorder()
	rec.gate, rec.fail = make(chan struct{}), lost
	var open sync.Once
	defer open.Do(func() { close(rec.gate) })
	p := mustNew(t, keys(1), apipool.WithBase(newUpstream(nil)), apipool.WithRecorder(rec))
	mustDo(t, p)
	first := goClose(p, context.Background())
	// Once the first Close is in the recorder's Close, a second one whose
	// context has ended finds it closing.
	awaitRecorder(t, rec.entered, first)
	err := await(t, goClose(p, canceled()), "a second Close while the first closes the recorder")
	if ce := asCloseError(t, err); !ce.RecorderClosing || len(ce.Running) > 0 || ce.Recorder != nil {
		t.Fatalf("second Close: %+v, want the recorder still closing", ce)
	}
	if !errors.Is(err, apipool.ErrCloseIncomplete) || !errors.Is(err, context.Canceled) || errors.Is(err, lost) {
		t.Fatalf("second Close: %v, want the recorder still closing", err)
	}
	if !strings.Contains(err.Error(), "recorder") {
		t.Fatalf("the error %q does not name the recorder", err)
	}
	open.Do(func() { close(rec.gate) })
	for i, err := range []error{await(t, first, "the first Close"), p.Close(canceled()), p.Close(context.Background())} {
		ce := asCloseError(t, err)
		if !errors.Is(err, lost) || ce.Recorder != lost || ce.RecorderClosing || len(ce.Running) > 0 ||
			errors.Is(err, apipool.ErrCloseIncomplete) || errors.Is(err, context.Canceled) {
			t.Fatalf("Close %d: %+v, want the recorder's error alone", i, ce)
		}
	}
	if w, _, calls := rec.state(); w != 1 || calls != 1 {
		t.Fatalf("%d events written, recorder closed %d times; want 1, once", w, calls)
	}
}

// awaitRecorder waits until the recorder's Close is called (entered) or
// has returned (returned), failing if the pool's Close returns first: with
// work stuck, it must not return before its context ends.
func awaitRecorder(t *testing.T, ch chan struct{}, closing <-chan error) {
	t.Helper()
	select {
	case <-ch:
	case err := <-closing:
		t.Fatalf("Close returned %v before its context ended, without closing the recorder", err)
	case <-time.After(60 * time.Second):
		t.Fatal("the recorder not closed after 60s: Close is waiting for the stuck work first")
	}
}

func canceled() context.Context {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	return ctx
}
