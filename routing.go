package apipool

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"unicode/utf8"

	"github.com/apipool-ng/apipool/internal/readall"
)

// Routing: which keys a request may take beyond their state. Tiers order
// the keys (Key.Tier; tryPick looks tier by tier), models restrict them
// (Key.Models, WithModel), and sessions pin a request to the key its
// session had (WithSessions). The attempt loop's first step, route, reads
// a request's model and session once; the pick (pick.go) honours them.

// WithModel sets how the pool learns a request's model: f gets the request
// and its body as the pool buffered it for replay, and returns the model
// ("" when not known). body is nil when the pool did not buffer the body:
// a body larger than WithMaxBufferedBody (it is streamed, and not parsed),
// or a request with GetBody (http.NewRequest with a bytes.Reader, as SDKs
// make), which the pool replays through GetBody instead of a buffer of its
// own (with both WithModel and WithSessions set, the pool reads such a
// body once through GetBody, when its length is known and at most
// DefaultMaxBufferedBody, and gives both the copy). f must not keep or
// modify body, and must be safe for concurrent use.
//
// The model decides which keys may take the request (Key.Models), what a
// rate limit rests under WithCooldownScope(ScopeModel), and it is recorded
// in each usage event (recorder.Event.Model). Ready functions:
// ModelFromJSON, ModelFromPath, ResourceFromGitHubPath.
func WithModel(f func(r *http.Request, body []byte) string) Option {
	return optionFunc(func(c *config) error {
		if f == nil {
			return &ConfigError{Field: "WithModel", Reason: "nil function"}
		}
		c.modelOf = f
		return nil
	})
}

// CooldownScope says what a rate limit rests (WithCooldownScope).
type CooldownScope uint8

const (
	// ScopeKey: a rate limit (429) or a provider budget used up rests the
	// whole key. The default.
	ScopeKey CooldownScope = iota
	// ScopeModel: it rests the key for the request's model only; the key
	// goes on serving requests for other models. A request whose model is
	// not known rests the whole key.
	ScopeModel
)

// String returns "key" or "model".
func (s CooldownScope) String() string {
	switch s {
	case ScopeKey:
		return "key"
	case ScopeModel:
		return "model"
	}
	return "unknown scope"
}

// maxModelRests bounds the models one key rests for at once under
// ScopeModel (keyState.rests); a rest beyond them rests the whole key.
const maxModelRests = 64

// WithCooldownScope sets what a rate limit rests: the whole key
// (ScopeKey, the default) or the key for the request's model
// (ScopeModel), which needs WithModel.
//
// With ScopeModel, a 429 (or another answer the classifier rates as a
// rate limit) to a request whose model is known rests the pair (key,
// model) until its Retry-After, as a key's cooldown would, and the key
// keeps serving other models. So does an answer whose provider budget is
// used up (x-ratelimit-remaining: 0 and the like, see
// WithProviderBudget): the pair rests until the reset. The rate-limit
// headers of an answer to a request with a model are taken as that
// model's, not the key's: they steer no other requests, and Snapshot's
// Provider fields show only what answers without a model said. A
// model's rest teaches the key no limit (WithLimitLearning).
//
// When the answer names its resource in GitHub's x-ratelimit-resource
// header (core, search, code_search, graphql...), the rest is that
// resource's rather than the model's: give WithModel a function that
// names a request's resource as GitHub does, ResourceFromGitHubPath, so
// that a search rate limit rests the token for searches only.
//
// A key rests for at most 64 models at once; a rest beyond them (all 64
// still running) rests the whole key. Expired rests are dropped. Rests
// of a model stay in the process: WithSharedState carries the cooldowns
// of whole keys only. Snapshot shows them (KeyStatus.ModelCooldowns).
func WithCooldownScope(s CooldownScope) Option {
	return optionFunc(func(c *config) error {
		if s > ScopeModel {
			return &ConfigError{Field: "WithCooldownScope", Reason: fmt.Sprintf("unknown scope %d", s)}
		}
		c.scope = s
		return nil
	})
}

// DefaultMaxSessions is how many sessions WithSessions remembers when
// given 0; MaxSessionsLimit the most it accepts.
const (
	DefaultMaxSessions = 10_000
	MaxSessionsLimit   = 10_000_000
)

