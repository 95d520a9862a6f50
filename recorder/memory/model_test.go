package memory

import (
	"context"
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/apipool-ng/apipool/recorder"
	"github.com/apipool-ng/apipool/status"
)

// model is a plain reference for the store's counting: it keeps every event
// and applies the documented rules one event at a time.
type model struct {
	minutes int64
	g       int64 // newest accepted second, -1 if none
	newest  map[seriesID]int64
	events  []modelEvent
	tooOld  int
}

type modelEvent struct {
	id  seriesID
	sec int64
	st  status.Status
	u   consumed
}

func newModel(retention time.Duration) *model {
	return &model{minutes: int64(retention / time.Minute), g: -1, newest: map[seriesID]int64{}}
}

func (m *model) record(e recorder.Event) {
	sec := e.Time.Unix()
	if sec < 0 || (m.g >= 0 && sec/60 <= m.g/60-m.minutes) {
		m.tooOld++
		return
	}
	id := seriesID{e.KeyID, e.Model, e.Client}
	m.events = append(m.events, modelEvent{id, sec, e.Status, consumed{e.InputTokens, e.OutputTokens, e.CachedTokens, e.Units, e.Cost}})
	if n, ok := m.newest[id]; !ok || sec > n {
		m.newest[id] = sec
	}
	m.g = max(m.g, sec)
}

// at returns the time an event counts at, and whether it is still held.
func (m *model) at(ev modelEvent) (int64, bool) {
	kn := m.newest[ev.id]
	mn := ev.sec / 60
	if mn < m.g/60-m.minutes+1 || mn < kn/60-m.minutes+1 {
		return 0, false
	}
	if ev.sec > kn-secondSlots {
		return ev.sec, true
	}
	return mn * 60, true
}

// selected reports whether q's key, status, model and client select ev.
func selected(ev modelEvent, q recorder.Query) bool {
	return (q.KeyID == "" || ev.id.key == q.KeyID) && ev.st.Matches(q.Status) &&
		(q.Model == "" || ev.id.model == q.Model) && (q.Client == "" || ev.id.client == q.Client)
}

func inWindow(t int64, q recorder.Query) bool {
	return (q.Since.IsZero() || !time.Unix(t, 0).Before(q.Since)) && (q.Until.IsZero() || time.Unix(t, 0).Before(q.Until))
}

func (m *model) usage(q recorder.Query) map[string]int64 {
	out := map[string]int64{}
	for _, ev := range m.events {
		t, ok := m.at(ev)
		if !ok || !selected(ev, q) || !inWindow(t, q) {
			continue
		}
		out[ev.id.key]++
	}
	return out
}

// totals answers TotalsBy: every event held counts at its minute's start.
func (m *model) totals(q recorder.Query, by recorder.GroupBy) map[string]recorder.Totals {
	out := map[string]recorder.Totals{}
	for _, ev := range m.events {
		if _, ok := m.at(ev); !ok || !selected(ev, q) || !inWindow(ev.sec/60*60, q) {
			continue
		}
		name := [...]string{ev.id.key, ev.id.model, ev.id.client}[by]
		t := out[name]
		t.Events++
		u := ev.u
		if u.in >= 0 {
			t.InputTokens += u.in
		}
		if u.out >= 0 {
			t.OutputTokens += u.out
		}
		if u.cached >= 0 {
			t.CachedTokens += u.cached
		}
		if !u.tokensKnown() {
			t.TokensUnknown++
		}
		if u.units >= 0 {
			t.Units += u.units
		} else {
			t.UnitsUnknown++
		}
		if u.cost >= 0 {
			t.Cost += u.cost
		} else {
			t.CostUnknown++
		}
		out[name] = t
	}
	return out
}

