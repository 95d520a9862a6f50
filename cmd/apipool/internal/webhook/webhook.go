// Package webhook sends the apipool command's alerts (apipool.Alert) to
// HTTP receivers, signed as the Standard Webhooks specification says
// (https://www.standardwebhooks.com/), so that a receiver can check them
// with that project's libraries. The proxy (package proxy) is its one
// user.
//
// Each alert is one JSON message, POSTed to every receiver whose kinds
// take it:
//
//	{"type":"key.disabled","timestamp":"2026-03-01T12:00:00Z",
//	 "data":{"pool":"openai","key_id":"k1","until":"2026-03-01T12:01:00Z","reason":"upstream answered 401 Unauthorized"}}
//
// with the headers webhook-id (msg_ and 32 hex digits, the same on every
// attempt: receivers deduplicate by it), webhook-timestamp (the attempt's
// time, in Unix seconds) and webhook-signature ("v1," and the base64 of
// the HMAC-SHA256, keyed with the receiver's secret, of the id, the
// timestamp and the body joined by dots).
//
// Delivery never blocks the caller of Send: each receiver has a bounded
// queue and a goroutine that delivers its messages in order, retrying a
// failed attempt (a network error, a timeout, any answer but 2xx) with an
// exponential backoff, up to a number of attempts. A 410 Gone stops the
// receiver: its later messages are dropped. Messages dropped (queue full,
// receiver gone, Send after Close, not delivered when Close's context
// ended) and given up are counted (Stats) and logged.
//
// Logs and errors name a receiver by its name and its URL's host only: a
// URL's path or query may hold a token (chat webhooks put one there). The
// secret is never logged.
package webhook

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	mrand "math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/apipool-ng/apipool"
	"github.com/apipool-ng/apipool/clock"
)

// Defaults of Receiver and Config.
const (
	DefaultTimeout     = 15 * time.Second // the specification recommends 15 to 30 s
	DefaultMaxAttempts = 8
	DefaultQueueSize   = 1000
	DefaultBackoffMin  = time.Second
	DefaultBackoffMax  = time.Minute
)

// Bounds of a signing secret's length, decoded: the specification asks
// for 24 to 64 bytes (192 to 512 bits).
const (
	MinSecretBytes = 24
	MaxSecretBytes = 64
)

// SecretPrefix starts a Standard Webhooks symmetric secret.
const SecretPrefix = "whsec_"

// ParseSecret reads a Standard Webhooks symmetric secret: "whsec_" and
// the standard base64 of 24 to 64 bytes. It returns the bytes to key the
// HMAC with. Its errors never show the secret.
func ParseSecret(s string) ([]byte, error) {
	rest, ok := strings.CutPrefix(s, SecretPrefix)
	if !ok {
		return nil, errors.New("want a Standard Webhooks secret: whsec_ followed by base64 (the value is not shown)")
	}
	b, err := base64.StdEncoding.DecodeString(rest)
	if err != nil {
		return nil, errors.New("the part after whsec_ is not standard base64 (the value is not shown)")
	}
	if len(b) < MinSecretBytes || len(b) > MaxSecretBytes {
		return nil, fmt.Errorf("the secret holds %d bytes; want %d to %d random bytes, base64-encoded after whsec_", len(b), MinSecretBytes, MaxSecretBytes)
	}
	return b, nil
}

// Receiver is one endpoint that takes alerts.
type Receiver struct {
	// Name names the receiver in logs; "" names it by its URL's host.
	Name string
	// URL is where the messages are POSTed. Only its host is ever logged.
	URL *url.URL
	// Secret keys the signatures: a Standard Webhooks secret decoded
	// (ParseSecret).
	Secret []byte
	// Kinds are the alerts the receiver takes; none: every kind.
	Kinds []apipool.AlertKind
	// Timeout bounds each attempt (default DefaultTimeout).
	Timeout time.Duration
	// MaxAttempts bounds the attempts of one message (default
	// DefaultMaxAttempts).
	MaxAttempts int
}

