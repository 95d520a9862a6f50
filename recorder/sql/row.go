package sql

import (
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"math"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/apipool-ng/apipool/recorder"
)

// row is an event as the event table stores it, sanitised so that no value
// can spoil a batch: strings valid UTF-8 and cut to their columns' sizes,
// numbers clamped to their columns' ranges.
type row struct {
	ms         int64 // event time, Unix milliseconds in [0, maxEventMS]
	id         string
	keyID      string
	keyFP      string
	statusID   int16
	status     string
	http       int32
	latencyUS  int64
	latencyBin int16
	attempt    int32
	method     string
	host       string
	operation  string
	reqBytes   int64 // -1 when unknown
	respBytes  int64
	traceID    string // 32 hex digits, or empty
	spanID     string // 16 hex digits, or empty
	errorType  string
	// Of version 5: -1 when not known.
	model, client            string
	inTok, outTok, cachedTok int64
	units, cost              float64
}

// maxEventMS is the last millisecond stored: 9999-12-31T23:59:59.999Z.
// Times are clamped to [1970, 10000).
const maxEventMS = 253402300799999

// Caps on strings, in bytes; longer ones are cut at a character boundary.
const (
	maxKeyBytes    = 255 // key_id is indexed: VARCHAR(255) in every dialect
	maxNameBytes   = 255 // model and client are in the rollups' keys
	maxStringBytes = 1024
)

func sanitize(e *recorder.Event, id string) row {
	lat := int64(e.Latency / time.Microsecond)
	lat = max(lat, 0)
	r := row{
		ms:         clampMS(e.Time),
		id:         id,
		keyID:      cleanString(e.KeyID, maxKeyBytes),
		keyFP:      cleanString(e.KeyFingerprint, maxStringBytes),
		statusID:   int16(e.Status),
		status:     e.Status.String(),
		http:       int32(min(max(e.HTTPStatus, 0), math.MaxInt32)),
		latencyUS:  lat,
		latencyBin: int16(binOf(time.Duration(lat) * time.Microsecond)),
		attempt:    int32(min(max(e.Attempt, 0), math.MaxInt32)),
		method:     cleanString(e.Method, maxStringBytes),
		host:       cleanString(e.Host, maxStringBytes),
		operation:  cleanString(e.Operation, maxStringBytes),
		reqBytes:   max(e.RequestBytes, -1),
		respBytes:  max(e.ResponseBytes, -1),
		errorType:  cleanString(e.ErrorType, maxStringBytes),
		model:      cleanString(e.Model, maxNameBytes),
		client:     cleanString(e.Client, maxNameBytes),
		inTok:      max(e.InputTokens, -1),
		outTok:     max(e.OutputTokens, -1),
		cachedTok:  max(e.CachedTokens, -1),
		units:      cleanAmount(e.Units),
		cost:       cleanAmount(e.Cost),
	}
	if e.TraceID.IsValid() {
		r.traceID = hex.EncodeToString(e.TraceID[:])
	}
	if e.SpanID.IsValid() {
		r.spanID = hex.EncodeToString(e.SpanID[:])
	}
	return r
}

// plain reports whether r says no usage: no model nor client, nothing
// known (-1). SQLite and MySQL write such rows without the usage columns,
// which their defaults fill alike, at the cost of rows of before them.
func (r *row) plain() bool {
	return r.model == "" && r.client == "" && r.inTok == -1 && r.outTok == -1 && r.cachedTok == -1 && r.units == -1 && r.cost == -1
}

// cleanAmount returns v, or -1 ("not known") when v is negative, NaN or
// infinite, which no column of every dialect holds.
func cleanAmount(v float64) float64 {
	if v >= 0 && v <= math.MaxFloat64 {
		return v
	}
	return -1
}

// clampMS returns t in Unix milliseconds (rounded down), clamped to what
// the table holds.
func clampMS(t time.Time) int64 {
	return min(max(t.UnixMilli(), 0), maxEventMS)
}

// cleanString makes s valid UTF-8 (each run of invalid bytes becomes
// U+FFFD), without NUL bytes (PostgreSQL refuses them in text), and cuts it
// to n bytes at a character boundary. Valid short strings, the usual case,
// are returned as they are.
func cleanString(s string, n int) string {
	if len(s) <= n && utf8.ValidString(s) && strings.IndexByte(s, 0) < 0 {
		return s
	}
	s = strings.ToValidUTF8(s, "\uFFFD")
	s = strings.ReplaceAll(s, "\x00", "\uFFFD")
	if len(s) > n {
		cut := n
		for cut > 0 && !utf8.RuneStart(s[cut]) {
			cut--
		}
		s = s[:cut]
	}
	return s
}

// idGen makes ids of events and batches: UUIDs of version 8 (RFC 9562's
// custom layout) holding a random 64-bit prefix, drawn once per store, and
// a sequence number, in the usual text form. It is used by one goroutine.
type idGen struct {
	prefix uint64
	seq    uint64
	buf    [36]byte
}

func newIDGen() idGen {
	var b [8]byte
	rand.Read(b[:])
	return idGen{prefix: binary.BigEndian.Uint64(b[:])}
}

// reserve returns a generator of the next n ids, and skips them.
func (g *idGen) reserve(n int) idGen {
	r := idGen{prefix: g.prefix, seq: g.seq}
	g.seq += uint64(n)
	return r
}

func (g *idGen) next() string {
	g.seq++
	var u [16]byte
	binary.BigEndian.PutUint64(u[:8], g.prefix)
	binary.BigEndian.PutUint64(u[8:], g.seq)
	u[6] = u[6]&0x0f | 0x80 // version 8
	u[8] = u[8]&0x3f | 0x80 // variant RFC 9562
	b := g.buf[:]
	hex.Encode(b[0:8], u[0:4])
	b[8] = '-'
	hex.Encode(b[9:13], u[4:6])
	b[13] = '-'
	hex.Encode(b[14:18], u[6:8])
	b[18] = '-'
	hex.Encode(b[19:23], u[8:10])
	b[23] = '-'
	hex.Encode(b[24:], u[10:])
	return string(b)
}
