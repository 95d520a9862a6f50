package sql

import (
	"encoding/binary"
	"errors"
	"io"
	"math"
	"sync"

	"github.com/apipool-ng/apipool/recorder"
)

// PostgreSQL's binary COPY format, written by hand for the event table:
// the store knows its columns' types (checked by New), so it encodes each
// row directly rather than through pgx's per-value type lookup, which took
// most of the writer's time.

// copyHeader starts a binary COPY stream: the signature, no flags, no
// header extension.
var copyHeader = []byte("PGCOPY\n\377\r\n\000\000\000\000\000\000\000\000\000")

// copyTrailer ends it.
var copyTrailer = []byte{0xff, 0xff}

func appendCopyInt64(b []byte, v int64) []byte {
	b = binary.BigEndian.AppendUint32(b, 8)
	return binary.BigEndian.AppendUint64(b, uint64(v))
}

func appendCopyInt32(b []byte, v int32) []byte {
	b = binary.BigEndian.AppendUint32(b, 4)
	return binary.BigEndian.AppendUint32(b, uint32(v))
}

func appendCopyInt16(b []byte, v int16) []byte {
	b = binary.BigEndian.AppendUint32(b, 2)
	return binary.BigEndian.AppendUint16(b, uint16(v))
}

// appendCopyFloat64 appends a double precision value: its IEEE 754 bits.
func appendCopyFloat64(b []byte, v float64) []byte {
	b = binary.BigEndian.AppendUint32(b, 8)
	return binary.BigEndian.AppendUint64(b, math.Float64bits(v))
}

// appendCopyText appends a text value: its UTF-8 bytes, which sanitize
// made valid and free of NUL.
func appendCopyText(b []byte, s string) []byte {
	b = binary.BigEndian.AppendUint32(b, uint32(len(s)))
	return append(b, s...)
}

// appendCopyRow appends r as one tuple of the binary COPY format, its
// fields in the order of eventColumns (bigint, text, smallint, integer,
// double precision as migrateEvents, migrateLean and migrateUsage make
// them), a usage amount not known as NULL (schema version 6).
func appendCopyRow(b []byte, r *row) []byte {
	b = binary.BigEndian.AppendUint16(b, uint16(len(eventColumns)))
	b = appendCopyInt64(b, r.ms)
	b = appendCopyText(b, r.id)
	b = appendCopyText(b, r.keyID)
	b = appendCopyText(b, r.keyFP)
	b = appendCopyInt16(b, r.statusID)
	b = appendCopyText(b, r.status)
	b = appendCopyInt32(b, r.http)
	b = appendCopyInt64(b, r.latencyUS)
	b = appendCopyInt16(b, r.latencyBin)
	b = appendCopyInt32(b, r.attempt)
	b = appendCopyText(b, r.method)
	b = appendCopyText(b, r.host)
	b = appendCopyText(b, r.operation)
	b = appendCopyInt64(b, r.reqBytes)
	b = appendCopyInt64(b, r.respBytes)
	b = appendCopyText(b, r.traceID)
	b = appendCopyText(b, r.spanID)
	b = appendCopyText(b, r.errorType)
	b = appendCopyText(b, r.model)
	b = appendCopyText(b, r.client)
	b = appendCopyKnownInt64(b, r.inTok)
	b = appendCopyKnownInt64(b, r.outTok)
	b = appendCopyKnownInt64(b, r.cachedTok)
	b = appendCopyKnownFloat64(b, r.units)
	b = appendCopyKnownFloat64(b, r.cost)
	return b
}

// copyNull is a NULL field: the length -1, no bytes.
var copyNull = []byte{0xff, 0xff, 0xff, 0xff}

// appendCopyKnownInt64 appends v, or NULL when it is -1 ("not known").
func appendCopyKnownInt64(b []byte, v int64) []byte {
	if v < 0 {
		return append(b, copyNull...)
	}
	return appendCopyInt64(b, v)
}

// appendCopyKnownFloat64 appends v, or NULL when it is -1 ("not known").
func appendCopyKnownFloat64(b []byte, v float64) []byte {
	if v < 0 {
		return append(b, copyNull...)
	}
	return appendCopyFloat64(b, v)
}

// copyChunk is about how many bytes copySource encodes at a time.
const copyChunk = 64 << 10

// copySource is the io.Reader of a batch's COPY: it sanitizes the events
// into rows and encodes them a chunk at a time, as pgconn reads them (on
// its own goroutine, while the server takes in the chunks before), and
// sums the rows into the rollups' rows when all are encoded. Its slices
// are its own until CopyFrom returns without error, or until abandon.
type copySource struct {
	// mu is held by each Read: abandon waits for a Read in progress, so
	// that pgconn's goroutine, which may go on reading after CopyFrom
	// returned an error, never touches the batch's events afterwards.
	mu        sync.Mutex
	abandoned bool

	evs    []recorder.Event
	ids    idGen // the ids of the events
	rows   []row
	buf    []byte
	off    int
	ended  bool // the trailer is in buf
	agg    []rollupRow
	counts []countRow
}

var errCopyAbandoned = errors.New("apipool: sql: the COPY was abandoned")

// abandon makes every later Read fail without touching the events or
// the buffers, once a Read in progress has returned.
func (c *copySource) abandon() {
	c.mu.Lock()
	c.abandoned = true
	c.mu.Unlock()
}

func (c *copySource) Read(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.abandoned {
		return 0, errCopyAbandoned
	}
	for c.off == len(c.buf) {
		if c.ended {
			return 0, io.EOF
		}
		c.buf, c.off = c.buf[:0], 0
		if len(c.rows) == 0 {
			c.buf = append(c.buf, copyHeader...)
		}
		for len(c.rows) < len(c.evs) && len(c.buf) < copyChunk {
			i := len(c.rows)
			c.rows = append(c.rows, sanitize(&c.evs[i], c.ids.next()))
			c.buf = appendCopyRow(c.buf, &c.rows[i])
		}
		if len(c.rows) == len(c.evs) {
			c.buf = append(c.buf, copyTrailer...)
			c.ended = true
			c.agg = aggregate(c.rows, c.agg)
			c.counts = countsOf(c.agg, c.counts)
		}
	}
	n := copy(p, c.buf[c.off:])
	c.off += n
	return n, nil
}
