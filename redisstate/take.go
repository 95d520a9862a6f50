package redisstate

import (
	"context"
	"fmt"
	"math"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/apipool-ng/apipool/sharedstate"
)

// dayTTL is how long a day's counter lives after its last increment: long
// enough to outlast the day in any time zone.
const dayTTL = 2 * 24 * time.Hour

// takeScript grants up to n requests of one key against all its limits,
// atomically: the smallest number that every limit allows.
//
// The daily quota is a counter per key and quota day. Each rate limit is a
// sliding window log, on the callers' clock (µs since the epoch): a sorted
// set of the times at which requests count as sent (member and score the
// time), and a hash with how many count at each time (field "<time>"), how
// many the window holds in all (n), its oldest time (o) and its newest (e).
// A request fits at now when fewer than the limit count at times after
// now − w (the window's length before now, or later). Granting k counts
// them at now + lease (ARGV[5], rounded up to the microsecond), the latest
// the pool may send them. Times that left
// the window are removed when the oldest has: most calls read the hash
// alone (no range of the set, the costly part of the script). Both keys
// expire 2 to 3 seconds after the newest time has left the window: their
// expiry is set again when the newest time is a second past the one it was
// last set for (x), not on every call.
//
// KEYS[1] the day counter; KEYS[2], KEYS[3] the per-second window's set
// and hash; KEYS[4], KEYS[5] the per-minute window's. ARGV: now (µs), n,
// PerDay, the day counter's TTL (ms), now + lease (µs), then the count and
// length (µs) of the per-second window and of the per-minute window (a
// count of 0: no such limit).
//
// It returns {granted, retry, dayOut}: when granted is 0, retry is when
// the rate limits next allow a request (µs, 0 when they allow one now) and
// dayOut is 1 when the day's quota is used up.
var takeScript = redis.NewScript(`
local now = tonumber(ARGV[1])
local grant = tonumber(ARGV[2])
local perDay = tonumber(ARGV[3])
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
local function name(t) return string.format('%.0f', t) end
local wins = {}
if tonumber(ARGV[6]) > 0 then
  wins[#wins + 1] = {set = KEYS[2], hash = KEYS[3], n = tonumber(ARGV[6]), w = tonumber(ARGV[7])}
end
if tonumber(ARGV[8]) > 0 then
  wins[#wins + 1] = {set = KEYS[4], hash = KEYS[5], n = tonumber(ARGV[8]), w = tonumber(ARGV[9])}
end
local retry = 0
for _, x in ipairs(wins) do
  local h = redis.call('HMGET', x.hash, 'n', 'o', 'e', 'x')
  local held, old = tonumber(h[1]) or 0, tonumber(h[2])
  x.newest, x.kept = tonumber(h[3]), tonumber(h[4])
  if old and old <= now - x.w then
    -- The oldest times left the window: remove them, with their counts.
    local gone = redis.call('ZRANGEBYSCORE', x.set, '-inf', now - x.w)
    for i = 1, #gone, 1000 do
      local part = {unpack(gone, i, math.min(i + 999, #gone))}
      for _, c in ipairs(redis.call('HMGET', x.hash, unpack(part))) do
        held = held - (tonumber(c) or 0)
      end
      redis.call('HDEL', x.hash, unpack(part))
    end
    redis.call('ZREMRANGEBYSCORE', x.set, '-inf', now - x.w)
    local first = redis.call('ZRANGE', x.set, 0, 0, 'WITHSCORES')
    if first[2] == nil then
      -- Empty (or the set was lost): nothing counts, and the keys are
      -- new ones.
      held, old, x.newest, x.kept = 0, nil, nil, nil
      redis.call('DEL', x.hash, x.set)
    else
      if held < 0 then held = 0 end
      old = tonumber(first[2])
      redis.call('HSET', x.hash, 'n', held, 'o', first[1])
    end
  end
  x.held, x.old = held, old
  local k = x.n - held
  if k < 1 then
    k = 0
    -- The window frees a request once enough of its oldest requests
    -- left it to leave fewer than n: a window after the newest of those,
    -- most often the oldest time's.
    local need = held - x.n + 1
    local at = nil
    if old then
      need = need - (tonumber(redis.call('HGET', x.hash, name(old))) or 0)
      if need <= 0 then at = old + x.w end
    end
    local from = 0
    if old then from = 1 end
    while at == nil do
      local ms = redis.call('ZRANGE', x.set, from, from + 63, 'WITHSCORES')
      if #ms == 0 then break end
      for i = 1, #ms, 2 do
        need = need - (tonumber(redis.call('HGET', x.hash, ms[i])) or 0)
        if need <= 0 then
          at = tonumber(ms[i + 1]) + x.w
          break
        end
      end
      from = from + 64
    end
    -- Capped below 2^53 µs (year 2255): a very slow rate's window may be
    -- longer than a reply's integer holds.
    at = math.min(at or (now + 1), 9e15)
    if at > retry then retry = at end
  end
  if k < grant then grant = k end
end
if grant <= 0 then
  return {0, retry, dayOut}
end
if perDay > 0 then
  redis.call('INCRBY', KEYS[1], grant)
  redis.call('PEXPIRE', KEYS[1], ARGV[4])
end
local t = tonumber(ARGV[5])
local tn = name(t)
for _, x in ipairs(wins) do
  redis.call('ZADD', x.set, t, tn)
  local fields = {'n', x.held + grant}
  local newest = x.newest
  if newest == nil or t > newest then
    -- A new newest time: no count yet.
    newest = t
    fields[#fields + 1] = tn
    fields[#fields + 1] = grant
    fields[#fields + 1] = 'e'
    fields[#fields + 1] = tn
  else
    redis.call('HINCRBY', x.hash, tn, grant)
  end
  if x.old == nil or t < x.old then
    fields[#fields + 1] = 'o'
    fields[#fields + 1] = tn
  end
  -- The keys live 2 s past a window after the newest time (x) they were
  -- last kept for; kept again once the newest is a second past that, not
  -- on every call. At most ~3 years, which a very slow rate could exceed:
  -- PEXPIRE wants an integer it can add to the clock.
  local keep = x.kept == nil or newest > x.kept + 1e6
  if keep then
    fields[#fields + 1] = 'x'
    fields[#fields + 1] = name(newest)
  end
  redis.call('HSET', x.hash, unpack(fields))
  if keep then
    local ms = math.min(math.ceil((newest + x.w - now) / 1000), 1e11) + 2000
    redis.call('PEXPIRE', x.set, ms)
    redis.call('PEXPIRE', x.hash, ms)
  end
end
return {grant, 0, 0}
`)

