package recordertest

import (
	"context"
	"fmt"
	"maps"
	"math"
	"slices"
	"testing"
	"time"

	"github.com/apipool-ng/apipool/recorder"
	"github.com/apipool-ng/apipool/status"
)

// groupName returns the name TotalsBy groups e under.
func groupName(e recorder.Event, by recorder.GroupBy) string {
	switch by {
	case recorder.ByModel:
		return e.Model
	case recorder.ByClient:
		return e.Client
	}
	return e.KeyID
}

// wantTotals computes TotalsBy's answer from the events.
func wantTotals(evs []recorder.Event, q recorder.Query, by recorder.GroupBy) map[string]recorder.Totals {
	out := map[string]recorder.Totals{}
	for _, e := range evs {
		if !matches(e, q) {
			continue
		}
		name := groupName(e, by)
		t := out[name]
		t.Events++
		if e.InputTokens >= 0 {
			t.InputTokens += e.InputTokens
		}
		if e.OutputTokens >= 0 {
			t.OutputTokens += e.OutputTokens
		}
		if e.CachedTokens >= 0 {
			t.CachedTokens += e.CachedTokens
		}
		if e.InputTokens < 0 || e.OutputTokens < 0 {
			t.TokensUnknown++
		}
		// NaN, an infinity or a negative amount is not known.
		if e.Units >= 0 && e.Units <= math.MaxFloat64 {
			t.Units += e.Units
		} else {
			t.UnitsUnknown++
		}
		if e.Cost >= 0 && e.Cost <= math.MaxFloat64 {
			t.Cost += e.Cost
		} else {
			t.CostUnknown++
		}
		out[name] = t
	}
	return out
}

// totalsEqual compares totals: counts exactly, float sums within a
// billionth (they may be added in any order).
func totalsEqual(a, b recorder.Totals) bool {
	near := func(x, y float64) bool { return math.Abs(x-y) <= 1e-9*max(math.Abs(x), math.Abs(y))+1e-15 }
	fa, fb := a, b
	fa.Units, fa.Cost, fb.Units, fb.Cost = 0, 0, 0, 0
	return fa == fb && near(a.Units, b.Units) && near(a.Cost, b.Cost)
}

func totalsMapEqual(a, b map[string]recorder.Totals) bool {
	return maps.EqualFunc(a, b, totalsEqual)
}

// minuteWindows are the suite's windows whose bounds are whole minutes or
// unbounded: TotalsBy is checked on those.
func minuteWindows(base time.Time) []window {
	var out []window
	for _, w := range windows(base) {
		if w.since.Truncate(time.Minute).Equal(w.since) && w.until.Truncate(time.Minute).Equal(w.until) {
			out = append(out, w)
		}
	}
	return out
}

// testTotalsBy checks TotalsBy against the events, by key, model and
// client, and a few answers by hand.
func testTotalsBy(t *testing.T, s recorder.TotalsStats, base time.Time, evs []recorder.Event) {
	ctx := context.Background()
	filters := append([]recorder.Query{{}, {Status: status.Success}, {Status: status.Failed}, {Status: status.ReachLimit},
		{KeyID: KeyAlpha}, {KeyID: KeyGamma}, {KeyID: "no such key"}}, modelQueries()...)
	checked := 0
	for _, w := range minuteWindows(base) {
		for _, f := range filters {
			q := f
			q.Since, q.Until = w.since, w.until
			for _, by := range []recorder.GroupBy{recorder.ByKey, recorder.ByModel, recorder.ByClient} {
				want := wantTotals(evs, q, by)
				got, err := s.TotalsBy(ctx, q, by)
				if err != nil {
					t.Errorf("TotalsBy(%s, %s): %v", describe(q), byName(by), err)
					continue
				}
				if !totalsMapEqual(got, want) {
					t.Errorf("TotalsBy(%s, %s) =\n%s\nwant\n%s", describe(q), byName(by), showTotals(got), showTotals(want))
				}
				checked++
			}
		}
	}
	if checked < 300 {
		t.Errorf("only %d TotalsBy checks ran", checked)
	}
	// By hand. Gamma: units said by its 7 successes (2.5, or a known 0),
	// not by its 2 invalid keys; no tokens, no cost.
	got, err := s.TotalsBy(ctx, recorder.Query{KeyID: KeyGamma}, recorder.ByKey)
	g := got[KeyGamma]
	if err != nil || len(got) != 1 || g.Events != 9 || g.TokensUnknown != 9 || g.CostUnknown != 9 || g.UnitsUnknown != 2 ||
		g.InputTokens != 0 || g.Cost != 0 || g.Units <= 0 || math.Mod(g.Units, 2.5) != 0 || g.Units >= 7*2.5 {
		t.Errorf("TotalsBy(gamma) = %+v, %v; want 9 events, 2 without units, the others' units in steps of 2.5 (some 0), no tokens nor cost", got, err)
	}
	// ModelB has no price: every event of it has an unknown cost, and
	// its known tokens are summed all the same.
	got, err = s.TotalsBy(ctx, recorder.Query{Model: ModelB, Status: status.Success}, recorder.ByModel)
	b := got[ModelB]
	if err != nil || len(got) != 1 || b.Events == 0 || b.CostUnknown != b.Events || b.Cost != 0 || b.InputTokens < 100*b.Events {
		t.Errorf("TotalsBy(model B successes) = %+v, %v; want every cost unknown, at least 100 input tokens an event", got, err)
	}
	// The events of no model are grouped under "": gamma's 9 and 11 of
	// the empty key's 21; every group's events add up to all of them.
	got, err = s.TotalsBy(ctx, recorder.Query{}, recorder.ByModel)
	var all int64
	for _, v := range got {
		all += v.Events
	}
	if none := got[""]; err != nil || none.Events != 20 || none.TokensUnknown != 20 || none.CostUnknown != 20 || all != 585 || len(got) != 3 {
		t.Errorf(`TotalsBy(everything, by model) = %+v, %v; want 20 events under "", without tokens nor cost, and 585 in all`, got, err)
	}
}

