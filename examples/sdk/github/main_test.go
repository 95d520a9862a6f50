package main

import (
	"bytes"
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/apipool-ng/apipool"
	"github.com/apipool-ng/apipool/examples/sdk/internal/demo"
	"github.com/google/go-github/v93/github"
)

// canary is the token the tests give go-github itself: it must never reach
// the API.
const canary = "ghp_CANARY_sdk_placeholder_9c1e"

func secrets() []string {
	var s []string
	for _, k := range tokens {
		s = append(s, string(k.Secret))
	}
	return s
}

func runMode(t *testing.T, mode apipool.RateLimitHeaderMode) (*report, *restAPI, error) {
	t.Helper()
	fake := newFake()
	var out bytes.Buffer
	rep, err := run(&out, fake, mode, canary)
	t.Log("\n" + out.String())
	if rep == nil {
		t.Fatalf("run: %v", err)
	}
	return rep, fake, err
}

// TestPoolRateLimitHeaders is the recipe: with the rate-limit headers
// describing the pool, 24 of 24 calls succeed across the tokens with
// go-github's own rate-limit check left on, although GitHub said
// x-ratelimit-remaining: 0 for alpha and bravo on the way. On the wire:
// only pool tokens (go-github's own token, a canary, stripped), delta's
// 403 rate limit moved to another token, no token used past its limit,
// and the remaining count go-github last saw is what the tokens have left.
func TestPoolRateLimitHeaders(t *testing.T) {
	rep, fake, err := runMode(t, apipool.RateLimitHeadersPool)
	if err != nil {
		t.Fatalf("run: %v", err)
	}
	if rep.OK != calls || rep.Refused != 0 {
		t.Errorf("%d of %d calls succeeded, %d refused by go-github; want all to succeed", rep.OK, calls, rep.Refused)
	}
	got := fake.Wire.All()
	if n := demo.CheckWire(t, got, canary, secrets()); n != len(got) {
		t.Errorf("%d of %d requests carried a pool token", n, len(got))
	}
	if n := demo.Rotations(got, http.StatusForbidden); n != 1 {
		t.Errorf("%d requests moved to another token after a 403, want 1 (delta's)", n)
	}
	for i, r := range got {
		if r.Status == http.StatusForbidden && r.Key != "ghp_delta0004" {
			t.Errorf("request %d: 403 on %s, whose answers said how many calls it had left", i, r.Key)
		}
	}
	for tok, left := range fake.left() {
		if left < 0 {
			t.Errorf("token %s used %d past its limit", tok, -left)
		}
	}
	left := 0
	for _, n := range fake.left() {
		left += n
	}
	if rep.LastRate.Remaining != left {
		t.Errorf("go-github last saw %d remaining, the tokens have %d left", rep.LastRate.Remaining, left)
	}
	if rep.ByKey["alpha"].Success != 5 || rep.ByKey["bravo"].Success != 10 {
		t.Errorf("alpha and bravo were not used to their limits: %+v", rep.ByKey)
	}
	demo.CheckKeys(t, rep.ByKey)
}

// TestHeadersAsIsRefused shows why the option exists (the issue's
// finding): with the headers of the one token that answered, go-github
// records alpha's x-ratelimit-remaining: 0 and refuses the calls after it
// on its own, without sending them, although bravo and charlie are free.
func TestHeadersAsIsRefused(t *testing.T) {
	rep, fake, err := runMode(t, apipool.RateLimitHeadersAsIs)
	if err == nil || rep.Refused == 0 {
		t.Fatalf("go-github refused no call (err %v): the premise of RateLimitHeadersPool no longer holds", err)
	}
	if rep.OK+rep.Refused != calls {
		t.Errorf("%d succeeded + %d refused != %d calls", rep.OK, rep.Refused, calls)
	}
	if got := fake.Wire.All(); len(got) != rep.OK+1 { // and delta's 403
		t.Errorf("the API received %d requests for %d successes", len(got), rep.OK)
	}
	if rep.LastRate.Remaining != 0 || rep.LastRate.Limit != 5 {
		t.Errorf("go-github's view = %+v, want alpha's: 0 of 5", rep.LastRate)
	}
}

// TestHeadersRemoved checks RateLimitHeadersRemove: go-github sees no
// rate-limit header, so it never refuses a call, and all 24 succeed.
func TestHeadersRemoved(t *testing.T) {
	rep, fake, err := runMode(t, apipool.RateLimitHeadersRemove)
	if err != nil {
		t.Fatalf("run: %v", err)
	}
	if rep.OK != calls || rep.Refused != 0 {
		t.Errorf("%d of %d calls succeeded, %d refused", rep.OK, calls, rep.Refused)
	}
	if rep.LastRate != (github.Rate{}) {
		t.Errorf("go-github saw a rate limit: %+v", rep.LastRate)
	}
	demo.CheckWire(t, fake.Wire.All(), canary, secrets())
}

// TestPlainForbidden checks that a 403 without rate-limit evidence (a
// permission the token lacks) reaches go-github as the API's error after
// one request, and that no token changed state: it says nothing of the
// token.
func TestPlainForbidden(t *testing.T) {
	fake := newFake()
	srv := httptest.NewServer(fake.handler())
	defer srv.Close()
	pool, err := newPool(apipool.RateLimitHeadersPool)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close(context.Background())
	client, err := newClient(&http.Client{Transport: pool}, srv.URL+"/", canary)
	if err != nil {
		t.Fatal(err)
	}
	_, _, err = client.Repositories.Get(context.Background(), "acme", "secret")
	var er *github.ErrorResponse
	if !errors.As(err, &er) || er.Response.StatusCode != http.StatusForbidden {
		t.Fatalf("err = %v, want a 403 *github.ErrorResponse", err)
	}
	if er.Message != "Resource not accessible by personal access token" {
		t.Errorf("message = %q", er.Message)
	}
	got := fake.Wire.All()
	if len(got) != 1 {
		t.Errorf("the API received %d requests, want 1: a plain 403 is not resent", len(got))
	}
	demo.CheckWire(t, got, canary, secrets())
	for _, s := range pool.Snapshot() {
		if s.State != "active" {
			t.Errorf("token %s is %s after a plain 403, want active", s.KeyID, s.State)
		}
	}
	if _, _, err := client.Repositories.Get(context.Background(), "acme", "widgets"); err != nil {
		t.Errorf("the next call: %v", err)
	}
}
