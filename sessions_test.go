package apipool_test

import (
	"context"
	"io"
	"math/rand/v2"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/apipool-ng/apipool"
)

// doSession sends a GET of session id and returns the secret that served
// it (the upstream answers with it: see sessionUpstream).
func doSession(t testing.TB, p *apipool.Transport, id string) string {
	t.Helper()
	req := newGet(t, "http://api.test/v1/things")
	req.Header.Set("X-Session", id)
	resp, err := p.RoundTrip(req)
	if err != nil {
		t.Fatalf("session %s: %v", id, err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	return string(b)
}

// sessionUpstream answers 200 with the secret it got.
func sessionUpstream() http.RoundTripper {
	return roundTripperFunc(func(r *http.Request) (*http.Response, error) {
		return &http.Response{StatusCode: 200, Header: http.Header{}, Body: io.NopCloser(strings.NewReader(secretOf(r))), Request: r}, nil
	})
}

// The measure: 1,000 sessions over 10 keys. Every request of a
// session reaches its key while that key is free (100%); when the key is
// taken out, its sessions move to other keys and stay there, also after
// the key is back; the other sessions never move.
func TestSessionsAffinity(t *testing.T) {
	p := mustNew(t, keys(10), apipool.WithBase(sessionUpstream()), apipool.WithRecorder(nil), apipool.WithSessions(apipool.SessionFromHeader("X-Session"), 0))
	const n = 1000
	ids := make([]string, n)
	key := map[string]string{}
	perKey := map[string]int{}
	for i := range ids {
		ids[i] = "session-" + itoa(i)
		key[ids[i]] = doSession(t, p, ids[i])
		perKey[key[ids[i]]]++
	}
	for s, c := range perKey {
		if c != 100 {
			t.Errorf("key %s took %d first requests, want 100 (round-robin)", s, c)
		}
	}
	rng := rand.New(rand.NewPCG(1, 2))
	hits, total := 0, 0
	round := func(check func(id, got string)) {
		order := rng.Perm(n)
		for _, i := range order {
			got := doSession(t, p, ids[i])
			total++
			check(ids[i], got)
		}
	}
	for range 3 {
		round(func(id, got string) {
			if got == key[id] {
				hits++
			}
		})
	}
	t.Logf("with every key free: %d of %d requests (%.2f%%) reached their session's first key", hits, total, 100*float64(hits)/float64(total))
	if hits != total {
		t.Fatalf("%d of %d requests reached their session's key, want all", hits, total)
	}
	// k3 is taken out: its sessions move, once, and stay.
	if err := p.Disable("k3", "test"); err != nil {
		t.Fatal(err)
	}
	moved := map[string]string{}
	round(func(id, got string) {
		switch {
		case key[id] != "s3" && got != key[id]:
			t.Errorf("session %s moved from free key %s to %s", id, key[id], got)
		case key[id] == "s3" && got == "s3":
			t.Errorf("session %s went to the disabled key", id)
		case key[id] == "s3":
			moved[id] = got
		}
	})
	if len(moved) != 100 {
		t.Fatalf("%d sessions moved, want k3's 100", len(moved))
	}
	if err := p.Enable("k3"); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		round(func(id, got string) {
			want := key[id]
			if m, ok := moved[id]; ok {
				want = m
			}
			if got != want {
				t.Errorf("session %s went to %s, want %s (it stays where it moved)", id, got, want)
			}
		})
	}
	if held := apipool.SessionsHeld(p); held != n {
		t.Errorf("%d sessions held, want %d", held, n)
	}
}

// A session whose key answers 429 moves to the key its resend took, and
// stays there after the cooldown.
func TestSessionsMoveOnRateLimit(t *testing.T) {
	clk := newClock()
	limited := false
	up := newUpstream(func(s seen) reply {
		if s.Secret == "s0" && limited {
			limited = false
			return reply{Status: 429, Header: hdr("Retry-After", "5")}
		}
		return reply{Status: 200, Body: s.Secret}
	})
	p := mustNew(t, keys(3), apipool.WithBase(up), apipool.WithClock(clk), apipool.WithRecorder(nil), apipool.WithSessions(apipool.SessionFromHeader("x-session"), 0))
	if got := doSession(t, p, "conv-1"); got != "s0" {
		t.Fatalf("first request on %s", got)
	}
	limited = true
	moved := doSession(t, p, "conv-1")
	if moved == "s0" {
		t.Fatal("the answer came from the rate-limited key")
	}
	clk.Advance(10 * time.Second)
	for i := range 5 {
		if got := doSession(t, p, "conv-1"); got != moved {
			t.Fatalf("request %d after the cooldown went to %s, want %s where the session moved", i, got, moved)
		}
	}
}

// A session stays on its key while it is eligible, whatever its tier; a
// key that does not serve a request's model moves the session.
func TestSessionsTiersAndModels(t *testing.T) {
	up := newUpstream(nil)
	ks := []apipool.Key{{ID: "a", Secret: "s-a"}, {ID: "b", Secret: "s-b", Tier: 1}, {ID: "c", Secret: "s-c", Tier: 1, Models: []string{"m1"}}}
	p := mustNew(t, ks, apipool.WithBase(up), apipool.WithRecorder(nil), apipool.WithModel(apipool.ModelFromJSON),
		apipool.WithSessions(apipool.SessionFromJSON("metadata.user_id"), 0))
	send := func(user, model string) string {
		body := `{"model":"` + model + `","metadata":{"user_id":"` + user + `"}}`
		if _, _, err := postJSON(t, p, "http://api.test/v1/messages", body, false); err != nil {
			t.Fatal(err)
		}
		c := up.Calls()
		return c[len(c)-1].Secret
	}
	if err := p.Disable("a", ""); err != nil {
		t.Fatal(err)
	}
	if got := send("u1", "m2"); got != "s-b" { // c does not serve m2
		t.Fatalf("u1 took %s", got)
	}
	if err := p.Enable("a"); err != nil {
		t.Fatal(err)
	}
	for range 3 {
		if got := send("u1", "m2"); got != "s-b" {
			t.Fatalf("u1 went to %s, want its tier-1 key s-b while it is eligible", got)
		}
	}
	if got := send("u2", "m2"); got != "s-a" {
		t.Errorf("a new session went to %s, want the tier-0 key", got)
	}
	// u3 is pinned to c, which serves m1 only: a request for m2 moves it.
	p.Disable("a", "")
	p.Disable("b", "")
	if got := send("u3", "m1"); got != "s-c" {
		t.Fatalf("u3 took %s", got)
	}
	p.Enable("a")
	p.Enable("b")
	if got := send("u3", "m1"); got != "s-c" {
		t.Fatalf("u3 left its key c for %s", got)
	}
	if got := send("u3", "m2"); got != "s-a" {
		t.Fatalf("u3's request for m2 went to %s, want the tier-0 key (c does not serve m2)", got)
	}
	if got := send("u3", "m1"); got != "s-a" {
		t.Fatalf("u3 went back to %s, want s-a where it moved", got)
	}
}

// The pool remembers at most the sessions it was given, the least
// recently used forgotten first.
func TestSessionsLRUBound(t *testing.T) {
	up := sessionUpstream()
	p := mustNew(t, keys(10), apipool.WithBase(up), apipool.WithRecorder(nil), apipool.WithSessions(apipool.SessionFromHeader("X-Session"), 100))
	key := map[string]string{}
	for i := range 1000 {
		id := "s-" + itoa(i)
		key[id] = doSession(t, p, id)
		if held := apipool.SessionsHeld(p); held > 100 {
			t.Fatalf("%d sessions held after %d, bound 100", held, i+1)
		}
	}
	// The last 100 are remembered: each reaches its key, in an order in
	// which round-robin alone would not give it.
	for i := 999; i >= 900; i-- {
		id := "s-" + itoa(i)
		if got := doSession(t, p, id); got != key[id] {
			t.Fatalf("recent session %s went to %s, want %s", id, got, key[id])
		}
	}
	// An old one is forgotten: pinned again, it evicts one more.
	doSession(t, p, "s-0")
	if held := apipool.SessionsHeld(p); held != 100 {
		t.Errorf("%d sessions held, want 100", held)
	}
	// Requests without a session hold none.
	p2 := mustNew(t, keys(2), apipool.WithBase(up), apipool.WithRecorder(nil), apipool.WithSessions(apipool.SessionFromHeader("X-Session"), 0))
	resp, err := p2.RoundTrip(newGet(t, "http://api.test/"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if apipool.SessionsHeld(p2) != 0 {
		t.Error("a request without a session was remembered")
	}
}

func TestSessionSources(t *testing.T) {
	req, _ := http.NewRequestWithContext(context.Background(), http.MethodPost, "http://x/", nil)
	req.Header.Set("X-Session-Id", "abc")
	if got := apipool.SessionFromHeader("x-session-id")(req, nil); got != "abc" {
		t.Errorf("header: %q", got)
	}
	body := []byte(`{"user":"u-7","prompt_cache_key":"pc-1","metadata":{"user_id":42}}`)
	for path, want := range map[string]string{"user": "u-7", "prompt_cache_key": "pc-1", "metadata.user_id": "42", "metadata": "", "a..b": "", "": ""} {
		if got := apipool.SessionFromJSON(path)(req, body); got != want {
			t.Errorf("SessionFromJSON(%q) = %q, want %q", path, got, want)
		}
	}
}

// With a model source and a session source that both read the JSON body,
// a request with GetBody (as SDKs make it) is read through GetBody once
// for both, and both see the body: the request goes to the key serving
// its model, and its session stays there.
func TestModelAndSessionReadBodyOnce(t *testing.T) {
	up := newUpstream(nil)
	ks := []apipool.Key{
		{ID: "a", Secret: "s-a", Models: []string{"m-a"}},
		{ID: "b", Secret: "s-b", Models: []string{"m-b"}},
		{ID: "b2", Secret: "s-b2", Models: []string{"m-b"}},
	}
	p := mustNew(t, ks, apipool.WithBase(up), apipool.WithModel(apipool.ModelFromJSON),
		apipool.WithSessions(apipool.SessionFromJSON("user"), 100))
	body := `{"model":"m-b","user":"u-1","messages":[]}`
	var first string
	for i := range 4 {
		req, err := http.NewRequestWithContext(context.Background(), http.MethodPost, "http://api.test/v1/chat", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		getBody := req.GetBody
		calls := 0
		req.GetBody = func() (io.ReadCloser, error) { calls++; return getBody() }
		resp, err := p.RoundTrip(req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if calls != 1 {
			t.Errorf("request %d: GetBody called %d times, want once for the model and the session", i, calls)
		}
		s := up.Secrets()[i]
		if i == 0 {
			first = s
		}
		if s != first || (s != "s-b" && s != "s-b2") {
			t.Errorf("request %d went to %s, want %s every time (a key serving m-b, the session's)", i, s, first)
		}
	}
}
