package main

import (
	"bytes"
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/anthropics/anthropic-sdk-go/v2"
	"github.com/anthropics/anthropic-sdk-go/v2/option"
	"github.com/apipool-ng/apipool"
	"github.com/apipool-ng/apipool/examples/sdk/internal/demo"
)

// canary is the SDK's placeholder credential in the tests: it must never
// reach the API.
const canary = "CANARY-sdk-placeholder-7f3a"

func secrets() []string {
	var s []string
	for _, k := range keys {
		s = append(s, string(k.Secret))
	}
	return s
}

func message(ctx context.Context, c anthropic.Client) (*anthropic.Message, error) {
	return c.Messages.New(ctx, anthropic.MessageNewParams{
		Model:     anthropic.ModelClaudeHaiku5_5,
		MaxTokens: 64,
		Messages:  []anthropic.MessageParam{anthropic.NewUserMessage(anthropic.NewTextBlock("hi"))},
	})
}

// TestAnthropicExample runs the example with the SDK's key set to a
// canary and checks on the wire: every request carried exactly one
// credential, a pool key in x-api-key, and no Authorization header (the
// SDK's Bearer placeholder was removed); anthropic-version went through;
// alpha's 429 moved the request to another key; bravo's quota was used
// to the end without a 429; every call succeeded.
func TestAnthropicExample(t *testing.T) {
	fake := newMessagesAPI(quotas, time.Minute)
	for key, n := range spent {
		fake.spend(key, n)
	}
	var out bytes.Buffer
	rep, err := run(&out, fake, canary)
	t.Log("\n" + out.String())
	if err != nil {
		t.Fatalf("run: %v", err)
	}
	if rep.Calls != calls || rep.OK != calls {
		t.Errorf("calls = %d, succeeded = %d; want %d and %d", rep.Calls, rep.OK, calls, calls)
	}
	got := fake.Wire.All()
	if n := demo.CheckWire(t, got, canary, secrets()); n != len(got) {
		t.Errorf("%d of %d requests carried a pool key", n, len(got))
	}
	for i, r := range got {
		if r.Header.Get("Authorization") != "" {
			t.Errorf("request %d carried an Authorization header: the SDK's Bearer was not removed", i)
		}
		if r.Header.Get("X-Api-Key") == "" {
			t.Errorf("request %d carried no x-api-key", i)
		}
		if r.Header.Get("Anthropic-Version") == "" {
			t.Errorf("request %d carried no anthropic-version", i)
		}
	}
	if n := demo.Rotations(got, http.StatusTooManyRequests); n == 0 {
		t.Errorf("no request moved to another key after a 429; statuses on the wire: %v", statuses(got))
	}
	attempts, limited := demo.CheckKeys(t, rep.ByKey)
	if rep.ByKey["alpha"].Limited == 0 {
		t.Errorf("no 429 on alpha, whose quota was spent: %+v", rep.ByKey)
	}
	if b := rep.ByKey["bravo"]; b.Success != int64(quotas["sk-ant-bravo-0002"]) || b.Limited != 0 {
		t.Errorf("bravo: %+v; want its quota used with no 429, the pool reading its anthropic-ratelimit-requests-remaining", b)
	}
	if attempts != int64(len(got)) || attempts != calls+limited {
		t.Errorf("%d attempts in the stats, %d requests on the wire, %d calls and %d 429s", attempts, len(got), calls, limited)
	}
	if !regexp.MustCompile(`the API received \d+ requests, 0 with the SDK's placeholder, [1-9]\d* moved to another key after a 429`).MatchString(out.String()) {
		t.Errorf("output lacks the wire summary")
	}
}

// TestBothHeaderStyles gives the SDK a placeholder in both places an
// Anthropic SDK puts its key: "Authorization: Bearer" (v2) and X-Api-Key
// (v1, here set with option.WithHeader). Only the pool's key reaches the
// API, once.
func TestBothHeaderStyles(t *testing.T) {
	fake := newMessagesAPI(quotas, time.Minute)
	srv := httptest.NewServer(fake.handler())
	defer srv.Close()
	pool, err := newPool()
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close(context.Background())
	client := newClient(&http.Client{Transport: pool}, srv.URL, canary, option.WithHeader("X-Api-Key", canary))
	msg, err := message(context.Background(), client)
	if err != nil {
		t.Fatalf("message: %v", err)
	}
	if len(msg.Content) == 0 || msg.Content[0].Text != reply {
		t.Errorf("reply = %+v", msg.Content)
	}
	got := fake.Wire.All()
	if n := demo.CheckWire(t, got, canary, secrets()); n != len(got) || len(got) != 1 {
		t.Errorf("%d of %d requests carried a pool key, want 1 of 1", n, len(got))
	}
}

// TestFakeReadsBearerFirst checks the premise the tests above rely on:
// like the real API, the fake reads a Bearer token before x-api-key, so a
// request that keeps the SDK's placeholder in Authorization fails with 401
// even though it carries a good x-api-key (the finding, where
// every key was then disabled).
func TestFakeReadsBearerFirst(t *testing.T) {
	fake := newMessagesAPI(quotas, time.Minute)
	srv := httptest.NewServer(fake.handler())
	defer srv.Close()
	good := string(keys[1].Secret)
	client := newClient(srv.Client(), srv.URL, canary, option.WithHeader("X-Api-Key", good))
	_, err := message(context.Background(), client)
	var apiErr *anthropic.Error
	if !errors.As(err, &apiErr) || apiErr.StatusCode != http.StatusUnauthorized {
		t.Fatalf("err = %v, want a 401 *anthropic.Error", err)
	}
	got := fake.Wire.All()
	if len(got) != 1 || got[0].Key != canary || got[0].Header.Get("X-Api-Key") != good {
		t.Errorf("the fake read %q (of %d requests), want the Bearer placeholder", got[0].Key, len(got))
	}
	if !strings.Contains(apiErr.Error(), "authentication_error") {
		t.Errorf("error = %v, want an authentication_error", apiErr)
	}
}

// TestRateLimitReachesSDK checks what the SDK's caller sees when the only
// key is rate limited and the pool may not wait: one attempt on the wire,
// the API's 429 rate_limit_error decoded by the SDK, and the key cooling
// down until its retry-after.
func TestRateLimitReachesSDK(t *testing.T) {
	fake := newMessagesAPI(map[string]int{"sk-only": 0}, time.Minute)
	srv := httptest.NewServer(fake.handler())
	defer srv.Close()
	pool, err := apipool.New([]apipool.Key{{ID: "only", Secret: "sk-only"}},
		apipool.WithHeader("X-Api-Key"), apipool.WithMaxWait(0))
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close(context.Background())
	_, err = message(context.Background(), newClient(&http.Client{Transport: pool}, srv.URL, canary))
	var apiErr *anthropic.Error
	if !errors.As(err, &apiErr) || apiErr.StatusCode != http.StatusTooManyRequests {
		t.Fatalf("err = %v, want a 429 *anthropic.Error", err)
	}
	if !strings.Contains(apiErr.Error(), "rate_limit_error") {
		t.Errorf("error = %v, want a rate_limit_error", apiErr)
	}
	got := fake.Wire.All()
	demo.CheckWire(t, got, canary, []string{"sk-only"})
	if len(got) != 1 {
		t.Errorf("%d requests on the wire, want 1", len(got))
	}
	if s := pool.Snapshot()[0]; s.State != "cooling" {
		t.Errorf("key state = %s, want cooling", s.State)
	}
}

func statuses(got []demo.Received) []int {
	var s []int
	for _, r := range got {
		s = append(s, r.Status)
	}
	return s
}
