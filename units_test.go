package apipool_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/apipool-ng/apipool"
	"github.com/apipool-ng/apipool/status"
	"github.com/apipool-ng/apipool/usage"
)

const (
	chatJSON = `{"id":"chatcmpl-1","object":"chat.completion","model":"gpt-4o","choices":[{"index":0,"message":{"role":"assistant","content":"hi, \"usage\": none"}}],` +
		`"usage":{"prompt_tokens":1200,"completion_tokens":30,"total_tokens":1230,"prompt_tokens_details":{"cached_tokens":1000}}}`
	chatStream = "data: {\"id\":\"c\",\"choices\":[{\"delta\":{\"content\":\"hi\"}}],\"usage\":null}\n\n" +
		"data: {\"id\":\"c\",\"choices\":[],\"usage\":{\"prompt_tokens\":7,\"completion_tokens\":3,\"total_tokens\":10}}\n\n" +
		"data: [DONE]\n\n"
)

// WithUsage: the delivered answer's event carries the tokens its body
// states and their cost, recorded when the body ends (JSON and SSE alike);
// a body closed before its usage, or no price, gives -1, never zero.
func TestUsageUnitsAndCost(t *testing.T) {
	t.Parallel()
	prices := usage.Prices{"*": {Input: 2, Output: 10, CachedInput: 1}} // per million tokens
	cases := []struct {
		name, ctype, body string
		read              bool // the caller reads the body to its end
		in, out, cached   int64
		cost              float64
	}{
		{"json", "application/json", chatJSON, true, 1200, 30, 1000, (200*2 + 1000*1 + 30*10) / 1e6},
		{"stream", "text/event-stream", chatStream, true, 7, 3, 0, (7*2 + 3*10) / 1e6},
		{"closed-early", "text/event-stream", chatStream, false, -1, -1, -1, -1},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			up := newUpstream(func(seen) reply {
				return reply{Status: 200, Header: hdr("Content-Type", tc.ctype), Body: tc.body}
			})
			rec := &captureRecorder{}
			p := mustNew(t, keys(1), apipool.WithBase(up), apipool.WithRecorder(rec), apipool.WithUsage(usage.OpenAI(), prices))
			resp, err := p.RoundTrip(newGet(t, "http://api.test/v1/chat/completions"))
			if err != nil {
				t.Fatal(err)
			}
			if n := len(rec.Events()); n != 0 {
				t.Fatalf("%d events before the body ended; want the event held until then", n)
			}
			if tc.read {
				b, _ := io.ReadAll(resp.Body)
				if string(b) != tc.body {
					t.Fatalf("the caller read %q, want the upstream's body unchanged", b)
				}
			} else {
				buf := make([]byte, 10)
				io.ReadFull(resp.Body, buf)
			}
			resp.Body.Close()
			ev := rec.Events()
			if len(ev) != 1 {
				t.Fatalf("%d events, want 1", len(ev))
			}
			e := ev[0]
			if e.InputTokens != tc.in || e.OutputTokens != tc.out || e.CachedTokens != tc.cached {
				t.Errorf("tokens in %d out %d cached %d, want %d %d %d", e.InputTokens, e.OutputTokens, e.CachedTokens, tc.in, tc.out, tc.cached)
			}
			if d := e.Cost - tc.cost; d > 1e-12 || d < -1e-12 {
				t.Errorf("cost %g, want %g", e.Cost, tc.cost)
			}
			if e.KeyID != "k0" || e.HTTPStatus != 200 {
				t.Errorf("event %+v", e)
			}
		})
	}
}

// Without WithUsage, the units are not known (-1), and the event is
// recorded when the answer's headers come.
func TestUsageUnknownWithoutReader(t *testing.T) {
	t.Parallel()
	up := newUpstream(func(seen) reply {
		return reply{Status: 200, Header: hdr("Content-Type", "application/json"), Body: chatJSON}
	})
	rec := &captureRecorder{}
	p := mustNew(t, keys(1), apipool.WithBase(up), apipool.WithRecorder(rec))
	resp, err := p.RoundTrip(newGet(t, "http://api.test/"))
	if err != nil {
		t.Fatal(err)
	}
	if len(rec.Events()) != 1 {
		t.Fatal("the event waits for the body without a usage reader")
	}
	resp.Body.Close()
	if e := rec.Events()[0]; e.InputTokens != -1 || e.OutputTokens != -1 || e.CachedTokens != -1 || e.Units != -1 || e.Cost != -1 {
		t.Fatalf("event %+v, want every unit -1", e)
	}
}

// A model missing from the price table has no cost (-1), never zero; a
// bad table is refused by name.
func TestUsagePrices(t *testing.T) {
	t.Parallel()
	up := newUpstream(func(seen) reply {
		return reply{Status: 200, Header: hdr("Content-Type", "application/json"), Body: chatJSON}
	})
	rec := &captureRecorder{}
	p := mustNew(t, keys(1), apipool.WithBase(up), apipool.WithRecorder(rec), apipool.WithUsage(usage.OpenAI(), usage.Prices{"claude-*": {Input: 3, Output: 15}}))
	resp, _ := mustDo(t, p)
	resp.Body.Close()
	if e := rec.Events()[0]; e.InputTokens != 1200 || e.Cost != -1 {
		t.Fatalf("event %+v, want tokens known and cost -1 for a model the table lacks", e)
	}
	_, err := apipool.New(keys(1), apipool.WithUsage(usage.OpenAI(), usage.Prices{"gpt-4o": {Input: -1}}))
	var ce *apipool.ConfigError
	if !errors.As(err, &ce) || !strings.Contains(err.Error(), "gpt-4o") {
		t.Fatalf("negative price: %v, want a *ConfigError naming the model", err)
	}
	if n := strings.Count(err.Error(), "invalid configuration"); n != 1 || !strings.HasPrefix(err.Error(), `apipool: invalid configuration: WithUsage: bad price table: usage.Prices["gpt-4o"].Input: `) {
		t.Errorf("negative price: %q, want one prefix, then the option and the entry (%d prefixes)", err, n)
	}
	if _, err := apipool.New(keys(1), apipool.WithUsage(nil, nil)); !errors.As(err, &ce) {
		t.Fatalf("nil reader: %v", err)
	}
}

