package apipool_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"reflect"
	"strings"
	"sync"
	"testing"

	"github.com/apipool-ng/apipool"
)

// canary is a secret that must never be seen. Its characters change when
// URL-escaped ("/", "+", "="), so an escaped copy is caught too: every
// form of it contains "CANARY", and nothing else in these tests does.
const canary = "sk-CANARY/9x+Q=="

func assertNoCanary(t *testing.T, what, s string) {
	t.Helper()
	if strings.Contains(s, "CANARY") {
		t.Errorf("%s shows the secret: %s", what, s)
	}
}

// assertErrNoCanary checks an error's text and every error it wraps.
func assertErrNoCanary(t *testing.T, what string, err error) {
	t.Helper()
	if err == nil {
		t.Errorf("%s: no error", what)
		return
	}
	for e := err; e != nil; e = errors.Unwrap(e) {
		assertNoCanary(t, what, e.Error())
		assertNoCanary(t, what+" (%+v)", fmt.Sprintf("%+v", e))
	}
	var ue *url.Error
	if errors.As(err, &ue) {
		assertNoCanary(t, what+" (url.Error.URL)", ue.URL)
	}
	if path, ok := reachable(reflect.ValueOf(err), "CANARY", "err", 0); ok {
		t.Errorf("%s: the secret is reachable by reflection at %s", what, path)
	}
}

// reachable walks v by reflection, unexported fields included, as go-spew
// or a debugger would, and reports the path of a string holding needle.
func reachable(v reflect.Value, needle, path string, depth int) (string, bool) {
	if depth > 20 || !v.IsValid() {
		return "", false
	}
	switch v.Kind() {
	case reflect.String:
		if strings.Contains(v.String(), needle) {
			return path, true
		}
	case reflect.Pointer, reflect.Interface:
		if !v.IsNil() {
			return reachable(v.Elem(), needle, path, depth+1)
		}
	case reflect.Struct:
		for i := 0; i < v.NumField(); i++ {
			if p, ok := reachable(v.Field(i), needle, path+"."+v.Type().Field(i).Name, depth+1); ok {
				return p, true
			}
		}
	case reflect.Slice, reflect.Array:
		if v.Kind() == reflect.Slice && v.Type().Elem().Kind() == reflect.Uint8 {
			if strings.Contains(string(v.Bytes()), needle) {
				return path, true
			}
			return "", false
		}
		for i := 0; i < v.Len(); i++ {
			if p, ok := reachable(v.Index(i), needle, fmt.Sprintf("%s[%d]", path, i), depth+1); ok {
				return p, true
			}
		}
	case reflect.Map:
		it := v.MapRange()
		for it.Next() {
			if p, ok := reachable(it.Value(), needle, path+"[key]", depth+1); ok {
				return p, true
			}
		}
	}
	return "", false
}

// formatted returns k printed, logged and encoded every way a program
// might.
func formatted(k apipool.Key) []string {
	var out []string
	type holder struct {
		K apipool.Key
		S apipool.Secret
		P *apipool.Key
	}
	values := []any{k, &k, k.Secret, []apipool.Key{k}, map[string]apipool.Key{"a": k}, holder{k, k.Secret, &k}, []apipool.Secret{k.Secret}}
	for _, v := range values {
		for _, verb := range []string{"%v", "%+v", "%#v", "%s", "%q", "%x", "%X", "%d", "%t", "%c", "%U", "%e", "%10.3s", "%-8v"} {
			out = append(out, fmt.Sprintf(verb, v))
		}
		out = append(out, fmt.Sprint(v), fmt.Sprintln(v))
		b, err := json.Marshal(v)
		if err != nil {
			out = append(out, "json error: "+err.Error())
		}
		out = append(out, string(b))
	}
	for _, h := range []func(*bytes.Buffer) slog.Handler{
		func(b *bytes.Buffer) slog.Handler { return slog.NewJSONHandler(b, nil) },
		func(b *bytes.Buffer) slog.Handler { return slog.NewTextHandler(b, nil) },
	} {
		var buf bytes.Buffer
		l := slog.New(h(&buf))
		l.Info("key", "key", k, "ptr", &k, "secret", k.Secret, "keys", []apipool.Key{k}, slog.Any("any", k), slog.Group("g", "k", k))
		out = append(out, buf.String())
	}
	return out
}

