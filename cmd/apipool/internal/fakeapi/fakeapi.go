// Package fakeapi is an in-process fake of an OpenAI-style API for the
// apipool command's tests and benchmarks: chat completions, plain and
// streamed (server-sent events), and a model list, answering only requests
// that carry one of its keys, and rate-limiting the keys it is told to.
package fakeapi

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
)

// API is the fake. Create it with New and serve it with httptest. Its
// methods are safe for concurrent use.
type API struct {
	mu       sync.Mutex
	keys     map[string]bool // secret -> rate limited
	perKey   map[string]int  // secret -> requests answered 2xx
	limited  map[string]int  // secret -> requests answered 429
	requests []Seen
	gate     chan struct{}
	// Canceled receives the path of each request whose caller went away
	// while Hold held it.
	Canceled chan string
}

// Hold makes each streamed answer wait after its first event, and the
// /v1/slow endpoint wait before it answers, until the returned func is
// called (or the request is canceled).
func (a *API) Hold() (release func()) {
	ch := make(chan struct{})
	a.mu.Lock()
	a.gate = ch
	a.mu.Unlock()
	var once sync.Once
	return func() { once.Do(func() { close(ch) }) }
}

func (a *API) held() chan struct{} {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.gate
}

// Seen is what the fake saw of one request.
type Seen struct {
	Method, Path, RawQuery string
	Header                 http.Header
	BodyLen                int
}

// New returns a fake that accepts the given secrets (Authorization:
// Bearer) and answers 429 (Retry-After: 60) to those in limited.
func New(secrets []string, limited ...string) *API {
	a := &API{keys: map[string]bool{}, perKey: map[string]int{}, limited: map[string]int{}, Canceled: make(chan string, 16)}
	for _, s := range secrets {
		a.keys[s] = false
	}
	for _, s := range limited {
		a.keys[s] = true
	}
	return a
}

// Served returns, per secret, how many requests it answered with 2xx.
func (a *API) Served() map[string]int {
	a.mu.Lock()
	defer a.mu.Unlock()
	out := map[string]int{}
	for k, v := range a.perKey {
		out[k] = v
	}
	return out
}

// Limited returns, per secret, how many requests it answered with 429.
func (a *API) Limited() map[string]int {
	a.mu.Lock()
	defer a.mu.Unlock()
	out := map[string]int{}
	for k, v := range a.limited {
		out[k] = v
	}
	return out
}

// Requests returns every request the fake saw.
func (a *API) Requests() []Seen {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]Seen(nil), a.requests...)
}

// SawText reports whether s appeared in any header or query of any
// request the fake saw.
func (a *API) SawText(s string) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, r := range a.requests {
		if strings.Contains(r.RawQuery, s) {
			return true
		}
		for _, vs := range r.Header {
			for _, v := range vs {
				if strings.Contains(v, s) {
					return true
				}
			}
		}
	}
	return false
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(v)
}

