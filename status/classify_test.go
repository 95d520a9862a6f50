package status

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/apipool-ng/apipool/errdefs"
)

func resp(code int) *http.Response {
	return &http.Response{StatusCode: code, Header: http.Header{}}
}

func TestClassifyCodes(t *testing.T) {
	custom, err := NewClassifier(Config{RateLimitCodes: []int{429, 403, 402}, InvalidKeyCodes: []int{401, 403}})
	if err != nil {
		t.Fatal(err)
	}
	noLimits, err := NewClassifier(Config{RateLimitCodes: []int{}, InvalidKeyCodes: []int{}})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		code                  int
		def, custom, noLimits Status
	}{
		{100, Success, Success, Success},
		{101, Success, Success, Success},
		{200, Success, Success, Success},
		{204, Success, Success, Success},
		{304, Success, Success, Success},
		{399, Success, Success, Success},
		{400, ClientError, ClientError, ClientError},
		{401, InvalidKey, InvalidKey, ClientError},
		{402, ClientError, ReachLimit, ClientError},
		// 403: a client error by default (without rate-limit evidence);
		// in both lists it counts as a rate limit.
		{403, ClientError, ReachLimit, ClientError},
		{404, ClientError, ClientError, ClientError},
		{429, ReachLimit, ReachLimit, ClientError},
		{499, ClientError, ClientError, ClientError},
		{500, ServerError, ServerError, ServerError},
		{503, ServerError, ServerError, ServerError},
		{599, ServerError, ServerError, ServerError},
		// Codes outside 100..599 are not HTTP.
		{0, Failed, Failed, Failed},
		{99, Failed, Failed, Failed},
		{600, Failed, Failed, Failed},
		{-1, Failed, Failed, Failed},
		{1 << 30, Failed, Failed, Failed},
	} {
		for _, cl := range []struct {
			name string
			c    *Classifier
			want Status
		}{{"default", Default(), c.def}, {"custom", custom, c.custom}, {"no limit codes", noLimits, c.noLimits}} {
			if got := cl.c.Classify(resp(c.code), nil); got != cl.want {
				t.Errorf("%s: Classify(%d) = %v, want %v", cl.name, c.code, got, cl.want)
			}
		}
	}
	if a, b := Default(), Default(); a != b {
		t.Error("Default() returns a new classifier each time")
	}
	zero, err := NewClassifier(Config{})
	if err != nil || zero.Classify(resp(429), nil) != ReachLimit || zero.Classify(resp(403), nil) != ClientError {
		t.Errorf("NewClassifier(Config{}) is not the default: %v", err)
	}
}

// A 403 is a rate limit when it carries rate-limit evidence (GitHub's
// x-ratelimit-remaining: 0 with its reset, or a Retry-After), else a
// client error; EvidenceCodes changes which codes are read so.
func TestClassify403Evidence(t *testing.T) {
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	with := func(kv ...string) *http.Response {
		r := resp(403)
		for i := 0; i < len(kv); i += 2 {
			r.Header.Set(kv[i], kv[i+1])
		}
		return r
	}
	reset := strconv.FormatInt(now.Add(time.Hour).Unix(), 10)
	off, err := NewClassifier(Config{EvidenceCodes: []int{}})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name     string
		resp     *http.Response
		def, off Status
	}{
		{"plain", with(), ClientError, ClientError},
		{"github used up", with("X-Ratelimit-Remaining", "0", "X-Ratelimit-Reset", reset), ReachLimit, ClientError},
		{"github some left", with("X-Ratelimit-Remaining", "12", "X-Ratelimit-Reset", reset), ClientError, ClientError},
		{"retry-after", with("Retry-After", "30"), ReachLimit, ClientError},
		{"garbage retry-after", with("Retry-After", "soon"), ClientError, ClientError},
	} {
		if got := Default().ClassifyAt(c.resp, nil, now); got != c.def {
			t.Errorf("%s: default = %v, want %v", c.name, got, c.def)
		}
		if got := off.ClassifyAt(c.resp, nil, now); got != c.off {
			t.Errorf("%s: EvidenceCodes off = %v, want %v", c.name, got, c.off)
		}
	}
	if _, err := NewClassifier(Config{EvidenceCodes: []int{700}}); err == nil {
		t.Error("EvidenceCodes 700 accepted")
	}
}

