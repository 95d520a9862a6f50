package proxy

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/propagation"

	"github.com/apipool-ng/apipool"
	"github.com/apipool-ng/apipool/cmd/apipool/internal/config"
	"github.com/apipool-ng/apipool/internal/ctxkey"
)

// ctxKey carries per-request data from ServeHTTP to the reverse proxy's
// hooks.
type ctxKey struct{}

// A reqInfo is the request's context too (the caller's, with the
// upstream's deadline), which answers ctxKey with itself and the pool's
// keys (ctxkey) with the token's name and no operation, and it holds
// the request's body reader and response writer: one allocation for
// them all.
type reqInfo struct {
	context.Context
	id       string
	upstream *upstream
	token    string
	client   any            // the token's name, which the context answers for ctxkey.Client (the events' Client)
	tooLarge atomic.Bool    // the body went past the token's limit
	resp     *http.Response // the upstream's answer, once modifyResponse has it
	// handshake, for an upgrade request, cancels the context when the
	// upstream's timeout passes before the 101 answer (switchProtocols).
	handshake *time.Timer

	rc     http.ResponseController
	body   bodyReader
	sw     statusWriter
	idOut  [1]string // the X-Request-Id values set on the upstream request
	idResp [1]string // and on the answer
}

func (ri *reqInfo) Value(k any) any {
	switch k.(type) {
	case ctxKey:
		return ri
	case ctxkey.Client:
		return ri.client // as apipool.ContextWithClient's would
	case ctxkey.Operation:
		// The proxy names no operation: answered here, the pool's
		// lookup of it does not walk the server's contexts to their
		// root.
		return nil
	}
	return ri.Context.Value(k)
}

func info(ctx context.Context) *reqInfo {
	ri, _ := ctx.Value(ctxKey{}).(*reqInfo)
	return ri
}

// handlers builds the main handler and, when admin.listen is set, the
// admin handler.
func (s *Server) handlers(cfg *config.Config, dash func(string, *apipool.Transport) http.Handler) (main, admin http.Handler) {
	mux := http.NewServeMux()
	// The segments of each admin path: a request path that lacks one of
	// them cannot match it, even once cleaned (cleaning removes whole
	// segments and slashes, never joins the bytes of two segments).
	var adminSegs [][]string
	addAdmin := func(path string) {
		adminSegs = append(adminSegs, strings.FieldsFunc(path, func(r rune) bool { return r == '/' }))
	}
	addAdmin("/healthz")
	addAdmin("/readyz")
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		if !s.ready.Load() {
			w.WriteHeader(http.StatusServiceUnavailable)
			w.Write([]byte("shutting down\n"))
			return
		}
		// A stats store that is down does not take the proxy out of
		// service: still 200, the body says what is degraded.
		if d := s.storeDegraded(); d != "" {
			w.Write([]byte("ready, degraded: " + d + "\n"))
			return
		}
		w.Write([]byte("ready\n"))
	})
	if s.tel.metrics != nil {
		mux.Handle("GET /metrics", s.tel.metrics)
		addAdmin("/metrics")
	}
	if cfg.Dashboard.Enabled && dash != nil {
		base := strings.TrimSuffix(cfg.Dashboard.Path, "/")
		for _, up := range s.upstreams {
			p := base + "/" + up.cfg.Name
			h := basicAuth(cfg.Dashboard.Users, "apipool dashboard", http.StripPrefix(p, dash(up.cfg.Name, up.pool)))
			mux.Handle(p+"/", h)
			mux.Handle(p, http.RedirectHandler(p+"/", http.StatusFound))
			addAdmin(p)
		}
	}
	if len(cfg.AdminUsers) > 0 {
		mux.Handle(AdminAPIPath, s.adminAPI(cfg.AdminUsers)) // admin.go
		addAdmin(AdminAPIPath)
	}
	if cfg.AdminListen != "" {
		return http.HandlerFunc(s.serveProxy), guardRelay(mux)
	}
	adminPaths := mux
	mayBeAdmin := func(path string) bool {
	next:
		for _, segs := range adminSegs {
			for _, seg := range segs {
				if !strings.Contains(path, seg) {
					continue next
				}
			}
			return true
		}
		return false
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// ServeMux.Handler costs allocations: ask it only about paths
		// that may be its.
		if !mayBeAdmin(r.URL.Path) {
			s.serveProxy(w, r)
			return
		}
		if _, pattern := adminPaths.Handler(r); pattern != "" {
			guardRelay(adminPaths).ServeHTTP(w, r)
			return
		}
		s.serveProxy(w, r)
	}), nil
}