// WithSessions pins the requests of one session to one key: source gets
// each request and its buffered body (as for WithModel) and returns its
// session ("" for none). A session's requests go to the key its last
// request took for as long as that key is eligible for them (whatever
// its tier, and before the strategy or Selector is asked); when it is
// not (cooling down, at a limit, disabled, already tried by this request,
// not serving its model), the request takes another key as any request
// would, and the session moves to that key and stays there. Providers'
// prompt caches are per key: pinning keeps a conversation's cache warm.
//
// The pool remembers the last max sessions used (0 means
// DefaultMaxSessions, 10,000; at most MaxSessionsLimit), each as a 64-bit
// hash of its name with a seed of the pool's (51 to 56 bytes of memory a
// session, as bench/README.md measures it), and forgets the least recently used beyond
// them: its next request goes by the strategy and pins it again. Two
// sessions whose hashes collide share a key. Sessions are not shared
// across replicas, with or without WithSharedState: a session that
// reaches another replica is pinned there on its own.
//
// Ready sources: SessionFromHeader, SessionFromJSON.
func WithSessions(source func(r *http.Request, body []byte) string, max int) Option {
	return optionFunc(func(c *config) error {
		if source == nil {
			return &ConfigError{Field: "WithSessions", Reason: "nil source"}
		}
		if max < 0 || max > MaxSessionsLimit {
			return &ConfigError{Field: "WithSessions", Reason: fmt.Sprintf("want 0 to %d sessions, got %d", MaxSessionsLimit, max)}
		}
		if max == 0 {
			max = DefaultMaxSessions
		}
		c.sessionOf, c.maxSessions = source, max
		return nil
	})
}

// ModelFromJSON returns the "model" field of a JSON request body, as
// OpenAI's and Anthropic's APIs take it ({"model": "gpt-4o", ...}), or ""
// when there is none, the body is not a JSON object, or the body was not
// buffered: a body larger than WithMaxBufferedBody is streamed and not
// parsed. For a request with GetBody, which the pool does not buffer
// (see WithModel), it reads the body through GetBody when its length is
// known and at most DefaultMaxBufferedBody: a copy, dropped at once. Of
// two "model" fields the last counts, as encoding/json reads it.
func ModelFromJSON(r *http.Request, body []byte) string {
	return jsonString(r, body, modelPath)
}

var modelPath = []string{"model"}

// ModelFromPath returns the model a Gemini-style path names:
// "gemini-2.0-flash" for /v1beta/models/gemini-2.0-flash:generateContent
// or :streamGenerateContent (and Vertex AI's
// .../publishers/google/models/{model}:...), or "" when the path names
// none.
func ModelFromPath(r *http.Request, _ []byte) string {
	if r.URL == nil {
		return ""
	}
	p := r.URL.Path
	i := strings.LastIndex(p, "/models/")
	if i < 0 {
		return ""
	}
	m := p[i+len("/models/"):]
	if j := strings.IndexAny(m, ":/"); j >= 0 {
		m = m[:j]
	}
	return m
}

// ResourceFromGitHubPath names the GitHub rate-limit resource a REST or
// GraphQL request counts against, as the x-ratelimit-resource header of
// the answer does: "code_search" for /search/code, "search" for the
// other /search/ paths, "graphql" for /graphql, "core" for the rest (a
// GitHub Enterprise Server's /api/v3 and /api prefixes are skipped). Give
// it to WithModel with WithCooldownScope(ScopeModel) so that a used-up
// search quota rests a token for searches only. GitHub's rarer resources
// (integration_manifest, source_import, ...) are named "core" here: their
// answers rest their own resource, which no request is then matched to.
func ResourceFromGitHubPath(r *http.Request, _ []byte) string {
	if r.URL == nil {
		return "core"
	}
	p := r.URL.Path
	if strings.HasPrefix(p, "/api/v3/") {
		p = p[len("/api/v3"):]
	} else if strings.HasPrefix(p, "/api/") {
		p = p[len("/api"):]
	}
	switch {
	case p == "/search/code" || strings.HasPrefix(p, "/search/code/"):
		return "code_search"
	case strings.HasPrefix(p, "/search/"):
		return "search"
	case p == "/graphql" || strings.HasPrefix(p, "/graphql/"):
		return "graphql"
	}
	return "core"
}

