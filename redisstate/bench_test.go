package redisstate_test

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/apipool-ng/apipool/internal/redistest"
	"github.com/apipool-ng/apipool/sharedstate"
)

// BenchmarkTake measures one Take: one round trip to a redis-server on
// loopback running the limits script, as the request path pays it for a
// key with shared limits (the pool calls Take at most once per request,
// and once per leased block when the limits are high enough to lease).
// Each call is a microsecond after the last, so that the rate windows log
// a new time each call, as they do in use.
//
//   - Rate: PerSecond and PerMinute (two sliding windows), n = 1, as for a key
//     with rate limits; the limits are high, so every call is granted.
//   - Day: PerDay only, a block of n = 16, as the pool leases.
//   - All: every limit at once.
//   - Parallel: Rate from GOMAXPROCS goroutines, for throughput.
//
// The server shares the machine's cores with the benchmark.
func BenchmarkTake(b *testing.B) {
	srv := redistest.Shared(b)
	r := newReplica(b, srv, testPrefix(b))
	ctx := context.Background()
	now := time.Now()
	for _, c := range []struct {
		name string
		l    sharedstate.Limits
		n    int
	}{
		{"Rate", sharedstate.Limits{PerSecond: 1e9, PerMinute: 1 << 40}, 1},
		{"Day", sharedstate.Limits{PerDay: 1 << 40, Day: day(now)}, 16},
		{"All", sharedstate.Limits{PerSecond: 1e9, PerMinute: 1 << 40, PerDay: 1 << 40, Day: day(now)}, 1},
	} {
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			at := now
			for b.Loop() {
				at = at.Add(time.Microsecond)
				if g, _, err := r.Take(ctx, "bench-"+c.name, c.l, at, c.n); err != nil || g != c.n {
					b.Fatalf("granted %d, %v", g, err)
				}
			}
		})
	}
	b.Run("Parallel", func(b *testing.B) {
		b.ReportAllocs()
		l := sharedstate.Limits{PerSecond: 1e9, PerMinute: 1 << 40}
		var tick atomic.Int64
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				at := now.Add(time.Duration(tick.Add(1)) * time.Microsecond)
				if g, _, err := r.Take(ctx, "bench-parallel", l, at, 1); err != nil || g != 1 {
					b.Errorf("granted %d, %v", g, err)
					return
				}
			}
		})
	})
}

// BenchmarkPublish measures one Publish of a cooldown that moves the
// deadline (so it is stored and published), off the request path.
func BenchmarkPublish(b *testing.B) {
	srv := redistest.Shared(b)
	r := newReplica(b, srv, testPrefix(b))
	ctx := context.Background()
	until := time.Now().Add(time.Hour)
	b.ReportAllocs()
	for b.Loop() {
		until = until.Add(time.Millisecond)
		if err := r.Publish(ctx, sharedstate.Change{KeyID: "k", Kind: sharedstate.Cooldown, Until: until}); err != nil {
			b.Fatal(err)
		}
	}
}
