package clickhouse

import (
	"bytes"
	"encoding/binary"
	"errors"
	"hash/crc32"
	"io"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/apipool-ng/apipool/recorder"
	"github.com/apipool-ng/apipool/status"
	"go.opentelemetry.io/otel/trace"
)

func testRows(n int) []row {
	g := newIDGen()
	rows := make([]row, n)
	for i := range rows {
		e := recorder.Event{
			Time:           time.Date(2026, 1, 2, 3, 4, 5, i*1_000_000, time.UTC),
			KeyID:          "key-" + string(rune('a'+i%26)),
			KeyFingerprint: "fp",
			Status:         status.All[i%len(status.All)],
			HTTPStatus:     200 + i%300,
			Latency:        time.Duration(i) * time.Millisecond,
			Attempt:        1 + i%3,
			Method:         "POST",
			Host:           "api.example.com",
			Operation:      "op",
			RequestBytes:   int64(i) - 1,
			ResponseBytes:  -1,
			ErrorType:      "",
		}
		if i%2 == 0 {
			e.TraceID = trace.TraceID{byte(i), 1}
			e.SpanID = trace.SpanID{byte(i), 2}
		}
		// Usage known on every third event, unknown (-1) on the others.
		e.InputTokens, e.OutputTokens, e.CachedTokens, e.Units, e.Cost = -1, -1, -1, -1, -1
		if i%3 == 0 {
			e.Model, e.Client = "model-"+string(rune('a'+i%5)), "client"
			e.InputTokens, e.OutputTokens, e.CachedTokens, e.Units, e.Cost = int64(i)<<33, int64(i), 0, float64(i)/3, float64(i)*1e-7
		}
		rows[i] = sanitize(&e, g.next())
	}
	return rows
}

func TestRecordRoundTrip(t *testing.T) {
	rows := testRows(50)
	rows = append(rows, row{keyID: strings.Repeat("€", maxStringBytes/3), reqBytes: -1, respBytes: -1, ms: maxEventMS})
	var buf []byte
	for i := range rows {
		buf = appendRecord(buf, &rows[i])
	}
	for i := range rows {
		got, n, err := decodeRecord(buf)
		if err != nil {
			t.Fatalf("record %d: %v", i, err)
		}
		if got != rows[i] {
			t.Fatalf("record %d: got %+v, want %+v", i, got, rows[i])
		}
		buf = buf[n:]
	}
	if len(buf) != 0 {
		t.Fatalf("%d bytes left", len(buf))
	}
}

func TestDecodeRecordErrors(t *testing.T) {
	r := testRows(1)[0]
	rec := appendRecord(nil, &r)
	for cut := 0; cut < len(rec); cut++ {
		if _, _, err := decodeRecord(rec[:cut]); !errors.Is(err, io.ErrUnexpectedEOF) {
			t.Fatalf("cut at %d: %v, want io.ErrUnexpectedEOF", cut, err)
		}
	}
	for i := 4; i < len(rec); i++ { // every byte of checksum and payload
		bad := bytes.Clone(rec)
		bad[i] ^= 0x40
		if _, _, err := decodeRecord(bad); !errors.Is(err, errCorrupt) {
			t.Fatalf("flip at %d: %v, want errCorrupt", i, err)
		}
	}
	for _, n := range []uint32{0, maxPayload + 1, 1 << 31} {
		bad := bytes.Clone(rec)
		bad[0], bad[1], bad[2], bad[3] = byte(n), byte(n>>8), byte(n>>16), byte(n>>24)
		if _, _, err := decodeRecord(bad); !errors.Is(err, errCorrupt) {
			t.Errorf("length %d: %v, want errCorrupt", n, err)
		}
	}
}

func TestDecodePayloadRejectsOutOfRange(t *testing.T) {
	for name, r := range map[string]row{
		"negative time":   {ms: -1, reqBytes: -1, respBytes: -1},
		"time past 2106":  {ms: maxEventMS + 1, reqBytes: -1, respBytes: -1},
		"bytes below -1":  {reqBytes: -2, respBytes: -1},
		"invalid UTF-8":   {host: "\xff", reqBytes: -1, respBytes: -1},
		"string too long": {operation: strings.Repeat("x", maxStringBytes+1), reqBytes: -1, respBytes: -1},
		"model too long":  {model: strings.Repeat("x", maxStringBytes+1), reqBytes: -1, respBytes: -1},
		"tokens below -1": {inTok: -2, reqBytes: -1, respBytes: -1},
		"cost NaN":        {cost: math.NaN(), reqBytes: -1, respBytes: -1},
		"units -0.5":      {units: -0.5, reqBytes: -1, respBytes: -1},
		"cost infinite":   {cost: math.Inf(1), reqBytes: -1, respBytes: -1},
	} {
		if _, err := decodePayload(appendPayload(nil, &r)); !errors.Is(err, errCorrupt) {
			t.Errorf("%s: %v, want errCorrupt", name, err)
		}
	}
}

