package proxy

import (
	"crypto/sha256"
	"crypto/subtle"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/apipool-ng/apipool/cmd/apipool/internal/config"
	"golang.org/x/time/rate"
)

// credentialHeaders are the headers that carry a caller's credential. They
// never go upstream.
var credentialHeaders = []string{"Authorization", "Proxy-Authorization", "X-Api-Key", "Api-Key", "X-Goog-Api-Key"}

// credentialParams are the query parameters that carry a caller's
// credential. They never go upstream.
var credentialParams = []string{"key", "api_key", "apikey"}

// token is a configured client token with its limiter.
type token struct {
	config.Token
	limiter *rate.Limiter // nil: no rate limit
}

// tokenSet is the tokens in force; Reload replaces it whole.
type tokenSet struct {
	tokens []*token
}

func newTokenSet(cfg []config.Token, old *tokenSet) *tokenSet {
	ts := &tokenSet{}
	for _, c := range cfg {
		t := &token{Token: c}
		if c.Rate > 0 {
			// Keep a token's limiter across reloads that leave its
			// limits alone, so a reload is no way round them.
			if o := old.find(c.Name); o != nil && o.limiter != nil && o.Rate == c.Rate && o.Burst == c.Burst {
				t.limiter = o.limiter
			} else {
				t.limiter = rate.NewLimiter(rate.Limit(c.Rate), c.Burst)
			}
		}
		ts.tokens = append(ts.tokens, t)
	}
	return ts
}

func (ts *tokenSet) find(name string) *token {
	if ts == nil {
		return nil
	}
	for _, t := range ts.tokens {
		if t.Name == name {
			return t
		}
	}
	return nil
}

// match returns the token whose hash is the hash of presented, comparing
// every configured hash in constant time.
func (ts *tokenSet) match(presented string) *token {
	h := sha256.Sum256([]byte(presented))
	var found *token
	for _, t := range ts.tokens {
		if subtle.ConstantTimeCompare(h[:], t.Hash[:]) == 1 {
			found = t
		}
	}
	return found
}

// credential returns the credential the caller presented, and whether
// there was one.
func credential(r *http.Request) (string, bool) {
	if h := r.Header.Get("Authorization"); h != "" {
		if len(h) > 7 && strings.EqualFold(h[:7], "bearer ") {
			return strings.TrimSpace(h[7:]), true
		}
		return "", true // a scheme the proxy does not take
	}
	for _, name := range credentialHeaders[2:] {
		if v := r.Header.Get(name); v != "" {
			return v, true
		}
	}
	if r.URL.RawQuery != "" && mayHoldParam(r.URL.RawQuery) {
		q := r.URL.Query()
		for _, p := range credentialParams {
			if v := q.Get(p); v != "" {
				return v, true
			}
		}
	}
	return "", false
}

func mayHoldParam(rawQuery string) bool {
	return strings.Contains(rawQuery, "key")
}

// stripCredentials removes the caller's credential headers and query
// parameters from the outgoing request.
func stripCredentials(out *http.Request) {
	for _, h := range credentialHeaders {
		out.Header.Del(h)
	}
	if out.URL.RawQuery == "" || !mayHoldParam(out.URL.RawQuery) {
		return
	}
	q, err := url.ParseQuery(out.URL.RawQuery)
	if err != nil {
		// ReverseProxy drops what it cannot parse; do the same with
		// the parts that parse, so no credential slips through.
		q = url.Values{}
		for _, part := range strings.Split(out.URL.RawQuery, "&") {
			if k, v, ok := strings.Cut(part, "="); ok {
				if ku, err1 := url.QueryUnescape(k); err1 == nil {
					if vu, err2 := url.QueryUnescape(v); err2 == nil {
						q.Add(ku, vu)
					}
				}
			}
		}
	}
	changed := false
	for _, p := range credentialParams {
		if _, ok := q[p]; ok {
			q.Del(p)
			changed = true
		}
	}
	if changed || err != nil {
		out.URL.RawQuery = q.Encode()
	}
}

// basicAuth guards h with HTTP basic authentication against users whose
// passwords are given as SHA-256 hashes.
func basicAuth(users []config.User, realm string, h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		name, pass, ok := r.BasicAuth()
		if ok {
			sum := sha256.Sum256([]byte(pass))
			good := 0
			for _, u := range users {
				nameOK := subtle.ConstantTimeCompare([]byte(name), []byte(u.Name))
				passOK := subtle.ConstantTimeCompare(sum[:], u.Hash[:])
				good |= nameOK & passOK
			}
			if good == 1 {
				h.ServeHTTP(w, r)
				return
			}
		}
		w.Header().Set("WWW-Authenticate", `Basic realm="`+realm+`", charset="UTF-8"`)
		http.Error(w, "authentication required", http.StatusUnauthorized)
	})
}

// retryAfter is the whole seconds to wait for a limiter, at least 1.
func retryAfter(d time.Duration) string {
	s := int64((d + time.Second - 1) / time.Second)
	if s < 1 {
		s = 1
	}
	return strconv.FormatInt(s, 10)
}
