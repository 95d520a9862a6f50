// Command anthropic shows apipool under the official Anthropic Go SDK
// (github.com/anthropics/anthropic-sdk-go/v2). It starts an in-process
// fake of the Messages API that reads the API key from the x-api-key
// header, requires anthropic-version, and limits requests per key (429
// rate_limit_error with retry-after), hands the pool's *http.Client to the
// SDK, sends five messages, and prints how they spread over the keys and
// moved off a rate-limited one.
//
//	cd examples/sdk && go run ./anthropic
//
// What to configure:
//
//   - apipool.WithHeader("X-Api-Key"): the API reads keys from x-api-key.
//   - The SDK needs a credential option, or it looks for one in the
//     environment (ANTHROPIC_API_KEY, profiles); give it a placeholder.
//     anthropic-sdk-go v2 sends it as "Authorization: Bearer <placeholder>"
//     (v1 sent it as X-Api-Key). The API reads a Bearer token before
//     x-api-key, so the placeholder must not reach it: the pool strips the
//     credentials an SDK may have set (Authorization and X-Api-Key among
//     them) before it applies its key, and only the pool's key goes out.
//   - option.WithMaxRetries(0): the pool resends a rate-limited request on
//     another key at once; the SDK would wait and retry the same key.
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

	"github.com/anthropics/anthropic-sdk-go/v2"
	"github.com/anthropics/anthropic-sdk-go/v2/option"
	"github.com/apipool-ng/apipool"
	"github.com/apipool-ng/apipool/examples/sdk/internal/demo"
)

func main() {
	fake := newMessagesAPI(quotas, time.Minute)
	for key, n := range spent {
		fake.spend(key, n)
	}
	if _, err := run(os.Stdout, fake, "sdk-placeholder"); err != nil {
		fmt.Fprintln(os.Stderr, "anthropic:", err)
		os.Exit(1)
	}
}

// The pool's keys, and the quota the fake API gives each per minute.
// Another service shares alpha and has used up its quota (see spent), so
// the pool's first request on alpha meets a 429: the pool cannot know it
// beforehand. bravo runs out during the demo too, but its answers say how
// many requests it has left, so the pool stops using it before any 429.
var (
	keys = []apipool.Key{
		{ID: "alpha", Secret: "sk-ant-alpha-0001"},
		{ID: "bravo", Secret: "sk-ant-bravo-0002"},
		{ID: "charlie", Secret: "sk-ant-charlie-0003"},
	}
	quotas = map[string]int{"sk-ant-alpha-0001": 2, "sk-ant-bravo-0002": 3, "sk-ant-charlie-0003": 3}
	spent  = map[string]int{"sk-ant-alpha-0001": 2}
)

// calls is how many messages the demo sends.
const calls = 5

// report is what run saw, for the test.
type report struct {
	Calls, OK int
	ByKey     map[string]demo.KeyUsage
}

// newPool returns the pool as this recipe configures it.
func newPool(extra ...apipool.Option) (*apipool.Transport, error) {
	return apipool.New(keys, append([]apipool.Option{
		apipool.WithHeader("X-Api-Key"), // the key goes in x-api-key; the SDK's Authorization is stripped
	}, extra...)...)
}

// newClient returns the SDK's client over httpClient, with the SDK's own
// credential set to placeholder and its retries off. opts come last.
func newClient(httpClient *http.Client, baseURL, placeholder string, opts ...option.RequestOption) anthropic.Client {
	return anthropic.NewClient(append([]option.RequestOption{
		option.WithHTTPClient(httpClient),
		option.WithBaseURL(baseURL),
		option.WithAPIKey(placeholder), // any value: the pool's key replaces it
		option.WithMaxRetries(0),       // the pool retries, on another key
	}, opts...)...)
}

// run sends the demo's messages through the pool to fake; the SDK is given
// placeholder as its API key.
func run(out io.Writer, fake *messagesAPI, placeholder string) (*report, error) {
	ctx := context.Background()
	start := time.Now()
	srv := httptest.NewServer(fake.handler())
	defer srv.Close()

	pool, err := newPool()
	if err != nil {
		return nil, err
	}
	defer pool.Close(ctx)
	client := newClient(&http.Client{Transport: pool}, srv.URL, placeholder)

	rep := &report{}
	for i := 1; i <= calls; i++ {
		rep.Calls++
		msg, err := client.Messages.New(ctx, anthropic.MessageNewParams{
			Model:     anthropic.ModelClaudeHaiku5_5,
			MaxTokens: 256,
			Messages:  []anthropic.MessageParam{anthropic.NewUserMessage(anthropic.NewTextBlock("Why pool API keys?"))},
		})
		if err != nil {
			var apiErr *anthropic.Error
			if errors.As(err, &apiErr) {
				fmt.Fprintf(out, "message %d: HTTP %d: %s\n", i, apiErr.StatusCode, apiErr.Message)
			} else {
				fmt.Fprintf(out, "message %d: error: %v\n", i, err)
			}
			continue
		}
		rep.OK++
		text := ""
		if len(msg.Content) > 0 {
			text = msg.Content[0].Text
		}
		fmt.Fprintf(out, "message %d: %q (%d tokens out)\n", i, text, msg.Usage.OutputTokens)
	}

	got := fake.Wire.All()
	placeholders := 0
	for _, r := range got {
		if r.Key == placeholder || r.Header.Get("Authorization") != "" {
			placeholders++
		}
	}
	fmt.Fprintf(out, "\n%d calls, %d succeeded; the API received %d requests, %d with the SDK's placeholder, %d moved to another key after a 429\n\n",
		rep.Calls, rep.OK, len(got), placeholders, demo.Rotations(got, http.StatusTooManyRequests))

	rep.ByKey, err = demo.KeyTable(ctx, out, pool, start)
	if err != nil {
		return rep, err
	}
	if rep.OK != rep.Calls {
		return rep, fmt.Errorf("%d of %d calls failed", rep.Calls-rep.OK, rep.Calls)
	}
	return rep, nil
}
