package proxy_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/apipool-ng/apipool/cmd/apipool/internal/config"
	"github.com/apipool-ng/apipool/cmd/apipool/internal/proxy"
)

// benchUpstream answers every request with a small JSON body at once.
func benchUpstream(b *testing.B) string {
	b.Helper()
	body := []byte(`{"id":"x","object":"chat.completion","choices":[{"index":0,"message":{"role":"assistant","content":"ok"}}]}`)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/json")
		w.Write(body)
	})}
	go srv.Serve(ln)
	b.Cleanup(func() { srv.Close() })
	return "http://" + ln.Addr().String()
}

func serveOn(b *testing.B, h http.Handler) string {
	b.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	go srv.Serve(ln)
	b.Cleanup(func() { srv.Close() })
	return "http://" + ln.Addr().String()
}

func upstreamTransport() *http.Transport {
	return &http.Transport{MaxIdleConns: 1024, MaxIdleConnsPerHost: 512, IdleConnTimeout: 90 * time.Second, DisableCompression: true}
}

// BenchmarkProxyOverhead compares, in one run, a plain
// httputil.ReverseProxy that sets one fixed key with the apipool proxy
// (token check, credential stripping, a pool of 8 keys, the memory
// recorder), both in front of the same upstream on loopback, driven by 64
// concurrent connections sending a small POST; plain-pooled-buffers is the
// plain proxy with pooled copy buffers, as the apipool proxy has. It reports requests/s and
// the 99th percentile latency; ns/op is the wall time per request across
// all connections.
func BenchmarkProxyOverhead(b *testing.B) {
	up := benchUpstream(b)
	target, _ := url.Parse(up)

	plain := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(target)
			pr.Out.Header.Set("Authorization", "Bearer sk-fixed")
		},
		Transport: upstreamTransport(),
	}
	plainURL := serveOn(b, plain) + "/v1/chat/completions"
	// The same with pooled copy buffers, as the apipool proxy has: the
	// difference from it is then the pool, the token check and the rest.
	pooled := *plain
	pooled.BufferPool = benchBuffers{}
	pooledURL := serveOn(b, &pooled) + "/v1/chat/completions"

	dir := b.TempDir()
	kf := filepath.Join(dir, "keys")
	keys := ""
	for i := 0; i < 8; i++ {
		keys += fmt.Sprintf("k%d sk-bench-%d\n", i, i)
	}
	os.WriteFile(kf, []byte(keys), 0o600)
	cfgPath := filepath.Join(dir, "apipool.yaml")
	os.WriteFile(cfgPath, []byte(fmt.Sprintf(`tokens: [{name: bench, sha256: %s}]
upstreams:
  - {name: api, prefix: /api, target: '%s', keys: {file: %s}}
`, sha(token), up, kf)), 0o600)
	cfg, err := config.Load(cfgPath)
	if err != nil {
		b.Fatal(err)
	}
	srv, err := proxy.New(context.Background(), cfg, proxy.Options{Base: upstreamTransport()})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { srv.Shutdown(context.Background()) })
	poolURL := serveOn(b, srv.Handler()) + "/api/v1/chat/completions"

	for _, c := range []struct{ name, url string }{{"plain", plainURL}, {"plain-pooled-buffers", pooledURL}, {"apipool", poolURL}} {
		b.Run(c.name, func(b *testing.B) { drive(b, c.url) })
	}
}

const benchConns = 64

func drive(b *testing.B, u string) {
	client := &http.Client{Transport: &http.Transport{MaxIdleConns: benchConns, MaxIdleConnsPerHost: benchConns, MaxConnsPerHost: benchConns, DisableCompression: true}}
	defer client.CloseIdleConnections()
	body := `{"model":"m","messages":[{"role":"user","content":"hi"}]}`
	send := func() (time.Duration, error) {
		req, _ := http.NewRequest("POST", u, stringsReader(body))
		req.Header.Set("Authorization", "Bearer "+token)
		req.Header.Set("Content-Type", "application/json")
		t0 := time.Now()
		resp, err := client.Do(req)
		if err != nil {
			return 0, err
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			return 0, fmt.Errorf("status %d", resp.StatusCode)
		}
		return time.Since(t0), nil
	}
	// Warm the connections.
	for i := 0; i < benchConns; i++ {
		if _, err := send(); err != nil {
			b.Fatal(err)
		}
	}
	var mu sync.Mutex
	var all []time.Duration
	next := make(chan struct{}, b.N)
	for i := 0; i < b.N; i++ {
		next <- struct{}{}
	}
	close(next)
	b.ReportAllocs()
	b.ResetTimer()
	start := time.Now()
	var wg sync.WaitGroup
	for w := 0; w < benchConns; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			lat := make([]time.Duration, 0, b.N/benchConns+1)
			for range next {
				d, err := send()
				if err != nil {
					b.Error(err)
					return
				}
				lat = append(lat, d)
			}
			mu.Lock()
			all = append(all, lat...)
			mu.Unlock()
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	b.StopTimer()
	sort.Slice(all, func(i, j int) bool { return all[i] < all[j] })
	if len(all) > 0 {
		b.ReportMetric(float64(len(all))/elapsed.Seconds(), "req/s")
		b.ReportMetric(float64(all[len(all)*99/100].Microseconds())/1000, "p99-ms")
	}
}

type benchBuffers struct{}

var benchBufPool = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}

func (benchBuffers) Get() []byte  { return *benchBufPool.Get().(*[]byte) }
func (benchBuffers) Put(b []byte) { benchBufPool.Put(&b) }
