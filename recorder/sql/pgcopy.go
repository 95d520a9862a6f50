package sql

import "encoding/binary"

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

// appendCopyText appends a text value: its UTF-8 bytes, which sanitize
// made valid and free of NUL.
func appendCopyText(b []byte, s string) []byte {
	b = binary.BigEndian.AppendUint32(b, uint32(len(s)))
	return append(b, s...)
}

// appendCopyRow appends r as one tuple of the binary COPY format, its
// fields in the order of eventColumns (bigint, text, smallint, integer as
// migrateEvents and migrateLean make them).
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
	return b
}
