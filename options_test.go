package apipool_test

import (
	"context"
	"encoding/binary"
	"errors"
	"math"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-retryablehttp"

	"github.com/apipool-ng/apipool"
	"github.com/apipool-ng/apipool/recorder"
	"github.com/apipool-ng/apipool/status"
)

// Bad configuration is a *ConfigError naming the field, never a panic.
func TestConfigErrors(t *testing.T) {
	t.Parallel()
	one := keys(1)
	k := func(f func(*apipool.Key)) []apipool.Key {
		ks := keys(2)
		f(&ks[1])
		return ks
	}
	long := strings.Repeat("x", 300)
	cases := []struct {
		name  string
		keys  []apipool.Key
		opts  []apipool.Option
		field string
	}{
		{"nil keys", nil, nil, "keys"},
		{"no keys", []apipool.Key{}, nil, "keys"},
		{"duplicate IDs", []apipool.Key{{ID: "a", Secret: "1"}, {ID: "a", Secret: "2"}}, nil, "keys[1].ID"},
		{"empty ID", k(func(k *apipool.Key) { k.ID = "" }), nil, "keys[1].ID"},
		{"long ID", k(func(k *apipool.Key) { k.ID = long }), nil, "keys[1].ID"},
		{"ID is the secret", k(func(k *apipool.Key) { k.ID = string(k.Secret) }), nil, "keys[1].ID"},
		{"empty secret", k(func(k *apipool.Key) { k.Secret = "" }), nil, "keys[1].Secret"},
		{"control character in secret", k(func(k *apipool.Key) { k.Secret = "ab\r\nX-Evil: 1" }), nil, "keys[1].Secret"},
		{"control character in ID", k(func(k *apipool.Key) { k.ID = "b\nlevel=ERROR msg=forged" }), nil, "keys[1].ID"},
		{"secret read back from a Key's JSON", k(func(k *apipool.Key) { k.Secret = "[REDACTED]" }), nil, "keys[1].Secret"},
		{"negative weight", k(func(k *apipool.Key) { k.Weight = -1 }), nil, "keys[1].Weight"},
		{"huge weight", k(func(k *apipool.Key) { k.Weight = math.MaxInt }), nil, "keys[1].Weight"},
		{"negative MaxInFlight", k(func(k *apipool.Key) { k.MaxInFlight = -1 }), nil, "keys[1].MaxInFlight"},
		{"negative PerSecond", k(func(k *apipool.Key) { k.PerSecond = -0.5 }), nil, "keys[1].PerSecond"},
		{"NaN PerSecond", k(func(k *apipool.Key) { k.PerSecond = math.NaN() }), nil, "keys[1].PerSecond"},
		{"infinite PerSecond", k(func(k *apipool.Key) { k.PerSecond = math.Inf(1) }), nil, "keys[1].PerSecond"},
		{"negative PerMinute", k(func(k *apipool.Key) { k.PerMinute = -1 }), nil, "keys[1].PerMinute"},
		{"negative PerDay", k(func(k *apipool.Key) { k.PerDay = -1 }), nil, "keys[1].PerDay"},
		{"huge PerDay", k(func(k *apipool.Key) { k.PerDay = math.MaxInt32 + 1 }), nil, "keys[1].PerDay"},
		{"nil option", one, []apipool.Option{apipool.WithMaxWait(0), nil}, "options"},
		{"bad header name", one, []apipool.Option{apipool.WithHeader("X Api Key")}, "WithHeader"},
		{"header name with colon", one, []apipool.Option{apipool.WithHeader("X-Key:")}, "WithHeader"},
		{"empty header name", one, []apipool.Option{apipool.WithHeader("")}, "WithHeader"},
		{"empty query parameter", one, []apipool.Option{apipool.WithQueryParam("")}, "WithQueryParam"},
		{"nil injector", one, []apipool.Option{apipool.WithInjector(nil)}, "WithInjector"},
		{"unknown strategy", one, []apipool.Option{apipool.WithStrategy(17)}, "WithStrategy"},
		{"nil selector", one, []apipool.Option{apipool.WithSelector(nil)}, "WithSelector"},
		{"no hosts", one, []apipool.Option{apipool.WithHosts()}, "WithHosts"},
		{"bad host", one, []apipool.Option{apipool.WithHosts("api.test", "https://api.test/v1")}, "WithHosts[1]"},
		{"empty host", one, []apipool.Option{apipool.WithHosts(" ")}, "WithHosts[0]"},
		{"host port out of range", one, []apipool.Option{apipool.WithHosts("api.test:99999")}, "WithHosts[0]"},
		{"host with a trailing dot", one, []apipool.Option{apipool.WithHosts("api.test", "api.test.")}, "WithHosts[1]"},
		{"bad classifier code", one, []apipool.Option{apipool.WithClassifier(status.Config{RateLimitCodes: []int{999}})}, "WithClassifier"},
		{"zero cooldown", one, []apipool.Option{apipool.WithCooldown(0, time.Hour)}, "WithCooldown"},
		{"cooldown over its cap", one, []apipool.Option{apipool.WithCooldown(time.Hour, time.Minute)}, "WithCooldown"},
		{"zero attempts", one, []apipool.Option{apipool.WithMaxAttempts(0)}, "WithMaxAttempts"},
		{"too many attempts", one, []apipool.Option{apipool.WithMaxAttempts(1000)}, "WithMaxAttempts"},
		{"negative max wait", one, []apipool.Option{apipool.WithMaxWait(-time.Second)}, "WithMaxWait"},
		{"nil backoff", one, []apipool.Option{apipool.WithBackoff(nil, 0, time.Second)}, "WithBackoff"},
		{"backoff min over max", one, []apipool.Option{apipool.WithBackoff(func(_, _ time.Duration, _ int, _ *http.Response) time.Duration { return 0 }, time.Second, time.Millisecond)}, "WithBackoff"},
		{"negative buffer", one, []apipool.Option{apipool.WithMaxBufferedBody(-1)}, "WithMaxBufferedBody"},
		{"nil clock", one, []apipool.Option{apipool.WithClock(nil)}, "WithClock"},
		{"empty fingerprint key", one, []apipool.Option{apipool.WithFingerprintKey(nil)}, "WithFingerprintKey"},
		{"nil quota location", one, []apipool.Option{apipool.WithQuotaLocation(nil)}, "WithQuotaLocation"},
		{"negative breaker timeout", one, []apipool.Option{apipool.WithBreaker(apipool.BreakerSettings{Timeout: -time.Second})}, "WithBreaker"},
		{"nil probe", one, []apipool.Option{apipool.WithProbe(nil, 0)}, "WithProbe"},
		{"negative probe interval", one, []apipool.Option{apipool.WithProbe(apipool.ProbeRequest("GET", "http://x.test/"), -time.Second)}, "WithProbe"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			p, err := apipool.New(tc.keys, tc.opts...)
			if p != nil {
				p.Close(context.Background())
				t.Fatal("New returned a Transport")
			}
			var ce *apipool.ConfigError
			if !errors.As(err, &ce) || !errors.Is(err, apipool.ErrInvalidConfig) {
				t.Fatalf("err %T %v, want a *ConfigError matching ErrInvalidConfig", err, err)
			}
			if ce.Field != tc.field || !strings.Contains(err.Error(), tc.field) || ce.Reason == "" || !strings.HasPrefix(err.Error(), "apipool: ") {
				t.Fatalf("err %q (field %q), want one naming %q", err, ce.Field, tc.field)
			}
		})
	}
}

