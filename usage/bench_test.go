package usage

import (
	"bytes"
	"fmt"
	"io"
	"strings"
	"testing"
)

// Benchmarks of the work a meter adds to each answer. A stream is written
// one event per Write, as a caller reading an SSE stream gets it; ns/event
// is the latency a meter adds to each event, allocs/op the allocations of
// a whole stream of 1000 events (Start's meter included). cpu-ns/event is
// the process's CPU time per event: on a machine other work keeps busy,
// ns/event grows with the waits for a CPU, cpu-ns/event much less.

// perEvent reports ns/event and cpu-ns/event for a benchmark whose
// iterations each handled events events; cpu0 is cpuNanos() at its start.
func perEvent(b *testing.B, cpu0 int64, events int) {
	n := float64(b.N) * float64(events)
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/n, "ns/event")
	if cpu0 >= 0 {
		b.ReportMetric(float64(cpuNanos()-cpu0)/n, "cpu-ns/event")
	}
}

func syntheticAnthropicStream(n int) [][]byte {
	evs := [][]byte{[]byte("event: message_start\ndata: " + `{"type":"message_start","message":{"id":"msg_01HhTKu7C6hTwzYbEX3Rs5cF","type":"message","role":"assistant","content":[],"model":"claude-sonnet-4-5-20250929","stop_reason":null,"stop_sequence":null,"usage":{"input_tokens":472,"cache_creation_input_tokens":0,"cache_read_input_tokens":0,"output_tokens":1,"service_tier":"standard"}}}` + "\n\n")}
	evs = append(evs, []byte("event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n"))
	for i := range n {
		evs = append(evs, fmt.Appendf(nil, "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\" token%d with \\\"quotes\\\" and {braces}\"}}\n\n", i))
	}
	evs = append(evs, []byte("event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":0}\n\n"))
	evs = append(evs, []byte("event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\",\"stop_sequence\":null},\"usage\":{\"output_tokens\":1000}}\n\n"))
	evs = append(evs, []byte("event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n"))
	return evs
}

func syntheticGeminiStream(n int) [][]byte {
	var evs [][]byte
	for i := range n {
		finish := ""
		if i == n-1 {
			finish = `,"finishReason": "STOP"`
		}
		evs = append(evs, fmt.Appendf(nil, `data: {"candidates": [{"content": {"parts": [{"text": " token%d with \"quotes\" and {braces}"}],"role": "model"}%s,"index": 0}],"usageMetadata": {"promptTokenCount": 1000,"candidatesTokenCount": %d,"totalTokenCount": %d,"promptTokensDetails": [{"modality": "TEXT","tokenCount": 1000}]},"modelVersion": "gemini-2.5-flash","responseId": "mAitaJWeO9yxz7IPpKnr4Qs"}`+"\r\n\r\n", i, finish, i+1, 1000+i+1))
	}
	return evs
}

func streamBytes(evs [][]byte) int64 {
	n := 0
	for _, e := range evs {
		n += len(e)
	}
	return int64(n)
}

// BenchmarkMeterStream measures a meter over a stream of 1000 events.
func BenchmarkMeterStream(b *testing.B) {
	for _, bc := range []struct {
		name string
		r    Reader
		evs  [][]byte
	}{
		{"OpenAI", OpenAI(), syntheticOpenAIStream(1000)},
		{"Anthropic", Anthropic(), syntheticAnthropicStream(1000)},
		{"Gemini", Gemini(), syntheticGeminiStream(1000)},
		{"Auto-OpenAI", Auto(), syntheticOpenAIStream(1000)},
	} {
		b.Run(bc.name, func(b *testing.B) {
			resp := answer(200, ctSSE, nil)
			total := streamBytes(bc.evs)
			b.SetBytes(total)
			b.ReportAllocs()
			cpu0 := cpuNanos()
			for b.Loop() {
				m := bc.r.Start(nil, resp)
				for _, ev := range bc.evs {
					m.Write(ev)
				}
				if u := m.Done(true); u.InputTokens != 1000 && u.InputTokens != 472 {
					b.Fatal(u)
				}
			}
			perEvent(b, cpu0, len(bc.evs))
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/(float64(total)/1024), "ns/KiB")
			b.ReportMetric(float64(total)/float64(len(bc.evs)), "B/event")
		})
	}
}