// SessionFromHeader returns a session source (WithSessions) that reads
// the request header name (such as "X-Session-Id"): its first value, or
// "" when the request has none.
func SessionFromHeader(name string) func(r *http.Request, body []byte) string {
	name = http.CanonicalHeaderKey(name)
	return func(r *http.Request, _ []byte) string {
		if v := r.Header[name]; len(v) > 0 {
			return v[0]
		}
		return ""
	}
}

// SessionFromJSON returns a session source (WithSessions) that reads a
// field of a JSON request body: path is a field name ("user",
// "prompt_cache_key") or a dotted path into nested objects
// ("metadata.user_id", Anthropic's). A string gives its text, a number
// or true/false its literal; a field absent, null, an object or an array
// gives "". The body is read as ModelFromJSON reads it: not when it was
// too large to buffer. A path with an empty part ("a..b") finds nothing.
func SessionFromJSON(path string) func(r *http.Request, body []byte) string {
	parts := strings.Split(path, ".")
	for _, p := range parts {
		if p == "" {
			return func(*http.Request, []byte) string { return "" }
		}
	}
	return func(r *http.Request, body []byte) string { return jsonString(r, body, parts) }
}

// jsonString reads the field at path of the request's JSON body: body
// when the pool buffered it, else a copy read through GetBody.
func jsonString(r *http.Request, body []byte, path []string) string {
	if body == nil {
		body = bodyCopy(r)
	}
	return jsonField(body, path)
}

// bodyCopy reads a copy of r's body through GetBody when r has GetBody
// and a known length of at most DefaultMaxBufferedBody; nil otherwise.
func bodyCopy(r *http.Request) []byte {
	if r.GetBody == nil || r.ContentLength <= 0 || r.ContentLength > DefaultMaxBufferedBody {
		return nil
	}
	rc, err := r.GetBody()
	if err != nil {
		return nil
	}
	body, err := readall.AtMost(rc, r.ContentLength, r.ContentLength)
	rc.Close()
	if err != nil {
		return nil
	}
	return body
}

// ErrNoKeyForModel is matched (errors.Is) by the error RoundTrip returns
// for a request whose model no key of the pool serves (Key.Models). The
// request fails at once, without waiting: no key would free up for it.
// It does not match ErrNoKeyAvailable, which says "not now": this one
// says the request is at fault (the proxy answers it with 400). The
// error is a *NoModelError.
var ErrNoKeyForModel = errors.New("apipool: no key serves the model")

// NoModelError is returned for a request whose model no key serves. It
// matches ErrNoKeyForModel.
type NoModelError struct {
	// Model is the request's model, as WithModel's function named it.
	Model string
	// Keys counts the keys in the pool.
	Keys int
}

func (e *NoModelError) Error() string {
	m := e.Model
	if len(m) > 128 {
		m = strings.ToValidUTF8(m[:128], "") + "..."
	}
	return "apipool: no key serves the model " + quote(m) + " (" + itoa(e.Keys) + " keys)"
}

// Is makes errors.Is(err, ErrNoKeyForModel) true.
func (e *NoModelError) Is(target error) bool { return target == ErrNoKeyForModel }

// validateModels checks Key.Models; field names the key's field for
// errors ("keys[2].Models").
func validateModels(models []string, field string) error {
	if len(models) > 1000 {
		return &ConfigError{Field: field, Reason: fmt.Sprintf("%d models, more than 1000", len(models))}
	}
	for j, m := range models {
		f := fmt.Sprintf("%s[%d]", field, j)
		switch {
		case m == "":
			return &ConfigError{Field: f, Reason: "empty model name"}
		case len(m) > 256:
			return &ConfigError{Field: f, Reason: "longer than 256 bytes"}
		case !utf8.ValidString(m):
			return &ConfigError{Field: f, Reason: "not valid UTF-8"}
		case strings.TrimSpace(m) != m:
			return &ConfigError{Field: f, Reason: fmt.Sprintf("%q begins or ends with white space", m)}
		case strings.IndexByte(m[:len(m)-1], '*') >= 0:
			return &ConfigError{Field: f, Reason: fmt.Sprintf("%q: '*' may only end a prefix pattern", m)}
		}
		for i := 0; i < len(m); i++ {
			if c := m[i]; c < ' ' || c == 0x7f {
				return &ConfigError{Field: f, Reason: "contains a control character"}
			}
		}
	}
	return nil
}

