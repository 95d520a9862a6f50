package apipool

import (
	"context"
	"net/http"
	"testing"
	"time"

	metricnoop "go.opentelemetry.io/otel/metric/noop"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
	tracenoop "go.opentelemetry.io/otel/trace/noop"

	"github.com/apipool-ng/apipool/status"
)

// telBenchRT answers 200 with no body at once.
type telBenchRT struct{}

func (telBenchRT) RoundTrip(r *http.Request) (*http.Response, error) {
	return &http.Response{StatusCode: 200, Body: http.NoBody, Header: http.Header{}, Request: r}, nil
}

// BenchmarkTelemetryOff measures what the telemetry hooks cost when the
// providers record nothing, which is most programs: the default globals
// (no SDK installed), and explicit noop providers.
//
// "hooks" calls the hooks of one rotated request as the transport does
// (the request span; an attempt answered 429, then one answered 200;
// the end of the request), and nothing else. "roundtrip" is a whole GET
// through a 2-key pool over a base that answers 200 at once, for scale;
// "roundtrip/sdk-never-sample" the same with an SDK tracer provider that
// samples nothing, to show what installing an SDK costs even so.
func BenchmarkTelemetryOff(b *testing.B) {
	keys := []Key{{ID: "a", Secret: "secret-a"}, {ID: "b", Secret: "secret-b"}}
	type provider struct {
		name string
		opts []Option
	}
	noops := []provider{
		{"globals", nil},
		{"noop", []Option{WithTracerProvider(tracenoop.NewTracerProvider()), WithMeterProvider(metricnoop.NewMeterProvider())}},
	}
	for _, p := range noops {
		b.Run("hooks/"+p.name, func(b *testing.B) {
			pool, err := New(keys, append([]Option{WithBase(telBenchRT{}), WithRecorder(nil)}, p.opts...)...)
			if err != nil {
				b.Fatal(err)
			}
			req, _ := http.NewRequest("GET", "http://api.test/v1/x", nil)
			r429, r200 := &http.Response{StatusCode: 429}, &http.Response{StatusCode: 200}
			ka, kb := pool.keys.Load().keys[0], pool.keys.Load().keys[1]
			tl := &pool.tel
			b.ReportAllocs()
			for b.Loop() {
				ctx, span := tl.startRequest(req.Context(), req)
				for i, k := range []*keyState{ka, kb} {
					resp, st := r429, status.ReachLimit
					if i == 1 {
						resp, st = r200, status.Success
					}
					actx, aspan := tl.startAttempt(ctx, req, i+1, k)
					if aspan != nil { // as the transport does
						tl.inject(actx, trace.SpanContextFromContext(actx), req)
					}
					tl.attemptDone(actx, aspan, req, k, st, resp, nil, time.Millisecond)
					endSpan(aspan)
				}
				endRequest(span, status.Success, 2, 0, kb, nil)
			}
		})
	}
	all := append(noops, provider{"sdk-never-sample", []Option{
		WithTracerProvider(sdktrace.NewTracerProvider(sdktrace.WithSampler(sdktrace.NeverSample()))),
		WithMeterProvider(metricnoop.NewMeterProvider()),
	}})
	for _, p := range all {
		b.Run("roundtrip/"+p.name, func(b *testing.B) {
			pool, err := New(keys, append([]Option{WithBase(telBenchRT{}), WithRecorder(nil)}, p.opts...)...)
			if err != nil {
				b.Fatal(err)
			}
			req, _ := http.NewRequestWithContext(context.Background(), "GET", "http://api.test/v1/x", nil)
			b.ReportAllocs()
			for b.Loop() {
				resp, err := pool.RoundTrip(req)
				if err != nil {
					b.Fatal(err)
				}
				resp.Body.Close()
			}
		})
	}
}
