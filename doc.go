// Package apipool spreads the requests of one program over a pool of API
// keys for the same upstream API: ten keys with 1,000 requests a day each
// behave like one key with 10,000.
//
// Its Transport is an http.RoundTripper. Set it as an http.Client's
// Transport, hand that client to any SDK, and every request goes out with a
// key picked from the pool:
//
//	pool, err := apipool.New([]apipool.Key{
//		{ID: "team-a", Secret: apipool.Secret(os.Getenv("KEY_A"))},
//		{ID: "team-b", Secret: apipool.Secret(os.Getenv("KEY_B")), PerMinute: 60},
//	})
//	if err != nil {
//		log.Fatal(err) // a *ConfigError naming the problem
//	}
//	defer pool.Close(context.Background())
//	client := &http.Client{Transport: pool}
//	resp, err := client.Get("https://api.example.com/v1/things")
//
// The pool removes whatever credential an SDK put on the request and applies
// its own key (a bearer token by default; WithHeader and WithQueryParam for
// other APIs). It reads each answer into a status (package status): a
// rate-limited key (429) cools down until its Retry-After and the request
// goes on with another key; a rejected key (401) is disabled and tested
// again later; server and network errors count towards the key's circuit
// breaker. A request that met a kept-alive connection the upstream had just
// closed, with no byte of an answer within 3 s of the request written, is
// sent again and counts against no key; the caller's own cancel or deadline
// is never a network error, whatever error the torn-down connection left.
// Every attempt is recorded as a usage event, in memory by default (Stats,
// RecentAttemptsByKey), or in SQL or ClickHouse (package recorder). A Secret
// never appears in errors, logs, spans, events or fmt output.
//
// Where to go next: ExampleNew and the other examples; New's options
// (With...); Key for per-key limits, tiers (Key.Tier) and models
// (Key.Models, WithModel); WithSessions for sticky sessions; Snapshot for
// each key's state; NoKeyError for what a caller gets when every key is
// held; the README for SDK recipes, the dashboard, many replicas and the
// apipool proxy.
//
// Maintainers: docs/internals.md walks one request through the files, top
// to bottom.
package apipool
