package clickhouse

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"math"
	"os"
	"path/filepath"
	"unicode/utf8"
)

// The spill file keeps events that the server could not take in time, so
// that an outage longer than the queue can hold loses nothing. It is
// append-only: a header, then records, each
//
//	length  uint32, little endian: the payload's length
//	crc     uint32, little endian: CRC-32C (Castagnoli) of the payload
//	payload see appendPayload
//
// The header holds a magic string, the replay offset (the records before
// it are written to ClickHouse) and the in-flight offset: when it is past
// the replay offset, the records between the two were being inserted, and
// may have been written. The writer sets it before it sends a batch read
// from the file, and moves the replay offset past the batch (clearing the
// in-flight offset) after the insert succeeded, so that a process killed
// at any point leaves either the batch to replay, marked as possibly
// written, or nothing. A truncated or corrupt tail (a crash while
// appending) is cut off when the file is opened.
//
// Files of the first layout (spillMagic1: no in-flight offset) are read
// and replayed; they take the current layout once emptied.
const (
	spillMagic      = "APCHSPL2"
	spillMagic1     = "APCHSPL1"
	spillHeaderLen  = int64(len(spillMagic) + 8 + 8 + 4) // magic, replay offset, in-flight offset, CRC
	spillHeader1Len = int64(len(spillMagic1) + 8 + 4)    // magic, replay offset, CRC
	recordHeadLen   = 8
	// maxPayload bounds a record: an event's strings are capped at
	// maxStringBytes each, so real records are far smaller.
	maxPayload     = 1 << 16
	payloadVersion = 2
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// errCorrupt is wrapped by errors about unreadable spill data.
var errCorrupt = errors.New("corrupt spill record")

// errSpillFull is returned when appending would pass Config.SpillMaxBytes.
var errSpillFull = errors.New("apipool: clickhouse: spill file full")

// appendRecord appends r, framed, to dst.
func appendRecord(dst []byte, r *row) []byte {
	start := len(dst)
	dst = append(dst, make([]byte, recordHeadLen)...)
	dst = appendPayload(dst, r)
	payload := dst[start+recordHeadLen:]
	binary.LittleEndian.PutUint32(dst[start:], uint32(len(payload)))
	binary.LittleEndian.PutUint32(dst[start+4:], crc32.Checksum(payload, castagnoli))
	return dst
}

// appendPayload appends r's encoding: a version byte, the 16 bytes of the
// event id, the time (varint ms), the status id byte, http status, latency
// and attempt (uvarints), the byte counts (varints), then nine strings,
// each a uvarint length and its bytes; and from version 2 the usage: the
// model and client (strings as above), the three token counts (varints)
// and the units and cost (8 bytes each, little endian IEEE 754). Records
// of version 1, written before the usage, read with it not known.
func appendPayload(dst []byte, r *row) []byte {
	dst = append(dst, payloadVersion)
	dst = append(dst, r.id[:]...)
	dst = binary.AppendVarint(dst, r.ms)
	dst = append(dst, r.statusID)
	dst = binary.AppendUvarint(dst, uint64(r.http))
	dst = binary.AppendUvarint(dst, uint64(r.latencyUS))
	dst = binary.AppendUvarint(dst, uint64(r.attempt))
	dst = binary.AppendVarint(dst, r.reqBytes)
	dst = binary.AppendVarint(dst, r.respBytes)
	for _, s := range [...]string{r.keyID, r.keyFP, r.status, r.method, r.host, r.operation, r.traceID, r.spanID, r.errorType, r.model, r.client} {
		dst = binary.AppendUvarint(dst, uint64(len(s)))
		dst = append(dst, s...)
	}
	dst = binary.AppendVarint(dst, r.inTok)
	dst = binary.AppendVarint(dst, r.outTok)
	dst = binary.AppendVarint(dst, r.cachedTok)
	dst = binary.LittleEndian.AppendUint64(dst, math.Float64bits(r.units))
	return binary.LittleEndian.AppendUint64(dst, math.Float64bits(r.cost))
}

// decodeRecord decodes the framed record at the start of b. It returns the
// record's length in b. When b holds only part of a record, the error
// wraps io.ErrUnexpectedEOF; when the record is invalid, errCorrupt.
func decodeRecord(b []byte) (row, int, error) {
	if len(b) < recordHeadLen {
		return row{}, 0, fmt.Errorf("%w: record header", io.ErrUnexpectedEOF)
	}
	n := binary.LittleEndian.Uint32(b)
	if n == 0 || n > maxPayload {
		return row{}, 0, fmt.Errorf("%w: length %d", errCorrupt, n)
	}
	if uint64(len(b)-recordHeadLen) < uint64(n) {
		return row{}, 0, fmt.Errorf("%w: record of %d bytes", io.ErrUnexpectedEOF, n)
	}
	payload := b[recordHeadLen : recordHeadLen+int(n)]
	if crc32.Checksum(payload, castagnoli) != binary.LittleEndian.Uint32(b[4:]) {
		return row{}, 0, fmt.Errorf("%w: checksum mismatch", errCorrupt)
	}
	r, err := decodePayload(payload)
	if err != nil {
		return row{}, 0, err
	}
	return r, recordHeadLen + int(n), nil
}

// decodePayload decodes what appendPayload encoded. It rejects values out
// of their columns' ranges, so a decoded row is as safe to append as a
// sanitised one.
func decodePayload(p []byte) (row, error) {
	var r row
	bad := func(what string) (row, error) { return row{}, fmt.Errorf("%w: %s", errCorrupt, what) }
	if len(p) < 1+16 || p[0] != payloadVersion && p[0] != 1 {
		return bad("version")
	}
	version := p[0]
	copy(r.id[:], p[1:17])
	p = p[17:]
	varint := func() (int64, bool) {
		v, n := binary.Varint(p)
		if n <= 0 {
			return 0, false
		}
		p = p[n:]
		return v, true
	}
	uvarint := func(limit uint64) (uint64, bool) {
		v, n := binary.Uvarint(p)
		if n <= 0 || v > limit {
			return 0, false
		}
		p = p[n:]
		return v, true
	}
	var ok bool
	if r.ms, ok = varint(); !ok || r.ms < 0 || r.ms > maxEventMS {
		return bad("time")
	}
	if len(p) < 1 {
		return bad("status")
	}
	r.statusID, p = p[0], p[1:]
	var v uint64
	if v, ok = uvarint(1<<16 - 1); !ok {
		return bad("http status")
	}
	r.http = uint16(v)
	if v, ok = uvarint(1<<32 - 1); !ok {
		return bad("latency")
	}
	r.latencyUS = uint32(v)
	if v, ok = uvarint(1<<16 - 1); !ok {
		return bad("attempt")
	}
	r.attempt = uint16(v)
	if r.reqBytes, ok = varint(); !ok || r.reqBytes < -1 {
		return bad("request bytes")
	}
	if r.respBytes, ok = varint(); !ok || r.respBytes < -1 {
		return bad("response bytes")
	}
	strs := []*string{&r.keyID, &r.keyFP, &r.status, &r.method, &r.host, &r.operation, &r.traceID, &r.spanID, &r.errorType, &r.model, &r.client}
	if version == 1 {
		strs = strs[:9]
	}
	for _, s := range strs {
		n, ok := uvarint(maxStringBytes)
		if !ok || n > uint64(len(p)) {
			return bad("string length")
		}
		if !utf8.Valid(p[:n]) {
			return bad("string encoding")
		}
		*s, p = string(p[:n]), p[n:]
	}
	r.inTok, r.outTok, r.cachedTok, r.units, r.cost = -1, -1, -1, -1, -1
	if version >= 2 {
		for _, v := range [...]*int64{&r.inTok, &r.outTok, &r.cachedTok} {
			if *v, ok = varint(); !ok || *v < -1 {
				return bad("tokens")
			}
		}
		for _, v := range [...]*float64{&r.units, &r.cost} {
			if len(p) < 8 {
				return bad("amount")
			}
			*v, p = math.Float64frombits(binary.LittleEndian.Uint64(p)), p[8:]
			if *v != cleanAmount(*v) {
				return bad("amount")
			}
		}
	}
	if len(p) != 0 {
		return bad("trailing bytes")
	}
	return r, nil
}

// spillFile is an open spill file. It is used by the writer goroutine
// alone, except for the counters, which the store reads under its lock.
type spillFile struct {
	path string
	f    *os.File
	end  int64 // offset after the last whole record
	pos  int64 // replay offset: the records before it are written
	// count is the number of records in [pos, end); inherited is how many
	// of them an earlier store wrote (the ones before inheritedEnd).
	count, inherited int64
	inheritedEnd     int64
	maxBytes         int64
	wbuf             []byte
	// inflight is the end of the batch being inserted (see the layout),
	// or 0. hdrLen is the header's length: spillHeaderLen, or
	// spillHeader1Len for a file of the first layout (v1), whose header
	// has no in-flight offset.
	inflight int64
	hdrLen   int64
	v1       bool
}

// openSpill opens (creating it if need be) and locks the spill file for
// database.table in dir, and cuts off a truncated or corrupt tail. cut is
// the number of bytes cut off.
func openSpill(dir, database, table string, maxBytes int64) (sf *spillFile, cut int64, err error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, 0, fmt.Errorf("apipool: clickhouse: spill dir: %w", err)
	}
	path := filepath.Join(dir, database+"."+table+".spill")
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, 0, fmt.Errorf("apipool: clickhouse: spill file: %w", err)
	}
	if err := lockFile(f); err != nil {
		f.Close()
		return nil, 0, fmt.Errorf("apipool: clickhouse: spill file %s is in use by another store: %w", path, err)
	}
	sf = &spillFile{path: path, f: f, maxBytes: maxBytes, hdrLen: spillHeaderLen}
	fail := func(err error) (*spillFile, int64, error) {
		unlockFile(f)
		f.Close()
		return nil, 0, err
	}
	st, err := f.Stat()
	if err != nil {
		return fail(fmt.Errorf("apipool: clickhouse: spill file: %w", err))
	}
	if st.Size() == 0 {
		sf.pos, sf.end = spillHeaderLen, spillHeaderLen
		if err := sf.writeHeader(); err != nil {
			return fail(err)
		}
		return sf, 0, nil
	}
	var hdr [spillHeaderLen]byte
	n, _ := f.ReadAt(hdr[:], 0)
	magic := string(hdr[:min(n, len(spillMagic))])
	switch {
	case magic == spillMagic && int64(n) == spillHeaderLen:
		body := hdr[len(spillMagic) : spillHeaderLen-4]
		sf.pos = int64(binary.LittleEndian.Uint64(body))
		sf.inflight = int64(binary.LittleEndian.Uint64(body[8:]))
		if crc32.Checksum(body, castagnoli) != binary.LittleEndian.Uint32(hdr[spillHeaderLen-4:]) {
			// A torn header write (a write of 28 bytes at offset 0 is
			// not torn in practice): replaying from the start may insert
			// some events twice, which beats losing them.
			sf.pos, sf.inflight = spillHeaderLen, 0
		}
	case magic == spillMagic1 && int64(n) >= spillHeader1Len:
		sf.v1, sf.hdrLen = true, spillHeader1Len
		body := hdr[len(spillMagic1) : spillHeader1Len-4]
		sf.pos = int64(binary.LittleEndian.Uint64(body))
		if crc32.Checksum(body, castagnoli) != binary.LittleEndian.Uint32(hdr[spillHeader1Len-4:]) {
			sf.pos = spillHeader1Len // replaying some events twice beats losing them
		}
	default:
		return fail(fmt.Errorf("apipool: clickhouse: %s is not a spill file; move it away", path))
	}
	if sf.pos < sf.hdrLen || sf.pos > st.Size() {
		sf.pos, sf.inflight = sf.hdrLen, 0
	}
	// Count the records to replay, and find where the whole ones end.
	r := bufio.NewReaderSize(io.NewSectionReader(f, sf.pos, st.Size()-sf.pos), 1<<16)
	sf.end = sf.pos
	var buf []byte
	for {
		rec, err := readRecord(r, &buf)
		if err != nil {
			break // io.EOF at a clean end; otherwise the tail is cut below
		}
		sf.end += int64(rec)
		sf.count++
	}
	if sf.inflight <= sf.pos {
		sf.inflight = 0
	}
	sf.inflight = min(sf.inflight, sf.end)
	if sf.end < st.Size() {
		cut = st.Size() - sf.end
		if err := f.Truncate(sf.end); err != nil {
			return fail(fmt.Errorf("apipool: clickhouse: cutting the spill file's corrupt tail: %w", err))
		}
	}
	sf.inherited, sf.inheritedEnd = sf.count, sf.end
	return sf, cut, nil
}

