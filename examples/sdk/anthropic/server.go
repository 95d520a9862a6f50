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

// messagesAPI is an in-process fake of the Anthropic Messages API
// (POST /v1/messages) that checks credentials the way the real API does:
//
//   - an API key travels in the x-api-key header;
//   - an "Authorization: Bearer" header is read as an OAuth token, and
//     wins over x-api-key when both are sent; this fake knows no OAuth
//     token, so a request that carries one (an SDK's placeholder) is
//     answered 401 authentication_error, as the finding was;
//   - the anthropic-version header is required (400 without it);
//   - each key may send quota[key] requests per window; beyond that the
//     answer is 429 rate_limit_error with retry-after (seconds).
//
// Every answer to a known key carries the anthropic-ratelimit-requests-*
// headers (limit, remaining, reset), as the real API's do; spend uses up
// part of a key's quota as another client of the API would.
//
// Every request is recorded in Wire with the credential the API read.
type messagesAPI struct {
	quota  map[string]int // per API key
	window time.Duration
	used   *demo.Window

	Wire     demo.Wire
	requests atomic.Int64 // message ids
}

func newMessagesAPI(quota map[string]int, window time.Duration) *messagesAPI {
	return &messagesAPI{quota: quota, window: window, used: demo.NewWindow(window)}
}

// spend counts n requests of key's quota as sent by another client.
func (a *messagesAPI) spend(key string, n int) {
	for range n {
		a.used.Take(key, a.quota[key])
	}
}

// handler returns the fake API, recording into a.Wire.
func (a *messagesAPI) handler() http.Handler {
	return a.Wire.Handler(http.HandlerFunc(a.serve), credential)
}

// credential is the credential the API reads from r: the bearer token when
// an Authorization header is present, else the x-api-key header.
func credential(r *http.Request) string {
	if auth := r.Header.Get("Authorization"); auth != "" {
		return strings.TrimPrefix(auth, "Bearer ")
	}
	return r.Header.Get("X-Api-Key")
}

// reply is what the fake model answers.
const reply = "Pooled keys, one client."

func (a *messagesAPI) serve(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Request-Id", fmt.Sprintf("req_%06d", a.requests.Add(1)))
	if r.Header.Get("Authorization") != "" {
		anthropicError(w, http.StatusUnauthorized, "authentication_error", "Invalid bearer token")
		return
	}
	key := r.Header.Get("X-Api-Key")
	quota, known := a.quota[key]
	if !known {
		anthropicError(w, http.StatusUnauthorized, "authentication_error", "invalid x-api-key")
		return
	}
	if r.Header.Get("Anthropic-Version") == "" {
		anthropicError(w, http.StatusBadRequest, "invalid_request_error", "anthropic-version: header is required")
		return
	}
	left, over := a.used.Take(key, quota)
	reset := time.Now().Add(left).UTC().Format(time.RFC3339)
	w.Header().Set("Anthropic-Ratelimit-Requests-Limit", strconv.Itoa(quota))
	w.Header().Set("Anthropic-Ratelimit-Requests-Reset", reset)
	w.Header().Set("Anthropic-Ratelimit-Requests-Remaining", strconv.Itoa(max(quota-a.used.Used(key), 0)))
	if over {
		w.Header().Set("Retry-After", strconv.Itoa(int(math.Ceil(left.Seconds()))))
		anthropicError(w, http.StatusTooManyRequests, "rate_limit_error",
			fmt.Sprintf("This request would exceed your organization's rate limit of %d requests per %s.", quota, a.window))
		return
	}
	if r.Method != http.MethodPost || r.URL.Path != "/v1/messages" {
		anthropicError(w, http.StatusNotFound, "not_found_error", "Not found: "+r.Method+" "+r.URL.Path)
		return
	}
	var req struct {
		Model     string            `json:"model"`
		MaxTokens int               `json:"max_tokens"`
		Messages  []json.RawMessage `json:"messages"`
	}
	if err := json.NewDecoder(r.Body).Decode(&req); err != nil || req.Model == "" || req.MaxTokens <= 0 || len(req.Messages) == 0 {
		anthropicError(w, http.StatusBadRequest, "invalid_request_error", "want a JSON body with model, max_tokens and messages")
		return
	}
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(map[string]any{
		"id": fmt.Sprintf("msg_%06d", a.requests.Load()), "type": "message", "role": "assistant",
		"model":         req.Model,
		"content":       []map[string]any{{"type": "text", "text": reply}},
		"stop_reason":   "end_turn",
		"stop_sequence": nil,
		"usage":         map[string]any{"input_tokens": 12, "output_tokens": 6},
	})
}

// anthropicError writes an error the way the Anthropic API does.
func anthropicError(w http.ResponseWriter, code int, typ, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(map[string]any{
		"type":  "error",
		"error": map[string]any{"type": typ, "message": msg},
	})
}
