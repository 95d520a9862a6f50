package config

import (
	"fmt"
	"net/http"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/apipool-ng/apipool"
	"go.yaml.in/yaml/v3"
)

// Routing (issue 25): each key's tier, weight and models, from its key
// file line (tier=N weight=N models=a,b*) or from the upstream's
// key_tiers, key_weights and key_models;
// and the upstream's routing section: where a request's model and session
// come from, and what a rate limit rests.

// Routing is an upstream's routing settings; the zero Routing is the
// library's defaults (no model, keys rested whole, no sessions).
type Routing struct {
	// Model is where a request's model comes from: "" (nowhere), "json"
	// (the body's "model" field: apipool.ModelFromJSON), "path" (a
	// Gemini-style path: apipool.ModelFromPath) or "github" (GitHub's
	// rate-limit resource: apipool.ResourceFromGitHubPath).
	Model string
	// CooldownScope is what a rate limit rests: the key, or the pair of
	// the key and the request's model (which needs Model).
	CooldownScope apipool.CooldownScope
	// SessionHeader or SessionJSON (at most one set) is where a request's
	// session comes from: a header (canonical form), or a field of the
	// JSON body ("user", "metadata.user_id"). Both "": no sessions.
	SessionHeader, SessionJSON string
	// MaxSessions is how many sessions are remembered; 0: the library's
	// default (apipool.DefaultMaxSessions).
	MaxSessions int
}

// Sessions reports whether r pins sessions to keys.
func (r Routing) Sessions() bool { return r.SessionHeader != "" || r.SessionJSON != "" }

// ModelSources are routing.model's values.
var ModelSources = []string{"json", "path", "github"}

// CooldownScopes are routing.cooldown_scope's values, in the order of
// apipool's CooldownScope constants.
var CooldownScopes = []string{"key", "model"}

// MaxTier bounds a key's tier.
const MaxTier = 1000

// MaxWeight bounds a key's weight (apipool.Key.Weight's bound).
const MaxWeight = 1_000_000

type routingT struct {
	Line          int
	Model         Value[string] `yaml:"model"`
	CooldownScope Value[string] `yaml:"cooldown_scope"`
	Sessions      *sessionsT    `yaml:"sessions"`
	MaxSessions   Value[int]    `yaml:"max_sessions"`
}

type sessionsT struct {
	Line   int
	Header Value[string] `yaml:"header"`
	JSON   Value[string] `yaml:"json"`
}

// namedMap is a YAML mapping from names the user chooses (key IDs, model
// names) to values, kept in the file's order with their lines. The
// decoder has no maps of its own: settings' names are fixed.
type namedMap[T any] struct {
	Line    int
	Set     bool
	Entries []namedEntry[T]
}

type namedEntry[T any] struct {
	Name  string
	Line  int
	Field string // the entry's field path, for errors
	V     T
}

// entryField names a map's entry in a field path: field["name"], or
// field[i] when the name could be a secret (a key written as an ID).
func entryField(field, name string, i int) string {
	if safeToShow(name) && utf8.ValidString(name) {
		return field + "[" + strconv.Quote(name) + "]"
	}
	return fmt.Sprintf("%s[entry %d]", field, i+1)
}

func (m *namedMap[T]) decodeYAML(d *decoder, n *yaml.Node, field string) {
	m.Line, m.Set = n.Line, true
	if isNull(n) {
		return
	}
	if n.Kind != yaml.MappingNode {
		d.bad(n.Line, field, "want a mapping of names to values, got %s", kindName(n.Kind))
		return
	}
	seen := map[string]int{}
	for i, p := range d.pairs(n, field, 0) {
		k := deref(p.key)
		if k.Kind != yaml.ScalarNode {
			d.fail(k.Line, field, "want a name, got %s as a key", kindName(k.Kind))
			continue
		}
		e := namedEntry[T]{Name: k.Value, Line: k.Line, Field: entryField(field, k.Value, i)}
		if line, dup := seen[e.Name]; dup {
			d.fail(k.Line, e.Field, "set twice (also on line %d)", line)
			continue
		}
		seen[e.Name] = k.Line
		d.node(p.val, reflect.ValueOf(&e.V).Elem(), e.Field)
		m.Entries = append(m.Entries, e)
	}
}

