package dashboard_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/apipool-ng/apipool/dashboard"
	"github.com/apipool-ng/apipool/recorder"
	"github.com/apipool-ng/apipool/status"
)

type clientsBody struct {
	Time       time.Time               `json:"time"`
	Window     string                  `json:"window"`
	Stats      bool                    `json:"stats"`
	Totals     bool                    `json:"totals"`
	StatsError string                  `json:"stats_error"`
	Count      int                     `json:"count"`
	Clients    []dashboard.ClientRow   `json:"clients"`
	Others     *dashboard.OtherClients `json:"others"`
}

const scriptClient = `<script>document.body.dataset.pwned=1</script>"&'`

// used records one attempt of client at, through key alpha, with the
// given tokens (in, out, cached) and cost; -1 is not known.
func (f *fixture) used(at time.Time, client string, in, out, cached int64, cost float64) {
	e := recorder.Unknown()
	e.Time, e.KeyID, e.Status, e.Attempt, e.Client = at, "alpha", status.Success, 1, client
	e.InputTokens, e.OutputTokens, e.CachedTokens, e.Cost = in, out, cached, cost
	f.store.Record(e)
}

// clientEvents: team-a 3 attempts of known tokens and cost (and one 2 h
// before, outside 1h); team-b one with tokens and no cost, one with
// neither; 4 attempts without a client, nothing known; one of a client
// whose name is markup.
func (f *fixture) clientEvents() {
	at := now.Add(-5 * time.Minute)
	for range 3 {
		f.used(at, "team-a", 100, 20, 10, 0.01)
	}
	f.used(now.Add(-2*time.Hour), "team-a", 1000, 1000, 0, 1)
	f.used(at, "team-b", 50, 5, 0, -1)
	f.used(at, "team-b", -1, -1, -1, -1)
	for range 4 {
		f.used(at, "", -1, -1, -1, -1)
	}
	f.used(at, scriptClient, 1, 2, 0, 0)
}

func i64(p *int64) string {
	if p == nil {
		return "null"
	}
	return fmt.Sprint(*p)
}

func f64(p *float64) string {
	if p == nil {
		return "null"
	}
	return fmt.Sprintf("%.4f", *p)
}

func rowText(u dashboard.ClientUsage) string {
	return fmt.Sprintf("%d in=%s out=%s cached=%s tu=%d cost=%s cu=%d", u.Attempts, i64(u.InputTokens), i64(u.OutputTokens),
		i64(u.CachedTokens), u.TokensUnknown, f64(u.Cost), u.CostUnknown)
}

// TestClientsAPI checks the client table: a row per client over the
// window, the busiest first; sums of what is known and counts of what is
// not, null where nothing is known (never 0); the attempts without a
// client in one row marked no_client.
func TestClientsAPI(t *testing.T) {
	f := newFixture(t)
	f.clientEvents()
	h := f.handler(t)
	body := getJSON[clientsBody](t, h, "/api/clients")
	if body.Window != "1h" || !body.Stats || !body.Totals || body.StatsError != "" || !body.Time.Equal(now) || body.Others != nil {
		t.Fatalf("header fields: %+v", body)
	}
	want := []struct{ client, usage string }{
		{"", "4 in=null out=null cached=null tu=4 cost=null cu=4"},
		{"team-a", "3 in=300 out=60 cached=30 tu=0 cost=0.0300 cu=0"},
		{"team-b", "2 in=50 out=5 cached=0 tu=1 cost=null cu=2"},
		{scriptClient, "1 in=1 out=2 cached=0 tu=0 cost=0.0000 cu=0"},
	}
	if body.Count != len(want) || len(body.Clients) != len(want) {
		t.Fatalf("count %d, %d rows: %+v; want %d", body.Count, len(body.Clients), body.Clients, len(want))
	}
	for i, w := range want {
		c := body.Clients[i]
		if c.Client != w.client || c.NoClient != (w.client == "") || rowText(c.ClientUsage) != w.usage {
			t.Errorf("row %d: %q no_client=%v %s; want %q %s", i, c.Client, c.NoClient, rowText(c.ClientUsage), w.client, w.usage)
		}
	}

	// Unknown is null in the JSON, not 0; the markup is escaped.
	raw := do(t, h, "GET", "/api/clients", nil).Body.String()
	for _, s := range []string{`"client":"","no_client":true,"attempts":4,"input_tokens":null,"output_tokens":null,"cached_tokens":null,"tokens_unknown":4,"cost":null,"cost_unknown":4`} {
		if !strings.Contains(raw, s) {
			t.Errorf("the answer lacks %s:\n%s", s, raw)
		}
	}
	if strings.Contains(raw, "<script") {
		t.Errorf("the answer has unescaped markup:\n%s", raw)
	}

	body = getJSON[clientsBody](t, h, "/api/clients?window=24h")
	if c := body.Clients[1]; body.Window != "24h" || c.Client != "team-a" || c.Attempts != 4 || *c.InputTokens != 1300 || *c.Cost != 1.03 {
		t.Errorf("team-a over 24h: %+v %s", c, rowText(c.ClientUsage))
	}
}