// Zero values mean the documented defaults, and options take effect in
// order.
func TestOptionDefaultsAndOrder(t *testing.T) {
	t.Parallel()
	// The zero Key limits mean no limit; default attempts are 4.
	up := newUpstream(func(seen) reply { return reply{Status: 503} })
	p := mustNew(t, keys(6), apipool.WithBase(up), apipool.WithClock(newClock()), noBackoff)
	mustDo(t, p)
	if n := len(up.Calls()); n != apipool.DefaultMaxAttempts {
		t.Fatalf("%d attempts, want DefaultMaxAttempts (%d)", n, apipool.DefaultMaxAttempts)
	}
	s := p.Snapshot()[0]
	if s.Weight != 1 || s.QuotaLeft != -1 {
		t.Fatalf("defaults: %+v", s)
	}
	// The later injection option wins.
	up = newUpstream(nil)
	p = mustNew(t, keys(1), apipool.WithBase(up), apipool.WithQueryParam("key"), apipool.WithHeader("X-Api-Key"))
	mustDo(t, p)
	if c := up.Calls()[0]; c.Header.Get("X-Api-Key") != "s0" || c.Query["key"] != nil {
		t.Fatalf("sent %v %v", c.Header, c.URL)
	}
	// WithRecorder(nil) discards events; the pool still works, and a
	// stats query fails with an error that says why (not a nil Stats).
	p = mustNew(t, keys(1), apipool.WithBase(newUpstream(nil)), apipool.WithRecorder(nil))
	mustDo(t, p)
	if _, err := p.Stats().UsageByKey(context.Background(), recorder.Query{}); !errors.Is(err, recorder.ErrNoStats) {
		t.Errorf("Stats().UsageByKey without a recorder: %v, want recorder.ErrNoStats", err)
	}
	if _, err := p.RecentAttempts(context.Background(), time.Minute, 0, ""); !errors.Is(err, recorder.ErrNoStats) {
		t.Errorf("RecentAttempts without a recorder: %v, want recorder.ErrNoStats", err)
	}
}

