package usage_test

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"

	"github.com/apipool-ng/apipool/usage"
)

// A reader used directly: the meter sees the body as the caller reads it,
// and Done gives the units once the body is read.
func ExampleOpenAI() {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		io.WriteString(w, `data: {"id":"c1","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"content":"Hi"}}],"usage":null}`+"\n\n")
		io.WriteString(w, `data: {"id":"c1","object":"chat.completion.chunk","choices":[],"usage":{"prompt_tokens":12,"completion_tokens":1,"total_tokens":13,"prompt_tokens_details":{"cached_tokens":0}}}`+"\n\n")
		io.WriteString(w, "data: [DONE]\n\n")
	}))
	defer srv.Close()

	req, _ := http.NewRequest(http.MethodPost, srv.URL, strings.NewReader(`{"stream":true}`))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		panic(err)
	}
	defer resp.Body.Close()

	m := usage.OpenAI().Start(req, resp)
	body, err := io.ReadAll(io.TeeReader(resp.Body, writer{m}))
	u := m.Done(err == nil)
	fmt.Println(len(body) > 0, u.InputTokens, u.OutputTokens, u.CachedTokens)
	// Output: true 12 1 0
}

// writer passes what it is given to a Meter.
type writer struct{ m usage.Meter }

func (w writer) Write(p []byte) (int, error) { w.m.Write(p); return len(p), nil }

// A stream that ends without usage is Unknown, never zero; a stream cut
// before Anthropic's message_delta gives its input alone.
func ExampleAnthropic() {
	stream := "event: message_start\n" +
		`data: {"type":"message_start","message":{"usage":{"input_tokens":25,"cache_read_input_tokens":100,"output_tokens":1}}}` + "\n\n"
	resp := &http.Response{StatusCode: 200, Header: http.Header{"Content-Type": {"text/event-stream"}}, Body: io.NopCloser(strings.NewReader(stream))}
	m := usage.Anthropic().Start(nil, resp)
	m.Write([]byte(stream))
	fmt.Printf("%+v\n", m.Done(false))
	// Output: {InputTokens:125 OutputTokens:-1 CachedTokens:100 Units:-1}
}

func ExampleAddIncludeUsage() {
	body, added, err := usage.AddIncludeUsage([]byte(`{"model":"gpt-4o-mini","stream":true,"messages":[]}`))
	fmt.Println(string(body), added, err)
	// The caller's explicit choice is kept:
	body, added, err = usage.AddIncludeUsage([]byte(`{"stream":true,"stream_options":{"include_usage":false}}`))
	fmt.Println(string(body), added, err)
	// Output:
	// {"model":"gpt-4o-mini","stream":true,"messages":[],"stream_options":{"include_usage":true}} true <nil>
	// {"stream":true,"stream_options":{"include_usage":false}} false <nil>
}

func ExampleStripUsageChunk() {
	upstream := `data: {"choices":[{"delta":{"content":"Hi"}}],"usage":null}` + "\n\n" +
		`data: {"choices":[],"usage":{"prompt_tokens":12,"completion_tokens":1}}` + "\n\n" +
		"data: [DONE]\n\n"
	seen, _ := io.ReadAll(usage.StripUsageChunk(io.NopCloser(strings.NewReader(upstream))))
	fmt.Print(string(seen))
	// Output:
	// data: {"choices":[{"delta":{"content":"Hi"}}]}
	//
	// data: [DONE]
}

func ExamplePrices_Cost() {
	prices := usage.Prices{
		"gpt-4o-mini*": {Input: 0.15, Output: 0.60, CachedInput: 0.075},
		"gpt-4o*":      {Input: 2.50, Output: 10.00, CachedInput: 1.25},
	}
	if err := prices.Validate(); err != nil {
		panic(err)
	}
	u := usage.Units{InputTokens: 2006, OutputTokens: 300, CachedTokens: 1920, Units: -1}
	cost, ok := prices.Cost("gpt-4o-mini-2024-07-18", u)
	fmt.Printf("%.8f %v\n", cost, ok)
	_, ok = prices.Cost("o3", u) // not in the table: not known, never free
	fmt.Println(ok)
	// Output:
	// 0.00033690 true
	// false
}

func ExampleHeader() {
	r, err := usage.Header("X-Credits-Used")
	if err != nil {
		panic(err)
	}
	resp := &http.Response{StatusCode: 200, Header: http.Header{"X-Credits-Used": {"2.5"}}}
	m := r.Start(nil, resp)
	fmt.Println(m.Done(true).Units)
	// Output: 2.5
}
