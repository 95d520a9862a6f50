package config

import (
	"strings"
	"testing"

	"github.com/apipool-ng/apipool"
)

// key_budgets give every key of the upstream its budget (the key file's
// keys alike); a token's budgets are the client's; both default to none.
func TestBudgetsSection(t *testing.T) {
	kf := writeKeys(t, "a sk-one\nb sk-two\n", 0o600)
	y := strings.Replace(minimal(kf), "    sha256: "+goodHash+"\n", "    sha256: "+goodHash+"\n    budgets: {tokens_per_day: 2000000, cost_per_month: 12.5}\n", 1) +
		"    key_budgets:\n      tokens_per_minute: 30000\n      tokens_per_day: 1000000\n      cost_per_day: 20\n      cost_per_month: 400.5\n" +
		"    routing: {model: json}\n    usage: {reader: openai, prices: {'gpt-4o*': {input: 2.5, output: 10}}}\n"
	c, err := Parse("f.yaml", []byte(y))
	if err != nil {
		t.Fatal(err)
	}
	want := apipool.Budget{TokensPerMinute: 30000, TokensPerDay: 1000000, CostPerDay: 20, CostPerMonth: 400.5}
	u := c.Upstreams[0]
	if u.KeyBudgets != want || len(u.Keys) != 2 || u.Keys[0].Budget != want || u.Keys[1].Budget != want {
		t.Fatalf("key budgets %+v, keys %+v", u.KeyBudgets, u.Keys)
	}
	if b := c.Tokens[0].Budgets; b != (apipool.Budget{TokensPerDay: 2000000, CostPerMonth: 12.5}) {
		t.Fatalf("token budgets %+v", b)
	}
	if m := ClientBudgets(c.Tokens); len(m) != 1 || m["a"] != c.Tokens[0].Budgets {
		t.Fatalf("ClientBudgets %v", m)
	}
	c, err = Parse("f.yaml", []byte(minimal(kf)))
	if err != nil || !c.Upstreams[0].KeyBudgets.IsZero() || !c.Upstreams[0].Keys[0].Budget.IsZero() || !c.Tokens[0].Budgets.IsZero() || len(ClientBudgets(c.Tokens)) != 0 {
		t.Fatalf("without budgets: %+v %v", c, err)
	}
}

// Every error names the file, the line and the setting, and shows no
// value that came from a variable.
func TestBudgetsErrors(t *testing.T) {
	noScrub = true
	defer func() { noScrub = false }()
	setCanaryEnv(t)
	kf := writeKeys(t, "sk-one\n", 0o600)
	base := minimal(kf) // 8 lines: key_budgets on line 9
	tok := func(s string) string {
		return strings.Replace(base, "    sha256: "+goodHash+"\n", "    sha256: "+goodHash+"\n"+s, 1) // line 4
	}
	for _, c := range []struct{ name, yaml, want string }{
		{"negative tokens", base + "    key_budgets: {tokens_per_day: -5}\n", "f.yaml:9: upstreams[0].key_budgets.tokens_per_day: want 0 (none) to 9007199254740992 tokens"},
		{"too many tokens", base + "    key_budgets:\n      tokens_per_minute: 9007199254740993\n", "f.yaml:10: upstreams[0].key_budgets.tokens_per_minute: want 0 (none) to"},
		{"negative cost", base + "    key_budgets: {cost_per_day: -0.01}\n", "f.yaml:9: upstreams[0].key_budgets.cost_per_day: want a cost of 0 (none) or more"},
		{"infinite cost", base + "    key_budgets: {cost_per_month: .inf}\n", "f.yaml:9: upstreams[0].key_budgets.cost_per_month: want a cost of 0 (none) or more"},
		{"not a number", base + "    key_budgets: {cost_per_day: lots}\n", "f.yaml:9: upstreams[0].key_budgets.cost_per_day: want a number"},
		{"from a variable", base + "    key_budgets: {tokens_per_day: '-${CANARY_NUM}'}\n", "upstreams[0].key_budgets.tokens_per_day: want 0 (none) to 9007199254740992 tokens (the value comes from ${CANARY_NUM} and is not shown)"},
		{"typo", base + "    key_budgets: {tokens_per_dya: 5}\n", "f.yaml:9: upstreams[0].key_budgets.tokens_per_dya: unknown setting; did you mean tokens_per_day?"},
		{"not a mapping", base + "    key_budgets: 5\n", "f.yaml:9: upstreams[0].key_budgets: want a mapping of settings"},
		{"token negative", tok("    budgets: {tokens_per_minute: -1}\n"), "f.yaml:4: tokens[0].budgets.tokens_per_minute: want 0 (none) to"},
		{"token cost", tok("    budgets:\n      cost_per_month: -3\n"), "f.yaml:5: tokens[0].budgets.cost_per_month: want a cost of 0 (none) or more"},
		{"token typo", tok("    budget: {tokens_per_day: 5}\n"), "f.yaml:4: tokens[0].budget: unknown setting; did you mean budgets?"},
		{"tokens without a reader", base + "    key_budgets: {tokens_per_day: 5000}\n", "f.yaml:9: upstreams[0].key_budgets: a token budget counts the tokens the answers state: it needs usage.reader"},
		{"cost without prices", base + "    key_budgets: {cost_per_day: 5}\n    usage: {reader: openai}\n", "f.yaml:9: upstreams[0].key_budgets: a cost budget counts the cost of the answers: it needs usage.prices"},
		{"cost without a model", base + "    key_budgets: {cost_per_day: 5}\n    usage: {reader: openai, prices: {gpt-4o: {input: 1, output: 2}}}\n", "f.yaml:9: upstreams[0].key_budgets: a cost budget prices each answer by its model: it needs routing.model"},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := Parse("f.yaml", []byte(c.yaml))
			if err == nil {
				t.Fatal("no error")
			}
			msg := err.Error()
			if l := leaks(msg); len(l) > 0 || strings.Contains(msg, numCanary) {
				t.Errorf("LEAK: the error shows %q (or %s):\n%s", l, numCanary, msg)
			}
			if !strings.Contains(msg, c.want) {
				t.Errorf("error:\n%s\nwant it to contain:\n%s", msg, c.want)
			}
		})
	}
}

// The example file's token budget loads.
func TestExampleBudgets(t *testing.T) {
	c := exampleConfig(t)
	if b := c.Tokens[0].Budgets; c.Tokens[0].Name != "batch-jobs" || b != (apipool.Budget{TokensPerDay: 5000000}) {
		t.Fatalf("token %s: budgets %+v", c.Tokens[0].Name, b)
	}
}
