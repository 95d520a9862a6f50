// Package creds is the module's one credential scrubber: the functions
// through which the pool (package apipool) and the proxy (cmd/apipool)
// remove callers' credentials from a request's query, and the names they
// strip: Headers and Params, which both strip (the library's defaults,
// apipool.DefaultStripHeaders and DefaultStripParams, are copies of them),
// and ProxyHeaders, which the proxy strips besides.
package creds

import (
	"net/url"
	"strings"
)

// Headers and Params are the credential headers and query parameters an
// SDK may put on a request: the pool strips them by default, the proxy
// always. Read only: nothing may change them.
var (
	Headers = []string{"Authorization", "X-Api-Key", "Api-Key", "X-Goog-Api-Key"}
	Params  = []string{"api_key", "key", "apikey"}
)

// ProxyHeaders are the credential headers the proxy strips besides the
// library's list: Proxy-Authorization carries a caller's credential for
// the proxy itself. The library leaves it alone by default, since a
// program may set it for a forward proxy of its own.
var ProxyHeaders = []string{"Proxy-Authorization"}

// ProtocolHeader is the WebSocket subprotocol header, where browser
// clients, which cannot set Authorization, put a key: OpenAI's Realtime
// API takes "openai-insecure-api-key.<key>" there.
const ProtocolHeader = "Sec-Websocket-Protocol"

// protocolCredentialPrefixes are the subprotocols that carry a key.
var protocolCredentialPrefixes = []string{"openai-insecure-api-key."}

// FilterProtocols returns the values of a Sec-WebSocket-Protocol header
// without the subprotocols that carry a key, and whether it removed any.
// The values are the caller's: a changed list is a new slice.
func FilterProtocols(values []string) ([]string, bool) {
	holds := false
	for _, v := range values {
		if hasProtocolCredential(v) {
			holds = true
			break
		}
	}
	if !holds {
		return values, false
	}
	var out []string
	for _, v := range values {
		var keep []string
		for p := range strings.SplitSeq(v, ",") {
			if p = strings.TrimSpace(p); p != "" && !hasProtocolCredential(p) {
				keep = append(keep, p)
			}
		}
		if len(keep) > 0 {
			out = append(out, strings.Join(keep, ", "))
		}
	}
	return out, true
}

// StripProtocols removes from h's Sec-WebSocket-Protocol header the
// subprotocols that carry a key (FilterProtocols), and the header when
// none is left. It writes h: a copy's, never the caller's.
func StripProtocols(h map[string][]string) {
	v, ok := h[ProtocolHeader]
	if !ok {
		return
	}
	if v, changed := FilterProtocols(v); changed {
		if len(v) == 0 {
			delete(h, ProtocolHeader)
		} else {
			h[ProtocolHeader] = v
		}
	}
}

func hasProtocolCredential(v string) bool {
	lv := strings.ToLower(v)
	for _, p := range protocolCredentialPrefixes {
		if strings.Contains(lv, p) {
			return true
		}
	}
	return false
}

// FilterQuery removes from a raw query the parameters drop selects, given
// each parameter's name and value unescaped, keeping the others as they
// were (not re-encoded), in order. It allocates only when something goes.
// A parameter whose name or value does not unescape is kept: drop never
// sees it (an HTTP server, and net/http/httputil.ReverseProxy before a
// Rewrite, drop such parameters themselves).
func FilterQuery(raw string, drop func(name, value string) bool) (string, bool) {
	// A first pass finds whether anything goes, without allocating.
	first := -1
	rest := raw
	for i := 0; rest != "" || i == 0; i++ {
		part, next, _ := strings.Cut(rest, "&")
		if part != "" && dropPart(part, drop) {
			first = i
			break
		}
		rest = next
		if rest == "" {
			break
		}
	}
	if first < 0 {
		return raw, false
	}
	var b strings.Builder
	for part := range strings.SplitSeq(raw, "&") {
		if part == "" || dropPart(part, drop) {
			continue
		}
		if b.Len() > 0 {
			b.WriteByte('&')
		}
		b.WriteString(part)
	}
	return b.String(), true
}

func dropPart(part string, drop func(name, value string) bool) bool {
	name, value, _ := strings.Cut(part, "=")
	n, err1 := url.QueryUnescape(name)
	v, err2 := url.QueryUnescape(value)
	return err1 == nil && err2 == nil && drop(n, v)
}

// MayHoldParam is a cheap first look, without allocating: whether raw may
// hold a parameter whose name named selects. Names are compared as they
// are; one with an escape in it ('%' or '+') counts, and is left to
// FilterQuery, which unescapes it (an SDK may write api%5Fkey for
// api_key).
func MayHoldParam(raw string, named func(name string) bool) bool {
	for raw != "" {
		var part string
		part, raw, _ = strings.Cut(raw, "&")
		name, _, _ := strings.Cut(part, "=")
		if strings.IndexByte(name, '%') >= 0 || strings.IndexByte(name, '+') >= 0 || named(name) {
			return true
		}
	}
	return false
}