// The secret appears in no error a request can return, whatever the
// injection mode and however the base transport words its errors.
func TestCanaryAbsentFromErrors(t *testing.T) {
	t.Parallel()
	// urlErrorBase fails the way a wrapping transport does: with a
	// *url.Error naming the URL it was given, key and all.
	urlErrorBase := roundTripperFunc(func(r *http.Request) (*http.Response, error) {
		return nil, &url.Error{Op: "Get", URL: r.URL.String(), Err: fmt.Errorf("dial failed for %s with header %q", r.URL.Redacted(), r.Header.Get("Authorization")+r.Header.Get("X-Api-Key")+r.Header.Get("X-Sig"))}
	})
	modes := map[string]apipool.Option{
		"bearer": apipool.WithBearer(),
		"header": apipool.WithHeader("X-Api-Key"),
		"query":  apipool.WithQueryParam("key"),
		"injector": apipool.WithInjector(func(r *http.Request, s apipool.Secret) {
			r.Header.Set("X-Sig", s.Reveal())
			r.URL.RawQuery += "&sig=" + url.QueryEscape(s.Reveal())
		}),
	}
	for name, mode := range modes {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			ks := []apipool.Key{{ID: "k0", Secret: canary}, {ID: "k1", Secret: canary + "2"}}
			p := mustNew(t, ks, apipool.WithBase(urlErrorBase), apipool.WithClock(newClock()), noBackoff, mode)
			client := &http.Client{Transport: p}
			_, err := client.Get("http://api.test/v1/things?a=1")
			assertErrNoCanary(t, "GET through http.Client", err)
			req, _ := http.NewRequest(http.MethodPost, "http://api.test/v1/things?a=1", strings.NewReader("x"))
			_, err = p.RoundTrip(req)
			assertErrNoCanary(t, "POST", err)
		})
	}

	t.Run("query, real transport, closed server", func(t *testing.T) {
		t.Parallel()
		srv := httptest.NewServer(http.NotFoundHandler())
		addr := srv.URL
		srv.Close()
		p := mustNew(t, []apipool.Key{{ID: "k0", Secret: canary}}, apipool.WithBase(&http.Transport{}), apipool.WithQueryParam("key"), apipool.WithMaxAttempts(1))
		_, err := (&http.Client{Transport: p}).Get(addr + "/v1?a=1")
		var ue *url.Error
		if !errors.As(err, &ue) {
			t.Fatalf("err %T %v, want a *url.Error", err, err)
		}
		assertErrNoCanary(t, "url.Error", err)
	})

	t.Run("probe", func(t *testing.T) {
		t.Parallel()
		p := mustNew(t, []apipool.Key{{ID: "k0", Secret: canary}}, apipool.WithBase(urlErrorBase), apipool.WithQueryParam("key"),
			apipool.WithProbe(apipool.ProbeRequest("GET", "http://api.test/me"), 0))
		res, err := p.CheckUsable(context.Background())
		if err != nil || len(res) != 1 || res[0].Usable {
			t.Fatalf("%+v %v", res, err)
		}
		assertErrNoCanary(t, "probe result", res[0].Err)
		assertNoCanary(t, "probe results", fmt.Sprintf("%+v %#v", res, res))
	})

	t.Run("no key available", func(t *testing.T) {
		t.Parallel()
		p := mustNew(t, []apipool.Key{{ID: "k0", Secret: canary}}, apipool.WithBase(newUpstream(nil)), apipool.WithMaxWait(0))
		p.Disable("k0", "")
		_, err := p.RoundTrip(newGet(t, "http://api.test/"))
		noKey(t, err)
		assertErrNoCanary(t, "NoKeyError", err)
	})
}

// Configuration errors never echo a secret, even one put where an ID goes.
func TestCanaryAbsentFromConfigErrors(t *testing.T) {
	t.Parallel()
	cases := map[string][]apipool.Key{
		"ID is the secret":        {{ID: canary, Secret: canary}},
		"control character":       {{ID: "k0", Secret: canary + "\n"}},
		"duplicate ID":            {{ID: "k0", Secret: canary}, {ID: "k0", Secret: canary}},
		"negative weight":         {{ID: "k0", Secret: canary, Weight: -1}},
		"bad limit, secret first": {{ID: "k0", Secret: canary, PerDay: -1}},
		"negative tier":           {{ID: "k0", Secret: canary, Tier: -1}},
		"bad model pattern":       {{ID: "k0", Secret: canary, Models: []string{"a*b"}}},
	}
	for name, ks := range cases {
		_, err := apipool.New(ks)
		if !errors.Is(err, apipool.ErrInvalidConfig) {
			t.Fatalf("%s: err %v", name, err)
		}
		assertErrNoCanary(t, name, err)
		p := mustNew(t, keys(1), apipool.WithBase(newUpstream(nil)))
		for _, k := range ks {
			if err := p.AddKey(k); err != nil {
				assertErrNoCanary(t, name+" (AddKey)", err)
			}
		}
	}
}