func (m *model) series(q recorder.Query, step time.Duration) map[string][]int64 {
	st := int64(step / time.Second)
	first := floorDiv(q.Since.Unix(), st)
	last := q.Until.Add(-time.Nanosecond).Unix()
	nb := floorDiv(last, st) - first + 1
	out := map[string][]int64{}
	for _, ev := range m.events {
		t, ok := m.at(ev)
		if !ok || !selected(ev, q) || !inWindow(t, q) {
			continue
		}
		if out[ev.id.key] == nil {
			out[ev.id.key] = make([]int64, nb)
		}
		out[ev.id.key][floorDiv(t, st)-first]++
	}
	return out
}

// randomStatus returns a status, now and then one that package status does
// not define.
func randomStatus(r *rand.Rand) status.Status {
	switch r.IntN(20) {
	case 0:
		return status.Status(2)
	case 1:
		return status.Status(200)
	case 2:
		return status.Unknown
	}
	return status.All[r.IntN(len(status.All))]
}

func TestModelRandom(t *testing.T) {
	base := time.Date(2026, 1, 2, 3, 0, 0, 0, time.UTC)
	for seed := range uint64(12) {
		t.Run(fmt.Sprint("seed", seed), func(t *testing.T) {
			r := rand.New(rand.NewPCG(seed, 7))
			retention := []time.Duration{time.Hour, 2 * time.Hour, 6 * time.Hour, 24 * time.Hour}[seed%4]
			s := mustNew(t, WithRetention(retention), WithClock(clockFunc(func() time.Time { return base.Add(1000 * time.Hour) })))
			defer s.Close(context.Background())
			m := newModel(retention)
			keys := []string{"", "a", "b", "c", "d"}
			models := []string{"", "m1", "m2"}
			clients := []string{"", "web", "cli"}
			// On odd seeds, the events go to three stripes in turn, as if
			// the walk moved from processor to processor: the store must
			// count them as if held in one.
			if seed%2 == 1 {
				turn := 0
				s.stripes.pick = func() *stripe {
					all := *s.stripes.all.Load()
					if len(all) < 3 {
						return s.stripes.add()
					}
					turn++
					return all[turn%3]
				}
			}
			// A walk forward through time with jitter, jumps, and stragglers.
			now := base
			for range 4000 {
				switch r.IntN(100) {
				case 0:
					now = now.Add(time.Duration(r.IntN(3*3600)) * time.Second) // a jump
				case 1, 2:
					now = now.Add(-time.Duration(r.Int64N(int64(retention + 2*time.Hour)))) // back in time
				default:
					now = now.Add(time.Duration(r.IntN(20_000)) * time.Millisecond)
				}
				at := now
				if r.IntN(10) == 0 {
					at = at.Add(-time.Duration(r.IntN(1200)) * time.Second) // a straggler
				}
				e := recorder.Unknown()
				e.Time, e.KeyID, e.Status, e.Latency = at, keys[r.IntN(len(keys))], randomStatus(r), time.Duration(r.IntN(1e6))*time.Microsecond
				if seed%3 != 0 { // every third seed without models and clients
					e.Model, e.Client = models[r.IntN(len(models))], clients[r.IntN(len(clients))]
				}
				if r.IntN(3) != 0 { // usage known, in part or whole
					e.InputTokens, e.OutputTokens, e.CachedTokens = int64(r.IntN(3))-1, int64(r.IntN(1000)), int64(r.IntN(5))-1
					e.Units, e.Cost = float64(r.IntN(4)-1)/2, float64(r.IntN(3)-1)/4 // multiples of 1/4: sums exact
				}
				s.Record(e)
				m.record(e)
			}
			if got := s.TooOld(); got != uint64(m.tooOld) {
				t.Errorf("TooOld() = %d, model %d", got, m.tooOld)
			}
			if m.tooOld == 0 || len(m.events) == 0 {
				t.Fatalf("the walk is too tame: %d too old, %d kept", m.tooOld, len(m.events))
			}
			newest := time.Unix(m.g, 0)
			filters := []status.Status{status.Unknown, status.Success, status.Failed, status.ReachLimit, status.Timeout, status.NoKeyAvailable}
			ctx := context.Background()
			for i := range 300 {
				q := recorder.Query{Status: filters[r.IntN(len(filters))]}
				if r.IntN(3) == 0 {
					q.KeyID = keys[1+r.IntN(len(keys)-1)]
				}
				if r.IntN(3) == 0 {
					q.Model = models[r.IntN(len(models))]
				}
				if r.IntN(4) == 0 {
					q.Client = clients[r.IntN(len(clients))]
				}
				// Windows: whole minutes, whole seconds, or with nanoseconds,
				// mostly near the newest event.
				span := retention + 10*time.Minute
				if r.IntN(2) == 0 {
					span = 10 * time.Minute
				}
				since := newest.Add(-time.Duration(r.Int64N(int64(span))))
				until := since.Add(time.Duration(r.Int64N(int64(span))))
				switch r.IntN(3) {
				case 0:
					since, until = since.Truncate(time.Minute), until.Truncate(time.Minute)
				case 1:
					since, until = since.Truncate(time.Second), until.Truncate(time.Second)
				}
				if r.IntN(8) != 0 {
					q.Since = since
				}
				if r.IntN(8) != 0 {
					q.Until = until
				}
				want := m.usage(q)
				got, err := s.UsageByKey(ctx, q)
				if err != nil {
					t.Fatal(err)
				}
				if !maps.Equal(got, want) {
					t.Fatalf("query %d %+v: UsageByKey = %v, model %v", i, q, got, want)
				}
				var total int64
				for _, n := range want {
					total += n
				}
				if n, err := s.UsageCount(ctx, q); err != nil || n != total {
					t.Fatalf("query %d %+v: UsageCount = %d, %v, model %d", i, q, n, err, total)
				}
				lat, err := s.LatencyByKey(ctx, q)
				if err != nil {
					t.Fatal(err)
				}
				if len(lat) != len(want) {
					t.Fatalf("query %d %+v: LatencyByKey has %d keys, model %d", i, q, len(lat), len(want))
				}
				for k, l := range lat {
					if l.Count != want[k] || l.P50 > l.P90 || l.P90 > l.P99 || l.P99 > time.Second+time.Second/16 {
						t.Fatalf("query %d %+v: LatencyByKey[%q] = %+v, model count %d", i, q, k, l, want[k])
					}
				}
				by := recorder.GroupBy(r.IntN(3))
				tot, err := s.TotalsBy(ctx, q, by)
				if err != nil {
					t.Fatal(err)
				}
				if wantTot := m.totals(q, by); !maps.Equal(tot, wantTot) {
					t.Fatalf("query %d %+v: TotalsBy(%d) = %+v, model %+v", i, q, by, tot, wantTot)
				}
				if q.Since.IsZero() || q.Until.IsZero() || !q.Until.After(q.Since) {
					continue
				}
				step := []time.Duration{time.Second, 7 * time.Second, time.Minute, 7 * time.Minute, time.Hour}[r.IntN(5)]
				if q.Until.Sub(q.Since)/step > MaxSeriesBuckets {
					step = time.Hour
				}
				ser, err := s.Series(ctx, q, step)
				if err != nil {
					t.Fatalf("query %d %+v step %v: %v", i, q, step, err)
				}
				wantSer := m.series(q, step)
				if len(ser) != len(wantSer) {
					t.Fatalf("query %d %+v step %v: Series has keys %v, model %v", i, q, step, slices.Sorted(maps.Keys(ser)), slices.Sorted(maps.Keys(wantSer)))
				}
				for k, bs := range ser {
					ws := wantSer[k]
					if len(bs) != len(ws) {
						t.Fatalf("query %d %+v step %v: key %q has %d buckets, model %d", i, q, step, k, len(bs), len(ws))
					}
					for j, b := range bs {
						if b.Count != ws[j] || b.Start.Unix()%int64(step/time.Second) != 0 {
							t.Fatalf("query %d %+v step %v: key %q bucket %d = %v %d, model %d", i, q, step, k, j, b.Start, b.Count, ws[j])
						}
					}
				}
			}
		})
	}
}
