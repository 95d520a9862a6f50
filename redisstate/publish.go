package redisstate

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"

	"github.com/redis/go-redis/v9"

	"github.com/apipool-ng/apipool/sharedstate"
)

// cooldownScript sets a key's cooldown deadline only if it is later than
// the one held, and then publishes the change. It returns 1 when the
// deadline moved.
//
// KEYS[1] the cooldown hash, KEYS[2] the epoch; ARGV: key ID, deadline
// (ms), channel, message, a new epoch. Like every script of Publish, it
// returns the epoch as well (setting it when missing, as stateScript does).
var cooldownScript = redis.NewScript(epochLua(2, 5) + `
local old = tonumber(redis.call('HGET', KEYS[1], ARGV[1]) or '0') or 0
if tonumber(ARGV[2]) > old then
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
  redis.call('PUBLISH', ARGV[3], ARGV[4])
  return {1, e}
end
return {0, e}
`)

// epochLua returns the Lua that reads the epoch, KEYS[key], into e,
// setting it to ARGV[arg] when missing.
func epochLua(key, arg int) string {
	return fmt.Sprintf(`
local e = redis.call('GET', KEYS[%d])
if not e then
  e = ARGV[%d]
  redis.call('SET', KEYS[%d], e)
end`, key, arg, key)
}

// disableScript disables a key unless it is disabled already (the first
// reason stays), and then publishes the change. It returns 1 when the key
// was not disabled.
//
// KEYS[1] the disabled hash, KEYS[2] the epoch; ARGV: key ID, entry,
// channel, message, a new epoch.
var disableScript = redis.NewScript(epochLua(2, 5) + `
if redis.call('HSETNX', KEYS[1], ARGV[1], ARGV[2]) == 1 then
  redis.call('PUBLISH', ARGV[3], ARGV[4])
  return {1, e}
end
return {0, e}
`)

// enableScript enables a key and ends its cooldown, and publishes the
// change whether or not the key was disabled or cooling: a replica may
// hold it so without Redis knowing.
//
// KEYS[1] the disabled hash, KEYS[2] the cooldown hash, KEYS[3] the
// epoch; ARGV: key ID, channel, message, a new epoch.
var enableScript = redis.NewScript(epochLua(3, 4) + `
redis.call('HDEL', KEYS[1], ARGV[1])
redis.call('HDEL', KEYS[2], ARGV[1])
redis.call('PUBLISH', ARGV[2], ARGV[3])
return {1, e}
`)

// learnedScript sets a key's learned limit unless the one held was set
// later (at the same millisecond: unless it is lower or the same), keeps
// the hash a learnedTTL longer, and publishes the change. It returns 1
// when it set the limit.
//
// KEYS[1] the learned hash, KEYS[2] the epoch; ARGV: key ID, entry, at
// (ms), limit, channel, message, learnedTTL (ms), a new epoch.
var learnedScript = redis.NewScript(epochLua(2, 8) + `
local old = redis.call('HGET', KEYS[1], ARGV[1])
if old then
  local ok, e = pcall(cjson.decode, old)
  if ok and type(e) == 'table' then
    local oat, on = tonumber(e.at), tonumber(e.n)
    local at, n = tonumber(ARGV[3]), tonumber(ARGV[4])
    if oat and on and (at < oat or (at == oat and n >= on)) then
      return {0, e}
    end
  end
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[7])
redis.call('PUBLISH', ARGV[5], ARGV[6])
return {1, e}
`)

// Publish records a change where every replica sees it, and publishes it
// on the store's channel when it changes the shared state:
//
//   - Cooldown keeps the later of the held and the new deadline
//     (rounded up to the millisecond), atomically, and publishes only when
//     the deadline moved;
//   - Disable disables the key with c.Reason unless it is disabled
//     already, in which case the first reason stays and nothing is
//     published;
//   - Enable enables the key, ends its cooldown, and always
//     publishes;
//   - Learned keeps the key's learned limit (c.Limit in any c.Window)
//     unless the one held was set later (c.At, to the millisecond), or at
//     the same millisecond and is lower or the same, atomically, and
//     publishes only when it kept it. It is kept for a day (learnedTTL)
//     after it was set: Watch no longer reports it after that.
//
// c.At zero means now. Publish reads the epoch key too, so that the next
// Watch knows whether Redis lost its data since this change was stored
// (see Watch). An invalid change (empty or non-UTF-8 key ID,
// unknown kind, cooldown without a deadline, a learned limit below 1 or a
// window not of whole milliseconds up to an hour) is refused with an
// error matching ErrInvalid, without a round trip.
func (s *Store) Publish(ctx context.Context, c sharedstate.Change) error {
	if err := validChange(c); err != nil {
		return err
	}
	at := c.At
	if at.IsZero() {
		at = s.clock.Now()
	}
	atMs := at.UnixMilli()
	if atMs < 0 || atMs > maxMs {
		atMs = s.clock.Now().UnixMilli()
	}
	msg := encodeChange(c, atMs)
	epoch := newEpoch()
	cctx, cancel := s.callCtx(ctx)
	defer cancel()
	var res []any
	var err error
	switch c.Kind {
	case sharedstate.Cooldown:
		res, err = cooldownScript.Run(cctx, s.c, []string{s.cooldownKey, s.epochKey},
			c.KeyID, strconv.FormatInt(ceilMs(c.Until), 10), s.channel, msg, epoch).Slice()
	case sharedstate.Disable:
		e := disabledEntry{Reason: c.Reason, At: atMs}
		if !c.Until.IsZero() {
			e.Until = max(ceilMs(c.Until), 0)
		}
		entry, _ := json.Marshal(e)
		res, err = disableScript.Run(cctx, s.c, []string{s.disabledKey, s.epochKey},
			c.KeyID, entry, s.channel, msg, epoch).Slice()
	case sharedstate.Enable:
		res, err = enableScript.Run(cctx, s.c, []string{s.disabledKey, s.cooldownKey, s.epochKey},
			c.KeyID, s.channel, msg, epoch).Slice()
	case sharedstate.Learned:
		entry, _ := json.Marshal(learnedEntry{N: int64(c.Limit), W: c.Window.Milliseconds(), At: atMs})
		res, err = learnedScript.Run(cctx, s.c, []string{s.learnedKey, s.epochKey},
			c.KeyID, entry, atMs, c.Limit, s.channel, msg, learnedTTL.Milliseconds(), epoch).Slice()
	}
	if err == nil && len(res) != 2 {
		err = fmt.Errorf("unexpected reply of %d elements", len(res))
	}
	if err != nil {
		return s.fail(ctx, "publish "+c.Kind.String()+" of "+strconv.Quote(c.KeyID), err)
	}
	if e, ok := res[1].(string); ok {
		s.noteEpoch(e)
	}
	return nil
}
