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
	m, err := memory.New()
	if err != nil {
		t.Fatal(err)
	}
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

// TestWrappersKeepMultiStats: Fanout and KeepOpen answer MultiStats when
// the store that answers their queries does, and not otherwise.
func TestWrappersKeepMultiStats(t *testing.T) {
	m, err := memory.New()
	if err != nil {
		t.Fatal(err)
	}
	for name, r := range map[string]recorder.Recorder{
		"Fanout":   recorder.Fanout(&counting{}, m),
		"KeepOpen": recorder.KeepOpen(m),
	} {
		ms, ok := r.(recorder.MultiStats)
		if !ok {
			t.Fatalf("%s of a memory store does not answer MultiStats", name)
		}
		r.Record(recorder.Event{KeyID: "k", Time: time.Now(), Status: status.Success})
		got, err := ms.UsageByKeyMulti(context.Background(), recorder.Query{}, []status.Status{status.Unknown, status.Failed})
		if err != nil || len(got) != 2 || got[0]["k"] == 0 || len(got[1]) != 0 {
			t.Errorf("%s: UsageByKeyMulti = %v, %v; want k counted under Unknown only", name, got, err)
		}
	}
	onlyStats := struct{ recorder.Stats }{m}
	type statsRecorder struct {
		recorder.Recorder
		recorder.Stats
	}
	r := statsRecorder{&counting{}, onlyStats}
	if _, ok := recorder.Fanout(r).(recorder.MultiStats); ok {
		t.Error("Fanout claims MultiStats over a store without it")
	}
	if _, ok := recorder.KeepOpen(r).(recorder.MultiStats); ok {
		t.Error("KeepOpen claims MultiStats over a store without it")
	}
	if _, ok := recorder.KeepOpen(r).(recorder.Stats); !ok {
		t.Error("KeepOpen lost Stats")
	}
}
