package main

import (
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/apipool-ng/apipool/examples/sdk/internal/demo"
)

// chatAPI is an in-process fake of the few OpenAI endpoints the example
// calls: GET /v1/models and POST /v1/chat/completions, streamed (SSE) or
// not. Every request needs a known key as "Authorization: Bearer <key>"
// (else 401 invalid_api_key, as OpenAI answers). Each key may make
// quota[key] requests per window; beyond that the API answers 429 with
// Retry-After, retry-after-ms and an OpenAI-style error body.
//
// A streamed completion is written a chunk at a time, each flushed; before
// every chunk after the first the server waits for a value on gate when it
// is not nil (the test controls it), else pauses chunkDelay.
type chatAPI struct {
	quota      map[string]int // per key secret
	window     time.Duration
	gate       chan struct{}
	chunkDelay time.Duration

	// sent counts the stream chunks the server has begun to write.
	sent atomic.Int64
	// foreignKey counts requests that carried a key the pool does not
	// hold (the SDK's own "unused" key, say).
	foreignKey atomic.Int64

	used *demo.Window // requests in the current window, per key secret

	// Wire records every request, with the key the API read.
	Wire demo.Wire
}

// handler returns the fake API, recording into a.Wire.
func (a *chatAPI) handler() http.Handler {
	return a.Wire.Handler(a, func(r *http.Request) string {
		key, _ := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		return key
	})
}

func newChatAPI(quota map[string]int, window time.Duration) *chatAPI {
	return &chatAPI{quota: quota, window: window, used: demo.NewWindow(window)}
}

// reply is what the fake model answers; a stream sends it a word per chunk.
const reply = "One pool, many keys, no waiting."

func (a *chatAPI) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	key, _ := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	quota, known := a.quota[key]
	if !known {
		a.foreignKey.Add(1)
		openAIError(w, http.StatusUnauthorized, "invalid_request_error", "invalid_api_key", "Incorrect API key provided.")
		return
	}
	if left, over := a.used.Take(key, quota); over {
		w.Header().Set("Retry-After", strconv.Itoa(int(math.Ceil(left.Seconds()))))
		w.Header().Set("Retry-After-Ms", strconv.FormatInt(left.Milliseconds()+1, 10))
		w.Header().Set("X-Ratelimit-Limit-Requests", strconv.Itoa(quota))
		w.Header().Set("X-Ratelimit-Remaining-Requests", "0")
		openAIError(w, http.StatusTooManyRequests, "requests", "rate_limit_exceeded",
			fmt.Sprintf("Rate limit reached for requests: limit %d per %s. Please try again in %s.", quota, a.window, left.Round(time.Millisecond)))
		return
	}
	switch {
	case r.Method == http.MethodGet && r.URL.Path == "/v1/models":
		writeJSON(w, map[string]any{"object": "list", "data": []map[string]any{
			{"id": "gpt-5.4-mini", "object": "model", "created": 1773705600, "owned_by": "system"},
			{"id": "gpt-4o", "object": "model", "created": 1715367049, "owned_by": "system"},
		}})
	case r.Method == http.MethodPost && r.URL.Path == "/v1/chat/completions":
		a.completion(w, r)
	default:
		openAIError(w, http.StatusNotFound, "invalid_request_error", "unknown_url", "Unknown request URL: "+r.Method+" "+r.URL.Path)
	}
}

func (a *chatAPI) completion(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Model    string `json:"model"`
		Stream   bool   `json:"stream"`
		Messages []struct {
			Role    string `json:"role"`
			Content string `json:"content"`
		} `json:"messages"`
	}
	if err := json.NewDecoder(r.Body).Decode(&req); err != nil || req.Model == "" || len(req.Messages) == 0 {
		openAIError(w, http.StatusBadRequest, "invalid_request_error", "invalid_body", "want a JSON body with model and messages")
		return
	}
	id := "chatcmpl-" + strconv.FormatInt(time.Now().UnixNano(), 36)
	created := time.Now().Unix()
	if !req.Stream {
		writeJSON(w, map[string]any{
			"id": id, "object": "chat.completion", "created": created, "model": req.Model,
			"choices": []map[string]any{{
				"index": 0, "finish_reason": "stop", "logprobs": nil,
				"message": map[string]any{"role": "assistant", "content": reply, "refusal": nil},
			}},
			"usage": map[string]any{"prompt_tokens": 9, "completion_tokens": 7, "total_tokens": 16},
		})
		return
	}

	fl, ok := w.(http.Flusher)
	if !ok {
		openAIError(w, http.StatusInternalServerError, "server_error", "no_flush", "streaming unsupported")
		return
	}
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-cache")
	w.WriteHeader(http.StatusOK)
	fl.Flush()
	words := strings.SplitAfter(reply, " ")
	for i := 0; i <= len(words); i++ {
		if i > 0 && !a.pause(r) {
			return
		}
		delta, finish := map[string]any{}, any(nil)
		switch {
		case i == 0:
			delta["role"], delta["content"] = "assistant", words[0]
		case i < len(words):
			delta["content"] = words[i]
		default:
			finish = "stop" // the last chunk: no content, a finish reason
		}
		chunk, _ := json.Marshal(map[string]any{
			"id": id, "object": "chat.completion.chunk", "created": created, "model": req.Model,
			"choices": []map[string]any{{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": nil}},
		})
		a.sent.Add(1)
		fmt.Fprintf(w, "data: %s\n\n", chunk)
		fl.Flush()
	}
	fmt.Fprint(w, "data: [DONE]\n\n")
	fl.Flush()
}

// streamChunks is how many chunks a streamed completion has.
func streamChunks() int { return len(strings.SplitAfter(reply, " ")) + 1 }

// pause waits before the next stream chunk; false when the client left.
func (a *chatAPI) pause(r *http.Request) bool {
	if a.gate != nil {
		select {
		case <-a.gate:
			return true
		case <-r.Context().Done():
			return false
		}
	}
	if a.chunkDelay > 0 {
		t := time.NewTimer(a.chunkDelay)
		defer t.Stop()
		select {
		case <-t.C:
		case <-r.Context().Done():
			return false
		}
	}
	return true
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(v)
}

// openAIError writes an error the way the OpenAI API does.
func openAIError(w http.ResponseWriter, code int, typ, errCode, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(map[string]any{"error": map[string]any{
		"message": msg, "type": typ, "param": nil, "code": errCode,
	}})
}