// relayRefusal says why a request may not be relayed, or "".
func relayRefusal(r *http.Request) string {
	switch {
	case r.Method == http.MethodConnect:
		return "CONNECT is not served: this is not an open proxy"
	case !strings.HasPrefix(r.RequestURI, "/"):
		return "absolute-form request targets are not served: this is not an open proxy"
	case hasDotSegment(r.URL.Path) || hasDotSegment(r.URL.RawPath):
		return "paths with . or .. segments are refused"
	}
	return ""
}

func guardRelay(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if why := relayRefusal(r); why != "" {
			writeError(w, http.StatusBadRequest, "invalid_request", why)
			return
		}
		h.ServeHTTP(w, r)
	})
}

func hasDotSegment(p string) bool {
	if p == "" || !strings.ContainsAny(p, ".%") {
		return false // every dot segment has a '.' or a "%2e"
	}
	p = strings.ReplaceAll(p, "\\", "/")
	for seg := range strings.SplitSeq(p, "/") {
		if seg == "." || seg == ".." || strings.EqualFold(seg, "%2e") || strings.EqualFold(seg, "%2e%2e") || strings.EqualFold(seg, ".%2e") || strings.EqualFold(seg, "%2e.") {
			return true
		}
	}
	return false
}

// route returns the upstream a request is for, or nil.
func (s *Server) route(r *http.Request) *upstream {
	host := strings.ToLower(r.Host)
	if h, _, ok := strings.Cut(host, ":"); ok && !strings.HasPrefix(host, "[") {
		host = h
	}
	var best *upstream
	for _, up := range s.upstreams {
		c := &up.cfg
		if c.Host != "" && c.Host != host {
			continue
		}
		if c.Prefix != "" && r.URL.Path != c.Prefix && !strings.HasPrefix(r.URL.Path, c.Prefix+"/") {
			continue
		}
		// The longest prefix wins; a host match beats none.
		if best == nil || len(c.Prefix) > len(best.cfg.Prefix) || (len(c.Prefix) == len(best.cfg.Prefix) && c.Host != "") {
			best = up
		}
	}
	return best
}

