package proxy

import (
	"bufio"
	"bytes"
	"compress/flate"
	"compress/gzip"
	"compress/zlib"
	"encoding/binary"
	"encoding/json"
	"errors"
	"io"
	"math/bits"
	"mime"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"unsafe"

	"github.com/apipool-ng/apipool/internal/readall"
)

// An upstream may quote the key it was sent, whole or masked, in its
// answer (OpenAI: "Incorrect API key provided: sk-proj-abc...wxyz"); a
// caller holding a pool key could bypass the proxy. The proxy scrubs every
// answer before the caller gets it:
//
//   - headers, of every answer (informational ones and trailers too);
//   - the body of every answer but streamed successes, held whole up to
//     scrubBound bytes (decoded when gzip or deflate), with Content-Length
//     set to what is sent; past the bound, the answer is cut there;
//   - the body of streamed successes (2xx that are event streams, of
//     unknown length, compressed or longer than scrubBound), scanned as
//     it passes: a byte is held back only while it could begin a secret
//     (at most gramLen-1 bytes, and none at the end of an event, whose
//     newlines are in no secret); redacted bytes become '*', so that the
//     length stays.
//
// What is redacted, in every pool secret of every upstream (the current
// keys, and for the upstream's timeout the keys a reload removed), as it
// is and in its URL- and JSON-escaped forms:
//   - rule 1: every run of gramLen or more bytes of a secret (a secret
//     shorter than gramLen: where it appears whole);
//   - rule 2 (buffered bodies and headers): a masked form, a run of
//     masking characters ('*', '…', '•', or three or more dots) with the
//     start of a secret just before it and/or the end of one just after
//     it, when it shows maskedMin or more characters of secrets.
//
// The rules are checked with an index built when the keys change, so
// that an answer's cost does not grow with the number of keys.
const (
	// scrubBound is the most of a buffered body that is passed. Error
	// bodies are a few hundred bytes; HTML error pages of CDNs tens of
	// kilobytes. A bigger one is cut, so that a proxy under a storm of
	// errors holds at most this much per answer in flight.
	scrubBound = 1 << 20
	// scrubLookahead is read past scrubBound, so that a secret across the
	// cut is seen whole.
	scrubLookahead = 256
	// gramLen: any run of this many characters of a secret is redacted.
	// Eight characters of a random key are not guessable (62^8 > 2^47),
	// and eight characters of text hardly ever match one by chance.
	gramLen = 8
	// affixLen: the prefixes and suffixes of secrets indexed for masked
	// forms; a longer visible part holds a run of gramLen anyway.
	affixLen = 16
	// maskedMin: a masked form is redacted when it shows this many
	// characters of secrets, head and tail together.
	maskedMin = 4

	redactedMark = "[REDACTED]"
	hashMul      = 0x9E3779B97F4A7C15
)

// scrubIndex finds pool secrets in text. It is immutable; the server
// swaps in a new one when the keys change. A nil index finds nothing.
type scrubIndex struct {
	grams    map[uint64]struct{} // every gramLen bytes of every form
	filter   []uint64            // a bit per hash of a gram: a quick no
	shift    uint
	short    [gramLen]map[string]struct{} // forms shorter than gramLen, by length
	shortLen []int                        // the lengths used, longest first
	prefixes map[string]struct{}          // of every form, up to affixLen
	suffixes map[string]struct{}
	alphabet [256]bool // bytes that appear in a form
}

// secretForms returns s as an answer may quote it: as it is, URL-escaped,
// and JSON-escaped (by Go, and with "\/" as other encoders write it).
func secretForms(s string) []string {
	forms := []string{s}
	add := func(f string) {
		if f != "" && !slices.Contains(forms, f) {
			forms = append(forms, f)
		}
	}
	add(url.QueryEscape(s))
	add(url.PathEscape(s))
	if b, err := json.Marshal(s); err == nil {
		j := string(b[1 : len(b)-1])
		add(j)
		add(strings.ReplaceAll(j, "/", `\/`))
	}
	return forms
}

