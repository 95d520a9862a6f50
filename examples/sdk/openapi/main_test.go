package main

import (
	"bufio"
	"bytes"
	"context"
	"maps"
	"net/http"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/apipool-ng/apipool"
	"github.com/apipool-ng/apipool/examples/sdk/internal/demo"
)

// TestOpenAPIExample runs the example end to end: every call through the
// generated client succeeds, the calls spread over more than one key, a key
// ran out of quota (429) and its request moved to another key, and every
// usage event carries its request's operationId.
func TestOpenAPIExample(t *testing.T) {
	var out bytes.Buffer
	rep, err := run(&out)
	t.Log("\n" + out.String())
	if err != nil {
		t.Fatalf("run: %v", err)
	}
	if rep.Calls != 9 || rep.OK != 9 {
		t.Errorf("calls = %d, answered 200 = %d; want 9 and 9", rep.Calls, rep.OK)
	}

	attempts, limited := demo.CheckKeys(t, rep.ByKey)
	if limited == 0 {
		t.Errorf("no 429 seen: the demo quota was not reached")
	}
	if rep.ByKey["alpha"].Limited == 0 {
		t.Errorf("alpha, with the smallest quota, was never rate limited: %+v", rep.ByKey)
	}
	if attempts != int64(rep.Calls)+limited {
		t.Errorf("%d attempts for %d calls and %d 429s: a rate-limited call was not resent exactly once", attempts, rep.Calls, limited)
	}

	// The operation names reached the usage events: one entry per
	// operationId, none unnamed, and as many events as the key stats saw.
	ops := slices.Sorted(maps.Keys(rep.ByOp))
	if want := []string{"getForecast", "getWeather", "listCities"}; !slices.Equal(ops, want) {
		t.Errorf("operations in the events = %q, want %q", ops, want)
	}
	var opAttempts, opLimited, resent int
	for _, u := range rep.ByOp {
		opAttempts += u.Attempts
		opLimited += u.Limited
		resent += u.Resent
	}
	if int64(opAttempts) != attempts || int64(opLimited) != limited {
		t.Errorf("by operation: %d attempts, %d limited; by key: %d, %d", opAttempts, opLimited, attempts, limited)
	}
	if int64(resent) != limited {
		t.Errorf("%d resent attempts, want one per 429 (%d)", resent, limited)
	}
	if rep.ByOp["listCities"].Attempts != 1 || rep.ByOp["getWeather"].Success != 4 || rep.ByOp["getForecast"].Success != 4 {
		t.Errorf("by operation = %+v", rep.ByOp)
	}

	text := out.String()
	for _, re := range []string{
		`9 calls, 9 answered 200`,
		`KEY +ATTEMPTS +SUCCESS +RATE LIMITED +STATE`,
		`alpha +\d+ +\d+ +[1-9]\d* +cooling`,
		`OPERATION +ATTEMPTS +SUCCESS +RATE LIMITED +RESENT`,
		`getWeather +osaka +21\.5°C, sunny`,
	} {
		if !regexp.MustCompile(re).MatchString(text) {
			t.Errorf("output lacks %q", re)
		}
	}
}

// TestOperationTableMatchesSpec keeps the operation table in main.go in
// step with api.yaml: the same operations, methods and paths.
func TestOperationTableMatchesSpec(t *testing.T) {
	f, err := os.Open("api.yaml")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var inPaths bool
	var path, method string
	var spec []string
	pathRe := regexp.MustCompile(`^  (/\S*):\s*$`)
	methodRe := regexp.MustCompile(`^    (get|put|post|delete|patch|head|options|trace):\s*$`)
	idRe := regexp.MustCompile(`^      operationId:\s*(\S+)\s*$`)
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		switch {
		case line == "paths:":
			inPaths = true
		case len(line) > 0 && line[0] != ' ' && line[0] != '#':
			inPaths = false
		case !inPaths:
		case pathRe.MatchString(line):
			path = pathRe.FindStringSubmatch(line)[1]
		case methodRe.MatchString(line):
			method = strings.ToUpper(methodRe.FindStringSubmatch(line)[1])
		case idRe.MatchString(line):
			spec = append(spec, method+" "+path+" "+idRe.FindStringSubmatch(line)[1])
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	var table []string
	for _, op := range operations {
		table = append(table, op.method+" "+op.path+" "+op.id)
	}
	slices.Sort(spec)
	slices.Sort(table)
	if len(spec) == 0 || !slices.Equal(spec, table) {
		t.Errorf("api.yaml operations:\n  %s\noperation table:\n  %s", strings.Join(spec, "\n  "), strings.Join(table, "\n  "))
	}
}

// TestOperationNamer checks the request editor: it names requests by the
// table, under the server URL's path, leaves other requests alone, and
// keeps a name the caller set.
func TestOperationNamer(t *testing.T) {
	edit := operationNamer("http://api.test/v1/")
	for _, tc := range []struct{ method, url, caller, want string }{
		{"GET", "http://api.test/v1/cities", "", "listCities"},
		{"GET", "http://api.test/v1/cities?country=FR", "", "listCities"},
		{"GET", "http://api.test/v1/cities/paris/weather", "", "getWeather"},
		{"GET", "http://api.test/v1/cities/paris/forecast?days=2", "", "getForecast"},
		{"GET", "http://api.test/v1/cities//weather", "", ""},
		{"POST", "http://api.test/v1/cities", "", ""},
		{"GET", "http://api.test/v2/cities", "", ""},
		{"GET", "http://api.test/v1/cities/paris/weather", "myWeather", "myWeather"},
	} {
		ctx := context.Background()
		if tc.caller != "" {
			ctx = apipool.ContextWithOperation(ctx, tc.caller)
		}
		req, err := http.NewRequestWithContext(ctx, tc.method, tc.url, nil)
		if err != nil {
			t.Fatal(err)
		}
		if err := edit(ctx, req); err != nil {
			t.Fatal(err)
		}
		if got := apipool.OperationFrom(req.Context()); got != tc.want {
			t.Errorf("%s %s: operation %q, want %q", tc.method, tc.url, got, tc.want)
		}
	}
}
