package sql

import "testing"

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
