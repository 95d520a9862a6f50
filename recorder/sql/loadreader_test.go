package sql

import (
	"bytes"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/apipool-ng/apipool/recorder"
	"github.com/apipool-ng/apipool/status"
)

// TestLoadReader: the LOAD DATA stream of a batch, read a few bytes at a
// time, is one line per row in order, with the columns of eventColumns,
// or of the plain ones; a text field's tab, newline, carriage return and
// backslash are escaped, and no field reads as NULL.
func TestLoadReader(t *testing.T) {
	var rows []row
	ids := newIDGen()
	for i := range 3000 { // more than a packet
		e := recorder.Unknown()
		e.Time, e.KeyID, e.Status, e.Host = time.UnixMilli(int64(i)), "k", status.Success, "a\tb\nc\rd\\e\\N"
		if i%2 == 1 {
			e.Model, e.Cost = "m", 0.25
		}
		rows = append(rows, sanitize(&e, ids.next()))
	}
	for _, plain := range []bool{false, true} {
		r := &loadReader{rows: rows, plain: plain}
		var got bytes.Buffer
		p := make([]byte, 7)
		for {
			n, err := r.Read(p)
			got.Write(p[:n])
			if err == io.EOF {
				break
			}
			if err != nil || n == 0 {
				t.Fatalf("Read = %d, %v", n, err)
			}
		}
		lines := strings.Split(strings.TrimSuffix(got.String(), "\n"), "\n")
		if len(lines) != len(rows) {
			t.Fatalf("%d lines; want %d", len(lines), len(rows))
		}
		cols := len(eventColumns)
		if plain {
			cols = plainColumns
		}
		for i, l := range lines {
			f := strings.Split(l, "\t")
			if len(f) != cols || f[1] != rows[i].id || f[11] != `a\tb\nc\rd\\e\\N` {
				t.Fatalf("line %d: %q; want %d fields, its id and the host escaped", i, l, cols)
			}
			if !plain && i%2 == 1 && (f[18] != "m" || f[25-1] != "0.25" || f[20] != "-1") {
				t.Fatalf("line %d: %q; want model m, cost 0.25, input tokens -1", i, l)
			}
			if strings.Contains(l, "\t\\N") {
				t.Fatalf("line %d has a NULL field: %q", i, l)
			}
		}
	}
}
