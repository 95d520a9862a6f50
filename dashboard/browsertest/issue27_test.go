package browsertest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/chromedp"

	"github.com/apipool-ng/apipool"
	"github.com/apipool-ng/apipool/dashboard"
	"github.com/apipool-ng/apipool/recorder"
)

// smallPool is the five keys of TestDashboardInBrowser (echo's secret
// is the canary, revoked upstream), after 50 requests, with a probe
// that asks the upstream.
func smallPool(t *testing.T, ids ...string) *apipool.Transport {
	t.Helper()
	api := httptest.NewServer(&upstream{})
	t.Cleanup(api.Close)
	if len(ids) == 0 {
		ids = []string{"alpha", "bravo", "charlie", "delta", "echo"}
	}
	keys := make([]apipool.Key, len(ids))
	for i, id := range ids {
		keys[i] = apipool.Key{ID: id, Secret: apipool.Secret(fmt.Sprintf("sk-%d", i))}
	}
	keys[len(keys)-1].Secret = canary
	probe := func(ctx context.Context, c *http.Client) error {
		req, _ := http.NewRequestWithContext(ctx, "GET", api.URL+"/v1/probe", nil)
		resp, err := c.Do(req)
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			return fmt.Errorf("probe: %s <img src=x onerror=\"document.body.dataset.pwned=1\">", resp.Status)
		}
		return nil
	}
	pool, err := apipool.New(keys, apipool.WithStrategy(apipool.RoundRobin), apipool.WithProbe(probe, 0))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pool.Close(context.Background()) })
	client := &http.Client{Transport: pool}
	for range 50 {
		resp, err := client.Get(api.URL + "/v1/things")
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	return pool
}

type failingStats struct{}

var errStore = errors.New("store down")

func (failingStats) UsageByKey(context.Context, recorder.Query) (map[string]int64, error) {
	return nil, errStore
}
func (failingStats) UsageCount(context.Context, recorder.Query) (int64, error) { return 0, errStore }
func (failingStats) LatencyByKey(context.Context, recorder.Query) (map[string]recorder.Latency, error) {
	return nil, errStore
}
func (failingStats) Series(context.Context, recorder.Query, time.Duration) (map[string][]recorder.Bucket, error) {
	return nil, errStore
}

// TestStatsDownKeepsKeys (issue 27, item 12): with a stats store whose
// every query fails, api/usage answers 503, yet the page shows every
// key with its state, and says that the stats are down.
func TestStatsDownKeepsKeys(t *testing.T) {
	pool := smallPool(t)
	url := serve(t, dashboard.Handler(pool, dashboard.WithStats(failingStats{}), dashboard.WithRefresh(300*time.Millisecond)))
	b := newBrowser(t, 1400, 1100)
	b.open(url)
	b.wait("the first answer", `document.getElementById('status').textContent !== 'loading…'`)
	time.Sleep(700 * time.Millisecond) // two more refreshes, should one have been in flight
	var rs []pageRow
	b.eval(rowsJS, &rs)
	if len(rs) != 5 {
		t.Fatalf("%d rows with a failing stats store, want the 5 keys", len(rs))
	}
	if rs[4].ID != "echo" || rs[4].State != "disabled" {
		t.Errorf("echo shows %+v, want disabled", rs[4])
	}
	var note, status string
	b.eval(`document.getElementById('keys-note').textContent`, &note)
	b.eval(`document.getElementById('status').textContent`, &status)
	if !strings.Contains(note, "store down") {
		t.Errorf("keys note %q, want the store's error", note)
	}
	if !strings.Contains(status, "store down") {
		t.Errorf("status %q, want the charts' error", status)
	}
	for _, m := range b.errs.list() {
		if !strings.Contains(m, "503") { // the browser logs each failed api/usage
			t.Errorf("page error: %s", m)
		}
	}
}

// TestProbeResultStays (item 13): the probe's result stays on the page
// across refreshes.
func TestProbeResultStays(t *testing.T) {
	pool := smallPool(t)
	url := serve(t, dashboard.Handler(pool, dashboard.WithActions(), dashboard.WithRefresh(dashboard.MinRefresh)))
	b := newBrowser(t, 1400, 1100)
	b.open(url)
	b.wait("the first refresh", `Number(document.body.dataset.refreshes) >= 1`)
	b.do(chromedp.Click(chromedp.CSS(`#probe`)))
	b.wait("the probe's result", `document.querySelector('header').textContent.includes('probed 5 keys')`)
	b.waitRefreshes(4)
	var hdr string
	b.eval(`document.querySelector('header').textContent`, &hdr)
	if !strings.Contains(hdr, "probed 5 keys; not usable: echo") {
		t.Errorf("four refreshes after the probe the header says %q; want the probe's result still", hdr)
	}
	b.noErrors()
}

