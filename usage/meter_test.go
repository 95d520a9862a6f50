package usage

import (
	"bytes"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"strings"
	"testing"
)

func fixture(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile("testdata/" + name)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func answer(status int, contentType string, body []byte) *http.Response {
	h := http.Header{}
	if contentType != "" {
		h.Set("Content-Type", contentType)
	}
	return &http.Response{StatusCode: status, Header: h, Body: io.NopCloser(bytes.NewReader(body))}
}

const (
	ctJSON = "application/json"
	ctSSE  = "text/event-stream; charset=utf-8"
)

// meterOf returns reader r's meter for a 200 answer of type ct.
func meterOf(t testing.TB, r Reader, ct string, body []byte) Meter {
	t.Helper()
	m := r.Start(&http.Request{Method: http.MethodPost}, answer(200, ct, body))
	if m == nil {
		t.Fatal("Start returned nil for a 200 answer")
	}
	return m
}

// feed writes body to m in the pieces cut at the offsets given.
func feed(m Meter, body []byte, cuts ...int) {
	prev := 0
	for _, c := range cuts {
		m.Write(body[prev:c])
		prev = c
	}
	m.Write(body[prev:])
}

var partialAnthropic = Units{InputTokens: 25, OutputTokens: -1, CachedTokens: 0, Units: -1}

// The fixtures are answers shaped as the providers document them, with
// "usage" keys inside strings and deeper in the answer that must not be
// read.
var fixtureCases = []struct {
	file    string
	ct      string
	readers []string // the readers that read it; Auto reads every one
	want    Units
}{
	{"openai_chat.json", ctJSON, []string{"OpenAI"}, Units{1117, 46, 1024, -1}},
	{"openai_chat_stream_usage.sse", ctSSE, []string{"OpenAI"}, Units{2006, 300, 1920, -1}},
	{"openai_chat_stream.sse", ctSSE, []string{"OpenAI"}, Unknown()},
	{"openai_chat_stream_tools.sse", ctSSE, []string{"OpenAI"}, Units{85, 19, 0, -1}},
	{"openai_completions.json", ctJSON, []string{"OpenAI"}, Units{5, 7, 0, -1}},
	{"openai_embeddings.json", ctJSON, []string{"OpenAI"}, Units{8, 0, 0, -1}},
	{"openai_responses.json", ctJSON, []string{"OpenAI"}, Units{328, 52, 256, -1}},
	{"openai_responses_stream.sse", ctSSE, []string{"OpenAI"}, Units{2143, 9, 2048, -1}},
	{"openai_error.json", ctJSON, []string{"OpenAI", "Anthropic", "Gemini"}, Unknown()},
	// input = input_tokens + cache reads + cache writes
	{"anthropic_message.json", ctJSON, []string{"Anthropic"}, Units{12 + 2048, 70, 2048, -1}},
	{"anthropic_stream.sse", ctSSE, []string{"Anthropic"}, Units{472 + 100 + 1500, 15, 1500, -1}},
	{"anthropic_stream_delta_input.sse", ctSSE, []string{"Anthropic"}, Units{10682, 510, 0, -1}},
	{"anthropic_stream_error.sse", ctSSE, []string{"Anthropic"}, partialAnthropic},
	// output = candidates + thoughts; input = prompt + tool use prompt
	{"gemini.json", ctJSON, []string{"Gemini"}, Units{8, 62, 0, -1}},
	{"gemini_stream.sse", "text/event-stream", []string{"Gemini"}, Units{1033, 117, 1024, -1}},
	{"gemini_stream_vertex.sse", "text/event-stream", []string{"Gemini"}, Units{1, 9, 0, -1}},
	{"gemini_stream_array.json", ctJSON, []string{"Gemini"}, Units{10, 41, 0, -1}},
}

var readers = map[string]Reader{"OpenAI": OpenAI(), "Anthropic": Anthropic(), "Gemini": Gemini(), "Auto": Auto()}

func TestFixtures(t *testing.T) {
	for _, tc := range fixtureCases {
		body := fixture(t, tc.file)
		for _, name := range append(tc.readers, "Auto") {
			t.Run(tc.file+"/"+name, func(t *testing.T) {
				m := meterOf(t, readers[name], tc.ct, body)
				m.Write(body)
				if got := m.Done(true); got != tc.want {
					t.Fatalf("got %+v, want %+v", got, tc.want)
				}
			})
		}
	}
}

// A reader of one provider reads nothing from the answers of another
// whose usage is elsewhere.
func TestFixturesOtherProvider(t *testing.T) {
	for _, tc := range []struct{ file, reader string }{
		{"openai_chat_stream_usage.sse", "Gemini"},
		{"gemini_stream.sse", "OpenAI"},
		{"gemini.json", "Anthropic"},
		{"anthropic_stream_error.sse", "OpenAI"}, // message.usage is Anthropic's
		{"openai_responses_stream.sse", "Anthropic"},
	} {
		body := fixture(t, tc.file)
		m := meterOf(t, readers[tc.reader], ctSSE, body)
		m.Write(body)
		if got := m.Done(true); got != Unknown() {
			t.Errorf("%s read by %s: got %+v, want Unknown", tc.file, tc.reader, got)
		}
	}
}

// The pieces a body comes in do not matter: cut in two at every offset,
// byte by byte, or in random pieces, every answer gives the same units.
func TestEveryCut(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for _, tc := range fixtureCases {
		body := fixture(t, tc.file)
		r := readers[tc.readers[0]]
		for i := 0; i <= len(body); i++ {
			m := meterOf(t, r, tc.ct, body)
			feed(m, body, i)
			if got := m.Done(true); got != tc.want {
				t.Fatalf("%s cut at %d: got %+v, want %+v", tc.file, i, got, tc.want)
			}
		}
		m := meterOf(t, r, tc.ct, body)
		for i := range body {
			m.Write(body[i : i+1])
		}
		if got := m.Done(true); got != tc.want {
			t.Fatalf("%s byte by byte: got %+v, want %+v", tc.file, got, tc.want)
		}
		for range 200 {
			cuts := []int{rng.IntN(len(body) + 1), rng.IntN(len(body) + 1), rng.IntN(len(body) + 1)}
			if cuts[0] > cuts[1] {
				cuts[0], cuts[1] = cuts[1], cuts[0]
			}
			if cuts[1] > cuts[2] {
				cuts[1], cuts[2] = cuts[2], cuts[1]
			}
			if cuts[0] > cuts[1] {
				cuts[0], cuts[1] = cuts[1], cuts[0]
			}
			m := meterOf(t, r, tc.ct, body)
			feed(m, body, cuts...)
			if got := m.Done(true); got != tc.want {
				t.Fatalf("%s cut at %v: got %+v, want %+v", tc.file, cuts, got, tc.want)
			}
		}
	}
}

// A body cut short (closed before its end) gives its usage if a whole
// usage object was read, the input alone where the stream states it first,
// and Unknown otherwise; never a count that was not stated.
func TestTruncated(t *testing.T) {
	for _, tc := range fixtureCases {
		body := fixture(t, tc.file)
		r := readers[tc.readers[0]]
		sawFull := false
		for i := 0; i < len(body); i++ {
			m := meterOf(t, r, tc.ct, body[:i])
			m.Write(body[:i])
			got := m.Done(false)
			switch {
			case got == Unknown():
				if sawFull {
					t.Fatalf("%s cut at %d: Unknown after the usage was read", tc.file, i)
				}
			case got == tc.want:
				sawFull = true
			case got.OutputTokens == -1 && got.InputTokens >= 0 && got.InputTokens <= max(tc.want.InputTokens, partialAnthropic.InputTokens):
				// the input of a stream that states it first
				if sawFull {
					t.Fatalf("%s cut at %d: partial %+v after the usage was read", tc.file, i, got)
				}
			default:
				t.Fatalf("%s cut at %d: got %+v, want Unknown, a partial or %+v", tc.file, i, got, tc.want)
			}
		}
	}
}

// Where the usage comes in the last event, the body cut anywhere before
// that event's usage object closes gives Unknown, and anywhere after it the
// whole usage: the events after it do not matter.
func TestTruncatedAtUsage(t *testing.T) {
	for _, tc := range []struct {
		file, after string
		r           Reader
		want        Units
	}{
		{"openai_chat_stream_usage.sse", `"rejected_prediction_tokens":0}}`, OpenAI(), Units{2006, 300, 1920, -1}},
		{"openai_responses_stream.sse", `"total_tokens":2152}`, OpenAI(), Units{2143, 9, 2048, -1}},
	} {
		body := fixture(t, tc.file)
		end := bytes.LastIndex(body, []byte(tc.after)) + len(tc.after)
		for i := 0; i < len(body); i++ {
			m := meterOf(t, tc.r, ctSSE, body)
			m.Write(body[:i])
			want := Unknown()
			if i >= end {
				want = tc.want
			}
			if got := m.Done(false); got != want {
				t.Fatalf("%s cut at %d (usage ends at %d): got %+v, want %+v", tc.file, i, end, got, want)
			}
		}
	}
}

func TestAnthropicStreamCut(t *testing.T) {
	body := fixture(t, "anthropic_stream.sse")
	cut := bytes.Index(body, []byte("event: message_delta"))
	m := meterOf(t, Anthropic(), ctSSE, body)
	m.Write(body[:cut])
	// message_start's output_tokens (1) is not the output: not known
	want := Units{InputTokens: 2072, OutputTokens: -1, CachedTokens: 1500, Units: -1}
	if got := m.Done(false); got != want {
		t.Fatalf("got %+v, want %+v", got, want)
	}
	// read to its end, a stream without message_delta still lacks its output
	m = meterOf(t, Anthropic(), ctSSE, body)
	m.Write(body[:cut])
	if got := m.Done(true); got != want {
		t.Fatalf("complete: got %+v, want %+v", got, want)
	}
}

func TestGeminiStreamCut(t *testing.T) {
	body := fixture(t, "gemini_stream.sse")
	cut := bytes.LastIndex(body, []byte("data: "))
	m := meterOf(t, Gemini(), ctSSE, body)
	m.Write(body[:cut])
	want := Units{InputTokens: 1033, OutputTokens: -1, CachedTokens: 0, Units: -1}
	if got := m.Done(false); got != want {
		t.Fatalf("closed early: got %+v, want %+v", got, want)
	}
	// read to its end, the last chunk's counts are the answer's
	m = meterOf(t, Gemini(), ctSSE, body)
	m.Write(body[:cut])
	want = Units{InputTokens: 1033, OutputTokens: 14, CachedTokens: 0, Units: -1}
	if got := m.Done(true); got != want {
		t.Fatalf("complete: got %+v, want %+v", got, want)
	}
	// closed after the chunk with finishReason: final
	m = meterOf(t, Gemini(), ctSSE, body)
	m.Write(body[:len(body)-2])
	if got, want := m.Done(false), (Units{1033, 117, 1024, -1}); got != want {
		t.Fatalf("closed after the last chunk: got %+v, want %+v", got, want)
	}
}

func TestStartNil(t *testing.T) {
	body := fixture(t, "openai_chat.json")
	gz := answer(200, ctJSON, body)
	gz.Header.Set("Content-Encoding", "gzip")
	head := answer(200, ctJSON, body)
	noBody := answer(200, ctJSON, nil)
	noBody.Body = http.NoBody
	for name, resp := range map[string]*http.Response{
		"400":      answer(400, ctJSON, fixture(t, "openai_error.json")),
		"429":      answer(429, ctJSON, fixture(t, "openai_error.json")),
		"500":      answer(500, ctSSE, body),
		"gzip":     gz,
		"audio":    answer(200, "audio/mpeg", body),
		"html":     answer(200, "text/html", body),
		"nobody":   noBody,
		"nil body": {StatusCode: 200, Header: http.Header{}},
	} {
		for rn, r := range readers {
			if m := r.Start(&http.Request{Method: http.MethodPost}, resp); m != nil {
				t.Errorf("%s %s: Start returned a meter", name, rn)
			}
		}
	}
	for rn, r := range readers {
		if m := r.Start(&http.Request{Method: http.MethodHead}, head); m != nil {
			t.Errorf("HEAD %s: Start returned a meter", rn)
		}
		if m := r.Start(nil, nil); m != nil {
			t.Errorf("nil response %s: Start returned a meter", rn)
		}
	}
	for _, ct := range []string{"Application/JSON", "TEXT/EVENT-STREAM; charset=UTF-8", "application/x-ndjson", "text/plain"} {
		if m := OpenAI().Start(nil, answer(200, ct, body)); m == nil {
			t.Errorf("%s: Start returned nil", ct)
		}
	}
	id := answer(200, "application/vnd.api+json", body)
	id.Header.Set("Content-Encoding", "identity")
	if m := OpenAI().Start(nil, id); m == nil {
		t.Error("identity, +json: Start returned nil")
	}
}

// A 200 answer with an error in its body consumed nothing known.
func TestErrorBody(t *testing.T) {
	body := fixture(t, "openai_error.json")
	for name, r := range readers {
		m := meterOf(t, r, ctJSON, body)
		m.Write(body)
		if got := m.Done(true); got != Unknown() {
			t.Errorf("%s: got %+v, want Unknown", name, got)
		}
	}
}

func TestCases(t *testing.T) {
	for _, tc := range []struct {
		name, ct, body string
		r              Reader
		want           Units
	}{
		{"no usage", ctJSON, `{"id":"x","choices":[]}`, OpenAI(), Unknown()},
		{"usage null", ctJSON, `{"usage":null}`, OpenAI(), Unknown()},
		{"usage empty", ctJSON, `{"usage":{}}`, OpenAI(), Unknown()},
		{"usage not an object", ctJSON, `{"usage":[1,2],"x":"usage"}`, OpenAI(), Unknown()},
		{"fraction not read", ctJSON, `{"usage":{"prompt_tokens":1.5,"completion_tokens":2}}`, OpenAI(), Units{-1, 2, -1, -1}},
		{"exponent not read", ctJSON, `{"usage":{"prompt_tokens":1e3,"completion_tokens":2}}`, OpenAI(), Units{-1, 2, -1, -1}},
		{"negative not read", ctJSON, `{"usage":{"prompt_tokens":-4,"completion_tokens":2}}`, OpenAI(), Units{-1, 2, -1, -1}},
		{"overflow not read", ctJSON, `{"usage":{"prompt_tokens":99999999999999999999,"completion_tokens":2}}`, OpenAI(), Units{-1, 2, -1, -1}},
		{"largest int64", ctJSON, `{"usage":{"prompt_tokens":9223372036854775807,"completion_tokens":0}}`, OpenAI(), Units{9223372036854775807, 0, 0, -1}},
		{"string count not read", ctJSON, `{"usage":{"prompt_tokens":"5","completion_tokens":2}}`, OpenAI(), Units{-1, 2, -1, -1}},
		{"escaped key not recognised", ctJSON, `{"\u0075sage":{"prompt_tokens":5}}`, OpenAI(), Unknown()},
		{"key with escape before a usage", ctJSON, `{"a\"usage":{"prompt_tokens":5},"usage":{"prompt_tokens":6}}`, OpenAI(), Units{6, 0, 0, -1}},
		{"prefix of a key", ctJSON, `{"usag":{"prompt_tokens":5},"usages":{"prompt_tokens":6}}`, OpenAI(), Unknown()},
		{"nested usage ignored", ctJSON, `{"data":{"usage":{"prompt_tokens":5}},"choices":[{"usage":{"prompt_tokens":7}}]}`, OpenAI(), Unknown()},
		{"last usage wins", "application/x-ndjson", "{\"usage\":{\"prompt_tokens\":5,\"completion_tokens\":1}}\n{\"usage\":{\"prompt_tokens\":6,\"completion_tokens\":2}}\n", OpenAI(), Units{6, 2, 0, -1}},
		{"deep nesting off path", ctJSON, `{"x":` + strings.Repeat("[", 10000) + strings.Repeat("]", 10000) + `,"usage":{"prompt_tokens":3,"completion_tokens":4}}`, OpenAI(), Units{3, 4, 0, -1}},
		{"deep value on path", ctJSON, `{"usage":{"prompt_tokens":3,"completion_tokens":4,"prompt_tokens_details":{"cached_tokens":{"a":[[[{"b":1}]]]}}}}`, OpenAI(), Units{3, 4, 0, -1}},
		{"whitespace everywhere", ctJSON, " \n{ \"usage\" :\t{ \"prompt_tokens\" : 3 ,\r\n \"completion_tokens\" : 4 } } \n", OpenAI(), Units{3, 4, 0, -1}},
		{"SSE sniffed in a JSON answer", ctJSON, "data: {\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":4}}\n\ndata: [DONE]\n\n", OpenAI(), Units{3, 4, 0, -1}},
		{"SSE without content type", "", ": keep-alive\n\ndata: {\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":4}}\n\n", OpenAI(), Units{3, 4, 0, -1}},
		{"SSE data on two lines", ctSSE, "data: {\"usage\":\ndata: {\"prompt_tokens\":3,\"completion_tokens\":4}}\n\n", OpenAI(), Units{3, 4, 0, -1}},
		{"SSE data lines joined by a line feed", ctSSE, "data: {\"usage\":{\"prompt_tokens\":3\ndata: 4,\"completion_tokens\":4}}\n\n", OpenAI(), Unknown()},
		{"SSE data without space", ctSSE, "data:{\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":4}}\n\n", OpenAI(), Units{3, 4, 0, -1}},
		{"SSE CR line ends", ctSSE, "event: x\rdata: {\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":4}}\r\rdata: [DONE]\r\r", OpenAI(), Units{3, 4, 0, -1}},
		{"SSE other fields", ctSSE, "id: 1\nretry: 100\ndatum: {\"usage\":{\"prompt_tokens\":9}}\ndata\n: comment {\"usage\"\n\ndata: {\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":4}}\n\n", OpenAI(), Units{3, 4, 0, -1}},
		{"SSE event cut inside usage", ctSSE, "data: {\"usage\":{\"prompt_tokens\":3,\n\ndata: {\"x\":1,\"completion_tokens\":4}}\n\n", OpenAI(), Unknown()},
		{"SSE broken event then usage", ctSSE, "data: {\"a\":]]]}\n\ndata: {\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":4}}\n\n", OpenAI(), Units{3, 4, 0, -1}},
		{"SSE raw newline in a string", ctSSE, "data: {\"a\":\"x\ndata: \"}\n\ndata: {\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":4}}\n\n", OpenAI(), Units{3, 4, 0, -1}},
		{"JSON broken", ctJSON, `{"a":}{"usage":{"prompt_tokens":3}}`, OpenAI(), Unknown()},
		{"JSON mismatched close", ctJSON, `{"a":[}],"usage":{"prompt_tokens":3}}`, OpenAI(), Unknown()},
		{"responses usage at top of a stream event", ctSSE, "data: {\"type\":\"response.incomplete\",\"response\":{\"status\":\"incomplete\",\"usage\":{\"input_tokens\":5,\"output_tokens\":100,\"input_tokens_details\":{\"cached_tokens\":1}}}}\n\n", OpenAI(), Units{5, 100, 1, -1}},
		{"Anthropic without cache counts", ctJSON, `{"type":"message","usage":{"input_tokens":10,"output_tokens":20}}`, Anthropic(), Units{10, 20, 0, -1}},
		{"Anthropic message_delta input null", ctSSE, "data: {\"type\":\"message_start\",\"message\":{\"usage\":{\"input_tokens\":10,\"output_tokens\":1}}}\n\ndata: {\"type\":\"message_delta\",\"usage\":{\"input_tokens\":null,\"output_tokens\":20}}\n\n", Anthropic(), Units{10, 20, 0, -1}},
		{"Auto Anthropic stream without cache counts", ctSSE, "data: {\"type\":\"message_start\",\"message\":{\"usage\":{\"input_tokens\":10,\"output_tokens\":1}}}\n\n", Auto(), Units{10, -1, 0, -1}},
		{"Auto OpenAI over Anthropic fields", ctJSON, `{"usage":{"prompt_tokens":10,"completion_tokens":2,"cache_read_input_tokens":4}}`, Auto(), Units{10, 2, 0, -1}},
		{"Gemini blocked prompt", ctJSON, `{"promptFeedback":{"blockReason":"SAFETY"},"usageMetadata":{"promptTokenCount":7,"totalTokenCount":7}}`, Gemini(), Units{7, 0, 0, -1}},
		{"Gemini later chunk drops a count", ctSSE, "data: {\"usageMetadata\":{\"promptTokenCount\":7,\"cachedContentTokenCount\":4,\"candidatesTokenCount\":1}}\n\ndata: {\"candidates\":[{\"finishReason\":\"STOP\"}],\"usageMetadata\":{\"promptTokenCount\":7,\"candidatesTokenCount\":9}}\n\n", Gemini(), Units{7, 9, 0, -1}},
		{"Gemini finishReason null", ctSSE, "data: {\"candidates\":[{\"finishReason\":null}],\"usageMetadata\":{\"promptTokenCount\":7,\"candidatesTokenCount\":9}}\n\n", Gemini(), Units{7, -1, 0, -1}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			body := []byte(tc.body)
			complete := tc.name != "Gemini finishReason null"
			m := meterOf(t, tc.r, tc.ct, body)
			m.Write(body)
			if got := m.Done(complete); got != tc.want {
				t.Errorf("whole: got %+v, want %+v", got, tc.want)
			}
			m = meterOf(t, tc.r, tc.ct, body)
			for i := range body {
				m.Write(body[i : i+1])
			}
			if got := m.Done(complete); got != tc.want {
				t.Errorf("byte by byte: got %+v, want %+v", got, tc.want)
			}
		})
	}
}

