package apipool

import (
	"net/http"
	"net/url"
	"reflect"
	"slices"
	"strings"

	"github.com/apipool-ng/apipool/internal/creds"
)

// DefaultStripHeaders returns the credential headers an SDK may put on a
// request, which the pool removes before it applies its own key unless
// WithStripCredentials says otherwise: Authorization, X-Api-Key, Api-Key
// and X-Goog-Api-Key. A request the pool sends never carries a credential
// the pool did not put there. It is the module's one list: the apipool
// proxy strips the same from its callers' requests (and
// Proxy-Authorization). The slice is a copy, the caller's to change (to
// extend the defaults in WithStripCredentials, say).
func DefaultStripHeaders() []string { return slices.Clone(creds.Headers) }

// DefaultStripParams returns the credential query parameters the pool
// removes by default, as DefaultStripHeaders does the headers: api_key,
// key and apikey. The slice is a copy.
func DefaultStripParams() []string { return slices.Clone(creds.Params) }

// keyAllowed reports whether a key may be sent to req's host.
func (t *Transport) keyAllowed(req *http.Request) bool {
	if t.cfg.hosts != nil {
		return t.cfg.hosts[strings.ToLower(req.URL.Host)] || t.cfg.hosts[strings.ToLower(req.URL.Hostname())]
	}
	if req.Response == nil {
		return true
	}
	// A redirect: the key goes only to the host of the request the
	// redirects started from.
	root := req
	for i := 0; i < 100 && root.Response != nil && root.Response.Request != nil; i++ {
		root = root.Response.Request
	}
	return root.URL != nil && strings.EqualFold(root.URL.Host, req.URL.Host)
}

// passThrough sends a request the pool does not key, as it is but for any
// key of the pool's that rides in it: the pool's query parameter, the
// credential parameters (and, on a redirect hop, headers) of
// WithStripCredentials, and any query value that is one of the pool's
// secrets. The caller gets its own request back in resp.Request.
func (t *Transport) passThrough(req *http.Request) (*http.Response, error) {
	r := req
	if u, changed := t.scrubForeignURL(req.URL); changed {
		r = req.Clone(req.Context())
		r.URL = u
	}
	if req.Response != nil {
		for _, name := range t.cfg.stripHeaders {
			if _, ok := r.Header[name]; ok {
				if r == req {
					r = req.Clone(req.Context())
				}
				delete(r.Header, name)
			}
		}
	}
	resp, err := t.base.RoundTrip(r)
	if err != nil {
		if resp != nil {
			resp.Body.Close()
		}
		return nil, t.redactAll(err)
	}
	if resp != nil && r != req {
		resp.Request = req
	}
	return resp, nil
}

// scrubForeignURL returns u without the pool's credentials, and whether
// it changed.
func (t *Transport) scrubForeignURL(u *url.URL) (*url.URL, bool) {
	if u.RawQuery == "" {
		return u, false
	}
	secrets := t.keys.Load().secrets
	drop := func(name, value string) bool {
		_, isSecret := secrets[value]
		return isSecret || t.isCredentialParam(name, value)
	}
	q, changed := filterQuery(u.RawQuery, drop)
	if !changed {
		return u, false
	}
	nu := *u
	nu.RawQuery = q
	return &nu, true
}

// isStripHeader reports whether a header is one the pool removes before
// applying its key.
func (t *Transport) isStripHeader(name string) bool {
	for _, s := range t.cfg.stripHeaders {
		if name == s {
			return true
		}
	}
	return false
}

// isCredentialParam reports whether a query parameter is one the pool
// removes before applying its key: a filterQuery drop function.
func (t *Transport) isCredentialParam(name, _ string) bool { return t.isCredentialName(name) }

// isCredentialName reports whether a query parameter name is one the pool
// removes before applying its key.
func (t *Transport) isCredentialName(name string) bool {
	if t.cfg.inject == injectQuery && name == t.cfg.injectName {
		return true
	}
	for _, p := range t.cfg.stripParams {
		if name == p {
			return true
		}
	}
	return false
}

// hasCredentialParam is a cheap first look: whether u's query may hold a
// parameter that isCredentialParam removes (see creds.MayHoldParam).
func (t *Transport) hasCredentialParam(u *url.URL) bool {
	return creds.MayHoldParam(u.RawQuery, t.isCredentialName)
}

// filterQuery removes from a raw query the parameters drop selects,
// keeping the others as they were, in order: the module's one scrubber,
// creds.FilterQuery, which the proxy uses too.
func filterQuery(raw string, drop func(name, value string) bool) (string, bool) {
	return creds.FilterQuery(raw, drop)
}

func setQueryParam(u *url.URL, name, value string) {
	esc := url.QueryEscape(name) + "=" + url.QueryEscape(value)
	if u.RawQuery == "" {
		u.RawQuery = esc
		return
	}
	u.RawQuery += "&" + esc
}

// keyHeader returns the header name for header injection.
func (t *Transport) keyHeader() string {
	if t.cfg.inject == injectBearer {
		return "Authorization"
	}
	return t.cfg.injectName
}

// callerRequest returns what the caller gets in resp.Request: its own
// request, or, when that request is a redirect hop whose Location held one
// of the pool's keys, a copy without it. Only a hop can hold one: the
// pool never writes to the caller's request.
func (t *Transport) callerRequest(req *http.Request) *http.Request {
	if req.Response == nil {
		return req
	}
	if u, changed := t.scrubForeignURL(req.URL); changed {
		r := req.WithContext(req.Context())
		r.URL = u
		return r
	}
	return req
}