// modelSet is the models one key serves (Key.Models): exact names and
// prefixes. A key without Models has none (nil): it serves every model.
type modelSet struct {
	exact    map[string]struct{}
	prefixes []string
	all      bool // a bare "*"
}

func newModelSet(models []string) *modelSet {
	if len(models) == 0 {
		return nil
	}
	s := &modelSet{exact: make(map[string]struct{}, len(models))}
	for _, m := range models {
		switch {
		case m == "*":
			s.all = true
		case strings.HasSuffix(m, "*"):
			s.prefixes = append(s.prefixes, m[:len(m)-1])
		default:
			s.exact[m] = struct{}{}
		}
	}
	return s
}

// serves reports whether the set names model.
func (s *modelSet) serves(model string) bool {
	if s == nil || s.all {
		return true
	}
	if _, ok := s.exact[model]; ok {
		return true
	}
	for _, p := range s.prefixes {
		if strings.HasPrefix(model, p) {
			return true
		}
	}
	return false
}

// modelCache bounds the models whose keys a keySet remembers (servedBy);
// the keys serving other models are found again for each request. Names
// longer than maxCachedModel are never remembered.
const (
	modelCache     = 1024
	maxCachedModel = 256
)

// modelIndex maps a model to the keys of a keySet that serve it.
type modelIndex struct {
	m sync.Map // string -> *keyBits
	n atomic.Int32
}

// servedBy returns the keys that serve model, or nil when every key does
// (no key lists Models, or the model is not known).
func (ks *keySet) servedBy(model string) *keyBits {
	if ks.models == nil || model == "" {
		return nil
	}
	if b, ok := ks.models.m.Load(model); ok {
		return b.(*keyBits)
	}
	b := new(keyBits)
	for i, k := range ks.keys {
		if k.models.serves(model) {
			b.set(i)
		}
	}
	if len(model) <= maxCachedModel && ks.models.n.Load() < modelCache {
		if _, loaded := ks.models.m.LoadOrStore(strings.Clone(model), b); !loaded {
			ks.models.n.Add(1)
		}
	}
	return b
}

// route is what the loop's first step learned of a request: its model and
// session, and the keys that serve its model. A call has one only when
// the pool has WithModel or WithSessions; it is kept with the call
// (putCall).
type route struct {
	model  string
	serves *keyBits // the keys that serve model; nil: all
	// sess is the session's hash (sessions.go); hasSess is false when the
	// request has no session.
	sess    uint64
	hasSess bool
}

// routes reports whether the pool routes by model or session.
func (c *config) routes() bool { return c.modelOf != nil || c.sessionOf != nil }

// route reads the request's model and session from the request and its
// buffered body (nil when not buffered). A model that no key serves is a
// *NoModelError.
func (c *call) route(body []byte) error {
	t := c.t
	if c.rt == nil {
		c.rt = new(route)
	}
	rt := c.rt
	if body == nil && t.cfg.modelOf != nil && t.cfg.sessionOf != nil {
		// Both sources may read the body: one copy through GetBody
		// serves both (nil when there is none to read).
		body = bodyCopy(c.req)
	}
	if f := t.cfg.modelOf; f != nil {
		rt.model = f(c.req, body)
		rt.serves = c.ks.servedBy(rt.model)
		if rt.serves != nil && rt.serves.empty() {
			return &NoModelError{Model: rt.model, Keys: len(c.ks.keys)}
		}
	}
	if f := t.cfg.sessionOf; f != nil {
		if id := f(c.req, body); id != "" {
			rt.sess, rt.hasSess = t.sessions.hash(id), true
		}
	}
	return nil
}

