package pgtest

import (
	"context"
	"database/sql"
	"testing"
)

func TestMain(m *testing.M) { Main(m) }

// TestServer: the shared server serves a new database; a private one
// stops (refusing connections) and starts again with its data.
func TestServer(t *testing.T) {
	dsn := Shared(t).Database(t)
	db, err := sql.Open("pgx", dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var n int
	if err := db.QueryRow("SELECT 1 + 1").Scan(&n); err != nil || n != 2 {
		t.Fatalf("SELECT 1 + 1 = %d, %v", n, err)
	}

	p := StartPrivate(t)
	pdb, err := sql.Open("pgx", p.Database(t))
	if err != nil {
		t.Fatal(err)
	}
	defer pdb.Close()
	if _, err := pdb.Exec("CREATE TABLE t (v INT); INSERT INTO t VALUES (7)"); err != nil {
		t.Fatal(err)
	}
	if err := p.Stop(); err != nil {
		t.Fatal(err)
	}
	if err := pdb.PingContext(context.Background()); err == nil {
		t.Error("the stopped server answered")
	}
	if err := p.Start(); err != nil {
		t.Fatal(err)
	}
	if err := pdb.QueryRow("SELECT v FROM t").Scan(&n); err != nil || n != 7 {
		t.Errorf("after restart: %d, %v; want 7", n, err)
	}
}