// serveProxy is every request for an upstream.
func (s *Server) serveProxy(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	if why := relayRefusal(r); why != "" {
		s.reject(w, r, http.StatusBadRequest, "relay", "invalid_request", why)
		return
	}
	id := requestID(r.Header.Get("X-Request-Id"))
	// A refusal carries the request ID; an answer from the upstream
	// brings its own, or modifyResponse adds the proxy's (proxyError
	// too).
	reject := func(code int, reason, typ, msg string) {
		w.Header().Set("X-Request-Id", id)
		s.reject(w, r, code, reason, typ, msg)
	}

	presented, had := credential(r)
	if !had {
		w.Header().Set("WWW-Authenticate", `Bearer realm="apipool"`)
		reject(http.StatusUnauthorized, "no_token", "unauthorized", "a proxy token is required (Authorization: Bearer <token>)")
		return
	}
	tok := s.tokens.Load().match(presented)
	if tok == nil {
		w.Header().Set("WWW-Authenticate", `Bearer realm="apipool", error="invalid_token"`)
		reject(http.StatusUnauthorized, "bad_token", "unauthorized", "the proxy token is not valid")
		return
	}
	up := s.route(r)
	if up == nil {
		reject(http.StatusNotFound, "no_route", "not_found", "no upstream serves this host and path")
		return
	}
	if tok.Upstreams != nil && !tok.Upstreams[up.cfg.Name] {
		reject(http.StatusForbidden, "forbidden", "forbidden", "this token may not use upstream "+up.cfg.Name)
		return
	}
	if tok.limiter != nil {
		res := tok.limiter.ReserveN(start, 1)
		if d := res.DelayFrom(start); !res.OK() || d > 0 {
			res.CancelAt(start)
			w.Header().Set("Retry-After", retryAfter(d))
			reject(http.StatusTooManyRequests, "rate", "rate_limited", "this token's request rate is exceeded")
			return
		}
	}
	if r.ContentLength > tok.MaxBody {
		reject(http.StatusRequestEntityTooLarge, "body", "request_too_large", "the request body exceeds this token's limit of "+strconv.FormatInt(tok.MaxBody, 10)+" bytes")
		return
	}
	if s.closing.Load() {
		w.Header().Set("Connection", "close")
	}

	cfg := s.cfg.Load()
	ri := &reqInfo{id: id, upstream: up, token: tok.Name, client: tok.client}
	ri.rc = *http.NewResponseController(w)
	deadline := start.Add(up.cfg.Timeout)
	if cfg.Server.WriteTimeout == 0 {
		ri.rc.SetWriteDeadline(deadline.Add(5 * time.Second))
	}
	if r.Body != nil && r.Body != http.NoBody {
		ri.rc.SetReadDeadline(start.Add(cfg.Server.ReadTimeout))
		ri.body = bodyReader{ReadCloser: http.MaxBytesReader(w, r.Body, tok.MaxBody), rc: &ri.rc, ri: ri}
		r.Body = &ri.body
	}
	ctx := r.Context()
	if s.tel.tracing {
		// The pool's spans join the caller's trace (W3C traceparent).
		ctx = propagation.TraceContext{}.Extract(ctx, propagation.HeaderCarrier(r.Header))
	}
	var cancel context.CancelFunc
	if isUpgrade(r.Header) {
		// An upgrade (a WebSocket): the upstream's timeout bounds the
		// handshake only; once switched, the connection lives until
		// either end closes it (switchProtocols).
		ctx, cancel = context.WithCancel(ctx)
		ri.handshake = time.AfterFunc(up.cfg.Timeout, cancel)
		defer ri.handshake.Stop()
		defer context.AfterFunc(s.sockets, cancel)() // Shutdown closes it
	} else {
		ctx, cancel = context.WithDeadline(ctx, deadline)
	}
	defer cancel()
	ri.Context = ctx
	ri.sw = statusWriter{ResponseWriter: w, scrub: &s.scrub}
	sw := &ri.sw
	up.proxy.ServeHTTP(sw, r.WithContext(ri))
	// Trailers are what the header holds now. The header itself was
	// scrubbed as it was written; ReverseProxy sends as trailers only what
	// the upstream's answer had (its Trailer, filled in as the body was
	// read): without them there is nothing new to scrub.
	if ri.resp == nil || len(ri.resp.Trailer) > 0 || !sw.wrote {
		s.scrub.Load().scrubHeader(w.Header())
	}

	code := sw.code
	if code == 0 {
		code = http.StatusOK
	}
	d := time.Since(start)
	s.tel.requests.Record(ctx, d.Seconds(), up.attrs.requestAttrs(up.cfg.Name, r.Method, code)...)
	if s.log.Enabled(ctx, levelFor(code)) {
		s.log.Log(ctx, levelFor(code), "request", "id", id, "token", tok.Name, "upstream", up.cfg.Name,
			"method", r.Method, "path", r.URL.Path, "status", code, "duration", d, "bytes", sw.n)
	}
}

func levelFor(code int) slog.Level {
	if code >= 500 {
		return slog.LevelWarn
	}
	return slog.LevelInfo
}

// reject answers a request the proxy refuses, and counts it.
func (s *Server) reject(w http.ResponseWriter, r *http.Request, code int, reason, typ, msg string) {
	s.tel.rejected.Add(r.Context(), 1, metric.WithAttributes(attribute.String("reason", reason)))
	s.log.Info("refused", "reason", reason, "status", code, "method", r.Method, "path", r.URL.Path, "remote", r.RemoteAddr)
	if r.ContentLength != 0 {
		// Do not read what an unauthenticated caller sends.
		w.Header().Set("Connection", "close")
	}
	writeError(w, code, typ, msg)
}

