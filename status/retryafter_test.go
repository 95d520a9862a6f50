package status

import (
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"
)

var raNow = time.Date(2026, 1, 2, 3, 0, 0, 0, time.UTC)

const hundredYears = 100 * 365 * 24 * time.Hour

func TestParseRetryAfter(t *testing.T) {
	for _, c := range []struct {
		in   string
		want time.Duration
		ok   bool
	}{
		{"120", 120 * time.Second, true},
		{" 120 \t", 120 * time.Second, true},
		{"0", 0, true},
		{"00042", 42 * time.Second, true},
		{"999999", 999999 * time.Second, true},
		// An HTTP date, in its three formats, relative to now.
		{raNow.Add(90 * time.Second).Format(http.TimeFormat), 90 * time.Second, true},
		{"Friday, 02-Jan-26 03:01:30 GMT", 90 * time.Second, true},
		{"Fri Jan  2 03:01:30 2026", 90 * time.Second, true},
		{raNow.Format(http.TimeFormat), 0, true},
		// A date in the past is no wait.
		{raNow.Add(-time.Hour).Format(http.TimeFormat), 0, true},
		{"Fri, 31 Dec 1999 23:59:59 GMT", 0, true},
		// Huge values clamp to a hundred years.
		{"3153600000", hundredYears, true},
		{"3153600001", hundredYears, true},
		{"18446744073709551615", hundredYears, true},
		{"99999999999999999999999999999", hundredYears, true},
		{"Fri, 31 Dec 9999 23:59:59 GMT", hundredYears, true},
		// Garbage.
		{"", 0, false},
		{"   ", 0, false},
		{"-5", 0, false},
		{"+5", 0, false},
		{"1.5", 0, false},
		{"1e3", 0, false},
		{"5s", 0, false},
		{"0x10", 0, false},
		{"soon", 0, false},
		{"Fri, 32 Dec 2026 00:00:00 GMT", 0, false},
	} {
		got, ok := ParseRetryAfter(c.in, raNow)
		if got != c.want || ok != c.ok {
			t.Errorf("ParseRetryAfter(%q) = %v, %v; want %v, %v", c.in, got, ok, c.want, c.ok)
		}
	}
}

