package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// TestOtelExample runs the example and checks what it prints: the
// upstream saw a traceparent per attempt, the tree is one request span
// over a 429 on key a then a 200 on key b with resend_count=1, the
// traceparents name the attempt spans, the stdout exporter's JSON holds
// the same three spans, and no secret appears anywhere.
func TestOtelExample(t *testing.T) {
	var out bytes.Buffer
	if err := run(&out, true); err != nil {
		t.Fatalf("run: %v\n%s", err, out.String())
	}
	text := out.String()
	if strings.Contains(text, "sk-example") {
		t.Errorf("a secret is in the output")
	}
	treeText, jsonText, ok := strings.Cut(text, "The same spans, as the stdout exporter writes them:\n")
	if !ok {
		t.Fatalf("no JSON section:\n%s", text)
	}
	t.Log("\n" + treeText)

	find := func(re string) []string {
		t.Helper()
		m := regexp.MustCompile(`(?m)` + re).FindStringSubmatch(treeText)
		if m == nil {
			t.Fatalf("no line matching %s in:\n%s", re, treeText)
		}
		return m
	}
	const tp = `00-([0-9a-f]{32})-([0-9a-f]{16})-01`
	upA := find(`^upstream: key a answered 429, traceparent ` + tp + `$`)
	upB := find(`^upstream: key b answered 200, traceparent ` + tp + `$`)
	find(`^response: 200 OK \{"data":\[\{"id":"model-1"\}\]\}$`)
	trace := find(`^trace ([0-9a-f]{32})$`)
	root := find(`^apipool GET  \[INTERNAL span ([0-9a-f]{16})\] apipool.status=success, apipool.attempts=2, apipool.key.id=b$`)
	first := find(`^├── GET  \[CLIENT span ([0-9a-f]{16})\] key a, 429, error.type=429, apipool.status=reach limit$`)
	second := find(`^└── GET  \[CLIENT span ([0-9a-f]{16})\] key b, 200, resend_count=1, apipool.status=success$`)
	if upA[1] != trace[1] || upB[1] != trace[1] {
		t.Errorf("upstream traces %s, %s; the tree's %s", upA[1], upB[1], trace[1])
	}
	if upA[2] != first[1] || upB[2] != second[1] {
		t.Errorf("upstream parents %s, %s; attempt spans %s, %s", upA[2], upB[2], first[1], second[1])
	}

	type span struct {
		Name        string
		SpanKind    int
		SpanContext struct{ TraceID, SpanID string }
		Parent      struct{ TraceID, SpanID string }
		Attributes  []struct {
			Key   string
			Value struct{ Value any }
		}
	}
	var spans []span
	dec := json.NewDecoder(strings.NewReader(jsonText))
	for {
		var s span
		if err := dec.Decode(&s); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			t.Fatalf("exporter output: %v", err)
		}
		spans = append(spans, s)
	}
	if len(spans) != 3 {
		t.Fatalf("%d spans in the exporter's output, want 3", len(spans))
	}
	var ids []string
	for _, s := range spans {
		ids = append(ids, s.Name+" "+s.SpanContext.SpanID+" "+s.Parent.SpanID)
		if s.SpanContext.TraceID != trace[1] {
			t.Errorf("span %s in trace %s", s.SpanContext.SpanID, s.SpanContext.TraceID)
		}
	}
	want := []string{"GET " + first[1] + " " + root[1], "GET " + second[1] + " " + root[1], "apipool GET " + root[1] + " 0000000000000000"}
	slices.Sort(ids)
	slices.Sort(want)
	if !slices.Equal(ids, want) {
		t.Errorf("exporter spans %q, want %q", ids, want)
	}
	var resend []any
	for _, s := range spans {
		for _, a := range s.Attributes {
			if a.Key == "http.request.resend_count" {
				resend = append(resend, a.Value.Value)
			}
		}
	}
	if len(resend) != 1 || resend[0] != float64(1) {
		t.Errorf("resend_count values %v, want one 1", resend)
	}
}