// readRecord reads one framed record from r into *buf (reused) and
// returns its framed length; io.EOF when r is at its end.
func readRecord(r *bufio.Reader, buf *[]byte) (int, error) {
	head, err := r.Peek(recordHeadLen)
	if err != nil {
		if err == io.EOF && len(head) == 0 {
			return 0, io.EOF
		}
		return 0, fmt.Errorf("%w: record header", io.ErrUnexpectedEOF)
	}
	n := int(binary.LittleEndian.Uint32(head))
	if n == 0 || n > maxPayload {
		return 0, fmt.Errorf("%w: length %d", errCorrupt, n)
	}
	if cap(*buf) < recordHeadLen+n {
		*buf = make([]byte, recordHeadLen+n)
	}
	b := (*buf)[:recordHeadLen+n]
	if _, err := io.ReadFull(r, b); err != nil {
		return 0, fmt.Errorf("%w: record of %d bytes", io.ErrUnexpectedEOF, n)
	}
	if crc32.Checksum(b[recordHeadLen:], castagnoli) != binary.LittleEndian.Uint32(b[4:]) {
		return 0, fmt.Errorf("%w: checksum mismatch", errCorrupt)
	}
	return len(b), nil
}

func (sf *spillFile) writeHeader() error {
	var hdr [spillHeaderLen]byte
	var b []byte
	if sf.v1 {
		copy(hdr[:], spillMagic1)
		binary.LittleEndian.PutUint64(hdr[len(spillMagic1):], uint64(sf.pos))
		binary.LittleEndian.PutUint32(hdr[spillHeader1Len-4:], crc32.Checksum(hdr[len(spillMagic1):spillHeader1Len-4], castagnoli))
		b = hdr[:spillHeader1Len]
	} else {
		copy(hdr[:], spillMagic)
		binary.LittleEndian.PutUint64(hdr[len(spillMagic):], uint64(sf.pos))
		binary.LittleEndian.PutUint64(hdr[len(spillMagic)+8:], uint64(sf.inflight))
		binary.LittleEndian.PutUint32(hdr[spillHeaderLen-4:], crc32.Checksum(hdr[len(spillMagic):spillHeaderLen-4], castagnoli))
		b = hdr[:]
	}
	// One write of under a sector: the header is whole or torn, never
	// half old, half new, on the file systems this runs on; a torn one
	// is detected by its CRC. It is not synced: a process killed after
	// the write leaves it in the page cache (see the package README for
	// a machine that crashes).
	if _, err := sf.f.WriteAt(b, 0); err != nil {
		return fmt.Errorf("apipool: clickhouse: spill file: %w", err)
	}
	return nil
}

