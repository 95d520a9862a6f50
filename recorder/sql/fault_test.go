package sql_test

import (
	"bufio"
	"context"
	dbsql "database/sql"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/apipool-ng/apipool/internal/mysqltest"
	"github.com/apipool-ng/apipool/internal/pgtest"
	"github.com/apipool-ng/apipool/recorder"
	sqlrec "github.com/apipool-ng/apipool/recorder/sql"
	"github.com/apipool-ng/apipool/status"
)

// server is a private server that stops and starts.
type server interface {
	Stop() error
	Kill() error
	Start() error
}

// faultConfig retries quickly.
func faultConfig(driver, dsn string) sqlrec.Config {
	return sqlrec.Config{Driver: driver, DSN: dsn, BatchSize: 500, FlushInterval: 20 * time.Millisecond,
		MinBackoff: 10 * time.Millisecond, MaxBackoff: 200 * time.Millisecond}
}

// recordSome records n events of distinct times from the counter.
func recordSome(s *sqlrec.Store, next *int, n int) {
	base := time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)
	for range n {
		*next++
		s.Record(recorder.Event{Time: base.Add(time.Duration(*next) * time.Millisecond), KeyID: fmt.Sprint("k", *next%7),
			Status: status.Success, Latency: time.Millisecond})
	}
}

// checkOnce checks that each of n events recorded is in the database
// exactly once, or counted as dropped.
func checkOnce(t *testing.T, s *sqlrec.Store, db *dbsql.DB, n int) {
	t.Helper()
	var rows, distinct, rolled, counted int64
	if err := db.QueryRow("SELECT COUNT(*), COUNT(DISTINCT event_id) FROM apipool_events").Scan(&rows, &distinct); err != nil {
		t.Fatal(err)
	}
	if err := db.QueryRow("SELECT SUM(events) FROM apipool_events_1m").Scan(&rolled); err != nil {
		t.Fatal(err)
	}
	if err := db.QueryRow("SELECT SUM(events) FROM apipool_counts_1m").Scan(&counted); err != nil {
		t.Fatal(err)
	}
	dropped := int64(s.Dropped())
	if rows != distinct || rows+dropped != int64(n) || rolled != rows || counted != rows {
		t.Errorf("%d events recorded: %d rows, %d distinct, %d in the rollup, %d in the counts rollup, %d dropped", n, rows, distinct, rolled, counted, dropped)
	}
	got, err := s.UsageCount(context.Background(), recorder.Query{})
	if err != nil || got != rows {
		t.Errorf("UsageCount = %d, %v; want %d", got, err, rows)
	}
}

// testRestart records while the server stops (gracefully, then by a
// crash) and starts again: every event is written once.
func testRestart(t *testing.T, driver string, srv server, dsn string) {
	ctx := context.Background()
	s, err := sqlrec.New(ctx, faultConfig(driver, dsn))
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		// Bounded, so that a server that did not come back fails the
		// test instead of hanging it.
		cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		s.Close(cctx)
	}()
	db := s.DB()
	n := 0
	recordSome(s, &n, 3000)
	if err := s.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	for _, stop := range []struct {
		name string
		fn   func() error
	}{{"stop", srv.Stop}, {"kill", srv.Kill}} {
		recordSome(s, &n, 3000) // the writer is at work
		if err := stop.fn(); err != nil {
			t.Fatal(err)
		}
		recordSome(s, &n, 3000) // the server is down
		fctx, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
		if err := s.Flush(fctx); err == nil {
			t.Errorf("%s: Flush succeeded with the server down", stop.name)
		}
		cancel()
		if err := srv.Start(); err != nil {
			t.Fatal(err)
		}
		// The connections left idle from before are dead, and pgx finds
		// that out (and database/sql drops them) only for a connection
		// idle for over a second: a query of checkOnce could get one and
		// fail. Drop them, as a second's wait would.
		db.SetMaxIdleConns(0)
		db.SetMaxIdleConns(4)
		fctx, cancel = context.WithTimeout(ctx, 2*time.Minute)
		if err := s.Flush(fctx); err != nil {
			t.Fatalf("%s: Flush after restart: %v", stop.name, err)
		}
		cancel()
		checkOnce(t, s, db, n)
	}
	if s.Dropped() != 0 {
		t.Errorf("Dropped = %d with a queue large enough", s.Dropped())
	}
}