// WithMaxAttempts(1) turns resends off, even for a rate-limited answer.
func TestMaxAttemptsOne(t *testing.T) {
	t.Parallel()
	up := newUpstream(func(seen) reply { return reply{Status: 429, Header: hdr("Retry-After", "1")} })
	p := mustNew(t, keys(3), apipool.WithBase(up), apipool.WithClock(newClock()), apipool.WithMaxAttempts(1))
	if resp, _ := mustDo(t, p); resp.StatusCode != 429 || len(up.Calls()) != 1 {
		t.Fatalf("%d after %d attempts", resp.StatusCode, len(up.Calls()))
	}
}

// WithClassifier changes what a status code means to the pool.
func TestWithClassifier(t *testing.T) {
	t.Parallel()
	up := newUpstream(bySecret(map[string]reply{"s0": {Status: 403, Header: hdr("Retry-After", "30")}}))
	p := mustNew(t, keys(2), apipool.WithBase(up), apipool.WithClock(newClock()),
		apipool.WithClassifier(status.Config{RateLimitCodes: []int{429, 403}, InvalidKeyCodes: []int{401}}))
	if resp, _ := mustDo(t, p); resp.StatusCode != 200 {
		t.Fatalf("status %d", resp.StatusCode)
	}
	s := snapshotByID(p)["k0"]
	if s.State != "cooling" || !s.CoolingUntil.Equal(t0.Add(30*time.Second)) || s.Disabled {
		t.Fatalf("403 as a rate limit: %+v", s)
	}
}

// fuzzReader hands out fuzzed bytes as values; past the end it yields
// zeros.
type fuzzReader struct{ b []byte }

func (r *fuzzReader) byte() byte {
	if len(r.b) == 0 {
		return 0
	}
	c := r.b[0]
	r.b = r.b[1:]
	return c
}

func (r *fuzzReader) u64() uint64 {
	var buf [8]byte
	for i := range buf {
		buf[i] = r.byte()
	}
	return binary.LittleEndian.Uint64(buf[:])
}

func (r *fuzzReader) int() int { return int(int64(r.u64())) }

// small returns a small signed number, the usual kind of limit.
func (r *fuzzReader) small() int { return int(int8(r.byte())) }

func (r *fuzzReader) str() string {
	n := int(r.byte() % 24)
	if n > len(r.b) {
		n = len(r.b)
	}
	s := string(r.b[:n])
	r.b = r.b[n:]
	return s
}