// Nothing the pool shows of itself holds the secret: snapshots, logs,
// usage events, the response handed back.
func TestCanaryAbsentFromPoolOutput(t *testing.T) {
	t.Parallel()
	var logs syncBuffer
	logger := slog.New(slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	rec := &captureRecorder{}
	up := newUpstream(func(s seen) reply {
		switch {
		case strings.HasSuffix(s.Secret, "/limited"):
			return reply{Status: 429, Header: hdr("Retry-After", "10")}
		case strings.HasSuffix(s.Secret, "/revoked"):
			return reply{Status: 401}
		case strings.HasSuffix(s.Secret, "/down"):
			return reply{Status: 500}
		}
		return reply{Status: 200}
	})
	ks := []apipool.Key{
		{ID: "limited", Secret: canary + "/limited"},
		{ID: "revoked", Secret: canary + "/revoked"},
		{ID: "down", Secret: canary + "/down"},
		{ID: "good", Secret: canary + "/good"},
	}
	p := mustNew(t, ks, apipool.WithBase(up), apipool.WithClock(newClock()), noBackoff, apipool.WithLogger(logger), apipool.WithRecorder(rec),
		apipool.WithQueryParam("key"), apipool.WithBreaker(apipool.BreakerSettings{Failures: 1}),
		apipool.WithProbe(func(context.Context, *http.Client) error { return nil }, 0))
	for i := 0; i < 8; i++ {
		req := newGet(t, "http://api.test/v1?a=1")
		resp, err := p.RoundTrip(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		assertNoCanary(t, "resp.Request", fmt.Sprintf("%s %v", resp.Request.URL, resp.Request.Header))
	}
	if len(up.Calls()) < 5 {
		t.Fatalf("only %d attempts: the test did not go through every key", len(up.Calls()))
	}
	if _, err := p.CheckUsable(context.Background()); err != nil {
		t.Fatal(err)
	}
	if logs.String() == "" || len(rec.Events()) == 0 {
		t.Fatal("nothing logged or recorded: the test checks nothing")
	}
	assertNoCanary(t, "logs", logs.String())
	assertNoCanary(t, "events", fmt.Sprintf("%+v %#v", rec.Events(), rec.Events()))
	snap := p.Snapshot()
	assertNoCanary(t, "snapshot", fmt.Sprintf("%v %+v %#v", snap, snap, snap))
	b, _ := json.Marshal(snap)
	assertNoCanary(t, "snapshot JSON", string(b))
	assertNoCanary(t, "the pool", fmt.Sprintf("%v %+v %#v", p, p, p))
}

// A Disable reason that quotes a key (an upstream's error body, say) has
// the pool's secrets replaced before it reaches the snapshot, the log and
// the alerts.
func TestDisableReasonRedacted(t *testing.T) {
	t.Parallel()
	var logs syncBuffer
	var mu sync.Mutex
	var alerts []apipool.Alert
	ks := []apipool.Key{{ID: "a", Secret: canary + "/a"}, {ID: "b", Secret: canary + "/b"}}
	p := mustNew(t, ks, apipool.WithClock(newClock()), apipool.WithLogger(slog.New(slog.NewJSONHandler(&logs, nil))),
		apipool.WithAlerts(func(a apipool.Alert) { mu.Lock(); alerts = append(alerts, a); mu.Unlock() }, apipool.AlertSettings{}))
	escaped := url.QueryEscape(canary + "/b")
	if err := p.Disable("a", "upstream said: Invalid API key provided: "+canary+"/a (and "+canary+"/b, "+escaped+")"); err != nil {
		t.Fatal(err)
	}
	closePool(t, p)
	snap := p.Snapshot()
	if !strings.Contains(snap[0].DisabledReason, "Invalid API key provided: [REDACTED]") {
		t.Errorf("reason %q, want the text kept, the secret replaced", snap[0].DisabledReason)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(alerts) != 1 || logs.String() == "" {
		t.Fatalf("%d alerts, log %q: the test checks nothing", len(alerts), logs.String())
	}
	if strings.Contains(snap[0].DisabledReason, escaped) {
		t.Errorf("reason %q holds a secret URL-escaped", snap[0].DisabledReason)
	}
	assertNoCanary(t, "snapshot", fmt.Sprintf("%+v", snap))
	assertNoCanary(t, "logs", logs.String())
	assertNoCanary(t, "alerts", fmt.Sprintf("%+v", alerts))
}

// syncBuffer is a bytes.Buffer safe for concurrent writers.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