// TestNarrowScreen (item 14): at 390 CSS px the page does not scroll
// sideways, and every cell of every key and client row is within the
// screen, the state badge whole.
func TestNarrowScreen(t *testing.T) {
	pool := smallPool(t)
	url := serve(t, dashboard.Handler(pool, dashboard.WithActions(), dashboard.WithRefresh(time.Second)))
	b := newBrowser(t, 390, 844)
	b.open(url)
	b.wait("the first refresh", `Number(document.body.dataset.refreshes) >= 1`)
	var sw, cw int
	b.eval(`document.documentElement.scrollWidth`, &sw)
	b.eval(`document.documentElement.clientWidth`, &cw)
	if sw > cw {
		t.Errorf("the page is %d px wide in a %d px screen: it scrolls sideways", sw, cw)
	}
	var out []string
	b.wait("the client table", `document.querySelectorAll('#clients tbody tr').length > 0`)
	b.eval(`[...document.querySelectorAll('#keys tbody td, #keys thead th, #clients tbody td, #clients thead th, .chart')].filter(c => {
	  const r = c.getBoundingClientRect();
	  return r.left < -0.5 || r.right > document.documentElement.clientWidth + 0.5 || r.width === 0;
	}).map(c => (c.closest('tr') ? c.closest('tr').dataset.key : '') + ' ' + c.className + ' ' + c.textContent)`, &out)
	if len(out) > 0 {
		t.Errorf("%d cells out of the screen, e.g. %q", len(out), out[:min(len(out), 5)])
	}
	var cut []string
	b.eval(`[...document.querySelectorAll('#keys .state, #keys td, #clients td')].filter(e => e.scrollWidth > e.clientWidth + 1).map(e => e.textContent)`, &cut)
	if len(cut) > 0 {
		t.Errorf("cut text: %q", cut)
	}
	png, err := chromedp.Run(b.ctx, chromedp.FullScreenshot(90))
	if err == nil {
		p := t.ArtifactDir() + "/narrow.png"
		if os.WriteFile(p, png, 0o644) == nil {
			t.Logf("screenshot: %s", p)
		}
	}
	b.noErrors()
}

// contrastJS returns the elements, among those given, whose text has a
// contrast ratio under 4.5 with its background (the first opaque one
// up the tree), computed from their computed styles as WCAG 2 does.
const contrastJS = `((sel) => {
  const rgb = s => s.match(/[\d.]+/g).map(Number);
  const lum = c => { const [r, g, b] = c.slice(0, 3).map(v => { v /= 255; return v <= 0.04045 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4; }); return 0.2126 * r + 0.7152 * g + 0.0722 * b; };
  const bg = e => { for (; e; e = e.parentElement) { const c = rgb(getComputedStyle(e).backgroundColor); if (c.length < 4 || c[3] === 1) return c; } return [255, 255, 255]; };
  const out = [];
  for (const e of document.querySelectorAll(sel)) {
    if (!e.textContent.trim() || !e.getClientRects().length) continue;
    const a = lum(rgb(getComputedStyle(e).color)), b = lum(bg(e));
    const ratio = (Math.max(a, b) + 0.05) / (Math.min(a, b) + 0.05);
    out.push({text: e.textContent.trim().slice(0, 30), cls: e.className, ratio: ratio});
  }
  return out;
})`

// TestContrast (item 15): every state badge, and the page's muted
// text, has a contrast ratio of at least 4.5:1 (WCAG AA).
func TestContrast(t *testing.T) {
	pool := smallPool(t)
	url := serve(t, dashboard.Handler(pool, dashboard.WithActions(), dashboard.WithRefresh(time.Second)))
	b := newBrowser(t, 1400, 1100)
	b.open(url)
	b.wait("the first refresh", `Number(document.body.dataset.refreshes) >= 1`)
	// A badge of every state the API names, in a cell of the table.
	var ok bool
	b.eval(`(() => { const td = document.querySelector('#keys tbody td.st');
	  for (const s of ['active', 'cooling', 'disabled', 'breaker-open', 'limited']) { const e = document.createElement('span'); e.className = 'state state-' + s; e.textContent = s; td.appendChild(e); }
	  return true; })()`, &ok)
	var res []struct {
		Text  string  `json:"text"`
		Cls   string  `json:"cls"`
		Ratio float64 `json:"ratio"`
	}
	b.eval(contrastJS+`('.state, .detail, th, td, .note, #status, #action-status, .totals .label, .totals .value, figcaption, footer, footer a, button, .page-info, .unnamed, h1 .sub')`, &res)
	if len(res) < 20 {
		t.Fatalf("only %d elements checked", len(res))
	}
	states := 0
	for _, r := range res {
		if strings.HasPrefix(r.Cls, "state ") {
			states++
			t.Logf("%s: %.2f:1", r.Cls, r.Ratio)
		}
		if r.Ratio < 4.5 {
			t.Errorf("%q (%s): contrast %.2f:1, want at least 4.5:1", r.Text, r.Cls, r.Ratio)
		}
	}
	if states < 5 {
		t.Errorf("%d state badges checked, want 5", states)
	}
}