// TestDecodePayloadVersion1: a record written before the usage (payload
// version 1, in a spill file left by an earlier store) reads with its
// usage not known.
func TestDecodePayloadVersion1(t *testing.T) {
	r := testRows(1)[0]
	// Version 1: the layout of version 2 without the model, client, tokens,
	// units and cost at the end.
	p := []byte{1}
	p = append(p, r.id[:]...)
	p = binary.AppendVarint(p, r.ms)
	p = append(p, r.statusID)
	p = binary.AppendUvarint(p, uint64(r.http))
	p = binary.AppendUvarint(p, uint64(r.latencyUS))
	p = binary.AppendUvarint(p, uint64(r.attempt))
	p = binary.AppendVarint(p, r.reqBytes)
	p = binary.AppendVarint(p, r.respBytes)
	for _, s := range [...]string{r.keyID, r.keyFP, r.status, r.method, r.host, r.operation, r.traceID, r.spanID, r.errorType} {
		p = binary.AppendUvarint(p, uint64(len(s)))
		p = append(p, s...)
	}
	got, err := decodePayload(p)
	if err != nil {
		t.Fatal(err)
	}
	want := r
	want.model, want.client = "", ""
	want.inTok, want.outTok, want.cachedTok, want.units, want.cost = -1, -1, -1, -1, -1
	if got != want {
		t.Errorf("got %+v\nwant %+v", got, want)
	}
	if _, err := decodePayload(append(p, 0)); !errors.Is(err, errCorrupt) {
		t.Errorf("a version 1 payload with a trailing byte: %v, want errCorrupt", err)
	}
}

func openTestSpill(t *testing.T, dir string, maxBytes int64) *spillFile {
	t.Helper()
	sf, cut, err := openSpill(dir, "db", "t", maxBytes)
	if err != nil {
		t.Fatal(err)
	}
	if cut != 0 {
		t.Fatalf("cut %d bytes from a clean file", cut)
	}
	return sf
}

func TestSpillFileAppendReadCommit(t *testing.T) {
	dir := t.TempDir()
	sf := openTestSpill(t, dir, 0)
	rows := testRows(25)
	if err := sf.append(rows[:10]); err != nil {
		t.Fatal(err)
	}
	if err := sf.append(rows[10:]); err != nil {
		t.Fatal(err)
	}
	if sf.count != 25 || sf.inherited != 0 {
		t.Fatalf("count %d inherited %d", sf.count, sf.inherited)
	}
	got, next, inh, err := sf.read(20, nil)
	if err != nil || len(got) != 20 || inh != 0 {
		t.Fatalf("read: %d rows, %d inherited, %v", len(got), inh, err)
	}
	for i := range got {
		if got[i] != rows[i] {
			t.Fatalf("row %d differs", i)
		}
	}
	// Not committed: reading again gives the same rows.
	again, next2, _, _ := sf.read(20, nil)
	if next2 != next || again[0] != rows[0] {
		t.Fatal("read moved the replay offset")
	}
	if err := sf.commit(next, 20, 0); err != nil {
		t.Fatal(err)
	}
	got, _, _, err = sf.read(20, nil)
	if err != nil || len(got) != 5 || got[0] != rows[20] {
		t.Fatalf("after commit: %d rows, %v", len(got), err)
	}
	// A new store on the same file finds the 5 left, as inherited.
	if err := sf.close(); err != nil {
		t.Fatal(err)
	}
	sf = openTestSpill(t, dir, 0)
	if sf.count != 5 || sf.inherited != 5 {
		t.Fatalf("reopened: count %d inherited %d", sf.count, sf.inherited)
	}
	if err := sf.append(rows[:3]); err != nil {
		t.Fatal(err)
	}
	got, next, inh, err = sf.read(100, nil)
	if err != nil || len(got) != 8 || inh != 5 || got[5] != rows[0] {
		t.Fatalf("inherited and new: %d rows, %d inherited, %v", len(got), inh, err)
	}
	if err := sf.commit(next, 8, inh); err != nil {
		t.Fatal(err)
	}
	// All written: the file is back to its header, and close removes it.
	if st, err := os.Stat(sf.path); err != nil || st.Size() != spillHeaderLen || sf.count != 0 || sf.inherited != 0 {
		t.Fatalf("after full replay: %v %v, count %d", st.Size(), err, sf.count)
	}
	if err := sf.close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(sf.path); !os.IsNotExist(err) {
		t.Fatalf("empty spill file left behind: %v", err)
	}
}

