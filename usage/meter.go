package usage

import (
	"encoding/binary"
	"math"
	"net/http"
	"strings"
)

// OpenAI returns the Reader of OpenAI's API and of the many APIs that copy
// it: chat completions, completions, embeddings (usage.prompt_tokens,
// usage.completion_tokens, usage.prompt_tokens_details.cached_tokens) and
// responses (usage.input_tokens, usage.output_tokens,
// usage.input_tokens_details.cached_tokens). In a chat or completions
// stream the usage comes in the last chunk, and only when the request set
// stream_options.include_usage (see AddIncludeUsage); in a responses
// stream, in the response.completed (or response.incomplete,
// response.failed) event's response.usage.
//
// An answer whose usage states input tokens and no output tokens (an
// embedding) has 0 output tokens. When a stream states usage more than once
// (servers that copy the API and count on every chunk), the last counts
// are kept: counts are read as final when they come.
func OpenAI() Reader { return readerOpenAI }

// Anthropic returns the Reader of Anthropic's messages API. Its usage
// states input_tokens without the tokens read from or written to the
// prompt cache; the Units add them: InputTokens is input_tokens +
// cache_read_input_tokens + cache_creation_input_tokens, CachedTokens is
// cache_read_input_tokens. (Cache writes, which Anthropic bills above the
// input price, are counted as input.) In a stream, message_start's
// message.usage gives the input, and the last message_delta's usage (its
// counts are cumulative, and override those of message_start) the output:
// a stream that ends before a message_delta with usage gives the input
// tokens and OutputTokens -1.
func Anthropic() Reader { return readerAnthropic }

// Gemini returns the Reader of Google's Gemini API (generativelanguage and
// Vertex AI): usageMetadata's promptTokenCount + toolUsePromptTokenCount
// are the input, candidatesTokenCount + thoughtsTokenCount the output,
// cachedContentTokenCount the cached tokens. A count the answer leaves out
// is 0, as Gemini leaves out zero counts. In a stream (SSE with alt=sse, or
// one JSON array), the counts of each chunk are cumulative and the last
// chunk's are kept; they are final when the body was read to its end or the
// chunk that held them had a finishReason; otherwise the input tokens are
// kept and OutputTokens is -1.
func Gemini() Reader { return readerGemini }

// Auto returns a Reader that reads any of the answers OpenAI, Anthropic
// and Gemini read, telling them apart by the shape of their JSON: a
// usageMetadata object is Gemini's; a usage object with Anthropic's cache
// counts or a message_start's message.usage, and without prompt_tokens, is
// Anthropic's; any other usage object is OpenAI's.
func Auto() Reader { return readerAuto }

var (
	readerOpenAI    = &tokenReader{schemaOpenAI}
	readerAnthropic = &tokenReader{schemaAnthropic}
	readerGemini    = &tokenReader{schemaGemini}
	readerAuto      = &tokenReader{schemaAuto}
)

type tokenReader struct{ sch *schema }

// Start returns nil (nothing to read) for a response that is not a 2xx,
// has no body, answers a HEAD, is encoded (Content-Encoding other than
// identity: the bytes the caller reads are compressed), or whose
// Content-Type is neither JSON, NDJSON, SSE nor missing.
func (r *tokenReader) Start(req *http.Request, resp *http.Response) Meter {
	if resp == nil || resp.Body == nil || resp.Body == http.NoBody || resp.StatusCode < 200 || resp.StatusCode > 299 {
		return nil
	}
	if req != nil && req.Method == http.MethodHead {
		return nil
	}
	if ce := resp.Header.Get("Content-Encoding"); ce != "" && !strings.EqualFold(strings.TrimSpace(ce), "identity") {
		return nil
	}
	mode := modeSniff
	switch mt := mediaType(resp.Header.Get("Content-Type")); {
	case strings.EqualFold(mt, "text/event-stream"):
		mode = modeSSE
	case mt == "", strings.EqualFold(mt, "application/json"), strings.EqualFold(mt, "application/x-ndjson"),
		strings.EqualFold(mt, "application/jsonl"), strings.EqualFold(mt, "text/plain"):
	case len(mt) > 5 && strings.EqualFold(mt[len(mt)-5:], "+json"):
	default:
		return nil
	}
	return newTokenMeter(r.sch, mode)
}