func TestDoneOnce(t *testing.T) {
	body := fixture(t, "openai_chat.json")
	m := meterOf(t, OpenAI(), ctJSON, body)
	m.Write(body)
	first := m.Done(true)
	m.Write([]byte(`{"usage":{"prompt_tokens":1,"completion_tokens":1}}`))
	if got := m.Done(false); got != first {
		t.Fatalf("second Done: got %+v, want %+v", got, first)
	}
}

// A huge answer passes in constant memory: Write allocates nothing,
// whatever its size, and the usage after it is read.
func TestHugeBody(t *testing.T) {
	var b bytes.Buffer
	b.WriteString(`{"choices":[{"message":{"content":"`)
	chunk := strings.Repeat(`lorem \"usage\": {[ipsum]} \\ `, 64)
	for b.Len() < 16<<20 {
		b.WriteString(chunk)
	}
	b.WriteString(`"}}],"usage":{"prompt_tokens":12,"completion_tokens":34567}}`)
	body := b.Bytes()
	m := meterOf(t, OpenAI(), ctJSON, body)
	allocs := testing.AllocsPerRun(1, func() {
		for i := 0; i < len(body); i += 32 << 10 {
			m.Write(body[i:min(i+32<<10, len(body))])
		}
	})
	if allocs != 0 {
		t.Errorf("Write allocated %v times over %d bytes", allocs, len(body))
	}
	if got, want := m.Done(true), (Units{12, 34567, 0, -1}); got != want {
		t.Fatalf("got %+v, want %+v", got, want)
	}
}

