package clickhouse_test

import (
	"bufio"
	"context"
	"os"
	"runtime/debug"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/apipool-ng/apipool/internal/chtest"
	"github.com/apipool-ng/apipool/recorder/clickhouse"
)

// rssMB returns the process's resident set (VmRSS), in 10^6 bytes; 0
// where /proc is missing.
func rssMB() float64 {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			kb, _ := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 64)
			return kb * 1024 / 1e6
		}
	}
	return 0
}

// BenchmarkOutageRecovery measures an outage and its catch-up with a
// queue of a million events and no spill file: the server is stopped
// (SIGSTOP) while 1,000,000 events are recorded (the 10 seconds
// at 100,000 events/s, without the wait), then continued. It reports the
// time from the server's return to the first batch written (resume-ms),
// the time to write the million (drain-s), and the process's RSS: before
// the outage, at its peak, right after the drain, and 25 s later (the
// queue gives its unused blocks back within two trim intervals, 20 s, and
// the Go runtime returns freed pages to the system in the background).
func BenchmarkOutageRecovery(b *testing.B) {
	const events = 1_000_000
	var resume, drain, before, peak, after, later float64
	for b.Loop() {
		b.StopTimer()
		srv := chtest.StartPrivate(b)
		cfg := testConfig(b, srv)
		cfg.QueueSize = events
		cfg.ReadTimeout = 2 * time.Second
		s, err := clickhouse.New(context.Background(), cfg)
		if err != nil {
			b.Fatal(err)
		}
		before += rssMB()
		if err := srv.Pause(b); err != nil {
			b.Fatal(err)
		}
		e := benchEvent()
		for range events {
			s.Record(e)
		}
		peak += rssMB()
		back := time.Now()
		b.StartTimer()
		if err := srv.Resume(); err != nil {
			b.Fatal(err)
		}
		if err := s.Flush(context.Background()); err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		drain += time.Since(back).Seconds()
		if r := clickhouse.RecoveredAt(s); r.After(back) {
			resume += float64(r.Sub(back).Milliseconds())
		}
		after += rssMB()
		time.Sleep(25 * time.Second)
		later += rssMB()
		if s.Dropped() != 0 {
			b.Fatalf("%d dropped", s.Dropped())
		}
		s.Close(context.Background())
		srv.Close()
		debug.FreeOSMemory()
		b.StartTimer()
	}
	n := float64(b.N)
	b.ReportMetric(resume/n, "resume-ms")
	b.ReportMetric(drain/n, "drain-s")
	b.ReportMetric(before/n, "MB-rss-before")
	b.ReportMetric(peak/n, "MB-rss-peak")
	b.ReportMetric(after/n, "MB-rss-drained")
	b.ReportMetric(later/n, "MB-rss-25s-later")
}

// BenchmarkUniqExactIDs measures the README's duplicate checks on 18.16
// over 750,000 events written by the store: uniqExact(event_id), and the
// "events written twice" query.
func BenchmarkUniqExactIDs(b *testing.B) {
	const events = 750_000
	srv := chtest.Shared(b)
	cfg := testConfig(b, srv)
	cfg.OnFull = clickhouse.Block
	s := newStore(b, cfg)
	e := benchEvent()
	for i := range events {
		e.RequestBytes = int64(i)
		s.Record(e)
	}
	if err := s.Flush(context.Background()); err != nil {
		b.Fatal(err)
	}
	conn := srv.Conn(b)
	var uniq, dups float64
	for b.Loop() {
		start := time.Now()
		var n uint64
		if err := conn.QueryRow(context.Background(), "SELECT uniqExact(event_id) FROM default."+cfg.Table).Scan(&n); err != nil || n != events {
			b.Fatalf("uniqExact: %d, %v", n, err)
		}
		uniq += time.Since(start).Seconds()
		start = time.Now()
		rows, err := conn.Query(context.Background(), "SELECT event_id, count() AS copies FROM default."+cfg.Table+
			" GROUP BY event_id HAVING copies > 1 LIMIT 100")
		if err != nil {
			b.Fatal(err)
		}
		for rows.Next() {
			b.Fatal("duplicates")
		}
		rows.Close()
		dups += time.Since(start).Seconds()
	}
	b.ReportMetric(uniq/float64(b.N)*1000, "ms-uniqExact")
	b.ReportMetric(dups/float64(b.N)*1000, "ms-dup-query")
}
