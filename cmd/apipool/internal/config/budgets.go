package config

import (
	"math"

	"github.com/apipool-ng/apipool"
)

// Budgets: per upstream, key_budgets, every key's budget (apipool.Key.Budget),
// as key_limits gives every key's limits; per token, budgets, the
// client's (apipool.NewClientBudgets), across the upstreams it uses.
//
//	upstreams:
//	  - name: openai
//	    key_budgets: {tokens_per_minute: 30000, cost_per_day: 20}
//	tokens:
//	  - name: team-a
//	    budgets: {tokens_per_day: 2000000, cost_per_month: 100}

// budgetsT is a budgets mapping as the file gives it.
type budgetsT struct {
	Line            int
	TokensPerMinute Value[int64]   `yaml:"tokens_per_minute"`
	TokensPerDay    Value[int64]   `yaml:"tokens_per_day"`
	CostPerDay      Value[float64] `yaml:"cost_per_day"`
	CostPerMonth    Value[float64] `yaml:"cost_per_month"`
}

// maxBudgetTokens is the library's bound on a token budget.
const maxBudgetTokens = 1 << 53

// budget checks a budgets mapping (nil: none) named at, and returns it.
func (v *validator) budget(b *budgetsT, at string) apipool.Budget {
	if b == nil {
		return apipool.Budget{}
	}
	for _, t := range []struct {
		x    Value[int64]
		name string
	}{{b.TokensPerMinute, "tokens_per_minute"}, {b.TokensPerDay, "tokens_per_day"}} {
		if t.x.Set && (t.x.V < 0 || t.x.V > maxBudgetTokens) {
			v.fail(t.x.Line, at+"."+t.name, "want 0 (none) to %d tokens%s", int64(maxBudgetTokens), fromVars(t.x))
		}
	}
	for _, c := range []struct {
		x    Value[float64]
		name string
	}{{b.CostPerDay, "cost_per_day"}, {b.CostPerMonth, "cost_per_month"}} {
		if c.x.Set && (c.x.V < 0 || math.IsNaN(c.x.V) || math.IsInf(c.x.V, 0)) {
			v.fail(c.x.Line, at+"."+c.name, "want a cost of 0 (none) or more, in the price table's currency%s", fromVars(c.x))
		}
	}
	return apipool.Budget{TokensPerMinute: b.TokensPerMinute.V, TokensPerDay: b.TokensPerDay.V, CostPerDay: b.CostPerDay.V, CostPerMonth: b.CostPerMonth.V}
}

// withBudget gives every key the budget b.
func withBudget(keys []apipool.Key, b apipool.Budget) {
	for i := range keys {
		keys[i].Budget = b
	}
}

// ClientBudgets returns the tokens' budgets, by token name, for
// apipool.NewClientBudgets: the tokens without one are left out.
func ClientBudgets(tokens []Token) map[string]apipool.Budget {
	m := map[string]apipool.Budget{}
	for _, t := range tokens {
		if !t.Budgets.IsZero() {
			m[t.Name] = t.Budgets
		}
	}
	return m
}
