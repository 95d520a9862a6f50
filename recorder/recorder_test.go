package recorder_test

import (
	"context"
	"errors"
	"strings"
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

// TestWrappersKeepTotalsStats: Fanout and KeepOpen answer TotalsBy
// through the store that answers their queries when it does (whether or
// not it answers MultiStats), and do not claim it otherwise.
func TestWrappersKeepTotalsStats(t *testing.T) {
	m, err := memory.New()
	if err != nil {
		t.Fatal(err)
	}
	type statsTotals interface {
		recorder.Stats
		recorder.TotalsStats
	}
	type statsRecorder struct {
		recorder.Recorder
		statsTotals
	}
	onlyStats := statsRecorder{m, struct{ statsTotals }{m}} // Stats and TotalsStats, no MultiStats
	e := recorder.Unknown()
	e.KeyID, e.Model, e.Time, e.Status, e.InputTokens, e.OutputTokens, e.Cost = "k", "m1", time.Now(), status.Success, 10, 2, 0.25
	for name, r := range map[string]recorder.Recorder{
		"Fanout":          recorder.Fanout(&counting{}, m),
		"KeepOpen":        recorder.KeepOpen(m),
		"Fanout/stats":    recorder.Fanout(onlyStats),
		"KeepOpen/stats":  recorder.KeepOpen(onlyStats),
		"Fanout/KeepOpen": recorder.Fanout(recorder.KeepOpen(m)),
	} {
		ts, ok := r.(recorder.TotalsStats)
		if !ok {
			t.Fatalf("%s does not answer TotalsBy", name)
		}
		_, multi := r.(recorder.MultiStats)
		if want := !strings.HasSuffix(name, "/stats"); multi != want {
			t.Errorf("%s: MultiStats %v, want %v", name, multi, want)
		}
		before, err := ts.TotalsBy(context.Background(), recorder.Query{}, recorder.ByModel)
		if err != nil {
			t.Fatal(err)
		}
		r.Record(e)
		got, err := ts.TotalsBy(context.Background(), recorder.Query{}, recorder.ByModel)
		if err != nil || got["m1"].Events != before["m1"].Events+1 || got["m1"].InputTokens != before["m1"].InputTokens+10 {
			t.Errorf("%s: TotalsBy = %+v, %v; want one more event of m1, 10 more input tokens than %+v", name, got, err, before)
		}
	}
	type plainStats struct {
		recorder.Recorder
		recorder.Stats
	}
	r := plainStats{&counting{}, struct{ recorder.Stats }{m}}
	if _, ok := recorder.Fanout(r).(recorder.TotalsStats); ok {
		t.Error("Fanout claims TotalsStats over a store without it")
	}
	if _, ok := recorder.KeepOpen(r).(recorder.TotalsStats); ok {
		t.Error("KeepOpen claims TotalsStats over a store without it")
	}
	if _, ok := recorder.Fanout(&counting{}, m, r).(recorder.TotalsStats); !ok {
		t.Error("Fanout lost TotalsStats of the store that answers its queries")
	}
}

// A query whose Until is before its Since is refused with ErrBadQuery, and
// the error shows both bounds as a reader writes times: RFC 3339 in UTC,
// without the monotonic clock reading time.Now carries ("m=+0.01").
func TestQueryCheckNamesBoundsReadably(t *testing.T) {
	since := time.Now()
	err := recorder.Query{Since: since, Until: since.Add(-time.Hour)}.Check()
	if !errors.Is(err, recorder.ErrBadQuery) {
		t.Fatalf("Check = %v, want an error matching ErrBadQuery", err)
	}
	msg := err.Error()
	if strings.Contains(msg, "m=") {
		t.Errorf("error %q shows the monotonic clock reading", msg)
	}
	for _, want := range []string{since.UTC().Format(time.RFC3339Nano), since.Add(-time.Hour).UTC().Format(time.RFC3339Nano)} {
		if !strings.Contains(msg, want) {
			t.Errorf("error %q does not show %s", msg, want)
		}
	}
	if err := (recorder.Query{Since: since, Until: since}).Check(); err != nil {
		t.Errorf("equal bounds: Check = %v, want nil (an empty window)", err)
	}
}
