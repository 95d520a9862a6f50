// Package sharedstate defines what a store that shares key state among
// the replicas of a service implements: the Store interface, the changes
// it carries and the limits it enforces. A program uses a Store through
// apipool.WithSharedState (package redisstate is the Store on Redis); this
// package is for those who write one.
package sharedstate

import (
	"context"
	"errors"
	"time"
)

// Store shares key state among the replicas of a service that use
// the same keys, so that a cooldown seen by one holds for all, a key
// revoked through one is skipped by all, a limit one learned from the
// upstream's 429s is kept by all, and a key's limits hold across all of
// them. Package redisstate implements it on Redis.
//
// The pool keeps every key's state in memory and reads only memory to pick
// a key; a Store carries changes between replicas (Publish, Watch)
// and enforces the limits that must hold across them (Take). When it fails,
// the pool goes on with its local state and limits, reports the fault, and
// resumes sharing when it works again.
//
// Implementations must be safe for concurrent use.
type Store interface {
	// Publish records a change of one key's state where every replica
	// sees it: a cooldown (the later deadline wins, atomically), a key
	// disabled with its reason, a key enabled, or a learned limit (the
	// later At wins, atomically: see Learned). The pool calls it off
	// the request path, and again after an error, except an error that
	// matches ErrRejected: that change is dropped and counted.
	Publish(ctx context.Context, c Change) error
	// Watch calls apply with the current state of every key the store
	// knows (its learned limit among it, unless the store let it
	// expire), then once with a change of kind Synced (no key) to say
	// that the state is complete, then with each change that any replica
	// publishes, until ctx ends or the store fails; it returns the error
	// (ctx's error when ctx ended). The pool calls it again after a
	// failure, with a backoff. apply must not be called concurrently.
	//
	// The state is complete: a disable or cooldown that the store
	// acknowledged (Publish returned nil) or delivered before the Watch
	// began, and that the state does not list, has ended, and the pool
	// ends it too (it was enabled while the pool was not watching), unless
	// the Synced change says the store lost state (Change.Lost).
	Watch(ctx context.Context, apply func(Change)) error
	// Take reserves up to n requests of key id's shared limits at now,
	// atomically across replicas, and returns how many it granted (0 to
	// n). When it grants none, retryAt is when the limits next allow a
	// request. It is called on the request path, at most once per request.
	//
	// The limits mean what they mean in one pool (see apipool.Key): no window of
	// a second holds more than PerSecond requests (below 1, none of
	// 1/PerSecond seconds more than one), none of a minute more than
	// PerMinute, and quota day Day no more than PerDay. The pool sends
	// every request granted before now+l.Lease, and a store counts them
	// against the rate limits as sent then, so that no window holds more
	// than the limit whenever in that time they go out.
	Take(ctx context.Context, id string, l Limits, now time.Time, n int) (granted int, retryAt time.Time, err error)
}

// Kind says what a Change changes.
type Kind uint8

const (
	// Cooldown: the key rests until Change.Until.
	Cooldown Kind = iota + 1
	// Disable: the key is disabled, for Change.Reason.
	Disable
	// Enable: the key is enabled again, and its cooldown ends.
	Enable
	// Synced: Watch delivered the whole current state; no key.
	Synced
	// Learned: the pool learned from the upstream's 429s that the key
	// allows Change.Limit requests in any window of Change.Window (a
	// second or a minute), or lowered or raised that limit. Every replica
	// keeps the latest: the change with the later At wins, compared to
	// the millisecond, and at the same millisecond the lower limit. A
	// store should let a learned limit expire some time after it was last
	// set, so that a limit learned long ago is learned again.
	Learned
)

// String names the kind: "cooldown", "disable", "enable", "synced" or
// "learned" (and "unknown" for any other value).
func (k Kind) String() string {
	switch k {
	case Cooldown:
		return "cooldown"
	case Disable:
		return "disable"
	case Enable:
		return "enable"
	case Synced:
		return "synced"
	case Learned:
		return "learned"
	}
	return "unknown"
}

