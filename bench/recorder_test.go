package bench

import (
	"context"
	"net/http"
	"testing"
	"time"

	"github.com/apipool-ng/apipool/internal/chtest"
	"github.com/apipool-ng/apipool/recorder"
	"github.com/apipool-ng/apipool/recorder/clickhouse"
	"github.com/apipool-ng/apipool/recorder/memory"
	"github.com/apipool-ng/apipool/status"
)

// BenchmarkRecorder measures one Record call of each store, on one
// goroutine: the cost a request pays per attempt to record its usage
// event (for ClickHouse, with the queue blocking when full, the sustained
// rate into the table, reported as events/s). The events spread over 10 keys, with the mix of statuses and
// latencies of a busy pool, and times that move on by a microsecond an
// event; their usage (tokens, units, cost) is not known (-1), as for an
// API without a usage reader. The "-usage" cases' events also carry 2
// models and 3 clients, and tokens and cost on the successes, as an LLM
// pool records them.
func BenchmarkRecorder(b *testing.B) {
	for _, usage := range []bool{false, true} {
		suffix := ""
		if usage {
			suffix = "-usage"
		}
		b.Run("memory"+suffix, func(b *testing.B) {
			s, err := memory.New()
			if err != nil {
				b.Fatal(err)
			}
			defer s.Close(b.Context())
			benchRecord(b, s, usage)
		})
		b.Run("clickhouse"+suffix, func(b *testing.B) { benchClickHouse(b, usage) })
	}
}

// benchClickHouse is BenchmarkRecorder's case of a ClickHouse store.
func benchClickHouse(b *testing.B, usage bool) {
	// A private server, as the store's own tests start; skipped
	// without the binary (recorder/clickhouse's tests fail then in CI).
	if _, err := chtest.Binary(); err != nil {
		b.Skip(err)
	}
	srv, err := chtest.Start()
	if err != nil {
		b.Fatal(err)
	}
	defer srv.Close()
	// Block when the queue is full: the figure is then the sustained
	// rate from Record into the table, flush included, not the cost
	// of filling a queue.
	s, err := clickhouse.New(b.Context(), clickhouse.Config{Addrs: []string{srv.Addr}, Table: "bench_events", OnFull: clickhouse.Block})
	if err != nil {
		b.Fatal(err)
	}
	start := time.Now()
	benchRecord(b, s, usage)
	if err := s.Close(context.Background()); err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "events/s")
}

// The models and clients of benchRecord's events.
var (
	benchModels  = []string{"gpt-4o-mini", "claude-sonnet-4-5"}
	benchClients = []string{"web", "batch", "ci"}
)

// benchRecord records events into r, as BenchmarkRecorder says; usage
// gives them models, clients, tokens and cost.
func benchRecord(b *testing.B, r recorder.Recorder, usage bool) {
	keys := testKeys(10)
	statuses := [...]status.Status{status.Success, status.Success, status.Success, status.Success, status.Success,
		status.Success, status.Success, status.ReachLimit, status.ServerError, status.Success}
	events := make([]recorder.Event, 64)
	for i := range events {
		k := keys[i%len(keys)]
		st := statuses[i%len(statuses)]
		code := http.StatusOK
		switch st {
		case status.ReachLimit:
			code = http.StatusTooManyRequests
		case status.ServerError:
			code = http.StatusBadGateway
		}
		e := recorder.Unknown()
		e.KeyID, e.KeyFingerprint, e.Status, e.HTTPStatus = k.ID, "0123456789abcdef", st, code
		e.Latency, e.Attempt = time.Duration(50+i*37)*time.Millisecond, 1
		e.Method, e.Host, e.RequestBytes, e.ResponseBytes = http.MethodGet, "api.example.test", 0, 512
		if !usage {
			events[i] = e
			continue
		}
		// An LLM API's usage: the model and client of every request, and
		// tokens and cost where the answer says them (successes).
		e.Model, e.Client = benchModels[i%len(benchModels)], benchClients[i%len(benchClients)]
		if st == status.Success {
			e.InputTokens, e.OutputTokens, e.CachedTokens = int64(1200+i*13), int64(300+i*7), int64(i%4*256)
			e.Cost = float64(e.InputTokens)*2.5e-6 + float64(e.OutputTokens)*1e-5
		}
		events[i] = e
	}
	start := time.Now().Add(-time.Minute)
	for _, e := range events[:len(keys)] { // each key's state is made on its first event
		e.Time = start
		r.Record(e)
	}
	b.ReportAllocs()
	done := measureCPU(b)
	i := 0
	for b.Loop() {
		e := events[i%len(events)]
		e.Time = start.Add(time.Duration(i) * time.Microsecond)
		r.Record(e)
		i++
	}
	done()
	if d, ok := r.(recorder.DropCounter); ok && d.Dropped() > 0 {
		b.Errorf("%d events dropped", d.Dropped())
	}
}