// mediaType returns ct's media type, without parameters.
func mediaType(ct string) string {
	if i := strings.IndexByte(ct, ';'); i >= 0 {
		ct = ct[:i]
	}
	return strings.TrimSpace(ct)
}

func newTokenMeter(sch *schema, mode uint8) *tokenMeter {
	m := &tokenMeter{sch: sch, mode: mode}
	m.resetJSON()
	return m
}

// The meter's layers: mode says how the body is framed; line is the SSE
// layer's place in its line; st is the JSON layer's state.
const (
	modeSniff uint8 = iota // JSON, unless its first byte says SSE
	modeJSON
	modeSSE
)

const (
	lineStart  uint8 = iota // at the start of a line
	lineName                // in a field name that may be "data"
	lineColon               // just after "data:"
	lineData                // in a data field's value: JSON
	lineIgnore              // in any other line
)

const (
	stStart   uint8 = iota // before a root value
	stValue                // before a value
	stAfter                // after a value in an object or array
	stKey                  // before a key
	stKeyStr               // in a key
	stKeyEsc               // after a backslash in a key
	stColon                // after a key
	stStr                  // in a string value
	stStrEsc               // after a backslash in a string value
	stNum                  // in a number
	stLit                  // in true, false or null
	stSkim                 // in an object or array no path goes through
	stSkimStr              // in a string in it
	stSkimEsc              // after a backslash in that string
	stErr                  // not JSON: ignore until the SSE event ends
)

type frame struct {
	node int16
	arr  bool
}

type record struct {
	v    [numSlots]int64
	seen uint16
}

func (r *record) has(slot int) bool { return r.seen&(1<<slot) != 0 }

// tokenMeter reads token counts from a JSON body or an SSE stream of JSON
// events as it passes, in constant memory: it keeps no byte of the body,
// only its place in the JSON along the schema's paths, the number being
// read, and the counts found.
type tokenMeter struct {
	sch  *schema
	mode uint8

	// SSE layer
	line      uint8
	namePos   uint8
	lastCR    bool
	dataLines int

	// JSON layer
	st      uint8
	depth   int
	stack   [maxFrames]frame
	next    int16 // node of the value about to start, or -1
	key     [maxKey]byte
	keyLen  int // bytes of the key read so far; more than maxKey: not a path key
	skim    int // open objects and arrays in the skimmed value
	num     int64
	numSlot int8
	numOK   bool

	tmp record // the usage object being read
	res record // the counts found so far

	sawUsage, sawStart, sawGemini bool
	elemGemini, elemFinish        bool // in the answer object being read: a usageMetadata with counts, a finishReason
	gemFinal                      bool // the last usageMetadata's counts are final

	done   bool
	result Units
}

var _ Meter = (*tokenMeter)(nil)

func (m *tokenMeter) resetJSON() {
	m.st = stStart
	m.depth = 0
	m.skim = 0
	m.next = 0
	m.elemGemini, m.elemFinish = false, false
}

var space = []byte{' '}

// Write reads p.
func (m *tokenMeter) Write(p []byte) {
	if m.done {
		return
	}
	if m.mode == modeSniff {
		for len(p) > 0 && isSpace(p[0]) {
			p = p[1:]
		}
		if len(p) == 0 {
			return
		}
		// A JSON value starts with one of {["-0123456789tfn; an SSE
		// stream with a field (data, event, id, retry) or a comment.
		switch p[0] {
		case 'd', 'e', 'i', 'r', ':':
			m.mode = modeSSE
		default:
			m.mode = modeJSON
		}
	}
	if m.mode == modeJSON {
		m.scan(p)
		return
	}
	for i := 0; i < len(p); {
		c := p[i]
		if m.lastCR {
			m.lastCR = false
			if c == '\n' {
				i++
				continue
			}
		}
		if c == '\n' || c == '\r' {
			m.lineEnd()
			m.lastCR = c == '\r'
			i++
			continue
		}
		switch m.line {
		case lineStart:
			if c == 'd' {
				m.line, m.namePos = lineName, 1
			} else {
				m.line = lineIgnore
			}
			i++
		case lineName:
			switch {
			case m.namePos < 4 && c == "data"[m.namePos]:
				m.namePos++
			case m.namePos == 4 && c == ':':
				m.line = lineColon
			default:
				m.line = lineIgnore
			}
			i++
		case lineColon:
			m.startData()
			m.line = lineData
			if c == ' ' {
				i++
			}
		case lineData:
			i += m.scan(p[i:])
		default: // lineIgnore
			for i < len(p) && p[i] != '\n' && p[i] != '\r' {
				i++
			}
		}
	}
}

