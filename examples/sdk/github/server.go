package main

import (
	"encoding/json"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/apipool-ng/apipool/examples/sdk/internal/demo"
)

// restAPI is an in-process fake of the GitHub REST API's primary rate
// limit, as GitHub documents and sends it:
//
//   - a token travels as "Authorization: Bearer <token>" or
//     "Authorization: token <token>"; none is 401 "Requires
//     authentication", an unknown one 401 "Bad credentials";
//   - each token may make limit[token] requests in an hour-long window
//     that starts at its first request; every answer carries
//     x-ratelimit-limit, -remaining, -used, -reset (Unix seconds) and
//     -resource: core;
//   - the token's last successful request is answered 200 with
//     x-ratelimit-remaining: 0, and every request after it until the reset
//     403 "API rate limit exceeded" with x-ratelimit-remaining: 0;
//   - GET /repos/{owner}/{repo} answers the repository, except
//     acme/secret, a plain 403 (a permission the token lacks, with no
//     rate-limit evidence).
//
// Every request is recorded in Wire with the token the API read.
type restAPI struct {
	limit map[string]int // per token

	mu     sync.Mutex
	window map[string]*tokenWindow

	Wire demo.Wire
}

type tokenWindow struct {
	reset time.Time
	used  int
}

func newRESTAPI(limit map[string]int) *restAPI {
	return &restAPI{limit: limit, window: map[string]*tokenWindow{}}
}

// handler returns the fake API, recording into a.Wire.
func (a *restAPI) handler() http.Handler {
	return a.Wire.Handler(http.HandlerFunc(a.serve), token)
}

// token is the token the API reads from r's Authorization header.
func token(r *http.Request) string {
	auth := r.Header.Get("Authorization")
	if t, ok := strings.CutPrefix(auth, "Bearer "); ok {
		return t
	}
	if t, ok := strings.CutPrefix(auth, "token "); ok {
		return t
	}
	return auth
}

// spend counts n requests against tok's window, as another client of the
// API using the same token would.
func (a *restAPI) spend(tok string, n int) {
	for range n {
		a.take(tok)
	}
}

// left returns the requests each token has left in its window, by token.
func (a *restAPI) left() map[string]int {
	a.mu.Lock()
	defer a.mu.Unlock()
	m := map[string]int{}
	for tok, limit := range a.limit {
		m[tok] = limit
		if w := a.window[tok]; w != nil && time.Now().Before(w.reset) {
			m[tok] = limit - w.used
		}
	}
	return m
}

// take counts a request against tok's window: it returns the window's
// state after it, and false when the window was used up already.
func (a *restAPI) take(tok string) (used int, reset time.Time, ok bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	now := time.Now()
	w := a.window[tok]
	if w == nil || !now.Before(w.reset) {
		w = &tokenWindow{reset: now.Add(time.Hour)}
		a.window[tok] = w
	}
	if w.used >= a.limit[tok] {
		return w.used, w.reset, false
	}
	w.used++
	return w.used, w.reset, true
}

func (a *restAPI) serve(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("X-Github-Api-Version-Selected", "2022-11-28")
	tok := token(r)
	if tok == "" {
		githubError(w, http.StatusUnauthorized, "Requires authentication")
		return
	}
	limit, known := a.limit[tok]
	if !known {
		githubError(w, http.StatusUnauthorized, "Bad credentials")
		return
	}
	used, reset, ok := a.take(tok)
	h := w.Header()
	h.Set("X-Ratelimit-Limit", strconv.Itoa(limit))
	h.Set("X-Ratelimit-Remaining", strconv.Itoa(limit-used))
	h.Set("X-Ratelimit-Used", strconv.Itoa(used))
	h.Set("X-Ratelimit-Reset", strconv.FormatInt(reset.Unix(), 10))
	h.Set("X-Ratelimit-Resource", "core")
	if !ok {
		githubError(w, http.StatusForbidden, "API rate limit exceeded for user ID 1. If you reach out to GitHub Support for help, please include the request ID.")
		return
	}
	owner, repo, found := strings.Cut(strings.TrimPrefix(r.URL.Path, "/repos/"), "/")
	switch {
	case r.Method != http.MethodGet || !strings.HasPrefix(r.URL.Path, "/repos/") || !found || strings.Contains(repo, "/"):
		githubError(w, http.StatusNotFound, "Not Found")
	case owner == "acme" && repo == "secret":
		githubError(w, http.StatusForbidden, "Resource not accessible by personal access token")
	default:
		w.Header().Set("Content-Type", "application/json; charset=utf-8")
		json.NewEncoder(w).Encode(map[string]any{
			"id": 1296269, "name": repo, "full_name": owner + "/" + repo,
			"owner":          map[string]any{"login": owner, "id": 1, "type": "Organization"},
			"private":        false,
			"default_branch": "main",
		})
	}
}

// githubError writes an error the way the GitHub REST API does.
func githubError(w http.ResponseWriter, code int, msg string) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(map[string]any{
		"message":           msg,
		"documentation_url": "https://docs.github.com/rest",
		"status":            strconv.Itoa(code),
	})
}
