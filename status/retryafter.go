package status

import (
	"math"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// maxWait bounds every parsed wait so that arithmetic on it cannot overflow.
const maxWait = 100 * 365 * 24 * time.Hour

// RetryAfter reads how long the upstream asks the client to wait from the
// response headers, relative to now. It understands, in this order:
//
//   - retry-after-ms: milliseconds (fractions allowed);
//   - Retry-After: seconds, or an HTTP date;
//   - x-ratelimit-reset-requests and x-ratelimit-reset-tokens: Go-style
//     durations such as "1s", "6m0s" or "20ms" (OpenAI), or seconds; the
//     later of the two wins;
//   - x-ratelimit-reset and ratelimit-reset: seconds to wait, or, for values
//     above 10^9, a Unix time in seconds (GitHub).
//
// It reports false when no header gives a usable value. A wait in the past is
// returned as 0 with true. Values are clamped to a hundred years, so no
// input overflows; callers apply their own cap.
func RetryAfter(h http.Header, now time.Time) (time.Duration, bool) {
	if v := headerValue(h, "Retry-After-Ms"); v != "" {
		if f, err := strconv.ParseFloat(v, 64); err == nil && !math.IsNaN(f) && f >= 0 {
			return clampFloat(f * float64(time.Millisecond)), true
		}
	}
	if v := headerValue(h, "Retry-After"); v != "" {
		if d, ok := parseRetryAfter(v, now); ok {
			return d, true
		}
	}
	var best time.Duration
	found := false
	for _, name := range [...]string{"X-Ratelimit-Reset-Requests", "X-Ratelimit-Reset-Tokens"} {
		if v := headerValue(h, name); v != "" {
			if d, ok := parseResetDuration(v); ok {
				if !found || d > best {
					best = d
				}
				found = true
			}
		}
	}
	if found {
		return best, true
	}
	for _, name := range [...]string{"X-Ratelimit-Reset", "Ratelimit-Reset"} {
		if v := headerValue(h, name); v != "" {
			if d, ok := parseReset(v, now); ok {
				return d, true
			}
		}
	}
	return 0, false
}

// headerValue returns the first value of a canonical header name, trimmed.
func headerValue(h http.Header, canonical string) string {
	vs := h[canonical]
	if len(vs) == 0 {
		return ""
	}
	return strings.TrimSpace(vs[0])
}

// ParseRetryAfter parses one Retry-After value, seconds or an HTTP date,
// relative to now. A negative number or an unparsable value reports false;
// a date in the past gives 0.
func ParseRetryAfter(v string, now time.Time) (time.Duration, bool) {
	return parseRetryAfter(strings.TrimSpace(v), now)
}

func parseRetryAfter(v string, now time.Time) (time.Duration, bool) {
	if v == "" {
		return 0, false
	}
	if v[0] >= '0' && v[0] <= '9' {
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			if ne, ok := err.(*strconv.NumError); ok && ne.Err == strconv.ErrRange {
				return maxWait, true
			}
			return 0, false
		}
		return clampSeconds(n), true
	}
	t, err := http.ParseTime(v)
	if err != nil {
		return 0, false
	}
	return untilTime(t, now), true
}

func parseResetDuration(v string) (time.Duration, bool) {
	if d, err := time.ParseDuration(v); err == nil {
		if d < 0 {
			return 0, false
		}
		return min(d, maxWait), true
	}
	if f, err := strconv.ParseFloat(v, 64); err == nil && !math.IsNaN(f) && f >= 0 {
		return clampFloat(f * float64(time.Second)), true
	}
	return 0, false
}

func parseReset(v string, now time.Time) (time.Duration, bool) {
	f, err := strconv.ParseFloat(v, 64)
	if err != nil || math.IsNaN(f) || f < 0 {
		return 0, false
	}
	if f > 1e9 && f < 1e11 { // a Unix time in seconds
		sec, frac := math.Modf(f)
		return untilTime(time.Unix(int64(sec), int64(frac*1e9)), now), true
	}
	return clampFloat(f * float64(time.Second)), true
}

func untilTime(t, now time.Time) time.Duration {
	d := t.Sub(now) // saturates at the int64 limits
	if d < 0 {
		return 0
	}
	return min(d, maxWait)
}

func clampSeconds(n uint64) time.Duration {
	if n > uint64(maxWait/time.Second) {
		return maxWait
	}
	return time.Duration(n) * time.Second
}

func clampFloat(f float64) time.Duration {
	if math.IsInf(f, 1) || f >= float64(maxWait) {
		return maxWait
	}
	if f <= 0 {
		return 0
	}
	return time.Duration(f)
}
