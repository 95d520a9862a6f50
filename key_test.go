package apipool_test

import (
	"context"
	"errors"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/apipool-ng/apipool"
	"github.com/apipool-ng/apipool/recorder"
)

// Each injection mode puts the secret where the upstream expects it, and
// nowhere else.
func TestInjectionModes(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name   string
		opts   []apipool.Option
		url    string
		secret apipool.Secret
		check  func(t *testing.T, s seen)
	}{
		{"bearer by default", nil, "http://api.test/v1?a=1", "s0", func(t *testing.T, s seen) {
			if got := s.Header.Values("Authorization"); len(got) != 1 || got[0] != "Bearer s0" {
				t.Errorf("Authorization %q", got)
			}
			if s.URL != "http://api.test/v1?a=1" {
				t.Errorf("URL %s", s.URL)
			}
		}},
		{"WithBearer", []apipool.Option{apipool.WithHeader("X-Api-Key"), apipool.WithBearer()}, "http://api.test/", "s0", func(t *testing.T, s seen) {
			if s.Header.Get("Authorization") != "Bearer s0" || s.Header.Get("X-Api-Key") != "" {
				t.Errorf("header %v", s.Header)
			}
		}},
		{"WithHeader", []apipool.Option{apipool.WithHeader("x-api-key")}, "http://api.test/", "s0", func(t *testing.T, s seen) {
			if got := s.Header.Values("X-Api-Key"); len(got) != 1 || got[0] != "s0" {
				t.Errorf("X-Api-Key %q", got)
			}
			if s.Header.Get("Authorization") != "" {
				t.Errorf("Authorization sent too: %q", s.Header.Get("Authorization"))
			}
		}},
		{"WithQueryParam keeps the query", []apipool.Option{apipool.WithQueryParam("key")}, "http://api.test/v1/x?a=1&b=x%20y&c=", "s0", func(t *testing.T, s seen) {
			u, _ := url.Parse(s.URL)
			if !strings.HasPrefix(u.RawQuery, "a=1&b=x%20y&c=&") {
				t.Errorf("raw query %q: the caller's query not kept as it was", u.RawQuery)
			}
			q := u.Query()
			if q.Get("a") != "1" || q.Get("b") != "x y" || len(q["key"]) != 1 || q.Get("key") != "s0" || u.Path != "/v1/x" {
				t.Errorf("query %v", q)
			}
			if s.Header.Get("Authorization") != "" {
				t.Errorf("Authorization sent too")
			}
		}},
		{"WithQueryParam without a query", []apipool.Option{apipool.WithQueryParam("api_key")}, "http://api.test/v1", "s0", func(t *testing.T, s seen) {
			if s.URL != "http://api.test/v1?api_key=s0" {
				t.Errorf("URL %s", s.URL)
			}
		}},
		{"WithQueryParam replaces the caller's value", []apipool.Option{apipool.WithQueryParam("key")}, "http://api.test/v1?key=mine&a=1", "s0", func(t *testing.T, s seen) {
			u, _ := url.Parse(s.URL)
			if q := u.Query(); len(q["key"]) != 1 || q.Get("key") != "s0" || q.Get("a") != "1" {
				t.Errorf("query %v", q)
			}
		}},
		{"WithQueryParam escapes the secret", []apipool.Option{apipool.WithQueryParam("key")}, "http://api.test/v1?a=1", "s0+/=&x", func(t *testing.T, s seen) {
			u, _ := url.Parse(s.URL)
			if q := u.Query(); q.Get("key") != "s0+/=&x" || q.Get("a") != "1" || len(q) != 2 {
				t.Errorf("query %v from %q", q, u.RawQuery)
			}
		}},
		{"WithInjector", []apipool.Option{apipool.WithInjector(func(r *http.Request, s apipool.Secret) {
			r.Header.Set("X-Sig", "sig-"+s.Reveal())
		})}, "http://api.test/v1?a=1", "s0", func(t *testing.T, s seen) {
			if s.Header.Get("X-Sig") != "sig-s0" || s.Header.Get("Authorization") != "" || s.URL != "http://api.test/v1?a=1" {
				t.Errorf("header %v URL %s", s.Header, s.URL)
			}
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			up := newUpstream(nil)
			opts := append([]apipool.Option{apipool.WithBase(up)}, tc.opts...)
			p := mustNew(t, []apipool.Key{{ID: "k0", Secret: tc.secret}}, opts...)
			req, _ := http.NewRequest(http.MethodGet, tc.url, nil)
			req.Header.Set("Accept", "application/json")
			resp, err := p.RoundTrip(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			calls := up.Calls()
			if len(calls) != 1 {
				t.Fatalf("%d calls", len(calls))
			}
			if calls[0].Header.Get("Accept") != "application/json" {
				t.Errorf("the caller's headers were not sent: %v", calls[0].Header)
			}
			tc.check(t, calls[0])
		})
	}
}

