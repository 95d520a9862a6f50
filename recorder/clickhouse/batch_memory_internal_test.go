package clickhouse

import (
	"context"
	"runtime"
	"testing"
	"time"

	"github.com/apipool-ng/apipool/internal/chtest"
	"github.com/apipool-ng/apipool/recorder"
	"github.com/apipool-ng/apipool/status"
)

// BenchmarkBatchMemory measures what a batch of b.N events holds while
// it waits to be sent (the heap kept after a collection, per event): its
// rows (kept for a resend, a check or the spill file), the scratch slices
// it was built through, and the block clickhouse-go copied the values
// into. sent-B/event is what Send allocates on top, per event (the
// encoded and compressed block: short-lived, but live during the send).
// Run it with -benchtime=20000x (the default BatchSize).
func BenchmarkBatchMemory(b *testing.B) {
	srv := chtest.Shared(b)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s, err := New(ctx, Config{Addrs: []string{srv.Addr}, Table: "batch_memory"})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close(ctx)
	st, err := s.setup(ctx)
	if err != nil {
		b.Fatal(err)
	}
	e := recorder.Unknown()
	e.Time, e.KeyID, e.KeyFingerprint, e.Status, e.HTTPStatus = time.Now(), "key-1", "5f3a9c", status.Success, 200
	e.Latency, e.Attempt, e.Method, e.Host, e.Operation = 42*time.Millisecond, 1, "POST", "api.example.com", "Create"
	e.RequestBytes, e.ResponseBytes = 120, 2048
	heap := func() uint64 {
		runtime.GC()
		var m runtime.MemStats
		runtime.ReadMemStats(&m)
		return m.HeapAlloc
	}
	n := b.N
	b.ResetTimer()
	h0 := heap()
	ids := newIDGen()
	j := &job{rows: make([]row, 0, n)}
	for range n {
		j.rows = append(j.rows, sanitize(&e, ids.next()))
	}
	h1 := heap()
	bt, err := s.conn.PrepareBatch(ctx, st.insertSQL)
	if err != nil {
		b.Fatal(err)
	}
	if err := j.cols.append(bt, j.rows, st.layout); err != nil {
		b.Fatal(err)
	}
	h2 := heap()
	var m0, m1 runtime.MemStats
	runtime.ReadMemStats(&m0)
	if err := bt.Send(); err != nil {
		b.Fatal(err)
	}
	runtime.ReadMemStats(&m1)
	b.StopTimer()
	// The heap may shrink between two readings (with -benchtime=1x, as
	// make bench-smoke runs it): differences are signed.
	per := func(to, from uint64) float64 { return (float64(to) - float64(from)) / float64(n) }
	b.ReportMetric(per(h1, h0), "rows-B/event")
	b.ReportMetric(per(h2, h1), "built-B/event")
	b.ReportMetric(per(h2, h0), "batch-B/event")
	b.ReportMetric(per(m1.TotalAlloc, m0.TotalAlloc), "sent-B/event")
	runtime.KeepAlive(j)
}
