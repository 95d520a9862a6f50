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
// # For maintainers: one request, top to bottom
//
// A GET visits these files in this order, and comes back up once:
//
//  1. transport.go: RoundTrip checks the request and whether its host is
//     keyed at all (credentials.go keyAllowed; a host that is not gets
//     the request as it is, without the pool's keys).
//  2. attempt.go: the attempt loop, which holds every step of an attempt
//     in order. Each step takes arguments and returns results. Before the
//     first attempt the body is made replayable (prepareBody) and, with
//     WithModel or WithSessions, the request's route read from it once
//     (routing.go: its model, the keys that serve it, its session).
//     a. reserve a key (pick.go takeKey): the session's key first
//     (sessions.go), then the selector (selector.go) picks among the keys
//     free now, tier by tier (Key.Tier), and the pick reserves the key as one
//     value (keystate.go: keyState.reserve returns a reservation, all or
//     nothing; with shared state, shared.go takes the shared limits too).
//     When no key is free the request waits, in arrival order, for the
//     earliest one, within its context and WithMaxWait, or fails with a
//     *NoKeyError. A reservation whose key cooled down or was disabled
//     since it was taken is cancelled and the loop picks again.
//     b. build the request copy (attemptRequest): its body replayed
//     (body.go), every credential stripped and the key applied
//     (credentials.go).
//     c. send it through the base transport.
//     d. classify the answer (package status) into a verdict on the key
//     (judge), and commit it to the reservation (keystate.go): a rate
//     limit cools the key until its Retry-After, a rejection disables it,
//     the breaker (breaker.go) hears the outcome; the Transport logs,
//     publishes and alerts what changed (keystate.go reportChange, one
//     place for the three; alerts.go queues the alerts for WithAlerts).
//     e. record the usage event (package recorder) and telemetry
//     (telemetry.go).
//     f. deliver the answer (its body frees the key's in-flight slot when
//     read or closed, body.go), or resend it on another key. With
//     WithUsage, the delivered answer's event is recorded when its body
//     ends, with its units (units.go), which then count against the
//     key's and the client's budgets (budgets.go: a key past a budget
//     holds until the period ends; a client past one is refused in
//     RoundTrip, before any of this).
//
// A key's state (keystate.go) is a state machine that takes the time as
// an argument and reads no clock but its breaker's (gobreaker's own); its
// tests drive it alone, without HTTP. Rate-limit answers do not use up
// WithMaxAttempts: that budget is for server and network failures; a
// request resends past rate limits for as long as its wait budget lasts.
package apipool
