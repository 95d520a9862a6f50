package proxy

import (
	"net/http"

	"github.com/apipool-ng/apipool"
	"github.com/apipool-ng/apipool/dashboard"
)

// DashboardHandler returns what serve mounts for each upstream under
// dashboard.path: package dashboard's page of its pool, titled with the
// upstream's name, with the disable, enable and probe buttons when actions
// is true. The server puts it behind the configured users' basic auth.
func DashboardHandler(actions bool) func(upstream string, pool *apipool.Transport) http.Handler {
	return func(upstream string, pool *apipool.Transport) http.Handler {
		opts := []dashboard.Option{dashboard.WithTitle("apipool: " + upstream)}
		if actions {
			opts = append(opts, dashboard.WithActions())
		}
		return dashboard.Handler(pool, opts...)
	}
}