func (m *tokenMeter) lineEnd() {
	switch m.line {
	case lineStart: // a blank line ends the event
		m.resetJSON()
		m.dataLines = 0
	case lineName: // "data" alone is a data line with an empty value
		if m.namePos == 4 {
			m.startData()
		}
	case lineColon:
		m.startData()
	}
	m.line = lineStart
}

// startData starts a data line: the lines of one event are one JSON text,
// joined by a line feed, which for the scanner is a space.
func (m *tokenMeter) startData() {
	if m.dataLines > 0 {
		m.scan(space)
	}
	m.dataLines++
}

func isSpace(c byte) bool { return c == ' ' || c == '\t' || c == '\n' || c == '\r' }

// Byte classes of the scanner's tight loops: stopStr holds the bytes that
// end a run of string bytes, stopSkim those that end a run of bytes in a
// skimmed object or array. Both hold the line ends, at which an SSE data
// line ends.
var stopStr, stopSkim [256]bool

func init() {
	for _, c := range []byte("\"\\\n\r") {
		stopStr[c] = true
	}
	for _, c := range []byte("\"{}[]\n\r") {
		stopSkim[c] = true
	}
}

// skipStr returns the index of the first byte of p from i on that ends a
// run of string bytes (a quote, a backslash, a line end), or len(p). It
// looks at 8 bytes at a time while none of them is one.
func skipStr(p []byte, i int) int {
	const lo, hi = 0x0101010101010101, 0x8080808080808080
	for ; i+8 <= len(p); i += 8 {
		x := binary.LittleEndian.Uint64(p[i:])
		q, bs, lf, cr := x^(lo*'"'), x^(lo*'\\'), x^(lo*'\n'), x^(lo*'\r')
		if ((q-lo)&^q|(bs-lo)&^bs|(lf-lo)&^lf|(cr-lo)&^cr)&hi != 0 {
			break
		}
	}
	for i < len(p) && !stopStr[p[i]] {
		i++
	}
	return i
}

