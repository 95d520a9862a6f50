package browsertest

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	cdplog "github.com/chromedp/cdproto/log"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"

	"github.com/apipool-ng/apipool"
	"github.com/apipool-ng/apipool/dashboard"
)

const canary = "sk-CANARY-b10c"

// chromium returns the browser binary, or skips (fails with CI=true)
// when there is none.
func chromium(t *testing.T) string {
	t.Helper()
	p := os.Getenv("CHROMIUM")
	if p == "" {
		p = "/usr/bin/chromium"
	}
	if _, err := exec.LookPath(p); err != nil {
		msg := fmt.Sprintf("no Chromium at %s (install it with: apt-get update && apt-get install -y chromium; or set CHROMIUM): %v", p, err)
		if os.Getenv("CI") == "true" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	return p
}

// upstream is a fake API: the canary key is revoked (401), a key in
// limited gets 429 with an hour's Retry-After, the others 200.
type upstream struct {
	limited sync.Map // key secret -> bool
	seen429 atomic.Int64
}

func (u *upstream) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	key, _ := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	switch _, lim := u.limited.Load(key); {
	case key == canary:
		http.Error(w, "revoked", http.StatusUnauthorized)
	case lim:
		u.seen429.Add(1)
		w.Header().Set("Retry-After", "3600")
		http.Error(w, "slow down", http.StatusTooManyRequests)
	default:
		io.WriteString(w, `{"ok":true}`)
	}
}

// consoleErrors collects what the page reports as errors: console.error,
// uncaught exceptions, and browser log entries of level error (failed
// loads, Content-Security-Policy violations).
type consoleErrors struct {
	mu   sync.Mutex
	msgs []string
}

func (c *consoleErrors) listen(ev any) {
	var msg string
	switch ev := ev.(type) {
	case *runtime.EventConsoleAPICalled:
		if ev.Type == runtime.ConsoleAPICalledTypeError || ev.Type == runtime.ConsoleAPICalledTypeAssert {
			var parts []string
			for _, a := range ev.Args {
				parts = append(parts, string(a.Value))
			}
			msg = "console." + string(ev.Type) + ": " + strings.Join(parts, " ")
		}
	case *runtime.EventExceptionThrown:
		d := ev.ExceptionDetails
		msg = fmt.Sprintf("exception: %s at %s:%d:%d", d.Text, d.URL, d.LineNumber+1, d.ColumnNumber+1)
		if d.Exception != nil {
			msg += ": " + d.Exception.Description
		}
	case *cdplog.EventEntryAdded:
		if ev.Entry.Level == cdplog.EntryLevelError || ev.Entry.Level == cdplog.EntryLevelWarning {
			msg = "log " + string(ev.Entry.Level) + " (" + string(ev.Entry.Source) + "): " + ev.Entry.Text + " " + ev.Entry.URL
		}
	}
	if msg != "" {
		c.mu.Lock()
		c.msgs = append(c.msgs, msg)
		c.mu.Unlock()
	}
}

func (c *consoleErrors) list() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]string(nil), c.msgs...)
}

type pageRow struct {
	ID    string   `json:"id"`
	State string   `json:"state"`
	Cells []string `json:"cells"`
}

const rowsJS = `[...document.querySelectorAll('#keys tbody tr')].map(r => ({id: r.dataset.key, state: r.dataset.state, cells: [...r.cells].map(c => c.textContent)}))`

// drawnJS counts, in the canvas of the chart with the given id, the
// pixels of any of the given series colors: a chart that drew its
// series has many; axes and grid lines are other colors.
const drawnJS = `((id, colors) => {
  const cv = document.querySelector('#' + id + ' canvas');
  if (!cv || !cv.width || !cv.height) return -1;
  const d = cv.getContext('2d').getImageData(0, 0, cv.width, cv.height).data;
  const rgb = colors.map(h => [1, 3, 5].map(i => parseInt(h.substr(i, 2), 16)));
  let n = 0;
  for (let i = 0; i < d.length; i += 4) {
    if (d[i + 3] < 200) continue;
    for (const c of rgb) {
      if (Math.abs(d[i] - c[0]) < 12 && Math.abs(d[i + 1] - c[1]) < 12 && Math.abs(d[i + 2] - c[2]) < 12) { n++; break; }
    }
  }
  return n;
})`

