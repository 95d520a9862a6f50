package proxy

import (
	"context"
	"encoding/csv"
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/apipool-ng/apipool/cmd/apipool/internal/config"
	"github.com/apipool-ng/apipool/dashboard"
	"github.com/apipool-ng/apipool/recorder"
	"github.com/apipool-ng/apipool/status"
)

// KeyUsage is one row of the per-key table. The counts are of attempts
// (recorder events): a request the pool retried on another key counts
// once per key it tried.
type KeyUsage struct {
	Key        string  `json:"key"`
	Attempts   int64   `json:"attempts"`
	Success    int64   `json:"success"`
	Failed     int64   `json:"failed"`
	ReachLimit int64   `json:"reach_limit"`
	P50ms      float64 `json:"p50_ms"`
	P99ms      float64 `json:"p99_ms"`
	Units
}

// Units are the tokens and cost of a row's events, from the store's
// TotalsBy: sums of the events that stated them, and how many did not
// (unknown is never read as zero). Absent from the JSON when the store
// does not sum.
type Units struct {
	InputTokens   int64   `json:"input_tokens"`
	OutputTokens  int64   `json:"output_tokens"`
	CachedTokens  int64   `json:"cached_tokens"`
	TokensUnknown int64   `json:"tokens_unknown"`
	Cost          float64 `json:"cost"`
	CostUnknown   int64   `json:"cost_unknown"`
}

func unitsOf(t recorder.Totals) Units {
	return Units{t.InputTokens, t.OutputTokens, t.CachedTokens, t.TokensUnknown, t.Cost, t.CostUnknown}
}

// ClientUsage is one row of the per-client table: the events of one
// client token (dashboard.NoClientLabel, "(no client)", for events
// without one, as the dashboard's client table says).
type ClientUsage struct {
	Client   string `json:"client"`
	Attempts int64  `json:"attempts"`
	Units
}

// Report is what report prints: apipool-ng's two stats queries over the
// window, and the per-key table. Every count is of attempts.
type Report struct {
	Since time.Time `json:"since"`
	Until time.Time `json:"until"`
	// UsageByKey is usage_count_stats_in_recent_n_seconds: attempts per key.
	UsageByKey map[string]int64 `json:"usage_by_key"`
	// UsageCount is usage_count_in_recent_n_seconds for every key:
	// attempts by status, "all", "success", "failed", "reach limit".
	UsageCount map[string]int64 `json:"usage_count"`
	Keys       []KeyUsage       `json:"keys"`
	// Clients is the per-client table, when the store sums units
	// (recorder.TotalsStats).
	Clients []ClientUsage `json:"clients,omitempty"`
}

