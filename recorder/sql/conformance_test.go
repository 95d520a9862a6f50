package sql_test

import (
	"context"
	"testing"
	"time"

	"github.com/apipool-ng/apipool/recorder/recordertest"
	sqlrec "github.com/apipool-ng/apipool/recorder/sql"
)

func TestConformance(t *testing.T) {
	for _, driver := range drivers {
		t.Run(driver, func(t *testing.T) {
			recordertest.Run(t, func(t *testing.T) recordertest.Store {
				cfg := sqlrec.Config{Driver: driver, DSN: dsnFor(t, driver)}
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