func TestRetryAfterHeaders(t *testing.T) {
	unix := func(d time.Duration) string { return strconv.FormatInt(raNow.Add(d).Unix(), 10) }
	for _, c := range []struct {
		name string
		h    map[string]string
		want time.Duration
		ok   bool
	}{
		{"none", nil, 0, false},
		{"unrelated", map[string]string{"Content-Type": "text/plain"}, 0, false},
		{"Retry-After seconds", map[string]string{"Retry-After": "120"}, 120 * time.Second, true},
		{"Retry-After date", map[string]string{"Retry-After": raNow.Add(time.Minute).Format(http.TimeFormat)}, time.Minute, true},
		{"Retry-After past date", map[string]string{"Retry-After": raNow.Add(-time.Minute).Format(http.TimeFormat)}, 0, true},
		{"Retry-After garbage", map[string]string{"Retry-After": "later"}, 0, false},
		{"retry-after-ms", map[string]string{"Retry-After-Ms": "1500"}, 1500 * time.Millisecond, true},
		{"retry-after-ms fraction", map[string]string{"Retry-After-Ms": "1.5"}, 1500 * time.Microsecond, true},
		{"retry-after-ms zero", map[string]string{"Retry-After-Ms": "0"}, 0, true},
		{"retry-after-ms wins", map[string]string{"Retry-After-Ms": "20", "Retry-After": "120"}, 20 * time.Millisecond, true},
		{"retry-after-ms negative, falls back", map[string]string{"Retry-After-Ms": "-20", "Retry-After": "3"}, 3 * time.Second, true},
		{"retry-after-ms NaN, falls back", map[string]string{"Retry-After-Ms": "NaN", "Retry-After": "3"}, 3 * time.Second, true},
		{"retry-after-ms huge", map[string]string{"Retry-After-Ms": "1e300"}, hundredYears, true},
		{"retry-after-ms garbage", map[string]string{"Retry-After-Ms": "soon"}, 0, false},
		{"reset-requests 6m0s", map[string]string{"X-Ratelimit-Reset-Requests": "6m0s"}, 6 * time.Minute, true},
		{"reset-requests 20ms", map[string]string{"X-Ratelimit-Reset-Requests": "20ms"}, 20 * time.Millisecond, true},
		{"reset-requests 1m30.5s", map[string]string{"X-Ratelimit-Reset-Requests": "1m30.5s"}, 90500 * time.Millisecond, true},
		{"reset-requests seconds", map[string]string{"X-Ratelimit-Reset-Requests": "2"}, 2 * time.Second, true},
		{"reset-requests fraction", map[string]string{"X-Ratelimit-Reset-Requests": "0.25"}, 250 * time.Millisecond, true},
		{"reset-requests negative", map[string]string{"X-Ratelimit-Reset-Requests": "-1s"}, 0, false},
		{"reset-requests garbage", map[string]string{"X-Ratelimit-Reset-Requests": "1 minute"}, 0, false},
		{"reset-requests huge", map[string]string{"X-Ratelimit-Reset-Requests": "1e300"}, hundredYears, true},
		{"reset-requests 200 years", map[string]string{"X-Ratelimit-Reset-Requests": "1752000h"}, hundredYears, true},
		{"reset-tokens", map[string]string{"X-Ratelimit-Reset-Tokens": "1s"}, time.Second, true},
		{"the later reset wins", map[string]string{"X-Ratelimit-Reset-Requests": "1s", "X-Ratelimit-Reset-Tokens": "6m0s"}, 6 * time.Minute, true},
		{"the later reset wins, other order", map[string]string{"X-Ratelimit-Reset-Requests": "6m0s", "X-Ratelimit-Reset-Tokens": "1s"}, 6 * time.Minute, true},
		{"a bad reset is skipped", map[string]string{"X-Ratelimit-Reset-Requests": "6m0s", "X-Ratelimit-Reset-Tokens": "x"}, 6 * time.Minute, true},
		{"Retry-After before resets", map[string]string{"Retry-After": "7", "X-Ratelimit-Reset-Requests": "6m0s"}, 7 * time.Second, true},
		{"bad Retry-After, then resets", map[string]string{"Retry-After": "x", "X-Ratelimit-Reset-Requests": "6m0s"}, 6 * time.Minute, true},
		{"x-ratelimit-reset delta", map[string]string{"X-Ratelimit-Reset": "30"}, 30 * time.Second, true},
		{"x-ratelimit-reset delta fraction", map[string]string{"X-Ratelimit-Reset": "1.5"}, 1500 * time.Millisecond, true},
		{"x-ratelimit-reset Unix time", map[string]string{"X-Ratelimit-Reset": unix(45 * time.Second)}, 45 * time.Second, true},
		{"x-ratelimit-reset Unix time with fraction", map[string]string{"X-Ratelimit-Reset": unix(45*time.Second) + ".5"}, 45500 * time.Millisecond, true},
		{"x-ratelimit-reset Unix time past", map[string]string{"X-Ratelimit-Reset": unix(-time.Hour)}, 0, true},
		{"x-ratelimit-reset 1e9 is a delta", map[string]string{"X-Ratelimit-Reset": "1000000000"}, 1e9 * time.Second, true},
		{"x-ratelimit-reset huge delta", map[string]string{"X-Ratelimit-Reset": "100000000000"}, hundredYears, true},
		{"x-ratelimit-reset 1e300", map[string]string{"X-Ratelimit-Reset": "1e300"}, hundredYears, true},
		{"x-ratelimit-reset negative", map[string]string{"X-Ratelimit-Reset": "-30"}, 0, false},
		{"x-ratelimit-reset garbage", map[string]string{"X-Ratelimit-Reset": "tomorrow"}, 0, false},
		{"ratelimit-reset", map[string]string{"Ratelimit-Reset": "10"}, 10 * time.Second, true},
		{"x-ratelimit-reset before ratelimit-reset", map[string]string{"X-Ratelimit-Reset": "5", "Ratelimit-Reset": "10"}, 5 * time.Second, true},
		{"bad x-ratelimit-reset, then ratelimit-reset", map[string]string{"X-Ratelimit-Reset": "x", "Ratelimit-Reset": "10"}, 10 * time.Second, true},
		{"resets before x-ratelimit-reset", map[string]string{"X-Ratelimit-Reset-Tokens": "2s", "X-Ratelimit-Reset": "5"}, 2 * time.Second, true},
		{"spaces", map[string]string{"Retry-After": "  9  "}, 9 * time.Second, true},
	} {
		h := http.Header{}
		for k, v := range c.h {
			h.Set(k, v)
		}
		got, ok := RetryAfter(h, raNow)
		if got != c.want || ok != c.ok {
			t.Errorf("%s: RetryAfter(%v) = %v, %v; want %v, %v", c.name, h, got, ok, c.want, c.ok)
		}
	}
	// Only the first value of a header counts.
	h := http.Header{}
	h.Add("Retry-After", "4")
	h.Add("Retry-After", "400")
	if got, ok := RetryAfter(h, raNow); got != 4*time.Second || !ok {
		t.Errorf("RetryAfter(two values) = %v, %v; want 4s", got, ok)
	}
	// A nil header.
	if got, ok := RetryAfter(nil, raNow); got != 0 || ok {
		t.Errorf("RetryAfter(nil) = %v, %v", got, ok)
	}
}

