package sql_test

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/apipool-ng/apipool/recorder/recordertest"
	sqlrec "github.com/apipool-ng/apipool/recorder/sql"
)

// newSQLite opens a store on a new SQLite file in t's temporary directory.
func newSQLite(t *testing.T, cfg sqlrec.Config) *sqlrec.Store {
	t.Helper()
	cfg.Driver = "sqlite"
	if cfg.DSN == "" {
		cfg.DSN = filepath.Join(t.TempDir(), "usage.db")
	}
	s, err := sqlrec.New(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestConformanceSQLite(t *testing.T) {
	recordertest.Run(t, func(t *testing.T) recordertest.Store {
		return newSQLite(t, sqlrec.Config{})
	})
}

func TestConformanceSQLiteRecentBase(t *testing.T) {
	base := time.Now().Truncate(time.Hour).Add(-4 * time.Hour)
	recordertest.RunBase(t, base, func(t *testing.T) recordertest.Store {
		return newSQLite(t, sqlrec.Config{BatchSize: 100})
	})
}
