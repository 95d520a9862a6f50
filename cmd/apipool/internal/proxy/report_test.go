package proxy_test

import (
	"bytes"
	"context"
	"os"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/apipool-ng/apipool/cmd/apipool/internal/proxy"
	"github.com/apipool-ng/apipool/recorder"
	"github.com/apipool-ng/apipool/recorder/memory"
	"github.com/apipool-ng/apipool/status"
)

// report's -since took Go durations only: 1d was a raw flag error (issue
// 27 item 8). Days are read; anything else is a clear error.
func TestReportSince(t *testing.T) {
	for in, want := range map[string]time.Duration{
		"1d": 24 * time.Hour, "7d": 7 * 24 * time.Hour, "1d12h": 36 * time.Hour, "90m": 90 * time.Minute, "24h": 24 * time.Hour,
	} {
		if got, err := proxy.ParseSince(in); err != nil || got != want {
			t.Errorf("ParseSince(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, in := range []string{"", "x", "1x", "d", "-1d", "0d", "0s", "1.5d", "1d-1h", "-5m"} {
		if _, err := proxy.ParseSince(in); err == nil || !strings.Contains(err.Error(), "-since:") {
			t.Errorf("ParseSince(%q): %v, want an error", in, err)
		}
	}
	e := newEnv(t, envOpts{noServe: true})
	code, _, errOut := runMain("", "report", "-config", e.cfgPath, "-since", "1d")
	if code != proxy.ExitBadConfig || !strings.Contains(errOut, "memory recorder") || !strings.Contains(errOut, "type: sql") {
		t.Errorf("report -since 1d with the memory recorder: %d %q", code, errOut)
	}
	code, _, errOut = runMain("", "report", "-config", e.cfgPath, "-since", "1w")
	if code != proxy.ExitBadConfig || !strings.Contains(errOut, `apipool report: -since: want a duration such as 1d, 7d, 24h or 90m, got "1w"`) {
		t.Errorf("report -since 1w: %d %q", code, errOut)
	}
}

// report counted attempts as "requests" (10 for 8 HTTP requests, two
// retried): the counts are labelled attempts, and the README documents
// the JSON fields and the tables report reads.
func TestReportLabelsAttempts(t *testing.T) {
	rep := &proxy.Report{UsageCount: map[string]int64{"all": 10, "success": 8, "reach limit": 2},
		UsageByKey: map[string]int64{"u/a": 10},
		Keys:       []proxy.KeyUsage{{Key: "u/a", Attempts: 10, Success: 8, ReachLimit: 2}}}
	for format, want := range map[string][]string{
		"table": {"attempts: 10 (success 8, failed 0, reach limit 2)", "KEY  ATTEMPTS  SUCCESS"},
		"csv":   {"key,attempts,success,failed,reach_limit"},
		"json":  {`"attempts": 10`},
	} {
		var b bytes.Buffer
		if err := rep.Write(&b, format); err != nil {
			t.Fatal(err)
		}
		for _, w := range want {
			if !strings.Contains(b.String(), w) {
				t.Errorf("%s:\n%s\nwant %q", format, b.String(), w)
			}
		}
		if strings.Contains(strings.ToLower(b.String()), "request") && format != "table" {
			t.Errorf("%s says requests:\n%s", format, b.String())
		}
	}
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	for _, typ := range []reflect.Type{reflect.TypeFor[proxy.Report](), reflect.TypeFor[proxy.KeyUsage]()} {
		for i := 0; i < typ.NumField(); i++ {
			tag := strings.Split(typ.Field(i).Tag.Get("json"), ",")[0]
			if !bytes.Contains(readme, []byte("`"+tag+"`")) && !bytes.Contains(readme, []byte("`keys[]."+tag+"`")) {
				t.Errorf("the README does not document report's JSON field %s", tag)
			}
		}
	}
	for _, w := range []string{"apipool_events", "recorder:\n  type: sql"} {
		if !bytes.Contains(readme, []byte(w)) {
			t.Errorf("the README does not show %q", w)
		}
	}
}

// TestReportUnknownUnits: report's tables say what is not known as the
// dashboard does: "unknown (n)" when no attempt of the row stated its
// tokens or cost (never 0), "(+n unknown)" beside a sum that misses n,
// and "(no client)" for the attempts without a client token.
func TestReportUnknownUnits(t *testing.T) {
	store, err := memory.New()
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close(context.Background())
	now := time.Now()
	at := now.Add(-10 * time.Minute)
	ev := func(key, client string, in, out int64, cost float64) {
		e := recorder.Unknown()
		e.Time, e.KeyID, e.Client, e.Status, e.Attempt = at, key, client, status.Success, 1
		e.InputTokens, e.OutputTokens, e.Cost = in, out, cost
		if in >= 0 {
			e.CachedTokens = 0
		}
		store.Record(e)
	}
	ev("u/a", "team-a", 100, 20, 0.5)
	ev("u/a", "team-a", -1, -1, -1)
	for range 3 {
		ev("u/b", "", -1, -1, -1)
	}
	rep, err := proxy.BuildReport(context.Background(), store, time.Hour, now)
	if err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	if err := rep.Write(&b, "table"); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	lines := map[string]string{}
	for _, l := range strings.Split(out, "\n") {
		if f := strings.Fields(l); len(f) > 0 {
			lines[f[0]] = strings.Join(f, " ")
		}
	}
	for first, want := range map[string]string{
		"u/a":    "u/a 2 2 0 0 0.000 0.000 100 (+1 unknown) 20 (+1 unknown) 0.500000 (+1 unknown)",
		"u/b":    "u/b 3 3 0 0 0.000 0.000 unknown (3) unknown (3) unknown (3)",
		"team-a": "team-a 2 100 (+1 unknown) 20 (+1 unknown) 0.500000 (+1 unknown)",
		"(no":    "(no client) 3 unknown (3) unknown (3) unknown (3)",
	} {
		if lines[first] != want {
			t.Errorf("row %q, want %q; the report:\n%s", lines[first], want, out)
		}
	}
}
