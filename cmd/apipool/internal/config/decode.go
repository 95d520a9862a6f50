package config

import (
	"fmt"
	"reflect"
	"sort"
	"strings"

	"go.yaml.in/yaml/v3"
)

// MaxErrors bounds the errors reported for one file.
const MaxErrors = 100

// decoder reads the file's YAML nodes into a fileT, field by field, so
// that every problem is reported at once with its field path, and no
// error quotes a value (the yaml package's type errors do).
type decoder struct {
	file   string
	lookup func(string) (string, bool)
	errs   Errors
	failed []string // the fields that could not be read
}

func (d *decoder) fail(line int, field, format string, args ...any) {
	d.errs = append(d.errs, &Error{File: d.file, Line: line, Field: field, Reason: fmt.Sprintf(format, args...)})
}

// bad reports a field that could not be read: the validator's errors
// about it are dropped, as they would only repeat the problem.
func (d *decoder) bad(line int, field, format string, args ...any) {
	d.fail(line, field, format, args...)
	d.failed = append(d.failed, field)
}

// valueDecoder is *Value[T].
type valueDecoder interface {
	decodeYAML(d *decoder, n *yaml.Node, field string)
}

func join(parent, name string) string {
	if parent == "" {
		return name
	}
	return parent + "." + name
}

func isNull(n *yaml.Node) bool {
	return n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null"
}

// deref follows aliases (the parser has checked that each names an
// anchor).
func deref(n *yaml.Node) *yaml.Node {
	for i := 0; n.Kind == yaml.AliasNode && n.Alias != nil && i < 100; i++ {
		n = n.Alias
	}
	return n
}

// node reads n into rv, the field named field.
func (d *decoder) node(n *yaml.Node, rv reflect.Value, field string) {
	if len(d.errs) > MaxErrors {
		return
	}
	n = deref(n)
	if vd, ok := rv.Addr().Interface().(valueDecoder); ok {
		vd.decodeYAML(d, n, field)
		return
	}
	switch rv.Kind() {
	case reflect.Pointer:
		if isNull(n) {
			return
		}
		p := reflect.New(rv.Type().Elem())
		d.node(n, p.Elem(), field)
		rv.Set(p)
	case reflect.Struct:
		if isNull(n) {
			return
		}
		if n.Kind != yaml.MappingNode {
			d.bad(n.Line, field, "want a mapping of settings (%s), got %s", strings.Join(settingNames(rv.Type()), ", "), kindName(n.Kind))
			return
		}
		if l := rv.FieldByName("Line"); l.IsValid() && l.Kind() == reflect.Int {
			l.SetInt(int64(n.Line))
		}
		d.mapping(n, rv, field)
	case reflect.Slice:
		if isNull(n) {
			return
		}
		if n.Kind != yaml.SequenceNode {
			d.bad(n.Line, field, "want a list, got %s", kindName(n.Kind))
			return
		}
		s := reflect.MakeSlice(rv.Type(), len(n.Content), len(n.Content))
		for i, c := range n.Content {
			d.node(c, s.Index(i), fmt.Sprintf("%s[%d]", field, i))
		}
		rv.Set(s)
	default:
		panic("config: cannot decode into " + rv.Type().String())
	}
}

// settingNames lists the yaml names of a struct's fields.
func settingNames(t reflect.Type) []string {
	var out []string
	for i := 0; i < t.NumField(); i++ {
		if name := t.Field(i).Tag.Get("yaml"); name != "" {
			out = append(out, name)
		}
	}
	return out
}

type pair struct{ key, val *yaml.Node }

// pairs returns a mapping's entries: its own, then those of its merge
// keys (<<) that it does not set itself, the first merge winning.
func (d *decoder) pairs(n *yaml.Node, field string, depth int) []pair {
	var own, merged []pair
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		if k.Kind == yaml.ScalarNode && k.ShortTag() == "!!merge" {
			if depth > 10 {
				d.fail(k.Line, field, "merge keys (<<) nested too deep")
				continue
			}
			v = deref(v)
			var srcs []*yaml.Node
			switch v.Kind {
			case yaml.MappingNode:
				srcs = []*yaml.Node{v}
			case yaml.SequenceNode:
				for _, s := range v.Content {
					srcs = append(srcs, deref(s))
				}
			}
			for _, s := range srcs {
				if s.Kind != yaml.MappingNode {
					d.fail(k.Line, field, "a merge key (<<) wants a mapping or a list of mappings")
					continue
				}
				merged = append(merged, d.pairs(s, field, depth+1)...)
			}
			if len(srcs) == 0 {
				d.fail(k.Line, field, "a merge key (<<) wants a mapping or a list of mappings")
			}
			continue
		}
		own = append(own, pair{k, v})
	}
	set := map[string]bool{}
	for _, p := range own {
		set[p.key.Value] = true
	}
	for _, p := range merged {
		if !set[p.key.Value] {
			set[p.key.Value] = true
			own = append(own, p)
		}
	}
	return own
}

