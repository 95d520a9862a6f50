package main

import (
	"encoding/json"
	"fmt"
	"net/http"
	"sync"

	"github.com/apipool-ng/apipool/examples/sdk/internal/demo"
)

// searchAPI is an in-process fake of a Google API that takes its key as
// the key query parameter, here the shape of the Custom Search JSON API
// (GET /customsearch/v1?key=...&q=...), with Google's error format
// ({"error": {"code", "message", "status", "details"}}):
//
//   - no key: 403 PERMISSION_DENIED;
//   - an unknown key: 400 INVALID_ARGUMENT, reason API_KEY_INVALID (Google
//     answers a bad key with 400, not 401);
//   - each key may make quota[key] queries a day; beyond that: 429
//     RESOURCE_EXHAUSTED, with no Retry-After (a daily quota says nothing
//     of when it refills to the second).
//
// Every request is recorded in Wire with the key the API read.
type searchAPI struct {
	quota map[string]int // queries per day, per key

	mu   sync.Mutex
	used map[string]int

	Wire demo.Wire
}

func newSearchAPI(quota map[string]int) *searchAPI {
	return &searchAPI{quota: quota, used: map[string]int{}}
}

// handler returns the fake API, recording into a.Wire.
func (a *searchAPI) handler() http.Handler {
	return a.Wire.Handler(http.HandlerFunc(a.serve), func(r *http.Request) string { return r.URL.Query().Get("key") })
}

// spend counts n queries against key's quota, as another client of the
// API using the same key would.
func (a *searchAPI) spend(key string, n int) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.used[key] += n
}

func (a *searchAPI) take(key string) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.used[key] >= a.quota[key] {
		return false
	}
	a.used[key]++
	return true
}

func (a *searchAPI) serve(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	key := q.Get("key")
	if key == "" {
		googleError(w, http.StatusForbidden, "PERMISSION_DENIED",
			"Method doesn't allow unregistered callers (callers without established identity). Please use API Key or other form of API consumer identity to call this API.", "")
		return
	}
	if _, known := a.quota[key]; !known {
		googleError(w, http.StatusBadRequest, "INVALID_ARGUMENT", "API key not valid. Please pass a valid API key.", "API_KEY_INVALID")
		return
	}
	if !a.take(key) {
		googleError(w, http.StatusTooManyRequests, "RESOURCE_EXHAUSTED",
			"Quota exceeded for quota metric 'Queries' and limit 'Queries per day' of service 'customsearch.googleapis.com'.", "RATE_LIMIT_EXCEEDED")
		return
	}
	if r.Method != http.MethodGet || r.URL.Path != "/customsearch/v1" {
		googleError(w, http.StatusNotFound, "NOT_FOUND", "Not found: "+r.URL.Path, "")
		return
	}
	query := q.Get("q")
	if query == "" {
		googleError(w, http.StatusBadRequest, "INVALID_ARGUMENT", "Missing required parameter q.", "")
		return
	}
	w.Header().Set("Content-Type", "application/json; charset=UTF-8")
	json.NewEncoder(w).Encode(map[string]any{
		"kind":    "customsearch#search",
		"queries": map[string]any{"request": []map[string]any{{"searchTerms": query, "count": 1}}},
		"items": []map[string]any{{
			"kind": "customsearch#result", "title": "Result for " + query,
			"link": fmt.Sprintf("https://example.com/%s", query),
		}},
	})
}

// googleError writes an error the way Google APIs do.
func googleError(w http.ResponseWriter, code int, status, msg, reason string) {
	e := map[string]any{"code": code, "message": msg, "status": status}
	if reason != "" {
		e["details"] = []map[string]any{{
			"@type":  "type.googleapis.com/google.rpc.ErrorInfo",
			"reason": reason, "domain": "googleapis.com",
		}}
	}
	w.Header().Set("Content-Type", "application/json; charset=UTF-8")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(map[string]any{"error": e})
}