func TestSpillFileCutsCorruptTail(t *testing.T) {
	for name, damage := range map[string]func(path string, size int64){
		"truncated": func(path string, size int64) { os.Truncate(path, size-7) },
		"garbage appended": func(path string, size int64) {
			f, _ := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
			f.Write([]byte{9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9})
			f.Close()
		},
		"last record flipped": func(path string, size int64) {
			f, _ := os.OpenFile(path, os.O_RDWR, 0)
			f.WriteAt([]byte{0xff}, size-3)
			f.Close()
		},
	} {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			sf := openTestSpill(t, dir, 0)
			rows := testRows(10)
			if err := sf.append(rows); err != nil {
				t.Fatal(err)
			}
			size := sf.end
			sf.close()
			damage(sf.path, size)
			sf, cut, err := openSpill(dir, "db", "t", 0)
			if err != nil {
				t.Fatal(err)
			}
			defer sf.close()
			if cut == 0 {
				t.Error("nothing cut")
			}
			want := 10
			if name != "garbage appended" {
				want = 9
			}
			got, _, _, err := sf.read(100, nil)
			if err != nil || len(got) != want || sf.count != int64(want) {
				t.Fatalf("read %d rows (count %d), %v; want %d", len(got), sf.count, err, want)
			}
			// Appending after the cut works: the new rows follow the good ones.
			if err := sf.append(rows[:1]); err != nil {
				t.Fatal(err)
			}
			if got, _, _, err := sf.read(100, nil); err != nil || len(got) != want+1 {
				t.Fatalf("after append: %d rows, %v", len(got), err)
			}
		})
	}
}

// TestSpillFileInFlight: a batch marked in flight (begin) and not
// committed is, for the next store, a batch that may have been written:
// read returns exactly its records, whatever max.
func TestSpillFileInFlight(t *testing.T) {
	dir := t.TempDir()
	sf := openTestSpill(t, dir, 0)
	rows := testRows(30)
	sf.append(rows)
	_, next, _, _ := sf.read(10, nil)
	sf.commit(next, 10, 0)
	_, next, _, _ = sf.read(7, nil)
	if err := sf.begin(next); err != nil {
		t.Fatal(err)
	}
	sf.close() // a crash during the insert
	sf = openTestSpill(t, dir, 0)
	if sf.count != 20 || sf.uncertain() != next {
		t.Fatalf("reopened: count %d, uncertain %d, want 20 and %d", sf.count, sf.uncertain(), next)
	}
	got, n2, _, err := sf.read(100, nil)
	if err != nil || len(got) != 7 || n2 != next || got[0] != rows[10] {
		t.Fatalf("read of the uncertain batch: %d rows, next %d, %v; want its 7", len(got), n2, err)
	}
	if err := sf.commit(n2, 7, 7); err != nil {
		t.Fatal(err)
	}
	if sf.uncertain() != 0 {
		t.Fatal("still uncertain after commit")
	}
	sf.close()
	sf = openTestSpill(t, dir, 0)
	defer sf.close()
	if sf.count != 13 || sf.uncertain() != 0 {
		t.Fatalf("after commit and reopen: count %d, uncertain %d", sf.count, sf.uncertain())
	}
}

// TestSpillFileV1: a file of the first layout (no in-flight offset) is
// replayed, and takes the current layout once emptied.
func TestSpillFileV1(t *testing.T) {
	dir := t.TempDir()
	rows := testRows(3)
	var b []byte
	b = append(b, spillMagic1...)
	b = binary.LittleEndian.AppendUint64(b, uint64(spillHeader1Len))
	b = binary.LittleEndian.AppendUint32(b, crc32.Checksum(b[len(spillMagic1):], castagnoli))
	for i := range rows {
		b = appendRecord(b, &rows[i])
	}
	os.WriteFile(filepath.Join(dir, "db.t.spill"), b, 0o600)
	sf := openTestSpill(t, dir, 0)
	defer sf.close()
	if sf.count != 3 || !sf.v1 {
		t.Fatalf("v1 file: count %d, v1 %v", sf.count, sf.v1)
	}
	got, next, _, err := sf.read(2, nil)
	if err != nil || len(got) != 2 || got[1] != rows[1] {
		t.Fatalf("read: %d rows, %v", len(got), err)
	}
	sf.begin(next) // no in-flight offset in v1: a no-op
	if err := sf.commit(next, 2, 2); err != nil {
		t.Fatal(err)
	}
	got, next, _, _ = sf.read(2, nil)
	if err := sf.commit(next, 1, 1); err != nil || len(got) != 1 {
		t.Fatal(err)
	}
	hdr := make([]byte, len(spillMagic))
	f, _ := os.Open(sf.path)
	f.Read(hdr)
	f.Close()
	if string(hdr) != spillMagic {
		t.Fatalf("emptied v1 file has magic %q", hdr)
	}
}