// modelList is a list of models, or one model alone.
type modelList []Value[string]

func (l *modelList) decodeYAML(d *decoder, n *yaml.Node, field string) {
	if n.Kind == yaml.ScalarNode && !isNull(n) {
		var v Value[string]
		v.decodeYAML(d, n, field)
		*l = modelList{v}
		return
	}
	var s []Value[string]
	d.node(n, reflect.ValueOf(&s).Elem(), field)
	*l = s
}

// keyOpts are the routing options a key file's line gave after its
// secret.
type keyOpts struct {
	tier, weight, models bool // given
	Tier, Weight         int
	Models               []string
}

// keyOptionNames are the options a key file's line may end with.
var keyOptionNames = []string{"tier", "weight", "models"}

// keyOptions takes the options off the end of a key file line's fields:
// "tier=N", "weight=N" and "models=a,b*", in any order, after the secret. A field is
// an option when its name (before '=') is one of keyOptionNames; on a
// line that would otherwise have too many fields, a trailing field shaped
// name=value is taken as a misspelt option. Nothing else is: a secret
// holding '=' (base64 padding) stays a secret. problem names what is
// wrong without quoting the line, which holds a secret.
func keyOptions(fields []string) (rest []string, o keyOpts, problem string) {
	rest = fields
	for len(rest) > 1 {
		f := rest[len(rest)-1]
		name, val, ok := strings.Cut(f, "=")
		if !ok {
			break
		}
		known := slices.Contains(keyOptionNames, name)
		if !known {
			if len(rest) <= 2 || !settingLike(name) {
				break
			}
			// The name is quoted only when it is a near miss of an
			// option's: another word may be a secret's end, after a space.
			if s := suggest(name, keyOptionNames); s != "" {
				return fields, o, fmt.Sprintf("unknown option %s; did you mean %s?", name, s)
			}
			return fields, o, "an unknown option (not quoted: it may be part of a secret); the options are tier=N, weight=N and models=a,b*"
		}
		rest = rest[:len(rest)-1]
		switch name {
		case "tier":
			if o.tier {
				return fields, o, "tier= given twice"
			}
			o.tier = true
			n, err := strconv.Atoi(val)
			if err != nil || n < 0 || n > MaxTier {
				return fields, o, fmt.Sprintf("tier= wants a whole number from 0 (the first) to %d", MaxTier)
			}
			o.Tier = n
		case "weight":
			if o.weight {
				return fields, o, "weight= given twice"
			}
			o.weight = true
			n, err := strconv.Atoi(val)
			if err != nil || n < 1 || n > MaxWeight {
				return fields, o, fmt.Sprintf("weight= wants a whole number from 1 to %d", MaxWeight)
			}
			o.Weight = n
		case "models":
			if o.models {
				return fields, o, "models= given twice"
			}
			o.models = true
			o.Models = strings.Split(val, ",")
			for i, m := range o.Models {
				if p := modelProblem(m); p != "" {
					return fields, o, fmt.Sprintf("models= item %d %s", i+1, p)
				}
			}
		}
	}
	return rest, o, ""
}

// modelProblem says what is wrong with m as a model name or pattern
// (apipool.Key.Models), without quoting it, or returns "".
func modelProblem(m string) string {
	switch {
	case m == "":
		return "is empty"
	case len(m) > 256:
		return "is longer than 256 bytes"
	case !utf8.ValidString(m):
		return "is not valid UTF-8"
	case strings.IndexByte(m[:len(m)-1], '*') >= 0:
		return "has a '*' before its end: a pattern is a prefix and one '*' at its end (gpt-4o*)"
	case strings.ContainsFunc(m, func(r rune) bool { return r <= ' ' || r == 0x7f }):
		return "holds a space or a control character"
	}
	return ""
}

