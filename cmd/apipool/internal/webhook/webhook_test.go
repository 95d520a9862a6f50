package webhook_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/apipool-ng/apipool"
	"github.com/apipool-ng/apipool/cmd/apipool/internal/webhook"
	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"
)

// secret is a made-up signing secret holding a canary in its bytes:
// 32 bytes, base64 after whsec_.
var (
	secretBytes = []byte("CANARY-whsec-0123456789abcdefXYZ")
	secret      = webhook.SecretPrefix + base64.StdEncoding.EncodeToString(secretBytes)
)

// receiver is a local endpoint that checks every delivery's signature
// with the official Standard Webhooks Go library, and counts each alert
// once by its webhook-id, whatever the retries.
type receiver struct {
	t   *testing.T
	srv *httptest.Server
	wh  *standardwebhooks.Webhook

	mu       sync.Mutex
	attempts int
	seen     map[string]int // webhook-id -> attempts that reached the handler
	order    []string       // webhook-ids in the order first delivered
	bodies   map[string][]byte
	bad      []string // why a delivery did not verify
	answer   func(n int, r *http.Request) int
	got      chan string // each webhook-id accepted for the first time
}

// newReceiver starts a receiver; answer gives the status of the n-th
// attempt (1-based, over all messages); nil answers 204.
func newReceiver(t *testing.T, answer func(n int, r *http.Request) int) *receiver {
	wh, err := standardwebhooks.NewWebhook(secret)
	if err != nil {
		t.Fatal(err)
	}
	rc := &receiver{t: t, wh: wh, seen: map[string]int{}, bodies: map[string][]byte{}, answer: answer, got: make(chan string, 100)}
	rc.srv = httptest.NewServer(http.HandlerFunc(rc.serve))
	t.Cleanup(rc.srv.Close)
	return rc
}

func (rc *receiver) serve(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(r.Body)
	if err != nil {
		return
	}
	rc.mu.Lock()
	rc.attempts++
	n := rc.attempts
	id := r.Header.Get("webhook-id")
	rc.seen[id]++
	if err := rc.wh.Verify(body, r.Header); err != nil {
		rc.bad = append(rc.bad, id+": "+err.Error())
	}
	if r.Method != http.MethodPost || r.Header.Get("Content-Type") != "application/json" {
		rc.bad = append(rc.bad, id+": "+r.Method+" "+r.Header.Get("Content-Type"))
	}
	answer := rc.answer
	rc.mu.Unlock()
	code := http.StatusNoContent
	if answer != nil {
		code = answer(n, r)
	}
	if code >= 200 && code < 300 {
		rc.mu.Lock()
		first := rc.bodies[id] == nil
		if first {
			rc.order = append(rc.order, id)
			rc.bodies[id] = body
		} else if !bytes.Equal(rc.bodies[id], body) {
			rc.bad = append(rc.bad, id+": a retry with another body")
		}
		rc.mu.Unlock()
		if first {
			rc.got <- id
		}
	}
	w.WriteHeader(code)
}

func (rc *receiver) url(t *testing.T) *url.URL {
	u, err := url.Parse(rc.srv.URL + "/hooks/apipool")
	if err != nil {
		t.Fatal(err)
	}
	return u
}

// accepted returns the alerts accepted, once each, in order.
func (rc *receiver) accepted() []map[string]any {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	var out []map[string]any
	for _, id := range rc.order {
		var m map[string]any
		if err := json.Unmarshal(rc.bodies[id], &m); err != nil {
			rc.t.Fatalf("body of %s: %v", id, err)
		}
		out = append(out, m)
	}
	return out
}

func (rc *receiver) check(t *testing.T) {
	t.Helper()
	rc.mu.Lock()
	defer rc.mu.Unlock()
	if len(rc.bad) > 0 {
		t.Errorf("deliveries that do not verify:\n%s", strings.Join(rc.bad, "\n"))
	}
}