// checkWait asserts the bounds every parsed wait keeps.
func checkWait(t *testing.T, what string, d time.Duration, ok bool) {
	t.Helper()
	if d < 0 || d > hundredYears {
		t.Fatalf("%s = %v, out of [0, 100 years]", what, d)
	}
	if !ok && d != 0 {
		t.Fatalf("%s = %v with false", what, d)
	}
}

// digitsSeconds returns the value of a string of ASCII digits, if it is
// below 1e6.
func digitsSeconds(v string) (time.Duration, bool) {
	if v == "" || strings.Trim(v, "0123456789") != "" {
		return 0, false
	}
	v = strings.TrimLeft(v, "0")
	if len(v) > 6 {
		return 0, false
	}
	n := 0
	for _, c := range v {
		n = n*10 + int(c-'0')
	}
	return time.Duration(n) * time.Second, true
}

func FuzzParseRetryAfter(f *testing.F) {
	for _, s := range []string{"120", "0", "00042", "-1", "1.5", "", " 7 ", "99999999999999999999",
		"Fri, 31 Dec 1999 23:59:59 GMT", "Fri, 31 Dec 9999 23:59:59 GMT", "Friday, 02-Jan-26 03:01:30 GMT",
		"Fri Jan  2 03:01:30 2026", "\u00a05", "１２"} {
		f.Add(s, raNow.Unix())
	}
	f.Add("Mon, 01 Jan 0001 00:00:00 GMT", int64(1<<62))
	f.Fuzz(func(t *testing.T, v string, nowUnix int64) {
		now := time.Unix(nowUnix, 0)
		d, ok := ParseRetryAfter(v, now)
		checkWait(t, "ParseRetryAfter("+strconv.Quote(v)+")", d, ok)
		if want, digits := digitsSeconds(v); digits && (d != want || !ok) {
			t.Fatalf("ParseRetryAfter(%q) = %v, %v; want %v", v, d, ok, want)
		}
	})
}

func FuzzRetryAfterHeaders(f *testing.F) {
	f.Add("", "120", "", "", "", "", raNow.Unix())
	f.Add("1500", "", "", "", "", "", raNow.Unix())
	f.Add("", "", "6m0s", "20ms", "", "", raNow.Unix())
	f.Add("", "", "", "", "1767322845", "", raNow.Unix())
	f.Add("", "", "", "", "", "30", raNow.Unix())
	f.Add("-1", "x", "-1s", "1e400", "NaN", "Inf", int64(0))
	f.Add("1e308", "", "9223372036854775807ns", "", "99999999999", "", int64(-1<<62))
	f.Fuzz(func(t *testing.T, ms, ra, req, tok, reset, rlReset string, nowUnix int64) {
		h := http.Header{}
		for k, v := range map[string]string{"Retry-After-Ms": ms, "Retry-After": ra, "X-Ratelimit-Reset-Requests": req,
			"X-Ratelimit-Reset-Tokens": tok, "X-Ratelimit-Reset": reset, "Ratelimit-Reset": rlReset} {
			if v != "" {
				h[k] = []string{v}
			}
		}
		d, ok := RetryAfter(h, time.Unix(nowUnix, 0))
		checkWait(t, "RetryAfter", d, ok)
		if want, digits := digitsSeconds(ra); digits && h.Get("Retry-After-Ms") == "" && (d != want || !ok) {
			t.Fatalf("RetryAfter(Retry-After: %q) = %v, %v; want %v", ra, d, ok, want)
		}
	})
}