// Config is a Sender's settings. A zero field means its default.
type Config struct {
	Receivers []Receiver
	// QueueSize bounds each receiver's messages waiting (default
	// DefaultQueueSize); a message that finds the queue full is dropped.
	QueueSize int
	// BackoffMin and BackoffMax bound the wait before a retry: BackoffMin
	// doubling with each attempt, up to BackoffMax, less a random part of
	// up to a half; a longer Retry-After of the receiver's is followed, up
	// to BackoffMax. The waits follow the system clock.
	BackoffMin, BackoffMax time.Duration
	// Transport sends the requests (default: a transport of the
	// package's own, with the proxy settings of the environment).
	// Redirects are not followed: a 3xx is a failed attempt.
	Transport http.RoundTripper
	// Logger receives the log of deliveries that failed (nil: none).
	Logger *slog.Logger
	// Clock dates each attempt's webhook-timestamp (default
	// clock.System{}).
	Clock clock.Clock
}

// Stats counts a Sender's messages, over all its receivers.
type Stats struct {
	// Delivered: answered 2xx. Retries: attempts after a message's
	// first. Failed: given up after MaxAttempts, or answered 410 Gone.
	// Dropped: not sent at all (queue full, receiver gone, sent after
	// Close, or still queued or retrying when Close's context ended).
	Delivered, Retries, Failed, Dropped uint64
}

// Sender delivers alerts to receivers. Create it with New; it is safe for
// concurrent use.
type Sender struct {
	cfg     Config
	client  *http.Client
	log     *slog.Logger
	workers []*worker

	mu     sync.Mutex // serialises Send's enqueues with Close
	closed bool
	ctx    context.Context // cancelled when Close's context ends
	cancel context.CancelFunc
	wg     sync.WaitGroup

	delivered, retries, failed, dropped atomic.Uint64
}

type worker struct {
	s     *Sender
	r     Receiver
	name  string
	kinds map[apipool.AlertKind]bool // nil: every kind
	q     chan *message
	gone  atomic.Bool // answered 410 Gone
	full  atomic.Bool // the queue was full at the last Send: logged once a run
}

// message is one alert, ready to sign: its id and body are the same for
// every receiver and attempt.
type message struct {
	id   string
	kind apipool.AlertKind
	body []byte
}

// New checks cfg and starts a goroutine per receiver. Its errors never
// show a receiver's URL or secret.
func New(cfg Config) (*Sender, error) {
	if cfg.QueueSize < 0 || cfg.BackoffMin < 0 || cfg.BackoffMax < 0 {
		return nil, errors.New("webhook: negative queue size or backoff")
	}
	if cfg.QueueSize == 0 {
		cfg.QueueSize = DefaultQueueSize
	}
	if cfg.BackoffMin == 0 {
		cfg.BackoffMin = DefaultBackoffMin
	}
	if cfg.BackoffMax == 0 {
		cfg.BackoffMax = DefaultBackoffMax
	}
	cfg.BackoffMax = max(cfg.BackoffMax, cfg.BackoffMin)
	if cfg.Clock == nil {
		cfg.Clock = clock.System{}
	}
	s := &Sender{cfg: cfg, log: cfg.Logger}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	tr := cfg.Transport
	if tr == nil {
		tr = http.DefaultTransport.(*http.Transport).Clone()
	}
	s.client = &http.Client{Transport: tr, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	for i, r := range cfg.Receivers {
		switch {
		case r.URL == nil || (r.URL.Scheme != "http" && r.URL.Scheme != "https") || r.URL.Host == "":
			return nil, fmt.Errorf("webhook: receiver %d: want an http or https URL with a host", i)
		case len(r.Secret) == 0:
			return nil, fmt.Errorf("webhook: receiver %d: no secret", i)
		case r.Timeout < 0 || r.MaxAttempts < 0:
			return nil, fmt.Errorf("webhook: receiver %d: negative timeout or attempts", i)
		}
		if r.Timeout == 0 {
			r.Timeout = DefaultTimeout
		}
		if r.MaxAttempts == 0 {
			r.MaxAttempts = DefaultMaxAttempts
		}
		w := &worker{s: s, r: r, name: r.Name, q: make(chan *message, cfg.QueueSize)}
		if w.name == "" {
			w.name = r.URL.Host
		}
		if len(r.Kinds) > 0 {
			w.kinds = map[apipool.AlertKind]bool{}
			for _, k := range r.Kinds {
				w.kinds[k] = true
			}
		}
		s.workers = append(s.workers, w)
	}
	for _, w := range s.workers {
		s.wg.Add(1)
		go w.loop()
	}
	return s, nil
}

// payload is a message's body, as the specification suggests: type,
// timestamp (of the event) and data. Times are RFC 3339 strings in UTC,
// written here (time.Time's own MarshalJSON fails past year 9999).
type payload struct {
	Type      string `json:"type"`
	Timestamp string `json:"timestamp"`
	Data      data   `json:"data"`
}

type data struct {
	Pool   string `json:"pool,omitempty"`
	KeyID  string `json:"key_id,omitempty"`
	Client string `json:"client,omitempty"`
	Until  string `json:"until,omitempty"`
	Reason string `json:"reason,omitempty"`
}

// Body returns the JSON body of a's message.
func Body(a apipool.Alert) []byte {
	p := payload{Type: a.Kind.String(), Timestamp: a.Time.UTC().Format(time.RFC3339Nano),
		Data: data{Pool: a.Pool, KeyID: a.KeyID, Client: a.Client, Reason: a.Reason}}
	if !a.Until.IsZero() {
		p.Data.Until = a.Until.UTC().Format(time.RFC3339Nano)
	}
	b, _ := json.Marshal(p) // strings only: it cannot fail
	return b
}

// newID returns a message id: "msg_" and 32 hex digits, with no '.', as
// the specification asks.
func newID() string {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic("webhook: no randomness: " + err.Error())
	}
	return "msg_" + hex.EncodeToString(b[:])
}

