package sql

import (
	"context"
	dbsql "database/sql"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"sync/atomic"

	"github.com/go-sql-driver/mysql"
)

// MySQL and MariaDB: the events go in by LOAD DATA LOCAL INFILE, as text
// that the store writes by hand and go-sql-driver/mysql streams from an
// io.Reader (mysql.RegisterReaderHandler) while the server inserts. A
// multi-row INSERT binds 25 values a row: database/sql copies and
// converts each one, the driver encodes it, the server reads it as a
// parameter; the text costs both sides less, and the server starts on the
// first rows while the writer encodes the next. The server must allow it
// (local_infile: MariaDB's default, not MySQL 8's): New asks, and the
// store inserts as before when it does not, or cannot say.

// loadNames numbers the stores' reader names.
var loadNames atomic.Uint64

// setupLoad makes s write its events by LOAD DATA LOCAL INFILE when the
// server allows it: it registers s's reader with the driver. Close
// deregisters it.
func (s *Store) setupLoad(ctx context.Context) error {
	if s.cfg.noLoad {
		return nil
	}
	var on dbsql.NullInt64
	if err := s.db.QueryRowContext(ctx, "SELECT @@GLOBAL.local_infile").Scan(&on); err != nil {
		// A server of the MySQL protocol that does not know the variable
		// (or refuses the question) gets INSERTs, as one that says no.
		s.log.Info("apipool: sql: could not ask the server whether it allows LOAD DATA LOCAL INFILE; inserting the events by INSERT", "err", err)
		return nil
	}
	if on.Int64 == 0 {
		s.log.Info("apipool: sql: the server does not allow LOAD DATA LOCAL INFILE (local_infile); inserting the events by INSERT")
		return nil
	}
	s.loadName = fmt.Sprintf("apipool-sql-%016x-%d", s.ids.prefix, loadNames.Add(1))
	mysql.RegisterReaderHandler(s.loadName, func() io.Reader {
		// Handed out once: only the writer's own LOAD gets it.
		if r := s.loadSrc.Swap(nil); r != nil {
			return r
		}
		return nil
	})
	s.useLoad = true
	return nil
}

// loadEventsSQL loads the events of s's reader into the event table: all
// its columns, or those before the usage columns (plain rows, see
// row.plain). The fields are tab-separated, the rows end with a newline,
// a backslash escapes: given as hex literals, which NO_BACKSLASH_ESCAPES
// reads alike.
func (s *Store) loadEventsSQL(plain bool) string {
	cols := eventColumns
	if plain {
		cols = cols[:plainColumns]
	}
	return "LOAD DATA LOCAL INFILE 'Reader::" + s.loadName + "' INTO TABLE " + s.t.events +
		" CHARACTER SET utf8mb4 FIELDS TERMINATED BY X'09' ENCLOSED BY '' ESCAPED BY X'5C' LINES TERMINATED BY X'0A' STARTING BY ''" +
		" (" + strings.Join(cols, ", ") + ")"
}

// errLoadChanged is loadEvents' error when the server did not take the
// rows exactly as sent. LOAD DATA LOCAL turns errors into warnings (the
// server cannot stop the client's stream): the store then writes the batch
// again by INSERT, whose errors are errors.
var errLoadChanged = errors.New("LOAD DATA did not write the rows as sent")

// loadEvents writes s.rows into the event table in tx by LOAD DATA LOCAL
// INFILE.
func (s *Store) loadEvents(ctx context.Context, tx *dbsql.Tx) error {
	if len(s.rows) == 0 {
		return nil
	}
	plain := true
	for i := range s.rows {
		if !s.rows[i].plain() {
			plain = false
			break
		}
	}
	src := &loadReader{rows: s.rows, plain: plain, buf: s.loadBuf[:0]}
	s.loadSrc.Store(src)
	res, err := tx.ExecContext(ctx, s.loadEventsSQL(plain))
	// The driver is done with src when ExecContext returns.
	s.loadSrc.Store(nil)
	s.loadBuf = src.buf
	if err != nil {
		return err
	}
	if len(src.rows) > 0 {
		// The driver stopped reading (it reads to the end but on an
		// error, which it returns): not the whole batch.
		return fmt.Errorf("%w: %d of %d rows not read", errLoadChanged, len(src.rows), len(s.rows))
	}
	n, err := res.RowsAffected()
	if err != nil {
		return err
	}
	var warnings int64
	if err := tx.QueryRowContext(ctx, "SELECT @@warning_count").Scan(&warnings); err != nil {
		return err
	}
	if n != int64(len(s.rows)) || warnings > 0 {
		return fmt.Errorf("%w: %d of %d rows written, %d warning(s)", errLoadChanged, n, len(s.rows), warnings)
	}
	return nil
}

