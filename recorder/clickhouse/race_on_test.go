//go:build race

package clickhouse_test

// raceEnabled: the race detector slows the client about tenfold.
const raceEnabled = true
