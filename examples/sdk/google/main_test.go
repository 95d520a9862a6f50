package main

import (
	"bytes"
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/apipool-ng/apipool"
	"github.com/apipool-ng/apipool/examples/sdk/internal/demo"
)

// canary is the key the tests give the client itself: it must never reach
// the API.
const canary = "AIzaSy-CANARY-client-placeholder-5b2d"

func secrets() []string {
	var s []string
	for _, k := range keys {
		s = append(s, string(k.Secret))
	}
	return s
}

// TestGoogleExample runs the example with the client's own key= set to a
// canary and checks on the wire: each request carried one key, a pool
// key, in the key parameter; alpha's 429 RESOURCE_EXHAUSTED moved the
// query to another key; bravo served its daily quota (PerDay) with no
// 429; every query succeeded.
func TestGoogleExample(t *testing.T) {
	fake := newFake()
	var out bytes.Buffer
	rep, err := run(&out, fake, canary)
	t.Log("\n" + out.String())
	if err != nil {
		t.Fatalf("run: %v", err)
	}
	if rep.OK != queries {
		t.Errorf("%d of %d queries succeeded", rep.OK, queries)
	}
	got := fake.Wire.All()
	if n := demo.CheckWire(t, got, canary, secrets()); n != len(got) {
		t.Errorf("%d of %d requests carried a pool key", n, len(got))
	}
	for i, r := range got {
		if len(r.Query["key"]) != 1 {
			t.Errorf("request %d: key parameter %q, want one pool key", i, r.Query["key"])
		}
	}
	if n := demo.Rotations(got, http.StatusTooManyRequests); n != 1 {
		t.Errorf("%d queries moved to another key after a 429, want 1 (alpha's)", n)
	}
	for i, r := range got {
		if r.Status == http.StatusTooManyRequests && r.Key != "AIzaSy-alpha-0001" {
			t.Errorf("request %d: 429 on %s, whose daily quota the pool counts", i, r.Key)
		}
	}
	if b := rep.ByKey["bravo"]; b.Success != 3 || b.Limited != 0 {
		t.Errorf("bravo = %+v, want its 3 queries a day and no 429", b)
	}
	demo.CheckKeys(t, rep.ByKey)
}

// TestHeaderKeyStripped gives the client's request a canary both as key=
// and in X-Goog-Api-Key (Google APIs take either): neither reaches the
// API, the pool's key= does.
func TestHeaderKeyStripped(t *testing.T) {
	fake := newFake()
	srv := httptest.NewServer(fake.handler())
	defer srv.Close()
	pool, err := newPool()
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close(context.Background())
	hc := &http.Client{Transport: headerSetter{pool, "X-Goog-Api-Key", canary}}
	res, err := (&searchClient{HTTP: hc, BaseURL: srv.URL, Key: canary}).Search(context.Background(), "q")
	if err != nil || len(res.Items) != 1 {
		t.Fatalf("Search = %+v, %v", res, err)
	}
	got := fake.Wire.All()
	if n := demo.CheckWire(t, got, canary, secrets()); n != len(got) {
		t.Errorf("%d of %d requests carried a pool key", n, len(got))
	}
}

// headerSetter sets a header on each request, as an SDK would, before the
// pool sees it.
type headerSetter struct {
	next        http.RoundTripper
	name, value string
}

func (h headerSetter) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set(h.name, h.value)
	return h.next.RoundTrip(r)
}

// TestKeysNotInErrors checks the pitfall of keys in URLs: when the API
// cannot be reached, the error the client gets (whose text holds the
// request's URL) contains none of the pool's keys.
func TestKeysNotInErrors(t *testing.T) {
	srv := httptest.NewServer(http.NotFoundHandler())
	base := srv.URL
	srv.Close() // nothing listens there now
	pool, err := newPool(apipool.WithMaxWait(0))
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close(context.Background())
	_, err = (&searchClient{HTTP: &http.Client{Transport: pool}, BaseURL: base}).Search(context.Background(), "q")
	if err == nil {
		t.Fatal("no error from a closed server")
	}
	for _, s := range secrets() {
		if strings.Contains(err.Error(), s) {
			t.Errorf("error %q contains a pool key", err)
		}
	}
}

// TestBadKeyFoundByProbe checks the advice for a bad key, which Google
// answers 400 API_KEY_INVALID: the classifier cannot tell it from a bad
// query, so the client gets the API's error and the key stays in use;
// CheckUsable with a probe finds it, and Disable takes it out.
func TestBadKeyFoundByProbe(t *testing.T) {
	fake := newSearchAPI(map[string]int{"AIzaSy-good": 100})
	srv := httptest.NewServer(fake.handler())
	defer srv.Close()
	pool, err := apipool.New([]apipool.Key{{ID: "bad", Secret: "AIzaSy-bad"}, {ID: "good", Secret: "AIzaSy-good"}},
		apipool.WithQueryParam("key"),
		apipool.WithProbe(apipool.ProbeRequest(http.MethodGet, srv.URL+"/customsearch/v1?q=probe"), 0))
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close(context.Background())
	client := &searchClient{HTTP: &http.Client{Transport: pool}, BaseURL: srv.URL}

	_, err = client.Search(context.Background(), "q") // round robin: the bad key first
	var apiErr *APIError
	if !errors.As(err, &apiErr) || apiErr.Code != http.StatusBadRequest || len(apiErr.Details) == 0 || apiErr.Details[0].Reason != "API_KEY_INVALID" {
		t.Fatalf("err = %v, want 400 API_KEY_INVALID", err)
	}
	if s := pool.Snapshot()[0]; s.State != "active" {
		t.Errorf("bad key state = %s after a 400, want active (a 400 says nothing of the key)", s.State)
	}

	results, err := pool.CheckUsable(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range results {
		if want := r.KeyID == "good"; r.Usable != want {
			t.Errorf("probe of %s: usable = %v (%v)", r.KeyID, r.Usable, r.Err)
		}
		if !r.Usable {
			if err := pool.Disable(r.KeyID, "probe failed"); err != nil {
				t.Fatal(err)
			}
		}
	}
	before := len(fake.Wire.All())
	for range 3 {
		if _, err := client.Search(context.Background(), "q"); err != nil {
			t.Errorf("after disabling the bad key: %v", err)
		}
	}
	for _, r := range fake.Wire.All()[before:] {
		if r.Key != "AIzaSy-good" {
			t.Errorf("a query went out with %q after the bad key was disabled", r.Key)
		}
	}
}
