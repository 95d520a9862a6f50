package apipool_test

import (
	"context"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"time"

	"github.com/apipool-ng/apipool"
)

// The pool is an http.RoundTripper: give it to an http.Client (or to any
// SDK that takes one) and every request goes out with a key of the pool.
func ExampleNew() {
	// A stand-in for the real API: it says which key it received.
	owner := map[string]string{"Bearer sk-team-a": "team A", "Bearer sk-team-b": "team B"}
	api := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "hello, %s", owner[r.Header.Get("Authorization")])
	}))
	defer api.Close()

	pool, err := apipool.New([]apipool.Key{
		{ID: "team-a", Secret: "sk-team-a"},
		{ID: "team-b", Secret: "sk-team-b"},
	})
	if err != nil {
		log.Fatal(err) // a *apipool.ConfigError naming the problem
	}
	defer pool.Close(context.Background())

	client := &http.Client{Transport: pool}
	for i := 0; i < 3; i++ {
		resp, err := client.Get(api.URL + "/v1/hello")
		if err != nil {
			log.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		fmt.Println(resp.StatusCode, string(body))
	}
	// Output:
	// 200 hello, team A
	// 200 hello, team B
	// 200 hello, team A
}

// APIs that take the key in a header of their own.
func ExampleWithHeader() {
	api := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("X-Api-Key") != "sk-main" {
			http.Error(w, "who are you?", http.StatusUnauthorized)
			return
		}
		fmt.Fprintf(w, "key accepted; Authorization %q", r.Header.Get("Authorization"))
	}))
	defer api.Close()

	pool, err := apipool.New([]apipool.Key{{ID: "main", Secret: "sk-main"}}, apipool.WithHeader("X-Api-Key"))
	if err != nil {
		log.Fatal(err)
	}
	defer pool.Close(context.Background())

	resp, err := (&http.Client{Transport: pool}).Get(api.URL)
	if err != nil {
		log.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	fmt.Println(resp.StatusCode, string(body))
	// Output:
	// 200 key accepted; Authorization ""
}

// APIs that take the key as a query parameter: the caller's query is kept.
func ExampleWithQueryParam() {
	api := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		fmt.Fprintf(w, "q=%s key ok=%v", q.Get("q"), q.Get("key") == "sk-maps")
	}))
	defer api.Close()

	pool, err := apipool.New([]apipool.Key{{ID: "maps", Secret: "sk-maps"}}, apipool.WithQueryParam("key"))
	if err != nil {
		log.Fatal(err)
	}
	defer pool.Close(context.Background())

	resp, err := (&http.Client{Transport: pool}).Get(api.URL + "/geocode?q=paris")
	if err != nil {
		log.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	fmt.Println(string(body))
	// Output:
	// q=paris key ok=true
}

// A rate-limited key cools down for as long as the API asks, while the
// request moves on to another key. Snapshot shows each key's state.
func ExampleTransport_Snapshot() {
	api := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") == "Bearer sk-b" {
			w.Header().Set("Retry-After", "60")
			http.Error(w, "slow down", http.StatusTooManyRequests)
			return
		}
		io.WriteString(w, "ok")
	}))
	defer api.Close()

	pool, err := apipool.New([]apipool.Key{
		{ID: "team-a", Secret: "sk-a"},
		{ID: "team-b", Secret: "sk-b", PerDay: 1000},
	})
	if err != nil {
		log.Fatal(err)
	}
	defer pool.Close(context.Background())
	client := &http.Client{Transport: pool}
	for i := 0; i < 2; i++ { // the second request meets team-b's 429, then goes out with team-a
		resp, err := client.Get(api.URL)
		if err != nil {
			log.Fatal(err)
		}
		resp.Body.Close()
		fmt.Println("status", resp.StatusCode)
	}

	for _, s := range pool.Snapshot() {
		fmt.Printf("%s: %s", s.KeyID, s.State)
		if !s.CoolingUntil.IsZero() {
			fmt.Printf(" for %v", time.Until(s.CoolingUntil).Round(time.Minute))
		}
		fmt.Printf(", quota left %d\n", s.QuotaLeft)
	}
	// Output:
	// status 200
	// status 200
	// team-a: active, quota left -1
	// team-b: cooling for 1m0s, quota left 999
}

// CheckUsable probes every key, as apipool-ng's check_usable does; a key
// the API rejects is taken out of use until a probe passes.
func ExampleTransport_CheckUsable() {
	api := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") == "Bearer sk-old" {
			http.Error(w, "revoked", http.StatusUnauthorized)
			return
		}
		io.WriteString(w, `{"user":"me"}`)
	}))
	defer api.Close()

	pool, err := apipool.New([]apipool.Key{
		{ID: "current", Secret: "sk-current"},
		{ID: "old", Secret: "sk-old"},
	}, apipool.WithProbe(apipool.ProbeRequest(http.MethodGet, api.URL+"/v1/me"), 0))
	if err != nil {
		log.Fatal(err)
	}
	defer pool.Close(context.Background())

	results, err := pool.CheckUsable(context.Background())
	if err != nil {
		log.Fatal(err)
	}
	for _, r := range results {
		fmt.Printf("%s: usable %v, %v\n", r.KeyID, r.Usable, r.Status)
	}
	for _, s := range pool.Snapshot() {
		if s.Disabled {
			fmt.Printf("%s: %s (%s)\n", s.KeyID, s.State, s.DisabledReason)
		} else {
			fmt.Printf("%s: %s\n", s.KeyID, s.State)
		}
	}
	// Output:
	// current: usable true, success
	// old: usable false, invalid key
	// current: active
	// old: disabled (probe: upstream rejected the key)
}