func await[T any](t *testing.T, ch <-chan T, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(60 * time.Second):
		buf := make([]byte, 1<<20)
		t.Fatalf("%s: nothing after 60s\n%s", what, buf[:runtime.Stack(buf, true)])
		panic("unreachable")
	}
}

var t0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

func alert(kind apipool.AlertKind, key string) apipool.Alert {
	return apipool.Alert{Kind: kind, Pool: "openai", KeyID: key, Time: t0, Until: t0.Add(time.Minute), Reason: "upstream answered 401 Unauthorized"}
}

func newSender(t *testing.T, logs io.Writer, rs ...webhook.Receiver) *webhook.Sender {
	t.Helper()
	var log *slog.Logger
	if logs != nil {
		log = slog.New(slog.NewJSONHandler(logs, nil))
	}
	s, err := webhook.New(webhook.Config{Receivers: rs, BackoffMin: time.Millisecond, BackoffMax: 2 * time.Millisecond, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close(context.Background()) })
	return s
}

func mustSecret(t *testing.T) []byte {
	b, err := webhook.ParseSecret(secret)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// Each message verifies with the official library, carries the alert as
// the documented JSON, and the signature is the library's own for the
// same id, time and body.
func TestSignedAsStandardWebhooks(t *testing.T) {
	rc := newReceiver(t, nil)
	s := newSender(t, nil, webhook.Receiver{URL: rc.url(t), Secret: mustSecret(t)})
	s.Send(alert(apipool.AlertKeyDisabled, "k1"))
	await(t, rc.got, "the delivery")
	if err := s.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	rc.check(t)
	want := map[string]any{"type": "key.disabled", "timestamp": "2026-03-01T12:00:00Z", "data": map[string]any{
		"pool": "openai", "key_id": "k1", "until": "2026-03-01T12:01:00Z", "reason": "upstream answered 401 Unauthorized"}}
	if got := rc.accepted(); len(got) != 1 || !jsonEqual(got[0], want) {
		t.Fatalf("bodies %v, want %v", got, want)
	}

	wh, _ := standardwebhooks.NewWebhook(secret)
	body := []byte(`{"type":"key.disabled"}`)
	ts := time.Unix(1674087231, 0)
	libSig, err := wh.Sign("msg_2KWPBgLlAfxdpx2AI54pPJ85f4W", ts, body)
	if err != nil {
		t.Fatal(err)
	}
	if got := webhook.Sign(mustSecret(t), "msg_2KWPBgLlAfxdpx2AI54pPJ85f4W", ts.Unix(), body); got != libSig {
		t.Fatalf("Sign = %s, the library signs %s", got, libSig)
	}
}

func jsonEqual(a, b any) bool {
	ja, _ := json.Marshal(a)
	jb, _ := json.Marshal(b)
	return bytes.Equal(ja, jb)
}

// A receiver that fails the first attempts (a 500, a timeout, a 429, a
// redirect) gets every alert, in order, with the same webhook-id on every
// attempt of one alert; counted by id, each alert arrives exactly once.
func TestRetriedUntilDeliveredOnce(t *testing.T) {
	rc := newReceiver(t, func(n int, r *http.Request) int {
		switch n {
		case 1:
			return 500
		case 2:
			<-r.Context().Done() // hangs past the sender's timeout
			return 500
		case 3:
			return 429
		case 4:
			return http.StatusFound
		}
		return 200
	})
	// The timeout ends the hanging attempt; it is long enough that no
	// other attempt reaches it on a busy machine.
	s := newSender(t, nil, webhook.Receiver{URL: rc.url(t), Secret: mustSecret(t), Timeout: 5 * time.Second})
	kinds := []apipool.AlertKind{apipool.AlertKeyDisabled, apipool.AlertKeyCooling, apipool.AlertNoKey}
	for _, k := range kinds {
		s.Send(alert(k, "k1"))
	}
	for range kinds {
		await(t, rc.got, "a delivery")
	}
	if err := s.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	rc.check(t)
	var got []string
	for _, m := range rc.accepted() {
		got = append(got, m["type"].(string))
	}
	if want := []string{"key.disabled", "key.cooling", "pool.no_key"}; !slices.Equal(got, want) {
		t.Fatalf("accepted %q, want %q once each, in order", got, want)
	}
	rc.mu.Lock()
	first := rc.seen[rc.order[0]]
	rc.mu.Unlock()
	if first != 5 {
		t.Errorf("the first alert reached the receiver %d times under one webhook-id, want 5 (4 failures, then 200)", first)
	}
	if st := s.Stats(); st.Delivered != 3 || st.Retries != 4 || st.Failed != 0 || st.Dropped != 0 {
		t.Errorf("stats %+v", st)
	}
}

// A receiver takes only its kinds; another with none takes every kind.
func TestKindsFilter(t *testing.T) {
	only, all := newReceiver(t, nil), newReceiver(t, nil)
	s := newSender(t, nil,
		webhook.Receiver{URL: only.url(t), Secret: mustSecret(t), Kinds: []apipool.AlertKind{apipool.AlertKeyDisabled, apipool.AlertNoKey}},
		webhook.Receiver{URL: all.url(t), Secret: mustSecret(t)})
	for _, k := range []apipool.AlertKind{apipool.AlertKeyDisabled, apipool.AlertKeyEnabled, apipool.AlertNoKey, apipool.AlertBudgetSpent} {
		s.Send(alert(k, "k1"))
	}
	if err := s.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	types := func(rc *receiver) []string {
		var out []string
		for _, m := range rc.accepted() {
			out = append(out, m["type"].(string))
		}
		return out
	}
	if got := types(only); !slices.Equal(got, []string{"key.disabled", "pool.no_key"}) {
		t.Errorf("filtered receiver got %q", got)
	}
	if got := types(all); len(got) != 4 {
		t.Errorf("unfiltered receiver got %q", got)
	}
}

// A receiver that always fails is given up on after MaxAttempts; the log
// says so without the URL's path or query or the secret.
func TestGivesUp(t *testing.T) {
	rc := newReceiver(t, func(int, *http.Request) int { return 503 })
	var logs syncBuffer
	u := rc.url(t)
	u.RawQuery = "token=CANARY-query-token"
	s := newSender(t, &logs, webhook.Receiver{URL: u, Secret: mustSecret(t), MaxAttempts: 3})
	s.Send(alert(apipool.AlertKeyDisabled, "k1"))
	if err := s.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if st := s.Stats(); st.Failed != 1 || st.Retries != 2 || st.Delivered != 0 {
		t.Fatalf("stats %+v", st)
	}
	rc.mu.Lock()
	n := rc.attempts
	rc.mu.Unlock()
	if n != 3 {
		t.Fatalf("%d attempts, want 3", n)
	}
	out := logs.String()
	if !strings.Contains(out, "giving up") || !strings.Contains(out, "answered 503") || strings.Count(out, "retrying") != 2 {
		t.Fatalf("logs:\n%s", out)
	}
	noLeak(t, out)
}

// 410 Gone stops the receiver: what follows is dropped.
func TestGoneStopsTheReceiver(t *testing.T) {
	rc := newReceiver(t, func(int, *http.Request) int { return http.StatusGone })
	s := newSender(t, nil, webhook.Receiver{URL: rc.url(t), Secret: mustSecret(t)})
	s.Send(alert(apipool.AlertKeyDisabled, "k1"))
	if err := s.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	s2 := newSender(t, nil, webhook.Receiver{URL: rc.url(t), Secret: mustSecret(t)})
	s2.Send(alert(apipool.AlertKeyDisabled, "k1"))
	s2.Send(alert(apipool.AlertKeyEnabled, "k1"))
	s2.Close(context.Background())
	if st := s.Stats(); st.Failed != 1 || st.Retries != 0 {
		t.Errorf("stats %+v: want one failure, no retry", st)
	}
	if st := s2.Stats(); st.Failed != 1 || st.Dropped != 1 {
		t.Errorf("stats %+v: want the alert after 410 dropped", st)
	}
}

// Send never blocks: a receiver that holds its first delivery leaves
// room for QueueSize more; the rest are dropped and counted, and logged
// once.
func TestQueueFullDrops(t *testing.T) {
	release := make(chan struct{})
	arrived := make(chan struct{}, 10)
	rc := newReceiver(t, func(n int, r *http.Request) int {
		arrived <- struct{}{}
		if n == 1 {
			<-release
		}
		return 200
	})
	var logs syncBuffer
	s, err := webhook.New(webhook.Config{Receivers: []webhook.Receiver{{URL: rc.url(t), Secret: mustSecret(t)}}, QueueSize: 1,
		Logger: slog.New(slog.NewJSONHandler(&logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	s.Send(alert(apipool.AlertKeyDisabled, "k1"))
	await(t, arrived, "the first delivery")
	for range 3 {
		s.Send(alert(apipool.AlertKeyEnabled, "k1")) // one queued, two dropped
	}
	if st := s.Stats(); st.Dropped != 2 {
		t.Fatalf("stats %+v, want 2 dropped", st)
	}
	close(release)
	if err := s.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if st := s.Stats(); st.Delivered != 2 || st.Dropped != 2 {
		t.Fatalf("stats %+v", st)
	}
	if n := strings.Count(logs.String(), "queue full"); n != 1 {
		t.Fatalf("queue-full logged %d times, want once:\n%s", n, logs.String())
	}
	s.Send(alert(apipool.AlertKeyEnabled, "k1")) // after Close: dropped
	if st := s.Stats(); st.Dropped != 3 {
		t.Fatalf("stats after Close %+v", st)
	}
}

// When Close's context ends before the queue is delivered, the attempt in
// flight is cancelled and the rest dropped, counted, logged, and named in
// Close's error.
func TestCloseDeadline(t *testing.T) {
	arrived := make(chan struct{}, 10)
	rc := newReceiver(t, func(n int, r *http.Request) int {
		arrived <- struct{}{}
		<-r.Context().Done()
		return 500
	})
	var logs syncBuffer
	s, err := webhook.New(webhook.Config{Receivers: []webhook.Receiver{{URL: rc.url(t), Secret: mustSecret(t), Timeout: time.Hour}},
		Logger: slog.New(slog.NewJSONHandler(&logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	s.Send(alert(apipool.AlertKeyDisabled, "k1"))
	s.Send(alert(apipool.AlertKeyEnabled, "k1"))
	await(t, arrived, "the first delivery")
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	err = s.Close(ctx)
	if err == nil || !errors.Is(err, context.Canceled) || !strings.Contains(err.Error(), "2 alerts not delivered") {
		t.Fatalf("Close = %v", err)
	}
	if st := s.Stats(); st.Dropped != 2 || st.Delivered != 0 {
		t.Fatalf("stats %+v", st)
	}
	if !strings.Contains(logs.String(), "shutdown deadline") {
		t.Fatalf("logs:\n%s", logs.String())
	}
}

// Errors of an unreachable receiver are logged without its URL's path
// and query (a *url.Error prints them) and without the secret.
func TestNetworkErrorsHideTheURL(t *testing.T) {
	srv := httptest.NewServer(http.NotFoundHandler())
	u, _ := url.Parse(srv.URL + "/hooks/CANARY-path-token?sig=CANARY-query")
	srv.Close() // nothing listens there now
	var logs syncBuffer
	s := newSender(t, &logs, webhook.Receiver{Name: "ops", URL: u, Secret: mustSecret(t), MaxAttempts: 2})
	s.Send(alert(apipool.AlertKeyDisabled, "k1"))
	if err := s.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	out := logs.String()
	if !strings.Contains(out, `"receiver":"ops"`) || !strings.Contains(out, "connection refused") {
		t.Fatalf("logs:\n%s", out)
	}
	noLeak(t, out)
}

// noLeak fails when s shows the secret, its bytes, or a canary of the
// URL.
func noLeak(t *testing.T, s string) {
	t.Helper()
	for _, bad := range []string{"CANARY", secret, strings.TrimPrefix(secret, webhook.SecretPrefix), "hooks/"} {
		if strings.Contains(s, bad) {
			t.Errorf("LEAK of %q in:\n%s", bad, s)
		}
	}
}

func TestParseSecret(t *testing.T) {
	b, err := webhook.ParseSecret(secret)
	if err != nil || !bytes.Equal(b, secretBytes) {
		t.Fatalf("ParseSecret = %q, %v", b, err)
	}
	enc := func(n int) string {
		return webhook.SecretPrefix + base64.StdEncoding.EncodeToString(bytes.Repeat([]byte("C"), n))
	}
	for _, c := range []struct{ in, want string }{
		{strings.TrimPrefix(secret, webhook.SecretPrefix), "want a Standard Webhooks secret"},
		{"whsec_CANARY!!notbase64", "not standard base64"},
		{enc(23), "holds 23 bytes; want 24 to 64"},
		{enc(65), "holds 65 bytes"},
		{"", "want a Standard Webhooks secret"},
	} {
		_, err := webhook.ParseSecret(c.in)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("ParseSecret(%.10q...) = %v, want %q", c.in, err, c.want)
			continue
		}
		if c.in != "" && strings.Contains(err.Error(), c.in) || strings.Contains(err.Error(), "CANARY") || strings.Contains(err.Error(), "Q0ND") {
			t.Errorf("the error shows the secret: %v", err)
		}
	}
	for _, n := range []int{24, 64} {
		if _, err := webhook.ParseSecret(enc(n)); err != nil {
			t.Errorf("%d bytes: %v", n, err)
		}
	}
}

func TestNewRefusesBadReceivers(t *testing.T) {
	good, _ := url.Parse("https://hooks.example.com/x")
	ftp, _ := url.Parse("ftp://hooks.example.com/x")
	for i, r := range []webhook.Receiver{
		{URL: nil, Secret: secretBytes},
		{URL: ftp, Secret: secretBytes},
		{URL: good},
		{URL: good, Secret: secretBytes, Timeout: -1},
	} {
		if s, err := webhook.New(webhook.Config{Receivers: []webhook.Receiver{r}}); err == nil {
			s.Close(context.Background())
			t.Errorf("case %d: no error", i)
		} else if strings.Contains(err.Error(), "example.com") {
			t.Errorf("case %d: the error shows the URL: %v", i, err)
		}
	}
}

// The message id is msg_ and 32 hex digits (no '.', as the specification
// asks), new for each alert; the timestamp is the attempt's, in seconds.
func TestHeaders(t *testing.T) {
	var mu sync.Mutex
	var ids, stamps []string
	rc := newReceiver(t, func(_ int, r *http.Request) int {
		mu.Lock()
		ids = append(ids, r.Header.Get("webhook-id"))
		stamps = append(stamps, r.Header.Get("webhook-timestamp"))
		mu.Unlock()
		return 200
	})
	s := newSender(t, nil, webhook.Receiver{URL: rc.url(t), Secret: mustSecret(t)})
	before := time.Now().Unix()
	s.Send(alert(apipool.AlertKeyDisabled, "k1"))
	s.Send(alert(apipool.AlertKeyDisabled, "k1"))
	s.Close(context.Background())
	after := time.Now().Unix()
	mu.Lock()
	defer mu.Unlock()
	if len(ids) != 2 || ids[0] == ids[1] {
		t.Fatalf("ids %q: want two different", ids)
	}
	for i, id := range ids {
		hexPart, ok := strings.CutPrefix(id, "msg_")
		if !ok || len(hexPart) != 32 || strings.Trim(hexPart, "0123456789abcdef") != "" {
			t.Errorf("id %q", id)
		}
		ts, err := strconv.ParseInt(stamps[i], 10, 64)
		if err != nil || ts < before || ts > after {
			t.Errorf("timestamp %q, want between %d and %d", stamps[i], before, after)
		}
	}
}

// syncBuffer is a bytes.Buffer safe for a logger's concurrent writes.
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
