// Package dashboard serves a live web page of an apipool pool: a table of
// its keys (state, cooldowns and why, breaker, in flight, quota left,
// requests, success and rate-limit shares, latency, tokens and cost), a
// table of its clients (attempts, tokens and cost per client), pool
// totals, and charts of requests by status, usage per key and latency
// over the last 15 minutes, hour or day. It is an http.Handler that a Go service mounts
// with one line:
//
//	mux.Handle("/apipool/", http.StripPrefix("/apipool", dashboard.Handler(pool)))
//
// The page reads only the pool's public state (Snapshot) and its usage
// stats (the pool's Stats, whichever store the pool records into: memory,
// ClickHouse, ...), and refreshes itself by polling a small JSON API that
// scripts may use too:
//
//	GET /api/keys?window=1h    a row per key, as the page's table shows it
//	GET /api/totals?window=1h  pool totals: requests/s, success share, NoKeyErrors, waits
//	GET /api/usage?window=1h   the charts' series
//	GET /api/clients?window=1h attempts, tokens and cost per client
//
// window is one of 15m, 1h (the default) and 24h.
//
// Clients are the names requests carry through apipool.ContextWithClient
// (the proxy, cmd/apipool, gives its client token's name). api/clients
// answers, per client, the attempts (a request retried on another key
// counts once per key tried), input, output and cached tokens and cost
// ([ClientRow]), from the store's recorder.TotalsStats. Sums cover the
// attempts that stated their tokens (or whose cost is known);
// tokens_unknown and cost_unknown count the others, and a sum is null
// when no attempt's is known: the page shows "1234 (+3 unknown)", or
// "unknown (3)", never 0 for what is not known; "apipool report" prints
// the same. The attempts without a client are one row with no_client
// set, "(no client)" on the page. The busiest [MaxClients] (1,000)
// clients are listed, the others summed in the answer's "others"
// (a row of its own on the page, with a note). With a store that does
// not sum, totals is false and there are no rows. The table sums every
// event of the store: where several pools record into one store (the
// proxy's upstreams), each pool's page shows the clients of all.
//
// The page puts the charts above the key table and the client table
// below it; each table shows 50 rows a page, with a search box (keys: ID,
// fingerprint, state, reasons; clients: name) and sortable columns, so
// that a refresh at a thousand keys or clients builds 50 rows. Data goes
// into the page as text, never as HTML: a client name or key ID of
// markup shows as its text. While a key's action button is pressed,
// refreshes leave the key table's rows alone (a rebuilt row would lose
// the click). Each API renders on its own: when the stats store fails
// (api/usage answers 503, api/keys, api/totals and api/clients carry
// stats_error) the keys and their states stay on the page with the error
// beside them. Under 640 CSS pixels each key, and each client, is a card
// of label-value lines, so nothing hides to the right.
//
// api/keys, api/totals and api/usage make two stats queries each when the
// store also implements recorder.MultiStats (the memory and ClickHouse
// stores do); with a store that implements recorder.Stats alone, they
// make one per status filter and, for the latency chart, one per time
// bucket, at most four at a time. api/keys adds one TotalsBy for tokens
// and cost, api/clients makes one TotalsBy.
//
// # Safety
//
// The dashboard is read-only by default and never shows a key's secret
// (the pool's snapshot holds none). Every answer carries a strict
// Content-Security-Policy (scripts, styles and connections from the
// dashboard itself only, no inline script, no framing), nosniff and
// no-referrer headers. The charting library (uPlot, MIT, see
// static/vendor/uplot) is embedded in the binary: nothing is loaded from
// the network at run time.
//
// With [WithActions] the page gets buttons to disable and enable a key and
// to probe every key. Actions are POST-only and checked against
// cross-site request forgery twice: by [http.CrossOriginProtection]
// (Sec-Fetch-Site and Origin headers) and by a per-handler token that the
// page sends in the X-CSRF-Token header.
//
// [WithAuthToken] and [WithBasicAuth] require credentials on every
// request, compared in constant time; the scheme name (Bearer, Basic) is
// case-insensitive, as RFC 9110 has it. Do not expose the dashboard to the
// internet without one of them (or an authenticating proxy in front).
//
// # Options
//
// Options follow the root package's style: sealed values passed to [New]
// or [Handler]. New returns an error naming a bad option; Handler, for
// one-line mounting, fails closed instead: with a bad option it answers
// every request with 500 and the error.
package dashboard