// Change is one change of a key's shared state.
type Change struct {
	KeyID string
	Kind  Kind
	// Until is, for Cooldown, when the cooldown ends; for
	// Disable, when a trial request may test the key again (zero:
	// disabled for good, until enabled).
	Until  time.Time
	Reason string    // Disable: why (never a secret)
	At     time.Time // when the change was made
	// Lost, on a Synced change, says that the store lost state since it
	// last acknowledged a change or delivered its state to this Watch's
	// caller (Redis restarted without its data, say): a key the state
	// does not list may still be disabled or cooling on the replicas.
	Lost bool
	// Limit and Window are, for Learned, the limit learned: at most Limit
	// requests (1 or more) in any window of length Window (time.Second or
	// time.Minute).
	Limit  int
	Window time.Duration
}

// Limits are a key's limits that must hold across replicas, as apipool.Key gives
// them, tightened by the limit the pool learned for the key (Learned):
// PerSecond carries the smaller of the key's PerSecond and a learned limit
// of a second, PerMinute the smaller of the key's PerMinute and one of a
// minute (a learned limit never raises a configured one). Day is the quota day, in days since the Unix epoch in the pool's
// quota location; a PerDay count resets when it changes, at DayEnd.
type Limits struct {
	PerSecond float64
	PerMinute int
	PerDay    int
	Day       uint64
	DayEnd    time.Time // when quota day Day ends (the next midnight in the quota location)
	// Lease is how long after Take's now the pool may send the requests
	// granted (0: at now). A store counts them against PerSecond and
	// PerMinute as sent at now+Lease, the latest they may go out.
	Lease time.Duration
}

// ErrRejected is matched by a Store's Publish error for a
// change it will never accept (an invalid key ID, say): the pool drops the
// change instead of retrying it.
var ErrRejected = errors.New("apipool/sharedstate: the store rejected the change")

// Spender is what a Store implements, beside Store, to share what keys
// and clients spend against their budgets (apipool.Budget) among the
// replicas: a pool whose Store is a Spender counts its keys' spend there,
// and apipool.NewClientBudgets takes one for the clients'. Package
// redisstate's Store is one. A Store that is not a Spender leaves every
// replica to count its own spend.
//
// Implementations must be safe for concurrent use.
type Spender interface {
	// Spend adds each amount to its budget's count for its period,
	// atomically across replicas, and returns the counts after the
	// additions, in the order of spends (an amount given twice in one
	// call is added twice). A count lives until its period ends (End);
	// the store may keep it a little longer for clocks that disagree,
	// and must not keep it for good. The pool calls it off the request
	// path, with spends merged per budget and period. Spends of a call
	// that failed count in their replica at once and are sent again,
	// merged with later ones, until their period ends: a call that
	// failed after the store counted it is counted twice.
	Spend(ctx context.Context, spends []Spend) (totals []float64, err error)
}

// SpendScope says whose budget a Spend counts against.
type SpendScope string

// The scopes of budgets.
const (
	// SpendKey: a key's budget (apipool.Key.Budget); Spend.ID is the key's
	// ID.
	SpendKey SpendScope = "key"
	// SpendClient: a client's budget (apipool.ClientBudgets); Spend.ID is
	// the client's name (apipool.ContextWithClient).
	SpendClient SpendScope = "client"
)

// Spend is one amount spent against one budget in one period.
type Spend struct {
	Scope SpendScope
	ID    string
	// Budget names the budget: "tokens_per_minute", "tokens_per_day",
	// "cost_per_day" or "cost_per_month" (apipool.BudgetKind).
	Budget string
	// Period is which of the budget's periods the amount falls in: the
	// minute since the Unix epoch for a budget per minute, the quota day
	// (as Limits.Day) for one per day, year×12 + month−1 in the quota
	// location for one per month. End is when that period ends.
	Period uint64
	End    time.Time
	// Amount is the tokens or the cost spent: finite and not negative.
	Amount float64
}
