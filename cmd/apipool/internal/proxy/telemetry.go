package proxy

import (
	"context"
	"errors"
	"net/http"

	"github.com/apipool-ng/apipool/cmd/apipool/internal/config"
	promclient "github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlpmetric/otlpmetrichttp"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/exporters/prometheus"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/metric/noop"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
	tracenoop "go.opentelemetry.io/otel/trace/noop"
)

// telemetry holds the server's meter and tracer providers and the
// Prometheus handler.
type telemetry struct {
	mp       metric.MeterProvider
	tp       trace.TracerProvider
	metrics  http.Handler // nil without Prometheus
	tracing  bool         // spans are exported: join the callers' traces
	shutdown []func(context.Context) error

	requests metric.Float64Histogram
	rejected metric.Int64Counter
}

func newTelemetry(ctx context.Context, c config.Telemetry) (*telemetry, error) {
	t := &telemetry{mp: noop.NewMeterProvider(), tp: tracenoop.NewTracerProvider()}
	res := resource.NewSchemaless(attribute.String("service.name", c.ServiceName))
	var readers []sdkmetric.Option
	if c.Prometheus {
		reg := promclient.NewRegistry()
		reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
		exp, err := prometheus.New(prometheus.WithRegisterer(reg))
		if err != nil {
			return nil, err
		}
		readers = append(readers, sdkmetric.WithReader(exp))
		t.metrics = promhttp.HandlerFor(reg, promhttp.HandlerOpts{})
	}
	if o := c.OTLP; o != nil && o.Metrics {
		var opts []otlpmetrichttp.Option
		if o.Endpoint != "" {
			opts = append(opts, otlpmetrichttp.WithEndpointURL(o.Endpoint+"/v1/metrics"))
		}
		exp, err := otlpmetrichttp.New(ctx, opts...)
		if err != nil {
			return nil, err
		}
		readers = append(readers, sdkmetric.WithReader(sdkmetric.NewPeriodicReader(exp, sdkmetric.WithInterval(o.MetricInterval))))
	}
	if len(readers) > 0 {
		mp := sdkmetric.NewMeterProvider(append(readers, sdkmetric.WithResource(res))...)
		t.mp = mp
		t.shutdown = append(t.shutdown, mp.Shutdown)
	}
	if o := c.OTLP; o != nil && o.Traces {
		var opts []otlptracehttp.Option
		if o.Endpoint != "" {
			opts = append(opts, otlptracehttp.WithEndpointURL(o.Endpoint+"/v1/traces"))
		}
		exp, err := otlptracehttp.New(ctx, opts...)
		if err != nil {
			return nil, err
		}
		tp := sdktrace.NewTracerProvider(sdktrace.WithBatcher(exp), sdktrace.WithResource(res))
		t.tp = tp
		t.tracing = true
		t.shutdown = append(t.shutdown, tp.Shutdown)
	}
	m := t.mp.Meter("github.com/apipool-ng/apipool/cmd/apipool")
	var err1, err2 error
	t.requests, err1 = m.Float64Histogram("http.server.request.duration", metric.WithUnit("s"),
		metric.WithDescription("Duration of the proxy's HTTP requests."),
		metric.WithExplicitBucketBoundaries(0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10, 30, 60, 120, 300))
	t.rejected, err2 = m.Int64Counter("apipool.proxy.rejected", metric.WithUnit("{request}"),
		metric.WithDescription("Requests the proxy refused before they reached an upstream, by reason."))
	if err := errors.Join(err1, err2); err != nil {
		return nil, err
	}
	return t, nil
}

func (t *telemetry) close(ctx context.Context) error {
	var errs []error
	for _, f := range t.shutdown {
		errs = append(errs, f(ctx))
	}
	return errors.Join(errs...)
}
