package bench

import (
	"strconv"
	"testing"

	"github.com/apipool-ng/apipool"
)

// BenchmarkSelector measures a GET through a pool of 10 and of 1000 keys
// under each built-in selection strategy, from GOMAXPROCS goroutines, over
// the canned base. Selection is reached through the pool's public API
// (WithStrategy and RoundTrip), so each figure is the whole request path
// with that strategy; the differences between strategies are the
// strategies' own. The keys have weights 1 to 4 and a daily quota (large
// enough never to run out), so that Weighted and MostQuotaLeft have
// something to weigh.
func BenchmarkSelector(b *testing.B) {
	strategies := []apipool.Strategy{apipool.RoundRobin, apipool.Random, apipool.Weighted, apipool.LeastInFlight, apipool.MostQuotaLeft}
	for _, s := range strategies {
		b.Run(s.String(), func(b *testing.B) {
			for _, n := range []int{10, 1000} {
				b.Run("keys="+strconv.Itoa(n), func(b *testing.B) {
					keys := testKeys(n)
					for i := range keys {
						keys[i].Weight = 1 + i%4
						keys[i].PerDay = 1 << 30
					}
					p := newPool(b, keys, cannedBase{}, apipool.WithStrategy(s))
					warmUp(b, p, newRequest(b), 2*n)
					b.ResetTimer()
					b.ReportAllocs()
					done := measureCPU(b)
					b.RunParallel(func(pb *testing.PB) {
						req := newRequest(b)
						for pb.Next() {
							roundTrip(b, p, req)
						}
					})
					done()
				})
			}
		})
	}
}
