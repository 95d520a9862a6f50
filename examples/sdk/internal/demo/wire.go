package demo

import (
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
)

// Received is one request as a fake API received it, and what it answered.
type Received struct {
	Method, Path string
	Header       http.Header // a copy of the request's headers
	Query        url.Values  // the request's query parameters
	Key          string      // the credential the API read ("" when none)
	Status       int         // the status code the API answered
}

// Wire records every request a fake API receives, for the tests' checks
// of what went over the wire. The zero value is ready; it is safe for
// concurrent use.
type Wire struct {
	mu  sync.Mutex
	got []Received
}

// Handler wraps a fake API's handler so that w records each request with
// the credential key(r) says the API read and the status it answered.
func (w *Wire) Handler(next http.Handler, key func(*http.Request) string) http.Handler {
	return http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		sw := &statusWriter{ResponseWriter: rw, status: http.StatusOK}
		next.ServeHTTP(sw, r)
		w.mu.Lock()
		defer w.mu.Unlock()
		w.got = append(w.got, Received{
			Method: r.Method, Path: r.URL.Path,
			Header: r.Header.Clone(), Query: r.URL.Query(),
			Key: key(r), Status: sw.status,
		})
	})
}

// All returns the requests received so far, in the order they finished.
func (w *Wire) All() []Received {
	w.mu.Lock()
	defer w.mu.Unlock()
	return slices.Clone(w.got)
}

// Len returns how many requests have been received so far. A request is
// counted before its answer reaches the client.
func (w *Wire) Len() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.got)
}

type statusWriter struct {
	http.ResponseWriter
	status int
	wrote  bool
}

func (s *statusWriter) WriteHeader(code int) {
	if !s.wrote {
		s.status, s.wrote = code, true
	}
	s.ResponseWriter.WriteHeader(code)
}

func (s *statusWriter) Write(b []byte) (int, error) {
	s.wrote = true
	return s.ResponseWriter.Write(b)
}

func (s *statusWriter) Flush() {
	if f, ok := s.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

// The places where an SDK or the pool may put a credential: the headers
// and query parameters the pool strips by default.
var (
	credentialHeaders = []string{"Authorization", "X-Api-Key", "Api-Key", "X-Goog-Api-Key"}
	credentialParams  = []string{"api_key", "key", "apikey"}
)

// CheckWire checks the requests a fake API received: that canary (the
// SDK's placeholder credential) appears nowhere in any request's headers
// or URL, and that every credential header or query parameter on the
// wire carries one of the pool's secrets (after a "Bearer " or "token "
// prefix). It returns how many requests carried a pool secret.
func CheckWire(t T, got []Received, canary string, secrets []string) (withKey int) {
	t.Helper()
	if len(got) == 0 {
		t.Errorf("the fake API received no request")
	}
	for i, r := range got {
		for name, vs := range r.Header {
			for _, v := range vs {
				if strings.Contains(v, canary) {
					t.Errorf("request %d (%s %s): the SDK's placeholder reached the API in header %s", i, r.Method, r.Path, name)
				}
			}
		}
		for name, vs := range r.Query {
			for _, v := range vs {
				if strings.Contains(v, canary) || strings.Contains(name, canary) {
					t.Errorf("request %d (%s %s): the SDK's placeholder reached the API in query parameter %s", i, r.Method, r.Path, name)
				}
			}
		}
		found := 0
		check := func(where, v string) {
			found++
			v = strings.TrimPrefix(strings.TrimPrefix(v, "Bearer "), "token ")
			if !slices.Contains(secrets, v) {
				t.Errorf("request %d (%s %s): %s carries a credential that is not a pool key", i, r.Method, r.Path, where)
			}
		}
		for _, h := range credentialHeaders {
			for _, v := range r.Header.Values(h) {
				check("header "+h, v)
			}
		}
		for _, p := range credentialParams {
			for _, v := range r.Query[p] {
				check("query parameter "+p, v)
			}
		}
		if found > 1 {
			t.Errorf("request %d (%s %s): %d credentials on the wire, want the pool's one", i, r.Method, r.Path, found)
		}
		if found == 1 {
			withKey++
		}
	}
	return withKey
}

// Rotations counts the requests of got that a rate limit moved to another
// key: a request answered with a status in limited, followed by the next
// one, answered with a success (2xx), sent with another credential.
func Rotations(got []Received, limited ...int) int {
	n := 0
	for i := 0; i+1 < len(got); i++ {
		next := got[i+1]
		if slices.Contains(limited, got[i].Status) && next.Status/100 == 2 && next.Key != got[i].Key {
			n++
		}
	}
	return n
}
