package usage

import "encoding/json"

// Helpers that walk a whole JSON text held in memory (a request body, one
// SSE event's data), for the rewrites of this package. The caller checks
// the text with json.Valid first; on other input they return -1 or false,
// and never panic.

func skipSpace(b []byte, i int) int {
	for i < len(b) && isSpace(b[i]) {
		i++
	}
	return i
}

// skipString returns the end of the string starting at b[i] ('"').
func skipString(b []byte, i int) int {
	for i++; ; i++ {
		if i = skipStr(b, i); i >= len(b) {
			return -1
		}
		switch b[i] {
		case '\\':
			i++
		case '"':
			return i + 1
		}
	}
}

// skipValue returns the end of the value starting at b[i].
func skipValue(b []byte, i int) int {
	if i >= len(b) {
		return -1
	}
	switch c := b[i]; c {
	case '"':
		return skipString(b, i)
	case '{', '[':
		depth := 0
		for i < len(b) {
			switch b[i] {
			case '"':
				if i = skipString(b, i); i < 0 {
					return -1
				}
				continue
			case '{', '[':
				depth++
			case '}', ']':
				depth--
				if depth == 0 {
					return i + 1
				}
			}
			i++
		}
		return -1
	case 't', 'f', 'n':
		for _, lit := range [...]string{"true", "false", "null"} {
			if len(b)-i >= len(lit) && string(b[i:i+len(lit)]) == lit {
				return i + len(lit)
			}
		}
		return -1
	default:
		if c != '-' && (c < '0' || c > '9') {
			return -1
		}
		j := i + 1
		for j < len(b) && (b[j] >= '0' && b[j] <= '9' || b[j] == '-' || b[j] == '+' || b[j] == '.' || b[j] == 'e' || b[j] == 'E') {
			j++
		}
		return j
	}
}

// member is one member of an object: b[key:keyEnd] is its key, quotes
// included, b[val:valEnd] its value.
type member struct{ key, keyEnd, val, valEnd int }

// members iterates over the members of the object whose '{' is at b[i].
type members struct {
	b     []byte
	i     int
	first bool
	bad   bool
}

func newMembers(b []byte, open int) members { return members{b: b, i: open + 1, first: true} }

// next returns the next member; ok is false at the object's end, or when
// the text is not an object (bad is then true).
func (it *members) next() (m member, ok bool) {
	b := it.b
	i := skipSpace(b, it.i)
	if i < len(b) && b[i] == '}' {
		return m, false
	}
	if !it.first {
		if i >= len(b) || b[i] != ',' {
			it.bad = true
			return m, false
		}
		i = skipSpace(b, i+1)
	}
	it.first = false
	if i >= len(b) || b[i] != '"' {
		it.bad = true
		return m, false
	}
	m.key = i
	if m.keyEnd = skipString(b, i); m.keyEnd < 0 {
		it.bad = true
		return m, false
	}
	i = skipSpace(b, m.keyEnd)
	if i >= len(b) || b[i] != ':' {
		it.bad = true
		return m, false
	}
	m.val = skipSpace(b, i+1)
	if m.valEnd = skipValue(b, m.val); m.valEnd < 0 {
		it.bad = true
		return m, false
	}
	it.i = m.valEnd
	return m, true
}

// keyIs reports whether the quoted key q is name, escapes decoded.
func keyIs(q []byte, name string) bool {
	if len(q) < 2 {
		return false
	}
	raw := q[1 : len(q)-1]
	for _, c := range raw {
		if c == '\\' {
			var s string
			return json.Unmarshal(q, &s) == nil && s == name
		}
	}
	return string(raw) == name
}
