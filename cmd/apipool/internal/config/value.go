package config

import (
	"encoding"
	"fmt"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// Value is one scalar of the file, with the line it was on. Its string
// form is expanded (${VAR}) before it is decoded into T.
type Value[T any] struct {
	V    T
	Line int
	Set  bool
	Raw  string // the text before expansion
}

// raw reports whether the value was written as exactly one ${VAR}.
func (v Value[T]) raw() bool { return wholeVar(v.Raw) }

// fromVars reports whether any of the value came from a variable.
func (v Value[T]) fromVars() bool { return len(refs(v.Raw)) > 0 }

// decodeYAML reads the scalar n into v. Its errors never quote the value:
// they say what the setting wants, and which variables the value came
// from.
func (v *Value[T]) decodeYAML(d *decoder, n *yaml.Node, field string) {
	v.Line, v.Set = n.Line, true
	want := typeName(v.V)
	if n.Kind != yaml.ScalarNode {
		d.bad(n.Line, field, "want %s, got %s", want, kindName(n.Kind))
		return
	}
	v.Raw = n.Value
	s, err := expand(n.Value, d.lookup)
	if err != nil {
		d.bad(n.Line, field, "%v", err)
		return
	}
	from := ""
	if vars := refs(n.Value); len(vars) > 0 {
		from = " (the value comes from " + strings.Join(vars, ", ") + " and is not shown)"
	}
	null := n.ShortTag() == "!!null"
	if s != n.Value {
		// Let the expanded text resolve anew: "${PORT}" holding 8080
		// decodes into an int.
		m := *n
		m.Value, m.Tag, m.Style = s, "", 0
		n = &m
	}
	if tu, ok := any(&v.V).(encoding.TextUnmarshaler); ok {
		if err := tu.UnmarshalText([]byte(n.Value)); err != nil {
			d.bad(n.Line, field, "%v%s", err, from)
		}
		return
	}
	if null {
		d.bad(n.Line, field, "empty value: want %s", want)
		return
	}
	if err := n.Decode(&v.V); err != nil {
		// yaml's error quotes the value: say what is wanted instead.
		d.bad(n.Line, field, "want %s%s", want, from)
	}
}

func typeName(v any) string {
	switch v.(type) {
	case int, int64:
		return "an integer"
	case float64:
		return "a number"
	case bool:
		return "true or false"
	case string:
		return "a single value"
	case Duration:
		return "a duration"
	case Size:
		return "a size"
	}
	return fmt.Sprintf("%T", v)
}

func kindName(k yaml.Kind) string {
	switch k {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.AliasNode:
		return "an alias"
	case yaml.ScalarNode:
		return "a single value"
	}
	return "a document"
}

// expand replaces ${VAR} with the variable's value and $$ with $. Any
// other $ is an error, so that a typo is not sent upstream as text. Its
// errors never quote the text: what is inside ${...} may be a key written
// in the wrong place.
func expand(s string, lookup func(string) (string, bool)) (string, error) {
	if !strings.Contains(s, "$") {
		return s, nil
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c != '$' {
			b.WriteByte(c)
			continue
		}
		if i+1 < len(s) && s[i+1] == '$' {
			b.WriteByte('$')
			i++
			continue
		}
		if i+1 >= len(s) || s[i+1] != '{' {
			return "", fmt.Errorf("a lone $ at offset %d: write ${VAR} for a variable or $$ for a dollar sign", i)
		}
		end := strings.IndexByte(s[i+2:], '}')
		if end < 0 {
			return "", fmt.Errorf("unclosed ${ at offset %d", i)
		}
		name := s[i+2 : i+2+end]
		if p := nameProblem(name); p != "" {
			return "", fmt.Errorf("the ${...} at offset %d does not hold a variable name: %s", i, p)
		}
		val, ok := lookup(name)
		if !ok {
			return "", fmt.Errorf("%s is not set", varRef(name))
		}
		b.WriteString(val)
		i += 2 + end
	}
	return b.String(), nil
}

// refs returns the ${VAR} references of s, as they can be shown in an
// error (see varRef), in order.
func refs(s string) []string {
	var out []string
	for i := 0; i < len(s); i++ {
		if s[i] != '$' || i+1 >= len(s) {
			continue
		}
		if s[i+1] == '$' {
			i++
			continue
		}
		if s[i+1] != '{' {
			continue
		}
		end := strings.IndexByte(s[i+2:], '}')
		if end < 0 {
			break
		}
		name := s[i+2 : i+2+end]
		if nameProblem(name) == "" {
			out = append(out, "${"+shownName(name)+"}")
		} else {
			out = append(out, "${...}")
		}
		i += 2 + end
	}
	return out
}

// varRef names the variable name in an error: "environment variable
// OPENAI_KEYS", unless the name looks like a key.
func varRef(name string) string {
	if looksLikeKey(name) {
		return "an environment variable whose name looks like a key (not shown)"
	}
	return "environment variable " + name
}

// shownName is name, or "..." when it looks like a key.
func shownName(name string) string {
	if looksLikeKey(name) {
		return "..."
	}
	return name
}

// wholeVar reports whether s is exactly one ${VAR} reference.
func wholeVar(s string) bool {
	if !strings.HasPrefix(s, "${") || !strings.HasSuffix(s, "}") {
		return false
	}
	return validVarName(s[2 : len(s)-1])
}

func validVarName(s string) bool { return nameProblem(s) == "" }

// nameProblem says what is wrong with s as an environment variable's
// name, without quoting it, or returns "" when it is a name.
func nameProblem(s string) string {
	switch {
	case s == "":
		return "it is empty"
	case strings.Contains(s, ","):
		return "it holds a comma, as a list of keys does"
	case strings.ContainsAny(s, " \t\r\n"):
		return "it holds a space"
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '_', c >= 'A' && c <= 'Z', c >= 'a' && c <= 'z':
		case c >= '0' && c <= '9':
			if i == 0 {
				return "it starts with a digit"
			}
		case c == '-':
			return "it holds a '-', as keys often do"
		case c == '$' || c == '{' || c == '}':
			return "it holds a '$', '{' or '}'"
		default:
			return "it holds a character other than letters, digits and '_'"
		}
	}
	return ""
}

