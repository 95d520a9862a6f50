package browsertest

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/tracing"
	"github.com/chromedp/chromedp"
)

// browser is one headless Chromium with one tab, for the tests after
// TestDashboardInBrowser.
type browser struct {
	t     *testing.T
	ctx   context.Context
	errs  *consoleErrors
	trace *traceCollector
}

// traceCollector keeps the trace events Chromium sends.
type traceCollector struct {
	mu     sync.Mutex
	events [][]byte
	done   chan struct{}
}

func (c *traceCollector) listen(ev any) {
	switch ev := ev.(type) {
	case *tracing.EventDataCollected:
		c.mu.Lock()
		for _, v := range ev.Value {
			c.events = append(c.events, append([]byte(nil), v...))
		}
		c.mu.Unlock()
	case *tracing.EventTracingComplete:
		c.mu.Lock()
		if c.done != nil {
			close(c.done)
			c.done = nil
		}
		c.mu.Unlock()
	}
}

// newBrowser starts Chromium with a viewport of w x h CSS pixels; it
// stops with the test.
func newBrowser(t *testing.T, w, h int) *browser {
	t.Helper()
	bin := chromium(t)
	errs := &consoleErrors{}
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(),
		append(chromedp.DefaultExecAllocatorOptions[:],
			chromedp.ExecPath(bin),
			chromedp.Headless,
			chromedp.NoSandbox,
			chromedp.DisableGPU,
			chromedp.NoFirstRun,
			chromedp.Flag("disable-quic", true),
			chromedp.Flag("disable-background-networking", true),
			chromedp.Flag("disable-component-update", true),
			chromedp.Flag("disable-sync", true),
			chromedp.UserDataDir(t.TempDir()),
			chromedp.WindowSize(w, h),
		)...)
	t.Cleanup(cancelAlloc)
	tc := &traceCollector{}
	ctx, cancel := chromedp.NewContext(actx, chromedp.WithListener(func(ev any) { errs.listen(ev); tc.listen(ev) }))
	t.Cleanup(cancel)
	if err := chromedp.Do(ctx); err != nil {
		t.Fatalf("starting Chromium: %v", err)
	}
	if err := chromedp.Do(ctx, chromedp.EmulateViewport(int64(w), int64(h))); err != nil {
		t.Fatal(err)
	}
	ctx, cancelT := context.WithTimeout(ctx, 3*time.Minute)
	t.Cleanup(cancelT)
	return &browser{t: t, ctx: ctx, errs: errs, trace: tc}
}

// serve mounts h under /apipool/ on a test server and returns the
// page's URL.
func serve(t *testing.T, h http.Handler) string {
	mux := http.NewServeMux()
	mux.Handle("/apipool/", http.StripPrefix("/apipool", h))
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return srv.URL + "/apipool/"
}

func (b *browser) open(url string) {
	b.t.Helper()
	if err := chromedp.Do(b.ctx, chromedp.Navigate(url)); err != nil {
		b.t.Fatal(err)
	}
}

func (b *browser) do(a ...chromedp.Action[chromedp.Void]) {
	b.t.Helper()
	if err := chromedp.Do(b.ctx, a...); err != nil {
		b.t.Fatal(err)
	}
}

func (b *browser) wait(what, expr string) {
	b.t.Helper()
	if _, err := chromedp.Run(b.ctx, chromedp.Poll[bool](expr, chromedp.WithPollingInterval(20*time.Millisecond), chromedp.WithPollingTimeout(90*time.Second))); err != nil {
		b.t.Fatalf("waiting for %s (%s): %v", what, expr, err)
	}
}

func (b *browser) eval(expr string, v any) {
	b.t.Helper()
	raw, err := chromedp.Run(b.ctx, chromedp.Evaluate[[]byte](expr))
	if err != nil {
		b.t.Fatalf("evaluating %s: %v", expr, err)
	}
	if err := json.Unmarshal(raw, v); err != nil {
		b.t.Fatalf("decoding %s: %v", raw, err)
	}
}

func (b *browser) refreshes() int {
	b.t.Helper()
	var s string
	b.eval(`document.body.dataset.refreshes`, &s)
	n, _ := strconv.Atoi(s)
	return n
}

// waitRefreshes waits for n more refreshes than now.
func (b *browser) waitRefreshes(n int) {
	b.t.Helper()
	b.wait(fmt.Sprintf("%d more refreshes", n), fmt.Sprintf(`Number(document.body.dataset.refreshes) >= %d`, b.refreshes()+n))
}

func (b *browser) noErrors() {
	b.t.Helper()
	if msgs := b.errs.list(); len(msgs) > 0 {
		b.t.Errorf("the page reported %d errors:\n%v", len(msgs), msgs)
	}
}

// mainThreadCPU traces the page for d and returns the CPU time (thread
// time, not wall time: other processes on a busy machine do not count)
// and the wall time of the top-level tasks of the renderer's main
// thread, in ms.
func (b *browser) mainThreadCPU(d time.Duration) (cpu, wall float64) {
	b.t.Helper()
	done := make(chan struct{})
	b.trace.mu.Lock()
	b.trace.events, b.trace.done = nil, done
	b.trace.mu.Unlock()
	if _, err := chromedp.Call(b.ctx, tracing.Start, tracing.StartParams{
		TransferMode: tracing.StartTransferModeReportEvents,
		TraceConfig:  &tracing.TraceConfig{IncludedCategories: []string{"toplevel", "__metadata"}},
	}); err != nil {
		b.t.Fatal(err)
	}
	time.Sleep(d)
	if _, err := chromedp.Call(b.ctx, tracing.End, cdp.Empty{}); err != nil {
		b.t.Fatal(err)
	}
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		b.t.Fatal("no tracingComplete")
	}
	b.trace.mu.Lock()
	defer b.trace.mu.Unlock()
	type event struct {
		Name string  `json:"name"`
		Ph   string  `json:"ph"`
		Pid  int64   `json:"pid"`
		Tid  int64   `json:"tid"`
		Dur  float64 `json:"dur"`
		Tdur float64 `json:"tdur"`
		Args struct {
			Name string `json:"name"`
		} `json:"args"`
	}
	evs := make([]event, 0, len(b.trace.events))
	main := map[[2]int64]bool{}
	for _, raw := range b.trace.events {
		var e event
		if json.Unmarshal(raw, &e) != nil {
			continue
		}
		if e.Ph == "M" && e.Name == "thread_name" && e.Args.Name == "CrRendererMain" {
			main[[2]int64{e.Pid, e.Tid}] = true
		}
		evs = append(evs, e)
	}
	if len(main) == 0 {
		b.t.Fatalf("no renderer main thread among %d trace events", len(evs))
	}
	for _, e := range evs {
		if e.Ph == "X" && e.Name == "ThreadControllerImpl::RunTask" && main[[2]int64{e.Pid, e.Tid}] {
			cpu += e.Tdur / 1000
			wall += e.Dur / 1000
		}
	}
	return cpu, wall
}