// WithIncludeUsage: a streamed request that does not ask for its usage is
// sent asking for it; the stream the caller reads is what it would have
// been without the ask, and the event counts the usage. A request that
// sets include_usage itself goes as it is, and so does its stream.
func TestIncludeUsage(t *testing.T) {
	t.Parallel()
	// What OpenAI streams with include_usage, and what it streams without.
	const with = "data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"hi\"}}],\"usage\":null}\n\n" +
		"data: {\"id\":\"c\",\"choices\":[],\"usage\":{\"prompt_tokens\":7,\"completion_tokens\":3,\"total_tokens\":10}}\n\n" +
		"data: [DONE]\n\n"
	const without = "data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"hi\"}}]}\n\n" +
		"data: [DONE]\n\n"
	up := newUpstream(func(s seen) reply {
		body := without
		if strings.Contains(s.Body, `"include_usage":true`) {
			body = with
		}
		return reply{Status: 200, Header: hdr("Content-Type", "text/event-stream"), Body: body}
	})
	rec := &captureRecorder{}
	p := mustNew(t, keys(1), apipool.WithBase(up), apipool.WithRecorder(rec), apipool.WithUsage(usage.OpenAI(), nil), apipool.WithIncludeUsage(true))
	send := func(body string) (string, string) {
		t.Helper()
		up.Reset()
		req, err := http.NewRequest("POST", "http://api.test/v1/chat/completions", strings.NewReader(body)) // GetBody set, as SDKs do
		if err != nil {
			t.Fatal(err)
		}
		resp, err := p.RoundTrip(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		return string(b), up.Calls()[0].Body
	}
	got, sent := send(`{"model":"gpt-4o","stream":true,"messages":[]}`)
	if !strings.Contains(sent, `"stream_options":{"include_usage":true}`) || !strings.HasPrefix(sent, `{"model":"gpt-4o","stream":true,"messages":[]`) {
		t.Fatalf("sent %s, want the caller's body with the ask for usage added", sent)
	}
	if got != without {
		t.Fatalf("the caller read\n%q\nwant what the stream is without the ask\n%q", got, without)
	}
	if e := rec.Events()[0]; e.InputTokens != 7 || e.OutputTokens != 3 {
		t.Fatalf("event %+v, want the stream's usage counted", e)
	}
	// The caller's own include_usage: false stays, and the stream is its.
	got, sent = send(`{"model":"gpt-4o","stream":true,"stream_options":{"include_usage":false}}`)
	if sent != `{"model":"gpt-4o","stream":true,"stream_options":{"include_usage":false}}` || got != without {
		t.Fatalf("sent %s, read %q: want the caller's body and stream as they are", sent, got)
	}
	// Asked for by the caller: its usage chunk reaches it.
	got, _ = send(`{"model":"gpt-4o","stream":true,"stream_options":{"include_usage":true}}`)
	if got != with {
		t.Fatalf("read %q, want the stream with its usage chunk", got)
	}
	// Not a stream: sent as it is.
	if _, sent = send(`{"model":"gpt-4o","messages":[]}`); sent != `{"model":"gpt-4o","messages":[]}` {
		t.Fatalf("sent %s", sent)
	}
}

// failingReader fails after its first bytes, as a client that goes away
// while uploading.
type failingReader struct{ n int }

func (f *failingReader) Read(p []byte) (int, error) {
	if f.n > 0 {
		return 0, errors.New("connection reset by peer")
	}
	f.n++
	return copy(p, `{"model":`), nil
}

// A request whose body cannot be read is answered with an error and still
// leaves one usage event, with no key: as a client error, or as the
// cancel that cut it (issue 27, item 19: usage adds up to what callers
// were answered).
func TestUnreadableBodyIsRecorded(t *testing.T) {
	t.Parallel()
	up := newUpstream(nil)
	rec := &captureRecorder{}
	p := mustNew(t, keys(2), apipool.WithBase(up), apipool.WithRecorder(rec))
	req, err := http.NewRequest("POST", "http://api.test/v1/x", io.NopCloser(&failingReader{}))
	if err != nil {
		t.Fatal(err)
	}
	if resp, err := p.RoundTrip(req); err == nil || resp != nil {
		t.Fatalf("%v %v, want an error", resp, err)
	}
	ev := rec.Events()
	if len(ev) != 1 || ev[0].KeyID != "" || ev[0].Status != status.ClientError || ev[0].ErrorType != "body_unreadable" || len(up.Calls()) != 0 {
		t.Fatalf("events %+v, calls %d: want one client-error event with no key, nothing sent", ev, len(up.Calls()))
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	req, _ = http.NewRequestWithContext(ctx, "POST", "http://api.test/v1/x", io.NopCloser(&failingReader{}))
	p.RoundTrip(req)
	if ev = rec.Events(); len(ev) != 2 || ev[1].Status != status.Canceled || ev[1].KeyID != "" {
		t.Fatalf("events %+v, want the second counted as canceled", ev)
	}
}
