package browsertest

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/apipool-ng/apipool"
	"github.com/apipool-ng/apipool/dashboard"
)

// bigPool is a pool of n keys that has sent 3n requests, round robin.
func bigPool(t *testing.T, n int) *apipool.Transport {
	t.Helper()
	api := httptest.NewServer(&upstream{})
	t.Cleanup(api.Close)
	keys := make([]apipool.Key, n)
	for i := range keys {
		keys[i] = apipool.Key{ID: fmt.Sprintf("k%04d", i), Secret: apipool.Secret(fmt.Sprintf("sk-big-%d", i))}
	}
	pool, err := apipool.New(keys, apipool.WithStrategy(apipool.RoundRobin))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pool.Close(context.Background()) })
	client := &http.Client{Transport: pool}
	for range 3 * n {
		resp, err := client.Get(api.URL + "/v1/things")
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	return pool
}

// longTasksJS starts recording the page's long tasks (over 50 ms).
const longTasksJS = `(() => { window.__long = []; new PerformanceObserver(l => { for (const e of l.getEntries()) window.__long.push(e.duration); }).observe({type: 'longtask', buffered: true}); return true; })()`

// TestThousandKeys loads the dashboard over 1,000 keys and measures the
// main thread's busy time per refresh (Chromium's TaskDuration over
// several refreshes, divided by their number); it logs it, and the
// longest task. Then it checks the page's structure at that size: a
// page of rows rather than a thousand, the charts before the table, a
// search box, and sortable columns.
func TestThousandKeys(t *testing.T) {
	n := 1000
	if s := os.Getenv("DASH_KEYS"); s != "" {
		n, _ = strconv.Atoi(s)
	}
	pool := bigPool(t, n)
	url := serve(t, dashboard.Handler(pool, dashboard.WithRefresh(time.Second), dashboard.WithActions()))
	b := newBrowser(t, 1400, 1100)
	b.open(url)
	b.wait("the first refresh", `Number(document.body.dataset.refreshes) >= 1`)
	var ok bool
	b.eval(longTasksJS, &ok)
	b.enableMetrics()
	b.waitRefreshes(1)
	// No polling while measuring: chromedp's polls run on the main
	// thread too.
	n0, t0 := b.refreshes(), b.taskSeconds()
	time.Sleep(6 * time.Second)
	n1, t1 := b.refreshes(), b.taskSeconds()
	per := (t1 - t0) / float64(n1-n0) * 1000
	var long []float64
	b.eval(`window.__long`, &long)
	maxLong := 0.0
	for _, d := range long {
		maxLong = max(maxLong, d)
	}
	var render string
	b.eval(`document.body.dataset.renderMs || 'not measured'`, &render)
	t.Logf("%d keys: main-thread time per refresh %.1f ms (Chromium TaskDuration over %d refreshes, 1 s apart); long tasks since load: %d, longest %.0f ms; last render %s ms", n, per, n1-n0, len(long), maxLong, render)
	if n1-n0 < 2 {
		t.Errorf("%d refreshes in 6 s at one a second", n1-n0)
	}

	var rows int
	b.eval(`document.querySelectorAll('#keys tbody tr').length`, &rows)
	if rows < 1 || rows > 100 {
		t.Errorf("%d rows rendered for %d keys, want a page of at most 100", rows, n)
	}
	var chartsFirst bool
	b.eval(`!!(document.querySelector('.charts').compareDocumentPosition(document.querySelector('#keys')) & Node.DOCUMENT_POSITION_FOLLOWING)`, &chartsFirst)
	if !chartsFirst {
		t.Errorf("the key table comes before the charts")
	}
	var chartTop float64
	b.eval(`document.querySelector('.charts').getBoundingClientRect().top + scrollY`, &chartTop)
	if chartTop > 1100 {
		t.Errorf("the charts start %.0f px down, below the first screen", chartTop)
	}
	var hasSearch, hasSort bool
	b.eval(`!!document.querySelector('input#key-search')`, &hasSearch)
	b.eval(`document.querySelectorAll('#keys thead button[data-sort]').length >= 5`, &hasSort)
	if !hasSearch || !hasSort {
		t.Errorf("search box %v, sort buttons %v; want both", hasSearch, hasSort)
	}
	b.noErrors()
}