func newScrubIndex(secrets []string) *scrubIndex {
	x := &scrubIndex{grams: map[uint64]struct{}{}, prefixes: map[string]struct{}{}, suffixes: map[string]struct{}{}}
	seen := map[string]bool{}
	for _, s := range secrets {
		if s == "" || seen[s] {
			continue
		}
		seen[s] = true
		for _, f := range secretForms(s) {
			for i := 0; i < len(f); i++ {
				x.alphabet[f[i]] = true
			}
			if len(f) < gramLen {
				if x.short[len(f)] == nil {
					x.short[len(f)] = map[string]struct{}{}
					x.shortLen = append(x.shortLen, len(f))
				}
				x.short[len(f)][f] = struct{}{}
			} else {
				b := []byte(f)
				for i := 0; i+gramLen <= len(b); i++ {
					x.grams[binary.LittleEndian.Uint64(b[i:])] = struct{}{}
				}
			}
			for l := 1; l <= min(affixLen, len(f)); l++ {
				x.prefixes[f[:l]] = struct{}{}
				x.suffixes[f[len(f)-l:]] = struct{}{}
			}
		}
	}
	slices.Sort(x.shortLen)
	slices.Reverse(x.shortLen)
	// About 16 bits a gram: a text's gram passes the filter for 1 in 16.
	nbits := max(1024, min(1<<24, 16*len(x.grams)))
	lg := bits.Len(uint(nbits - 1))
	x.filter = make([]uint64, (1<<lg)/64)
	x.shift = uint(64 - lg)
	for g := range x.grams {
		h := (g * hashMul) >> x.shift
		x.filter[h>>6] |= 1 << (h & 63)
	}
	return x
}

// empty reports whether x finds nothing.
func (x *scrubIndex) empty() bool {
	return x == nil || (len(x.grams) == 0 && len(x.shortLen) == 0)
}

// isGram reports whether b[i:i+gramLen] is gramLen bytes of a secret.
func (x *scrubIndex) isGram(b []byte, i int) bool {
	g := binary.LittleEndian.Uint64(b[i:])
	h := (g * hashMul) >> x.shift
	if x.filter[h>>6]&(1<<(h&63)) == 0 {
		return false
	}
	_, ok := x.grams[g]
	return ok
}

// rule1 adds to sp the runs of rule 1 in b that start in [from, to).
// Every such run lies within a run of bytes of the alphabet: most text
// (words shorter than gramLen) is passed over at a table lookup a byte.
func (x *scrubIndex) rule1(b []byte, from, to int, sp []span) []span {
	for i := from; i < to; {
		if !x.alphabet[b[i]] {
			i++
			continue
		}
		j := i + 1
		for j < len(b) && x.alphabet[b[j]] {
			j++
		}
		for k := i; k < min(j, to); k++ {
			end := 0
			if k+gramLen <= j && x.isGram(b, k) {
				end = k + gramLen
			} else {
				for _, l := range x.shortLen {
					if k+l <= j {
						if _, ok := x.short[l][string(b[k:k+l])]; ok {
							end = k + l
							break
						}
					}
				}
			}
			if end > 0 {
				sp = addSpan(sp, k, end)
			}
			if k+gramLen > j && len(x.shortLen) == 0 {
				break // no run of gramLen fits in what is left
			}
		}
		i = j
	}
	return sp
}

// span is b[from:to].
type span struct{ from, to int }

// addSpan adds [from, to) to sp, whose spans start at from or before,
// merging it with the last when they touch.
func addSpan(sp []span, from, to int) []span {
	if n := len(sp); n > 0 && from <= sp[n-1].to {
		sp[n-1].to = max(sp[n-1].to, to)
		return sp
	}
	return append(sp, span{from, to})
}

// find returns what of b is to be redacted by rules 1 and 2, in order,
// merged.
func (x *scrubIndex) find(b []byte) []span {
	if x.empty() {
		return nil
	}
	sp := x.rule1(b, 0, len(b), nil)
	masked := x.findMasked(b)
	if len(masked) == 0 {
		return sp
	}
	all := append(sp, masked...)
	slices.SortFunc(all, func(a, b span) int { return a.from - b.from })
	var out []span
	for _, s := range all {
		out = addSpan(out, s.from, s.to)
	}
	return out
}