// keyPrefixes start the keys of well-known providers.
var keyPrefixes = []string{"sk-", "sk_", "pk_", "rk_", "ghp_", "gho_", "ghu_", "ghs_", "ghr_", "github_pat_", "glpat-", "xoxb-", "xoxp-", "xoxa-", "AIza", "AKIA", "hf_"}

// looksLikeKey reports whether s, or a word of it, could be a secret: it
// starts as well-known keys do, or it is a long run of letters and digits
// (separators aside) that switches often between lower case, upper case
// and digits, as random text does ("9f86d0818...", "AbC1x..."), where a
// name or an ID switches seldom ("prod-key-2024-01-15",
// "OPENAI_KEYS_2024"). Errors do not quote such a text.
func looksLikeKey(s string) bool {
	words := strings.FieldsFunc(s, func(r rune) bool {
		return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_')
	})
	for _, w := range words {
		for _, p := range keyPrefixes {
			if strings.HasPrefix(w, p) {
				return true
			}
		}
		n, switches, last := 0, 0, 0
		for i := 0; i < len(w); i++ {
			var class int
			switch c := w[i]; {
			case c >= 'a' && c <= 'z':
				class = 1
			case c >= 'A' && c <= 'Z':
				class = 2
			case c >= '0' && c <= '9':
				class = 3
			default:
				continue // a separator
			}
			if last != 0 && class != last {
				switches++
			}
			n, last = n+1, class
		}
		if n >= 16 && switches*5 >= n {
			return true
		}
	}
	return false
}

// shown quotes a string value for an error, or says why it is not shown:
// it came from a variable (whose value may be a secret), or it looks like
// a key, or holds a user, a query or a password's place.
func shown(x Value[string]) string {
	if vars := refs(x.Raw); len(vars) > 0 {
		return "the value of " + strings.Join(vars, ", ") + " (not shown)"
	}
	if !safeToShow(x.V) {
		return "a value that is not shown (it could be a secret)"
	}
	return strconv.Quote(x.V)
}

// safeToShow reports whether an error may quote s.
func safeToShow(s string) bool {
	return len(s) <= 80 && !strings.ContainsAny(s, "@?=&#\n") && !looksLikeKey(s)
}

// Duration is a time.Duration written as Go writes it ("30s", "1m30s").
type Duration time.Duration

// UnmarshalText implements encoding.TextUnmarshaler. Its errors do not
// quote the text.
func (d *Duration) UnmarshalText(b []byte) error {
	v, err := time.ParseDuration(string(b))
	if err != nil {
		return fmt.Errorf("want a duration such as 500ms, 30s, 5m or 1h")
	}
	if v < 0 {
		return fmt.Errorf("want a duration of 0 or more, not a negative one")
	}
	*d = Duration(v)
	return nil
}

// Size is a byte count: a number of bytes, or with a unit KiB, MiB, GiB
// (or KB, MB, GB, powers of 1000).
type Size int64

var units = []struct {
	suffix string
	mul    int64
}{{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}, {"KB", 1e3}, {"MB", 1e6}, {"GB", 1e9}, {"B", 1}}

// UnmarshalText implements encoding.TextUnmarshaler. Its errors do not
// quote the text.
func (z *Size) UnmarshalText(b []byte) error {
	s := strings.TrimSpace(string(b))
	mul := int64(1)
	for _, u := range units {
		if strings.HasSuffix(s, u.suffix) {
			s, mul = strings.TrimSpace(strings.TrimSuffix(s, u.suffix)), u.mul
			break
		}
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n < 0 || n > (1<<62)/mul {
		return fmt.Errorf("want a size such as 1048576, 512KiB, 10MiB or 1GiB")
	}
	*z = Size(n * mul)
	return nil
}
