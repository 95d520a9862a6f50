package sql_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/apipool-ng/apipool/recorder/recordertest"
	sqlrec "github.com/apipool-ng/apipool/recorder/sql"
)

// TestConformance runs the suite on each dialect, and on MySQL also with
// the events inserted by INSERT rather than LOAD DATA LOCAL INFILE
// ("mysql-insert": for a server that does not allow it).
func TestConformance(t *testing.T) {
	for _, name := range append(drivers, "mysql-insert") {
		t.Run(name, func(t *testing.T) {
			recordertest.Run(t, func(t *testing.T) recordertest.Store {
				driver, _, insert := strings.Cut(name, "-")
				cfg := sqlrec.Config{Driver: driver, DSN: dsnFor(t, driver)}
				if insert {
					cfg = sqlrec.WithoutLoad(cfg)
				}
				s, err := sqlrec.New(context.Background(), cfg)
				if err != nil {
					t.Fatal(err)
				}
				return s
			})
		})
	}
}

// TestConformanceRecentBase runs the suite on events of the last hours,
// in small batches, with a retention that keeps them all.
func TestConformanceRecentBase(t *testing.T) {
	base := time.Now().Truncate(time.Hour).Add(-4 * time.Hour)
	recordertest.RunBase(t, base, func(t *testing.T) recordertest.Store {
		s, err := sqlrec.New(context.Background(), sqlrec.Config{Driver: "sqlite", DSN: dsnFor(t, "sqlite"), BatchSize: 100, Retention: 24 * time.Hour})
		if err != nil {
			t.Fatal(err)
		}
		return s
	})
}