// scrubResponse removes key k from what a response hands back: a
// redirect's Location that echoes the key (the client would follow it,
// and show it in errors and resp.Request).
func (t *Transport) scrubResponse(resp *http.Response, k *keyState) {
	if resp.StatusCode < 300 || resp.StatusCode > 399 || k == nil {
		return
	}
	loc := resp.Header.Get("Location")
	if loc == "" {
		return
	}
	u, err := url.Parse(loc)
	if err != nil {
		if strings.Contains(loc, k.secret) || strings.Contains(loc, url.QueryEscape(k.secret)) {
			resp.Header.Del("Location")
		}
		return
	}
	q, changed := filterQuery(u.RawQuery, func(name, value string) bool {
		return value == k.secret || t.isCredentialParam(name, value)
	})
	if !changed {
		return
	}
	u.RawQuery = q
	h := resp.Header.Clone()
	h.Set("Location", u.String())
	resp.Header = h
}

// redactAll removes every key of the pool from err (see redact).
func (t *Transport) redactAll(err error) error {
	if err == nil {
		return nil
	}
	ks := t.keys.Load()
	list := make([]string, 0, len(ks.secrets))
	for s := range ks.secrets {
		list = append(list, s)
	}
	return redact(err, list...)
}

// redact returns err when neither its text nor any of its fields holds one
// of the secrets (as they are or URL-escaped); otherwise an error that
// keeps only scrubbed text and a scrubbed chain of causes, so that no
// secret is reachable from it, by errors.As or by reflection. A *url.Error
// stays a *url.Error, with its URL scrubbed. errors.Is still finds the
// causes that held no secret (context.Canceled, io.ErrUnexpectedEOF...),
// and net.Error's Timeout answer is kept.
func redact(err error, secrets ...string) error {
	if err == nil {
		return nil
	}
	forms := secretForms(secrets)
	if len(forms) == 0 {
		return err
	}
	return redactForms(err, forms, 0)
}

// secretForms returns the forms a secret of secrets may take in a text:
// as it is, URL-escaped as a query and as a path.
func secretForms(secrets []string) []string {
	forms := make([]string, 0, 2*len(secrets))
	for _, s := range secrets {
		if s == "" {
			continue
		}
		forms = append(forms, s)
		if e := url.QueryEscape(s); e != s {
			forms = append(forms, e)
		}
		if e := url.PathEscape(s); e != s {
			forms = append(forms, e)
		}
	}
	return forms
}

// scrubForms replaces every one of forms in s with "[REDACTED]".
func scrubForms(s string, forms []string) string {
	for _, f := range forms {
		s = strings.ReplaceAll(s, f, redacted)
	}
	return s
}

func redactForms(err error, forms []string, depth int) error {
	if err == nil {
		return nil
	}
	if !holdsAny(reflect.ValueOf(err), forms, 0) {
		return err
	}
	scrub := func(s string) string { return scrubForms(s, forms) }
	if depth > 16 {
		return &redactedError{msg: scrub(err.Error())}
	}
	if ue, ok := err.(*url.Error); ok {
		return &url.Error{Op: ue.Op, URL: scrub(ue.URL), Err: redactForms(ue.Err, forms, depth+1)}
	}
	e := &redactedError{msg: scrub(err.Error()), cause: redactForms(unwrapOne(err), forms, depth+1)}
	if te, ok := err.(interface{ Timeout() bool }); ok {
		e.timeout = te.Timeout()
	}
	if te, ok := err.(interface{ Temporary() bool }); ok {
		e.temporary = te.Temporary()
	}
	return e
}

func unwrapOne(err error) error {
	switch u := err.(type) {
	case interface{ Unwrap() error }:
		return u.Unwrap()
	case interface{ Unwrap() []error }:
		if l := u.Unwrap(); len(l) > 0 {
			return l[0]
		}
	}
	return nil
}

// holdsAny reports whether v, or anything reachable from it, is a string
// holding one of forms.
func holdsAny(v reflect.Value, forms []string, depth int) bool {
	if depth > 12 || !v.IsValid() {
		return false
	}
	switch v.Kind() {
	case reflect.String:
		s := v.String()
		for _, f := range forms {
			if strings.Contains(s, f) {
				return true
			}
		}
	case reflect.Pointer, reflect.Interface:
		return !v.IsNil() && holdsAny(v.Elem(), forms, depth+1)
	case reflect.Struct:
		for i := 0; i < v.NumField(); i++ {
			if holdsAny(v.Field(i), forms, depth+1) {
				return true
			}
		}
	case reflect.Slice, reflect.Array:
		if v.Kind() == reflect.Slice && v.Type().Elem().Kind() == reflect.Uint8 {
			b := v.Bytes()
			for _, f := range forms {
				if strings.Contains(string(b), f) {
					return true
				}
			}
			return false
		}
		for i := 0; i < v.Len() && i < 64; i++ {
			if holdsAny(v.Index(i), forms, depth+1) {
				return true
			}
		}
	case reflect.Map:
		it := v.MapRange()
		for n := 0; it.Next() && n < 64; n++ {
			if holdsAny(it.Key(), forms, depth+1) || holdsAny(it.Value(), forms, depth+1) {
				return true
			}
		}
	}
	return false
}

// redactedError is an error with a secret removed from its text and from
// its chain of causes (see redact).
type redactedError struct {
	msg                string
	cause              error
	timeout, temporary bool
}

func (e *redactedError) Error() string   { return e.msg }
func (e *redactedError) Unwrap() error   { return e.cause }
func (e *redactedError) Timeout() bool   { return e.timeout }
func (e *redactedError) Temporary() bool { return e.temporary }
