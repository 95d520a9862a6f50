package proxy_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/apipool-ng/apipool/cmd/apipool/internal/proxy"
	"github.com/apipool-ng/apipool/internal/chtest"
	"github.com/apipool-ng/apipool/internal/redistest"
)

// TestClickHouseServeThenReport serves with the ClickHouse recorder, stops
// (which flushes it), then runs report against the same store.
func TestClickHouseServeThenReport(t *testing.T) {
	ch := chtest.StartPrivate(t)
	yaml := func(up, kf string) string {
		return fmt.Sprintf(`tokens: [{name: a, sha256: %s}]
recorder:
  type: clickhouse
  clickhouse: {addrs: ['%s'], table: proxy_events, batch_size: 100000}
upstreams:
  - {name: openai, prefix: /openai, target: '%s', keys: {file: %s}}
`, sha(token), ch.Addr, up, kf)
	}
	e := newEnv(t, envOpts{ownRec: true, limited: []string{secretLim}, yaml: yaml})
	for i := 0; i < 7; i++ {
		resp := e.do("GET", "/openai/v1/models", token, "")
		if readAll(t, resp); resp.StatusCode != 200 {
			t.Fatalf("status %d", resp.StatusCode)
		}
	}
	// The batch size is far above 8 events: only Shutdown's flush writes
	// them.
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := e.srv.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	code, out, errOut := runMain("", "report", "-config", e.cfgPath, "-since", "1h", "-format", "json")
	if code != 0 {
		t.Fatalf("report: %d\n%s", code, errOut)
	}
	var rep proxy.Report
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	if rep.UsageCount["all"] != 8 || rep.UsageCount["success"] != 7 || rep.UsageCount["reach limit"] != 1 {
		t.Fatalf("usage counts %v", rep.UsageCount)
	}
	if rep.UsageByKey["openai/k2"] != 1 || rep.UsageByKey["openai/k0"]+rep.UsageByKey["openai/k1"] != 7 {
		t.Fatalf("usage by key %v", rep.UsageByKey)
	}
	code, out, _ = runMain("", "report", "-config", e.cfgPath, "-since", "1h", "-format", "csv")
	if code != 0 || !bytes.HasPrefix([]byte(out), []byte("key,attempts,success,failed,reach_limit,p50_ms,p99_ms,input_tokens,output_tokens,cached_tokens,tokens_unknown,cost,cost_unknown\n")) {
		t.Fatalf("csv: %d\n%s", code, out)
	}
}

// TestReplicasShareKeyState runs two proxies on one Redis: a key that
// one replica finds rate-limited is skipped by the other.
func TestReplicasShareKeyState(t *testing.T) {
	rd := redistest.StartPrivate(t)
	yaml := func(up, kf string) string {
		return fmt.Sprintf(`tokens: [{name: a, sha256: %s}]
redis: {addr: '%s', prefix: t%d}
upstreams:
  - {name: openai, prefix: /openai, target: '%s', keys: {file: %s}, strategy: round-robin}
`, sha(token), rd.Addr, time.Now().UnixNano(), up, kf)
	}
	y := yaml("", "")
	first := newEnv(t, envOpts{limited: []string{secretLim}, yaml: func(up, kf string) string {
		y = yaml(up, kf)
		return y
	}})
	second := newEnv(t, envOpts{limited: []string{secretLim}, yaml: func(string, string) string { return y }})
	// The second replica uses the first's config, so the same fake API,
	// key file and Redis prefix.
	for i := 0; i < 3; i++ {
		resp := first.do("GET", "/openai/v1/models", token, "")
		if readAll(t, resp); resp.StatusCode != 200 {
			t.Fatalf("status %d", resp.StatusCode)
		}
	}
	if first.api.Limited()[secretLim] != 1 {
		t.Fatalf("the first replica did not meet the limited key: %v", first.api.Limited())
	}
	waitFor(t, "the second replica to see the cooldown", func() bool {
		for _, k := range second.srv.Pool("openai").Snapshot() {
			if k.KeyID == "openai/k2" {
				return k.State == "cooling"
			}
		}
		return false
	})
	for i := 0; i < 6; i++ {
		resp := second.do("GET", "/openai/v1/models", token, "")
		if readAll(t, resp); resp.StatusCode != 200 {
			t.Fatalf("status %d", resp.StatusCode)
		}
	}
	if n := first.api.Limited()[secretLim]; n != 1 {
		t.Fatalf("the limited key was tried %d times across both replicas, want 1", n)
	}
}
