package clickhouse_test

import (
	"context"
	"testing"
	"time"

	"github.com/apipool-ng/apipool/internal/chtest"
	"github.com/apipool-ng/apipool/recorder/clickhouse"
	"github.com/apipool-ng/apipool/recorder/recordertest"
)

// conformanceStore opens a store for the suite, which closes it.
func conformanceStore(t *testing.T, cfg clickhouse.Config) recordertest.Store {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s, err := clickhouse.New(ctx, cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return s
}

// TestConformance runs the suite with the default RollupAfter: windows of
// an hour or more read the rollup.
func TestConformance(t *testing.T) {
	srv := chtest.Shared(t)
	recordertest.Run(t, func(t *testing.T) recordertest.Store {
		return conformanceStore(t, testConfig(t, srv))
	})
}

// TestConformanceRawOnly runs the suite reading the event table alone.
func TestConformanceRawOnly(t *testing.T) {
	srv := chtest.Shared(t)
	recordertest.Run(t, func(t *testing.T) recordertest.Store {
		cfg := testConfig(t, srv)
		cfg.RollupAfter = -1
		return conformanceStore(t, cfg)
	})
}

// TestConformanceRollupAlways reads the rollup for every whole minute.
func TestConformanceRollupAlways(t *testing.T) {
	srv := chtest.Shared(t)
	recordertest.Run(t, func(t *testing.T) recordertest.Store {
		cfg := testConfig(t, srv)
		cfg.RollupAfter = time.Nanosecond
		return conformanceStore(t, cfg)
	})
}
