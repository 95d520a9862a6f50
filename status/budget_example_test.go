package status_test

import (
	"fmt"
	"net/http"
	"time"

	"github.com/apipool-ng/apipool/status"
)

func ExampleParseBudget() {
	now := time.Date(2026, 1, 2, 3, 0, 0, 0, time.UTC)
	h := http.Header{}
	h.Set("x-ratelimit-limit-requests", "60")
	h.Set("x-ratelimit-remaining-requests", "0")
	h.Set("x-ratelimit-reset-requests", "1m30.5s")
	h.Set("x-ratelimit-limit-tokens", "150000")
	h.Set("x-ratelimit-remaining-tokens", "149984")
	h.Set("x-ratelimit-reset-tokens", "6m0s")

	b := status.ParseBudget(h, now)
	fmt.Println(b.Family, b.Requests.Remaining, "of", b.Requests.Limit, "requests,", b.Tokens.Remaining, "of", b.Tokens.Limit, "tokens")
	if until, ok := b.Exhausted(now); ok {
		fmt.Println("exhausted for", until.Sub(now))
	}
	// Output:
	// openai 0 of 60 requests, 149984 of 150000 tokens
	// exhausted for 1m30.5s
}