// BenchmarkMeterJSON measures a meter over one JSON answer whose content
// is of the size given, written in 32 KiB reads.
func BenchmarkMeterJSON(b *testing.B) {
	for _, size := range []int{1 << 10, 64 << 10, 1 << 20} {
		body := []byte(`{"id":"chatcmpl-1","object":"chat.completion","choices":[{"index":0,"message":{"role":"assistant","content":"` +
			strings.Repeat(`lorem \"ipsum\" {dolor} `, size/24) +
			`"},"finish_reason":"stop"}],"usage":{"prompt_tokens":1117,"completion_tokens":46,"total_tokens":1163,"prompt_tokens_details":{"cached_tokens":1024}}}`)
		b.Run(fmt.Sprintf("%dKiB", size>>10), func(b *testing.B) {
			resp := answer(200, ctJSON, nil)
			b.SetBytes(int64(len(body)))
			b.ReportAllocs()
			for b.Loop() {
				m := OpenAI().Start(nil, resp)
				for i := 0; i < len(body); i += 32 << 10 {
					m.Write(body[i:min(i+32<<10, len(body))])
				}
				if m.Done(true).InputTokens != 1117 {
					b.Fatal("no usage")
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/(float64(len(body))/1024), "ns/KiB")
		})
	}
}

// BenchmarkPassThrough compares a caller reading a 1000-event stream from
// its body with and without a meter on the bytes it reads (a TeeReader, as
// a body wrapper would): the difference is the meter's cost.
func BenchmarkPassThrough(b *testing.B) {
	evs := syntheticOpenAIStream(1000)
	stream := bytes.Join(evs, nil)
	buf := make([]byte, 4096)
	resp := answer(200, ctSSE, nil)
	for _, metered := range []bool{false, true} {
		b.Run(map[bool]string{false: "bare", true: "metered"}[metered], func(b *testing.B) {
			b.SetBytes(int64(len(stream)))
			b.ReportAllocs()
			var src bytes.Reader
			cpu0 := cpuNanos()
			for b.Loop() {
				src.Reset(stream)
				var r io.Reader = &src
				var m Meter
				if metered {
					m = OpenAI().Start(nil, resp)
					r = io.TeeReader(r, writerFunc(m.Write))
				}
				for {
					if _, err := r.Read(buf); err != nil {
						break
					}
				}
				if m != nil {
					m.Done(true)
				}
			}
			perEvent(b, cpu0, len(evs))
		})
	}
}

// BenchmarkStripUsageChunk measures StripUsageChunk over a 1000-event
// stream read in 4 KiB reads, against reading the stream bare.
func BenchmarkStripUsageChunk(b *testing.B) {
	evs := syntheticOpenAIStream(1000)
	stream := bytes.Join(evs, nil)
	buf := make([]byte, 4096)
	for _, strip := range []bool{false, true} {
		b.Run(map[bool]string{false: "bare", true: "strip"}[strip], func(b *testing.B) {
			b.SetBytes(int64(len(stream)))
			b.ReportAllocs()
			cpu0 := cpuNanos()
			for b.Loop() {
				var r io.Reader = bytes.NewReader(stream)
				if strip {
					r = StripUsageChunk(io.NopCloser(r))
				}
				for {
					if _, err := r.Read(buf); err != nil {
						break
					}
				}
			}
			perEvent(b, cpu0, len(evs))
		})
	}
}

// BenchmarkAddIncludeUsage measures the rewrite of a 2 KiB chat request.
func BenchmarkAddIncludeUsage(b *testing.B) {
	body := []byte(`{"model":"gpt-4o-mini","stream":true,"temperature":0.2,"messages":[{"role":"system","content":"` +
		strings.Repeat("You are a helpful assistant. ", 40) + `"},{"role":"user","content":"Hello \"there\""}]}`)
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	for b.Loop() {
		if _, added, err := AddIncludeUsage(body); !added || err != nil {
			b.Fatal(added, err)
		}
	}
}

// BenchmarkPricesCost measures a cost lookup in a 100-model table: an
// exact name, and a name priced by a prefix pattern.
func BenchmarkPricesCost(b *testing.B) {
	p := Prices{}
	for i := range 50 {
		p[fmt.Sprintf("model-%d", i)] = Price{Input: 1, Output: 2}
		p[fmt.Sprintf("family-%d-*", i)] = Price{Input: 1, Output: 2}
	}
	u := Units{InputTokens: 1000, OutputTokens: 100, CachedTokens: 10}
	for _, model := range []string{"model-42", "family-42-2025-08-07-preview"} {
		b.Run(model, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, ok := p.Cost(model, u); !ok {
					b.Fatal("no price")
				}
			}
		})
	}
}
