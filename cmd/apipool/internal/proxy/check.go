package proxy

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"text/tabwriter"

	"github.com/apipool-ng/apipool"
	"github.com/apipool-ng/apipool/cmd/apipool/internal/config"
)

// CheckResult is what check found of one key.
type CheckResult struct {
	Upstream string
	apipool.ProbeResult
	Skipped string // why the key was not probed, or ""
}

// Check probes every key of every upstream with its probe, as apipool-ng's
// check_usable, with no recorder and no shared state: it changes nothing
// but what it prints. base, when not nil, sends the requests (tests).
func Check(ctx context.Context, cfg *config.Config, base http.RoundTripper) ([]CheckResult, error) {
	var out []CheckResult
	for _, uc := range cfg.Upstreams {
		p := probe(uc)
		if p == nil {
			for _, k := range uc.Keys {
				out = append(out, CheckResult{Upstream: uc.Name, ProbeResult: apipool.ProbeResult{KeyID: k.ID}, Skipped: "no probe configured for this upstream"})
			}
			continue
		}
		b := base
		if b == nil {
			b = baseTransport(uc)
		}
		opts := append(poolOptions(uc, cfg.FingerprintKey), apipool.WithBase(b), apipool.WithRecorder(nil), apipool.WithProbe(p, 0))
		ro, err := routingOptions(uc) // keys that list models need the model source
		if err != nil {
			return nil, fmt.Errorf("upstream %s: %w", uc.Name, err)
		}
		pool, err := apipool.New(withoutBudgets(uc.Keys), append(opts, ro...)...)
		if err != nil {
			return nil, fmt.Errorf("upstream %s: %w", uc.Name, err)
		}
		res, err := pool.CheckUsable(ctx)
		pool.Close(ctx)
		if err != nil {
			return nil, fmt.Errorf("upstream %s: %w", uc.Name, err)
		}
		for _, r := range res {
			out = append(out, CheckResult{Upstream: uc.Name, ProbeResult: r})
		}
	}
	return out, nil
}

// PrintCheck writes the results as a table and returns how many keys are
// unusable (skipped keys are not counted) and how many were skipped.
func PrintCheck(w io.Writer, res []CheckResult) (unusable, skipped int) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "UPSTREAM\tKEY\tUSABLE\tSTATUS\tERROR")
	for _, r := range res {
		usable, st, msg := "yes", r.Status.String(), ""
		switch {
		case r.Skipped != "":
			usable, st, msg = "skipped", "-", r.Skipped
			skipped++
		case !r.Usable:
			usable = "NO"
			unusable++
			if r.Err != nil {
				msg = r.Err.Error()
			}
		}
		if r.Status == 0 {
			st = "-"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", r.Upstream, r.KeyID, usable, st, msg)
	}
	tw.Flush()
	return unusable, skipped
}
