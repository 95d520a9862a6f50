package sql

import (
	"context"
	"errors"
	"testing"

	"github.com/apipool-ng/apipool/errdefs"
)

// The batch size Config documents: 5,000 events by default, 10,000 for
// PostgreSQL, and a size given kept as it is.
func TestDefaultBatchSize(t *testing.T) {
	for driver, want := range map[string]int{"sqlite": 5000, "postgres": 10_000, "mysql": 5000} {
		c, bc, err := Config{Driver: driver, DSN: "x"}.withDefaults()
		if err != nil {
			t.Fatal(err)
		}
		if c.BatchSize != want || bc.BatchSize != want {
			t.Errorf("%s: BatchSize %d (batch writer %d), want %d", driver, c.BatchSize, bc.BatchSize, want)
		}
		if c, _, _ := (Config{Driver: driver, DSN: "x", BatchSize: 7}).withDefaults(); c.BatchSize != 7 {
			t.Errorf("%s: BatchSize 7 became %d", driver, c.BatchSize)
		}
	}
}

// A malformed PostgreSQL DSN is a configuration error, not a database that
// does not answer (which callers may retry: apipool serve does).
func TestNewMalformedPostgresDSN(t *testing.T) {
	for _, dsn := range []string{"postgres://u@127.0.0.1:notaport/x", "not a dsn %zz"} {
		_, err := New(context.Background(), Config{Driver: "postgres", DSN: dsn})
		if !errors.Is(err, errdefs.ErrInvalidConfig) || errors.Is(err, ErrUnavailable) {
			t.Errorf("%q: %v, want a configuration error", dsn, err)
		}
	}
}
