package sql

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"math"
	"testing"
	"time"

	"github.com/apipool-ng/apipool/recorder"
	"github.com/apipool-ng/apipool/status"
)

// TestCopySource: the COPY stream of a batch larger than a chunk, read a
// few bytes at a time, is the header, one tuple per event in order, and
// the trailer; the rows and rollup rows it leaves are the batch's. Every
// tuple has every column; a usage amount not known (-1) is NULL, a known
// one its value (schema version 6).
func TestCopySource(t *testing.T) {
	const n = 2000 // about 4 chunks
	evs := make([]recorder.Event, n)
	base := time.Date(2026, 5, 1, 10, 0, 0, 0, time.UTC)
	fields := len(eventColumns)
	for i := range evs {
		e := recorder.Unknown()
		e.Time, e.KeyID, e.Status, e.Latency, e.Host, e.Method = base.Add(time.Duration(i)*100*time.Millisecond), fmt.Sprint("key-", i%3),
			status.Success, time.Duration(i)*time.Millisecond, "api.example.test", "GET"
		if i%2 == 0 {
			e.Model, e.InputTokens, e.Cost = "m", int64(i), float64(i)/8
		}
		evs[i] = e
	}
	g := newIDGen()
	src := &copySource{evs: evs, ids: g.reserve(n)}
	var out bytes.Buffer
	p := make([]byte, 7)
	for {
		k, err := src.Read(p)
		out.Write(p[:k])
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	b := out.Bytes()
	if !bytes.HasPrefix(b, copyHeader) || !bytes.HasSuffix(b, copyTrailer) {
		t.Fatal("no header or trailer")
	}
	b = b[len(copyHeader) : len(b)-len(copyTrailer)]
	for i := range n {
		if len(b) < 2 || binary.BigEndian.Uint16(b) != uint16(fields) {
			t.Fatalf("tuple %d: no field count", i)
		}
		b = b[2:]
		for f := range fields {
			l := int(int32(binary.BigEndian.Uint32(b)))
			// The usage amounts: NULL (-1) when not known.
			inTok, cost := plainColumns+2, fields-1
			if f >= inTok {
				known := i%2 == 0 && (f == inTok || f == cost)
				if (l == -1) == known {
					t.Fatalf("tuple %d, field %d: length %d, known %v", i, f, l, known)
				}
				if l == -1 {
					b = b[4:]
					continue
				}
			}
			if l < 0 || len(b) < 4+l {
				t.Fatalf("tuple %d, field %d: length %d, %d bytes left", i, f, l, len(b))
			}
			if f == 0 {
				if ms := int64(binary.BigEndian.Uint64(b[4:])); ms != evs[i].Time.UnixMilli() {
					t.Fatalf("tuple %d: time %d, want %d", i, ms, evs[i].Time.UnixMilli())
				}
			}
			if f == inTok {
				if v := int64(binary.BigEndian.Uint64(b[4:])); v != evs[i].InputTokens {
					t.Fatalf("tuple %d: input tokens %d, want %d", i, v, evs[i].InputTokens)
				}
			}
			if f == cost {
				if c := math.Float64frombits(binary.BigEndian.Uint64(b[4:])); c != evs[i].Cost {
					t.Fatalf("tuple %d: cost %v, want %v", i, c, evs[i].Cost)
				}
			}
			b = b[4+l:]
		}
	}
	if len(b) != 0 {
		t.Fatalf("%d bytes after the tuples", len(b))
	}
	if len(src.rows) != n || !src.ended {
		t.Fatalf("%d rows, ended %v", len(src.rows), src.ended)
	}
	var sum int64
	for _, a := range src.agg {
		sum += a.events
	}
	var counted int64
	for _, c := range src.counts {
		counted += c.events
	}
	if sum != n || counted != n {
		t.Errorf("rollup rows hold %d events, counts rows %d; want %d", sum, counted, n)
	}
	ids := map[string]bool{}
	for _, r := range src.rows {
		ids[r.id] = true
	}
	if next := g.next(); len(ids) != n || ids[next] {
		t.Errorf("%d distinct ids for %d rows, or the generator reuses one (%s)", len(ids), n, next)
	}
}

// After abandon (a COPY that failed while pgconn's goroutine may still be
// reading), Read fails at once and no longer reads the batch's events,
// which go back to the batch writer: clearing them meanwhile is no race.
func TestCopySourceAbandon(t *testing.T) {
	evs := make([]recorder.Event, 3000)
	for i := range evs {
		evs[i] = recorder.Event{Time: time.Unix(1_700_000_000, 0), KeyID: "k", Status: status.Success}
	}
	g := newIDGen()
	src := &copySource{evs: evs, ids: g.reserve(len(evs))}
	p := make([]byte, 1024)
	if _, err := src.Read(p); err != nil {
		t.Fatal(err)
	}
	done := make(chan error)
	go func() { // pgconn's goroutine, reading on
		for {
			if _, err := src.Read(p); err != nil {
				done <- err
				return
			}
		}
	}()
	src.abandon()
	clear(evs) // the batch writer's, after CopyFrom returned
	if err := <-done; err != errCopyAbandoned && err != io.EOF {
		t.Fatalf("Read after abandon: %v", err)
	}
	if _, err := src.Read(p); err != errCopyAbandoned {
		t.Fatalf("Read after abandon: %v, want errCopyAbandoned", err)
	}
}
