package redisstate

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/apipool-ng/apipool/sharedstate"
)

// stateScript reads the epoch (setting it to ARGV[1] when missing, as after
// Redis lost its data) and the three hashes, atomically. It first removes
// the learned limits set before ARGV[2] (ms): those older than learnedTTL.
//
// KEYS[1] the epoch, KEYS[2] the cooldown hash, KEYS[3] the disabled hash,
// KEYS[4] the learned hash.
var stateScript = redis.NewScript(`
local e = redis.call('GET', KEYS[1])
if not e then
  e = ARGV[1]
  redis.call('SET', KEYS[1], e)
end
local learned = redis.call('HGETALL', KEYS[4])
local kept = {}
local since = tonumber(ARGV[2])
for i = 1, #learned, 2 do
  local ok, v = pcall(cjson.decode, learned[i + 1])
  local at = nil
  if ok and type(v) == 'table' then at = tonumber(v.at) end
  if at and at < since then
    redis.call('HDEL', KEYS[4], learned[i])
  else
    kept[#kept + 1] = learned[i]
    kept[#kept + 1] = learned[i + 1]
  end
end
return {e, redis.call('HGETALL', KEYS[2]), redis.call('HGETALL', KEYS[3]), kept}
`)

// Watch subscribes to the store's channel, then reads the shared state and
// calls apply with it, then once with a change of kind sharedstate.Synced, then
// with each change published by any replica (this one included), until ctx
// ends or the connection fails. It
// returns ctx's error when ctx ended, and otherwise the failure, which it
// counts in Stats. Subscribing before reading means no change is missed
// between the two; a change published meanwhile is applied twice, which
// changes nothing.
//
// The state is applied in key ID order: for each key, its cooldown when it
// has not ended yet (At zero), then its disable (with the reason and time
// it was disabled); then the learned limits set within the last day
// (learnedTTL; older ones are removed), in key ID order. A key that an earlier Watch of this Store reported
// disabled or cooling, and that is now neither disabled nor holds a
// cooldown, is reported enabled: it was enabled while this replica was not
// watching. That is skipped when Redis lost its data since (its epoch key
// changed), lest a restarted Redis enable the keys every replica disabled;
// the Synced change then says that Redis lost its data (Lost) since this
// Store last read or published, so that the pool does not take the keys
// missing as enabled either.
//
// Messages that cannot be decoded are ignored and counted in Stats, as are
// undecodable entries of the hashes. The pool runs one Watch at a time;
// apply is never called concurrently by one Watch.
func (s *Store) Watch(ctx context.Context, apply func(sharedstate.Change)) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	ps := s.c.Subscribe(ctx, s.channel)
	defer ps.Close()
	// go-redis does not interrupt a blocked read when ctx ends: close the
	// subscription, which does.
	stop := context.AfterFunc(ctx, func() { ps.Close() })
	defer stop()

	if err := s.subscribed(ctx, ps); err != nil {
		return s.fail(ctx, "watch: subscribe", err)
	}
	changes, lost, err := s.readState(ctx)
	if err != nil {
		return s.fail(ctx, "watch: read state", err)
	}
	for _, c := range changes {
		apply(c)
	}
	apply(sharedstate.Change{Kind: sharedstate.Synced, Lost: lost})

	// From here ctx ends the Watch by closing ps (above): reads and pings
	// get deadlines of their own, so that a read timing out at ctx's
	// deadline is not taken for a silent connection.
	bg := context.WithoutCancel(ctx)
	pinged := false
	for {
		m, err := ps.ReceiveTimeout(bg, s.interval)
		if err != nil {
			if ctxDone(ctx) {
				<-ctx.Done()
				return ctx.Err()
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				if pinged {
					return s.fail(ctx, "watch", fmt.Errorf("no answer to PING within %v", s.interval))
				}
				if err := ps.Ping(bg); err != nil {
					return s.fail(ctx, "watch: ping", err)
				}
				pinged = true
				continue
			}
			return s.fail(ctx, "watch", err)
		}
		pinged = false
		switch m := m.(type) {
		case *redis.Message:
			if m.Channel != s.channel {
				continue
			}
			c, ok := decodeChange(m.Payload)
			if !ok {
				s.malformed.Add(1)
				continue
			}
			s.note(c)
			apply(c)
		case *redis.Subscription:
			if m.Kind == "unsubscribe" && m.Channel == s.channel {
				return s.fail(ctx, "watch", errors.New("unsubscribed from "+s.channel))
			}
		}
	}
}

// subscribed waits for Redis to confirm the subscription.
func (s *Store) subscribed(ctx context.Context, ps *redis.PubSub) error {
	cctx, cancel := s.callCtx(ctx)
	defer cancel()
	wait := s.timeout
	if wait == 0 {
		wait = s.interval
	}
	for {
		m, err := ps.ReceiveTimeout(cctx, wait)
		if err != nil {
			return err
		}
		if sub, ok := m.(*redis.Subscription); ok && sub.Kind == "subscribe" && sub.Channel == s.channel {
			return nil
		}
	}
}

// newEpoch returns a random value for the epoch key.
func newEpoch() string {
	var nonce [16]byte
	rand.Read(nonce[:])
	return hex.EncodeToString(nonce[:])
}

// noteEpoch records the epoch a Publish read. One that differs from the
// epoch last read means Redis lost its data meanwhile: the next Watch
// says so (sharedstate.Change.Lost), and what Watch reported before is
// forgotten.
func (s *Store) noteEpoch(e string) {
	s.watchMu.Lock()
	defer s.watchMu.Unlock()
	if s.epoch != "" && e != s.epoch {
		s.lost, s.reported = true, nil
	}
	s.epoch = e
}