// uncertain returns the end of a batch that may have been written (an
// earlier insert of it was cut off), starting at the replay offset, or 0.
func (sf *spillFile) uncertain() int64 {
	if sf.inflight > sf.pos {
		return sf.inflight
	}
	return 0
}

// begin records that the records from the replay offset to next are
// being inserted, before the insert starts.
func (sf *spillFile) begin(next int64) error {
	if sf.v1 || sf.inflight == next {
		return nil
	}
	sf.inflight = next
	return sf.writeHeader()
}

// append writes rows at the end of the file, all or none, and syncs it.
func (sf *spillFile) append(rows []row) error {
	sf.wbuf = sf.wbuf[:0]
	for i := range rows {
		sf.wbuf = appendRecord(sf.wbuf, &rows[i])
	}
	if sf.maxBytes > 0 && sf.end+int64(len(sf.wbuf)) > sf.maxBytes {
		return errSpillFull
	}
	if _, err := sf.f.WriteAt(sf.wbuf, sf.end); err != nil {
		sf.f.Truncate(sf.end)
		return fmt.Errorf("apipool: clickhouse: writing the spill file: %w", err)
	}
	if err := sf.f.Sync(); err != nil {
		sf.f.Truncate(sf.end)
		return fmt.Errorf("apipool: clickhouse: writing the spill file: %w", err)
	}
	sf.end += int64(len(sf.wbuf))
	sf.count += int64(len(rows))
	if cap(sf.wbuf) > 1<<20 {
		sf.wbuf = nil // an outage's buffer: not kept for good
	}
	return nil
}

