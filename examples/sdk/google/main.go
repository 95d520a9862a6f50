// Command google shows apipool under a Google-style API that takes its
// key as the key query parameter (?key=...), as Google's REST APIs do. It
// starts an in-process fake of the Custom Search JSON API (a daily query
// quota per key, 429 RESOURCE_EXHAUSTED beyond it, 400 API_KEY_INVALID
// for a bad key), sends eight queries through a small client of the kind
// such APIs get (a few lines over *http.Client), and prints how they
// spread over the keys and moved off an exhausted one.
//
//	cd examples/sdk && go run ./google
//
// What to configure:
//
//   - apipool.WithQueryParam("key"): the pool sets key= on its copy of each
//     request. A key= the client put there itself, or an X-Goog-Api-Key
//     header (Google APIs take either), is removed first: only the pool's
//     key goes out. Keys in URLs end up in logs; the pool scrubs its keys
//     from the errors it returns.
//   - Key.PerDay with WithQuotaLocation: Google's daily quotas reset at
//     midnight Pacific time, so the pool, counting each key's queries,
//     stops using a key before its 429.
//   - WithCooldown(fallback, max): a 429 RESOURCE_EXHAUSTED of a daily
//     quota has no Retry-After, so the key rests for the fallback (15
//     minutes here, 30s by default) and is then tried once again.
//   - A bad key is answered 400 API_KEY_INVALID, which a status code alone
//     cannot tell from a bad query: the default classifier returns it as a
//     client error and keeps the key. Check keys at start with a Probe and
//     pool.CheckUsable.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"strings"
	"time"
	_ "time/tzdata" // America/Los_Angeles wherever the program runs

	"github.com/apipool-ng/apipool"
	"github.com/apipool-ng/apipool/examples/sdk/internal/demo"
)

func main() {
	if _, err := run(os.Stdout, newFake(), ""); err != nil {
		fmt.Fprintln(os.Stderr, "google:", err)
		os.Exit(1)
	}
}

// The pool's keys and their daily quotas. Another application uses alpha
// too and has spent today's quota: the pool learns it from a 429. The
// pool knows bravo's quota (PerDay) and stops using it at the limit.
var (
	keys = []apipool.Key{
		{ID: "alpha", Secret: "AIzaSy-alpha-0001", PerDay: 100},
		{ID: "bravo", Secret: "AIzaSy-bravo-0002", PerDay: 3},
		{ID: "charlie", Secret: "AIzaSy-charlie-0003", PerDay: 100},
	}
	quotas = map[string]int{"AIzaSy-alpha-0001": 100, "AIzaSy-bravo-0002": 3, "AIzaSy-charlie-0003": 100}
	spent  = map[string]int{"AIzaSy-alpha-0001": 100}
)

// queries is how many queries the demo sends.
const queries = 8

func newFake() *searchAPI {
	fake := newSearchAPI(quotas)
	for key, n := range spent {
		fake.spend(key, n)
	}
	return fake
}

// newPool returns the pool as this recipe configures it.
func newPool(extra ...apipool.Option) (*apipool.Transport, error) {
	pacific, err := time.LoadLocation("America/Los_Angeles")
	if err != nil {
		return nil, err
	}
	return apipool.New(keys, append([]apipool.Option{
		apipool.WithQueryParam("key"),
		apipool.WithQuotaLocation(pacific),              // where Google's day starts
		apipool.WithCooldown(15*time.Minute, time.Hour), // a 429 without Retry-After rests the key 15 minutes
	}, extra...)...)
}

// searchClient is the kind of client a key= API gets: a few lines over
// *http.Client. Key, when not empty, is sent as key= (the pool replaces
// it); with the pool as transport it can stay empty.
type searchClient struct {
	HTTP    *http.Client
	BaseURL string
	Key     string
}

// Results is what a query returns.
type Results struct {
	Items []struct {
		Title string `json:"title"`
		Link  string `json:"link"`
	} `json:"items"`
}

// APIError is a Google API error answer.
type APIError struct {
	Code    int    `json:"code"`
	Message string `json:"message"`
	Status  string `json:"status"`
	Details []struct {
		Reason string `json:"reason"`
	} `json:"details"`
}

func (e *APIError) Error() string {
	return fmt.Sprintf("search: HTTP %d %s: %s", e.Code, e.Status, e.Message)
}

// Search sends one query.
func (c *searchClient) Search(ctx context.Context, q string) (*Results, error) {
	v := url.Values{"q": {q}}
	if c.Key != "" {
		v.Set("key", c.Key)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimSuffix(c.BaseURL, "/")+"/customsearch/v1?"+v.Encode(), nil)
	if err != nil {
		return nil, err
	}
	resp, err := c.HTTP.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		var body struct {
			Error APIError `json:"error"`
		}
		if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&body); err != nil || body.Error.Code == 0 {
			return nil, fmt.Errorf("search: HTTP %d", resp.StatusCode)
		}
		return nil, &body.Error
	}
	var res Results
	if err := json.NewDecoder(resp.Body).Decode(&res); err != nil {
		return nil, fmt.Errorf("search: %w", err)
	}
	return &res, nil
}

// report is what run saw, for the test.
type report struct {
	Calls, OK int
	ByKey     map[string]demo.KeyUsage
}

// run sends the demo's queries through the pool to fake, with the client's
// own key set to placeholder.
func run(out io.Writer, fake *searchAPI, placeholder string) (*report, error) {
	ctx := context.Background()
	start := time.Now()
	srv := httptest.NewServer(fake.handler())
	defer srv.Close()

	pool, err := newPool()
	if err != nil {
		return nil, err
	}
	defer pool.Close(ctx)
	client := &searchClient{HTTP: &http.Client{Transport: pool}, BaseURL: srv.URL, Key: placeholder}

	rep := &report{}
	for i := 1; i <= queries; i++ {
		rep.Calls++
		q := fmt.Sprintf("pooled-keys-%d", i)
		res, err := client.Search(ctx, q)
		if err != nil {
			fmt.Fprintf(out, "query %d: %v\n", i, err)
			continue
		}
		rep.OK++
		title := ""
		if len(res.Items) > 0 {
			title = res.Items[0].Title
		}
		fmt.Fprintf(out, "query %d: %q\n", i, title)
	}

	got := fake.Wire.All()
	fmt.Fprintf(out, "\n%d queries, %d succeeded; the API received %d requests, %d answered 429 RESOURCE_EXHAUSTED and moved to another key\n\n",
		rep.Calls, rep.OK, len(got), demo.Rotations(got, http.StatusTooManyRequests))
	rep.ByKey, err = demo.KeyTable(ctx, out, pool, start)
	if err != nil {
		return rep, err
	}
	if rep.OK != rep.Calls {
		return rep, errors.New("some queries failed")
	}
	return rep, nil
}
