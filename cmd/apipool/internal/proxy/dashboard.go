package proxy

import (
	"net/http"

	"github.com/apipool-ng/apipool"
)

// dashboardHandler builds the dashboard of one pool.
//
// TODO(dashboard): return dashboard.Handler(pool) once package dashboard
// lands on main; until then the command mounts none.
var dashboardHandler func(upstream string, pool *apipool.Transport) http.Handler
