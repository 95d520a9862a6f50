package proxy

// The routing and usage settings of an upstream (issues 25 and 26), as
// pool options: the model and session sources, the cooldown scope, the
// usage reader and its price table, include_usage.

import (
	"fmt"
	"net/http"
	"reflect"
	"strconv"
	"strings"

	"github.com/apipool-ng/apipool"
	"github.com/apipool-ng/apipool/cmd/apipool/internal/config"
	units "github.com/apipool-ng/apipool/usage"
)

// routingOptions returns the pool options of an upstream's routing and
// usage sections.
func routingOptions(u config.Upstream) ([]apipool.Option, error) {
	var opts []apipool.Option
	r := u.Routing
	switch r.Model {
	case "json":
		opts = append(opts, apipool.WithModel(apipool.ModelFromJSON))
	case "path":
		opts = append(opts, apipool.WithModel(apipool.ModelFromPath))
	case "github":
		opts = append(opts, apipool.WithModel(apipool.ResourceFromGitHubPath))
	}
	if r.CooldownScope != apipool.ScopeKey {
		opts = append(opts, apipool.WithCooldownScope(r.CooldownScope))
	}
	switch {
	case r.SessionHeader != "":
		opts = append(opts, apipool.WithSessions(apipool.SessionFromHeader(r.SessionHeader), r.MaxSessions))
	case r.SessionJSON != "":
		opts = append(opts, apipool.WithSessions(apipool.SessionFromJSON(r.SessionJSON), r.MaxSessions))
	}
	if u.Usage.Reader == "" {
		return opts, nil
	}
	var rd units.Reader
	switch u.Usage.Reader {
	case "openai":
		rd = units.OpenAI()
	case "anthropic":
		rd = units.Anthropic()
	case "gemini":
		rd = units.Gemini()
	case "auto":
		rd = units.Auto()
	case "header":
		var err error
		if rd, err = units.Header(u.Usage.Header); err != nil {
			return nil, fmt.Errorf("usage.reader: %w", err)
		}
	default:
		return nil, fmt.Errorf("usage.reader: unknown reader %q", u.Usage.Reader)
	}
	opts = append(opts, apipool.WithUsage(rd, u.Usage.Prices))
	if u.Usage.IncludeUsage {
		opts = append(opts, apipool.WithIncludeUsage(true))
	}
	return opts, nil
}

// readsTokens reports whether the upstream's usage reader reads tokens
// from answers' bodies: the proxy then asks the upstream for gzip itself
// and decodes it, so that the reader sees JSON, rather than passing on
// the caller's Accept-Encoding (see meteredTransport).
func readsTokens(u config.Upstream) bool {
	return u.Usage.Reader != "" && u.Usage.Reader != "header"
}

// noModelMessage is the message of the proxy's 400 for a request whose
// model no key of upstream serves.
func noModelMessage(upstream, model string) string {
	if len(model) > 128 {
		model = strings.ToValidUTF8(model[:128], "") + "..."
	}
	return "no key of upstream " + upstream + " serves model " + strconv.Quote(model)
}

// sameRouting reports whether two configs of one upstream have the same
// routing and usage settings (what a reload cannot change: the pool's
// options). Key tiers and models are the keys', and reload.
func sameRouting(a, b config.Upstream) bool {
	return a.Routing == b.Routing
}

func sameUsage(a, b config.Upstream) bool {
	return reflect.DeepEqual(a.Usage, b.Usage)
}

// acceptIdentity removes the caller's Accept-Encoding from an upstream
// request whose answer a token reader reads: the base transport asks for
// gzip itself and decodes it (DisableCompression is off for it), so the
// reader sees the JSON and the caller gets it decoded.
func acceptIdentity(h http.Header) { h.Del("Accept-Encoding") }
