package redisstate

import (
	"context"
	"fmt"
	"math"
	"strconv"
	"time"

	"github.com/apipool-ng/apipool"
	"github.com/redis/go-redis/v9"
)

// dayTTL is how long a day's counter lives after its last increment: long
// enough to outlast the day in any time zone.
const dayTTL = 2 * 24 * time.Hour

// takeScript grants up to n requests of one key against all its limits,
// atomically: the smallest number that every limit allows.
//
// The daily quota is a counter per key and quota day. Each rate limit is
// GCRA: the hash field holds the theoretical arrival time (TAT, µs since
// the epoch, on the callers' clock) of the next request at the steady
// rate; k more requests fit at now while max(TAT, now) + k·T − now ≤ b·T,
// with T the interval between requests and b the burst. Granting k moves
// the TAT by k·T. This is the token bucket of golang.org/x/time/rate, kept
// as one number.
//
// KEYS[1] the day counter, KEYS[2] the rate hash. ARGV: now (µs), n,
// PerDay, PerSecond, PerMinute, the day counter's TTL (ms).
//
// It returns {granted, retry, dayOut}: when granted is 0, retry is when
// the rate limits next allow a request (µs, 0 when they allow one now) and
// dayOut is 1 when the day's quota is used up.
var takeScript = redis.NewScript(`
local now = tonumber(ARGV[1])
local grant = tonumber(ARGV[2])
local perDay = tonumber(ARGV[3])
local perSec = tonumber(ARGV[4])
local perMin = tonumber(ARGV[5])
local dayOut = 0
if perDay > 0 then
  local used = tonumber(redis.call('GET', KEYS[1]) or '0') or 0
  local left = perDay - used
  if left <= 0 then
    grant = 0
    dayOut = 1
  elseif left < grant then
    grant = left
  end
end
local rates = {}
if perSec > 0 then
  rates[#rates + 1] = {field = 's', t = 1e6 / perSec, b = math.max(1, math.ceil(perSec))}
end
if perMin > 0 then
  rates[#rates + 1] = {field = 'm', t = 60e6 / perMin, b = perMin}
end
local retry = 0
for _, r in ipairs(rates) do
  local tat = tonumber(redis.call('HGET', KEYS[2], r.field) or '') or now
  if tat < now then tat = now end
  r.tat = tat
  -- Half a microsecond of slack (half a request at most) absorbs the
  -- rounding of times near 1.7e15 µs, whose doubles are 0.25 µs apart.
  local k = math.floor((r.b * r.t - (tat - now) + math.min(0.5, r.t / 2)) / r.t)
  if k < 1 then
    k = 0
    local at = math.ceil(tat - (r.b - 1) * r.t)
    -- A very fast rate may round to now: the next microsecond, then.
    if at <= now then at = math.floor(now) + 1 end
    if at > retry then retry = at end
  end
  if k < grant then grant = k end
end
if grant <= 0 then
  return {0, retry, dayOut}
end
if perDay > 0 then
  redis.call('INCRBY', KEYS[1], grant)
  redis.call('PEXPIRE', KEYS[1], ARGV[6])
end
local ttl = 0
for _, r in ipairs(rates) do
  local tat = r.tat + grant * r.t
  redis.call('HSET', KEYS[2], r.field, string.format('%.17g', tat))
  local d = math.ceil((tat - now) / 1000)
  if d > ttl then ttl = d end
end
if ttl > 0 then
  -- At most ~3 years, which a very slow rate could exceed: PEXPIRE wants
  -- an integer it can add to the clock.
  redis.call('PEXPIRE', KEYS[2], math.min(ttl, 1e11) + 1000)
end
return {grant, 0, 0}
`)

// Take reserves up to n requests of key id's limits at now, atomically
// across every replica sharing the store, and returns how many it granted:
// the most, up to n, that the daily quota (l.PerDay on quota day l.Day),
// the per-second rate and the per-minute rate all allow. It costs one
// round trip (one Lua script); limits that are all zero grant n without
// one.
//
// The rates are GCRA with the pool's local buckets: burst one second's
// worth (at least 1) at l.PerSecond, and l.PerMinute at l.PerMinute/60 a
// second. now is the caller's clock, not Redis's: see the package
// documentation about clocks.
//
// When it grants none, retryAt is when the limits next allow a request:
// for a rate, exactly when its bucket holds one again; for a used-up daily
// quota, l.DayEnd, or, when that is not set, the next quarter hour (UTC)
// after now: every time zone's midnight falls on a quarter hour, so the
// quota is never found later than that, at the cost of one Take a quarter
// hour per key while it is used up.
//
// n < 1, an empty key ID and negative or non-finite limits are refused
// with an error matching ErrInvalid.
func (s *Store) Take(ctx context.Context, id string, l apipool.Limits, now time.Time, n int) (granted int, retryAt time.Time, err error) {
	switch {
	case n < 1:
		return 0, time.Time{}, fmt.Errorf("%w: take %d requests", ErrInvalid, n)
	case id == "" || len(id) > maxKeyID:
		return 0, time.Time{}, fmt.Errorf("%w: key ID of %d bytes", ErrInvalid, len(id))
	case l.PerSecond < 0 || math.IsNaN(l.PerSecond) || math.IsInf(l.PerSecond, 0):
		return 0, time.Time{}, fmt.Errorf("%w: PerSecond %v", ErrInvalid, l.PerSecond)
	case l.PerMinute < 0 || l.PerDay < 0:
		return 0, time.Time{}, fmt.Errorf("%w: PerMinute %d, PerDay %d", ErrInvalid, l.PerMinute, l.PerDay)
	}
	if l.PerSecond == 0 && l.PerMinute == 0 && l.PerDay == 0 {
		return n, time.Time{}, nil
	}
	cctx, cancel := s.callCtx(ctx)
	defer cancel()
	res, err := takeScript.Run(cctx, s.c, []string{s.dayKey(id, l.Day), s.rateKey(id)},
		now.UnixMicro(), n, l.PerDay, strconv.FormatFloat(l.PerSecond, 'g', -1, 64), l.PerMinute,
		dayTTL.Milliseconds()).Int64Slice()
	if err != nil {
		return 0, time.Time{}, s.fail(ctx, "take "+strconv.Quote(id), err)
	}
	if len(res) != 3 || res[0] < 0 || res[0] > int64(n) {
		return 0, time.Time{}, s.fail(ctx, "take "+strconv.Quote(id), fmt.Errorf("unexpected reply %v", res))
	}
	if res[0] > 0 {
		return int(res[0]), time.Time{}, nil
	}
	if res[1] > 0 {
		retryAt = time.UnixMicro(res[1])
	}
	if res[2] == 1 {
		q := l.DayEnd
		if !q.After(now) {
			q = nextQuarterHour(now)
		}
		if q.After(retryAt) {
			retryAt = q
		}
	}
	if !retryAt.After(now) {
		// Cannot happen with a consistent reply; never report "now".
		retryAt = now.Add(time.Millisecond)
	}
	return 0, retryAt, nil
}

// nextQuarterHour returns the first quarter hour (of UTC) after t.
func nextQuarterHour(t time.Time) time.Time {
	return t.Truncate(15 * time.Minute).Add(15 * time.Minute)
}