// Take reserves up to n requests of key id's limits at now, atomically
// across every replica sharing the store, and returns how many it granted:
// the most, up to n, that the daily quota (l.PerDay on quota day l.Day),
// the per-second window and the per-minute window all allow. It costs one
// round trip (one Lua script); limits that are all zero grant n without
// one.
//
// The rate limits are the pool's sliding windows (see [apipool.Key]): at
// most floor(l.PerSecond) requests in any second (below 1, one in any
// 1/l.PerSecond seconds), and at most l.PerMinute in any minute. The
// requests granted count as sent at now + l.Lease, the latest the pool may
// send them. now is the caller's clock, not Redis's: see the package
// documentation about clocks.
//
// When it grants none, retryAt is when the limits next allow a request:
// for a rate, exactly when enough requests have left its window; for a
// used-up daily quota, l.DayEnd, or, when that is not set, the next
// quarter hour (UTC) after now: every time zone's midnight falls on a
// quarter hour, so the quota is never found later than that, at the cost
// of one Take a quarter hour per key while it is used up.
//
// n < 1, an empty key ID, negative or non-finite limits and a negative
// lease are refused with an error matching ErrInvalid.
func (s *Store) Take(ctx context.Context, id string, l sharedstate.Limits, now time.Time, n int) (granted int, retryAt time.Time, err error) {
	switch {
	case n < 1:
		return 0, time.Time{}, fmt.Errorf("%w: take %d requests", ErrInvalid, n)
	case id == "" || len(id) > maxKeyID:
		return 0, time.Time{}, fmt.Errorf("%w: key ID of %d bytes", ErrInvalid, len(id))
	case l.PerSecond < 0 || math.IsNaN(l.PerSecond) || math.IsInf(l.PerSecond, 0):
		return 0, time.Time{}, fmt.Errorf("%w: PerSecond %v", ErrInvalid, l.PerSecond)
	case l.PerMinute < 0 || l.PerDay < 0:
		return 0, time.Time{}, fmt.Errorf("%w: PerMinute %d, PerDay %d", ErrInvalid, l.PerMinute, l.PerDay)
	case l.Lease < 0:
		return 0, time.Time{}, fmt.Errorf("%w: lease %v", ErrInvalid, l.Lease)
	}
	if l.PerSecond == 0 && l.PerMinute == 0 && l.PerDay == 0 {
		return n, time.Time{}, nil
	}
	secN, secW := secondWindow(l.PerSecond)
	// The time the requests count as sent, rounded up: never before the
	// deadline the pool keeps to (now itself is rounded down, which
	// counts a window's requests a little longer).
	at := now.Add(l.Lease)
	stamp := at.UnixMicro()
	if at.After(time.UnixMicro(stamp)) {
		stamp++
	}
	minN := float64(l.PerMinute)
	cctx, cancel := s.callCtx(ctx)
	defer cancel()
	res, err := takeScript.Run(cctx, s.c, []string{s.dayKey(id, l.Day), s.secondKey(id), s.secondCountKey(id), s.minuteKey(id), s.minuteCountKey(id)},
		now.UnixMicro(), n, l.PerDay, dayTTL.Milliseconds(), stamp,
		fmtFloat(secN), fmtFloat(secW), fmtFloat(minN), fmtFloat(60e6)).Int64Slice()
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

// secondWindow returns the count and length (µs) of PerSecond p's window,
// as the pool's local limits have it: floor(p) requests in a second for
// p >= 1, one in 1/p seconds below 1 (rounded up to the microsecond), none
// (0, 0) for 0.
func secondWindow(p float64) (n, w float64) {
	switch {
	case p >= 1:
		return min(math.Floor(p), 1<<53), 1e6
	case p > 0:
		// At most 146 years, as the pool has it.
		return 1, min(math.Ceil(1e6/p), (1<<62)/1e3)
	}
	return 0, 0
}

func fmtFloat(f float64) string { return strconv.FormatFloat(f, 'f', -1, 64) }

// nextQuarterHour returns the first quarter hour (of UTC) after t.
func nextQuarterHour(t time.Time) time.Time {
	return t.Truncate(15 * time.Minute).Add(15 * time.Minute)
}
