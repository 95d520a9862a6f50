package status

import (
	"math"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// The header families that [ParseBudget] reads, as they appear in
// [Budget.Family].
const (
	// FamilyOpenAI: x-ratelimit-{limit,remaining,reset}-{requests,tokens},
	// resets as Go-style durations ("1s", "6m0s", "20ms") or seconds.
	FamilyOpenAI = "openai"
	// FamilyAnthropic: anthropic-ratelimit-{requests,tokens,input-tokens,
	// output-tokens}-{limit,remaining,reset}, resets as RFC 3339 times.
	FamilyAnthropic = "anthropic"
	// FamilyGitHub: x-ratelimit-{limit,remaining,reset,used,resource}, the
	// reset as a Unix time in seconds (values up to 10^9 are read as
	// seconds to wait, as several APIs using these names send).
	FamilyGitHub = "github"
	// FamilyIETF: the RateLimit and RateLimit-Policy structured fields of
	// draft-ietf-httpapi-ratelimit-headers (versions 07 to 11).
	FamilyIETF = "ietf"
	// FamilyIETFLegacy: the RateLimit-Limit, RateLimit-Remaining and
	// RateLimit-Reset fields of the draft's earlier versions, the reset in
	// seconds to wait.
	FamilyIETFLegacy = "ietf-legacy"
)

// Window is what a response says about one quota window of its key. The
// zero value is an unknown window; [ParseBudget] sets Limit and Remaining
// to -1 when it does not know them, so that a test Remaining == 0 never
// holds for an unknown window, and leaves Reset zero.
type Window struct {
	// Known reports whether the window was read from the response: its
	// remaining count was present and parsed.
	Known bool
	// Limit is the window's quota, -1 when unknown.
	Limit int64
	// Remaining is what is left of the quota, -1 when unknown. A negative
	// value in a header reads as 0.
	Remaining int64
	// Reset is when the window resets, or the zero Time when the response
	// does not say. It is never before the now given to ParseBudget nor
	// more than a hundred years after it: a reset in the past reads as now.
	Reset time.Time
}

// Budget is what one response says about its key's quota. The zero value
// is an empty budget (nothing known). A Budget is a plain value, safe to
// copy and to share.
type Budget struct {
	// Requests is the request budget.
	Requests Window
	// Tokens is the token budget: the most constrained of the token, input
	// token and output token windows when the response has several.
	Tokens Window
	// Family is the header family that gave a known window (one of the
	// Family constants), "" when none did. When several families give
	// windows, it is the first in the order anthropic, openai, github,
	// ietf, ietf-legacy, and each window is the most constrained of all.
	Family string
	// Resource is GitHub's x-ratelimit-resource ("core", "search", ...),
	// when present.
	Resource string
	// Invalid counts the header field lines that were present but could
	// not be used, in whole or in part; they are ignored. It is never an
	// error for the request.
	Invalid int
}

// BudgetParser reads a [Budget] from response headers, relative to now. It
// is the hook type for APIs with headers of their own; [ParseBudget] is
// one. A BudgetParser must not keep or modify h.
type BudgetParser func(h http.Header, now time.Time) Budget

var _ BudgetParser = ParseBudget

// ParseBudget reads the rate-limit headers of a response: the families
// [FamilyOpenAI], [FamilyAnthropic], [FamilyGitHub], [FamilyIETF] and
// [FamilyIETFLegacy]. It reads header names as net/http canonicalizes them
// (http.Header.Get finds the same values), and the first line of each
// field except RateLimit and RateLimit-Policy, whose lines form one list.
//
// A window is read when its remaining-count field is present (for the
// IETF fields, the RateLimit field); its limit and reset fields are read
// with it. A limit or reset without its remaining count says nothing
// about what is left and is not read. GitHub's x-ratelimit-used is not
// read: it is the limit minus the remaining count.
//
// Relative resets (durations, seconds to wait, the t parameter) are
// measured from now; absolute ones (Unix times, RFC 3339) are taken as the
// server wrote them. The response's Date header is not used: it has a
// resolution of a second, and for relative values the time the response
// is read is the better origin. Resets are clamped to [now, now+100 years].
//
// A value that does not parse is ignored and counted in [Budget.Invalid];
// a remaining count that does not parse leaves its window unknown.
// Integers too large for an int64 saturate. A response without rate-limit
// headers costs nine map lookups and no allocation; a response with them
// does not allocate either. ParseBudget is safe for concurrent use; it
// does not modify h.
func ParseBudget(h http.Header, now time.Time) Budget {
	if len(h) <= len(budgetFields) {
		// A small header: a pass over it costs less than a lookup per
		// field.
		for name := range h {
			if isBudgetField(name) {
				return parseBudget(h, now)
			}
		}
	} else {
		for _, name := range budgetFields {
			if _, ok := h[name]; ok {
				return parseBudget(h, now)
			}
		}
	}
	return Budget{Requests: unknownWindow, Tokens: unknownWindow}
}

func isBudgetField(name string) bool {
	switch name {
	case budgetFields[0], budgetFields[1], budgetFields[2], budgetFields[3], budgetFields[4],
		budgetFields[5], budgetFields[6], budgetFields[7], budgetFields[8]:
		return true
	}
	return false
}

// budgetFields are the fields that ParseBudget reads first: with none of
// them, there is nothing to read.
var budgetFields = [...]string{
	"X-Ratelimit-Remaining-Requests", "X-Ratelimit-Remaining-Tokens", "X-Ratelimit-Remaining",
	"Anthropic-Ratelimit-Requests-Remaining", "Anthropic-Ratelimit-Tokens-Remaining",
	"Anthropic-Ratelimit-Input-Tokens-Remaining", "Anthropic-Ratelimit-Output-Tokens-Remaining",
	"Ratelimit", "Ratelimit-Remaining",
}

func parseBudget(h http.Header, now time.Time) Budget {
	b := Budget{Requests: unknownWindow, Tokens: unknownWindow}
	p := budgetParser{h: h, now: now}

	req := p.window("Anthropic-Ratelimit-Requests-Remaining", "Anthropic-Ratelimit-Requests-Limit", "Anthropic-Ratelimit-Requests-Reset", resetRFC3339)
	tok := p.window("Anthropic-Ratelimit-Tokens-Remaining", "Anthropic-Ratelimit-Tokens-Limit", "Anthropic-Ratelimit-Tokens-Reset", resetRFC3339)
	tok = tighter(tok, p.window("Anthropic-Ratelimit-Input-Tokens-Remaining", "Anthropic-Ratelimit-Input-Tokens-Limit", "Anthropic-Ratelimit-Input-Tokens-Reset", resetRFC3339))
	tok = tighter(tok, p.window("Anthropic-Ratelimit-Output-Tokens-Remaining", "Anthropic-Ratelimit-Output-Tokens-Limit", "Anthropic-Ratelimit-Output-Tokens-Reset", resetRFC3339))
	b.add(FamilyAnthropic, req, tok)

	req = p.window("X-Ratelimit-Remaining-Requests", "X-Ratelimit-Limit-Requests", "X-Ratelimit-Reset-Requests", resetDuration)
	tok = p.window("X-Ratelimit-Remaining-Tokens", "X-Ratelimit-Limit-Tokens", "X-Ratelimit-Reset-Tokens", resetDuration)
	b.add(FamilyOpenAI, req, tok)

	if gh := p.window("X-Ratelimit-Remaining", "X-Ratelimit-Limit", "X-Ratelimit-Reset", resetUnixOrDelta); gh.Known {
		b.add(FamilyGitHub, gh, unknownWindow)
		b.Resource = headerValue(h, "X-Ratelimit-Resource")
	}

	if lines := h["Ratelimit"]; len(lines) > 0 {
		req, tok = p.structured(lines)
		b.add(FamilyIETF, req, tok)
	}

	b.add(FamilyIETFLegacy, p.window("Ratelimit-Remaining", "Ratelimit-Limit", "Ratelimit-Reset", resetUnixOrDelta), unknownWindow)
	b.Invalid = p.invalid
	return b
}

// Exhausted reports whether some known window has nothing left (Remaining
// 0) and does not reset by now: a request now would likely be refused.
// until is the latest Reset of those windows, or the zero Time when none
// of them says when it resets (the caller then applies its own wait). A
// window whose Reset is not after now has reset, and is not exhausted.
func (b Budget) Exhausted(now time.Time) (until time.Time, ok bool) {
	for _, w := range [...]Window{b.Requests, b.Tokens} {
		if !w.Known || w.Remaining > 0 {
			continue
		}
		switch {
		case w.Reset.IsZero():
			ok = true
		case w.Reset.After(now):
			ok = true
			if w.Reset.After(until) {
				until = w.Reset
			}
		}
	}
	return until, ok
}

// RateLimitEvidence reports whether the headers show that the key is rate
// limited: a usable Retry-After or retry-after-ms value, or a budget that
// is [Budget.Exhausted] at now. A classifier can use it to tell a rate
// limit from a refused key on codes such as 403, which GitHub sends with
// x-ratelimit-remaining: 0 when a key's quota is spent.
func RateLimitEvidence(h http.Header, now time.Time) bool {
	if v := headerValue(h, "Retry-After-Ms"); v != "" {
		if f, err := strconv.ParseFloat(v, 64); err == nil && !math.IsNaN(f) && f >= 0 {
			return true
		}
	}
	if v := headerValue(h, "Retry-After"); v != "" {
		if _, ok := parseRetryAfter(v, now); ok {
			return true
		}
	}
	_, ok := ParseBudget(h, now).Exhausted(now)
	return ok
}

var unknownWindow = Window{Limit: -1, Remaining: -1}

// add merges the windows of one family into b.
func (b *Budget) add(family string, req, tok Window) {
	if b.Family == "" && (req.Known || tok.Known) {
		b.Family = family
	}
	b.Requests = tighter(b.Requests, req)
	b.Tokens = tighter(b.Tokens, tok)
}

// tighter returns the more constrained of two windows: a known one over an
// unknown one; an exhausted one (Remaining 0) over one with quota left, and
// of two exhausted ones the later to reset; else the one with the smaller
// share left (Remaining/Limit) when both limits are known, or the smaller
// Remaining. Of two unknown windows, the one with a known Limit.
func tighter(a, b Window) Window {
	switch {
	case !b.Known:
		if !a.Known && a.Limit < 0 && b.Limit >= 0 {
			return b
		}
		return a
	case !a.Known:
		return b
	}
	ea, eb := a.Remaining == 0, b.Remaining == 0
	switch {
	case ea != eb:
		if eb {
			return b
		}
		return a
	case ea:
		if b.Reset.After(a.Reset) {
			return b
		}
		return a
	case a.Limit > 0 && b.Limit > 0:
		if float64(b.Remaining)/float64(b.Limit) < float64(a.Remaining)/float64(a.Limit) {
			return b
		}
		return a
	case b.Remaining < a.Remaining:
		return b
	}
	return a
}

type resetKind uint8

const (
	resetDuration    resetKind = iota // Go duration or seconds, relative
	resetUnixOrDelta                  // Unix seconds above 10^9, else seconds to wait
	resetRFC3339                      // an absolute RFC 3339 time
)

// budgetParser reads the windows of one response and counts what it cannot
// use.
type budgetParser struct {
	h       http.Header
	now     time.Time
	invalid int
}

// window reads a window from its three headers when its remaining count is
// present and parses.
func (p *budgetParser) window(remainingName, limitName, resetName string, kind resetKind) Window {
	v := headerValue(p.h, remainingName)
	if v == "" {
		return unknownWindow
	}
	n, ok := parseSigned(v)
	if !ok {
		p.invalid++
		return unknownWindow
	}
	w := Window{Known: true, Limit: -1, Remaining: max(n, 0)}
	if v := headerValue(p.h, limitName); v != "" {
		if n, ok := parseCount(leadingItem(v, kind)); ok {
			w.Limit = n
		} else {
			p.invalid++
		}
	}
	if v := headerValue(p.h, resetName); v != "" {
		if t, ok := p.reset(v, kind); ok {
			w.Reset = t
		} else {
			p.invalid++
		}
	}
	return w
}

// leadingItem returns the first number of a RateLimit-Limit value, which
// earlier drafts let carry a policy ("10, 10;w=1, 50;w=60").
func leadingItem(v string, kind resetKind) string {
	if kind != resetUnixOrDelta {
		return v
	}
	if i := strings.IndexAny(v, ",;"); i >= 0 {
		return strings.TrimSpace(v[:i])
	}
	return v
}

func (p *budgetParser) reset(v string, kind resetKind) (time.Time, bool) {
	var d time.Duration
	switch kind {
	case resetDuration:
		var ok bool
		if d, ok = parseResetDuration(v); !ok {
			return time.Time{}, false
		}
	case resetUnixOrDelta:
		var ok bool
		if d, ok = parseReset(v, p.now); !ok {
			return time.Time{}, false
		}
	default:
		t, err := time.Parse(time.RFC3339, v)
		if err != nil {
			return time.Time{}, false
		}
		d = untilTime(t, p.now)
	}
	return p.now.Add(d), true
}

// parseCount parses a non-negative decimal integer, saturating at the
// largest int64.
func parseCount(v string) (int64, bool) {
	if v == "" || v[0] < '0' || v[0] > '9' {
		return 0, false
	}
	var n int64
	for i := 0; i < len(v); i++ {
		c := v[i]
		if c < '0' || c > '9' {
			return 0, false
		}
		if n > (math.MaxInt64-9)/10 {
			n = math.MaxInt64 // saturate, keep checking the syntax
			continue
		}
		n = n*10 + int64(c-'0')
	}
	return n, true
}

// parseSigned parses a decimal integer that may be negative; negative
// values saturate at the smallest int64 like positive ones at the largest.
func parseSigned(v string) (int64, bool) {
	if strings.HasPrefix(v, "-") {
		n, ok := parseCount(v[1:])
		return -n, ok
	}
	return parseCount(v)
}

// Units of a RateLimit-Policy item, as far as Budget cares.
const (
	unitRequests = iota
	unitTokens   // "tokens", an extension some servers use
	unitOther    // content-bytes, concurrent-requests, unknown units: ignored
)

// maxPolicies bounds the RateLimit-Policy items ParseBudget matches; the
// items after it are ignored (their RateLimit items get no Limit).
const maxPolicies = 16

type policy struct {
	name string
	q    int64
	unit uint8
}

// structured reads the RateLimit and RateLimit-Policy fields. Each field
// line is parsed as a Structured Field List (RFC 9651); a line that does
// not parse, or whose items lack the required parameter, is ignored whole
// and counted.
func (p *budgetParser) structured(lines []string) (req, tok Window) {
	var pols [maxPolicies]policy
	np := 0
	for _, line := range p.h["Ratelimit-Policy"] {
		l := sfList{s: line}
		start := np
		for {
			it, ok := l.next()
			if !ok {
				break
			}
			if it.q < 0 {
				l.bad = true
				break
			}
			if np < maxPolicies {
				pols[np] = policy{name: it.name, q: it.q, unit: it.unit}
				np++
			}
		}
		if l.bad {
			np = start
			p.invalid++
		}
	}
	req, tok = unknownWindow, unknownWindow
	for _, line := range lines {
		l := sfList{s: line}
		lreq, ltok := unknownWindow, unknownWindow
		for {
			it, ok := l.next()
			if !ok {
				break
			}
			if it.r < 0 || it.t < -1 {
				l.bad = true
				break
			}
			w := Window{Known: true, Limit: -1, Remaining: it.r}
			if it.t >= 0 {
				w.Reset = p.now.Add(clampSeconds(uint64(it.t)))
			}
			unit := it.unit
			for _, pol := range pols[:np] {
				if pol.name == it.name {
					w.Limit = pol.q
					if !it.hasUnit {
						unit = pol.unit
					}
					break
				}
			}
			switch unit {
			case unitRequests:
				lreq = tighter(lreq, w)
			case unitTokens:
				ltok = tighter(ltok, w)
			}
		}
		if l.bad {
			p.invalid++
			continue
		}
		req, tok = tighter(req, lreq), tighter(tok, ltok)
	}
	return req, tok
}

// sfItem is one member of a Structured Field List with the parameters that
// ParseBudget reads. Integer parameters are -1 when absent and -2 when
// present but not a non-negative integer.
type sfItem struct {
	name       string // the raw text of the item's String or Token value
	r, t, q, w int64
	unit       uint8
	hasUnit    bool
}

// sfList walks a Structured Field List (RFC 9651 section 4.2.1) without
// allocating. It accepts the members ParseBudget needs, an Item whose bare
// item is a String or Token, and fails on anything else (Inner Lists,
// other bare items) by setting bad.
type sfList struct {
	s     string
	i     int
	bad   bool
	begun bool
}

// next returns the next member, or false at the end of the list or on a
// syntax error (then bad is set).
func (l *sfList) next() (it sfItem, ok bool) {
	if l.bad {
		return it, false
	}
	if !l.begun {
		l.begun = true
		l.skipSP()
		if l.i == len(l.s) { // an empty field line adds no member
			return it, false
		}
	} else {
		l.skipOWS()
		if l.i == len(l.s) {
			return it, false
		}
		if l.s[l.i] != ',' {
			return l.fail()
		}
		l.i++
		l.skipOWS()
		if l.i == len(l.s) { // trailing comma
			return l.fail()
		}
	}
	it = sfItem{r: -1, t: -1, q: -1, w: -1}
	var ok2 bool
	switch c := l.s[l.i]; {
	case c == '"':
		it.name, ok2 = l.str()
	case c == '*' || isAlpha(c):
		it.name, ok2 = l.token(), true
	}
	if !ok2 {
		return l.fail()
	}
	for l.i < len(l.s) && l.s[l.i] == ';' {
		l.i++
		l.skipSP()
		key := l.key()
		if key == "" {
			return l.fail()
		}
		var val sfValue
		if l.i < len(l.s) && l.s[l.i] == '=' {
			l.i++
			if val, ok2 = l.bareItem(); !ok2 {
				return l.fail()
			}
		} else {
			val = sfValue{kind: sfBool}
		}
		switch key {
		case "r":
			it.r = val.count()
		case "t":
			it.t = val.count()
		case "q":
			it.q = val.count()
		case "w":
			it.w = val.count()
		case "qu":
			it.hasUnit = true
			switch {
			case val.kind != sfString && val.kind != sfToken:
				return l.fail()
			case val.str == "requests":
				it.unit = unitRequests
			case val.str == "tokens":
				it.unit = unitTokens
			default:
				it.unit = unitOther
			}
		}
	}
	return it, true
}

func (l *sfList) fail() (sfItem, bool) {
	l.bad = true
	return sfItem{}, false
}

func (l *sfList) skipSP() {
	for l.i < len(l.s) && l.s[l.i] == ' ' {
		l.i++
	}
}

func (l *sfList) skipOWS() {
	for l.i < len(l.s) && (l.s[l.i] == ' ' || l.s[l.i] == '\t') {
		l.i++
	}
}

// str reads a String and returns its raw text between the quotes (escapes
// are kept as written).
func (l *sfList) str() (string, bool) {
	start := l.i + 1
	for i := start; i < len(l.s); i++ {
		switch c := l.s[i]; {
		case c == '\\':
			if i+1 >= len(l.s) || (l.s[i+1] != '"' && l.s[i+1] != '\\') {
				return "", false
			}
			i++
		case c == '"':
			l.i = i + 1
			return l.s[start:i], true
		case c < 0x20 || c > 0x7e:
			return "", false
		}
	}
	return "", false
}

// token reads a Token; the first character was checked.
func (l *sfList) token() string {
	start := l.i
	l.i++
	for l.i < len(l.s) && (isTchar(l.s[l.i]) || l.s[l.i] == ':' || l.s[l.i] == '/') {
		l.i++
	}
	return l.s[start:l.i]
}

// key reads a parameter key, "" when there is none.
func (l *sfList) key() string {
	start := l.i
	if l.i >= len(l.s) || !(l.s[l.i] == '*' || (l.s[l.i] >= 'a' && l.s[l.i] <= 'z')) {
		return ""
	}
	l.i++
	for l.i < len(l.s) {
		c := l.s[l.i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '_' || c == '-' || c == '.' || c == '*') {
			break
		}
		l.i++
	}
	return l.s[start:l.i]
}

type sfKind uint8

const (
	sfInteger sfKind = iota
	sfDecimal
	sfString
	sfToken
	sfBytes
	sfBool
)

type sfValue struct {
	kind sfKind
	n    int64 // the Integer's value
	str  string
}

// count returns an Integer value if it is not negative, else -2.
func (v sfValue) count() int64 {
	if v.kind != sfInteger || v.n < 0 {
		return -2
	}
	return v.n
}

// bareItem reads a parameter value.
func (l *sfList) bareItem() (sfValue, bool) {
	if l.i >= len(l.s) {
		return sfValue{}, false
	}
	switch c := l.s[l.i]; {
	case c == '-' || c >= '0' && c <= '9':
		return l.number()
	case c == '"':
		s, ok := l.str()
		return sfValue{kind: sfString, str: s}, ok
	case c == '*' || isAlpha(c):
		return sfValue{kind: sfToken, str: l.token()}, true
	case c == ':':
		end := strings.IndexByte(l.s[l.i+1:], ':')
		if end < 0 {
			return sfValue{}, false
		}
		for _, b := range []byte(l.s[l.i+1 : l.i+1+end]) {
			if !(isAlpha(b) || b >= '0' && b <= '9' || b == '+' || b == '/' || b == '=') {
				return sfValue{}, false
			}
		}
		l.i += end + 2
		return sfValue{kind: sfBytes}, true
	case c == '?':
		if l.i+1 < len(l.s) && (l.s[l.i+1] == '0' || l.s[l.i+1] == '1') {
			l.i += 2
			return sfValue{kind: sfBool}, true
		}
	}
	return sfValue{}, false
}

// number reads an Integer (at most 15 digits) or a Decimal.
func (l *sfList) number() (sfValue, bool) {
	neg := false
	if l.s[l.i] == '-' {
		neg = true
		l.i++
	}
	start := l.i
	var n int64
	for l.i < len(l.s) && l.s[l.i] >= '0' && l.s[l.i] <= '9' {
		n = n*10 + int64(l.s[l.i]-'0')
		l.i++
		if l.i-start > 15 {
			return sfValue{}, false
		}
	}
	digits := l.i - start
	if digits == 0 {
		return sfValue{}, false
	}
	if l.i < len(l.s) && l.s[l.i] == '.' {
		if digits > 12 {
			return sfValue{}, false
		}
		l.i++
		fs := l.i
		for l.i < len(l.s) && l.s[l.i] >= '0' && l.s[l.i] <= '9' {
			l.i++
		}
		if f := l.i - fs; f < 1 || f > 3 {
			return sfValue{}, false
		}
		return sfValue{kind: sfDecimal}, true
	}
	if neg {
		n = -n
	}
	return sfValue{kind: sfInteger, n: n}, true
}

func isAlpha(c byte) bool { return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' }

// isTchar reports whether c is a tchar of RFC 9110.
func isTchar(c byte) bool {
	if isAlpha(c) || c >= '0' && c <= '9' {
		return true
	}
	return strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0
}