func TestSpillFileTornHeader(t *testing.T) {
	dir := t.TempDir()
	sf := openTestSpill(t, dir, 0)
	sf.append(testRows(4))
	_, next, _, _ := sf.read(2, nil)
	sf.commit(next, 2, 0)
	sf.close()
	f, _ := os.OpenFile(filepath.Join(dir, "db.t.spill"), os.O_RDWR, 0)
	f.WriteAt([]byte{0xee}, int64(len(spillMagic))) // the offset no longer matches its CRC
	f.Close()
	sf = openTestSpill(t, dir, 0)
	defer sf.close()
	if sf.count != 4 {
		t.Fatalf("count %d, want all 4 replayed again rather than lost", sf.count)
	}
}

func TestSpillFileNotOurs(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "db.t.spill"), []byte("precious data"), 0o600)
	if _, _, err := openSpill(dir, "db", "t", 0); err == nil || !strings.Contains(err.Error(), "not a spill file") {
		t.Fatalf("openSpill on another file: %v", err)
	}
	if b, _ := os.ReadFile(filepath.Join(dir, "db.t.spill")); string(b) != "precious data" {
		t.Fatal("the file was changed")
	}
}

func TestSpillFileLocked(t *testing.T) {
	dir := t.TempDir()
	sf := openTestSpill(t, dir, 0)
	defer sf.close()
	if _, _, err := openSpill(dir, "db", "t", 0); err == nil || !strings.Contains(err.Error(), "in use") {
		t.Fatalf("second open: %v, want in use", err)
	}
}

func TestSpillFileMaxBytes(t *testing.T) {
	sf := openTestSpill(t, t.TempDir(), 2000)
	defer sf.close()
	rows := testRows(100)
	if err := sf.append(rows[:5]); err != nil {
		t.Fatal(err)
	}
	if err := sf.append(rows); !errors.Is(err, errSpillFull) {
		t.Fatalf("append past the bound: %v", err)
	}
	if sf.count != 5 {
		t.Fatalf("count %d after a refused append", sf.count)
	}
	if st, _ := os.Stat(sf.path); st.Size() != sf.end {
		t.Fatalf("size %d, end %d", st.Size(), sf.end)
	}
}

// FuzzDecodeRecord checks that decoding never panics and that what
// decodes re-encodes to the same record.
func FuzzDecodeRecord(f *testing.F) {
	for _, r := range testRows(3) {
		rec := appendRecord(nil, &r)
		f.Add(rec)
		f.Add(rec[:len(rec)/2])
		f.Add(append(rec, rec...))
	}
	f.Add([]byte{})
	f.Add([]byte{0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		r, n, err := decodeRecord(b)
		if err != nil {
			if !errors.Is(err, errCorrupt) && !errors.Is(err, io.ErrUnexpectedEOF) {
				t.Fatalf("unexpected error kind: %v", err)
			}
			return
		}
		if n < recordHeadLen || n > len(b) {
			t.Fatalf("length %d of %d bytes", n, len(b))
		}
		again, _, err := decodeRecord(appendRecord(nil, &r))
		if err != nil || again != r {
			t.Fatalf("re-encoding: %+v, %v; want %+v", again, err, r)
		}
	})
}

// FuzzDecodePayload reaches the payload decoder without the checksum in
// the way.
func FuzzDecodePayload(f *testing.F) {
	for _, r := range testRows(3) {
		f.Add(appendPayload(nil, &r))
	}
	f.Add([]byte{payloadVersion})
	f.Fuzz(func(t *testing.T, p []byte) {
		r, err := decodePayload(p)
		if err != nil {
			return
		}
		again, err := decodePayload(appendPayload(nil, &r))
		if err != nil || again != r {
			t.Fatalf("re-encoding: %+v, %v; want %+v", again, err, r)
		}
	})
}
