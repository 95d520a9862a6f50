package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/apipool-ng/apipool"
	"github.com/apipool-ng/apipool/recorder"
	"github.com/apipool-ng/apipool/usage"
	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
)

// usageAPI is a fake chat completions API that, as OpenAI's does, streams
// the usage only when the request asks for it (stream_options.
// include_usage): then every chunk has "usage": null and a last chunk,
// with no choices, states the usage.
type usageAPI struct {
	mu    sync.Mutex
	asked []bool // per streamed request: whether it arrived asking for the usage
}

var usageWords = []string{"Pooled", " keys", " count", " tokens."}

const usageIn, usageOut = 11, 4

func (a *usageAPI) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Model         string `json:"model"`
		Stream        bool   `json:"stream"`
		StreamOptions *struct {
			IncludeUsage *bool `json:"include_usage"`
		} `json:"stream_options"`
	}
	if err := json.NewDecoder(r.Body).Decode(&req); err != nil || r.URL.Path != "/v1/chat/completions" {
		http.Error(w, `{"error":{"message":"bad request"}}`, http.StatusBadRequest)
		return
	}
	usageJSON := fmt.Sprintf(`{"prompt_tokens":%d,"completion_tokens":%d,"total_tokens":%d}`, usageIn, usageOut, usageIn+usageOut)
	if !req.Stream {
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"id":"chatcmpl-u","object":"chat.completion","created":1,"model":%q,"choices":[{"index":0,"finish_reason":"stop","message":{"role":"assistant","content":"ok"}}],"usage":%s}`, req.Model, usageJSON)
		return
	}
	include := req.StreamOptions != nil && req.StreamOptions.IncludeUsage != nil && *req.StreamOptions.IncludeUsage
	a.mu.Lock()
	a.asked = append(a.asked, include)
	a.mu.Unlock()
	w.Header().Set("Content-Type", "text/event-stream")
	flush := w.(http.Flusher).Flush
	for i, word := range usageWords {
		delta := fmt.Sprintf(`{"content":%q}`, word)
		if i == 0 {
			delta = fmt.Sprintf(`{"role":"assistant","content":%q}`, word)
		}
		finish := "null"
		if i == len(usageWords)-1 {
			finish = `"stop"`
		}
		extra := ""
		if include {
			extra = `,"usage":null`
		}
		fmt.Fprintf(w, "data: {\"id\":\"chatcmpl-u\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":%q,\"choices\":[{\"index\":0,\"delta\":%s,\"finish_reason\":%s}]%s}\n\n", req.Model, delta, finish, extra)
		flush()
	}
	if include {
		fmt.Fprintf(w, "data: {\"id\":\"chatcmpl-u\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":%q,\"choices\":[],\"usage\":%s}\n\n", req.Model, usageJSON)
	}
	io.WriteString(w, "data: [DONE]\n\n")
	flush()
}

// eventLog keeps the pool's events.
type eventLog struct {
	mu  sync.Mutex
	evs []recorder.Event
}

func (l *eventLog) Record(e recorder.Event) {
	l.mu.Lock()
	l.evs = append(l.evs, e)
	l.mu.Unlock()
}
func (l *eventLog) Close(context.Context) error { return nil }
func (l *eventLog) events() []recorder.Event {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]recorder.Event(nil), l.evs...)
}

// TestOpenAIGoIncludeUsage: the pool with WithUsage and
// WithIncludeUsage(true) as openai-go's transport (issue 26 item 2).
// A streamed completion that does not ask for its usage is sent asking for
// it; the SDK, reading the stream through its accumulator, sees no usage
// chunk and no usage member in any chunk, exactly the chunks the API sends
// without the ask, while the pool's event has the tokens and the cost. A
// streamed completion that asks for the usage itself gets it, in the SDK's
// accumulator as in the event. The event of each is recorded once the SDK
// has read the stream to its end.
func TestOpenAIGoIncludeUsage(t *testing.T) {
	api := &usageAPI{}
	srv := httptest.NewServer(api)
	defer srv.Close()
	log := &eventLog{}
	prices := usage.Prices{"gpt-test*": {Input: 2, Output: 8}}
	pool, err := apipool.New([]apipool.Key{{ID: "k1", Secret: "sk-k1-usage"}, {ID: "k2", Secret: "sk-k2-usage"}},
		apipool.WithModel(apipool.ModelFromJSON), // the model prices the tokens
		apipool.WithUsage(usage.OpenAI(), prices),
		apipool.WithIncludeUsage(true),
		apipool.WithRecorder(log))
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
	ctx := context.Background()
	wantText := strings.Join(usageWords, "")
	const wantCost = (usageIn*2.0 + usageOut*8.0) / 1e6

	stream := func(p openai.ChatCompletionNewParams) (acc openai.ChatCompletionAccumulator, raws []string) {
		t.Helper()
		s := client.Chat.Completions.NewStreaming(ctx, p)
		for s.Next() {
			c := s.Current()
			raws = append(raws, c.RawJSON())
			if !acc.AddChunk(c) {
				t.Fatalf("the accumulator refused chunk %d: %s", len(raws), c.RawJSON())
			}
		}
		if err := s.Err(); err != nil {
			t.Fatal(err)
		}
		s.Close()
		return acc, raws
	}
	params := openai.ChatCompletionNewParams{
		Model:    "gpt-test-1",
		Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("count my tokens")},
	}

	// Not asking: the SDK sees the chunks as sent without the ask.
	acc, raws := stream(params)
	if len(raws) != len(usageWords) || acc.Choices[0].Message.Content != wantText {
		t.Errorf("not asking: %d chunks, text %q; want %d, %q", len(raws), acc.Choices[0].Message.Content, len(usageWords), wantText)
	}
	for i, raw := range raws {
		if strings.Contains(raw, "usage") {
			t.Errorf("not asking: chunk %d has a usage member: %s", i, raw)
		}
	}
	if acc.Usage.TotalTokens != 0 || acc.JSON.Usage.Valid() {
		t.Errorf("not asking: the accumulator has usage %+v", acc.Usage)
	}
	ev := log.events()
	if len(ev) != 1 || ev[0].InputTokens != usageIn || ev[0].OutputTokens != usageOut || ev[0].Model != "gpt-test-1" || ev[0].Cost != wantCost {
		t.Fatalf("not asking: events %+v; want one with %d/%d tokens, cost %v", ev, usageIn, usageOut, wantCost)
	}

	// Asking: the usage chunk reaches the SDK.
	params.StreamOptions = openai.ChatCompletionStreamOptionsParam{IncludeUsage: openai.Bool(true)}
	acc, raws = stream(params)
	if len(raws) != len(usageWords)+1 || acc.Choices[0].Message.Content != wantText ||
		acc.Usage.PromptTokens != usageIn || acc.Usage.CompletionTokens != usageOut {
		t.Errorf("asking: %d chunks, text %q, usage %+v", len(raws), acc.Choices[0].Message.Content, acc.Usage)
	}
	ev = log.events()
	if len(ev) != 2 || ev[1].InputTokens != usageIn || ev[1].OutputTokens != usageOut || ev[1].Cost != wantCost {
		t.Errorf("asking: events %+v", ev)
	}

	// Asking not to: kept, and the tokens are not known (never 0).
	params.StreamOptions = openai.ChatCompletionStreamOptionsParam{IncludeUsage: openai.Bool(false)}
	acc, raws = stream(params)
	if len(raws) != len(usageWords) || acc.JSON.Usage.Valid() {
		t.Errorf("refusing: %d chunks, usage %+v", len(raws), acc.Usage)
	}
	ev = log.events()
	if len(ev) != 3 || ev[2].InputTokens != -1 || ev[2].OutputTokens != -1 || ev[2].Cost != -1 {
		t.Errorf("refusing: events %+v; want the third with -1 tokens and cost", ev)
	}

	api.mu.Lock()
	defer api.mu.Unlock()
	if want := []bool{true, true, false}; fmt.Sprint(api.asked) != fmt.Sprint(want) {
		t.Errorf("the API saw include_usage %v, want %v", api.asked, want)
	}
}
