package dashboard

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"embed"
	"encoding/hex"
	"encoding/json"
	"errors"
	"html/template"
	"io/fs"
	"net/http"
	"strings"
	"time"

	"github.com/apipool-ng/apipool"
	"github.com/apipool-ng/apipool/recorder"
)

// Pool is what the dashboard reads and acts on. *apipool.Transport
// implements it.
type Pool interface {
	// Snapshot returns every key's state now.
	Snapshot() []apipool.KeyStatus
	// Stats returns the pool's usage stats, or nil.
	Stats() recorder.Stats
	// Disable, Enable and CheckUsable serve the actions (WithActions).
	Disable(id, reason string) error
	Enable(id string) error
	CheckUsable(ctx context.Context) ([]apipool.ProbeResult, error)
}

var _ Pool = (*apipool.Transport)(nil)

//go:embed static templates
var staticFS embed.FS

// ContentSecurityPolicy is the policy every answer carries: everything
// from the dashboard itself, no inline script or style element, no
// plugins, no framing, forms nowhere.
const ContentSecurityPolicy = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; " +
	"connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

// CSRFHeader is the request header that carries the page's CSRF token on
// actions.
const CSRFHeader = "X-CSRF-Token"

// DisabledReason is the reason the dashboard's Disable action gives.
const DisabledReason = "disabled from the dashboard"

type handler struct {
	pool  Pool
	cfg   config
	stats recorder.MultiStats // nil without stats
	// sums is the store's recorder.TotalsStats, or nil when it does
	// not sum tokens and cost. It is read from the store itself: stats
	// may be a fallback that wraps it, and answers Stats methods only.
	sums   recorder.TotalsStats
	csrf   string
	cop    *http.CrossOriginProtection
	page   *template.Template
	mux    *http.ServeMux
	static http.Handler
}

// New returns the dashboard of pool as an http.Handler that serves the
// page at "/", its assets under "/static/" and the JSON API under
// "/api/"; mount it under a prefix with http.StripPrefix. It returns an
// *apipool.ConfigError (matching apipool.ErrInvalidConfig) for a nil pool, a
// nil option or a bad option.
//
// The handler is safe for concurrent use and starts no goroutine: each
// request reads the pool's snapshot and stats when it comes.
func New(pool Pool, opts ...Option) (http.Handler, error) {
	if pool == nil {
		return nil, optionError("pool", "nil pool")
	}
	cfg := defaultConfig()
	for i, o := range opts {
		if o == nil {
			return nil, optionError("options", "option %d is nil", i)
		}
		if err := o.apply(&cfg); err != nil {
			return nil, err
		}
	}
	h := &handler{pool: pool, cfg: cfg, cop: http.NewCrossOriginProtection()}
	st := cfg.stats
	if !cfg.statsSet {
		st = pool.Stats()
		if _, none := st.(recorder.NoStats); none {
			st = nil
		}
	}
	h.stats = multiOf(st)
	if ts, ok := st.(recorder.TotalsStats); ok {
		h.sums = ts
	}
	var tok [32]byte
	rand.Read(tok[:])
	h.csrf = hex.EncodeToString(tok[:])
	h.page = template.Must(template.ParseFS(staticFS, "templates/index.html"))
	sub, err := fs.Sub(staticFS, "static")
	if err != nil {
		return nil, err
	}
	h.static = http.StripPrefix("/static", http.FileServerFS(sub))

	m := http.NewServeMux()
	m.HandleFunc("GET /{$}", h.servePage)
	m.HandleFunc("GET /static/", h.serveStatic)
	m.HandleFunc("GET /api/keys", windowed(always(h.keys)))
	m.HandleFunc("GET /api/totals", windowed(always(h.totals)))
	m.HandleFunc("GET /api/usage", windowed(h.usage))
	m.HandleFunc("GET /api/clients", windowed(always(h.clients)))
	m.HandleFunc("POST /api/keys/{id}/disable", h.action(h.disable))
	m.HandleFunc("POST /api/keys/{id}/enable", h.action(h.enable))
	m.HandleFunc("POST /api/probe", h.action(h.probe))
	h.mux = m
	return h, nil
}

// Handler is New for one-line mounting. With a bad option it fails
// closed: the handler answers every request with 500 and the error.
func Handler(pool Pool, opts ...Option) http.Handler {
	h, err := New(pool, opts...)
	if err != nil {
		msg := err.Error()
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			setHeaders(w)
			writeError(w, http.StatusInternalServerError, msg)
		})
	}
	return h
}

func setHeaders(w http.ResponseWriter) {
	hd := w.Header()
	hd.Set("Content-Security-Policy", ContentSecurityPolicy)
	hd.Set("X-Content-Type-Options", "nosniff")
	hd.Set("Referrer-Policy", "no-referrer")
	hd.Set("X-Frame-Options", "DENY")
	hd.Set("Cross-Origin-Opener-Policy", "same-origin")
	hd.Set("Cross-Origin-Resource-Policy", "same-origin")
	hd.Set("Cache-Control", "no-store")
}

func (h *handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	setHeaders(w)
	if !h.authorized(r) {
		if h.cfg.basicUser != nil {
			w.Header().Add("WWW-Authenticate", `Basic realm="apipool dashboard", charset="UTF-8"`)
		}
		if h.cfg.bearer != nil {
			w.Header().Add("WWW-Authenticate", `Bearer realm="apipool dashboard"`)
		}
		writeError(w, http.StatusUnauthorized, "apipool/dashboard: authentication required")
		return
	}
	if r.URL.Path == "" { // mounted with StripPrefix of the whole path
		r2 := *r
		u := *r.URL
		u.Path = "/"
		r2.URL = &u
		r = &r2
	}
	h.mux.ServeHTTP(w, r)
}

