package redisstate_test

import (
	"context"
	"log"
	"net/http"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/apipool-ng/apipool"
	"github.com/apipool-ng/apipool/redisstate"
)

// Every replica of a service builds its pool the same way, with the same
// keys and the same Redis. (Compiled, not run: it needs a Redis.)
func Example() {
	rdb := redis.NewUniversalClient(&redis.UniversalOptions{
		Addrs:                 []string{"redis:6379"}, // several addresses: a Cluster; with MasterName: Sentinel
		DialTimeout:           time.Second,
		DialerRetries:         1,
		ReadTimeout:           500 * time.Millisecond,
		WriteTimeout:          500 * time.Millisecond,
		ContextTimeoutEnabled: true,
		MaxRetries:            -1,
	})
	defer rdb.Close()
	store, err := redisstate.New(rdb, redisstate.WithPrefix("weather-api"))
	if err != nil {
		log.Fatal(err)
	}
	pool, err := apipool.New([]apipool.Key{
		{ID: "team-a", Secret: "…", PerDay: 1000},
		{ID: "team-b", Secret: "…", PerSecond: 5},
	}, apipool.WithSharedState(store))
	if err != nil {
		log.Fatal(err)
	}
	defer pool.Close(context.Background())
	client := &http.Client{Transport: pool}
	_ = client // hand it to the API's SDK

	// For a metric or a health check:
	st := store.Stats()
	log.Printf("redis errors %d (last: %v), malformed messages %d", st.Errors, st.LastError, st.Malformed)
}
