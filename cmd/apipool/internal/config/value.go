package config

import (
	"encoding"
	"fmt"
	"os"
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

// UnmarshalYAML implements yaml.Unmarshaler.
func (v *Value[T]) UnmarshalYAML(n *yaml.Node) error {
	v.Line, v.Set, v.Raw = n.Line, true, n.Value
	if n.Kind != yaml.ScalarNode {
		return &Error{Line: n.Line, Reason: "want a single value, got " + kindName(n.Kind)}
	}
	s, err := expand(n.Value, os.LookupEnv)
	if err != nil {
		return &Error{Line: n.Line, Reason: err.Error()}
	}
	if s != n.Value {
		// Let the expanded text resolve anew: "${PORT}" holding 8080
		// decodes into an int.
		m := *n
		m.Value, m.Tag, m.Style = s, "", 0
		n = &m
	}
	if tu, ok := any(&v.V).(encoding.TextUnmarshaler); ok {
		if err := tu.UnmarshalText([]byte(n.Value)); err != nil {
			return &Error{Line: n.Line, Reason: err.Error()}
		}
		return nil
	}
	if n.Tag == "!!null" {
		return &Error{Line: n.Line, Reason: "empty value"}
	}
	if err := n.Decode(&v.V); err != nil {
		return &Error{Line: n.Line, Reason: fmt.Sprintf("cannot read %q as %s", n.Value, typeName(v.V))}
	}
	return nil
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
		return "a string"
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
	}
	return "a document"
}

// expand replaces ${VAR} with the variable's value and $$ with $. Any
// other $ is an error, so that a typo is not sent upstream as text.
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
		if !validVarName(name) {
			return "", fmt.Errorf("%q is not a variable name", name)
		}
		val, ok := lookup(name)
		if !ok {
			return "", fmt.Errorf("environment variable %s is not set", name)
		}
		b.WriteString(val)
		i += 2 + end
	}
	return b.String(), nil
}

// wholeVar reports whether s is exactly one ${VAR} reference.
func wholeVar(s string) bool {
	if !strings.HasPrefix(s, "${") || !strings.HasSuffix(s, "}") {
		return false
	}
	return validVarName(s[2 : len(s)-1])
}

func validVarName(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '_', c >= 'A' && c <= 'Z', c >= 'a' && c <= 'z':
		case c >= '0' && c <= '9' && i > 0:
		default:
			return false
		}
	}
	return true
}

// Duration is a time.Duration written as Go writes it ("30s", "1m30s").
type Duration time.Duration

// UnmarshalText implements encoding.TextUnmarshaler.
func (d *Duration) UnmarshalText(b []byte) error {
	v, err := time.ParseDuration(string(b))
	if err != nil {
		return fmt.Errorf("%q is not a duration (write it as 500ms, 30s, 5m, 1h)", b)
	}
	if v < 0 {
		return fmt.Errorf("negative duration %q", b)
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

// UnmarshalText implements encoding.TextUnmarshaler.
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
		return fmt.Errorf("%q is not a size (write it as 1048576, 512KiB, 10MiB or 1GiB)", b)
	}
	*z = Size(n * mul)
	return nil
}
