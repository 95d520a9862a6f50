package sql_test

import (
	"context"
	"fmt"
	"os"
	"sync"
	"testing"

	"github.com/apipool-ng/apipool/internal/mysqltest"
	"github.com/apipool-ng/apipool/internal/pgtest"
	"github.com/apipool-ng/apipool/internal/testsrv"
	sqlrec "github.com/apipool-ng/apipool/recorder/sql"
)

// The package's servers start when a test first needs them, so that the
// SQLite tests alone start none, and stop when the tests end.
var (
	pgOnce    sync.Once
	pgServer  *pgtest.Server
	pgErr     error
	myOnce    sync.Once
	myServer  *mysqltest.Server
	myErr     error
	missingPG error
	missingMy error
)

func TestMain(m *testing.M) {
	_, missingPG = pgtest.BinDir()
	_, missingMy = mysqltest.Binary()
	if testsrv.InCI() {
		for _, err := range []error{missingPG, missingMy} {
			if err != nil {
				fmt.Fprintf(os.Stderr, "FAIL: %v (CI=true, so a missing server is an error)\n", err)
				os.Exit(1)
			}
		}
	}
	code := m.Run()
	if pgServer != nil {
		pgServer.Close()
	}
	if myServer != nil {
		myServer.Close()
	}
	os.Exit(code)
}

func unavailable(t testing.TB, err error) {
	t.Helper()
	if testsrv.InCI() {
		t.Fatalf("%v (CI=true, so a missing server is an error)", err)
	}
	t.Skip(err)
}

// postgres returns the package's PostgreSQL server.
func postgres(t testing.TB) *pgtest.Server {
	t.Helper()
	if missingPG != nil {
		unavailable(t, missingPG)
	}
	pgOnce.Do(func() { pgServer, pgErr = pgtest.Start() })
	if pgErr != nil {
		t.Fatal(pgErr)
	}
	return pgServer
}

// mariadb returns the package's MariaDB server.
func mariadb(t testing.TB) *mysqltest.Server {
	t.Helper()
	if missingMy != nil {
		unavailable(t, missingMy)
	}
	myOnce.Do(func() { myServer, myErr = mysqltest.Start() })
	if myErr != nil {
		t.Fatal(myErr)
	}
	return myServer
}

// dsnFor returns a new, empty database for the driver.
func dsnFor(t testing.TB, driver string) string {
	t.Helper()
	switch driver {
	case "postgres":
		return postgres(t).Database(t)
	case "mysql":
		return mariadb(t).Database(t)
	}
	return t.TempDir() + "/usage.db"
}

// drivers are the three dialects the tests run on.
var drivers = []string{"sqlite", "postgres", "mysql"}

// open opens a store on a new database of the driver and closes it when
// t ends.
func open(t testing.TB, driver string, cfg sqlrec.Config) *sqlrec.Store {
	t.Helper()
	cfg.Driver = driver
	if cfg.DSN == "" {
		cfg.DSN = dsnFor(t, driver)
	}
	s, err := sqlrec.New(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close(context.Background()) })
	return s
}
