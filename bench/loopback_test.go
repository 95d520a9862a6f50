package bench

import (
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
)

// BenchmarkLoopback measures one GET through a real http.Transport to an
// httptest server on loopback, on one goroutine with keep-alive
// connections: bare is the transport alone, apipool the 10-key pool over
// it. Here the pool's cost is set against a real round trip (the server
// runs in the same process, so both sides share the benchmark's CPUs).
// bare sends an Authorization header of its own, as a client with one key
// does, so that both put the same bytes on the wire and the difference is
// the pool's work.
func BenchmarkLoopback(b *testing.B) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		w.Header()["Content-Type"] = jsonContentType
		io.WriteString(w, cannedBody)
	}))
	defer srv.Close()
	for _, name := range []string{"bare", "apipool"} {
		b.Run(name, func(b *testing.B) {
			tr := &http.Transport{MaxIdleConnsPerHost: 16}
			defer tr.CloseIdleConnections()
			req, err := http.NewRequest(http.MethodGet, srv.URL+"/v1/items?limit=10", nil)
			if err != nil {
				b.Fatal(err)
			}
			req.Header.Set("Accept", "application/json")
			req.Header.Set("User-Agent", "apipool-bench/1")
			keys := testKeys(10)
			var rt http.RoundTripper = tr
			if name == "apipool" {
				rt = newPool(b, keys, tr)
			} else {
				req.Header.Set("Authorization", "Bearer "+keys[0].Secret.Reveal())
			}
			warmUp(b, rt, req, 20)
			b.ReportAllocs()
			done := measureCPU(b)
			for b.Loop() {
				roundTrip(b, rt, req)
			}
			done()
		})
	}
}
