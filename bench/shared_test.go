package bench

import (
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/apipool-ng/apipool"
	"github.com/apipool-ng/apipool/internal/redistest"
	"github.com/apipool-ng/apipool/redisstate"
)

// BenchmarkSharedState measures the GET of BenchmarkRoundTrip through a
// pool of 10 keys with limits, with the key state in memory (local) and
// shared through Redis (redisstate, a private local redis-server): with
// daily quotas alone and with a per-second rate, both of which the pool
// leases from Redis in blocks (up to 16 requests; a rate's block lapses
// after the time it stands for).
// Skipped without the redis-server binary (redisstate's tests fail then
// in CI).
func BenchmarkSharedState(b *testing.B) {
	withLimits := func(day bool) []apipool.Key {
		keys := testKeys(10)
		for i := range keys {
			if day {
				keys[i].PerDay = 1 << 30
			} else {
				keys[i].PerSecond = 1e5
			}
		}
		return keys
	}
	run := func(b *testing.B, p *apipool.Transport) {
		req := newRequest(b)
		warmUp(b, p, req, 100)
		b.ReportAllocs()
		done := measureCPU(b)
		for b.Loop() {
			roundTrip(b, p, req)
		}
		done()
	}
	b.Run("local/day", func(b *testing.B) { run(b, newPool(b, withLimits(true), cannedBase{})) })
	b.Run("local/rate", func(b *testing.B) { run(b, newPool(b, withLimits(false), cannedBase{})) })

	if _, err := redistest.Binary(); err != nil {
		b.Skip(err)
	}
	srv, err := redistest.Start()
	if err != nil {
		b.Fatal(err)
	}
	defer srv.Close()
	rdb := redis.NewClient(srv.Options())
	defer rdb.Close()
	for _, c := range []struct {
		name string
		day  bool
	}{{"redis/day", true}, {"redis/rate", false}} {
		b.Run(c.name, func(b *testing.B) {
			store, err := redisstate.New(rdb, redisstate.WithPrefix("bench-"+c.name))
			if err != nil {
				b.Fatal(err)
			}
			p := newPool(b, withLimits(c.day), cannedBase{}, apipool.WithSharedState(store))
			run(b, p)
			if h := p.SharedStateHealth(); !h.Available || h.Errors > 0 {
				b.Fatalf("shared state unhealthy: %+v", h)
			}
		})
	}
}
