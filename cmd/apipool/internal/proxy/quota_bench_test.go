package proxy_test

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/apipool-ng/apipool/cmd/apipool/internal/config"
	"github.com/apipool-ng/apipool/cmd/apipool/internal/proxy"
	"github.com/apipool-ng/apipool/internal/quotasim"
)

// The quota scenario of issue 29 (internal/quotasim) through the proxy:
// the clients send HTTP to `apipool serve`'s handler (one upstream of the
// scenario's keys, every setting at its default), whose pool sends to the
// scenario's in-process provider (proxy.Options.Base), as the library's
// run (bench/quota_test.go) does with the pool alone. On the real clock
// the clients reach the proxy on loopback; in virtual time through an
// in-memory network (quotasim.Pipes).

// quotaProxy is the scenario's Setup for the proxy.
func quotaProxy(tb testing.TB, env quotasim.Env) quotasim.Target {
	dir := tb.TempDir()
	kf := filepath.Join(dir, "keys")
	var lines []string
	for _, k := range env.Keys {
		lines = append(lines, k.ID+" "+k.Secret.Reveal())
	}
	if err := os.WriteFile(kf, []byte(strings.Join(lines, "\n")+"\n"), 0o600); err != nil {
		tb.Fatal(err)
	}
	perSecond := ""
	if ps := env.Keys[0].PerSecond; ps > 0 {
		perSecond = fmt.Sprintf(", key_limits: {per_second: %g}", ps)
	}
	cfgPath := filepath.Join(dir, "apipool.yaml")
	y := fmt.Sprintf(`tokens: [{name: quota, sha256: %s}]
upstreams:
  - {name: api, prefix: /api, target: 'http://api.example.test', keys: {file: %s}%s}
`, sha(token), kf, perSecond)
	if err := os.WriteFile(cfgPath, []byte(y), 0o600); err != nil {
		tb.Fatal(err)
	}
	cfg, err := config.Load(cfgPath)
	if err != nil {
		tb.Fatal(err)
	}
	srv, err := proxy.New(context.Background(), cfg, proxy.Options{Base: env.Provider})
	if err != nil {
		tb.Fatal(err)
	}
	client := &http.Transport{MaxIdleConns: quotasim.Clients, MaxIdleConnsPerHost: quotasim.Clients, DisableCompression: true}
	var ln net.Listener
	base := "http://proxy.test"
	if env.Virtual {
		pipes := quotasim.NewPipes()
		ln, client.DialContext = pipes, pipes.DialContext
	} else {
		if ln, err = net.Listen("tcp", "127.0.0.1:0"); err != nil {
			tb.Fatal(err)
		}
		base = "http://" + ln.Addr().String()
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln, nil) }()
	tb.Cleanup(func() {
		client.CloseIdleConnections()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
		<-served
	})
	return quotasim.Target{
		Client:   &http.Client{Transport: client},
		URL:      base + "/api/v1/items?limit=10",
		Header:   http.Header{"Authorization": {"Bearer " + token}},
		Snapshot: srv.Pool("api").Snapshot,
	}
}

// BenchmarkProxyQuota runs the quota scenario through the proxy in each
// mode on the real clock, one op per one-second window of load, as
// bench's BenchmarkQuota does through the library (the same environment
// variables: QUOTA_SECONDS, QUOTA_LATENCY, QUOTA_TRACE; the same metrics).
func BenchmarkProxyQuota(b *testing.B) {
	for _, mode := range quotasim.Modes {
		b.Run(mode.Name, func(b *testing.B) {
			next := b.Loop
			if os.Getenv("QUOTA_SECONDS") != "" {
				next = quotasim.WindowsOf(quotasim.Seconds(b, 0))
			}
			r := quotasim.Run(b, quotasim.Options{Mode: mode, Latency: quotasim.Latency(b), Next: next, Trace: os.Getenv("QUOTA_TRACE")}, quotaProxy)
			quotasim.ReportMetrics(b, r)
		})
	}
}

// TestProxyQuotaReport prints the quota scenario's figures through the
// proxy, as bench's TestQuotaReport does through the library: only with
// QUOTA_REPORT=1, in virtual time unless QUOTA_CLOCK=real, 30 windows per
// mode unless QUOTA_SECONDS says otherwise:
//
//	QUOTA_REPORT=1 go test -run TestProxyQuotaReport -v ./cmd/apipool/internal/proxy/
func TestProxyQuotaReport(t *testing.T) {
	if os.Getenv("QUOTA_REPORT") != "1" {
		t.Skip("set QUOTA_REPORT=1 to run the quota scenario through the proxy and print its figures")
	}
	quotasim.Report(t, "proxy", 30, quotaProxy)
}