// scan reads JSON bytes and returns how many it read: all of p, but in an
// SSE stream it stops before a line end, which ends the data line.
func (m *tokenMeter) scan(p []byte) int {
	sse := m.mode == modeSSE
	i := 0
	for i < len(p) {
		c := p[i]
		switch m.st {
		case stSkim:
			for i < len(p) && !stopSkim[p[i]] {
				i++
			}
			if i == len(p) {
				return i
			}
			switch p[i] {
			case '"':
				m.st = stSkimStr
			case '{', '[':
				m.skim++
			case '}', ']':
				m.skim--
				if m.skim == 0 {
					m.endValue()
				}
			default: // a line end
				if sse {
					return i
				}
			}
			i++
		case stSkimStr, stStr, stKeyStr:
			start := i
			// most strings are short: their first bytes one at a time
			for end := min(i+8, len(p)); i < end && !stopStr[p[i]]; i++ {
			}
			if i == start+8 && i < len(p) && !stopStr[p[i]] {
				i = skipStr(p, i)
			}
			if m.st == stKeyStr && m.keyLen <= maxKey {
				if m.keyLen+i-start > maxKey {
					m.keyLen = maxKey + 1
				} else {
					m.keyLen += copy(m.key[m.keyLen:], p[start:i])
				}
			}
			if i == len(p) {
				return i
			}
			switch p[i] {
			case '"':
				switch m.st {
				case stSkimStr:
					m.st = stSkim
				case stStr:
					m.endValue()
				default:
					m.endKey()
				}
			case '\\':
				switch m.st {
				case stSkimStr:
					m.st = stSkimEsc
				case stStr:
					m.st = stStrEsc
				default:
					m.keyLen = maxKey + 1 // a key with an escape is no path key
					m.st = stKeyEsc
				}
			default: // a line end: not JSON, but the end of an SSE line
				if sse {
					return i
				}
			}
			i++
		case stSkimEsc, stStrEsc, stKeyEsc:
			if sse && (c == '\n' || c == '\r') {
				return i
			}
			m.st-- // back to the string state: each escape state follows its string state
			i++
		case stNum:
			switch {
			case c >= '0' && c <= '9':
				d := int64(c - '0')
				if m.num > (math.MaxInt64-d)/10 {
					m.numOK = false
				} else {
					m.num = m.num*10 + d
				}
				i++
			case c == '.' || c == 'e' || c == 'E' || c == '+' || c == '-':
				m.numOK = false // a count is a whole number
				i++
			default:
				if m.numOK && m.numSlot >= 0 {
					m.tmp.v[m.numSlot] = m.num
					m.tmp.seen |= 1 << m.numSlot
				}
				m.endValue() // c is read in the next state
			}
		case stLit:
			if c >= 'a' && c <= 'z' {
				i++
			} else {
				m.endValue()
			}
		case stErr:
			if sse {
				for i < len(p) && p[i] != '\n' && p[i] != '\r' {
					i++
				}
				return i
			}
			return len(p)
		default: // the states between tokens
			if isSpace(c) {
				if sse && (c == '\n' || c == '\r') {
					return i
				}
				i++
				continue
			}
			i++
			switch m.st {
			case stStart, stValue:
				if c == ']' && m.st == stValue && m.depth > 0 && m.stack[m.depth-1].arr {
					m.close(c) // an empty array
					continue
				}
				m.begin(c)
			case stAfter:
				switch c {
				case ',':
					if f := m.stack[m.depth-1]; f.arr {
						m.st, m.next = stValue, m.sch.nodes[f.node].elem
					} else {
						m.st = stKey
					}
				case '}', ']':
					m.close(c)
				default:
					m.st = stErr
				}
			case stKey:
				switch c {
				case '"':
					m.st = stKeyStr
					m.keyLen = 0
				case '}':
					m.close(c)
				default:
					m.st = stErr
				}
			case stColon:
				if c == ':' {
					m.st = stValue
				} else {
					m.st = stErr
				}
			}
		}
	}
	return i
}

// endKey ends a key: the value after it is on a path if the key is one of
// the open object's path keys.
func (m *tokenMeter) endKey() {
	m.next = -1
	m.st = stColon
	if m.keyLen > maxKey {
		return
	}
	obj := &m.sch.nodes[m.stack[m.depth-1].node]
	if obj.kidLens&(1<<m.keyLen) == 0 {
		return // no path key has its length
	}
	key := m.key[:m.keyLen]
	for _, k := range obj.kids {
		if m.sch.nodes[k].name == string(key) {
			m.next = k
			return
		}
	}
}

// begin starts the value whose first byte is c, at node m.next.
func (m *tokenMeter) begin(c byte) {
	n := m.next
	var nd *node
	if n >= 0 {
		nd = &m.sch.nodes[n]
	}
	switch {
	case c == '{':
		if nd == nil || len(nd.kids) == 0 || m.depth == maxFrames {
			m.st, m.skim = stSkim, 1
			return
		}
		m.stack[m.depth] = frame{node: n}
		m.depth++
		if nd.group != groupNone {
			m.tmp.seen = 0
		}
		if nd.element {
			m.elemGemini, m.elemFinish = false, false
		}
		m.st = stKey
	case c == '[':
		if nd == nil || nd.elem < 0 || m.depth == maxFrames {
			m.st, m.skim = stSkim, 1
			return
		}
		m.stack[m.depth] = frame{node: n, arr: true}
		m.depth++
		m.st, m.next = stValue, nd.elem
	case c == '"':
		if nd != nil && nd.marker {
			m.elemFinish = true
		}
		m.st = stStr
	case c == '-' || c >= '0' && c <= '9':
		m.st = stNum
		m.numSlot = -1
		if nd != nil {
			m.numSlot = nd.slot
		}
		m.num, m.numOK = 0, c != '-'
		if c != '-' {
			m.num = int64(c - '0')
		}
	case c >= 'a' && c <= 'z':
		m.st = stLit
	default:
		m.st = stErr
	}
}