// CheckModels checks a key's models as a key file's models= does (the
// admin API's check). Its error does not quote them.
func CheckModels(models []string) error {
	if len(models) > 1000 {
		return fmt.Errorf("%d models, more than 1000", len(models))
	}
	for i, m := range models {
		if p := modelProblem(m); p != "" {
			return fmt.Errorf("models[%d] %s", i, p)
		}
	}
	return nil
}

// routing checks an upstream's routing section, and gives its keys the
// tiers, weights and models of key_tiers, key_weights and key_models. opts
// are the options the keys' lines gave, by ID.
func (v *validator) routing(u *upstreamT, at string, out *Upstream, opts map[string]keyOpts) {
	if r := u.Routing; r != nil {
		out.Routing = v.routingSection(r, at+".routing")
	}
	byID := map[string]int{}
	var ids []string
	for i, k := range out.Keys {
		id := strings.TrimPrefix(k.ID, out.Name+"/")
		byID[id] = i
		ids = append(ids, id)
	}
	unknownID := func(line int, field, id string) {
		hint := ""
		if safeToShow(id) {
			if s := suggest(id, ids); s != "" {
				hint = "; did you mean " + strconv.Quote(s) + "?"
			}
		}
		v.fail(line, field, "no key of this upstream has this ID (a key's ID is its key file line's first word, or the first 8 hex digits of its fingerprint when the line gives none)%s", hint)
	}
	// byIDInts gives the keys a whole number by ID (key_tiers,
	// key_weights): what names an option= that a key's line may give.
	byIDInts := func(entries []namedEntry[Value[int]], what string, onLine func(keyOpts) bool, lo, hi int, want string, set func(*apipool.Key, int)) {
		for _, e := range entries {
			i, ok := byID[e.Name]
			switch {
			case !ok:
				unknownID(e.Line, e.Field, e.Name)
			case onLine(opts[e.Name]):
				v.fail(e.Line, e.Field, "the key file's line gives this key's %s= already: give it in one place", what)
			case e.V.V < lo || e.V.V > hi:
				v.fail(e.V.Line, e.Field, "want %s to %d", want, hi)
			default:
				set(&out.Keys[i], e.V.V)
			}
		}
	}
	byIDInts(u.KeyTiers.Entries, "tier", func(o keyOpts) bool { return o.tier }, 0, MaxTier, "a tier from 0 (the first)", func(k *apipool.Key, n int) { k.Tier = n })
	byIDInts(u.KeyWeights.Entries, "weight", func(o keyOpts) bool { return o.weight }, 1, MaxWeight, "a weight from 1", func(k *apipool.Key, n int) { k.Weight = n })
	if out.Strategy != apipool.Weighted {
		// A weight would be read by the weighted strategy only.
		if len(u.KeyWeights.Entries) > 0 {
			e := u.KeyWeights.Entries[0]
			v.fail(e.Line, at+".key_weights", "weights are read by strategy: weighted only; set it, or leave the weights out")
		} else if i := slices.IndexFunc(out.Keys, func(k apipool.Key) bool { return k.Weight != 0 }); i >= 0 {
			v.fail(u.Keys.File.Line, at+".keys.file", "key %s has weight= in the key file: weights are read by strategy: weighted only; set it, or leave the weights out", out.Keys[i].ID)
		}
	}
	for _, e := range u.KeyModels.Entries {
		i, ok := byID[e.Name]
		switch {
		case !ok:
			unknownID(e.Line, e.Field, e.Name)
			continue
		case opts[e.Name].models:
			v.fail(e.Line, e.Field, "the key file's line gives this key's models= already: give them in one place")
			continue
		case len(e.V) == 0:
			v.fail(e.Line, e.Field, "an empty list: leave the key out for every model")
			continue
		}
		var models []string
		for j, m := range e.V {
			if p := modelProblem(m.V); p != "" {
				v.fail(m.Line, fmt.Sprintf("%s[%d]", e.Field, j), "the model %s", p)
			}
			models = append(models, m.V)
		}
		out.Keys[i].Models = models
	}
	if out.Routing.Model != "" {
		return
	}
	// Keys that list models need a request's model to match.
	for _, e := range u.KeyModels.Entries {
		if _, ok := byID[e.Name]; ok {
			v.fail(e.Line, e.Field, "a key's models need routing.model (json, path or github): without it no request has a model to match")
			return
		}
	}
	for _, k := range out.Keys {
		if len(k.Models) > 0 {
			field, line := at+".keys.file", u.Keys.File.Line
			v.fail(line, field, "key %s lists models= in the key file: they need routing.model (json, path or github), without which no request has a model to match", k.ID)
			return
		}
	}
}

