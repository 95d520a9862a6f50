package browsertest

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/apipool-ng/apipool"
	"github.com/apipool-ng/apipool/dashboard"
	"github.com/apipool-ng/apipool/usage"
)

// clientCellsJS is the text of the client table's cells, row by row.
const clientCellsJS = `[...document.querySelectorAll('#clients tbody tr')].map(r => [...r.cells].map(c => c.textContent))`

// TestClientsInBrowser sends requests for two clients, one without a
// client and one whose name is markup, through a pool that reads the
// answers' usage (OpenAI's) and prices one model: the client table shows
// each client's attempts, tokens and cost, "unknown (n)" where nothing is
// known (a model without a price, an answer without usage), the row
// without a client under its label, the markup as text; and it sorts.
func TestClientsInBrowser(t *testing.T) {
	api := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		if r.URL.Path == "/v1/plain" {
			io.WriteString(w, `{"ok":true}`)
			return
		}
		io.WriteString(w, `{"id":"c1","object":"chat.completion","choices":[],"usage":{"prompt_tokens":100,"completion_tokens":20,"total_tokens":120,"prompt_tokens_details":{"cached_tokens":10}}}`)
	}))
	t.Cleanup(api.Close)
	keys := []apipool.Key{{ID: "alpha", Secret: "sk-alpha-1"}, {ID: "bravo", Secret: "sk-bravo-2"}}
	pool, err := apipool.New(keys,
		apipool.WithUsage(usage.OpenAI(), usage.Prices{"priced": {Input: 1000, Output: 2000}}),
		apipool.WithModel(func(r *http.Request, _ []byte) string { return r.URL.Query().Get("model") }))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pool.Close(context.Background()) })
	const evil = `<img src=x onerror="document.body.dataset.pwned=1">`
	send := func(client, path string, n int) {
		t.Helper()
		for range n {
			ctx := context.Background()
			if client != "" {
				ctx = apipool.ContextWithClient(ctx, client)
			}
			req, _ := http.NewRequestWithContext(ctx, "POST", api.URL+path, nil)
			resp, err := (&http.Client{Transport: pool}).Do(req)
			if err != nil {
				t.Fatal(err)
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
	}
	send("team-a", "/v1/chat?model=priced", 3)
	send("team-b", "/v1/chat?model=unpriced", 2)
	send("", "/v1/plain?model=priced", 1)
	send(evil, "/v1/chat?model=priced", 1)

	b := newBrowser(t, 1400, 1100)
	b.open(serve(t, dashboard.Handler(pool, dashboard.WithRefresh(500*time.Millisecond))))
	// A request costs (90 + 10 cached) x 1000 + 20 x 2000 per million:
	// 0.14. The busiest first, then by name.
	want := [][]string{
		{"team-a", "3", "300", "60", "30", "0.4200"},
		{"team-b", "2", "200", "40", "20", "unknown (2)"},
		{dashboard.NoClientLabel, "1", "unknown (1)", "unknown (1)", "unknown (1)", "unknown (1)"},
		{evil, "1", "100", "20", "10", "0.1400"},
	}
	wantJSON, _ := json.Marshal(want)
	cells := func() [][]string {
		var c [][]string
		b.eval(clientCellsJS, &c)
		return c
	}
	if _, err := chromedp.Run(b.ctx, chromedp.Poll[bool](`JSON.stringify(`+clientCellsJS+`) === JSON.stringify(`+string(wantJSON)+`)`,
		chromedp.WithPollingInterval(20*time.Millisecond), chromedp.WithPollingTimeout(90*time.Second))); err != nil {
		t.Fatalf("the client table shows %q, want %q (%v)", cells(), want, err)
	}
	var label string
	b.eval(`document.querySelector('#clients tbody tr:nth-child(3) td.client .unnamed').textContent`, &label)
	if label != dashboard.NoClientLabel {
		t.Errorf("the row without a client is labelled %q in its own element, want (no client)", label)
	}

	// Sorted by cost, up: the known costs first, the unknown last.
	b.do(chromedp.Click(chromedp.CSS(`#clients thead button[data-sort="cost"]`)))
	b.wait("the clients sorted by cost", `document.querySelector('#clients tbody tr td.client').textContent === `+string(mustJSON(evil)))
	b.waitRefreshes(2) // a refresh keeps the order
	if c := cells(); len(c) != 4 || c[0][0] != evil || c[1][0] != "team-a" || c[0][5] != "0.1400" {
		t.Errorf("sorted by cost, two refreshes later: %q", c)
	}

	var pwned string
	var injected int
	b.eval(`document.body.dataset.pwned || ''`, &pwned)
	b.eval(`document.querySelectorAll('#clients img, main img, main script').length`, &injected)
	if pwned != "" || injected != 0 {
		t.Errorf("a client name ran as HTML: pwned=%q, %d injected elements", pwned, injected)
	}
	var note string
	b.eval(`document.getElementById('clients-note').textContent`, &note)
	if note == "" {
		t.Errorf("no note under the client table")
	}
	b.noErrors()
}

func mustJSON(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return b
}