// loadRefused reports whether err says that the server does not allow
// LOAD DATA LOCAL INFILE: MySQL's 1148 (ER_NOT_ALLOWED_COMMAND) and 3948
// (local_infile off), MariaDB's 4166 (its capability disabled).
func loadRefused(err error) bool {
	var me *mysql.MySQLError
	if !errors.As(err, &me) {
		return false
	}
	return me.Number == 1148 || me.Number == 3948 || me.Number == 4166
}

// loadReader encodes rows as LOAD DATA reads them: its default text
// format (tab-separated fields, newline-ended rows, backslash escapes), the
// fields in the order of eventColumns, or of its plain columns.
type loadReader struct {
	rows  []row
	plain bool
	buf   []byte // encoded, not yet read
	off   int    // of buf, read
}

func (r *loadReader) Read(p []byte) (int, error) {
	if r.off == len(r.buf) {
		r.buf, r.off = r.buf[:0], 0
		// A packet's worth of rows (the driver reads 16 KiB at a time).
		for len(r.buf) < len(p) && len(r.rows) > 0 {
			r.buf = appendLoadRow(r.buf, &r.rows[0], r.plain)
			r.rows = r.rows[1:]
		}
		if len(r.buf) == 0 {
			return 0, io.EOF
		}
	}
	n := copy(p, r.buf[r.off:])
	r.off += n
	return n, nil
}

// appendLoadRow appends r as one line of LOAD DATA's text format.
func appendLoadRow(b []byte, r *row, plain bool) []byte {
	b = strconv.AppendInt(b, r.ms, 10)
	b = append(b, '\t')
	b = append(b, r.id...) // hex digits and dashes
	b = appendLoadText(b, r.keyID)
	b = appendLoadText(b, r.keyFP)
	b = appendLoadInt(b, int64(r.statusID))
	b = appendLoadText(b, r.status)
	b = appendLoadInt(b, int64(r.http))
	b = appendLoadInt(b, r.latencyUS)
	b = appendLoadInt(b, int64(r.latencyBin))
	b = appendLoadInt(b, int64(r.attempt))
	b = appendLoadText(b, r.method)
	b = appendLoadText(b, r.host)
	b = appendLoadText(b, r.operation)
	b = appendLoadInt(b, r.reqBytes)
	b = appendLoadInt(b, r.respBytes)
	b = appendLoadText(b, r.traceID)
	b = appendLoadText(b, r.spanID)
	b = appendLoadText(b, r.errorType)
	if !plain {
		b = appendLoadText(b, r.model)
		b = appendLoadText(b, r.client)
		b = appendLoadInt(b, r.inTok)
		b = appendLoadInt(b, r.outTok)
		b = appendLoadInt(b, r.cachedTok)
		b = appendLoadFloat(b, r.units)
		b = appendLoadFloat(b, r.cost)
	}
	return append(b, '\n')
}

func appendLoadInt(b []byte, v int64) []byte {
	return strconv.AppendInt(append(b, '\t'), v, 10)
}

// appendLoadFloat appends v in the fewest digits that read back as v
// (sanitize made it finite).
func appendLoadFloat(b []byte, v float64) []byte {
	if v == -1 {
		return append(b, "\t-1"...)
	}
	return strconv.AppendFloat(append(b, '\t'), v, 'g', -1, 64)
}

// appendLoadText appends a text field, a backslash before each backslash,
// and the tab, newline and carriage return as \t, \n, \r. A field is NULL
// only as \N: an escaped string never reads so (nor "NULL", with no
// ENCLOSED BY). sanitize removed NUL bytes.
func appendLoadText(b []byte, s string) []byte {
	b = append(b, '\t')
	i := 0
	for i < len(s) {
		c := s[i]
		if c == '\\' || c == '\t' || c == '\n' || c == '\r' {
			break
		}
		i++
	}
	b = append(b, s[:i]...)
	for ; i < len(s); i++ {
		switch c := s[i]; c {
		case '\\':
			b = append(b, '\\', '\\')
		case '\t':
			b = append(b, '\\', 't')
		case '\n':
			b = append(b, '\\', 'n')
		case '\r':
			b = append(b, '\\', 'r')
		default:
			b = append(b, c)
		}
	}
	return b
}