// authorized reports whether r carries the credentials the options ask
// for; every comparison runs in constant time over SHA-256 hashes, so
// that neither the content nor the length of a secret leaks.
func (h *handler) authorized(r *http.Request) bool {
	if h.cfg.bearer == nil && h.cfg.basicUser == nil {
		return true
	}
	ok := 0
	if h.cfg.bearer != nil {
		if tok, found := bearerToken(r.Header.Get("Authorization")); found {
			sum := sha256.Sum256([]byte(tok))
			ok |= subtle.ConstantTimeCompare(sum[:], h.cfg.bearer[:])
		}
	}
	if h.cfg.basicUser != nil {
		if u, p, found := r.BasicAuth(); found {
			us, ps := sha256.Sum256([]byte(u)), sha256.Sum256([]byte(p))
			ok |= subtle.ConstantTimeCompare(us[:], h.cfg.basicUser[:]) & subtle.ConstantTimeCompare(ps[:], h.cfg.basicPass[:])
		}
	}
	return ok == 1
}

// bearerToken returns the token of a Bearer Authorization header. The
// scheme is case-insensitive and may be followed by more than one space
// (RFC 9110, section 11.1; RFC 6750, section 2.1).
func bearerToken(h string) (string, bool) {
	scheme, tok, ok := strings.Cut(h, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return "", false
	}
	return strings.TrimLeft(tok, " "), true
}

type pageData struct {
	Title     string
	RefreshMS int64
	CSRF      string
	Actions   bool
	Stats     bool
}

func (h *handler) servePage(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	d := pageData{Title: h.cfg.title, RefreshMS: h.cfg.refresh.Milliseconds(), Actions: h.cfg.actions, Stats: h.stats != nil}
	if h.cfg.actions {
		d.CSRF = h.csrf
	}
	if err := h.page.Execute(w, d); err != nil {
		// The template is ours and its data plain: only a broken
		// connection gets here, when nothing more can be sent.
		return
	}
}

func (h *handler) serveStatic(w http.ResponseWriter, r *http.Request) {
	if strings.HasSuffix(r.URL.Path, "/") {
		writeError(w, http.StatusNotFound, "apipool/dashboard: no such file: "+r.URL.Path)
		return
	}
	w.Header().Set("Cache-Control", "private, max-age=300")
	h.static.ServeHTTP(w, r)
}

// action wraps an action's handler in the checks every action passes:
// actions on, same origin, and the page's CSRF token.
func (h *handler) action(fn func(w http.ResponseWriter, r *http.Request)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if !h.cfg.actions {
			writeError(w, http.StatusForbidden, "apipool/dashboard: actions are off (see WithActions)")
			return
		}
		if err := h.cop.Check(r); err != nil {
			writeError(w, http.StatusForbidden, "apipool/dashboard: cross-origin request refused")
			return
		}
		tok := r.Header.Get(CSRFHeader)
		if subtle.ConstantTimeCompare([]byte(tok), []byte(h.csrf)) != 1 {
			writeError(w, http.StatusForbidden, "apipool/dashboard: missing or wrong "+CSRFHeader+" header")
			return
		}
		fn(w, r)
	}
}

type actionResult struct {
	OK     bool          `json:"ok"`
	KeyID  string        `json:"key_id,omitempty"`
	Probes []probeResult `json:"probes,omitempty"`
}

type probeResult struct {
	KeyID  string `json:"key_id"`
	Usable bool   `json:"usable"`
	Status string `json:"status"`
	Error  string `json:"error,omitempty"`
}

func (h *handler) disable(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	if err := h.pool.Disable(id, DisabledReason); err != nil {
		writePoolError(w, err, id)
		return
	}
	writeJSON(w, actionResult{OK: true, KeyID: id})
}

func (h *handler) enable(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	if err := h.pool.Enable(id); err != nil {
		writePoolError(w, err, id)
		return
	}
	writeJSON(w, actionResult{OK: true, KeyID: id})
}

func (h *handler) probe(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), time.Minute)
	defer cancel()
	res, err := h.pool.CheckUsable(ctx)
	if err != nil {
		writePoolError(w, err, "")
		return
	}
	out := actionResult{OK: true, Probes: make([]probeResult, len(res))}
	for i, p := range res {
		out.Probes[i] = probeResult{KeyID: p.KeyID, Usable: p.Usable, Status: p.Status.String()}
		if p.Err != nil {
			out.Probes[i].Error = p.Err.Error() // the pool removes the key's secret
		}
	}
	writeJSON(w, out)
}

func writePoolError(w http.ResponseWriter, err error, id string) {
	switch {
	case errors.Is(err, apipool.ErrUnknownKey):
		writeError(w, http.StatusNotFound, "apipool/dashboard: no key with ID "+quote(id))
	case errors.Is(err, apipool.ErrNoProbe):
		writeError(w, http.StatusConflict, "apipool/dashboard: the pool has no probe (see apipool.WithProbe)")
	default:
		writeError(w, http.StatusInternalServerError, err.Error())
	}
}

func quote(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}

type errorBody struct {
	Error string `json:"error"`
}

func writeError(w http.ResponseWriter, code int, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(errorBody{msg})
}

func writeJSON(w http.ResponseWriter, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		writeError(w, http.StatusInternalServerError, "apipool/dashboard: "+err.Error())
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Write(append(b, '\n'))
}
