package clickhouse

import (
	"math"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/apipool-ng/apipool/recorder"
	"github.com/apipool-ng/apipool/status"
	"go.opentelemetry.io/otel/trace"
)

func TestSanitize(t *testing.T) {
	long := strings.Repeat("é", maxStringBytes) // 2 bytes each
	e := recorder.Event{
		Time:           time.Date(2026, 1, 2, 3, 4, 5, 678_900_000, time.UTC),
		KeyID:          "key\xff\xfe-1",
		KeyFingerprint: long,
		Status:         status.Status(200),
		HTTPStatus:     -5,
		Latency:        -time.Second,
		Attempt:        1 << 20,
		Method:         "GET",
		Host:           "api.example.com",
		RequestBytes:   -7,
		ResponseBytes:  math.MaxInt64,
		TraceID:        trace.TraceID{1, 2, 3},
		SpanID:         trace.SpanID{0xab},
		ErrorType:      "\x00nul",
		Model:          "m\xff",
		Client:         long,
		InputTokens:    -9,
		OutputTokens:   0,
		CachedTokens:   math.MaxInt64,
		Units:          math.NaN(),
		Cost:           -0.25,
	}
	r := sanitize(&e, testID())
	if r.model != "m\uFFFD" || len(r.client) != maxStringBytes || r.inTok != -1 || r.outTok != 0 || r.cachedTok != math.MaxInt64 ||
		r.units != -1 || r.cost != -1 {
		t.Errorf("usage: model %q, client of %d bytes, tokens %d %d %d, units %v, cost %v; want -1 for what no column holds",
			r.model, len(r.client), r.inTok, r.outTok, r.cachedTok, r.units, r.cost)
	}
	if r.ms != e.Time.UnixMilli() {
		t.Errorf("ms = %d, want %d", r.ms, e.Time.UnixMilli())
	}
	if r.keyID != "key\uFFFD-1" {
		t.Errorf("keyID = %q", r.keyID)
	}
	if len(r.keyFP) > maxStringBytes || !utf8.ValidString(r.keyFP) || len(r.keyFP) != maxStringBytes {
		t.Errorf("keyFP: %d bytes, valid %v", len(r.keyFP), utf8.ValidString(r.keyFP))
	}
	if r.statusID != 200 || r.status != "status(200)" {
		t.Errorf("status = %d %q", r.statusID, r.status)
	}
	if r.http != 0 || r.latencyUS != 0 || r.attempt != math.MaxUint16 {
		t.Errorf("http %d, latency %d, attempt %d", r.http, r.latencyUS, r.attempt)
	}
	if r.reqBytes != -1 || r.respBytes != math.MaxInt64 {
		t.Errorf("bytes %d %d", r.reqBytes, r.respBytes)
	}
	if r.traceID != "01020300000000000000000000000000" || r.spanID != "ab00000000000000" {
		t.Errorf("trace %q span %q", r.traceID, r.spanID)
	}
	if r.errorType != "\x00nul" {
		t.Errorf("errorType = %q (NUL is valid UTF-8 and must stay)", r.errorType)
	}

	e = recorder.Event{Time: time.Unix(-10, 0), Latency: 100 * time.Hour, HTTPStatus: 1 << 20}
	r = sanitize(&e, testID())
	if r.ms != 0 || r.latencyUS != math.MaxUint32 || r.http != math.MaxUint16 || r.traceID != "" || r.spanID != "" {
		t.Errorf("clamps: %+v", r)
	}
	e.Time = time.Date(3000, 1, 1, 0, 0, 0, 0, time.UTC)
	if r := sanitize(&e, testID()); r.ms != maxEventMS {
		t.Errorf("far future: ms = %d, want %d", r.ms, int64(maxEventMS))
	}
}

func TestCleanStringKeepsValidStrings(t *testing.T) {
	for _, s := range []string{"", "k", "a'b\\c", "日本語", strings.Repeat("x", maxStringBytes)} {
		if got := cleanString(s); got != s {
			t.Errorf("cleanString(%q) = %q", s, got)
		}
	}
	if n := testing.AllocsPerRun(100, func() { cleanString("key-1") }); n != 0 {
		t.Errorf("cleanString of a valid string allocates %v times", n)
	}
	// A cut never splits a character.
	s := strings.Repeat("a", maxStringBytes-1) + "€"
	if got := cleanString(s); got != strings.Repeat("a", maxStringBytes-1) {
		t.Errorf("cut at a character boundary: got %d bytes", len(got))
	}
}

func TestIDGen(t *testing.T) {
	a, b := newIDGen(), newIDGen()
	seen := map[[16]byte]bool{}
	for range 1000 {
		for _, g := range []*idGen{&a, &b} {
			id := g.next()
			if seen[id] {
				t.Fatalf("duplicate id %v", id)
			}
			seen[id] = true
			if id.Version() != 4 || id.Variant().String() != "RFC4122" {
				t.Fatalf("id %v: version %d, variant %v", id, id.Version(), id.Variant())
			}
		}
	}
}

func testID() [16]byte {
	g := newIDGen()
	return g.next()
}
