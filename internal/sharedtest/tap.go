// Package sharedtest helps tests of pools that share state
// (apipool.WithSharedState): Tap passes a pool's calls on to a
// sharedstate.Store, shows the test what went through, and cuts the pool's
// Watch at the test's command, so that a test can make changes while a
// pool is not watching, and wait for what follows without sleeping.
package sharedtest

import (
	"context"
	"sync"

	"github.com/apipool-ng/apipool/sharedstate"
)

// Tap is a sharedstate.Store that passes every call on to Store. Give
// each pool a Tap of its own. It is safe for concurrent use.
type Tap struct {
	sharedstate.Store

	mu        sync.Mutex
	cond      *sync.Cond
	applied   []sharedstate.Change // what the pool applied, in order
	published []sharedstate.Change // the Publish calls begun, in order
	syncs     int                  // the Synced changes the pool applied
	watching  bool                 // a Watch of Store runs
	hold      chan struct{}        // not nil: Watch waits until it closes
	cut       context.CancelFunc   // ends the running Watch of Store
}

// New returns a Tap on s.
func New(s sharedstate.Store) *Tap {
	t := &Tap{Store: s}
	t.cond = sync.NewCond(&t.mu)
	return t
}

// Publish records the call, then passes it on.
func (t *Tap) Publish(ctx context.Context, c sharedstate.Change) error {
	t.mu.Lock()
	t.published = append(t.published, c)
	t.cond.Broadcast()
	t.mu.Unlock()
	return t.Store.Publish(ctx, c)
}

// Watch waits while the Tap is cut (Cut, until Resume), then passes the
// call on, recording each change once the pool has applied it.
func (t *Tap) Watch(ctx context.Context, apply func(sharedstate.Change)) error {
	t.mu.Lock()
	for t.hold != nil {
		h := t.hold
		t.mu.Unlock()
		select {
		case <-h:
		case <-ctx.Done():
			return ctx.Err()
		}
		t.mu.Lock()
	}
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	t.cut, t.watching = cancel, true
	t.mu.Unlock()
	err := t.Store.Watch(wctx, func(c sharedstate.Change) {
		apply(c)
		t.mu.Lock()
		t.applied = append(t.applied, c)
		if c.Kind == sharedstate.Synced {
			t.syncs++
		}
		t.cond.Broadcast()
		t.mu.Unlock()
	})
	t.mu.Lock()
	t.cut, t.watching = nil, false
	t.cond.Broadcast()
	t.mu.Unlock()
	return err
}

// Cut ends the pool's Watch, and holds the next until Resume; it returns
// once the Watch of Store has returned.
func (t *Tap) Cut() {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.hold == nil {
		t.hold = make(chan struct{})
	}
	if t.cut != nil {
		t.cut()
	}
	for t.watching {
		t.cond.Wait()
	}
}

// Resume lets the pool watch again.
func (t *Tap) Resume() {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.hold != nil {
		close(t.hold)
		t.hold = nil
	}
}

// Syncs returns how many Synced changes the pool applied: how many
// Watches delivered their whole state.
func (t *Tap) Syncs() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.syncs
}

// WaitSyncs waits until the pool has applied n Synced changes, or ctx
// ends (reporting false).
func (t *Tap) WaitSyncs(ctx context.Context, n int) bool {
	return t.wait(ctx, func() bool { return t.syncs >= n })
}

// WaitApplied waits until the pool has applied a change that match
// accepts, or ctx ends (reporting false).
func (t *Tap) WaitApplied(ctx context.Context, match func(sharedstate.Change) bool) bool {
	return t.wait(ctx, func() bool {
		for _, c := range t.applied {
			if match(c) {
				return true
			}
		}
		return false
	})
}

// WaitPublished waits until the pool has begun n Publish calls, or ctx
// ends (reporting false). The pool publishes one change at a time, and
// notes that the store holds one before it publishes the next: once the
// call for a change has begun, the store's answers to those before it
// are in.
func (t *Tap) WaitPublished(ctx context.Context, n int) bool {
	return t.wait(ctx, func() bool { return len(t.published) >= n })
}

// Published returns the Publish calls begun so far.
func (t *Tap) Published() []sharedstate.Change {
	t.mu.Lock()
	defer t.mu.Unlock()
	return append([]sharedstate.Change(nil), t.published...)
}

func (t *Tap) wait(ctx context.Context, cond func() bool) bool {
	stop := context.AfterFunc(ctx, func() {
		t.mu.Lock()
		t.cond.Broadcast()
		t.mu.Unlock()
	})
	defer stop()
	t.mu.Lock()
	defer t.mu.Unlock()
	for !cond() {
		if ctx.Err() != nil {
			return false
		}
		t.cond.Wait()
	}
	return true
}