// Sign returns the webhook-signature value of a message: "v1," and the
// base64 of HMAC-SHA256(secret, id "." timestamp "." body).
func Sign(secret []byte, id string, timestamp int64, body []byte) string {
	h := hmac.New(sha256.New, secret)
	h.Write([]byte(id))
	h.Write([]byte{'.'})
	h.Write(strconv.AppendInt(nil, timestamp, 10))
	h.Write([]byte{'.'})
	h.Write(body)
	return "v1," + base64.StdEncoding.EncodeToString(h.Sum(nil))
}

// Send queues a for every receiver that takes its kind, without
// blocking. A receiver whose queue is full drops it (counted, and logged
// once until its queue takes messages again).
func (s *Sender) Send(a apipool.Alert) {
	var m *message
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, w := range s.workers {
		if w.kinds != nil && !w.kinds[a.Kind] {
			continue
		}
		if s.closed || w.gone.Load() {
			s.dropped.Add(1)
			continue
		}
		if m == nil {
			m = &message{id: newID(), kind: a.Kind, body: Body(a)}
		}
		select {
		case w.q <- m:
			w.full.Store(false)
		default:
			s.dropped.Add(1)
			if !w.full.Swap(true) {
				s.log.Warn("webhook queue full; dropping alerts until it drains", "receiver", w.name, "queue", cap(w.q))
			}
		}
	}
}

// Close stops taking alerts and delivers those queued, retries included,
// within ctx. When ctx ends first, the attempts in flight are cancelled,
// and what was not delivered is dropped, counted and logged; Close then
// returns an error that says how many.
func (s *Sender) Close(ctx context.Context) error {
	s.mu.Lock()
	if !s.closed {
		s.closed = true
		for _, w := range s.workers {
			close(w.q)
		}
	}
	s.mu.Unlock()
	done := make(chan struct{})
	go func() { s.wg.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
	}
	before := s.dropped.Load()
	s.cancel()
	<-done // the workers end at once: every wait and request watches s.ctx
	lost := s.dropped.Load() - before
	s.log.Error("webhook: shutdown deadline reached; alerts not delivered", "alerts", lost)
	return fmt.Errorf("webhook: %d alerts not delivered before the deadline: %w", lost, ctx.Err())
}

// Stats counts the messages so far.
func (s *Sender) Stats() Stats {
	return Stats{Delivered: s.delivered.Load(), Retries: s.retries.Load(), Failed: s.failed.Load(), Dropped: s.dropped.Load()}
}

