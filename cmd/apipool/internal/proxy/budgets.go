package proxy

import (
	"encoding/json"
	"net/http"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"

	"github.com/apipool-ng/apipool"
	"github.com/apipool-ng/apipool/cmd/apipool/internal/config"
	"github.com/apipool-ng/apipool/redisstate"
	"github.com/apipool-ng/apipool/sharedstate"
)

// Budgets: every upstream's keys get the upstream's key_budgets (config:
// apipool.Key.Budget); the tokens' budgets are one apipool.ClientBudgets
// that every pool shares, so that a client's budget counts what it spends
// through all the upstreams, each of which refuses it once it is past one
// (429, budgetError). With redis, the clients' spend is shared among the
// replicas through a store of its own prefix (the keys' go through each
// upstream's store).

// newClientBudgets returns the tokens' budgets for the pools to share;
// with the redis client rdb, shared among the replicas under
// "<prefix>/clients" (no upstream name holds a '/').
func newClientBudgets(cfg *config.Config, rdb *redis.Client) (*apipool.ClientBudgets, error) {
	var shared sharedstate.Spender
	if rdb != nil {
		prefix := cfg.Redis.Prefix
		if prefix == "" {
			prefix = redisstate.DefaultPrefix
		}
		st, err := redisstate.New(rdb, redisstate.WithPrefix(prefix+"/clients"))
		if err != nil {
			return nil, err
		}
		shared = st
	}
	return apipool.NewClientBudgets(config.ClientBudgets(cfg.Tokens), shared)
}

// withoutBudgets returns keys without their budgets, for check: its probes
// spend nothing worth counting, and its pools read no usage.
func withoutBudgets(keys []apipool.Key) []apipool.Key {
	out := make([]apipool.Key, len(keys))
	for i, k := range keys {
		k.Budget = apipool.Budget{}
		out[i] = k
	}
	return out
}

// budgetError answers a request of a client past one of its budgets
// (*apipool.BudgetError): 429, Retry-After until the budget's period ends,
// and the JSON error body naming the budget, its limit and what was spent,
// and until when.
func (s *Server) budgetError(w http.ResponseWriter, r *http.Request, be *apipool.BudgetError) {
	s.tel.rejected.Add(r.Context(), 1, metric.WithAttributes(attribute.String("reason", "budget")))
	w.Header().Set("Retry-After", retryAfter(time.Until(be.Until)))
	w.Header().Set("X-Apipool-Error", "budget_exceeded")
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(http.StatusTooManyRequests)
	until := be.Until.UTC().Format(time.RFC3339)
	json.NewEncoder(w).Encode(map[string]any{"error": map[string]any{
		"message": "this token's " + string(be.Budget) + " budget is used up (" + strconv.FormatFloat(be.Used, 'f', -1, 64) + " of " +
			strconv.FormatFloat(be.Limit, 'f', -1, 64) + ") until " + until,
		"type":   "budget_exceeded",
		"code":   "apipool_proxy",
		"budget": string(be.Budget),
		"limit":  be.Limit,
		"used":   be.Used,
		"until":  until,
	}})
}
