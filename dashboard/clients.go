package dashboard

import (
	"cmp"
	"context"
	"slices"
	"time"

	"github.com/apipool-ng/apipool/recorder"
)

// MaxClients is how many clients GET /api/clients lists, the busiest
// first; the attempts of the others are summed in its "others" field, so
// that the table's sums still cover every attempt.
const MaxClients = 1000

// NoClientLabel is what the page shows for the attempts without a client
// (sent without apipool.ContextWithClient), and what apipool report
// shows.
const NoClientLabel = "(no client)"

// ClientUsage is what a set of attempts consumed, as GET /api/clients
// returns it. The sums cover the attempts whose value is known; the
// Unknown counts say how many had none, so that unknown is never read as
// zero.
type ClientUsage struct {
	// Attempts are recorder events: a request retried on another key
	// counts once per key tried.
	Attempts int64 `json:"attempts"`
	// InputTokens, OutputTokens and CachedTokens are the tokens the
	// answers stated, summed over the attempts that stated them (cached
	// tokens are the part of the input read from the provider's prompt
	// cache, where the API reports it); null when no attempt's tokens
	// are known. TokensUnknown counts the attempts whose input or
	// output tokens are not known.
	InputTokens   *int64 `json:"input_tokens"`
	OutputTokens  *int64 `json:"output_tokens"`
	CachedTokens  *int64 `json:"cached_tokens"`
	TokensUnknown int64  `json:"tokens_unknown"`
	// Cost is the attempts' cost from the pool's price table, in its
	// currency, summed over the attempts whose cost is known; null when
	// none is. CostUnknown counts the others.
	Cost        *float64 `json:"cost"`
	CostUnknown int64    `json:"cost_unknown"`
}

func usageOf(t recorder.Totals) ClientUsage {
	u := ClientUsage{Attempts: t.Events, TokensUnknown: t.TokensUnknown, CostUnknown: t.CostUnknown}
	if t.Events > t.TokensUnknown {
		u.InputTokens, u.OutputTokens, u.CachedTokens = ptr(t.InputTokens), ptr(t.OutputTokens), ptr(t.CachedTokens)
	}
	if t.Events > t.CostUnknown {
		u.Cost = ptr(t.Cost)
	}
	return u
}

// ClientRow is a row of the client table, as GET /api/clients returns it.
type ClientRow struct {
	// Client is the name apipool.ContextWithClient gave the requests
	// (the proxy gives its client token's name). It is "" on the one row
	// of the attempts without a client, which has NoClient set.
	Client   string `json:"client"`
	NoClient bool   `json:"no_client"`
	ClientUsage
}

// OtherClients sums the clients past MaxClients.
type OtherClients struct {
	Clients int `json:"clients"` // how many
	ClientUsage
}

type clientsResponse struct {
	Time   time.Time `json:"time"`
	Window string    `json:"window"`
	Stats  bool      `json:"stats"`
	// Totals says whether the store sums tokens and cost
	// (recorder.TotalsStats); without, there are no rows.
	Totals     bool   `json:"totals"`
	StatsError string `json:"stats_error,omitempty"`
	// Count is how many clients had attempts in the window, the row
	// without a client included.
	Count   int           `json:"count"`
	Clients []ClientRow   `json:"clients"`
	Others  *OtherClients `json:"others"`
}

// clients builds the client table over win: one row per client, the
// busiest first (then by name), at most MaxClients.
func (h *handler) clients(ctx context.Context, win windowSpec) clientsResponse {
	now := h.cfg.clock.Now()
	out := clientsResponse{Time: now.UTC(), Window: win.name, Stats: h.stats != nil, Totals: h.sums != nil, Clients: []ClientRow{}}
	if h.stats == nil || h.sums == nil {
		return out
	}
	q := recorder.Query{Since: now.Add(-win.d), Until: now.Add(time.Nanosecond)}
	byClient, err := h.sums.TotalsBy(ctx, q, recorder.ByClient)
	if err != nil {
		out.StatsError = "apipool/dashboard: stats: " + err.Error()
		return out
	}
	type named struct {
		name string
		t    recorder.Totals
	}
	all := make([]named, 0, len(byClient))
	for name, t := range byClient {
		if t.Events > 0 {
			all = append(all, named{name, t})
		}
	}
	slices.SortFunc(all, func(a, b named) int {
		return cmp.Or(cmp.Compare(b.t.Events, a.t.Events), cmp.Compare(a.name, b.name))
	})
	out.Count = len(all)
	top := all[:min(len(all), MaxClients)]
	for _, c := range top {
		out.Clients = append(out.Clients, ClientRow{Client: c.name, NoClient: c.name == "", ClientUsage: usageOf(c.t)})
	}
	if rest := all[len(top):]; len(rest) > 0 {
		var sum recorder.Totals
		for _, c := range rest {
			t := c.t
			sum.Events += t.Events
			sum.InputTokens += t.InputTokens
			sum.OutputTokens += t.OutputTokens
			sum.CachedTokens += t.CachedTokens
			sum.TokensUnknown += t.TokensUnknown
			sum.Cost += t.Cost
			sum.CostUnknown += t.CostUnknown
		}
		out.Others = &OtherClients{Clients: len(rest), ClientUsage: usageOf(sum)}
	}
	return out
}
