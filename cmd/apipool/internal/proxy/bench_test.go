package proxy_test

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/apipool-ng/apipool/cmd/apipool/internal/config"
	"github.com/apipool-ng/apipool/cmd/apipool/internal/proxy"
)

var overheadRounds = flag.Int("overhead.rounds", 1, "BenchmarkProxyOverhead: rounds, each running every proxy in turn (interleaved)")

// benchBody is what the bench upstream answers.
var benchBody = []byte(`{"id":"x","object":"chat.completion","choices":[{"index":0,"message":{"role":"assistant","content":"ok"}}]}`)

func serveOn(tb testing.TB, h http.Handler) string {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	go srv.Serve(ln)
	tb.Cleanup(func() { srv.Close() })
	return "http://" + ln.Addr().String()
}

func upstreamTransport() *http.Transport {
	return &http.Transport{MaxIdleConns: 1024, MaxIdleConnsPerHost: 512, IdleConnTimeout: 90 * time.Second, DisableCompression: true}
}

// BenchmarkProxyOverhead compares, in one run, proxies in front of the
// same upstream on loopback, driven by 64 concurrent connections sending a
// small POST:
//
//   - plain: an httputil.ReverseProxy that sets one fixed key;
//   - plain-pooled-buffers: the same with a 32 KiB sync.Pool BufferPool,
//     as the apipool proxy has: the like-for-like baseline;
//   - apipool: the apipool proxy (token check, credential stripping, a
//     pool of 8 keys, the memory recorder, the scrubber).
//
// The upstream and the load generator run in a child process (this test
// binary again), so that this process's CPU time is the proxies' alone:
// cpu-us/op is it (user+system, getrusage) per request, and B/op and
// allocs/op are the proxy's own. Each sub-benchmark also reports
// requests/s and the 99th percentile latency. With -overhead.rounds N the
// proxies run in turn N times (A/B/C/A/B/C...), and the benchmark logs
// apipool's CPU per request as a ratio of the baseline's for each round.
func BenchmarkProxyOverhead(b *testing.B) {
	ld := startLoad(b)
	up := ld.upstream
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
	pooled.Transport = upstreamTransport()
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

	for round := 1; round <= *overheadRounds; round++ {
		cpu := map[string]float64{}
		for _, c := range []struct{ name, url string }{{"plain", plainURL}, {"plain-pooled-buffers", pooledURL}, {"apipool", poolURL}} {
			b.Run(c.name, func(b *testing.B) { cpu[c.name] = ld.drive(b, c.url) })
		}
		if base, ap := cpu["plain-pooled-buffers"], cpu["apipool"]; base > 0 && ap > 0 {
			fmt.Fprintf(os.Stderr, "round %d: CPU per request: plain %.1f us, plain-pooled-buffers (baseline) %.1f us, apipool %.1f us (%+.1f us); apipool/baseline %.3f\n",
				round, cpu["plain"], base, ap, ap-base, ap/base)
		}
	}
}

// cpuTime returns the CPU time (user and system) the process has used.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// load is the child process that runs the bench upstream and sends the
// requests.
type load struct {
	upstream string
	in       io.Writer
	out      *bufio.Scanner
}

const loadEnv = "APIPOOL_BENCH_LOAD"

func startLoad(b *testing.B) *load {
	b.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestBenchLoad$", "-test.count=1", "-test.cpuprofile=", "-test.memprofile=")
	cmd.Env = append(os.Environ(), loadEnv+"=1")
	cmd.Stderr = os.Stderr
	in, err := cmd.StdinPipe()
	if err != nil {
		b.Fatal(err)
	}
	outp, err := cmd.StdoutPipe()
	if err != nil {
		b.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { in.Close(); cmd.Wait() })
	ld := &load{in: in, out: bufio.NewScanner(outp)}
	f := ld.reply(b)
	if len(f) != 1 {
		b.Fatalf("load: %q", f)
	}
	ld.upstream = f[0]
	return ld
}

// reply returns the fields of the child's next protocol line.
func (ld *load) reply(b *testing.B) []string {
	for ld.out.Scan() {
		if l, ok := strings.CutPrefix(ld.out.Text(), "LOAD "); ok {
			return strings.Fields(l)
		}
	}
	b.Fatal("load: the child process ended")
	return nil
}