// model returns the request's model, "" when not known.
func (c *call) model() string {
	if c.rt == nil {
		return ""
	}
	return c.rt.model
}

// restScope returns what a rate limit in resp rests under
// WithCooldownScope(ScopeModel): the resource the answer names
// (x-ratelimit-resource), else the request's model; "" (the whole key)
// with ScopeKey or when the request's model is not known.
func (c *call) restScope(resp *http.Response) string {
	m := c.model()
	if c.t.cfg.scope != ScopeModel || m == "" {
		return ""
	}
	if resp != nil {
		if v := resp.Header["X-Ratelimit-Resource"]; len(v) > 0 && v[0] != "" {
			return v[0]
		}
	}
	return m
}

// modelRested reports whether key k rests for the request's model at the
// time at (ScopeModel).
func (c *call) modelRested(k *keyState, at int64) bool {
	if c.rt == nil || c.rt.model == "" {
		return false
	}
	_, ok := k.restedFor(c.rt.model, at)
	return ok
}

// jsonField returns the value at path in the JSON object body: a string's
// text, a number's or true's and false's literal; "" when the body is not
// a JSON object, or the path leads nowhere, to null, an object or an
// array. Of two fields of one name the last counts, as encoding/json
// takes it. It reads without allocating, but for the string it returns.
func jsonField(body []byte, path []string) string {
	s := jscan{b: body}
	s.ws()
	v, ok := s.lookup(path)
	if !ok {
		return ""
	}
	s.ws()
	if s.i != len(s.b) {
		return "" // trailing bytes: not one JSON value
	}
	return v.text()
}

// jscan walks JSON text without building it.
type jscan struct {
	b []byte
	i int
}

// jval is a scalar found by lookup: its bytes (a string's quoted), and
// for a string whether it holds escapes.
type jval struct {
	raw    []byte
	str    bool
	escape bool
	found  bool
}

func (v jval) text() string {
	switch {
	case !v.found:
		return ""
	case !v.str:
		if string(v.raw) == "null" {
			return ""
		}
		return string(v.raw)
	}
	if in := v.raw[1 : len(v.raw)-1]; !v.escape && utf8.Valid(in) {
		return string(in)
	}
	// Escapes, or bytes that are not UTF-8 (which encoding/json reads as
	// U+FFFD): decoded as encoding/json decodes them.
	var out string
	if json.Unmarshal(v.raw, &out) != nil {
		return ""
	}
	return out
}

func (s *jscan) ws() {
	for s.i < len(s.b) {
		switch s.b[s.i] {
		case ' ', '\t', '\n', '\r':
			s.i++
		default:
			return
		}
	}
}

// lookup reads the object at s.i, whole, and returns the scalar at path
// within it (the last one, when a name repeats); ok is false on a syntax
// error.
func (s *jscan) lookup(path []string) (jval, bool) {
	var found jval
	if s.i >= len(s.b) || s.b[s.i] != '{' {
		return found, false
	}
	s.i++
	s.ws()
	if s.i < len(s.b) && s.b[s.i] == '}' {
		s.i++
		return found, true
	}
	for {
		s.ws()
		start := s.i
		esc, ok := s.str()
		if !ok {
			return found, false
		}
		quoted := s.b[start:s.i]
		s.ws()
		if s.i >= len(s.b) || s.b[s.i] != ':' {
			return found, false
		}
		s.i++
		s.ws()
		name := quoted[1 : len(quoted)-1]
		plain := !esc && utf8.Valid(name)
		match := plain && string(name) == path[0] || !plain && unquoteEq(quoted, path[0])
		switch {
		case match && len(path) == 1:
			v, ok := s.scalar()
			if !ok {
				return found, false
			}
			found = v
		case match && s.i < len(s.b) && s.b[s.i] == '{':
			v, ok := s.lookup(path[1:])
			if !ok {
				return found, false
			}
			found = v
		default:
			if !s.skip() {
				return found, false
			}
			if match {
				found = jval{} // the last field of the name is not an object
			}
		}
		s.ws()
		if s.i >= len(s.b) {
			return found, false
		}
		switch s.b[s.i] {
		case ',':
			s.i++
		case '}':
			s.i++
			return found, true
		default:
			return found, false
		}
	}
}

