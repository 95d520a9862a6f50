package memory_test

import (
	"context"
	"fmt"
	"log"
	"time"

	"github.com/apipool-ng/apipool/recorder"
	"github.com/apipool-ng/apipool/recorder/memory"
	"github.com/apipool-ng/apipool/status"
)

func Example() {
	s, err := memory.New()
	if err != nil {
		log.Fatal(err)
	}
	defer s.Close(context.Background())

	now := time.Now()
	for i := range 10 {
		st := status.Success
		if i%5 == 4 {
			st = status.ReachLimit
		}
		s.Record(recorder.Event{Time: now, KeyID: "key-1", Status: st, Latency: 200 * time.Millisecond})
	}
	s.Record(recorder.Event{Time: now, Status: status.NoKeyAvailable})

	ctx := context.Background()
	recent := recorder.Query{Since: now.Add(-5 * time.Minute)}
	byKey, _ := s.UsageByKey(ctx, recent)
	fmt.Println("usage:", byKey)

	recent.Status = status.ReachLimit
	limited, _ := s.UsageCount(ctx, recent)
	fmt.Println("rate limited:", limited)

	lat, _ := s.LatencyByKey(ctx, recorder.Query{KeyID: "key-1"})
	fmt.Println("key-1:", lat["key-1"].Count, "attempts, median", lat["key-1"].P50.Round(10*time.Millisecond))
	// Output:
	// usage: map[:1 key-1:10]
	// rate limited: 2
	// key-1: 10 attempts, median 200ms
}
