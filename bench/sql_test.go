package bench

import (
	"context"
	"flag"
	"fmt"
	"testing"
	"time"

	"github.com/apipool-ng/apipool/internal/mysqltest"
	"github.com/apipool-ng/apipool/internal/pgtest"
	"github.com/apipool-ng/apipool/internal/testsrv"
	"github.com/apipool-ng/apipool/recorder"
	sqlrec "github.com/apipool-ng/apipool/recorder/sql"
	"github.com/apipool-ng/apipool/status"
)

// sqlTarget opens a database of each kind for the SQL store: a SQLite file
// in a temporary directory, and private PostgreSQL and MariaDB servers
// (internal/pgtest, internal/mysqltest: on loopback, fsync off for
// PostgreSQL, innodb_flush_log_at_trx_commit=2 for MariaDB). A server
// whose binaries are missing skips its benchmark, or fails it in CI.
func sqlTarget(b *testing.B, driver string) string {
	switch driver {
	case "postgres":
		return serverDatabase(b, pgtest.BinDir, pgtest.Start)
	case "mysql":
		return serverDatabase(b, mysqltest.Binary, mysqltest.Start)
	}
	return b.TempDir() + "/usage.db"
}

// serverDatabase starts a private server (skipping b when its binary is
// missing, failing it in CI), stops it when b ends, and returns the DSN of
// a new database.
func serverDatabase[S interface {
	Close() error
	NewDatabase() (string, error)
}](b *testing.B, binary func() (string, error), start func() (S, error)) string {
	if _, err := binary(); err != nil {
		if testsrv.InCI() {
			b.Fatal(err)
		}
		b.Skip(err)
	}
	srv, err := start()
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { srv.Close() })
	dsn, err := srv.NewDatabase()
	if err != nil {
		b.Fatal(err)
	}
	return dsn
}

var sqlDrivers = []string{"sqlite", "postgres", "mysql"}

// BenchmarkSQLRecord measures the sustained rate from Record into each
// database (recorder/sql with the queue blocking when full, default
// batches of 5,000 events, 10,000 for PostgreSQL, Close's final write
// included), as events/s, for the events of BenchmarkRecorder: without
// usage, and with it ("-usage"). The servers run on the same machine, set up
// for tests: PostgreSQL with fsync and full_page_writes off (shared_buffers
// 128MB), MariaDB with innodb_flush_log_at_trx_commit=2 and no binary log,
// SQLite in WAL mode with synchronous=NORMAL (the store's own setting). A
// server that syncs each commit to its disk, or sits across a network,
// gives other figures.
func BenchmarkSQLRecord(b *testing.B) {
	for _, driver := range sqlDrivers {
		for _, usage := range []bool{false, true} {
			name := driver
			if usage {
				name += "-usage"
			}
			b.Run(name, func(b *testing.B) {
				dsn := sqlTarget(b, driver)
				s, err := sqlrec.New(b.Context(), sqlrec.Config{Driver: driver, DSN: dsn, OnFull: sqlrec.Block})
				if err != nil {
					b.Fatal(err)
				}
				start := time.Now()
				benchRecord(b, s, usage)
				if err := s.Close(context.Background()); err != nil {
					b.Fatal(err)
				}
				b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "events/s")
			})
		}
	}
}

// statsEvents is the number of events BenchmarkSQLStats stores: a million,
// or 20,000 when the benchmarks run once each (-benchtime=1x, as make
// bench-smoke runs them), so that the smoke run stays short.
func statsEvents() int {
	if f := flag.Lookup("test.benchtime"); f != nil && f.Value.String() == "1x" {
		return 20_000
	}
	return 1_000_000
}

// BenchmarkSQLStats measures each Stats call over a one-hour window that
// holds a million events of 10 keys (one every 3.6ms, statuses and
// latencies mixed), the window's ends inside minutes (so that both the
// rollup and the event table are read), in ms/op.
func BenchmarkSQLStats(b *testing.B) {
	for _, driver := range sqlDrivers {
		b.Run(driver, func(b *testing.B) {
			dsn := sqlTarget(b, driver)
			ctx := context.Background()
			s, err := sqlrec.New(ctx, sqlrec.Config{Driver: driver, DSN: dsn, OnFull: sqlrec.Block, BatchSize: 10_000})
			if err != nil {
				b.Fatal(err)
			}
			defer s.Close(ctx)
			n := statsEvents()
			base := time.Date(2026, 5, 1, 10, 0, 0, 0, time.UTC)
			step := time.Hour / time.Duration(n)
			sts := [...]status.Status{status.Success, status.Success, status.Success, status.ReachLimit, status.Success, status.ServerError}
			for i := range n {
				s.Record(recorder.Event{Time: base.Add(time.Duration(i) * step), KeyID: fmt.Sprint("key-", i%10),
					Status: sts[i%len(sts)], Latency: time.Duration(20+i%500) * time.Millisecond, Attempt: 1, Method: "GET", Host: "api.example.test"})
			}
			if err := s.Flush(ctx); err != nil {
				b.Fatal(err)
			}
			// The hour, shifted by 30.5s: 59 whole minutes and two partial ones.
			hour := recorder.Query{Since: base.Add(30500 * time.Millisecond), Until: base.Add(time.Hour + 30500*time.Millisecond)}
			limited := hour
			limited.Status = status.ReachLimit
			oneKey := hour
			oneKey.KeyID = "key-3"
			for _, c := range []struct {
				name string
				fn   func() error
			}{
				{"UsageByKey", func() error { _, err := s.UsageByKey(ctx, hour); return err }},
				{"UsageCountReachLimit", func() error { _, err := s.UsageCount(ctx, limited); return err }},
				{"UsageCountKey", func() error { _, err := s.UsageCount(ctx, oneKey); return err }},
				{"LatencyByKey", func() error { _, err := s.LatencyByKey(ctx, hour); return err }},
				{"SeriesMinutes", func() error { _, err := s.Series(ctx, hour, time.Minute); return err }},
				{"TotalsByKey", func() error { _, err := s.TotalsBy(ctx, hour, recorder.ByKey); return err }},
			} {
				b.Run(c.name, func(b *testing.B) {
					for b.Loop() {
						if err := c.fn(); err != nil {
							b.Fatal(err)
						}
					}
					b.ReportMetric(float64(b.Elapsed().Microseconds())/1000/float64(b.N), "ms/op")
				})
			}
		})
	}
}