func TestPostgresRestart(t *testing.T) {
	postgres(t) // skips or fails when PostgreSQL is missing
	srv := pgtest.StartPrivate(t)
	testRestart(t, "postgres", srv, srv.Database(t))
}

func TestMariaDBRestart(t *testing.T) {
	mariadb(t)
	srv := mysqltest.StartPrivate(t)
	testRestart(t, "mysql", srv, srv.Database(t))
}

// TestSQLiteLocked: while another process holds the file's write lock,
// writes wait (Record does not), Flush reports the lock, and Close gives
// up counting what it could not write; once the lock goes, every event is
// written once.
func TestSQLiteLocked(t *testing.T) {
	if os.Getenv("SQLTEST_LOCK") != "" {
		t.Skip("in the child")
	}
	ctx := context.Background()
	file := filepath.Join(t.TempDir(), "usage.db")
	s, err := sqlrec.New(ctx, faultConfig("sqlite", file))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close(ctx)
	n := 0
	recordSome(s, &n, 1000)
	if err := s.Flush(ctx); err != nil {
		t.Fatal(err)
	}

	unlock := lockFile(t, file)
	recordSome(s, &n, 2000)
	fctx, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
	err = s.Flush(fctx)
	cancel()
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Flush while locked = %v; want a deadline", err)
	}
	if s.QueueLen() == 0 {
		t.Error("nothing waits while the file is locked")
	}
	unlock()
	fctx, cancel = context.WithTimeout(ctx, time.Minute)
	defer cancel()
	if err := s.Flush(fctx); err != nil {
		t.Fatalf("Flush after the lock went: %v", err)
	}
	db, err := dbsql.Open("sqlite", file)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	checkOnce(t, s, db, n)

	// Close while locked: it gives up at its deadline and counts.
	unlock = lockFile(t, file)
	defer unlock()
	recordSome(s, &n, 100)
	cctx, cancel2 := context.WithTimeout(ctx, 300*time.Millisecond)
	defer cancel2()
	err = s.Close(cctx)
	var ce *sqlrec.CloseError
	if !errors.As(err, &ce) || ce.Lost != 100 || s.Dropped() != 100 {
		t.Errorf("Close while locked = %v (Dropped %d); want a *CloseError with 100 lost", err, s.Dropped())
	}
}

// lockFile starts a process that takes the SQLite file's write lock, and
// returns a function that makes it let go and waits for it to exit.
func lockFile(t *testing.T, file string) func() {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestLockChild$", "-test.count=1")
	cmd.Env = append(os.Environ(), "SQLTEST_LOCK="+file)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	sc := bufio.NewScanner(stdout)
	locked := false
	for sc.Scan() {
		if strings.TrimSpace(sc.Text()) == "locked" {
			locked = true
			break
		}
	}
	if !locked {
		cmd.Process.Kill()
		cmd.Wait()
		t.Fatal("the locking process did not take the lock")
	}
	done := false
	return func() {
		if done {
			return
		}
		done = true
		stdin.Close()
		go func() {
			for sc.Scan() {
			}
		}()
		if err := cmd.Wait(); err != nil {
			t.Errorf("the locking process: %v", err)
		}
	}
}

// TestLockChild holds a SQLite file's write lock until its standard input
// closes: run by lockFile.
func TestLockChild(t *testing.T) {
	file := os.Getenv("SQLTEST_LOCK")
	if file == "" {
		t.Skip("run by TestSQLiteLocked")
	}
	db, err := dbsql.Open("sqlite", file+"?_pragma=busy_timeout(10000)")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	conn, err := db.Conn(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := conn.ExecContext(context.Background(), "BEGIN EXCLUSIVE"); err != nil {
		t.Fatal(err)
	}
	fmt.Println("locked")
	bufio.NewReader(os.Stdin).ReadString('\n') // until EOF
	if _, err := conn.ExecContext(context.Background(), "ROLLBACK"); err != nil {
		t.Fatal(err)
	}
	conn.Close()
}
