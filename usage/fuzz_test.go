package usage

import (
	"bytes"
	"encoding/json"
	"io"
	"strings"
	"testing"
	"testing/iotest"
	"unsafe"
)

// fuzzMeter checks what holds for every body: no panic; the units do not
// depend on the pieces the body came in; a count is never below -1; and
// the meter holds no more memory than its fixed struct (it has no slice or
// map to grow).
func fuzzMeter(f *testing.F, r Reader, ct string, seeds ...string) {
	for _, s := range seeds {
		f.Add(fixture(f, s), uint16(7), uint16(100))
	}
	f.Add([]byte("data: {\"usage\":{\"prompt_tokens\":1}}\n\n"), uint16(3), uint16(9))
	f.Add([]byte(`[{"usageMetadata":{"promptTokenCount":1}}]`), uint16(1), uint16(2))
	f.Fuzz(func(t *testing.T, body []byte, a, b uint16) {
		cut1, cut2 := min(int(a), len(body)), min(int(b), len(body))
		if cut1 > cut2 {
			cut1, cut2 = cut2, cut1
		}
		for _, complete := range []bool{true, false} {
			whole := meterOf(t, r, ct, body)
			whole.Write(body)
			want := whole.Done(complete)
			split := meterOf(t, r, ct, body)
			feed(split, body, cut1, cut2)
			if got := split.Done(complete); got != want {
				t.Fatalf("cut at %d, %d: %+v; whole: %+v", cut1, cut2, got, want)
			}
			if want.InputTokens < -1 || want.OutputTokens < -1 || want.CachedTokens < -1 || want.Units != -1 {
				t.Fatalf("impossible units %+v", want)
			}
		}
	})
}

// The meter's memory is its struct: a fixed size, whatever the body.
func TestMeterSize(t *testing.T) {
	if s := unsafe.Sizeof(tokenMeter{}); s > 512 {
		t.Fatalf("a meter is %d bytes", s)
	}
}

func FuzzOpenAIStream(f *testing.F) {
	fuzzMeter(f, OpenAI(), ctSSE, "openai_chat_stream_usage.sse", "openai_chat_stream_tools.sse", "openai_responses_stream.sse")
}

func FuzzOpenAIJSON(f *testing.F) {
	fuzzMeter(f, OpenAI(), ctJSON, "openai_chat.json", "openai_responses.json", "openai_embeddings.json")
}

func FuzzAnthropicStream(f *testing.F) {
	fuzzMeter(f, Anthropic(), ctSSE, "anthropic_stream.sse", "anthropic_stream_error.sse", "anthropic_message.json")
}

func FuzzGeminiStream(f *testing.F) {
	fuzzMeter(f, Gemini(), ctSSE, "gemini_stream.sse", "gemini_stream_vertex.sse", "gemini_stream_array.json")
}

func FuzzAuto(f *testing.F) {
	fuzzMeter(f, Auto(), ctJSON, "gemini.json", "anthropic_stream.sse", "openai_chat.json")
}

func FuzzAddIncludeUsage(f *testing.F) {
	for _, s := range []string{
		`{"model":"gpt-4o","stream":true,"messages":[]}`,
		`{"stream":true,"stream_options":{}}`,
		`{"stream":true,"stream_options":null}`,
		`{"stream":true,"stream_options":{"include_usage":null,"x":1}}`,
		`{"stream":false}`,
		`[]`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		keep := bytes.Clone(in)
		out, added, err := AddIncludeUsage(in)
		if !bytes.Equal(in, keep) {
			t.Fatal("the body given was changed")
		}
		if err != nil || !added {
			if !bytes.Equal(out, in) {
				t.Fatalf("not added, but changed: %s", out)
			}
			return
		}
		checkAdded(t, in, out)
		// once added, nothing more to add
		if again, added, err := AddIncludeUsage(out); err != nil || added || !bytes.Equal(again, out) {
			t.Fatalf("second pass: %s, %v, %v", again, added, err)
		}
	})
}

func FuzzStripUsageChunk(f *testing.F) {
	for _, s := range []string{"openai_chat_stream_usage.sse", "openai_chat_stream_tools.sse", "openai_chat_stream.sse"} {
		f.Add(fixture(f, s))
	}
	f.Add([]byte("data: {\"a\":1,\"usage\":null}\r\n\r\ndata: {\"choices\":[],\"usage\":{}}\r\rdata: [DONE]\n\n"))
	f.Fuzz(func(t *testing.T, in []byte) {
		whole, err := io.ReadAll(StripUsageChunk(io.NopCloser(bytes.NewReader(in))))
		if err != nil {
			t.Fatal(err)
		}
		bytewise, err := io.ReadAll(StripUsageChunk(io.NopCloser(iotest.OneByteReader(bytes.NewReader(in)))))
		if err != nil || !bytes.Equal(whole, bytewise) {
			t.Fatalf("read whole: %q\nbyte by byte: %q (%v)", whole, bytewise, err)
		}
		if !bytes.Contains(in, []byte(`"usage"`)) && !bytes.Equal(whole, in) {
			t.Fatalf("no usage, but changed: %q -> %q", in, whole)
		}
		if len(whole) > len(in) {
			t.Fatalf("grew: %q -> %q", in, whole)
		}
		// every event left is valid JSON where it was
		for _, line := range strings.Split(string(whole), "\n") {
			if d, ok := strings.CutPrefix(line, "data: "); ok && strings.Contains(d, `"usage"`) && json.Valid([]byte(d)) {
				var m map[string]json.RawMessage
				if json.Unmarshal([]byte(d), &m) == nil {
					if _, has := m["usage"]; has && !bytes.Contains(in, []byte(line)) {
						t.Fatalf("a usage member left in a rewritten event: %q", line)
					}
				}
			}
		}
	})
}