func (w *worker) loop() {
	defer w.s.wg.Done()
	for m := range w.q {
		if w.s.ctx.Err() != nil || w.gone.Load() {
			w.s.dropped.Add(1)
			continue
		}
		w.deliver(m)
	}
}

// deliver sends m until an attempt succeeds, the receiver is gone, the
// attempts run out, or the Sender's context ends.
func (w *worker) deliver(m *message) {
	s := w.s
	for attempt := 1; ; attempt++ {
		if attempt > 1 {
			s.retries.Add(1)
		}
		code, retryAfter, err := w.post(m)
		switch {
		case err == nil && code >= 200 && code < 300:
			s.delivered.Add(1)
			return
		case s.ctx.Err() != nil:
			s.dropped.Add(1)
			return
		case code == http.StatusGone:
			w.gone.Store(true)
			s.failed.Add(1)
			s.log.Error("webhook receiver answered 410 Gone: no more alerts are sent to it until restart", "receiver", w.name, "webhook_id", m.id, "kind", m.kind.String())
			return
		}
		why := describe(err, code)
		if attempt >= w.r.MaxAttempts {
			s.failed.Add(1)
			s.log.Error("webhook not delivered; giving up", "receiver", w.name, "webhook_id", m.id, "kind", m.kind.String(), "attempts", attempt, "error", why)
			return
		}
		d := s.backoff(attempt, retryAfter)
		s.log.Warn("webhook attempt failed; retrying", "receiver", w.name, "webhook_id", m.id, "kind", m.kind.String(), "attempt", attempt, "retry_in", d.String(), "error", why)
		t := time.NewTimer(d)
		select {
		case <-t.C:
		case <-s.ctx.Done():
			t.Stop()
			s.dropped.Add(1)
			return
		}
	}
}

// post makes one attempt: the answer's status code and Retry-After, or
// the error.
func (w *worker) post(m *message) (int, time.Duration, error) {
	ctx, cancel := context.WithTimeout(w.s.ctx, w.r.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, w.r.URL.String(), bytes.NewReader(m.body))
	if err != nil {
		return 0, 0, err
	}
	ts := w.s.cfg.Clock.Now().Unix()
	req.Header["Content-Type"] = []string{"application/json"}
	req.Header["User-Agent"] = []string{"apipool-webhook"}
	// The specification's header names are lower case: set as written.
	req.Header["webhook-id"] = []string{m.id}
	req.Header["webhook-timestamp"] = []string{strconv.FormatInt(ts, 10)}
	req.Header["webhook-signature"] = []string{Sign(w.r.Secret, m.id, ts, m.body)}
	resp, err := w.s.client.Do(req)
	if err != nil {
		return 0, 0, err
	}
	defer resp.Body.Close()
	io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	var ra time.Duration
	if v := resp.Header.Get("Retry-After"); v != "" {
		if n, err := strconv.Atoi(v); err == nil && n > 0 {
			ra = time.Duration(n) * time.Second
		} else if t, err := http.ParseTime(v); err == nil {
			ra = time.Until(t)
		}
	}
	return resp.StatusCode, ra, nil
}

// backoff is the wait before attempt+1.
func (s *Sender) backoff(attempt int, retryAfter time.Duration) time.Duration {
	d := s.cfg.BackoffMin << min(attempt-1, 30)
	if d <= 0 || d > s.cfg.BackoffMax {
		d = s.cfg.BackoffMax
	}
	if half := int64(d / 2); half > 0 {
		d -= time.Duration(mrand.Int64N(half + 1))
	}
	if retryAfter > d {
		d = min(retryAfter, s.cfg.BackoffMax)
	}
	return d
}

// describe says why an attempt failed, without the URL (a *url.Error
// prints it whole, path and query included).
func describe(err error, code int) string {
	if err == nil {
		return "answered " + strconv.Itoa(code) + " " + http.StatusText(code)
	}
	var ue *url.Error
	if errors.As(err, &ue) {
		err = ue.Err
	}
	var ne net.Error
	if errors.Is(err, context.DeadlineExceeded) || errors.As(err, &ne) && ne.Timeout() {
		return "timed out"
	}
	return err.Error()
}
