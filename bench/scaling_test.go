package bench

import (
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// BenchmarkScaling sends the RoundTrip benchmarks' GET through one pool
// over the canned base from 1, 2, 64 and 1,024 goroutines at once, with
// 10 and with 1,000 keys, and reports requests/s beside ns/op and
// cpu-ns/op. On a machine with P CPUs, requests/s can grow up to P times
// from one goroutine; past P goroutines it should stay flat: the cost per
// request must not grow with the number of keys or goroutines beyond what
// contention for the CPUs explains.
func BenchmarkScaling(b *testing.B) {
	for _, nkeys := range []int{10, 1000} {
		for _, g := range []int{1, 2, 64, 1024} {
			b.Run("keys="+strconv.Itoa(nkeys)+"/goroutines="+strconv.Itoa(g), func(b *testing.B) {
				p := newPool(b, testKeys(nkeys), cannedBase{})
				// Every key has its per-key state (recorder, counters) made
				// before timing, as in a pool that has run for a while.
				for range 2 * nkeys {
					roundTrip(b, p, newRequest(b))
				}
				var next atomic.Int64
				n := int64(b.N)
				var wg sync.WaitGroup
				start := make(chan struct{})
				for range g {
					wg.Go(func() {
						req := newRequest(b)
						<-start
						for next.Add(1) <= n {
							roundTrip(b, p, req)
						}
					})
				}
				b.ReportAllocs()
				b.ResetTimer()
				done := measureCPU(b)
				t0 := time.Now()
				close(start)
				wg.Wait()
				elapsed := time.Since(t0)
				b.StopTimer()
				done()
				b.ReportMetric(float64(b.N)/elapsed.Seconds(), "req/s")
			})
		}
	}
}