// maskAt returns the length of the masking character at b[i], or 0.
func maskAt(b []byte, i int) int {
	switch b[i] {
	case '*', '.':
		return 1
	case 0xE2: // '…' U+2026, '•' U+2022
		if i+2 < len(b) && b[i+1] == 0x80 && (b[i+2] == 0xA6 || b[i+2] == 0xA2) {
			return 3
		}
	}
	return 0
}

// keyByte reports whether c may be part of a secret beside a mask.
func (x *scrubIndex) keyByte(c byte) bool { return x.alphabet[c] && c != '*' && c != '.' }

// findMasked returns the masked forms in b (rule 2), in order.
func (x *scrubIndex) findMasked(b []byte) []span {
	var sp []span
	for i := 0; i < len(b); {
		if maskAt(b, i) == 0 {
			i++
			continue
		}
		start, strong, dots := i, false, 0
		for i < len(b) {
			l := maskAt(b, i)
			if l == 0 {
				break
			}
			if b[i] == '.' {
				dots++
				strong = strong || dots >= 3
			} else {
				dots = 0
				strong = true
			}
			i += l
		}
		if !strong {
			continue
		}
		end := i
		h := start
		for h > 0 && x.keyByte(b[h-1]) {
			h--
		}
		t := end
		for t < len(b) && x.keyByte(b[t]) {
			t++
		}
		// The longest end of the head that starts a secret, and the
		// longest start of the tail that ends one.
		hv := 0
		for l := min(start-h, affixLen); l > 0; l-- {
			if _, ok := x.prefixes[string(b[start-l:start])]; ok {
				hv = l
				break
			}
		}
		if hv == 0 && start-h >= gramLen && x.isGram(b, start-gramLen) {
			hv = gramLen
		}
		tv := 0
		for l := min(t-end, affixLen); l > 0; l-- {
			if _, ok := x.suffixes[string(b[end:end+l])]; ok {
				tv = l
				break
			}
		}
		if tv == 0 && t-end >= gramLen && x.isGram(b, end) {
			tv = gramLen
		}
		if hv+tv >= maskedMin {
			sp = append(sp, span{start - hv, end + tv})
		}
	}
	return sp
}

// redact returns b[:limit] with each span replaced by redactedMark.
func redact(b []byte, sp []span, limit int) []byte {
	out := make([]byte, 0, limit)
	prev := 0
	for _, s := range sp {
		if s.from >= limit {
			break
		}
		out = append(out, b[prev:s.from]...)
		out = append(out, redactedMark...)
		prev = min(s.to, limit)
	}
	return append(out, b[prev:limit]...)
}

// scrubString returns s without secrets, and whether it held any.
func (x *scrubIndex) scrubString(s string) (string, bool) {
	if x.empty() || s == "" {
		return s, false
	}
	// find and redact only read b: a view of s spares a copy.
	b := unsafe.Slice(unsafe.StringData(s), len(s))
	sp := x.find(b)
	if len(sp) == 0 {
		return s, false
	}
	return string(redact(b, sp, len(b))), true
}

// scrubHeader redacts secrets in h's values, and removes the fields whose
// name holds one.
func (x *scrubIndex) scrubHeader(h http.Header) {
	if x.empty() {
		return
	}
	for k, vs := range h {
		if _, hit := x.scrubString(k); hit {
			delete(h, k)
			continue
		}
		for i, v := range vs {
			if nv, hit := x.scrubString(v); hit {
				vs[i] = nv
			}
		}
	}
}

// unscrubbableError is an answer the proxy cannot check for secrets.
type unscrubbableError struct{ encoding string }

func (e *unscrubbableError) Error() string {
	return "the upstream answered with Content-Encoding " + strconv.Quote(e.encoding) + ", which the proxy cannot check for keys"
}

// contentCoding returns the answer's content coding ("" for none), and
// whether the proxy can decode it.
func contentCoding(h http.Header) (string, bool) {
	var codings []string
	for _, v := range h.Values("Content-Encoding") {
		for c := range strings.SplitSeq(v, ",") {
			if c = strings.ToLower(strings.TrimSpace(c)); c != "" && c != "identity" {
				codings = append(codings, c)
			}
		}
	}
	switch {
	case len(codings) == 0:
		return "", true
	case len(codings) == 1 && (codings[0] == "gzip" || codings[0] == "x-gzip" || codings[0] == "deflate"):
		return codings[0], true
	}
	return strings.Join(codings, ", "), false
}

