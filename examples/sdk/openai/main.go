// Command openai shows apipool under the official OpenAI Go SDK
// (github.com/openai/openai-go/v3). It starts an in-process fake of the
// OpenAI API that limits requests per key (429 with Retry-After and
// retry-after-ms), hands the pool's *http.Client to the SDK, lists the
// models, asks for two completions and then streams one (SSE), printing
// each chunk as it arrives through the pool, and prints how the requests
// spread over the keys and moved off a rate-limited one.
//
//	cd examples/sdk && go run ./openai
//
// The SDK sets "Authorization: Bearer <its API key>" itself; the pool,
// as the client's transport, sets the header again on its copy of each
// request with the key it picked, so the SDK's key ("unused" here) never
// leaves the process. The SDK's own retries are off: moving a rate-limited
// request to another key is the pool's job.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/apipool-ng/apipool"
	"github.com/apipool-ng/apipool/examples/sdk/internal/demo"
	"github.com/apipool-ng/apipool/recorder"
	"github.com/apipool-ng/apipool/recorder/memory"
	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
)

func main() {
	fake := newChatAPI(quotas, time.Minute)
	fake.chunkDelay = 150 * time.Millisecond // so that the chunks are seen arriving
	if _, err := run(os.Stdout, fake, "unused", nil); err != nil {
		fmt.Fprintln(os.Stderr, "openai:", err)
		os.Exit(1)
	}
}

// The pool's keys, and the quota the fake API gives each per minute:
// alpha's is one request, so that it runs out during the demo.
var (
	keys = []apipool.Key{
		{ID: "alpha", Secret: "sk-alpha-0001"},
		{ID: "bravo", Secret: "sk-bravo-0002"},
		{ID: "charlie", Secret: "sk-charlie-0003"},
	}
	quotas = map[string]int{"sk-alpha-0001": 1, "sk-bravo-0002": 3, "sk-charlie-0003": 3}
)

// report is what run saw, for the test.
type report struct {
	Calls, OK int
	Streamed  string // the streamed completion's text
	Chunks    int    // how many chunks it came in
	ByKey     map[string]demo.KeyUsage
	ByOp      map[string]demo.OpUsage
}

// run runs the demo against fake, with the SDK's own API key set to
// placeholder. onChunk, when not nil, is called with each streamed chunk
// (from 1) as soon as the SDK hands it over.
func run(out io.Writer, fake *chatAPI, placeholder string, onChunk func(n int, text string)) (*report, error) {
	ctx := context.Background()
	start := time.Now()
	srv := httptest.NewServer(fake.handler())
	defer srv.Close()
	base := srv.URL + "/v1/"

	mem, err := memory.New()
	if err != nil {
		return nil, err
	}
	ops := demo.NewOpCounter()
	pool, err := apipool.New(keys,
		apipool.WithStrategy(apipool.RoundRobin), // the default, named: the demo's numbers follow it
		apipool.WithRecorder(demo.StatsRecorder{Recorder: recorder.Fanout(mem, ops), Stats: mem}))
	if err != nil {
		return nil, err
	}
	defer pool.Close(ctx)
	httpClient := &http.Client{Transport: pool} // no Timeout: it would cut streams short

	client := openai.NewClient(
		option.WithHTTPClient(httpClient),
		option.WithBaseURL(base),
		option.WithAPIKey(placeholder), // any value: the pool sets the real key
		option.WithMaxRetries(0),       // the pool retries, on another key
		option.WithMiddleware(operationNamer(base)),
	)

	rep := &report{}
	done := func(what string, err error, line string) {
		rep.Calls++
		if err != nil {
			var apiErr *openai.Error
			if errors.As(err, &apiErr) {
				fmt.Fprintf(out, "%-22s HTTP %d: %s\n", what, apiErr.StatusCode, apiErr.Message)
			} else {
				fmt.Fprintf(out, "%-22s error: %v\n", what, err)
			}
			return
		}
		rep.OK++
		fmt.Fprintf(out, "%-22s %s\n", what, line)
	}

	models, err := client.Models.List(ctx)
	if err == nil {
		var ids []string
		for _, m := range models.Data {
			ids = append(ids, m.ID)
		}
		done("models", nil, strings.Join(ids, ", "))
	} else {
		done("models", err, "")
	}

	params := openai.ChatCompletionNewParams{
		Model:    openai.ChatModelGPT5_4Mini,
		Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("Why pool API keys?")},
	}
	for i := 1; i <= 2; i++ {
		c, err := client.Chat.Completions.New(ctx, params)
		line := ""
		if err == nil && len(c.Choices) > 0 {
			line = fmt.Sprintf("%q (%d tokens)", c.Choices[0].Message.Content, c.Usage.TotalTokens)
		}
		done(fmt.Sprintf("chat completion %d", i), err, line)
	}

	fmt.Fprintln(out, "streamed chat completion:")
	t0 := time.Now()
	stream := client.Chat.Completions.NewStreaming(ctx, params)
	var text strings.Builder
	for stream.Next() {
		chunk := stream.Current()
		rep.Chunks++
		var delta, finish string
		if len(chunk.Choices) > 0 {
			delta, finish = chunk.Choices[0].Delta.Content, chunk.Choices[0].FinishReason
		}
		text.WriteString(delta)
		if finish != "" {
			fmt.Fprintf(out, "  chunk %d at %6s: finish_reason %s\n", rep.Chunks, time.Since(t0).Round(time.Millisecond), finish)
		} else {
			fmt.Fprintf(out, "  chunk %d at %6s: %q\n", rep.Chunks, time.Since(t0).Round(time.Millisecond), delta)
		}
		if onChunk != nil {
			onChunk(rep.Chunks, delta)
		}
	}
	err = stream.Err()
	stream.Close()
	rep.Streamed = text.String()
	done("streamed completion", err, fmt.Sprintf("%q in %d chunks", rep.Streamed, rep.Chunks))

	fmt.Fprintf(out, "\n%d calls, %d succeeded; requests that reached the API with the SDK's own key: %d\n\n",
		rep.Calls, rep.OK, fake.foreignKey.Load())

	rep.ByKey, err = demo.KeyTable(ctx, out, pool, start)
	if err != nil {
		return rep, err
	}

	fmt.Fprintln(out)
	rep.ByOp = ops.Snapshot()
	demo.OpTable(out, rep.ByOp)
	if rep.OK != rep.Calls {
		return rep, fmt.Errorf("%d of %d calls failed", rep.Calls-rep.OK, rep.Calls)
	}
	return rep, nil
}

// operationIDs names the example's requests after the operationIds of
// OpenAI's OpenAPI document, by method and path under the base URL.
var operationIDs = map[string]string{
	"GET models":            "listModels",
	"POST chat/completions": "createChatCompletion",
}

// operationNamer returns an SDK middleware that names each request's
// operation for the pool, unless the caller's context named it already.
func operationNamer(base string) option.Middleware {
	prefix := "/"
	if u, err := url.Parse(base); err == nil {
		prefix = strings.TrimSuffix(u.Path, "/") + "/"
	}
	return func(req *http.Request, next option.MiddlewareNext) (*http.Response, error) {
		if apipool.OperationFrom(req.Context()) == "" {
			if path, ok := strings.CutPrefix(req.URL.Path, prefix); ok {
				if id := operationIDs[req.Method+" "+path]; id != "" {
					req = req.WithContext(apipool.ContextWithOperation(req.Context(), id))
				}
			}
		}
		return next(req)
	}
}
