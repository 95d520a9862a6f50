package clickhouse

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/apipool-ng/apipool/internal/chtest"
	"github.com/apipool-ng/apipool/recorder"
	"github.com/apipool-ng/apipool/status"
)

// TestTrickleBatchesByInterval checks that a steady trickle of events is
// sent about once per FlushInterval, not in a stream of tiny inserts once
// the interval has ticked.
func TestTrickleBatchesByInterval(t *testing.T) {
	srv := chtest.Shared(t)
	s, err := New(context.Background(), Config{Addrs: []string{srv.Addr}, Table: fmt.Sprintf("trickle_%d", time.Now().UnixNano()), FlushInterval: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close(context.Background())
	start := time.Now()
	n := 0
	for time.Since(start) < time.Second {
		s.Record(recorder.Event{KeyID: "k", Status: status.Success})
		n++
		time.Sleep(time.Millisecond)
	}
	if err := s.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	elapsed := time.Since(start)
	batches := s.w.batches.Load()
	// One batch per interval, one for the Flush, and slack for a slow
	// machine; a writer that sends whatever is queued after each tick
	// makes hundreds.
	if limit := uint64(elapsed/(100*time.Millisecond)) + 5; batches > limit || batches < 2 {
		t.Errorf("%d events in %v went in %d batches, want 2 to %d", n, elapsed, batches, limit)
	}
	if got, err := s.UsageCount(context.Background(), recorder.Query{}); err != nil || got != int64(n) {
		t.Errorf("UsageCount = %d, %v; want %d", got, err, n)
	}
}
