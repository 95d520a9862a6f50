package recorder_test

import (
	"context"
	"testing"
	"time"

	"github.com/apipool-ng/apipool/status"

	"github.com/apipool-ng/apipool/recorder"
	"github.com/apipool-ng/apipool/recorder/memory"
)

type counting struct{ n int }

func (c *counting) Record(recorder.Event)       { c.n++ }
func (c *counting) Close(context.Context) error { return nil }

func TestFanoutRecordsToAllAndAnswersStats(t *testing.T) {
	a, b := &counting{}, &counting{}
	m := memory.New()
	f := recorder.Fanout(a, nil, m, b)
	f.Record(recorder.Event{KeyID: "k", Time: time.Now(), Status: status.Success})
	if a.n != 1 || b.n != 1 {
		t.Fatalf("counts %d %d, want 1 1", a.n, b.n)
	}
	st, ok := f.(recorder.Stats)
	if !ok {
		t.Fatal("a fan-out with a memory store does not answer stats")
	}
	n, err := st.UsageCount(context.Background(), recorder.Query{})
	if err != nil || n != 1 {
		t.Fatalf("UsageCount = %d, %v; want 1", n, err)
	}
	if _, ok := recorder.Fanout(a, b).(recorder.Stats); ok {
		t.Fatal("a fan-out of recorders without stats claims to answer stats")
	}
}
