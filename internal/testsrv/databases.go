package testsrv

import (
	"context"
	"database/sql"
	"fmt"
	"sync/atomic"
	"testing"
	"time"
)

// Databases makes databases for tests on a SQL server, through
// database/sql (the harness imports the driver): each test takes one of
// its own. Its methods are safe for concurrent use.
type Databases struct {
	Pkg    string                 // the harness, which starts the messages: "pgtest"
	Driver string                 // the database/sql driver name: "pgx"
	DSNOf  func(db string) string // the DSN of database db on the server
	Admin  string                 // the database connected to for pings and CREATE DATABASE

	n atomic.Int64
}

// Ping reports whether the server answers, within 2s.
func (d *Databases) Ping() error {
	db, err := sql.Open(d.Driver, d.DSNOf(d.Admin))
	if err != nil {
		return err
	}
	defer db.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	return db.PingContext(ctx)
}

// NewDatabase creates a new, empty database and returns its DSN.
func (d *Databases) NewDatabase() (string, error) {
	name := fmt.Sprintf("test_%d", d.n.Add(1))
	db, err := sql.Open(d.Driver, d.DSNOf(d.Admin))
	if err != nil {
		return "", err
	}
	defer db.Close()
	if _, err := db.Exec("CREATE DATABASE " + name); err != nil {
		return "", fmt.Errorf("%s: creating database %s: %w", d.Pkg, name, err)
	}
	return d.DSNOf(name), nil
}

// Database is NewDatabase for a test: it fails t on error.
func (d *Databases) Database(t testing.TB) string {
	t.Helper()
	dsn, err := d.NewDatabase()
	if err != nil {
		t.Fatal(err)
	}
	return dsn
}