func byName(by recorder.GroupBy) string {
	return [...]string{"by key", "by model", "by client"}[by]
}

func showTotals(m map[string]recorder.Totals) string {
	s := ""
	for _, k := range slices.Sorted(maps.Keys(m)) {
		s += "  " + k + ": " + fmtTotals(m[k]) + "\n"
	}
	return s
}

func fmtTotals(t recorder.Totals) string {
	return fmt.Sprintf("%+v", t)
}

// testUsageValues records events with values at the edges and checks
// that the Model and Client filters find them and that TotalsBy gives
// their values back.
func testUsageValues(t *testing.T, s Store, base time.Time) {
	ts, totals := s.(recorder.TotalsStats)
	const (
		oddModel  = `o'model "x" \ ü-模型`
		oddClient = `client; DROP TABLE x; -- 'é'`
	)
	var evs []recorder.Event
	add := func(model, client string, in, out, cached int64, units, cost float64) {
		e := recorder.Unknown()
		e.Time = base.Add(time.Duration(len(evs)) * time.Minute)
		e.KeyID, e.Status, e.Latency = KeyAlpha, status.Success, 10*time.Millisecond
		e.Model, e.Client = model, client
		e.InputTokens, e.OutputTokens, e.CachedTokens, e.Units, e.Cost = in, out, cached, units, cost
		evs = append(evs, e)
		s.Record(e)
	}
	add(oddModel, oddClient, 1<<40, 0, -1, 0.001, 1e-9)
	add(oddModel, oddClient, 0, 1<<33, 0, -1, 0)
	add(oddModel, "", -1, -1, -1, -1, -1)
	add("", oddClient, 7, 3, 2, 1e6, 12345.678)
	add(oddModel, "", 5, 5, -1, math.NaN(), math.Inf(1)) // amounts no store can hold: not known
	flush(t, s)
	ctx := context.Background()
	for _, q := range []recorder.Query{{Model: oddModel}, {Client: oddClient}, {Model: oddModel, Client: oddClient}, {Model: oddModel + " "}} {
		want := wantUsage(evs, q)
		if got, err := s.UsageByKey(ctx, q); err != nil || !maps.Equal(got, want) {
			t.Errorf("UsageByKey(%s) = %v, %v; want %v", describe(q), got, err, want)
		}
		if !totals {
			continue
		}
		for _, by := range []recorder.GroupBy{recorder.ByKey, recorder.ByModel, recorder.ByClient} {
			want := wantTotals(evs, q, by)
			if got, err := ts.TotalsBy(ctx, q, by); err != nil || !totalsMapEqual(got, want) {
				t.Errorf("TotalsBy(%s, %s) = %v, %v; want\n%s", describe(q), byName(by), got, err, showTotals(want))
			}
		}
	}
	if !totals {
		return
	}
	got, err := ts.TotalsBy(ctx, recorder.Query{}, recorder.ByModel)
	want := map[string]recorder.Totals{
		oddModel: {Events: 4, InputTokens: 1<<40 + 5, OutputTokens: 1<<33 + 5, TokensUnknown: 1, Units: 0.001, UnitsUnknown: 3, Cost: 1e-9, CostUnknown: 2},
		"":       {Events: 1, InputTokens: 7, OutputTokens: 3, CachedTokens: 2, Units: 1e6, Cost: 12345.678},
	}
	if err != nil || !totalsMapEqual(got, want) {
		t.Errorf("TotalsBy(everything, by model) = %v, %v; want\n%s", got, err, showTotals(want))
	}
}