// TestClientsAPIKeyUnknowns: the key table says how many attempts had no
// known tokens or cost too.
func TestClientsAPIKeyUnknowns(t *testing.T) {
	f := newFixture(t)
	f.clientEvents()
	a := getJSON[keysBody](t, f.handler(t), "/api/keys").Keys[0]
	if i64(a.Tokens) != "418" || i64(a.TokensUnknown) != "5" || f64(a.Cost) != "0.0300" || i64(a.CostUnknown) != "6" {
		t.Errorf("alpha: tokens %s (%s unknown), cost %s (%s unknown); want 418 (5), 0.03 (6)", i64(a.Tokens), i64(a.TokensUnknown), f64(a.Cost), i64(a.CostUnknown))
	}
}

// TestClientsAPIMany: past MaxClients, the busiest are listed and the
// others summed in one row, so that the sums still cover every attempt.
func TestClientsAPIMany(t *testing.T) {
	f := newFixture(t)
	n := dashboard.MaxClients + 500
	at := now.Add(-5 * time.Minute)
	for i := range n {
		f.used(at, fmt.Sprintf("c%04d", i), 10, 1, 0, 0.5)
		if i < dashboard.MaxClients { // the busiest have two attempts
			f.used(at, fmt.Sprintf("c%04d", i), -1, -1, -1, -1)
		}
	}
	body := getJSON[clientsBody](t, f.handler(t), "/api/clients")
	if body.Count != n || len(body.Clients) != dashboard.MaxClients || body.Others == nil {
		t.Fatalf("count %d, %d rows, others %+v; want %d, %d, the rest", body.Count, len(body.Clients), body.Others, n, dashboard.MaxClients)
	}
	if c := body.Clients[0]; c.Client != "c0000" || rowText(c.ClientUsage) != "2 in=10 out=1 cached=0 tu=1 cost=0.5000 cu=1" {
		t.Errorf("first row %q %s", c.Client, rowText(c.ClientUsage))
	}
	if c := body.Clients[len(body.Clients)-1]; c.Client != fmt.Sprintf("c%04d", dashboard.MaxClients-1) {
		t.Errorf("last row %q", c.Client)
	}
	if o := body.Others; o.Clients != 500 || rowText(o.ClientUsage) != "500 in=5000 out=500 cached=0 tu=0 cost=250.0000 cu=0" {
		t.Errorf("others: %d clients, %s", o.Clients, rowText(o.ClientUsage))
	}
}

// statsAndTotals is a store that sums (TotalsStats) but answers no
// MultiStats, as the SQL store.
type statsAndTotals struct {
	recorder.Stats
	recorder.TotalsStats
}

// failingTotals answers Stats and fails TotalsBy.
type failingTotals struct{ recorder.Stats }

func (failingTotals) TotalsBy(context.Context, recorder.Query, recorder.GroupBy) (map[string]recorder.Totals, error) {
	return nil, errStore
}

// TestClientsAPIStores: without a store that sums, or with one that
// fails, api/clients answers 200 and says so, and the key table stays.
func TestClientsAPIStores(t *testing.T) {
	f := newFixture(t)
	f.clientEvents()

	c := getJSON[clientsBody](t, f.handler(t, dashboard.WithStats(statsOnly{f.store})), "/api/clients")
	if !c.Stats || c.Totals || c.StatsError != "" || c.Clients == nil || len(c.Clients) != 0 {
		t.Errorf("a store without TotalsStats: %+v", c)
	}

	h := f.handler(t, dashboard.WithStats(statsAndTotals{f.store, f.store}))
	if c := getJSON[clientsBody](t, h, "/api/clients"); !c.Totals || len(c.Clients) != 4 {
		t.Errorf("a store with TotalsStats and no MultiStats: %+v", c)
	}
	if k := getJSON[keysBody](t, h, "/api/keys").Keys[0]; k.Tokens == nil || *k.Tokens != 418 {
		t.Errorf("a store with TotalsStats and no MultiStats: alpha's tokens %s, want 418", i64(k.Tokens))
	}

	h = f.handler(t, dashboard.WithStats(failingTotals{f.store}))
	if c := getJSON[clientsBody](t, h, "/api/clients"); !strings.Contains(c.StatsError, "store down") || len(c.Clients) != 0 {
		t.Errorf("a failing TotalsBy: %+v", c)
	}
	if k := getJSON[keysBody](t, h, "/api/keys"); len(k.Keys) != 5 || k.Keys[0].Requests == nil || *k.Keys[0].Requests != 10 {
		t.Errorf("keys with a failing TotalsBy: %+v", k)
	}

	h = f.handler(t, dashboard.WithStats(nil))
	if c := getJSON[clientsBody](t, h, "/api/clients"); c.Stats || c.Totals || len(c.Clients) != 0 {
		t.Errorf("without stats: %+v", c)
	}
}

// TestNoClientLabel: the page labels the row without a client as
// NoClientLabel says (and apipool report prints).
func TestNoClientLabel(t *testing.T) {
	js := do(t, newFixture(t).handler(t), "GET", "/static/app.js", nil).Body.String()
	if !strings.Contains(js, "'"+dashboard.NoClientLabel+"'") {
		t.Errorf("app.js does not label the row without a client %q", dashboard.NoClientLabel)
	}
}