// mapping reads the settings of n into the struct rv.
func (d *decoder) mapping(n *yaml.Node, rv reflect.Value, field string) {
	t := rv.Type()
	index := map[string]int{}
	for i := 0; i < t.NumField(); i++ {
		if name := t.Field(i).Tag.Get("yaml"); name != "" {
			index[name] = i
		}
	}
	seen := map[string]int{}
	for _, p := range d.pairs(n, field, 0) {
		k := deref(p.key)
		if k.Kind != yaml.ScalarNode {
			d.fail(k.Line, field, "want a setting name, got %s as a key", kindName(k.Kind))
			continue
		}
		name := k.Value
		i, ok := index[name]
		if !ok {
			d.unknown(k.Line, field, name, settingNames(t))
			continue
		}
		if line, dup := seen[name]; dup {
			d.fail(k.Line, join(field, name), "set twice (also on line %d)", line)
			continue
		}
		seen[name] = k.Line
		d.node(p.val, rv.Field(i), join(field, name))
	}
}

// unknown reports a setting that the struct does not have, with a near
// known name. The name is quoted only when it looks like a setting's: a
// key written in the wrong place ({sk-...}) reads as a setting's name.
func (d *decoder) unknown(line int, field, name string, known []string) {
	hint := ""
	if s := suggest(name, known); s != "" {
		hint = "; did you mean " + s + "?"
	} else if len(known) <= 12 {
		hint = "; the settings here are " + strings.Join(known, ", ")
	}
	if settingLike(name) {
		d.fail(line, join(field, name), "unknown setting%s", hint)
		return
	}
	d.fail(line, field, "unknown setting, whose name is not shown (it does not look like a setting's name, and could be a secret)%s", hint)
}

// settingLike reports whether s has the shape of a setting's name: lower
// case letters, digits and '_', and not too long nor key-like.
func settingLike(s string) bool {
	if s == "" || len(s) > 40 || looksLikeKey(s) {
		return false
	}
	digits := 0
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c == '_':
		case c >= '0' && c <= '9':
			digits++
		default:
			return false
		}
	}
	return digits <= 3
}

// suggest returns the option nearest to s, if it is near enough to be a
// typo of it, or "".
func suggest(s string, options []string) string {
	best, bestD := "", 1<<30
	for _, o := range options {
		if dist := editDistance(strings.ToLower(s), o); dist < bestD {
			best, bestD = o, dist
		}
	}
	if bestD <= max(1, min(len(best), len(s))/3) {
		return best
	}
	return ""
}

// editDistance is the edit distance of a and b (in bytes): insertions,
// deletions, substitutions and swaps of two adjacent bytes ("modle" is
// one step from "model"), for at most 100 bytes of either.
func editDistance(a, b string) int {
	if len(a) > 100 || len(b) > 100 {
		return 1 << 30
	}
	prev2 := make([]int, len(b)+1) // row i-2
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			c := prev[j-1]
			if a[i-1] != b[j-1] {
				c++
			}
			cur[j] = min(c, prev[j]+1, cur[j-1]+1)
			if i > 1 && j > 1 && a[i-1] == b[j-2] && a[i-2] == b[j-1] {
				cur[j] = min(cur[j], prev2[j-2]+1)
			}
		}
		prev2, prev, cur = prev, cur, prev2
	}
	return prev[len(b)]
}

// merge puts the decoder's errors and the validator's in the order of the
// file, leaving out the validator's about fields that could not be read.
func merge(dec, val Errors, failed []string) Errors {
	out := append(Errors{}, dec...)
	for _, e := range val {
		if !under(e.Field, failed) {
			out = append(out, e)
		}
	}
	sort.SliceStable(out, func(i, j int) bool {
		li, lj := out[i].Line, out[j].Line
		if li == 0 || lj == 0 {
			return li != 0 && lj == 0
		}
		return li < lj
	})
	if len(out) > MaxErrors {
		more := len(out) - MaxErrors
		out = append(out[:MaxErrors], &Error{File: out[0].File, Reason: fmt.Sprintf("and %d more errors", more)})
	}
	return out
}

// under reports whether field is one of paths, or inside one.
func under(field string, paths []string) bool {
	for _, p := range paths {
		if field == p || strings.HasPrefix(field, p+".") || strings.HasPrefix(field, p+"[") {
			return true
		}
	}
	return false
}
