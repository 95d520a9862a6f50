package clickhouse

import (
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"math"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/apipool-ng/apipool/recorder"
	"github.com/google/uuid"
)

// row is an event as the table stores it: sanitised so that no value can
// spoil a batch (see sanitize), with its event id. Rows are what the
// writer batches, retries and spills.
type row struct {
	id        uuid.UUID
	ms        int64 // event time, Unix milliseconds in [0, maxEventMS]
	keyID     string
	keyFP     string
	statusID  uint8
	status    string
	http      uint16
	latencyUS uint32
	attempt   uint16
	method    string
	host      string
	operation string
	reqBytes  int64 // -1 when unknown
	respBytes int64
	traceID   string // 32 hex digits, or empty
	spanID    string // 16 hex digits, or empty
	errorType string
}

// maxEventMS is the last millisecond a DateTime column holds (it is a
// UInt32 of seconds): event times are clamped to [1970, 2106).
const maxEventMS = math.MaxUint32*1000 + 999

// maxStringBytes caps each string of an event; longer ones are cut at a
// character boundary.
const maxStringBytes = 1024

// sanitize converts an event into a row that any compatible table
// accepts: strings valid UTF-8 and at most maxStringBytes long, numbers
// clamped to their columns' ranges, times to what DateTime holds.
func sanitize(e *recorder.Event, id uuid.UUID) row {
	r := row{
		id:        id,
		ms:        clampMS(e.Time),
		keyID:     cleanString(e.KeyID),
		keyFP:     cleanString(e.KeyFingerprint),
		statusID:  uint8(e.Status),
		status:    e.Status.String(),
		http:      clampUint16(int64(e.HTTPStatus)),
		latencyUS: clampUint32(int64(e.Latency / time.Microsecond)),
		attempt:   clampUint16(int64(e.Attempt)),
		method:    cleanString(e.Method),
		host:      cleanString(e.Host),
		operation: cleanString(e.Operation),
		reqBytes:  max(e.RequestBytes, -1),
		respBytes: max(e.ResponseBytes, -1),
		errorType: cleanString(e.ErrorType),
	}
	if e.TraceID.IsValid() {
		r.traceID = hex.EncodeToString(e.TraceID[:])
	}
	if e.SpanID.IsValid() {
		r.spanID = hex.EncodeToString(e.SpanID[:])
	}
	return r
}

// clampMS returns t in Unix milliseconds (rounded down), clamped to what
// the table holds.
func clampMS(t time.Time) int64 {
	return min(max(t.UnixMilli(), 0), maxEventMS)
}

// cleanString makes s valid UTF-8 (each run of invalid bytes becomes
// U+FFFD) and
// cuts it to maxStringBytes at a character boundary. Valid short strings,
// the usual case, are returned as they are, without allocating.
func cleanString(s string) string {
	if len(s) <= maxStringBytes && utf8.ValidString(s) {
		return s
	}
	if !utf8.ValidString(s) {
		s = strings.ToValidUTF8(s, "\uFFFD")
	}
	if len(s) > maxStringBytes {
		cut := maxStringBytes
		for cut > 0 && !utf8.RuneStart(s[cut]) {
			cut--
		}
		s = s[:cut]
	}
	return s
}

func clampUint16(v int64) uint16 { return uint16(min(max(v, 0), math.MaxUint16)) }
func clampUint32(v int64) uint32 { return uint32(min(max(v, 0), math.MaxUint32)) }

// idGen makes event ids: UUIDs of version 8 (RFC 9562's custom layout)
// holding a random 64-bit prefix, drawn once per store, and a sequence
// number. Two stores collide only if they draw the same prefix. An idGen
// is used by one goroutine.
type idGen struct {
	prefix uint64
	seq    uint64
}

func newIDGen() idGen {
	var b [8]byte
	rand.Read(b[:]) // never fails (crypto/rand panics rather)
	return idGen{prefix: binary.BigEndian.Uint64(b[:])}
}

func (g *idGen) next() uuid.UUID {
	g.seq++
	var u uuid.UUID
	binary.BigEndian.PutUint64(u[:8], g.prefix)
	binary.BigEndian.PutUint64(u[8:], g.seq)
	u[6] = u[6]&0x0f | 0x80 // version 8
	u[8] = u[8]&0x3f | 0x80 // variant RFC 9562
	return u
}
