package usage

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"io"
)

// BodyError is AddIncludeUsage's error for a body it cannot rewrite. Its
// message never quotes the body.
type BodyError struct {
	Reason string
}

func (e *BodyError) Error() string { return "apipool: usage: request body not rewritten: " + e.Reason }

// AddIncludeUsage adds "stream_options":{"include_usage":true} to the
// body of an OpenAI-style streamed request (chat completions, completions)
// that lacks it, so that the stream ends with a chunk that states its
// usage (see StripUsageChunk to hide that chunk from a caller that did not
// ask for it).
//
// It changes nothing, and returns body itself and added false, when the
// body's top-level "stream" is not true, or stream_options.include_usage
// is already set, to true or false: a caller's explicit false is kept.
// Otherwise it returns a new slice and added true: stream_options is added
// after the object's last member, include_usage added first into an
// existing stream_options object, and a null stream_options or
// include_usage replaced. Every other byte is kept as it was. As
// encoding/json and most servers do, it reads the last of duplicate keys.
//
// A body that is not a JSON object, or whose stream_options or
// include_usage has a type that cannot hold the option, gives a
// *BodyError, with body itself.
func AddIncludeUsage(body []byte) (out []byte, added bool, err error) {
	if !json.Valid(body) {
		return body, false, &BodyError{Reason: "not valid JSON"}
	}
	open := skipSpace(body, 0)
	if body[open] != '{' {
		return body, false, &BodyError{Reason: "not a JSON object"}
	}
	var stream, opts member
	hasStream, hasOpts := false, false
	last := open + 1 // where a new member goes: after the last value
	it := newMembers(body, open)
	for {
		m, ok := it.next()
		if !ok {
			break
		}
		switch k := body[m.key:m.keyEnd]; {
		case keyIs(k, "stream"):
			stream, hasStream = m, true
		case keyIs(k, "stream_options"):
			opts, hasOpts = m, true
		}
		last = m.valEnd
	}
	if it.bad {
		return body, false, &BodyError{Reason: "not a JSON object"}
	}
	if !hasStream || string(body[stream.val:stream.valEnd]) != "true" {
		return body, false, nil
	}
	if !hasOpts {
		return splice(body, last, last, `,"stream_options":{"include_usage":true}`), true, nil
	}
	switch body[opts.val] {
	case 'n': // null
		return splice(body, opts.val, opts.valEnd, `{"include_usage":true}`), true, nil
	case '{':
	default:
		return body, false, &BodyError{Reason: "stream_options is not an object"}
	}
	var inc member
	hasInc, empty := false, true
	it = newMembers(body, opts.val)
	for {
		m, ok := it.next()
		if !ok {
			break
		}
		empty = false
		if keyIs(body[m.key:m.keyEnd], "include_usage") {
			inc, hasInc = m, true
		}
	}
	if !hasInc {
		ins := `"include_usage":true,`
		if empty {
			ins = `"include_usage":true`
		}
		return splice(body, opts.val+1, opts.val+1, ins), true, nil
	}
	switch string(body[inc.val:inc.valEnd]) {
	case "true", "false":
		return body, false, nil
	case "null":
		return splice(body, inc.val, inc.valEnd, "true"), true, nil
	}
	return body, false, &BodyError{Reason: "stream_options.include_usage is not a boolean"}
}

// splice returns a new slice: b with b[from:to] replaced by s.
func splice(b []byte, from, to int, s string) []byte {
	out := make([]byte, 0, len(b)-(to-from)+len(s))
	out = append(out, b[:from]...)
	out = append(out, s...)
	return append(out, b[to:]...)
}

// MaxHeldEvent bounds the bytes of one SSE event StripUsageChunk holds
// back; a longer event is passed on as it is, unchanged.
const MaxHeldEvent = 256 << 10

// StripUsageChunk wraps the body of an OpenAI-style SSE stream (chat
// completions, completions) that was asked for with include_usage by
// AddIncludeUsage, so that its reader sees the stream it would have seen
// without the option: it removes the extra chunk that states the usage
// (choices empty, missing or null, with a usage object) and the usage
// member of every other chunk ("usage":null then). Every other byte,
// the final data: [DONE] included, passes unchanged, in order.
//
// It holds each event back until the blank line that ends it (an SSE client
// dispatches an event only then), never across events; an event longer than
// MaxHeldEvent, or with more than one data line, passes unchanged. A body
// that does not start as an SSE stream (by a field name or a comment), an
// encoded (gzip) body among them, passes unchanged and is not held. A usage Meter must see the body before this
// wrapper, which removes the usage it reads. Close closes rc. The result is
// not safe for concurrent use, as no body is.
func StripUsageChunk(rc io.ReadCloser) io.ReadCloser {
	return &stripper{rc: rc}
}