// decoder returns r decoded from coding.
func decoder(coding string, r io.Reader) (io.Reader, error) {
	switch coding {
	case "gzip", "x-gzip":
		zr, err := gzip.NewReader(r)
		if err == io.EOF {
			return strings.NewReader(""), nil
		}
		return zr, err
	case "deflate":
		// zlib, as HTTP means; some servers send raw deflate.
		br := bufio.NewReader(r)
		if h, err := br.Peek(2); err == nil && h[0]&0x0f == 8 && (uint16(h[0])<<8|uint16(h[1]))%31 == 0 {
			return zlib.NewReader(br)
		}
		return flate.NewReader(br), nil
	}
	return r, nil
}

// isStreamType reports whether an answer of this Content-Type is a
// stream of events.
func isStreamType(ct string) bool {
	// The media type, as mime.ParseMediaType reads it, without its
	// allocations: what comes before ';', trimmed, in any case.
	mt, _, _ := strings.Cut(ct, ";")
	mt = strings.TrimSpace(mt)
	for _, t := range streamTypes {
		if strings.EqualFold(mt, t) {
			// The rest as before, by ParseMediaType.
			mt, _, _ := mime.ParseMediaType(ct)
			switch mt {
			case "text/event-stream", "application/x-ndjson", "application/jsonl", "application/jsonlines", "application/x-jsonlines", "application/stream+json":
				return true
			}
			return false
		}
	}
	return false
}

var streamTypes = [...]string{"text/event-stream", "application/x-ndjson", "application/jsonl", "application/jsonlines", "application/x-jsonlines", "application/stream+json"}

// limitedReader is io.LimitedReader that notes when it stopped a reader
// with more to give.
type limitedReader struct {
	r   io.Reader
	n   int64
	hit bool
}

func (l *limitedReader) Read(p []byte) (int, error) {
	if l.n <= 0 {
		l.hit = true
		return 0, io.EOF
	}
	p = p[:min(int64(len(p)), l.n)]
	n, err := l.r.Read(p)
	l.n -= int64(n)
	return n, err
}

// scrubBody scrubs resp's body as the package comment says. It returns
// whether the body was cut at scrubBound; an error means the answer is not
// to be passed.
func (x *scrubIndex) scrubBody(resp *http.Response) (cut bool, err error) {
	if x.empty() || resp.StatusCode == http.StatusSwitchingProtocols || resp.Body == nil || resp.Body == http.NoBody {
		return false, nil
	}
	coding, ok := contentCoding(resp.Header)
	if !ok {
		// The name is the upstream's: it goes to the caller and the log.
		coding, _ = x.scrubString(coding)
		if len(coding) > 40 {
			coding = coding[:40] + "..."
		}
		return false, &unscrubbableError{coding}
	}
	success := resp.StatusCode >= 200 && resp.StatusCode <= 299
	if success && (coding != "" || resp.ContentLength < 0 || resp.ContentLength > scrubBound || isStreamType(resp.Header.Get("Content-Type"))) {
		body := resp.Body
		r, err := decoder(coding, body)
		if err != nil {
			return false, err
		}
		if coding != "" {
			resp.Header.Del("Content-Encoding")
			resp.Header.Del("Content-Length")
			resp.ContentLength = -1
		}
		resp.Body = &streamScrub{x: x, src: r, closer: body}
		return false, nil
	}

	defer resp.Body.Close()
	var data []byte
	var hit bool // the coded body went past what is read of it
	if coding == "" {
		// Read at most the limit; a known length sizes the buffer.
		data, err = readall.AtMost(resp.Body, scrubBound+scrubLookahead+1, resp.ContentLength)
	} else {
		raw := &limitedReader{r: resp.Body, n: scrubBound + scrubLookahead + 1}
		r, derr := decoder(coding, raw)
		if derr != nil {
			return false, derr
		}
		data, err = readall.AtMost(r, scrubBound+scrubLookahead+1, -1)
		hit = raw.hit
	}
	keep := len(data)
	switch {
	case err != nil && !hit:
		return false, err
	case len(data) > scrubBound:
		cut, keep = true, scrubBound
	case hit:
		// The coded body is past the bound, its decoded start is not:
		// what was decoded last may be a secret's start; leave it out.
		cut, keep = true, max(0, len(data)-scrubLookahead)
	}
	sp := x.find(data)
	out := data[:keep]
	if cut || len(sp) > 0 {
		out = redact(data, sp, keep)
	}
	if coding != "" || cut || len(sp) > 0 {
		resp.Header.Del("Content-Encoding")
		resp.Header.Del("Content-Md5")
		resp.Header.Del("Content-Digest")
		resp.Header.Del("Repr-Digest")
	}
	if cut {
		resp.Header.Set("X-Apipool-Truncated", strconv.Itoa(scrubBound))
	}
	resp.Body = newBytesBody(out)
	resp.ContentLength = int64(len(out))
	resp.TransferEncoding = nil
	if len(resp.Trailer) == 0 {
		var nb [20]byte
		n := strconv.AppendInt(nb[:0], int64(len(out)), 10)
		if vs := resp.Header["Content-Length"]; len(vs) != 1 || vs[0] != string(n) {
			resp.Header.Set("Content-Length", string(n))
		}
	} else {
		// Trailers need a chunked answer.
		resp.Header.Del("Content-Length")
		resp.ContentLength = -1
	}
	return cut, nil
}

