package bench

import (
	"fmt"
	"math"
	"math/rand/v2"
	"runtime"
	"testing"
	"time"

	"github.com/apipool-ng/apipool/internal/fakeclock"
	"github.com/apipool-ng/apipool/recorder"
	"github.com/apipool-ng/apipool/recorder/memory"
	"github.com/apipool-ng/apipool/status"
)

// memTrafficRate is the simulated pool's total rate, in events a second.
const memTrafficRate = 100

// BenchmarkMemoryRecorderHeap measures the heap the default recorder (the
// in-memory store with its defaults: 24-hour retention) holds after an
// hour of simulated traffic on a fake clock: 100 events a second over all
// keys, each to a key drawn at random, 90% successes, 6% rate limits and
// 4% server errors, latencies log-uniform from 20ms to 5s. The same
// traffic is spread over 10 and over 1,000 keys. It reports the store's
// HeapInuse after a GC, per key (B/key) and in all (MB), and the events
// recorded (events).
func BenchmarkMemoryRecorderHeap(b *testing.B) {
	for _, keys := range []int{10, 1000} {
		b.Run(fmt.Sprintf("keys=%d", keys), func(b *testing.B) {
			var heap uint64
			var events int
			for b.Loop() {
				heap, events = simulateHour(b, keys)
			}
			b.ReportMetric(float64(heap)/float64(keys), "B/key")
			b.ReportMetric(float64(heap)/1e6, "MB")
			b.ReportMetric(float64(events), "events")
		})
	}
}

// simulateHour records an hour of traffic over keys keys into a new store
// and returns the heap the store holds, and the number of events.
func simulateHour(b *testing.B, keys int) (heap uint64, events int) {
	ids := make([]string, keys)
	for i := range ids {
		ids[i] = fmt.Sprintf("key-%04d", i)
	}
	start := time.Date(2026, 1, 2, 3, 0, 0, 0, time.UTC)
	clock := fakeclock.New(start)
	rng := rand.New(rand.NewPCG(1, 2))
	before := heapInuse()
	s, err := memory.New(memory.WithClock(clock))
	if err != nil {
		b.Fatal(err)
	}
	step := time.Second / memTrafficRate
	for range time.Hour / step {
		clock.Advance(step)
		st := status.Success
		switch r := rng.IntN(100); {
		case r < 6:
			st = status.ReachLimit
		case r < 10:
			st = status.ServerError
		}
		lat := time.Duration(20e6 * pow(250, rng.Float64())) // 20ms to 5s
		s.Record(recorder.Event{Time: clock.Now(), KeyID: ids[rng.IntN(keys)], Status: st, Latency: lat})
		events++
	}
	heap = heapInuse() - before
	runtime.KeepAlive(s)
	return heap, events
}

func pow(x, y float64) float64 { return math.Pow(x, y) }

func heapInuse() uint64 {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapInuse
}
