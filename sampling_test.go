package apipool_test

import (
	"testing"

	"go.opentelemetry.io/otel/propagation"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/apipool-ng/apipool"
)

// A request whose span is sampled out carries no trace header upstream
// and leaves no span; a sampled one carries its attempt's traceparent.
func TestSampledOutRequestInjectsNothing(t *testing.T) {
	t.Parallel()
	for _, sampled := range []bool{false, true} {
		sampler := sdktrace.NeverSample()
		if sampled {
			sampler = sdktrace.AlwaysSample()
		}
		sr := tracetest.NewSpanRecorder()
		tp := sdktrace.NewTracerProvider(sdktrace.WithSampler(sampler), sdktrace.WithSpanProcessor(sr))
		up := newUpstream(nil)
		p := mustNew(t, keys(1), apipool.WithBase(up), apipool.WithTracerProvider(tp), apipool.WithPropagators(propagation.TraceContext{}))
		mustDo(t, p)
		got := up.Calls()[0].Header.Get("Traceparent")
		switch {
		case !sampled && (got != "" || len(sr.Ended()) != 0):
			t.Fatalf("sampled out: traceparent %q, %d spans; want none", got, len(sr.Ended()))
		case sampled && (got == "" || len(sr.Ended()) != 2):
			t.Fatalf("sampled: traceparent %q, %d spans; want one header and two spans", got, len(sr.Ended()))
		}
	}
}

// WithStripCredentials with empty lists removes nothing but the pool's own
// header; nil lists keep the defaults.
func TestStripCredentialsLists(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		name    string
		opt     apipool.Option
		keptKey bool
	}{
		{"defaults", apipool.WithStripCredentials(nil, nil), false},
		{"none", apipool.WithStripCredentials([]string{}, []string{}), true},
	} {
		up := newUpstream(nil)
		p := mustNew(t, keys(1), apipool.WithBase(up), c.opt)
		req := newGet(t, "http://api.test/x?api_key=ph")
		req.Header.Set("Api-Key", "ph")
		resp, err := p.RoundTrip(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		s := up.Calls()[0]
		if kept := s.Header.Get("Api-Key") == "ph" && s.Query["api_key"] != nil; kept != c.keptKey {
			t.Fatalf("%s: the caller's Api-Key and api_key kept: %v, want %v", c.name, kept, c.keptKey)
		}
		if s.Header.Get("Authorization") != "Bearer s0" {
			t.Fatalf("%s: the pool's key is not on the wire: %v", c.name, s.Header)
		}
	}
}