type stripper struct {
	rc     io.ReadCloser
	in     []byte // read from rc, not yet passed on: in[:scan] has no event end
	out    []byte // ready for the caller: out[outPos:]
	outPos int
	err    error // rc's error, given once in and out are empty

	scan    int  // in[:scan] was looked at for the event's end
	lastCR  bool // in[scan-1] or the last byte passed is a '\r'
	lineLen int  // bytes in the current line so far
	sniffed bool // the stream's first byte was seen
	pass    bool // pass everything from here on, unchanged
	passEv  bool // pass the rest of this event unchanged (it was too long)
	skipLF  bool // an event ended with '\r': a '\n' next belongs to it
	dropped bool // the last event was dropped
}

func (s *stripper) Close() error { return s.rc.Close() }

func (s *stripper) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	for {
		if s.outPos < len(s.out) {
			n := copy(p, s.out[s.outPos:])
			s.outPos += n
			return n, nil
		}
		s.out, s.outPos = s.out[:0], 0
		if s.pass && len(s.in) == 0 && s.err == nil {
			return s.rc.Read(p)
		}
		s.process()
		if len(s.out) > 0 {
			continue
		}
		if s.err != nil {
			if len(s.in) > 0 { // the stream ended inside an event: pass it as it is
				s.out, s.in = append(s.out[:0], s.in...), s.in[:0]
				s.scan = 0
				continue
			}
			return 0, s.err
		}
		s.fill()
	}
}

// fill reads from rc into in.
func (s *stripper) fill() {
	if s.in == nil {
		s.in = make([]byte, 0, 4096)
	}
	if len(s.in) == cap(s.in) {
		// process passed on what exceeds MaxHeldEvent: in never needs more
		grown := make([]byte, len(s.in), min(2*cap(s.in), MaxHeldEvent+4096))
		copy(grown, s.in)
		s.in = grown
	}
	n, err := s.rc.Read(s.in[len(s.in):cap(s.in)])
	s.in = s.in[:len(s.in)+n]
	if err != nil {
		s.err = err
	}
}

// process moves what in holds to out: whole events, rewritten, and bytes
// that pass unchanged.
func (s *stripper) process() {
	if len(s.in) == 0 {
		return
	}
	if !s.sniffed {
		s.sniffed = true
		switch s.in[0] {
		case 'd', 'e', 'i', 'r', ':', '\n', '\r':
		default:
			s.pass = true
		}
	}
	if s.pass {
		s.out, s.in = append(s.out[:0], s.in...), s.in[:0]
		return
	}
	start := 0 // in[start:] is not yet in out
	if s.skipLF {
		s.skipLF = false
		if s.in[0] == '\n' {
			if !s.dropped {
				s.out = append(s.out, '\n')
			}
			start, s.scan = 1, max(s.scan, 1)
		}
	}
	for i := s.scan; i < len(s.in); i++ {
		c := s.in[i]
		if s.lastCR && c == '\n' {
			s.lastCR = false
			continue
		}
		s.lastCR = c == '\r'
		if c != '\n' && c != '\r' {
			// in a line: on to its end
			j := indexLineEnd(s.in, i+1)
			s.lineLen += j - i
			i = j - 1
			continue
		}
		if s.lineLen > 0 {
			s.lineLen = 0
			continue
		}
		// A blank line: in[start:i+1] is an event.
		end := i + 1
		if c == '\r' {
			if end < len(s.in) && s.in[end] == '\n' {
				end++
				i++
			} else if end == len(s.in) {
				s.skipLF = true
			}
			s.lastCR = false
		}
		if s.passEv || end-start > MaxHeldEvent {
			s.out = append(s.out, s.in[start:end]...)
			s.passEv, s.dropped = false, false
		} else {
			s.out, s.dropped = appendEvent(s.out, s.in[start:end])
		}
		start = end
	}
	if s.passEv || len(s.in)-start > MaxHeldEvent {
		s.passEv = true // too long to hold: pass it on
		s.out = append(s.out, s.in[start:]...)
		start = len(s.in)
	}
	n := copy(s.in, s.in[start:])
	s.in = s.in[:n]
	s.scan = n
}

