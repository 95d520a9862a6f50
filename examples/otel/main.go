// Command otel shows the trace of a request that the pool moves to
// another key. It needs no network: an in-process fake API rate-limits
// key a (429), the pool resends the request with key b (200), and the
// program prints the upstream's view (the traceparent each attempt
// carried), the trace as a compact tree, then the same spans as the
// OpenTelemetry stdout exporter writes them.
//
//	go run ./examples/otel
//	go run ./examples/otel -json=false   # the tree only
//
// Tracing is enabled the usual way, by installing an SDK tracer provider
// and a propagator globally; the pool needs no option for it. To give one
// pool its own provider instead, use apipool.WithTracerProvider (and
// WithMeterProvider, WithPropagators).
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"sort"
	"strings"
	"sync"

	"github.com/apipool-ng/apipool"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/stdout/stdouttrace"
	"go.opentelemetry.io/otel/propagation"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
)

func main() {
	json := flag.Bool("json", true, "also print the spans as the stdout exporter writes them")
	flag.Parse()
	if err := run(os.Stdout, *json); err != nil {
		fmt.Fprintln(os.Stderr, "otel:", err)
		os.Exit(1)
	}
}

// fakeAPI answers GET /v1/models. Key a is over its rate limit.
type fakeAPI struct {
	mu   sync.Mutex
	seen []string // one line per request: the key and its traceparent
}

var keyNames = map[string]string{"sk-example-a": "a", "sk-example-b": "b"}

func (f *fakeAPI) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	key := keyNames[strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")]
	code := http.StatusOK
	if key == "a" {
		code = http.StatusTooManyRequests
	}
	f.mu.Lock()
	f.seen = append(f.seen, fmt.Sprintf("upstream: key %s answered %d, traceparent %s", key, code, r.Header.Get("Traceparent")))
	f.mu.Unlock()
	if code != http.StatusOK {
		w.Header().Set("Retry-After", "30")
		http.Error(w, `{"error":"rate limited"}`, code)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	io.WriteString(w, `{"data":[{"id":"model-1"}]}`)
}

func run(w io.Writer, printJSON bool) error {
	api := &fakeAPI{}
	srv := httptest.NewServer(api)
	defer srv.Close()

	// The SDK, installed globally. Spans go to memory, to be printed
	// once the request is over.
	mem := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(mem))
	defer tp.Shutdown(context.Background())
	prevTP, prevProp := otel.GetTracerProvider(), otel.GetTextMapPropagator()
	otel.SetTracerProvider(tp)
	otel.SetTextMapPropagator(propagation.TraceContext{})
	defer func() {
		otel.SetTracerProvider(prevTP)
		otel.SetTextMapPropagator(prevProp)
	}()

	pool, err := apipool.New([]apipool.Key{
		{ID: "a", Secret: "sk-example-a"},
		{ID: "b", Secret: "sk-example-b"},
	})
	if err != nil {
		return err
	}
	defer pool.Close(context.Background())
	client := &http.Client{Transport: pool}

	fmt.Fprintf(w, "GET %s/v1/models through a pool of keys a and b; the API rate-limits key a.\n", srv.URL)
	resp, err := client.Get(srv.URL + "/v1/models")
	if err != nil {
		return err
	}
	// The spans end when the body is read to its end or closed.
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		return err
	}
	api.mu.Lock()
	for _, l := range api.seen {
		fmt.Fprintln(w, l)
	}
	api.mu.Unlock()
	fmt.Fprintf(w, "response: %s %s\n\n", resp.Status, body)

	spans := mem.GetSpans()
	if err := printTree(w, spans); err != nil {
		return err
	}
	if !printJSON {
		return nil
	}
	fmt.Fprintln(w, "\nThe same spans, as the stdout exporter writes them:")
	exp, err := stdouttrace.New(stdouttrace.WithWriter(w), stdouttrace.WithPrettyPrint())
	if err != nil {
		return err
	}
	return exp.ExportSpans(context.Background(), spans.Snapshots())
}

// printTree prints the request span and its attempt spans, one line
// each, with the attributes that tell the story.
func printTree(w io.Writer, spans tracetest.SpanStubs) error {
	var root *tracetest.SpanStub
	var children []tracetest.SpanStub
	for i, s := range spans {
		if s.SpanKind == trace.SpanKindInternal {
			root = &spans[i]
		}
	}
	if root == nil {
		return fmt.Errorf("no request span among %d spans", len(spans))
	}
	for _, s := range spans {
		if s.Parent.SpanID() == root.SpanContext.SpanID() {
			children = append(children, s)
		}
	}
	sort.Slice(children, func(i, j int) bool { return children[i].StartTime.Before(children[j].StartTime) })

	a := attrs(root.Attributes)
	fmt.Fprintf(w, "trace %s\n", root.SpanContext.TraceID())
	fmt.Fprintf(w, "%s  [%s span %s] apipool.status=%s, apipool.attempts=%s, apipool.key.id=%s\n",
		root.Name, kind(root.SpanKind), root.SpanContext.SpanID(), a["apipool.status"], a["apipool.attempts"], a["apipool.key.id"])
	for i, c := range children {
		branch := "├──"
		if i == len(children)-1 {
			branch = "└──"
		}
		a := attrs(c.Attributes)
		line := fmt.Sprintf("%s %s  [%s span %s] key %s, %s", branch, c.Name, kind(c.SpanKind), c.SpanContext.SpanID(), a["apipool.key.id"], a["http.response.status_code"])
		if v, ok := a["http.request.resend_count"]; ok {
			line += ", resend_count=" + v
		}
		if v, ok := a["error.type"]; ok {
			line += ", error.type=" + v
		}
		line += ", apipool.status=" + a["apipool.status"]
		fmt.Fprintln(w, line)
	}
	return nil
}

func attrs(kvs []attribute.KeyValue) map[string]string {
	m := make(map[string]string, len(kvs))
	for _, kv := range kvs {
		m[string(kv.Key)] = kv.Value.String()
	}
	return m
}

func kind(k trace.SpanKind) string { return strings.ToUpper(k.String()) }
