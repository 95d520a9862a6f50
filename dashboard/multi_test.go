package dashboard_test

import (
	"bytes"
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/apipool-ng/apipool/dashboard"
	"github.com/apipool-ng/apipool/recorder"
	"github.com/apipool-ng/apipool/status"
)

// statsOnly hides a store's recorder.MultiStats, so that the dashboard
// takes its fallback: one Stats call per filter or bucket.
type statsOnly struct{ recorder.Stats }

// countingMulti counts the calls to a MultiStats store.
type countingMulti struct {
	recorder.MultiStats
	calls atomic.Int64
}

func (c *countingMulti) UsageByKey(ctx context.Context, q recorder.Query) (map[string]int64, error) {
	c.calls.Add(1)
	return c.MultiStats.UsageByKey(ctx, q)
}
func (c *countingMulti) UsageCount(ctx context.Context, q recorder.Query) (int64, error) {
	c.calls.Add(1)
	return c.MultiStats.UsageCount(ctx, q)
}
func (c *countingMulti) LatencyByKey(ctx context.Context, q recorder.Query) (map[string]recorder.Latency, error) {
	c.calls.Add(1)
	return c.MultiStats.LatencyByKey(ctx, q)
}
func (c *countingMulti) Series(ctx context.Context, q recorder.Query, step time.Duration) (map[string][]recorder.Bucket, error) {
	c.calls.Add(1)
	return c.MultiStats.Series(ctx, q, step)
}
func (c *countingMulti) UsageByKeyMulti(ctx context.Context, q recorder.Query, fs []status.Status) ([]map[string]int64, error) {
	c.calls.Add(1)
	return c.MultiStats.UsageByKeyMulti(ctx, q, fs)
}
func (c *countingMulti) SeriesMulti(ctx context.Context, q recorder.Query, step time.Duration, fs []status.Status) ([]map[string][]recorder.Bucket, error) {
	c.calls.Add(1)
	return c.MultiStats.SeriesMulti(ctx, q, step, fs)
}
func (c *countingMulti) LatencySeries(ctx context.Context, q recorder.Query, step time.Duration, keys []string) (map[string][]recorder.LatencyBucket, error) {
	c.calls.Add(1)
	return c.MultiStats.LatencySeries(ctx, q, step, keys)
}

// spread records events of every status over the 24 hours before now, on
// the fixture's keys and without a key.
func (f *fixture) spread() {
	keys := []string{"alpha", "bravo", "charlie", "delta", ""}
	for i := range 3000 {
		st := status.All[i%len(status.All)]
		key := keys[i%len(keys)]
		if key == "" {
			st = status.NoKeyAvailable
		}
		at := now.Add(-time.Duration(i) * 29 * time.Second)
		f.record(at, key, st, time.Duration(1+i%97)*time.Millisecond, 1+i%3)
	}
}

// TestMultiStatsAndFallbackAgree: the JSON API answers the same through a
// store's MultiStats as through the fallback's Stats calls, and with
// MultiStats makes two store calls per API call whatever the window.
func TestMultiStatsAndFallbackAgree(t *testing.T) {
	f := newFixture(t)
	f.standard()
	f.spread()
	counting := &countingMulti{MultiStats: f.store}
	multi := f.handler(t, dashboard.WithStats(counting))
	fallback := f.handler(t, dashboard.WithStats(statsOnly{f.store}))
	for _, api := range []string{"keys", "totals", "usage"} {
		for _, win := range []string{"15m", "1h", "24h"} {
			target := fmt.Sprintf("/api/%s?window=%s", api, win)
			counting.calls.Store(0)
			got := do(t, multi, "GET", target, nil)
			if n := counting.calls.Load(); n != 2 {
				t.Errorf("GET %s made %d store calls, want 2", target, n)
			}
			want := do(t, fallback, "GET", target, nil)
			if got.Code != 200 || want.Code != 200 {
				t.Fatalf("GET %s: %d and %d", target, got.Code, want.Code)
			}
			if !bytes.Equal(got.Body.Bytes(), want.Body.Bytes()) {
				t.Errorf("GET %s differs:\nMultiStats: %s\nfallback:   %s", target, got.Body, want.Body)
			}
			if api != "totals" && !bytes.Contains(got.Body.Bytes(), []byte(`"charlie`)) {
				t.Errorf("GET %s: no data for charlie: %s", target, got.Body)
			}
		}
	}
}
