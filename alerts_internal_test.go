package apipool

import (
	"context"
	"net/http"
	"testing"
	"time"

	"github.com/apipool-ng/apipool/clock"
	"github.com/apipool-ng/apipool/internal/fakeclock"
)

type fakeClockAdapter struct{ *fakeclock.Clock }

func (a fakeClockAdapter) NewTimer(d time.Duration) clock.Timer { return a.Clock.NewTimer(d) }

// The budgets raise their alerts through Transport.alert, which names the
// pool and dates an alert that has no time.
func TestAlertHookForBudgets(t *testing.T) {
	start := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	clk := fakeClockAdapter{fakeclock.New(start)}
	got := make(chan Alert, 4)
	p, err := New([]Key{{ID: "k0", Secret: "s0"}}, WithClock(clk), WithAlerts(func(a Alert) { got <- a }, AlertSettings{Pool: "llm"}))
	if err != nil {
		t.Fatal(err)
	}
	end := start.Add(12 * time.Hour)
	p.alert(Alert{Kind: AlertBudgetNear, Client: "team-a", Until: end, Reason: "80% of 1000000 tokens a day"})
	if err := p.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	a := <-got
	want := Alert{Kind: AlertBudgetNear, Pool: "llm", Client: "team-a", Time: start, Until: end, Reason: "80% of 1000000 tokens a day"}
	if a != want {
		t.Fatalf("alert %+v,\nwant %+v", a, want)
	}
}

// BenchmarkAlertsRoundTrip is a whole GET through a 2-key pool over a base
// that answers 200 at once, without alerts and with WithAlerts: what the
// alerts cost a request that changes no key's state (a nil check and an
// atomic load).
func BenchmarkAlertsRoundTrip(b *testing.B) {
	keys := []Key{{ID: "a", Secret: "secret-a"}, {ID: "b", Secret: "secret-b"}}
	for _, c := range []struct {
		name string
		opts []Option
	}{
		{"off", nil},
		{"on", []Option{WithAlerts(func(Alert) {}, AlertSettings{})}},
	} {
		b.Run(c.name, func(b *testing.B) {
			pool, err := New(keys, append([]Option{WithBase(telBenchRT{}), WithRecorder(nil)}, c.opts...)...)
			if err != nil {
				b.Fatal(err)
			}
			defer pool.Close(context.Background())
			req, _ := http.NewRequest("GET", "http://api.test/v1/x", nil)
			b.ReportAllocs()
			for b.Loop() {
				resp, err := pool.RoundTrip(req)
				if err != nil {
					b.Fatal(err)
				}
				resp.Body.Close()
			}
		})
	}
}
