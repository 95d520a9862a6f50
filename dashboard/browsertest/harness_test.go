package browsertest

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strconv"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/performance"
	"github.com/chromedp/chromedp"
)

// browser is one headless Chromium with one tab, for the tests after
// TestDashboardInBrowser.
type browser struct {
	t    *testing.T
	ctx  context.Context
	errs *consoleErrors
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
	ctx, cancel := chromedp.NewContext(actx, chromedp.WithListener(errs.listen))
	t.Cleanup(cancel)
	if err := chromedp.Do(ctx); err != nil {
		t.Fatalf("starting Chromium: %v", err)
	}
	if err := chromedp.Do(ctx, chromedp.EmulateViewport(int64(w), int64(h))); err != nil {
		t.Fatal(err)
	}
	ctx, cancelT := context.WithTimeout(ctx, 3*time.Minute)
	t.Cleanup(cancelT)
	return &browser{t: t, ctx: ctx, errs: errs}
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

// taskSeconds is the main thread's busy time so far (Chromium's
// Performance.getMetrics TaskDuration).
func (b *browser) taskSeconds() float64 {
	b.t.Helper()
	res, err := chromedp.Call(b.ctx, performance.GetMetrics, cdp.Empty{})
	if err != nil {
		b.t.Fatal(err)
	}
	for _, m := range res.Metrics {
		if m.Name == "TaskDuration" {
			return m.Value
		}
	}
	b.t.Fatal("no TaskDuration metric")
	return 0
}

func (b *browser) enableMetrics() {
	b.t.Helper()
	if _, err := chromedp.Call(b.ctx, performance.Enable, performance.EnableParams{}); err != nil {
		b.t.Fatal(err)
	}
}

func (b *browser) noErrors() {
	b.t.Helper()
	if msgs := b.errs.list(); len(msgs) > 0 {
		b.t.Errorf("the page reported %d errors:\n%v", len(msgs), msgs)
	}
}