// BuildReport runs the queries over [now-window, now].
func BuildReport(ctx context.Context, st recorder.Stats, window time.Duration, now time.Time) (*Report, error) {
	q := recorder.Query{Since: now.Add(-window), Until: now.Add(time.Nanosecond)}
	rep := &Report{Since: q.Since.UTC(), Until: now.UTC(), UsageCount: map[string]int64{}}
	var err error
	if rep.UsageByKey, err = st.UsageByKey(ctx, q); err != nil {
		return nil, err
	}
	classes := []struct {
		name string
		st   status.Status
	}{{"all", status.Unknown}, {"success", status.Success}, {"failed", status.Failed}, {"reach limit", status.ReachLimit}}
	perKey := map[status.Status]map[string]int64{}
	for _, c := range classes {
		qq := q
		qq.Status = c.st
		n, err := st.UsageCount(ctx, qq)
		if err != nil {
			return nil, err
		}
		rep.UsageCount[c.name] = n
		if c.st != status.Unknown {
			if perKey[c.st], err = st.UsageByKey(ctx, qq); err != nil {
				return nil, err
			}
		}
	}
	lat, err := st.LatencyByKey(ctx, q)
	if err != nil {
		return nil, err
	}
	for k, n := range rep.UsageByKey {
		if k == "" {
			k = "(no key)"
		}
		l := lat[k]
		rep.Keys = append(rep.Keys, KeyUsage{Key: k, Attempts: n,
			Success: perKey[status.Success][k], Failed: perKey[status.Failed][k], ReachLimit: perKey[status.ReachLimit][k],
			P50ms: ms(l.P50), P99ms: ms(l.P99)})
	}
	sort.Slice(rep.Keys, func(i, j int) bool { return rep.Keys[i].Key < rep.Keys[j].Key })
	if ts, ok := st.(recorder.TotalsStats); ok {
		byKey, err := ts.TotalsBy(ctx, q, recorder.ByKey)
		if err != nil {
			return nil, err
		}
		for i := range rep.Keys {
			k := rep.Keys[i].Key
			if k == "(no key)" {
				k = ""
			}
			rep.Keys[i].Units = unitsOf(byKey[k])
		}
		byClient, err := ts.TotalsBy(ctx, q, recorder.ByClient)
		if err != nil {
			return nil, err
		}
		for c, t := range byClient {
			if c == "" {
				c = dashboard.NoClientLabel
			}
			rep.Clients = append(rep.Clients, ClientUsage{Client: c, Attempts: t.Events, Units: unitsOf(t)})
		}
		sort.Slice(rep.Clients, func(i, j int) bool { return rep.Clients[i].Client < rep.Clients[j].Client })
	}
	return rep, nil
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// Write prints the report as "table", "csv" or "json".
func (r *Report) Write(w io.Writer, format string) error {
	switch format {
	case "json":
		e := json.NewEncoder(w)
		e.SetIndent("", "  ")
		return e.Encode(r)
	case "csv":
		cw := csv.NewWriter(w)
		cw.Write([]string{"key", "attempts", "success", "failed", "reach_limit", "p50_ms", "p99_ms", "input_tokens", "output_tokens", "cached_tokens", "tokens_unknown", "cost", "cost_unknown"})
		for _, k := range r.Keys {
			u := k.Units
			cw.Write([]string{k.Key, i64(k.Attempts), i64(k.Success), i64(k.Failed), i64(k.ReachLimit), f64(k.P50ms), f64(k.P99ms),
				i64(u.InputTokens), i64(u.OutputTokens), i64(u.CachedTokens), i64(u.TokensUnknown), cost(u.Cost), i64(u.CostUnknown)})
		}
		cw.Flush()
		return cw.Error()
	case "table", "":
		fmt.Fprintf(w, "usage from %s to %s\n", r.Since.Format(time.RFC3339), r.Until.Format(time.RFC3339))
		fmt.Fprintf(w, "attempts: %d (success %d, failed %d, reach limit %d); a request retried on another key counts once per key tried\n\n", r.UsageCount["all"], r.UsageCount["success"], r.UsageCount["failed"], r.UsageCount["reach limit"])
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "KEY\tATTEMPTS\tSUCCESS\tFAILED\tREACH LIMIT\tP50 MS\tP99 MS\tTOKENS IN\tTOKENS OUT\tCOST\t")
		for _, k := range r.Keys {
			fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%d\t%s\t%s\t%s\t%s\t%s\t\n", k.Key, k.Attempts, k.Success, k.Failed, k.ReachLimit, f64(k.P50ms), f64(k.P99ms),
				tokens(k.InputTokens, k.TokensUnknown, k.Attempts), tokens(k.OutputTokens, k.TokensUnknown, k.Attempts), costCell(k.Cost, k.CostUnknown, k.Attempts))
		}
		if err := tw.Flush(); err != nil || len(r.Clients) == 0 {
			return err
		}
		fmt.Fprintln(w)
		tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "CLIENT\tATTEMPTS\tTOKENS IN\tTOKENS OUT\tCOST\t")
		for _, c := range r.Clients {
			fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%s\t\n", c.Client, c.Attempts, tokens(c.InputTokens, c.TokensUnknown, c.Attempts), tokens(c.OutputTokens, c.TokensUnknown, c.Attempts), costCell(c.Cost, c.CostUnknown, c.Attempts))
		}
		return tw.Flush()
	}
	return fmt.Errorf("unknown format %q: want table, csv or json", format)
}

func i64(n int64) string    { return strconv.FormatInt(n, 10) }
func cost(f float64) string { return strconv.FormatFloat(f, 'f', 6, 64) }

// tokens prints a token sum over the attempts that stated theirs, with
// how many of the row's attempts did not: "1234 (+3 unknown)", or
// "unknown (3)" when none did (never 0), as the dashboard does.
func tokens(n, unknown, attempts int64) string {
	return knownCell(i64(n), unknown, attempts)
}

// costCell prints a cost sum as tokens does.
func costCell(c float64, unknown, attempts int64) string {
	return knownCell(cost(c), unknown, attempts)
}

func knownCell(sum string, unknown, attempts int64) string {
	switch {
	case unknown > 0 && unknown >= attempts:
		return "unknown (" + i64(unknown) + ")"
	case unknown > 0:
		return sum + " (+" + i64(unknown) + " unknown)"
	}
	return sum
}
func f64(f float64) string { return strconv.FormatFloat(f, 'f', 3, 64) }

// OpenStats opens the configured store for queries (report). The memory
// store has nothing to report outside the serving process: ErrNoStore.
func OpenStats(ctx context.Context, c config.Recorder) (recorder.Stats, func(context.Context) error, error) {
	if c.Type == "memory" {
		return nil, nil, ErrNoStore
	}
	r, err := openRecorder(ctx, c, nil, false)
	if err != nil {
		return nil, nil, err
	}
	st, ok := r.(recorder.Stats)
	if !ok {
		r.Close(ctx)
		return nil, nil, fmt.Errorf("recorder %s answers no queries", c.Type)
	}
	return st, r.Close, nil
}

// ParseSince reads report's -since: a Go duration (90m, 24h) or a number
// of days (1d, 7d, also 1d12h), more than 0.
func ParseSince(s string) (time.Duration, error) {
	bad := fmt.Errorf("-since: want a duration such as 1d, 7d, 24h or 90m, got %q", s)
	var d time.Duration
	rest := s
	if i := strings.IndexByte(s, 'd'); i >= 0 {
		n, err := strconv.Atoi(s[:i])
		if err != nil || n < 0 || n > 100*365 {
			return 0, bad
		}
		d, rest = time.Duration(n)*24*time.Hour, s[i+1:]
	}
	if rest != "" {
		x, err := time.ParseDuration(rest)
		if err != nil || (d > 0 && strings.HasPrefix(rest, "-")) {
			return 0, bad
		}
		d += x
	}
	if d <= 0 {
		return 0, fmt.Errorf("-since: must be more than 0, got %q", s)
	}
	return d, nil
}
