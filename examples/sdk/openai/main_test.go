package main

import (
	"bytes"
	"context"
	"errors"
	"maps"
	"net/http"
	"net/http/httptest"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/apipool-ng/apipool"
	"github.com/apipool-ng/apipool/examples/sdk/internal/demo"
	"github.com/apipool-ng/apipool/status"
	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
)

// canary is the SDK's own API key in the tests: it must never reach the
// API.
const canary = "sk-CANARY-sdk-placeholder-31d0"

func secrets() []string {
	var s []string
	for _, k := range keys {
		s = append(s, string(k.Secret))
	}
	return s
}

// patience bounds each wait of the tests; it is reached only when
// something is broken (a chunk held back, a request stuck).
const patience = time.Minute

// TestOpenAIExample runs the example end to end with the fake server's
// stream under the test's control: the server sends a chunk only when the
// test lets it, and the test lets it send chunk n+1 only after chunk n has
// come out of the SDK, so the stream cannot complete unless the pool hands
// the body over unbuffered. It also checks that every call succeeded over
// more than one key with a 429 on the way, that the server never saw the
// SDK's own API key (a canary, looked for in every request on the wire),
// and that the operation names reached the usage events.
func TestOpenAIExample(t *testing.T) {
	fake := newChatAPI(quotas, time.Minute)
	fake.gate = make(chan struct{})
	arrived := make(chan string)
	type result struct {
		rep *report
		err error
	}
	res := make(chan result, 1)
	var out bytes.Buffer
	go func() {
		rep, err := run(&out, fake, canary, func(_ int, text string) { arrived <- text })
		res <- result{rep, err}
	}()

	words := strings.SplitAfter(reply, " ")
	n := streamChunks()
	for i := 1; i <= n; i++ {
		select {
		case text := <-arrived:
			want := ""
			if i <= len(words) {
				want = words[i-1]
			}
			if text != want {
				t.Errorf("chunk %d = %q, want %q", i, text, want)
			}
			if sent := fake.sent.Load(); sent != int64(i) {
				t.Fatalf("chunk %d came out of the SDK when the server had begun %d chunks", i, sent)
			}
		case r := <-res:
			t.Fatalf("run ended before chunk %d arrived: %v\n%s", i, r.err, out.String())
		case <-time.After(patience):
			t.Fatalf("chunk %d did not arrive while the server waited to send chunk %d: the stream is buffered", i, i+1)
		}
		if i < n {
			select {
			case fake.gate <- struct{}{}:
			case <-time.After(patience):
				t.Fatalf("the server did not ask for chunk %d", i+1)
			}
		}
	}
	var r result
	select {
	case r = <-res:
	case <-time.After(patience):
		t.Fatal("run did not end after the stream")
	}
	t.Log("\n" + out.String())
	if r.err != nil {
		t.Fatalf("run: %v", r.err)
	}
	rep := r.rep
	if rep.Calls != 4 || rep.OK != 4 {
		t.Errorf("calls = %d, succeeded = %d; want 4 and 4", rep.Calls, rep.OK)
	}
	if rep.Streamed != reply || rep.Chunks != n {
		t.Errorf("streamed %q in %d chunks, want %q in %d", rep.Streamed, rep.Chunks, reply, n)
	}
	if k := fake.foreignKey.Load(); k != 0 {
		t.Errorf("%d requests reached the server with a key not from the pool: the SDK's Authorization header won", k)
	}
	got := fake.Wire.All()
	if n := demo.CheckWire(t, got, canary, secrets()); n != len(got) {
		t.Errorf("%d of %d requests carried a pool key", n, len(got))
	}
	if n := demo.Rotations(got, http.StatusTooManyRequests); n == 0 {
		t.Errorf("no request moved to another key after a 429")
	}

	attempts, limited := demo.CheckKeys(t, rep.ByKey)
	if limited == 0 || rep.ByKey["alpha"].Limited == 0 {
		t.Errorf("no 429 on alpha, whose quota is one request: %+v", rep.ByKey)
	}
	if attempts != int64(rep.Calls)+limited {
		t.Errorf("%d attempts for %d calls and %d 429s", attempts, rep.Calls, limited)
	}

	if ops, want := slices.Sorted(maps.Keys(rep.ByOp)), []string{"createChatCompletion", "listModels"}; !slices.Equal(ops, want) {
		t.Errorf("operations in the events = %q, want %q", ops, want)
	}
	chat, models := rep.ByOp["createChatCompletion"], rep.ByOp["listModels"]
	if chat.Success != 3 || models.Success != 1 {
		t.Errorf("by operation = %+v", rep.ByOp)
	}
	if int64(chat.Attempts+models.Attempts) != attempts || int64(chat.Resent+models.Resent) != limited {
		t.Errorf("by operation = %+v; by key: %d attempts, %d limited", rep.ByOp, attempts, limited)
	}

	text := out.String()
	for _, re := range []string{
		`(?m)^  chunk 1 at +\S+: "One "$`,
		`(?m)^  chunk 7 at +\S+: finish_reason stop$`,
		`4 calls, 4 succeeded; requests that reached the API with the SDK's own key: 0`,
		`alpha +\d+ +\d+ +[1-9]\d* +cooling`,
		`createChatCompletion +\d+ +3 +\d+ +\d+`,
	} {
		if !regexp.MustCompile(re).MatchString(text) {
			t.Errorf("output lacks %q", re)
		}
	}
}

// TestSDKRetriesOff checks the premise that rotation is the pool's: with
// WithMaxRetries(0) a 429 from the only key reaches the caller as the
// SDK's error after one attempt, its OpenAI error body decoded, and with
// the key's Retry-After.
func TestSDKRetriesOff(t *testing.T) {
	fake := newChatAPI(map[string]int{"sk-only": 0}, time.Minute)
	srv := httptest.NewServer(fake)
	defer srv.Close()
	pool, err := apipool.New([]apipool.Key{{ID: "only", Secret: "sk-only"}}, apipool.WithMaxWait(0))
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close(context.Background())
	client := openai.NewClient(
		option.WithHTTPClient(&http.Client{Transport: pool}),
		option.WithBaseURL(srv.URL+"/v1/"),
		option.WithAPIKey("unused"),
		option.WithMaxRetries(0),
	)
	_, err = client.Chat.Completions.New(context.Background(), openai.ChatCompletionNewParams{
		Model:    openai.ChatModelGPT5_4Mini,
		Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("hi")},
	})
	var apiErr *openai.Error
	if !errors.As(err, &apiErr) {
		t.Fatalf("err = %v, want an *openai.Error", err)
	}
	if apiErr.StatusCode != http.StatusTooManyRequests || apiErr.Code != "rate_limit_exceeded" || apiErr.Type != "requests" {
		t.Errorf("error = %d %q %q", apiErr.StatusCode, apiErr.Code, apiErr.Type)
	}
	if got, _ := pool.RecentAttempts(context.Background(), time.Hour, status.Unknown, ""); got != 1 {
		t.Errorf("%d attempts, want 1", got)
	}
	if s := pool.Snapshot()[0]; s.State != "cooling" {
		t.Errorf("key state = %s, want cooling", s.State)
	}
}
