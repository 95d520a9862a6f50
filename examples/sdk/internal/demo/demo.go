// Package demo is what the SDK examples share: the fake servers' quota
// window, a recorder counting usage events by operation, the pool
// recorder that also answers stats, the tables the examples print, and
// the tests' check of how the calls spread over the keys.
package demo

import (
	"context"
	"fmt"
	"io"
	"maps"
	"slices"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/apipool-ng/apipool"
	"github.com/apipool-ng/apipool/recorder"
	"github.com/apipool-ng/apipool/status"
)

// Window counts requests per key in fixed windows of a length, for a fake
// server's per-key quota.
type Window struct {
	length time.Duration

	mu    sync.Mutex
	start time.Time
	win   int64
	used  map[string]int // requests in the current window, per key secret
}

// NewWindow returns a Window of the given length whose first window
// starts now.
func NewWindow(length time.Duration) *Window {
	return &Window{length: length, start: time.Now(), used: map[string]int{}}
}

// Take counts a request against key's quota; over is true when the quota
// is used up, and left says how long until it refills.
func (q *Window) Take(key string, quota int) (left time.Duration, over bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	now := time.Now()
	win := int64(now.Sub(q.start) / q.length)
	if win != q.win {
		q.win, q.used = win, map[string]int{}
	}
	q.used[key]++
	return q.start.Add(time.Duration(win+1) * q.length).Sub(now), q.used[key] > quota
}

// Used returns the requests counted against key in the current window.
func (q *Window) Used(key string) int {
	q.mu.Lock()
	defer q.mu.Unlock()
	if int64(time.Since(q.start)/q.length) != q.win {
		return 0
	}
	return q.used[key]
}

// OpCounter is a recorder that counts the pool's usage events by
// operation. The pool hands it every event, beside the in-memory store.
type OpCounter struct {
	mu  sync.Mutex
	ops map[string]OpUsage
}

// OpUsage is what an OpCounter counted of one operation.
type OpUsage struct {
	Attempts, Success, Limited int
	Resent                     int // attempts after a request's first
}

func NewOpCounter() *OpCounter { return &OpCounter{ops: map[string]OpUsage{}} }

func (c *OpCounter) Record(e recorder.Event) {
	c.mu.Lock()
	defer c.mu.Unlock()
	u := c.ops[e.Operation]
	u.Attempts++
	switch {
	case e.Status.Matches(status.Success):
		u.Success++
	case e.Status.Matches(status.ReachLimit):
		u.Limited++
	}
	if e.Attempt > 1 {
		u.Resent++
	}
	c.ops[e.Operation] = u
}

func (c *OpCounter) Close(context.Context) error { return nil }

// Snapshot returns the counts so far, by operation.
func (c *OpCounter) Snapshot() map[string]OpUsage {
	c.mu.Lock()
	defer c.mu.Unlock()
	return maps.Clone(c.ops)
}

// StatsRecorder records through one recorder (the fan-out) and answers
// stats queries from another (the in-memory store), so that pool.Stats()
// still answers: a fan-out answers none.
type StatsRecorder struct {
	recorder.Recorder
	recorder.Stats
}

// KeyUsage is what the pool's stats say of one key.
type KeyUsage struct{ Attempts, Success, Limited int64 }

// KeyTable reads the pool's stats of the events since start (a minute
// either side) and prints a row per key: its attempts, successes, rate
// limits and state. It returns the numbers it printed, by key ID.
func KeyTable(ctx context.Context, out io.Writer, pool *apipool.Transport, start time.Time) (map[string]KeyUsage, error) {
	stats := pool.Stats()
	all := recorder.Query{Since: start.Add(-time.Minute), Until: time.Now().Add(time.Minute)}
	byKey, err := stats.UsageByKey(ctx, all)
	if err != nil {
		return nil, err
	}
	count := func(id string, s status.Status) int64 {
		n, err := stats.UsageCount(ctx, recorder.Query{Since: all.Since, Until: all.Until, KeyID: id, Status: s})
		if err != nil {
			return -1
		}
		return n
	}
	usage := map[string]KeyUsage{}
	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "KEY\tATTEMPTS\tSUCCESS\tRATE LIMITED\tSTATE\t")
	for _, s := range pool.Snapshot() {
		u := KeyUsage{byKey[s.KeyID], count(s.KeyID, status.Success), count(s.KeyID, status.ReachLimit)}
		usage[s.KeyID] = u
		fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%s\t\n", s.KeyID, u.Attempts, u.Success, u.Limited, s.State)
	}
	tw.Flush()
	return usage, nil
}

// OpTable prints a row per operation of byOp, sorted by name.
func OpTable(out io.Writer, byOp map[string]OpUsage) {
	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "OPERATION\tATTEMPTS\tSUCCESS\tRATE LIMITED\tRESENT\t")
	for _, op := range slices.Sorted(maps.Keys(byOp)) {
		u := byOp[op]
		fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%d\t\n", op, u.Attempts, u.Success, u.Limited, u.Resent)
	}
	tw.Flush()
}

// T is the part of testing.TB that CheckKeys uses.
type T interface {
	Helper()
	Errorf(format string, args ...any)
}

// CheckKeys checks the key stats a run returned: each key's attempts are
// its successes and rate limits, and the calls went through more than one
// key. It returns the attempts and rate limits over all keys.
func CheckKeys(t T, byKey map[string]KeyUsage) (attempts, limited int64) {
	t.Helper()
	var used int
	for id, u := range byKey {
		if u.Success > 0 {
			used++
		}
		if u.Attempts != u.Success+u.Limited {
			t.Errorf("key %s: %d attempts != %d successes + %d rate limited", id, u.Attempts, u.Success, u.Limited)
		}
		attempts += u.Attempts
		limited += u.Limited
	}
	if used < 2 {
		t.Errorf("calls went through %d key(s), want the pool to spread them: %+v", used, byKey)
	}
	return attempts, limited
}