// unquoteEq reports whether the quoted JSON string q, which holds
// escapes, is name.
func unquoteEq(q []byte, name string) bool {
	var out string
	return json.Unmarshal(q, &out) == nil && out == name
}

// scalar reads the value at s.i: a scalar is returned found; an object or
// an array is skipped and returned not found.
func (s *jscan) scalar() (jval, bool) {
	if s.i >= len(s.b) {
		return jval{}, false
	}
	start := s.i
	switch s.b[s.i] {
	case '"':
		esc, ok := s.str()
		if !ok {
			return jval{}, false
		}
		for _, c := range s.b[start+1 : s.i-1] {
			if c < ' ' {
				return jval{}, false // not JSON
			}
		}
		return jval{raw: s.b[start:s.i], str: true, escape: esc, found: true}, true
	case '{', '[':
		return jval{}, s.skip()
	}
	if !s.skip() {
		return jval{}, false
	}
	return jval{raw: s.b[start:s.i], found: true}, true
}

// str reads the string at s.i, and reports whether it holds escapes. It
// looks for the closing quote with bytes.IndexByte, so that the long
// strings of a body (a prompt) are passed at memory speed; what they hold
// is not checked (scalar checks the strings it returns).
func (s *jscan) str() (esc, ok bool) {
	if s.i >= len(s.b) || s.b[s.i] != '"' {
		return false, false
	}
	start := s.i + 1
	for j := start; ; {
		q := bytes.IndexByte(s.b[j:], '"')
		if q < 0 {
			return false, false
		}
		q += j
		n := 0 // backslashes before the quote: an odd number escapes it
		for p := q - 1; p >= start && s.b[p] == '\\'; p-- {
			n++
		}
		if n%2 == 0 {
			s.i = q + 1
			return bytes.IndexByte(s.b[start:q], '\\') >= 0, true
		}
		j = q + 1
	}
}

// skip reads the value at s.i, whatever it is. Objects and arrays are
// followed by their brackets alone, with a depth count: what is inside
// them is not checked beyond its strings.
func (s *jscan) skip() bool {
	if s.i >= len(s.b) {
		return false
	}
	switch s.b[s.i] {
	case '"':
		_, ok := s.str()
		return ok
	case '{', '[':
		depth := 0
		for s.i < len(s.b) {
			switch s.b[s.i] {
			case '"':
				if _, ok := s.str(); !ok {
					return false
				}
				continue
			case '{', '[':
				depth++
			case '}', ']':
				depth--
				if depth == 0 {
					s.i++
					return true
				}
			}
			s.i++
		}
		return false
	}
	switch s.b[s.i] {
	case 't':
		return s.lit("true")
	case 'f':
		return s.lit("false")
	case 'n':
		return s.lit("null")
	}
	return s.number()
}

// lit reads the literal l at s.i.
func (s *jscan) lit(l string) bool {
	if len(s.b)-s.i < len(l) || string(s.b[s.i:s.i+len(l)]) != l {
		return false
	}
	s.i += len(l)
	return true
}

// number reads the number at s.i: -?(0|[1-9][0-9]*)(.[0-9]+)?([eE][+-]?[0-9]+)?
func (s *jscan) number() bool {
	if s.i < len(s.b) && s.b[s.i] == '-' {
		s.i++
	}
	switch {
	case s.i < len(s.b) && s.b[s.i] == '0':
		s.i++
	case !s.digits():
		return false
	}
	if s.i < len(s.b) && s.b[s.i] == '.' {
		s.i++
		if !s.digits() {
			return false
		}
	}
	if s.i < len(s.b) && (s.b[s.i] == 'e' || s.b[s.i] == 'E') {
		s.i++
		if s.i < len(s.b) && (s.b[s.i] == '+' || s.b[s.i] == '-') {
			s.i++
		}
		if !s.digits() {
			return false
		}
	}
	return true
}

// digits reads one digit or more.
func (s *jscan) digits() bool {
	start := s.i
	for s.i < len(s.b) && s.b[s.i] >= '0' && s.b[s.i] <= '9' {
		s.i++
	}
	return s.i > start
}
