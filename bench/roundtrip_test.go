package bench

import "testing"

// BenchmarkRoundTrip measures one GET through each RoundTripper, on one
// goroutine, over an in-process base that answers 200 at once: bare is
// the base alone, the others add their own cost to it. apipool has 10
// keys, its default in-memory recorder and no-op OpenTelemetry providers.
func BenchmarkRoundTrip(b *testing.B) {
	for _, c := range contenders(b, cannedBase{}) {
		b.Run(c.name, func(b *testing.B) {
			req := newRequest(b)
			b.ReportAllocs()
			done := measureCPU(b)
			for b.Loop() {
				roundTrip(b, c.rt, req)
			}
			done()
		})
	}
}

// BenchmarkRoundTripParallel measures the same GET as BenchmarkRoundTrip
// sent from GOMAXPROCS goroutines at once through one shared RoundTripper,
// so that contention on shared state (key counters, breakers, the
// recorder) shows.
func BenchmarkRoundTripParallel(b *testing.B) {
	for _, c := range contenders(b, cannedBase{}) {
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			done := measureCPU(b)
			b.RunParallel(func(pb *testing.PB) {
				req := newRequest(b)
				for pb.Next() {
					roundTrip(b, c.rt, req)
				}
			})
			done()
		})
	}
}