// ServeHTTP implements http.Handler.
func (a *API) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	a.mu.Lock()
	a.requests = append(a.requests, Seen{r.Method, r.URL.Path, r.URL.RawQuery, r.Header.Clone(), len(body)})
	secret := strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")
	limited, known := a.keys[secret]
	switch {
	case !known:
	case limited:
		a.limited[secret]++
	default:
		a.perKey[secret]++
	}
	a.mu.Unlock()
	if !known {
		writeJSON(w, http.StatusUnauthorized, map[string]any{"error": map[string]string{"message": "Incorrect API key provided", "type": "invalid_request_error", "code": "invalid_api_key"}})
		return
	}
	if limited {
		w.Header().Set("Retry-After", "60")
		writeJSON(w, http.StatusTooManyRequests, map[string]any{"error": map[string]string{"message": "Rate limit reached", "type": "requests", "code": "rate_limit_exceeded"}})
		return
	}
	w.Header().Set("X-Upstream-Key-Len", fmt.Sprint(len(secret)))
	switch {
	case r.URL.Path == "/v1/models":
		writeJSON(w, http.StatusOK, map[string]any{"object": "list", "data": []any{map[string]any{"id": "fake-1", "object": "model", "created": 1700000000, "owned_by": "fake"}}})
	case r.URL.Path == "/v1/chat/completions" && r.Method == http.MethodPost:
		var req struct {
			Model         string `json:"model"`
			Stream        bool   `json:"stream"`
			StreamOptions struct {
				IncludeUsage bool `json:"include_usage"`
			} `json:"stream_options"`
		}
		if err := json.Unmarshal(body, &req); err != nil {
			writeJSON(w, http.StatusBadRequest, map[string]any{"error": map[string]string{"message": "bad JSON", "type": "invalid_request_error"}})
			return
		}
		if req.Stream {
			a.stream(w, r, req.Model, req.StreamOptions.IncludeUsage)
			return
		}
		writeJSON(w, http.StatusOK, completion(req.Model, "Hello from the fake API."))
	case r.URL.Path == "/v1/slow":
		if g := a.held(); g != nil {
			select {
			case <-g:
			case <-r.Context().Done():
				a.Canceled <- r.URL.Path
				return
			}
		}
		writeJSON(w, http.StatusOK, map[string]any{"ok": true, "bytes": len(body)})
	case r.URL.Path == "/v1/echo":
		w.Header().Set("Content-Type", "application/octet-stream")
		w.Write(body)
	default:
		writeJSON(w, http.StatusOK, map[string]any{"ok": true, "path": r.URL.Path, "bytes": len(body)})
	}
}

func completion(model, text string) map[string]any {
	return map[string]any{
		"id": "chatcmpl-fake", "object": "chat.completion", "created": 1700000000, "model": model,
		"choices": []any{map[string]any{"index": 0, "finish_reason": "stop",
			"message": map[string]any{"role": "assistant", "content": text}}},
		"usage": map[string]any{"prompt_tokens": PromptTokens, "completion_tokens": CompletionTokens, "total_tokens": PromptTokens + CompletionTokens},
	}
}

// Words is the streamed answer, one event per word.
var Words = []string{"Hello", " from", " the", " fake", " stream."}

// The usage the answers state: a completion's, and a stream's (asked for
// with stream_options.include_usage, as OpenAI's API does).
const (
	PromptTokens     = 3
	CompletionTokens = 5
)

// stream answers a streamed chat completion, one event per word. With
// includeUsage, every chunk has "usage": null and a last chunk, with no
// choices, states the usage, as OpenAI's API does.
func (a *API) stream(w http.ResponseWriter, r *http.Request, model string, includeUsage bool) {
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-cache")
	rc := http.NewResponseController(w)
	gate := a.held()
	for i, word := range Words {
		chunk := map[string]any{
			"id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": 1700000000, "model": model,
			"choices": []any{map[string]any{"index": 0, "delta": map[string]any{"content": word}, "finish_reason": nil}},
		}
		if i == 0 {
			chunk["choices"].([]any)[0].(map[string]any)["delta"].(map[string]any)["role"] = "assistant"
		}
		if i == len(Words)-1 {
			chunk["choices"].([]any)[0].(map[string]any)["finish_reason"] = "stop"
		}
		if includeUsage {
			chunk["usage"] = nil
		}
		b, _ := json.Marshal(chunk)
		fmt.Fprintf(w, "data: %s\n\n", b)
		rc.Flush()
		if i == 0 && gate != nil {
			select {
			case <-gate:
			case <-r.Context().Done():
				a.Canceled <- r.URL.Path
				return
			}
		}
	}
	if includeUsage {
		b, _ := json.Marshal(map[string]any{
			"id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": 1700000000, "model": model, "choices": []any{},
			"usage": map[string]any{"prompt_tokens": PromptTokens, "completion_tokens": CompletionTokens, "total_tokens": PromptTokens + CompletionTokens},
		})
		fmt.Fprintf(w, "data: %s\n\n", b)
	}
	fmt.Fprint(w, "data: [DONE]\n\n")
	rc.Flush()
}