// readState reads the shared state and returns it as changes to apply,
// and whether Redis lost its data since this Store last read the epoch,
// updating what the store remembers of it.
func (s *Store) readState(ctx context.Context) ([]sharedstate.Change, bool, error) {
	cctx, cancel := s.callCtx(ctx)
	defer cancel()
	now := s.clock.Now()
	res, err := stateScript.Run(cctx, s.c, []string{s.epochKey, s.cooldownKey, s.disabledKey, s.learnedKey},
		newEpoch(), now.Add(-learnedTTL).UnixMilli()).Slice()
	if err != nil {
		return nil, false, err
	}
	if len(res) != 4 {
		return nil, false, fmt.Errorf("unexpected reply of %d elements", len(res))
	}
	epoch, _ := res[0].(string)
	cooling, err1 := pairs(res[1])
	disabled, err2 := pairs(res[2])
	learned, err3 := pairs(res[3])
	if err := errors.Join(err1, err2, err3); err != nil {
		return nil, false, err
	}

	// A key in either hash, even with a malformed or ended entry.
	type keyState struct {
		until    time.Time // zero when none or ended
		disabled *disabledEntry
	}
	keys := make(map[string]*keyState, len(cooling)+len(disabled))
	get := func(id string) *keyState {
		k := keys[id]
		if k == nil {
			k = &keyState{}
			keys[id] = k
		}
		return k
	}
	for i := 0; i+1 < len(cooling); i += 2 {
		k := get(cooling[i])
		if u, ok := decodeDeadline(cooling[i+1]); !ok {
			s.malformed.Add(1)
		} else if u.After(now) {
			k.until = u
		}
	}
	for i := 0; i+1 < len(disabled); i += 2 {
		k := get(disabled[i])
		e, ok := decodeDisabled(disabled[i+1])
		if !ok {
			s.malformed.Add(1)
			e = disabledEntry{} // disabled all the same, reason unknown
		}
		k.disabled = &e
	}

	s.watchMu.Lock()
	defer s.watchMu.Unlock()
	var out []sharedstate.Change
	ids := make([]string, 0, len(keys)+len(s.reported))
	for id := range keys {
		ids = append(ids, id)
	}
	lost := s.lost || s.epoch != "" && epoch != s.epoch
	if epoch != "" && !lost {
		for id := range s.reported {
			if keys[id] == nil {
				ids = append(ids, id)
			}
		}
	}
	slices.Sort(ids)
	reported := make(map[string]struct{}, len(keys))
	for _, id := range ids {
		if id == "" || len(id) > maxKeyID {
			s.malformed.Add(1)
			continue
		}
		k := keys[id]
		if k == nil {
			out = append(out, sharedstate.Change{KeyID: id, Kind: sharedstate.Enable, At: now})
			continue
		}
		if !k.until.IsZero() {
			out = append(out, sharedstate.Change{KeyID: id, Kind: sharedstate.Cooldown, Until: k.until})
			reported[id] = struct{}{}
		}
		if k.disabled != nil {
			c := sharedstate.Change{KeyID: id, Kind: sharedstate.Disable, Reason: k.disabled.Reason}
			if k.disabled.At > 0 {
				c.At = time.UnixMilli(k.disabled.At)
			}
			if k.disabled.Until > 0 {
				c.Until = time.UnixMilli(k.disabled.Until)
			}
			out = append(out, c)
			reported[id] = struct{}{}
		}
	}
	// The learned limits, apart: they do not make a key reported (an
	// enable is not reported for a key that only loses its learned limit).
	var learnedOut []sharedstate.Change
	for i := 0; i+1 < len(learned); i += 2 {
		id := learned[i]
		e, ok := decodeLearned(learned[i+1])
		if !ok || id == "" || len(id) > maxKeyID {
			s.malformed.Add(1)
			continue
		}
		learnedOut = append(learnedOut, e.change(id))
	}
	slices.SortFunc(learnedOut, func(a, b sharedstate.Change) int { return strings.Compare(a.KeyID, b.KeyID) })
	out = append(out, learnedOut...)
	// A key with an ended cooldown stays reported, if it was: its entry
	// is still there, so a later enable removes it and must be reported.
	for id := range s.reported {
		if k := keys[id]; k != nil {
			reported[id] = struct{}{}
		}
	}
	s.reported, s.epoch, s.lost = reported, epoch, false
	return out, lost, nil
}

// note updates what the store remembers of the state with a change that
// Watch applies.
func (s *Store) note(c sharedstate.Change) {
	if c.Kind == sharedstate.Learned {
		return // not a state an enable ends
	}
	s.watchMu.Lock()
	defer s.watchMu.Unlock()
	if c.Kind == sharedstate.Enable {
		delete(s.reported, c.KeyID)
		return
	}
	if s.reported == nil {
		s.reported = make(map[string]struct{})
	}
	s.reported[c.KeyID] = struct{}{}
}

// pairs converts a flat HGETALL reply to strings.
func pairs(v any) ([]string, error) {
	a, ok := v.([]any)
	if !ok {
		return nil, fmt.Errorf("unexpected reply %T for a hash", v)
	}
	out := make([]string, len(a))
	for i, x := range a {
		sx, ok := x.(string)
		if !ok {
			return nil, fmt.Errorf("unexpected reply %T in a hash", x)
		}
		out[i] = sx
	}
	return out, nil
}