// drive has the child send b.N requests to u over benchConns connections,
// and returns this process's CPU time per request, in microseconds.
func (ld *load) drive(b *testing.B, u string) float64 {
	fmt.Fprintf(ld.in, "warm %s\n", u)
	if f := ld.reply(b); len(f) != 1 || f[0] != "ok" {
		b.Fatalf("load: %q", f)
	}
	b.ReportAllocs()
	b.ResetTimer()
	cpu0 := cpuTime()
	fmt.Fprintf(ld.in, "run %s %d\n", u, b.N)
	f := ld.reply(b)
	cpu := cpuTime() - cpu0
	b.StopTimer()
	if len(f) != 3 || f[0] != "ok" {
		b.Fatalf("load: %q", f)
	}
	elapsed, _ := strconv.ParseFloat(f[1], 64)
	p99, _ := strconv.ParseFloat(f[2], 64)
	b.ReportMetric(float64(b.N)/elapsed, "req/s")
	b.ReportMetric(p99*1000, "p99-ms")
	perReq := float64(cpu.Nanoseconds()) / 1000 / float64(b.N)
	b.ReportMetric(perReq, "cpu-us/op")
	return perReq
}

// TestBenchLoad is BenchmarkProxyOverhead's child process; it does
// nothing in a test run. It serves the bench upstream, prints its URL,
// then runs the commands it reads: "warm URL" sends a request on each
// connection, "run URL N" sends N requests and prints the seconds taken
// and the 99th percentile latency.
func TestBenchLoad(t *testing.T) {
	if os.Getenv(loadEnv) == "" {
		t.Skip("BenchmarkProxyOverhead's child process")
	}
	up := serveOn(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/json")
		w.Write(benchBody)
	}))
	fmt.Printf("LOAD %s\n", up)
	clients := map[string]*http.Client{}
	sc := bufio.NewScanner(os.Stdin)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 2 {
			continue
		}
		c := clients[f[1]]
		if c == nil {
			c = &http.Client{Transport: &http.Transport{MaxIdleConns: benchConns, MaxIdleConnsPerHost: benchConns, MaxConnsPerHost: benchConns, DisableCompression: true}}
			clients[f[1]] = c
		}
		switch f[0] {
		case "warm":
			var wg sync.WaitGroup
			errs := make(chan error, benchConns)
			for i := 0; i < benchConns; i++ {
				wg.Add(1)
				go func() { defer wg.Done(); _, err := send(c, f[1]); errs <- err }()
			}
			wg.Wait()
			close(errs)
			res := "ok"
			for err := range errs {
				if err != nil {
					res = strings.ReplaceAll(err.Error(), " ", "_")
				}
			}
			fmt.Printf("LOAD %s\n", res)
		case "run":
			n, _ := strconv.Atoi(f[2])
			elapsed, p99, err := driveN(c, f[1], n)
			if err != nil {
				fmt.Printf("LOAD %s\n", strings.ReplaceAll(err.Error(), " ", "_"))
				continue
			}
			fmt.Printf("LOAD ok %g %g\n", elapsed.Seconds(), p99.Seconds())
		}
	}
}

const benchConns = 64

func send(client *http.Client, u string) (time.Duration, error) {
	body := `{"model":"m","messages":[{"role":"user","content":"hi"}]}`
	req, _ := http.NewRequest("POST", u, strings.NewReader(body))
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

// driveN sends n requests to u over benchConns connections.
func driveN(client *http.Client, u string, n int) (elapsed, p99 time.Duration, err error) {
	var mu sync.Mutex
	var all []time.Duration
	var firstErr error
	next := make(chan struct{}, n)
	for i := 0; i < n; i++ {
		next <- struct{}{}
	}
	close(next)
	start := time.Now()
	var wg sync.WaitGroup
	for w := 0; w < benchConns; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			lat := make([]time.Duration, 0, n/benchConns+1)
			for range next {
				d, err := send(client, u)
				if err != nil {
					mu.Lock()
					firstErr = err
					mu.Unlock()
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
	elapsed = time.Since(start)
	if firstErr != nil {
		return 0, 0, firstErr
	}
	sort.Slice(all, func(i, j int) bool { return all[i] < all[j] })
	if len(all) > 0 {
		p99 = all[len(all)*99/100]
	}
	return elapsed, p99, nil
}

type benchBuffers struct{}

var benchBufPool = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}

func (benchBuffers) Get() []byte  { return *benchBufPool.Get().(*[]byte) }
func (benchBuffers) Put(b []byte) { benchBufPool.Put(&b) }