// writeError writes an error body in the shape OpenAI-style SDKs read.
// X-Apipool-Error, set to the error's type, tells the proxy's own
// answers from the upstream's.
func writeError(w http.ResponseWriter, code int, typ, msg string) {
	w.Header().Set("X-Apipool-Error", typ)
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(map[string]any{"error": map[string]string{"message": msg, "type": typ, "code": "apipool_proxy"}})
}

// rewrite turns the caller's request into the upstream request.
func (up *upstream) rewrite(pr *httputil.ProxyRequest) {
	out := pr.Out
	if p := up.cfg.Prefix; p != "" {
		out.URL.Path = strings.TrimPrefix(out.URL.Path, p)
		if out.URL.RawPath != "" {
			out.URL.RawPath = strings.TrimPrefix(out.URL.RawPath, p)
		}
	}
	pr.SetURL(up.cfg.Target)
	stripCredentials(out)
	limitAcceptEncoding(out.Header)
	if readsTokens(up.cfg) {
		acceptIdentity(out.Header) // routing.go
	}
	if ri := info(out.Context()); ri != nil {
		ri.idOut[0] = ri.id
		out.Header["X-Request-Id"] = ri.idOut[:]
	}
}

// limitAcceptEncoding leaves in Accept-Encoding only the codings the
// proxy can decode to scrub an answer (gzip, deflate; "*" asks for gzip),
// or removes it: the upstream then answers uncompressed.
func limitAcceptEncoding(h http.Header) {
	vs := h.Values("Accept-Encoding")
	if len(vs) == 0 {
		return
	}
	var keep []string
	for _, v := range vs {
		for item := range strings.SplitSeq(v, ",") {
			name, params, _ := strings.Cut(item, ";")
			name = strings.ToLower(strings.TrimSpace(name))
			if q, ok := strings.CutPrefix(strings.ToLower(strings.TrimSpace(params)), "q="); ok {
				if f, err := strconv.ParseFloat(strings.TrimSpace(q), 64); err == nil && f == 0 {
					continue
				}
			}
			switch name {
			case "*", "x-gzip":
				name = "gzip"
			case "gzip", "deflate":
			default:
				continue
			}
			if !slices.Contains(keep, name) {
				keep = append(keep, name)
			}
		}
	}
	if len(keep) == 0 {
		h.Del("Accept-Encoding")
		return
	}
	h.Set("Accept-Encoding", strings.Join(keep, ", "))
}

// modifyResponse removes the upstream's X-Apipool-* headers, keeps its
// request ID or adds the proxy's, routes its Location, and scrubs the answer's body of pool secrets (see scrub.go; the headers
// are scrubbed as they are written, by statusWriter).
func (s *Server) modifyResponse(resp *http.Response) error {
	ri := info(resp.Request.Context())
	if ri != nil {
		ri.resp = resp
	}
	for k := range resp.Header {
		if strings.HasPrefix(k, "X-Apipool-") {
			delete(resp.Header, k) // the proxy's own: not the upstream's to say
		}
	}
	if resp.Header.Get("X-Request-Id") == "" && ri != nil {
		ri.idResp[0] = ri.id
		resp.Header["X-Request-Id"] = ri.idResp[:]
	}
	if ri != nil {
		ri.upstream.routeLocation(resp.Header)
	}
	if resp.StatusCode == http.StatusSwitchingProtocols {
		s.switchProtocols(ri, resp)
	}
	cut, err := s.scrub.Load().scrubBody(resp)
	if cut && ri != nil {
		s.log.Warn("an upstream answer was cut at the scrub bound", "id", ri.id, "upstream", ri.upstream.cfg.Name,
			"status", resp.StatusCode, "bound", scrubBound)
	}
	return err
}

// isUpgrade reports whether h asks to switch protocols (Connection:
// Upgrade and an Upgrade protocol), as httputil.ReverseProxy reads it.
func isUpgrade(h http.Header) bool {
	if h.Get("Upgrade") == "" {
		return false
	}
	for _, v := range h["Connection"] {
		for tok := range strings.SplitSeq(v, ",") {
			if strings.EqualFold(strings.TrimSpace(tok), "upgrade") {
				return true
			}
		}
	}
	return false
}