// A long stream costs one allocation, Start's, not one per event.
func TestStreamAllocs(t *testing.T) {
	stream := syntheticOpenAIStream(1000)
	resp := answer(200, ctSSE, nil)
	allocs := testing.AllocsPerRun(20, func() {
		m := OpenAI().Start(nil, resp)
		for _, ev := range stream {
			m.Write(ev)
		}
		if u := m.Done(true); u.InputTokens != 1000 {
			panic(fmt.Sprint(u))
		}
	})
	if allocs > 1 {
		t.Fatalf("a stream of 1000 events allocated %v times, want 1", allocs)
	}
}

// syntheticOpenAIStream returns an OpenAI chat stream with include_usage,
// one slice per event: n content chunks, the usage chunk, [DONE].
func syntheticOpenAIStream(n int) [][]byte {
	var evs [][]byte
	for i := range n {
		evs = append(evs, fmt.Appendf(nil, `data: {"id":"chatcmpl-C3aJfxQ8mNvOq7kB4rT2u9wXyZ1ab","object":"chat.completion.chunk","created":1754930451,"model":"gpt-4o-mini-2024-07-18","service_tier":"default","system_fingerprint":"fp_34a54ae93c","choices":[{"index":0,"delta":{"content":" token%d with \"quotes\" and {braces}"},"logprobs":null,"finish_reason":null}],"usage":null,"obfuscation":"6hUVQf"}`+"\n\n", i))
	}
	evs = append(evs, []byte(`data: {"id":"chatcmpl-C3aJfxQ8mNvOq7kB4rT2u9wXyZ1ab","object":"chat.completion.chunk","created":1754930451,"model":"gpt-4o-mini-2024-07-18","service_tier":"default","system_fingerprint":"fp_34a54ae93c","choices":[],"usage":{"prompt_tokens":1000,"completion_tokens":300,"total_tokens":1300,"prompt_tokens_details":{"cached_tokens":0,"audio_tokens":0},"completion_tokens_details":{"reasoning_tokens":0,"audio_tokens":0,"accepted_prediction_tokens":0,"rejected_prediction_tokens":0}},"obfuscation":"k0a"}`+"\n\n"))
	evs = append(evs, []byte("data: [DONE]\n\n"))
	return evs
}
