// Command github shows apipool under go-github
// (github.com/google/go-github/v93) with a pool of personal access
// tokens. It starts an in-process fake of the GitHub REST API's primary
// rate limit (an hour-long window per token; x-ratelimit-remaining: 0 on a
// token's last successful call, then 403 with x-ratelimit-remaining: 0
// until x-ratelimit-reset), makes 24 calls, and prints what go-github saw
// of the rate limit after each. It then makes the same 24 calls with the
// rate-limit headers left as the upstream sent them, where go-github
// refuses calls on its own although other tokens are free.
//
//	cd examples/sdk && go run ./github
//
// What to configure:
//
//   - apipool.WithRateLimitHeaders(apipool.RateLimitHeadersPool): go-github
//     records the x-ratelimit-* headers of each response and, once it has
//     seen x-ratelimit-remaining: 0, refuses every call until the reset
//     ("API rate limit of 5 still exceeded until ..., not making remote
//     request") without sending it. GitHub sends that 0 on a token's last
//     successful call, so one spent token would stop the whole client for
//     up to an hour. With RateLimitHeadersPool the headers go-github sees
//     describe the pool (remaining summed over the free tokens, the reset
//     the earliest), so its check stays on and refuses only when every
//     token is spent. The alternatives: github.WithDisableRateLimitCheck()
//     (the check off), the github.BypassRateLimitCheck context key (off per
//     call), or RateLimitHeadersRemove (go-github then never knows a limit).
//     Do not use github.SleepUntilPrimaryRateLimitResetWhenRateLimited with
//     the upstream's headers: it would sleep until one token resets.
//   - No github.WithAuthToken: the pool sets "Authorization: Bearer
//     <token>" on each request. A token the SDK sets anyway is stripped,
//     never sent.
//   - The default classifier is right for GitHub: 403 or 429 with
//     x-ratelimit-remaining: 0 (or Retry-After, as secondary rate limits
//     send) is a rate limit, and the token rests until x-ratelimit-reset,
//     up to an hour (WithCooldown's max, 1h by default); a plain 403 (a
//     permission the token lacks) is returned as it is and no token
//     changes state.
//   - In production, apipool.WithHosts("api.github.com") (and
//     "uploads.github.com" if you upload), so that tokens go nowhere else.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"time"

	"github.com/apipool-ng/apipool"
	"github.com/apipool-ng/apipool/examples/sdk/internal/demo"
	"github.com/google/go-github/v93/github"
)

func main() {
	for _, mode := range []apipool.RateLimitHeaderMode{apipool.RateLimitHeadersPool, apipool.RateLimitHeadersAsIs} {
		if _, err := run(os.Stdout, newFake(), mode, ""); err != nil && mode == apipool.RateLimitHeadersPool {
			fmt.Fprintln(os.Stderr, "github:", err)
			os.Exit(1)
		}
		fmt.Println()
	}
}

// The pool's tokens and each one's limit per hour. Another process uses
// delta too and has spent its hour already: the pool learns that from a
// 403 on delta's first call. The others run out during the demo, and
// their answers say so before.
var (
	tokens = []apipool.Key{
		{ID: "alpha", Secret: "ghp_alpha0001"},
		{ID: "bravo", Secret: "ghp_bravo0002"},
		{ID: "charlie", Secret: "ghp_charlie0003"},
		{ID: "delta", Secret: "ghp_delta0004"},
	}
	limits = map[string]int{"ghp_alpha0001": 5, "ghp_bravo0002": 10, "ghp_charlie0003": 15, "ghp_delta0004": 5}
	spent  = map[string]int{"ghp_delta0004": 5}
)

// calls is how many calls the demo makes: fewer than the tokens' limits
// add up to (30 left), more than any one token's.
const calls = 24

func newFake() *restAPI {
	fake := newRESTAPI(limits)
	for tok, n := range spent {
		fake.spend(tok, n)
	}
	return fake
}

// report is what run saw, for the test.
type report struct {
	Calls, OK int
	Refused   int         // calls go-github refused without sending them
	LastRate  github.Rate // what go-github last recorded of the rate limit
	ByKey     map[string]demo.KeyUsage
}

// newPool returns the pool as this recipe configures it, with the
// rate-limit headers in mode.
func newPool(mode apipool.RateLimitHeaderMode, extra ...apipool.Option) (*apipool.Transport, error) {
	return apipool.New(tokens, append([]apipool.Option{
		apipool.WithRateLimitHeaders(mode),
	}, extra...)...)
}

// newClient returns a go-github client over httpClient for the API at
// baseURL. With placeholder not empty, the SDK is also given that token.
func newClient(httpClient *http.Client, baseURL, placeholder string) (*github.Client, error) {
	opts := []github.ClientOptionsFunc{
		github.WithHTTPClient(httpClient),
		github.WithURLs(&baseURL, &baseURL),
	}
	if placeholder != "" {
		opts = append(opts, github.WithAuthToken(placeholder))
	}
	return github.NewClient(opts...)
}

// run makes the demo's calls through a pool whose rate-limit headers are
// in mode, to fake; the SDK is given placeholder as its token unless it is
// empty.
func run(out io.Writer, fake *restAPI, mode apipool.RateLimitHeaderMode, placeholder string) (*report, error) {
	ctx := context.Background()
	start := time.Now()
	srv := httptest.NewServer(fake.handler())
	defer srv.Close()

	pool, err := newPool(mode)
	if err != nil {
		return nil, err
	}
	defer pool.Close(ctx)
	client, err := newClient(&http.Client{Transport: pool}, srv.URL+"/", placeholder)
	if err != nil {
		return nil, err
	}

	name := map[apipool.RateLimitHeaderMode]string{
		apipool.RateLimitHeadersAsIs:   "RateLimitHeadersAsIs",
		apipool.RateLimitHeadersPool:   "RateLimitHeadersPool",
		apipool.RateLimitHeadersRemove: "RateLimitHeadersRemove",
	}[mode]
	fmt.Fprintf(out, "%d calls with WithRateLimitHeaders(%s):\n", calls, name)
	rep := &report{}
	for i := 1; i <= calls; i++ {
		rep.Calls++
		sent := fake.Wire.Len()
		repo, resp, err := client.Repositories.Get(ctx, "acme", "widgets")
		if resp != nil {
			rep.LastRate = resp.Rate
		}
		if err != nil {
			var rl *github.RateLimitError
			if errors.As(err, &rl) && fake.Wire.Len() == sent {
				// go-github's own refusal: nothing reached the API.
				rep.Refused++
				fmt.Fprintf(out, "  call %2d: refused by go-github: %s\n", i, rl.Message)
				continue
			}
			fmt.Fprintf(out, "  call %2d: error: %v\n", i, err)
			continue
		}
		rep.OK++
		fmt.Fprintf(out, "  call %2d: %s; go-github sees %d of %d left, reset in %s\n", i, repo.GetFullName(),
			resp.Rate.Remaining, resp.Rate.Limit, time.Until(resp.Rate.Reset.Time).Round(time.Minute))
	}

	got := fake.Wire.All()
	fmt.Fprintf(out, "%d calls: %d succeeded, %d refused by go-github; the API received %d requests, %d answered 403 rate limited and moved to another token\n\n",
		rep.Calls, rep.OK, rep.Refused, len(got), demo.Rotations(got, http.StatusForbidden))
	rep.ByKey, err = demo.KeyTable(ctx, out, pool, start)
	if err != nil {
		return rep, err
	}
	if rep.OK != rep.Calls {
		return rep, fmt.Errorf("%d of %d calls failed", rep.Calls-rep.OK, rep.Calls)
	}
	return rep, nil
}
