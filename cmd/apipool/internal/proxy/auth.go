package proxy

import (
	"crypto/sha256"
	"crypto/subtle"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"golang.org/x/time/rate"

	"github.com/apipool-ng/apipool/cmd/apipool/internal/config"
	"github.com/apipool-ng/apipool/internal/creds"
)

// token is a configured client token with its limiter.
type token struct {
	config.Token
	limiter *rate.Limiter // nil: no rate limit
	client  any           // Name, as the requests' contexts answer ctxkey.Client (boxed once)
}

// tokenSet is the tokens in force; Reload replaces it whole.
type tokenSet struct {
	tokens []*token
}

func newTokenSet(cfg []config.Token, old *tokenSet) *tokenSet {
	ts := &tokenSet{}
	for _, c := range cfg {
		t := &token{Token: c, client: c.Name}
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
	// A token of up to 128 bytes is hashed from the stack, with no
	// allocation.
	var buf [128]byte
	h := sha256.Sum256(append(buf[:0], presented...))
	var found *token
	for _, t := range ts.tokens {
		if subtle.ConstantTimeCompare(h[:], t.Hash[:]) == 1 {
			found = t
		}
	}
	return found
}

// The credentials a caller may present are the library's list,
// creds.Headers and creds.Params (creds.Headers and
// DefaultStripParams are copies of them): the proxy takes its token from
// them, and strips them, with creds.ProxyHeaders, through the library's
// own scrubber, so that what is stripped is changed in one place.

// credential returns the credential the caller presented, and whether
// there was one: Authorization (a bearer token), then the other headers
// and the query parameters of the library's list, in its order.
func credential(r *http.Request) (string, bool) {
	if h := r.Header.Get("Authorization"); h != "" {
		if len(h) > 7 && strings.EqualFold(h[:7], "bearer ") {
			return strings.TrimSpace(h[7:]), true
		}
		return "", true // a scheme the proxy does not take
	}
	for _, name := range creds.Headers {
		if v := r.Header.Get(name); v != "" {
			return v, true
		}
	}
	if r.URL.RawQuery != "" && creds.MayHoldParam(r.URL.RawQuery, isCredentialName) {
		q := r.URL.Query()
		for _, p := range creds.Params {
			if v := q.Get(p); v != "" {
				return v, true
			}
		}
	}
	return "", false
}

// isCredentialName reports whether a query parameter carries a caller's
// credential.
func isCredentialName(name string) bool { return slices.Contains(creds.Params, name) }

func isCredentialParam(name, _ string) bool { return isCredentialName(name) }

// stripCredentials removes the caller's credential headers and query
// parameters from the outgoing request. The other parameters are kept as
// they were, in order (ReverseProxy has already dropped those that do not
// parse).
func stripCredentials(out *http.Request) {
	for _, h := range creds.Headers {
		out.Header.Del(h)
	}
	for _, h := range creds.ProxyHeaders {
		out.Header.Del(h)
	}
	creds.StripProtocols(out.Header)
	if q, changed := creds.FilterQuery(out.URL.RawQuery, isCredentialParam); changed {
		out.URL.RawQuery = q
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
