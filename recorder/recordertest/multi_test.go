package recordertest

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/apipool-ng/apipool/recorder"
	"github.com/apipool-ng/apipool/status"
)

// multiStore answers recorder.MultiStats through its Stats methods, one
// call per filter or bucket, as a caller's fallback does; broken names a
// deliberate bug.
type multiStore struct {
	*exactStore
	broken string
}

func (s *multiStore) UsageByKeyMulti(ctx context.Context, q recorder.Query, filters []status.Status) ([]map[string]int64, error) {
	if err := q.Check(); err != nil {
		return nil, err
	}
	if q.Status != status.Unknown && s.broken != "multiKeepsStatus" {
		return nil, fmt.Errorf("%w: status set", recorder.ErrBadQuery)
	}
	var outs []map[string]int64
	for i, f := range filters {
		q.Status = f
		m, err := s.UsageByKey(ctx, q)
		if err != nil {
			return nil, err
		}
		if s.broken == "multiLastOffByOne" && i == len(filters)-1 {
			for k := range m {
				m[k]++
			}
		}
		outs = append(outs, m)
	}
	return outs, nil
}

func (s *multiStore) SeriesMulti(ctx context.Context, q recorder.Query, step time.Duration, filters []status.Status) ([]map[string][]recorder.Bucket, error) {
	if q.Status != status.Unknown {
		return nil, fmt.Errorf("%w: status set", recorder.ErrBadQuery)
	}
	var outs []map[string][]recorder.Bucket
	for _, f := range filters {
		q.Status = f
		if s.broken == "seriesMultiFirstFilter" {
			q.Status = filters[0]
		}
		m, err := s.Series(ctx, q, step)
		if err != nil {
			return nil, err
		}
		outs = append(outs, m)
	}
	return outs, nil
}

func (s *multiStore) LatencySeries(ctx context.Context, q recorder.Query, step time.Duration, keys []string) (map[string][]recorder.LatencyBucket, error) {
	if step == 0 {
		step = time.Minute
	}
	if len(keys) > 0 && q.KeyID != "" {
		return nil, fmt.Errorf("%w: keys and KeyID", recorder.ErrBadQuery)
	}
	series, err := s.Series(ctx, q, step)
	if err != nil {
		return nil, err
	}
	out := map[string][]recorder.LatencyBucket{}
	for k, bs := range series {
		if len(keys) > 0 && !slices.Contains(keys, k) && s.broken != "latencySeriesKeysIgnored" {
			continue
		}
		lbs := make([]recorder.LatencyBucket, len(bs))
		for j, b := range bs {
			lbs[j].Start = b.Start
			bq := q
			bq.KeyID = k
			bq.Since, bq.Until = later(b.Start, q.Since), earlier(b.Start.Add(step), q.Until)
			if s.broken == "latencySeriesUnclipped" {
				bq.Since, bq.Until = b.Start, b.Start.Add(step)
			}
			m, err := s.LatencyByKey(ctx, bq)
			if err != nil {
				return nil, err
			}
			lbs[j].Latency = m[k]
			if s.broken == "latencySeriesP50IsP90" {
				lbs[j].P50 = lbs[j].P90
			}
		}
		out[k] = lbs
	}
	return out, nil
}

var brokenMultiStores = []string{"multiKeepsStatus", "multiLastOffByOne", "seriesMultiFirstFilter", "latencySeriesUnclipped", "latencySeriesP50IsP90", "latencySeriesKeysIgnored"}

// TestMultiStores runs the suite on a store whose MultiStats answers come
// from its Stats methods (so pass), and in child processes on broken ones,
// which must fail.
func TestMultiStores(t *testing.T) {
	if b := multiBroken(); b != "" {
		Run(t, func(t *testing.T) Store { return &multiStore{exactStore: &exactStore{}, broken: b} })
		return
	}
	Run(t, func(t *testing.T) Store { return &multiStore{exactStore: &exactStore{}} })
	for _, b := range brokenMultiStores {
		t.Run("broken "+b, func(t *testing.T) {
			out, failed := runChild(t, "^TestMultiStores$", "RECORDERTEST_BROKEN=multi:"+b)
			if !failed || !strings.Contains(out, "--- FAIL: TestMultiStores") {
				t.Errorf("the suite passed a store with bug %q:\n%s", b, out)
			}
		})
	}
}

// multiBroken is the bug of the broken multi store a child runs, or "".
func multiBroken() string {
	b, _ := strings.CutPrefix(os.Getenv("RECORDERTEST_BROKEN"), "multi:")
	if b == os.Getenv("RECORDERTEST_BROKEN") {
		return ""
	}
	return b
}

// runChild runs the tests matching run in a child process with env added,
// and reports its output and whether it failed.
func runChild(t *testing.T, run, env string) (string, bool) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run="+run, "-test.count=1")
	cmd.Env = append(os.Environ(), env)
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	return string(out), errors.As(err, &ee)
}
