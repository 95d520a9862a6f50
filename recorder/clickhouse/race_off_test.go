//go:build !race

package clickhouse_test

const raceEnabled = false