// The series colors of app.js.
const (
	statusColors = `["#2e7d32", "#ef6c00", "#c62828", "#6a1b9a"]`
	paletteJS    = `["#1565c0", "#2e7d32", "#ef6c00", "#6a1b9a", "#00838f", "#ad1457", "#4e342e", "#558b2f", "#283593", "#9e9d24"]`
)

// known is the page's text for a sum over the attempts whose value is
// known and the count of the others: "1234 (+3 unknown)", "unknown (3)"
// when none is known, "-" without attempts or sums. Costs show 4
// decimals.
func known[T int64 | float64](v *T, unknown *int64) string {
	var n int64
	if unknown != nil {
		n = *unknown
	}
	if v == nil {
		if n > 0 {
			return fmt.Sprintf("unknown (%d)", n)
		}
		return "-"
	}
	var s string
	switch x := any(*v).(type) {
	case int64:
		s = strconv.FormatInt(x, 10)
	case float64:
		s = strconv.FormatFloat(x, 'f', 4, 64)
	}
	if n > 0 {
		s += fmt.Sprintf(" (+%d unknown)", n)
	}
	return s
}

// TestDashboardInBrowser loads the dashboard in headless Chromium, mounted
// with the package's one line, over a pool that has sent traffic: the page
// loads without console errors, has a row per key with the right states,
// draws its three charts, shows a key rate-limited during the test as
// cooling within one refresh, runs an action, and shows what the JSON API
// says. It leaves screenshots in its artifact directory (go test
// -artifacts).
func TestDashboardInBrowser(t *testing.T) {
	bin := chromium(t)
	up := &upstream{}
	api := httptest.NewServer(up)
	defer api.Close()

	keys := []apipool.Key{
		{ID: "alpha", Secret: "sk-alpha-1"},
		{ID: "bravo", Secret: "sk-bravo-2"},
		{ID: "charlie", Secret: "sk-charlie-3", PerDay: 1000},
		{ID: "delta", Secret: "sk-delta-4"},
		{ID: "echo", Secret: canary},
	}
	pool, err := apipool.New(keys, apipool.WithStrategy(apipool.RoundRobin))
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close(context.Background())
	client := &http.Client{Transport: pool}
	send := func(n int) {
		for range n {
			resp, err := client.Get(api.URL + "/v1/things")
			if err != nil {
				t.Fatal(err)
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
	}
	send(200) // echo meets a 401 and is disabled; the others succeed

	const refresh = 500 * time.Millisecond
	mux := http.NewServeMux()
	mux.Handle("/apipool/", http.StripPrefix("/apipool", dashboard.Handler(pool, dashboard.WithRefresh(refresh), dashboard.WithActions())))
	srv := httptest.NewServer(mux)
	defer srv.Close()
	pageURL := srv.URL + "/apipool/"

	errs := &consoleErrors{}
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(),
		append(chromedp.DefaultExecAllocatorOptions[:],
			chromedp.ExecPath(bin),
			chromedp.Headless,
			chromedp.NoSandbox, // tests run as root
			chromedp.DisableGPU,
			chromedp.NoFirstRun,
			chromedp.Flag("disable-quic", true),
			chromedp.Flag("disable-background-networking", true),
			chromedp.Flag("disable-component-update", true),
			chromedp.Flag("disable-sync", true),
			chromedp.UserDataDir(t.TempDir()),
			chromedp.WindowSize(1400, 1100),
		)...)
	defer cancelAlloc()
	ctx, cancel := chromedp.NewContext(actx, chromedp.WithListener(errs.listen))
	defer cancel()
	if err := chromedp.Do(ctx); err != nil { // starts the browser
		t.Fatalf("starting Chromium: %v", err)
	}
	// Every wait below polls for a condition; the deadline only bounds a
	// hung browser.
	ctx, cancelT := context.WithTimeout(ctx, 3*time.Minute)
	defer cancelT()
	wait := func(what, expr string) {
		t.Helper()
		if _, err := chromedp.Run(ctx, chromedp.Poll[bool](expr, chromedp.WithPollingInterval(50*time.Millisecond), chromedp.WithPollingTimeout(90*time.Second))); err != nil {
			t.Fatalf("waiting for %s (%s): %v", what, expr, err)
		}
	}
	eval := func(expr string, v any) {
		t.Helper()
		raw, err := chromedp.Run(ctx, chromedp.Evaluate[[]byte](expr))
		if err != nil {
			t.Fatalf("evaluating %s: %v", expr, err)
		}
		if err := json.Unmarshal(raw, v); err != nil {
			t.Fatalf("decoding %s: %v", raw, err)
		}
	}
	refreshes := func() int {
		t.Helper()
		var s string
		eval(`document.body.dataset.refreshes`, &s)
		n, _ := strconv.Atoi(s)
		return n
	}
	// waitRefresh waits until the page has rendered data fetched after
	// this call: two refreshes past the count now (the one running may
	// have fetched before).
	waitRefresh := func() {
		t.Helper()
		n := refreshes()
		wait("two more refreshes", fmt.Sprintf(`Number(document.body.dataset.refreshes) >= %d`, n+2))
	}
	rows := func() map[string]pageRow {
		t.Helper()
		var rs []pageRow
		eval(rowsJS, &rs)
		m := map[string]pageRow{}
		for _, r := range rs {
			m[r.ID] = r
		}
		if len(m) != len(rs) {
			t.Fatalf("rows with the same key: %+v", rs)
		}
		return m
	}
	screenshot := func(name string) {
		t.Helper()
		png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
		if err != nil {
			t.Fatalf("screenshot: %v", err)
		}
		p := filepath.Join(t.ArtifactDir(), name)
		if err := os.WriteFile(p, png, 0o644); err != nil {
			t.Fatal(err)
		}
		t.Logf("screenshot: %s", p)
	}

	if err := chromedp.Do(ctx, chromedp.Navigate(pageURL)); err != nil {
		t.Fatal(err)
	}
	wait("the first refresh", `Number(document.body.dataset.refreshes) >= 1`)

	// A row per key, in the pool's order, with the right states.
	var order []string
	eval(`[...document.querySelectorAll('#keys tbody tr')].map(r => r.dataset.key)`, &order)
	if strings.Join(order, ",") != "alpha,bravo,charlie,delta,echo" {
		t.Fatalf("rows %v, want one per key in the pool's order", order)
	}
	r := rows()
	for _, id := range []string{"alpha", "bravo", "charlie", "delta"} {
		if r[id].State != "active" {
			t.Errorf("%s shows %q, want active", id, r[id].State)
		}
	}
	if r["echo"].State != "disabled" || !strings.Contains(r["echo"].Cells[2], "disabled") {
		t.Errorf("echo (revoked upstream) shows %q %q, want disabled", r["echo"].State, r["echo"].Cells[2])
	}

	// Each chart drew its series.
	for id, colors := range map[string]string{"chart-status": statusColors, "chart-keys": paletteJS, "chart-latency": paletteJS} {
		var n int
		eval(fmt.Sprintf(`%s(%q, %s)`, drawnJS, id, colors), &n)
		t.Logf("%s: %d pixels of its series' colors", id, n)
		if n < 30 {
			t.Errorf("%s: %d pixels of its series' colors, want a drawn chart", id, n)
		}
	}

	// bravo gets rate-limited now: within one refresh it shows as cooling.
	up.limited.Store("sk-bravo-2", true)
	for up.seen429.Load() == 0 {
		send(1)
	}
	if s := pool.Snapshot()[1]; s.State != "cooling" {
		t.Fatalf("pool: bravo is %q after a 429 with Retry-After 3600", s.State)
	}
	waitRefresh()
	r = rows()
	if r["bravo"].State != "cooling" || !strings.Contains(r["bravo"].Cells[2], "until") {
		t.Errorf("bravo shows %q %q a refresh after its 429, want cooling until ...", r["bravo"].State, r["bravo"].Cells[2])
	}

	// An action from the page: disable delta with its button, held down
	// over two refreshes. A refresh that rebuilt the row between the
	// press and the release took the click with it: the page then never
	// sent the action (this wait failed under load, when a refresh came
	// between chromedp's press and release). The button's place comes
	// from one evaluation, so that no refresh can replace the node
	// between finding it and measuring it.
	var at struct{ X, Y float64 }
	eval(`(() => { const b = document.querySelector('button[data-action="disable"][data-key="delta"]'); b.scrollIntoView({block: 'center'});
	  const r = b.getBoundingClientRect(); return {X: r.left + r.width / 2, Y: r.top + r.height / 2}; })()`, &at)
	if err := chromedp.Do(ctx, chromedp.MouseEvent(chromedp.MousePressed, at.X, at.Y, chromedp.ButtonLeft, chromedp.ClickCount(1))); err != nil {
		t.Fatal(err)
	}
	waitRefresh()
	if err := chromedp.Do(ctx, chromedp.MouseEvent(chromedp.MouseReleased, at.X, at.Y, chromedp.ButtonLeft, chromedp.ClickCount(1))); err != nil {
		t.Fatal(err)
	}
	wait("delta disabled on the page", `document.querySelector('#keys tr[data-key="delta"]').dataset.state === 'disabled'`)
	if s := pool.Snapshot()[3]; !s.Disabled || s.DisabledReason != dashboard.DisabledReason {
		t.Errorf("pool: delta after the page's disable: %+v", s)
	}

	// The 15-minute window: the buttons switch it and the table follows.
	if err := chromedp.Do(ctx, chromedp.Click(chromedp.CSS(`#windows button[data-window="15m"]`))); err != nil {
		t.Fatal(err)
	}
	waitRefresh()

	// The page shows what the JSON API says. Nothing changes any more
	// (no traffic, cooldowns of an hour), so one fetch and the page's
	// next refresh see the same data.
	resp, err := http.Get(pageURL + "api/keys?window=15m")
	if err != nil {
		t.Fatal(err)
	}
	var apiKeys struct {
		Keys []dashboard.KeyRow `json:"keys"`
	}
	err = json.NewDecoder(resp.Body).Decode(&apiKeys)
	resp.Body.Close()
	if err != nil {
		t.Fatal(err)
	}
	waitRefresh()
	r = rows()
	pct := func(v *float64) string {
		if v == nil {
			return "-"
		}
		return fmt.Sprintf("%.1f%%", *v*100)
	}
	num := func(v *int64) string {
		if v == nil {
			return "-"
		}
		return strconv.FormatInt(*v, 10)
	}
	if len(apiKeys.Keys) != len(r) {
		t.Fatalf("API has %d keys, page %d rows", len(apiKeys.Keys), len(r))
	}
	for _, k := range apiKeys.Keys {
		row, ok := r[k.ID]
		if !ok {
			t.Errorf("API key %s has no row", k.ID)
			continue
		}
		// columns: ID, fingerprint, state, breaker, in flight, quota,
		// provider remaining, requests, success, rate limited, p50, p99,
		// tier, tokens, cost.
		want := map[int]string{0: k.ID, 1: k.Fingerprint, 3: k.Breaker, 4: strconv.FormatInt(k.InFlight, 10),
			5: num(k.QuotaLeft), 7: num(k.Requests), 8: pct(k.SuccessShare), 9: pct(k.RateLimitedShare),
			12: strconv.Itoa(k.Tier), 13: known(k.Tokens, k.TokensUnknown), 14: known(k.Cost, k.CostUnknown)}
		for i, w := range want {
			if row.Cells[i] != w {
				t.Errorf("%s column %d: page %q, API %q", k.ID, i, row.Cells[i], w)
			}
		}
		if row.State != k.State {
			t.Errorf("%s: page state %q, API %q", k.ID, row.State, k.State)
		}
		if (k.P50MS == nil) != (row.Cells[10] == "-") {
			t.Errorf("%s: page p50 %q, API %v", k.ID, row.Cells[10], k.P50MS)
		}
	}
	if c := r["charlie"].Cells[5]; c == "-" {
		t.Errorf("charlie has a daily quota; the page shows %q left", c)
	}

	var html string
	eval(`document.documentElement.outerHTML`, &html)
	if strings.Contains(html, canary) {
		t.Errorf("the page shows a key's secret")
	}
	screenshot("dashboard.png")

	if msgs := errs.list(); len(msgs) > 0 {
		t.Errorf("the page reported %d errors:\n%s", len(msgs), strings.Join(msgs, "\n"))
	}
}
