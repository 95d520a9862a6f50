package clickhouse_test

import (
	"context"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/apipool-ng/apipool/internal/chtest"
	"github.com/apipool-ng/apipool/recorder"
	"github.com/apipool-ng/apipool/recorder/clickhouse"
	"github.com/apipool-ng/apipool/status"
)

func benchEvent() recorder.Event {
	return recorder.Event{
		Time: time.Now(), KeyID: "key-1", KeyFingerprint: "5f3a9c", Status: status.Success, HTTPStatus: 200,
		Latency: 42 * time.Millisecond, Attempt: 1, Method: "POST", Host: "api.example.com", Operation: "Create",
		RequestBytes: 120, ResponseBytes: 2048,
	}
}

// BenchmarkRecord measures Record on the request path: copying the event
// into the queue. The writer sends in the background, but the timer stops
// while the queue drains every 100,000 events, so that Record never meets
// a full queue (dropped/op shows it did not).
func BenchmarkRecord(b *testing.B) {
	srv := chtest.Shared(b)
	cfg := testConfig(b, srv)
	cfg.QueueSize = 200_000
	s := newStore(b, cfg)
	e := benchEvent()
	const chunk = 100_000
	drain := func(b *testing.B) {
		b.StopTimer()
		if err := s.Flush(context.Background()); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
	}
	b.Run("serial", func(b *testing.B) {
		d0 := s.Dropped()
		b.ReportAllocs()
		for i := range b.N {
			if i%chunk == chunk-1 {
				drain(b)
			}
			s.Record(e)
		}
		b.ReportMetric(float64(s.Dropped()-d0)/float64(b.N), "dropped/op")
	})
	b.Run("parallel", func(b *testing.B) {
		// GOMAXPROCS goroutines share each chunk.
		d0 := s.Dropped()
		g := runtime.GOMAXPROCS(0)
		b.ReportAllocs()
		for done := 0; done < b.N; {
			n := min(b.N-done, chunk)
			var wg sync.WaitGroup
			for w := range g {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for range n/g + btoi(w < n%g) {
						s.Record(e)
					}
				}()
			}
			wg.Wait()
			done += n
			drain(b)
		}
		b.ReportMetric(float64(s.Dropped()-d0)/float64(b.N), "dropped/op")
	})
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}

// BenchmarkThroughput measures sustained writing: b.N events recorded
// under the Block policy (so none is dropped) and flushed into the table,
// reported as events/s.
func BenchmarkThroughput(b *testing.B) {
	srv := chtest.Shared(b)
	cfg := testConfig(b, srv)
	cfg.OnFull = clickhouse.Block
	s := newStore(b, cfg)
	e := benchEvent()
	b.ReportAllocs()
	start := time.Now()
	for i := 0; b.Loop(); i++ {
		e.RequestBytes = int64(i)
		s.Record(e)
	}
	if err := s.Flush(context.Background()); err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "events/s")
}

func TestRecordAllocations(t *testing.T) {
	srv := chtest.Shared(t)
	cfg := testConfig(t, srv)
	s := newStore(t, cfg)
	e := benchEvent()
	for range 1000 { // warm the queue's free blocks up
		s.Record(e)
	}
	s.Flush(ctxT(t, 30*time.Second))
	if n := testing.AllocsPerRun(1000, func() { s.Record(e) }); n > 0.05 {
		t.Errorf("Record allocates %.2f times per event", n)
	}
}
