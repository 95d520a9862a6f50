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

var _ sharedstate.Spender = (*Store)(nil)

// spendKeep is how long a budget's count lives past its period's end: for
// replicas whose clocks run a little behind, which still add to it.
const spendKeep = time.Minute

// maxSpends bounds the spends of one call.
const maxSpends = 1024

// spendScript adds ARGV[2i-1] to the count KEYS[i] (INCRBYFLOAT) and sets
// it to expire in ARGV[2i] ms, for each key, and returns the counts after,
// as strings.
var spendScript = redis.NewScript(`
local out = {}
for i, k in ipairs(KEYS) do
  out[i] = redis.call('INCRBYFLOAT', k, ARGV[2 * i - 1])
  redis.call('PEXPIRE', k, ARGV[2 * i])
end
return out
`)

// Spend adds each amount to its budget's count for its period, atomically
// across every replica sharing the store, and returns the counts after the
// additions (sharedstate.Spender). It costs one round trip (one Lua
// script) for all of them. A count is a float (INCRBYFLOAT, exact for
// whole tokens up to 2^53) at
//
//	{prefix}:spend:<scope>:<budget>:<period>:<id>
//
// and expires a minute after its period's End, measured on the store's
// clock (WithClock), not Redis's (for replicas whose clocks run a little
// behind, the minute; for pools on a clock of their own, the store's).
//
// A scope other than sharedstate.SpendKey and SpendClient, an empty or
// over-long ID, a budget name that is not lower-case letters and '_', a
// zero End, a negative or non-finite amount, or more than 1024 spends is
// refused with an error matching ErrInvalid.
func (s *Store) Spend(ctx context.Context, spends []sharedstate.Spend) ([]float64, error) {
	if len(spends) == 0 {
		return nil, nil
	}
	if len(spends) > maxSpends {
		return nil, fmt.Errorf("%w: %d spends in one call (at most %d)", ErrInvalid, len(spends), maxSpends)
	}
	keys := make([]string, len(spends))
	args := make([]any, 0, 2*len(spends))
	now := s.clock.Now()
	for i, sp := range spends {
		switch {
		case sp.Scope != sharedstate.SpendKey && sp.Scope != sharedstate.SpendClient:
			return nil, fmt.Errorf("%w: spend scope %q", ErrInvalid, sp.Scope)
		case sp.ID == "" || len(sp.ID) > maxKeyID:
			return nil, fmt.Errorf("%w: spend ID of %d bytes", ErrInvalid, len(sp.ID))
		case !budgetName(sp.Budget):
			return nil, fmt.Errorf("%w: budget name %q", ErrInvalid, sp.Budget)
		case sp.End.IsZero():
			return nil, fmt.Errorf("%w: spend without the period's end", ErrInvalid)
		case sp.Amount < 0 || math.IsNaN(sp.Amount) || math.IsInf(sp.Amount, 0):
			return nil, fmt.Errorf("%w: spend amount %v", ErrInvalid, sp.Amount)
		}
		keys[i] = s.spendKey(sp)
		ttl := max(sp.End.Sub(now), 0) + spendKeep
		args = append(args, fmtFloat(sp.Amount), min(ttl, 400*24*time.Hour).Milliseconds())
	}
	cctx, cancel := s.callCtx(ctx)
	defer cancel()
	res, err := spendScript.Run(cctx, s.c, keys, args...).StringSlice()
	if err != nil {
		return nil, s.fail(ctx, "spend", err)
	}
	if len(res) != len(spends) {
		return nil, s.fail(ctx, "spend", fmt.Errorf("unexpected reply of %d counts for %d spends", len(res), len(spends)))
	}
	totals := make([]float64, len(res))
	for i, r := range res {
		v, err := strconv.ParseFloat(r, 64)
		if err != nil {
			return nil, s.fail(ctx, "spend", fmt.Errorf("unexpected count %q", r))
		}
		totals[i] = v
	}
	return totals, nil
}

// spendKey is the count of sp's budget and period. The ID comes last, and
// nothing before it holds a ':' of its own, so no ID makes one count
// another's.
func (s *Store) spendKey(sp sharedstate.Spend) string {
	return s.spendPrefix + string(sp.Scope) + ":" + sp.Budget + ":" + strconv.FormatUint(sp.Period, 10) + ":" + sp.ID
}

func budgetName(b string) bool {
	if b == "" || len(b) > 64 {
		return false
	}
	for i := 0; i < len(b); i++ {
		if c := b[i]; c != '_' && (c < 'a' || c > 'z') {
			return false
		}
	}
	return true
}