// read decodes up to max records from the replay offset, without moving
// it: commit does that once they are written. It returns the rows, the
// offset after them and how many of them an earlier store wrote.
// When a batch that may have been written waits at the replay offset
// (see uncertain), read returns exactly its records, whatever max.
func (sf *spillFile) read(max int, dst []row) (rows []row, next int64, inherited int64, err error) {
	end := sf.end
	if u := sf.uncertain(); u > 0 {
		end, max = u, int(sf.count)
	}
	r := bufio.NewReaderSize(io.NewSectionReader(sf.f, sf.pos, end-sf.pos), 1<<16)
	next = sf.pos
	var buf []byte
	for len(dst) < max && next < end {
		n, err := readRecord(r, &buf)
		if err != nil {
			return dst, next, inherited, fmt.Errorf("apipool: clickhouse: spill file %s at offset %d: %w", sf.path, next, err)
		}
		rw, _, err := decodeRecord(buf[:n])
		if err != nil {
			return dst, next, inherited, fmt.Errorf("apipool: clickhouse: spill file %s at offset %d: %w", sf.path, next, err)
		}
		if next < sf.inheritedEnd {
			inherited++
		}
		dst = append(dst, rw)
		next += int64(n)
	}
	return dst, next, inherited, nil
}

// commit marks the n records before next as written; inherited of them
// were an earlier store's. When every record is written, the file is
// truncated to its header.
func (sf *spillFile) commit(next int64, n, inherited int64) error {
	sf.pos, sf.inflight = next, 0
	sf.count -= n
	sf.inherited -= inherited
	if sf.pos >= sf.end {
		return sf.reset()
	}
	return sf.writeHeader()
}

// reset empties the file, dropping whatever it holds.
func (sf *spillFile) reset() error {
	sf.pos, sf.end, sf.count, sf.inherited, sf.inheritedEnd = spillHeaderLen, spillHeaderLen, 0, 0, 0
	sf.inflight, sf.v1, sf.hdrLen = 0, false, spillHeaderLen
	if err := sf.f.Truncate(0); err != nil {
		return fmt.Errorf("apipool: clickhouse: truncating the spill file: %w", err)
	}
	return sf.writeHeader()
}

// close releases the file, removing it when it holds nothing to replay.
func (sf *spillFile) close() error {
	if sf.count == 0 {
		os.Remove(sf.path)
	}
	unlockFile(sf.f)
	return sf.f.Close()
}