// indexLineEnd returns the index of the first '\n' or '\r' of p from i
// on, or len(p). It looks at 8 bytes at a time while none of them is one.
func indexLineEnd(p []byte, i int) int {
	const lo, hi = 0x0101010101010101, 0x8080808080808080
	for ; i+8 <= len(p); i += 8 {
		x := binary.LittleEndian.Uint64(p[i:])
		lf, cr := x^(lo*'\n'), x^(lo*'\r')
		if ((lf-lo)&^lf|(cr-lo)&^cr)&hi != 0 {
			break
		}
	}
	for i < len(p) && p[i] != '\n' && p[i] != '\r' {
		i++
	}
	return i
}

// appendEvent appends the event ev to out, rewritten as StripUsageChunk
// says; dropped is true when that is nothing.
func appendEvent(out, ev []byte) (_ []byte, dropped bool) {
	if !bytes.Contains(ev, []byte(`usage"`)) {
		return append(out, ev...), false
	}
	// Find the data line; an event of more than one passes unchanged.
	from, to, lines := 0, 0, 0
	for i := 0; i < len(ev); {
		j := i
		for j < len(ev) && ev[j] != '\n' && ev[j] != '\r' {
			j++
		}
		line := ev[i:j]
		if bytes.HasPrefix(line, []byte("data")) && (len(line) == 4 || line[4] == ':') {
			lines++
			from, to = i+4, j
			if from < j {
				from++ // the colon
				if from < j && ev[from] == ' ' {
					from++
				}
			}
		}
		if j < len(ev) && ev[j] == '\r' && j+1 < len(ev) && ev[j+1] == '\n' {
			j++
		}
		i = j + 1
	}
	if lines != 1 {
		return append(out, ev...), false
	}
	data := ev[from:to]
	cutFrom, cutTo, drop := usageCut(data)
	switch {
	case drop:
		return out, true
	case cutFrom < cutTo:
		out = append(out, ev[:from+cutFrom]...)
		return append(out, ev[from+cutTo:]...), false
	}
	return append(out, ev...), false
}

// usageCut tells what to remove from a chunk: the whole event (drop), or
// data[from:to], its usage member with one comma next to it.
//
// It checks the top-level object's members (quotes, colons, commas) and
// skips their values by their quotes and brackets, without checking them
// further: a chunk with a broken value may lose its usage member, and stays
// as broken as it came.
func usageCut(data []byte) (from, to int, drop bool) {
	open := skipSpace(data, 0)
	if open >= len(data) || data[open] != '{' {
		return 0, 0, false
	}
	var usage member
	hasUsage := false
	var choices member
	hasChoices := false
	prevEnd := open + 1
	usagePrevEnd, usageNextKey := 0, -1
	it := newMembers(data, open)
	for {
		m, ok := it.next()
		if !ok {
			break
		}
		if hasUsage && usageNextKey < 0 {
			usageNextKey = m.key
		}
		switch k := data[m.key:m.keyEnd]; {
		case keyIs(k, "usage"):
			usage, hasUsage = m, true
			usagePrevEnd, usageNextKey = prevEnd, -1
		case keyIs(k, "choices"):
			choices, hasChoices = m, true
		}
		prevEnd = m.valEnd
	}
	if it.bad || !hasUsage {
		return 0, 0, false
	}
	if data[usage.val] == '{' {
		if c := data[choices.val:choices.valEnd]; !hasChoices || string(c) == "null" || isEmptyArray(c) {
			return 0, 0, true
		}
	}
	if usagePrevEnd > open+1 { // a member before it: remove from that member's end
		return usagePrevEnd, usage.valEnd, false
	}
	if usageNextKey >= 0 { // the first of several: remove up to the next key
		return usage.key, usageNextKey, false
	}
	return usage.key, usage.valEnd, false // the only member
}

func isEmptyArray(s []byte) bool {
	if len(s) < 2 || s[0] != '[' {
		return false
	}
	for i := 1; i < len(s)-1; i++ {
		if !isSpace(s[i]) {
			return false
		}
	}
	return true
}
