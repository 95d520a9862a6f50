package memory

import (
	"context"
	"fmt"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	"github.com/apipool-ng/apipool/recorder"
	"github.com/apipool-ng/apipool/status"
)

var benchBase = time.Date(2026, 1, 2, 3, 0, 0, 0, time.UTC)

var benchClock = clockFunc(func() time.Time { return benchBase.Add(1000 * time.Hour) })

// fill records, for each of n keys, events in every minute of the store's
// retention and an hour more (one of each status class, so that every
// histogram is allocated), and one every second of the last 5 minutes. It
// returns the newest event's time. The events carry no model, client or
// usage (see plainEvent).
func fill(s *Store, keys int) time.Time {
	span := s.Retention() + time.Hour
	end := benchBase.Add(span)
	sts := [...]status.Status{status.Success, status.ReachLimit, status.ServerError}
	for k := range keys {
		id := fmt.Sprintf("key-%03d", k)
		for t := benchBase; t.Before(end); t = t.Add(time.Minute) {
			for i, st := range sts {
				s.Record(plainEvent(t.Add(time.Duration(i)*time.Second), id, st, time.Duration(10+k+i*50)*time.Millisecond))
			}
		}
		for t := end.Add(-5 * time.Minute); t.Before(end); t = t.Add(time.Second) {
			s.Record(plainEvent(t, id, status.Success, 20*time.Millisecond))
		}
	}
	return end.Add(-time.Second)
}

// plainEvent returns an event of a key, status and latency, whose usage
// (bytes, tokens, units, cost) is not known, as the pool records it for an
// API without a usage reader.
func plainEvent(t time.Time, key string, st status.Status, lat time.Duration) recorder.Event {
	e := recorder.Unknown()
	e.Time, e.KeyID, e.Status, e.Latency = t, key, st, lat
	return e
}

func BenchmarkRecord(b *testing.B) {
	s := mustNew(b, WithClock(benchClock))
	e := plainEvent(benchBase, "key", status.Success, 150*time.Millisecond)
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		// 1000 events a second of event time, so buckets keep turning.
		e.Time = benchBase.Add(time.Duration(i) * time.Millisecond)
		s.Record(e)
		i++
	}
}

func BenchmarkRecordParallel(b *testing.B) {
	for _, shared := range []bool{false, true} {
		name := "KeyPerGoroutine"
		if shared {
			name = "OneKey"
		}
		b.Run(name, func(b *testing.B) {
			s := mustNew(b, WithClock(benchClock))
			var g atomic.Int64
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				id := fmt.Sprint("key-", g.Add(1))
				if shared {
					id = "key"
				}
				e := plainEvent(benchBase, id, status.Success, 150*time.Millisecond)
				i := 0
				for pb.Next() {
					e.Time = benchBase.Add(time.Duration(i) * time.Millisecond)
					s.Record(e)
					i++
				}
			})
		})
	}
}

// BenchmarkQuery runs each query over 100 keys and the full 24 hours.
func BenchmarkQuery(b *testing.B) {
	s := mustNew(b, WithClock(benchClock))
	newest := fill(s, 100)
	ctx := context.Background()
	day := recorder.Query{Since: newest.Add(-24 * time.Hour).Truncate(time.Second), Until: newest.Add(time.Second)}
	failed := day
	failed.Status = status.Failed
	lastHour := recorder.Query{Since: newest.Add(-time.Hour), Until: newest.Add(time.Second)}
	for _, c := range []struct {
		name string
		fn   func() error
	}{
		{"UsageByKey", func() error { _, err := s.UsageByKey(ctx, day); return err }},
		{"UsageByKeyFailed", func() error { _, err := s.UsageByKey(ctx, failed); return err }},
		{"UsageCount", func() error { _, err := s.UsageCount(ctx, day); return err }},
		{"LatencyByKey", func() error { _, err := s.LatencyByKey(ctx, day); return err }},
		{"LatencyByKeyLastHour", func() error { _, err := s.LatencyByKey(ctx, lastHour); return err }},
		{"SeriesHourly", func() error { _, err := s.Series(ctx, day, time.Hour); return err }},
		{"SeriesMinutes", func() error { _, err := s.Series(ctx, day, time.Minute); return err }},
		{"TotalsByKey", func() error { _, err := s.TotalsBy(ctx, day, recorder.ByKey); return err }},
	} {
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if err := c.fn(); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkMemoryPerKey reports the heap a key takes once every bucket and
// histogram of a 24-hour store is in use (B/key), and for one event (B/idle-key).
func BenchmarkMemoryPerKey(b *testing.B) {
	const keys = 20
	var full, idle float64
	for b.Loop() {
		before := heapInUse()
		s := mustNew(b, WithClock(benchClock))
		fill(s, keys)
		full = float64(heapInUse()-before) / keys
		runtime.KeepAlive(s)

		before = heapInUse()
		s2 := mustNew(b, WithClock(benchClock))
		for k := range keys {
			s2.Record(plainEvent(benchBase, fmt.Sprint("key-", k), status.Success, 0))
		}
		idle = float64(heapInUse()-before) / keys
		runtime.KeepAlive(s2)
	}
	b.ReportMetric(full, "B/key")
	b.ReportMetric(idle, "B/idle-key")
}

func heapInUse() uint64 {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}

// BenchmarkMemoryPerEvent reports the heap the store holds after an hour
// of traffic at 100 events a second over 10 keys, divided by the events
// (B/event), and in all (MB): "plain" events carry a key, a status and a
// latency; "usage" events also a model (of 2), a client (of 3), and
// tokens and cost on the successes (unknown on the failures), as an LLM
// pool records them.
func BenchmarkMemoryPerEvent(b *testing.B) {
	for _, usage := range []bool{false, true} {
		name := "plain"
		if usage {
			name = "usage"
		}
		b.Run(name, func(b *testing.B) {
			const rate, keys = 100, 10
			models := []string{"gpt-4o-mini", "claude-sonnet-4-5"}
			clients := []string{"web", "batch", "ci"}
			var heap uint64
			var n int
			for b.Loop() {
				before := heapInUse()
				s := mustNew(b, WithClock(benchClock))
				n = 0
				for t := benchBase; t.Before(benchBase.Add(time.Hour)); t = t.Add(time.Second / rate) {
					e := recorder.Unknown()
					e.Time, e.KeyID, e.Status, e.Latency = t, fmt.Sprint("key-", n%keys), status.Success, time.Duration(20+n%300)*time.Millisecond
					if n%10 == 7 {
						e.Status = status.ReachLimit
					}
					if usage {
						e.Model, e.Client = models[n/keys%len(models)], clients[n/keys/len(models)%len(clients)]
						if e.Status == status.Success {
							e.InputTokens, e.OutputTokens, e.CachedTokens = int64(1000+n%500), int64(200+n%100), int64(n%4*128)
							e.Cost = float64(e.InputTokens)*2.5e-6 + float64(e.OutputTokens)*1e-5
						}
					}
					s.Record(e)
					n++
				}
				heap = heapInUse() - before
				runtime.KeepAlive(s)
			}
			b.ReportMetric(float64(heap)/float64(n), "B/event")
			b.ReportMetric(float64(heap)/1e6, "MB")
		})
	}
}