// A Key or Secret prints, logs and encodes without its secret.
func TestKeyFormattingRedactsSecret(t *testing.T) {
	t.Parallel()
	k := apipool.Key{ID: "team-a", Secret: canary, Weight: 2, PerDay: 10}
	if k.Secret.Reveal() != canary {
		t.Fatal("Reveal does not return the secret")
	}
	for _, s := range formatted(k) {
		assertNoCanary(t, "Key formatting", s)
	}
	if !strings.Contains(k.String(), "team-a") {
		t.Fatalf("String %q does not name the key", k.String())
	}
}

// Fingerprints name a secret in stats without revealing it.
func TestFingerprint(t *testing.T) {
	t.Parallel()
	a := apipool.Fingerprint(nil, "secret-a")
	if len(a) != 16 || strings.Trim(a, "0123456789abcdef") != "" {
		t.Fatalf("fingerprint %q, want 16 hex digits", a)
	}
	if a != apipool.Fingerprint(nil, "secret-a") {
		t.Fatal("fingerprint not deterministic")
	}
	if a == apipool.Fingerprint(nil, "secret-b") {
		t.Fatal("two secrets share a fingerprint")
	}
	if a == apipool.Fingerprint([]byte("other"), "secret-a") {
		t.Fatal("the HMAC key does not change the fingerprint")
	}
	p := mustNew(t, []apipool.Key{{ID: "a", Secret: "secret-a"}}, apipool.WithBase(newUpstream(nil)))
	if got := p.Snapshot()[0].Fingerprint; got != a {
		t.Fatalf("snapshot fingerprint %q, want %q", got, a)
	}
	p = mustNew(t, []apipool.Key{{ID: "a", Secret: "secret-a"}}, apipool.WithBase(newUpstream(nil)), apipool.WithFingerprintKey([]byte("other")))
	if got := p.Snapshot()[0].Fingerprint; got != apipool.Fingerprint([]byte("other"), "secret-a") {
		t.Fatalf("snapshot fingerprint %q ignores WithFingerprintKey", got)
	}
}

// New reports every bad key at once, each by its ID, and never the
// secret: two empty secrets, a secret with a stray space, a secret that
// two keys share.
func TestNewReportsEveryBadKey(t *testing.T) {
	const canary = "sk-CANARY-7f3a9c"
	_, err := apipool.New([]apipool.Key{
		{ID: "a", Secret: ""},
		{ID: "b", Secret: ""},
		{ID: "c", Secret: " " + canary},
		{ID: "d", Secret: canary},
		{ID: "e", Secret: canary},
	})
	if err == nil {
		t.Fatal("New accepted bad keys")
	}
	if !errors.Is(err, apipool.ErrInvalidConfig) {
		t.Fatalf("error %v does not match ErrInvalidConfig", err)
	}
	var ce *apipool.ConfigError
	if !errors.As(err, &ce) || ce.Field != "keys[0].Secret" {
		t.Fatalf("errors.As found %+v, want the first bad key's *ConfigError", ce)
	}
	msg := err.Error()
	for _, want := range []string{`keys[0].Secret: empty secret (key "a")`, `keys[1].Secret: empty secret (key "b")`, `keys[2].Secret: the secret of key "c" begins or ends with white space`, `keys[4].Secret: key "e" has the same secret as keys[3] ("d")`} {
		if !strings.Contains(msg, want) {
			t.Errorf("error %q lacks %q", msg, want)
		}
	}
	if strings.Contains(msg, canary[3:11]) {
		t.Fatalf("error %q holds the secret", msg)
	}
}

// Unknown IDs are named in the error.
func TestUnknownKeyNamesTheID(t *testing.T) {
	p, err := apipool.New([]apipool.Key{{ID: "a", Secret: "s"}})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close(context.Background())
	for name, f := range map[string]func(string) error{
		"RemoveKey": p.RemoveKey,
		"Disable":   func(id string) error { return p.Disable(id, "") },
		"Enable":    p.Enable,
	} {
		err := f("nope")
		if !errors.Is(err, apipool.ErrUnknownKey) || !strings.Contains(err.Error(), `"nope"`) {
			t.Errorf("%s(\"nope\") = %v, want ErrUnknownKey naming \"nope\"", name, err)
		}
	}
}

// A window that is not positive is refused, not answered with zero.
func TestUsageWindowMustBePositive(t *testing.T) {
	p, err := apipool.New([]apipool.Key{{ID: "a", Secret: "s"}})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close(context.Background())
	if _, err := p.RecentAttemptsByKey(context.Background(), -time.Minute); !errors.Is(err, recorder.ErrBadQuery) {
		t.Errorf("RecentAttemptsByKey(-1m) = %v, want recorder.ErrBadQuery", err)
	}
	if _, err := p.RecentAttempts(context.Background(), 0, 0, ""); !errors.Is(err, recorder.ErrBadQuery) {
		t.Errorf("UsageCount(0) = %v, want recorder.ErrBadQuery", err)
	}
}