// FuzzNewConfig builds keys and options from fuzzed bytes: New must never
// panic, and returns either a Transport or a *ConfigError. A Transport it
// returns must then serve a request and a snapshot without panicking.
func FuzzNewConfig(f *testing.F) {
	f.Add([]byte{2, 2, 'k', '1', 2, 's', '1', 1, 0, 0, 0, 0, 0, 0, 0, 2, 'k', '2', 2, 's', '2'})
	f.Add([]byte{1, 1, 'a', 1, 'a'})
	f.Add([]byte{3, 1, 'a', 1, 'b', 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 1, 'c', 1, 'd', 1, 'e', 1, 'f', 2, 0, 1, 9, 'X'})
	f.Add([]byte("\x02\x05key-a\x05sec-a\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\xf8\x7f\x05key-b\x05sec-b\x04\x00\x05\x01\x08\x0bX-Api Key\x03\x09api.test:"))
	f.Add([]byte{1, 1, 'k', 1, 's', 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 8, 0, 0x80})
	f.Fuzz(func(t *testing.T, data []byte) {
		r := &fuzzReader{b: data}
		n := int(r.byte() % 6)
		ks := make([]apipool.Key, n)
		for i := range ks {
			ks[i] = apipool.Key{ID: r.str(), Secret: apipool.Secret(r.str())}
			switch r.byte() % 4 {
			case 1:
				ks[i].Weight = r.small()
			case 2:
				ks[i].Weight = r.int()
			}
			if r.byte()%2 == 1 {
				ks[i].MaxInFlight, ks[i].PerMinute, ks[i].PerDay = r.small(), r.small(), r.int()
				ks[i].PerSecond = math.Float64frombits(r.u64())
			}
		}
		var opts []apipool.Option
		for j := int(r.byte() % 8); j > 0; j-- {
			switch r.byte() % 16 {
			case 0:
				opts = append(opts, apipool.WithStrategy(apipool.Strategy(r.small())))
			case 1:
				opts = append(opts, apipool.WithHeader(r.str()))
			case 2:
				opts = append(opts, apipool.WithQueryParam(r.str()))
			case 3:
				hosts := make([]string, r.byte()%3)
				for i := range hosts {
					hosts[i] = r.str()
				}
				opts = append(opts, apipool.WithHosts(hosts...))
			case 4:
				opts = append(opts, apipool.WithMaxAttempts(r.small()))
			case 5:
				opts = append(opts, apipool.WithCooldown(time.Duration(r.int()), time.Duration(r.int())))
			case 6:
				opts = append(opts, apipool.WithMaxBufferedBody(int64(r.int())))
			case 7:
				opts = append(opts, nil)
			case 8:
				opts = append(opts, apipool.WithClassifier(status.Config{RateLimitCodes: []int{r.int() % 1000}, InvalidKeyCodes: []int{int(int16(r.u64()))}}))
			case 9:
				opts = append(opts, apipool.WithBreaker(apipool.BreakerSettings{Failures: uint32(r.byte()), Timeout: time.Duration(r.int()), Interval: time.Duration(r.int()), HalfOpenRequests: uint32(r.byte())}))
			case 10:
				opts = append(opts, apipool.WithQuotaLocation(time.FixedZone(r.str(), r.int()%(30*3600))))
			case 11:
				opts = append(opts, apipool.WithFingerprintKey([]byte(r.str())))
			case 12:
				opts = append(opts, apipool.WithBackoff(func(_, _ time.Duration, _ int, _ *http.Response) time.Duration { return 0 }, time.Duration(r.int()), time.Duration(r.int())))
			case 13:
				opts = append(opts, apipool.WithMaxWait(time.Duration(r.int())))
			case 14:
				opts = append(opts, apipool.WithBearer())
			default:
				opts = append(opts, apipool.WithInjector(func(r *http.Request, s apipool.Secret) { r.Header.Set("X-K", s.Reveal()) }))
			}
		}
		// The pool's own plumbing last, so that a Transport can be tried
		// with no network and no waiting.
		opts = append(opts, apipool.WithBase(newUpstream(nil)), apipool.WithClock(newClock()), apipool.WithMaxWait(0), apipool.WithRecorder(nil))
		p, err := apipool.New(ks, opts...)
		if (p == nil) == (err == nil) {
			t.Fatalf("New returned %v and %v: want exactly one", p, err)
		}
		if err != nil {
			var ce *apipool.ConfigError
			if !errors.As(err, &ce) || !errors.Is(err, apipool.ErrInvalidConfig) || ce.Field == "" {
				t.Fatalf("err %T %v, want a *ConfigError naming a field", err, err)
			}
			return
		}
		defer p.Close(context.Background())
		if got := len(p.Snapshot()); got != len(ks) {
			t.Fatalf("snapshot of %d keys, want %d", got, len(ks))
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		req, _ := http.NewRequestWithContext(ctx, http.MethodPost, "http://api.test/v1?q=1", strings.NewReader("body"))
		resp, err := p.RoundTrip(req)
		if err == nil {
			resp.Body.Close()
		} else if resp != nil {
			t.Fatal("a response with an error")
		}
	})
}

// WithBackoff's error says which part is wrong.
func TestWithBackoffErrorNamesThePart(t *testing.T) {
	for _, c := range []struct {
		b        retryablehttp.Backoff
		min, max time.Duration
		want     string
	}{
		{nil, 0, time.Second, "nil backoff function"},
		{retryablehttp.DefaultBackoff, -time.Second, time.Second, "negative min -1s"},
		{retryablehttp.DefaultBackoff, 2 * time.Second, time.Second, "max 1s below min 2s"},
	} {
		_, err := apipool.New(keys(1), apipool.WithBackoff(c.b, c.min, c.max))
		if !errors.Is(err, apipool.ErrInvalidConfig) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("WithBackoff(%v, %v): %v, want an error saying %q", c.min, c.max, err, c.want)
		}
	}
}