// TestChartTimes24h (item 16): the charts' time axes, like the rest of
// the page, use 24-hour times: no "am"/"pm" among the text the charts
// draw, and some hh:mm.
func TestChartTimes24h(t *testing.T) {
	pool := smallPool(t)
	url := serve(t, dashboard.Handler(pool, dashboard.WithRefresh(time.Second)))
	b := newBrowser(t, 1400, 1100)
	// Record the text the canvases draw (a DevTools script, outside the
	// page's Content-Security-Policy).
	if _, err := chromedp.Call(b.ctx, page.AddScriptToEvaluateOnNewDocument, page.AddScriptToEvaluateOnNewDocumentParams{
		Source: `window.__drawn = []; { const f = CanvasRenderingContext2D.prototype.fillText; CanvasRenderingContext2D.prototype.fillText = function (s, ...a) { window.__drawn.push(String(s)); return f.call(this, s, ...a); }; }`,
	}); err != nil {
		t.Fatal(err)
	}
	b.open(url)
	b.wait("the charts' axes", `Number(document.body.dataset.refreshes) >= 1 && window.__drawn.length > 10`)
	var drawn []string
	b.eval(`window.__drawn`, &drawn)
	hhmm := regexp.MustCompile(`^([01]\d|2[0-3]):[0-5]\d`)
	ampm := regexp.MustCompile(`(?i)\d\s*[ap]m\b`)
	n := 0
	for _, s := range drawn {
		if ampm.MatchString(s) {
			t.Errorf("a chart draws %q: 12-hour time", s)
		}
		if hhmm.MatchString(s) {
			n++
		}
	}
	if n == 0 {
		t.Errorf("no 24-hour time among the charts' text %q", drawn)
	}
	b.noErrors()
}

// TestInjectionInKeyFields: key IDs and a probe error that hold HTML
// show as text through search, sort and the probe's status line.
func TestInjectionInKeyFields(t *testing.T) {
	evil := []string{`<img src=x onerror="document.body.dataset.pwned=1">`, `"><script>document.body.dataset.pwned=2</script>`, `plain`, `<svg onload="document.body.dataset.pwned=3">`}
	pool := smallPool(t, evil...)
	url := serve(t, dashboard.Handler(pool, dashboard.WithActions(), dashboard.WithRefresh(300*time.Millisecond)))
	b := newBrowser(t, 1400, 1100)
	b.open(url)
	b.wait("the first refresh", `Number(document.body.dataset.refreshes) >= 1`)
	b.do(chromedp.SendKeys(chromedp.CSS(`#key-search`), "<img"))
	b.wait("the search", `document.querySelectorAll('#keys tbody tr').length === 1`)
	var ok bool
	b.eval(`(() => { const s = document.getElementById('key-search'); s.value = ''; s.dispatchEvent(new Event('input')); return true; })()`, &ok)
	b.do(chromedp.Click(chromedp.CSS(`#keys thead button[data-sort="id"]`)))
	b.do(chromedp.Click(chromedp.CSS(`#probe`)))
	b.wait("the probe's result", `document.querySelector('header').textContent.includes('probed')`)
	b.waitRefreshes(2)
	var ids []string
	b.eval(`[...document.querySelectorAll('#keys tbody td.id')].map(e => e.textContent)`, &ids)
	if len(ids) != len(evil) {
		t.Errorf("ID cells %q, want the %d IDs as text", ids, len(evil))
	}
	var pwned string
	var injected int
	b.eval(`document.body.dataset.pwned || ''`, &pwned)
	b.eval(`document.querySelectorAll('main img, main svg:not(.chart svg), main script, header img').length`, &injected)
	if pwned != "" || injected != 0 {
		t.Errorf("a key's field ran as HTML: pwned=%q, %d injected elements", pwned, injected)
	}
}

// TestHiddenColumnsSaid (item 14): on a screen too narrow for the whole
// table but wide enough for it as a table (700 px), the page says that
// columns are to the right, and stops saying it once the table is
// scrolled to its end.
func TestHiddenColumnsSaid(t *testing.T) {
	pool := smallPool(t)
	url := serve(t, dashboard.Handler(pool, dashboard.WithActions(), dashboard.WithRefresh(time.Second)))
	b := newBrowser(t, 700, 900)
	b.open(url)
	b.wait("the first refresh", `Number(document.body.dataset.refreshes) >= 1`)
	var sw, cw int
	b.eval(`document.querySelector('#keys').parentElement.scrollWidth`, &sw)
	b.eval(`document.querySelector('#keys').parentElement.clientWidth`, &cw)
	if sw <= cw {
		t.Skipf("the table (%d px) fits its box (%d px) at 700 px", sw, cw)
	}
	said := `[...document.querySelectorAll('main p, main span, main div')].some(e => e.offsetParent !== null && /to the right|scroll/i.test(e.textContent) && e.children.length === 0)`
	var ok bool
	b.eval(said, &ok)
	if !ok {
		t.Errorf("the table is %d px wide in a %d px box and nothing says so", sw, cw)
	}
	b.eval(`(() => { const s = document.querySelector('#keys').parentElement; s.scrollLeft = s.scrollWidth; return true; })()`, &ok)
	b.wait("the hint gone at the end of the table", `!(`+said+`)`)
	b.noErrors()
}