// bytesBody is an answer's body held whole.
type bytesBody struct{ bytes.Reader }

func newBytesBody(b []byte) *bytesBody {
	bb := &bytesBody{}
	bb.Reset(b)
	return bb
}

func (*bytesBody) Close() error { return nil }

// streamScrub is a streamed body with rule 1 applied as it passes: each
// redacted byte becomes '*'. It reads into the caller's buffer and scrubs
// there; of its own it keeps only the bytes held back.
type streamScrub struct {
	x      *scrubIndex
	src    io.Reader
	closer io.Closer
	held   [gramLen - 1]byte // read, not yet decided: they may begin a secret
	nheld  int
	maskTo int    // held[:maskTo] is in a redacted run
	spill  []byte // decided bytes that a small read could not take
	err    error
}

func (s *streamScrub) Read(p []byte) (int, error) {
	if len(s.spill) > 0 {
		n := copy(p, s.spill)
		s.spill = s.spill[n:]
		return n, nil
	}
	if len(p) == 0 {
		return 0, nil
	}
	if len(p) < 4*gramLen {
		buf := make([]byte, 512)
		n, err := s.Read(buf)
		s.spill = buf[copy(p, buf[:n]):n]
		return min(n, len(p)), err
	}
	for {
		if s.err != nil {
			return 0, s.err
		}
		h := copy(p, s.held[:s.nheld])
		m, err := s.src.Read(p[h:])
		if err != nil {
			s.err = err
		}
		if emit := s.push(p[:h+m], err != nil); emit > 0 {
			return emit, nil
		}
		// All that was read may begin a secret: it is held; read on.
	}
}

// push scrubs b, the bytes held then those just read, in place, and
// returns how many of them are decided: all at the end of the body,
// otherwise all but the last ones while they are bytes of secrets, up to
// gramLen-1 of them, which it holds.
func (s *streamScrub) push(b []byte, final bool) int {
	n := len(b)
	var sp []span
	if s.maskTo > 0 {
		sp = append(sp, span{0, s.maskTo})
	}
	// Runs are looked for within b: one that may go on in what comes
	// next starts in the bytes held back, and is looked at again then.
	sp = s.x.rule1(b, 0, n, sp)
	emit := n
	if !final {
		hold := 0
		for hold < gramLen-1 && hold < n && s.x.alphabet[b[n-1-hold]] {
			hold++
		}
		emit = n - hold
	}
	s.nheld = copy(s.held[:], b[emit:])
	s.maskTo = 0
	for _, r := range sp {
		if r.from >= emit {
			break // held back: found again with what follows
		}
		for j := r.from; j < min(r.to, emit); j++ {
			b[j] = '*'
		}
		s.maskTo = max(0, r.to-emit)
	}
	return emit
}

func (s *streamScrub) Close() error { return s.closer.Close() }

// errScrub reports whether err is the scrubber's refusal.
func errScrub(err error) bool {
	var ue *unscrubbableError
	return errors.As(err, &ue)
}