func (v *validator) routingSection(r *routingT, at string) Routing {
	var out Routing
	if r.Model.Set {
		if slices.Contains(ModelSources, r.Model.V) {
			out.Model = r.Model.V
		} else {
			v.fail(r.Model.Line, at+".model", "want json (the body's \"model\", OpenAI and Anthropic), path (/models/NAME:..., Gemini) or github (GitHub's rate-limit resource), got %s%s", shown(r.Model), didYouMean(r.Model, ModelSources))
		}
	}
	if r.CooldownScope.Set {
		switch i := slices.Index(CooldownScopes, r.CooldownScope.V); {
		case i < 0:
			v.fail(r.CooldownScope.Line, at+".cooldown_scope", "want key (a rate limit rests the key) or model (the key for that model only), got %s%s", shown(r.CooldownScope), didYouMean(r.CooldownScope, CooldownScopes))
		case i == 1 && !r.Model.Set:
			v.fail(r.CooldownScope.Line, at+".cooldown_scope", "model needs routing.model (json, path or github): without it no request has a model to rest the key for")
		default:
			out.CooldownScope = apipool.CooldownScope(i)
		}
	}
	if s := r.Sessions; s != nil {
		switch {
		case s.Header.Set && s.JSON.Set:
			v.fail(s.JSON.Line, at+".sessions", "give header or json, not both")
		case s.Header.Set:
			if !validHeaderName(s.Header.V) {
				v.fail(s.Header.Line, at+".sessions.header", "want a header name such as X-Session-Id, got %s", shown(s.Header))
			}
			out.SessionHeader = http.CanonicalHeaderKey(s.Header.V)
		case s.JSON.Set:
			if p := jsonPathProblem(s.JSON.V); p != "" {
				v.fail(s.JSON.Line, at+".sessions.json", "want a field of the JSON body, or a dotted path into it, such as user, prompt_cache_key or metadata.user_id: %s", p)
			}
			out.SessionJSON = s.JSON.V
		default:
			v.fail(s.Line, at+".sessions", "give header (such as X-Session-Id) or json (a field of the body, such as metadata.user_id)")
		}
	}
	if x := r.MaxSessions; x.Set {
		switch {
		case r.Sessions == nil:
			v.fail(x.Line, at+".max_sessions", "needs routing.sessions: without it no session is remembered")
		case x.V < 1 || x.V > apipool.MaxSessionsLimit:
			v.fail(x.Line, at+".max_sessions", "want 1 to %d (leave it out for %d)", apipool.MaxSessionsLimit, apipool.DefaultMaxSessions)
		default:
			out.MaxSessions = x.V
		}
	}
	return out
}

// validHeaderName reports whether s is an HTTP header name (a token).
func validHeaderName(s string) bool {
	if s == "" || len(s) > 128 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0) {
			return false
		}
	}
	return true
}

// jsonPathProblem says what is wrong with p as SessionFromJSON's path,
// without quoting it, or returns "".
func jsonPathProblem(p string) string {
	switch {
	case p == "":
		return "it is empty"
	case len(p) > 256:
		return "it is longer than 256 bytes"
	case !utf8.ValidString(p):
		return "it is not valid UTF-8"
	}
	for part := range strings.SplitSeq(p, ".") {
		if part == "" {
			return "it has an empty part (a leading, trailing or doubled '.')"
		}
	}
	return ""
}