// switchProtocols readies a 101 answer, which httputil.ReverseProxy then
// turns into a two-way copy between the caller's hijacked connection and
// the upstream's (its body, which holds the pool key until it is closed).
// Its header is scrubbed here: ReverseProxy writes it on the hijacked
// connection, past statusWriter. The handshake's timer stops and the
// connection's read and write deadlines (the server's, and the one set
// from the upstream's timeout) are cleared: a socket may stay open for
// long. Its body is not scrubbed (scrubBody leaves a 101 alone): frames
// pass as they come.
func (s *Server) switchProtocols(ri *reqInfo, resp *http.Response) {
	s.scrub.Load().scrubHeader(resp.Header)
	if ri == nil {
		return
	}
	if ri.handshake != nil {
		ri.handshake.Stop()
	}
	ri.rc.SetReadDeadline(time.Time{})
	ri.rc.SetWriteDeadline(time.Time{})
	ri.sw.code = http.StatusSwitchingProtocols
}

// routeLocation turns a Location that points into the upstream (a path,
// or a URL of the target's scheme and host, under the target's base path)
// into the proxy's path for it: the route's prefix, then the path after
// the base path. A caller that follows it comes back through the proxy.
// Other Locations (relative references, which the caller resolves against
// the proxy's URL already; other hosts; paths outside the base path) are
// left as they are.
func (up *upstream) routeLocation(h http.Header) {
	loc := h.Get("Location")
	if loc == "" {
		return
	}
	u, err := url.Parse(loc)
	if err != nil || u.Opaque != "" {
		return
	}
	t := up.cfg.Target
	switch {
	case u.Host != "":
		scheme := u.Scheme
		if scheme == "" {
			scheme = t.Scheme
		}
		if !strings.EqualFold(scheme, t.Scheme) || hostPort(scheme, u.Host) != hostPort(t.Scheme, t.Host) {
			return
		}
	case u.Scheme != "" || !strings.HasPrefix(u.Path, "/"):
		return
	}
	p := u.EscapedPath()
	if base := strings.TrimSuffix(t.EscapedPath(), "/"); base != "" {
		if p != base && !strings.HasPrefix(p, base+"/") {
			return
		}
		p = p[len(base):]
	}
	p = up.cfg.Prefix + p
	if p == "" {
		p = "/"
	}
	out, err := url.Parse(p)
	if err != nil {
		return
	}
	out.RawQuery, out.ForceQuery, out.Fragment, out.RawFragment = u.RawQuery, u.ForceQuery, u.Fragment, u.RawFragment
	h.Set("Location", out.String())
}

// hostPort returns host with its port, the scheme's default if it has
// none, lower-cased.
func hostPort(scheme, host string) string {
	h, port, err := net.SplitHostPort(host)
	if err != nil {
		h, port = host, ""
	}
	if port == "" {
		port = "80"
		if strings.EqualFold(scheme, "https") {
			port = "443"
		}
	}
	return strings.ToLower(h) + ":" + port
}