func TestClassifyHook(t *testing.T) {
	cl, err := NewClassifier(Config{Hook: func(r *http.Response) (Status, bool) {
		switch r.Header.Get("X-Verdict") {
		case "limit":
			return ReachLimit, true
		case "invalid":
			return Status(200), true // not a status: ignored
		case "unknown":
			return Unknown, true // not valid either
		case "pass":
			return Timeout, false // ok false: ignored
		}
		if r.StatusCode == 200 {
			return InvalidKey, true
		}
		return Success, false
	}})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		code    int
		verdict string
		want    Status
	}{
		{500, "limit", ReachLimit},
		{200, "", InvalidKey},
		{500, "invalid", ServerError},
		{429, "unknown", ReachLimit},
		{200, "pass", Success},
		{404, "pass", ClientError},
		{404, "", ClientError},
	} {
		r := resp(c.code)
		r.Header.Set("X-Verdict", c.verdict)
		if got := cl.Classify(r, nil); got != c.want {
			t.Errorf("Classify(%d, verdict %q) = %v, want %v", c.code, c.verdict, got, c.want)
		}
	}
	// An error wins over the hook and the response.
	if got := cl.Classify(resp(200), context.Canceled); got != Canceled {
		t.Errorf("Classify(200, Canceled) = %v, want Canceled", got)
	}
	// No response and no error.
	if got := cl.Classify(nil, nil); got != NetworkError {
		t.Errorf("Classify(nil, nil) = %v, want NetworkError", got)
	}
}

func TestConfigErrors(t *testing.T) {
	for _, c := range []struct {
		cfg   Config
		field string
	}{
		{Config{InvalidKeyCodes: []int{401, 99}}, "InvalidKeyCodes[1]"},
		{Config{InvalidKeyCodes: []int{600}}, "InvalidKeyCodes[0]"},
		{Config{InvalidKeyCodes: []int{-401}}, "InvalidKeyCodes[0]"},
		{Config{RateLimitCodes: []int{0}}, "RateLimitCodes[0]"},
		{Config{RateLimitCodes: []int{429, 403, 1000}}, "RateLimitCodes[2]"},
	} {
		cl, err := NewClassifier(c.cfg)
		var ce *ConfigError
		if !errors.As(err, &ce) {
			t.Errorf("NewClassifier(%+v) = %v, %v; want a *ConfigError", c.cfg, cl, err)
			continue
		}
		if cl != nil {
			t.Errorf("NewClassifier(%+v) returned a classifier with its error", c.cfg)
		}
		if ce.Field != c.field || ce.Reason == "" {
			t.Errorf("NewClassifier(%+v): %#v, want field %q and a reason", c.cfg, ce, c.field)
		}
		if want := "apipool: invalid configuration: status.Config." + ce.Field + ": " + ce.Reason; err.Error() != want {
			t.Errorf("Error() = %q, want %q", err.Error(), want)
		}
		if !errors.Is(err, errdefs.ErrInvalidConfig) {
			t.Errorf("NewClassifier(%+v): %v does not match errdefs.ErrInvalidConfig", c.cfg, err)
		}
	}
	for _, codes := range [][]int{{100}, {599}, {100, 599}} {
		if _, err := NewClassifier(Config{InvalidKeyCodes: codes, RateLimitCodes: codes}); err != nil {
			t.Errorf("codes %v: %v", codes, err)
		}
	}
}

// netErr is a net.Error.
type netErr struct{ timeout bool }

func (e netErr) Error() string   { return fmt.Sprintf("net error, timeout %v", e.timeout) }
func (e netErr) Timeout() bool   { return e.timeout }
func (e netErr) Temporary() bool { return false }

func TestClassifyError(t *testing.T) {
	for _, c := range []struct {
		name string
		err  error
		want Status
	}{
		{"nil", nil, Success},
		{"canceled", context.Canceled, Canceled},
		{"wrapped canceled", fmt.Errorf("get: %w", context.Canceled), Canceled},
		{"canceled in a url.Error", &url.Error{Op: "Get", URL: "http://x", Err: context.Canceled}, Canceled},
		{"deadline", context.DeadlineExceeded, Timeout},
		{"wrapped deadline", fmt.Errorf("get: %w", context.DeadlineExceeded), Timeout},
		{"canceled and deadline", errors.Join(context.DeadlineExceeded, context.Canceled), Canceled},
		{"net.Error with timeout", netErr{timeout: true}, Timeout},
		{"wrapped net.Error with timeout", &url.Error{Op: "Get", URL: "http://x", Err: netErr{timeout: true}}, Timeout},
		{"os deadline", os.ErrDeadlineExceeded, Timeout},
		{"net.Error without timeout", netErr{}, NetworkError},
		{"connection refused", &net.OpError{Op: "dial", Net: "tcp", Err: syscall.ECONNREFUSED}, NetworkError},
		{"unexpected EOF", io.ErrUnexpectedEOF, NetworkError},
		{"plain", errors.New("boom"), NetworkError},
	} {
		if got := ClassifyError(c.err); got != c.want {
			t.Errorf("ClassifyError(%s) = %v, want %v", c.name, got, c.want)
		}
		if c.err != nil {
			if got := Default().Classify(resp(200), c.err); got != c.want {
				t.Errorf("Classify(200, %s) = %v, want %v", c.name, got, c.want)
			}
		}
	}
}