// close closes the innermost object (c is '}') or array (']').
func (m *tokenMeter) close(c byte) {
	if m.depth == 0 {
		m.st = stErr
		return
	}
	f := m.stack[m.depth-1]
	if f.arr != (c == ']') {
		m.st = stErr
		return
	}
	m.depth--
	if !f.arr {
		nd := &m.sch.nodes[f.node]
		if nd.group != groupNone {
			m.commit(nd.group)
		}
		if nd.element {
			if m.elemGemini && m.elemFinish {
				m.gemFinal = true
			}
			m.elemGemini, m.elemFinish = false, false
		}
	}
	m.endValue()
}

// endValue follows the end of a value.
func (m *tokenMeter) endValue() {
	if m.depth > 0 {
		m.st = stAfter
		return
	}
	// A root value ended. In a JSON body (not an SSE event) that is the
	// whole answer, or one line of NDJSON: Gemini's counts, if any, are
	// final.
	if m.mode == modeJSON && m.sawGemini {
		m.gemFinal = true
	}
	m.st, m.next = stStart, 0
}

// commit ends a usage object.
func (m *tokenMeter) commit(kind groupKind) {
	t, r := &m.tmp, &m.res
	if kind == groupGemini {
		if t.seen&(1<<slotGPrompt|1<<slotGTotal) == 0 {
			return // a chunk's usageMetadata without counts (Vertex AI sends those)
		}
		for s := slotGPrompt; s <= slotGTotal; s++ {
			r.v[s] = 0
			if t.has(s) {
				r.v[s] = t.v[s]
			}
		}
		r.seen |= geminiSlots
		m.sawGemini, m.elemGemini, m.gemFinal = true, true, false
		return
	}
	if t.seen == 0 {
		return
	}
	for s := 0; s < numSlots; s++ {
		if t.has(s) {
			r.v[s] = t.v[s]
		}
	}
	r.seen |= t.seen
	if kind == groupUsage {
		m.sawUsage = true
	} else {
		m.sawStart = true
	}
}

// Done returns the units found.
func (m *tokenMeter) Done(complete bool) Units {
	if !m.done {
		m.done = true
		m.result = m.units(complete)
	}
	return m.result
}

func (m *tokenMeter) units(complete bool) Units {
	u := Unknown()
	r := &m.res
	switch {
	case m.sawGemini:
		u.InputTokens = r.v[slotGPrompt] + r.v[slotGToolUse]
		u.CachedTokens = r.v[slotGCached]
		u.OutputTokens = r.v[slotGCandidates] + r.v[slotGThoughts]
		if !complete && !m.gemFinal {
			u.OutputTokens = -1
		}
	case m.sawUsage || m.sawStart:
		d := m.sch.dialect
		anthropic := d == dialectAnthropic ||
			d == dialectAuto && !r.has(slotPromptTokens) && (m.sawStart || r.has(slotCacheRead) || r.has(slotCacheCreation))
		if anthropic {
			if r.has(slotInputTokens) {
				u.InputTokens = r.v[slotInputTokens]
				u.CachedTokens = 0
				if r.has(slotCacheRead) {
					u.InputTokens += r.v[slotCacheRead]
					u.CachedTokens = r.v[slotCacheRead]
				}
				if r.has(slotCacheCreation) {
					u.InputTokens += r.v[slotCacheCreation]
				}
			}
			if m.sawUsage && r.has(slotOutputTokens) {
				u.OutputTokens = r.v[slotOutputTokens]
			}
			break
		}
		switch {
		case r.has(slotPromptTokens):
			u.InputTokens = r.v[slotPromptTokens]
		case r.has(slotInputTokens):
			u.InputTokens = r.v[slotInputTokens]
		}
		switch {
		case r.has(slotCompletionTokens):
			u.OutputTokens = r.v[slotCompletionTokens]
		case r.has(slotOutputTokens):
			u.OutputTokens = r.v[slotOutputTokens]
		case u.InputTokens >= 0:
			u.OutputTokens = 0 // an embedding
		}
		switch {
		case r.has(slotPromptCached):
			u.CachedTokens = r.v[slotPromptCached]
		case r.has(slotInputCached):
			u.CachedTokens = r.v[slotInputCached]
		case u.InputTokens >= 0:
			u.CachedTokens = 0
		}
	}
	return u
}