// proxyError answers a request the upstream did not answer.
func (s *Server) proxyError(w http.ResponseWriter, r *http.Request, err error) {
	var mbe *http.MaxBytesError
	var nke *apipool.NoKeyError
	var nme *apipool.NoModelError
	code, typ, msg := http.StatusBadGateway, "upstream_error", "the upstream could not be reached"
	ri := info(r.Context())
	var be *apipool.BudgetError
	if errors.As(err, &be) { // the token's budget: nothing was sent (budgets.go)
		if ri != nil {
			w.Header().Set("X-Request-Id", ri.id)
		}
		s.log.Info("refused", "reason", "budget", "token", be.Client, "budget", string(be.Budget), "until", be.Until, "method", r.Method, "path", r.URL.Path)
		s.budgetError(w, r, be)
		return
	}
	switch {
	case ri != nil && ri.tooLarge.Load():
		code, typ, msg = http.StatusRequestEntityTooLarge, "request_too_large", "the request body exceeds this token's limit"
	case errors.As(err, &mbe):
		code, typ, msg = http.StatusRequestEntityTooLarge, "request_too_large", "the request body exceeds this token's limit of "+strconv.FormatInt(mbe.Limit, 10)+" bytes"
	case errScrub(err):
		code, typ, msg = http.StatusBadGateway, "upstream_answer_refused", err.Error()
	case errors.Is(err, context.Canceled) || errors.Is(r.Context().Err(), context.Canceled):
		// The caller went away: whatever error that left (a wait for a
		// key cut short, a connection torn down), it is not the
		// upstream's failure, and no one reads the answer.
		code, typ, msg = 499, "canceled", "the caller canceled the request"
	case errors.As(err, &nke):
		code, typ, msg = http.StatusServiceUnavailable, "no_key_available", "no upstream key is available now"
		if !nke.RetryAt.IsZero() {
			w.Header().Set("Retry-After", retryAfter(time.Until(nke.RetryAt)))
		}
	case errors.As(err, &nme) && ri != nil:
		code, typ, msg = http.StatusBadRequest, "unknown_model", noModelMessage(ri.upstream.cfg.Name, nme.Model) // routing.go
	case errors.Is(err, apipool.ErrClosed):
		code, typ, msg = http.StatusServiceUnavailable, "shutting_down", "the proxy is shutting down"
	case errors.Is(err, context.DeadlineExceeded):
		code, typ, msg = http.StatusGatewayTimeout, "timeout", "the upstream did not answer in time"
	}
	args := []any{"error", err, "status", code}
	if ri != nil {
		w.Header().Set("X-Request-Id", ri.id)
		args = append(args, "id", ri.id, "upstream", ri.upstream.cfg.Name)
	}
	switch {
	case code == 499:
		s.log.Info("request canceled by the caller", args...)
	case typ == "unknown_model":
		// The caller's mistake, refused before any upstream: counted
		// with the proxy's other refusals.
		s.tel.rejected.Add(r.Context(), 1, metric.WithAttributes(attribute.String("reason", typ)))
		s.log.Info("refused: no key serves the request's model", args...)
	default:
		s.log.Warn("upstream request failed", args...)
	}
	writeError(w, code, typ, msg)
}

// requestID keeps the caller's X-Request-Id when it is short and printable,
// else makes one.
func requestID(in string) string {
	if in != "" && len(in) <= 128 {
		ok := true
		for i := 0; i < len(in); i++ {
			if in[i] < 0x21 || in[i] > 0x7e {
				ok = false
				break
			}
		}
		if ok {
			return in
		}
	}
	var b [16]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// bodyReader clears the connection's read deadline once the body is read
// whole, so that a long streamed answer is not cut by it.
type bodyReader struct {
	io.ReadCloser
	rc   *http.ResponseController
	ri   *reqInfo
	done bool
}

func (b *bodyReader) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if err != nil && !b.done {
		b.done = true
		if err == io.EOF {
			// Read whole: the rest of the exchange is the answer.
			b.rc.SetReadDeadline(time.Time{})
		} else if tooLarge(err) {
			b.ri.tooLarge.Store(true)
		}
		// On any other error the deadline stays, so that the server
		// gives up on the connection rather than wait for the rest.
	}
	return n, err
}

// tooLarge reports whether err is http.MaxBytesReader's (apart, so that
// a body read whole costs no allocation for errors.As's target).
func tooLarge(err error) bool {
	var mbe *http.MaxBytesError
	return errors.As(err, &mbe)
}

// statusWriter notes the status code and bytes written, and scrubs the
// header of pool secrets as it is written (informational answers' too);
// Unwrap lets http.ResponseController reach the deadlines.
type statusWriter struct {
	http.ResponseWriter
	scrub *atomic.Pointer[scrubIndex]
	code  int
	n     int64
	wrote bool // the final header
}

func (w *statusWriter) WriteHeader(code int) {
	if !w.wrote {
		w.scrub.Load().scrubHeader(w.Header())
		if code >= 200 {
			w.wrote = true
			w.code = code
		}
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(p []byte) (int, error) {
	if !w.wrote {
		w.WriteHeader(http.StatusOK)
	}
	n, err := w.ResponseWriter.Write(p)
	w.n += int64(n)
	return n, err
}

// FlushError flushes, writing the header first if it was not.
func (w *statusWriter) FlushError() error {
	if !w.wrote {
		w.WriteHeader(http.StatusOK)
	}
	return http.NewResponseController(w.ResponseWriter).Flush()
}

func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }
