package proxy_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/apipool-ng/apipool/cmd/apipool/internal/proxy"
	"github.com/apipool-ng/apipool/internal/chtest"
	"github.com/apipool-ng/apipool/internal/mysqltest"
	"github.com/apipool-ng/apipool/internal/pgtest"
	"github.com/apipool-ng/apipool/internal/testsrv"
	"github.com/apipool-ng/apipool/recorder"
	sqlrec "github.com/apipool-ng/apipool/recorder/sql"
)

// dbServer is what the test needs of pgtest's and mysqltest's servers.
type dbServer interface {
	Database(t testing.TB) string
	Stop() error
	Start() error
}

// TestServeWhilePostgresDown starts the proxy while its PostgreSQL is
// stopped, serves requests, starts PostgreSQL and checks that every event
// arrives and /readyz goes from degraded to ready.
func TestServeWhilePostgresDown(t *testing.T) {
	serveWhileSQLDown(t, "postgres", pgtest.StartPrivate(t))
}

// TestServeWhileMySQLDown is the same on MariaDB.
func TestServeWhileMySQLDown(t *testing.T) {
	serveWhileSQLDown(t, "mysql", mysqltest.StartPrivate(t))
}

// sqlYAML configures the SQL recorder, its DSN given as ${VAR} as serve
// requires of a DSN (set for t).
func sqlYAML(t *testing.T, driver, dsn string) func(up, kf string) string {
	t.Setenv("APIPOOL_TEST_SQL_DSN", dsn)
	return func(up, kf string) string {
		return fmt.Sprintf(`tokens: [{name: a, sha256: %s}]
recorder:
  type: sql
  sql: {driver: %s, dsn: '${APIPOOL_TEST_SQL_DSN}'}
upstreams:
  - {name: openai, prefix: /openai, target: '%s', keys: {file: %s}}
`, sha(token), driver, up, kf)
	}
}

// readyz returns /readyz's status and body.
func readyz(e *env) (int, string) {
	e.t.Helper()
	resp := e.do("GET", "/readyz", "", "")
	return resp.StatusCode, readAll(e.t, resp)
}

func serveWhileSQLDown(t *testing.T, driver string, db dbServer) {
	dsn := db.Database(t)
	if err := db.Stop(); err != nil {
		t.Fatal(err)
	}
	proxy.ShortDeferredBackoff(t)
	e := newEnv(t, envOpts{ownRec: true, yaml: sqlYAML(t, driver, dsn)})

	const n = 25 // well under proxy.DeferredQueueSize: none may be lost
	for i := 0; i < n; i++ {
		resp := e.do("GET", "/openai/v1/models", token, "")
		if readAll(t, resp); resp.StatusCode != 200 {
			t.Fatalf("request %d: status %d", i, resp.StatusCode)
		}
	}
	code, body := readyz(e)
	want := fmt.Sprintf("ready, degraded: stats store sql/%s unreachable, %d events held, 0 dropped (see the log)\n", driver, n)
	if code != 200 || body != want {
		t.Fatalf("/readyz while the database is down: %d %q, want 200 %q", code, body, want)
	}

	// The pool keeps its usage queries (through the deferred store): they
	// fail until the store opens.
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	st := e.srv.Pool("openai").Stats()
	if st == nil {
		t.Fatal("the pool has no Stats")
	}
	if _, err := st.UsageCount(ctx, recorder.Query{}); !errors.Is(err, proxy.ErrStatsUnavailable) {
		t.Fatalf("UsageCount while the database is down: %v", err)
	}

	if err := db.Start(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "/readyz to say ready", func() bool {
		code, body := readyz(e)
		return code == 200 && body == "ready\n"
	})
	check, err := sqlrec.Open(ctx, driver, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer check.Close(ctx)
	var got int64
	waitFor(t, fmt.Sprintf("%d events in the database", n), func() bool {
		got, err = check.UsageCount(ctx, recorder.Query{})
		if err != nil {
			t.Fatal(err)
		}
		return got >= n
	})
	if got != n {
		t.Fatalf("%d events in the database, want %d", got, n)
	}
	if got, err := st.UsageCount(ctx, recorder.Query{}); err != nil || got != n {
		t.Fatalf("the pool's UsageCount: %d, %v; want %d", got, err, n)
	}
	// Events after the store opened go straight through.
	resp := e.do("GET", "/openai/v1/models", token, "")
	if readAll(t, resp); resp.StatusCode != 200 {
		t.Fatalf("status %d", resp.StatusCode)
	}
	if err := e.srv.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	if got, err = check.UsageCount(ctx, recorder.Query{}); err != nil || got != n+1 {
		t.Fatalf("after Shutdown: %d events (%v), want %d", got, err, n+1)
	}
	if !strings.Contains(e.logs.String(), "stats store reachable") {
		t.Errorf("no log line for the store's return:\n%s", e.logs.String())
	}
}

// TestServeWithoutSQLServer points the recorder at a loopback port where
// nothing listens: serve starts and proxies, /readyz stays 200 but names
// the degraded store, and Shutdown reports the events it could not store.
func TestServeWithoutSQLServer(t *testing.T) {
	port, err := testsrv.FreePort("proxy")
	if err != nil {
		t.Fatal(err)
	}
	dsn := fmt.Sprintf("postgres://postgres@127.0.0.1:%d/none?sslmode=disable&connect_timeout=2", port)
	e := newEnv(t, envOpts{ownRec: true, yaml: sqlYAML(t, "postgres", dsn)})
	for i := 0; i < 3; i++ {
		resp := e.do("GET", "/openai/v1/models", token, "")
		if readAll(t, resp); resp.StatusCode != 200 {
			t.Fatalf("status %d", resp.StatusCode)
		}
	}
	code, body := readyz(e)
	if want := "ready, degraded: stats store sql/postgres unreachable, 3 events held, 0 dropped (see the log)\n"; code != 200 || body != want {
		t.Fatalf("/readyz: %d %q, want 200 %q", code, body, want)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	err = e.srv.Shutdown(ctx)
	if err == nil || !strings.Contains(err.Error(), "never became reachable") || !strings.Contains(err.Error(), "3 events lost") {
		t.Fatalf("Shutdown: %v, want the 3 events reported lost", err)
	}
	if e.srv.Ready() {
		t.Fatal("ready after Shutdown")
	}
}

// TestServeWhileClickHouseDown: the ClickHouse store already starts while
// its server is down (AllowUnavailable; events queue and spill). /readyz
// names it degraded until it writes, and every event arrives.
func TestServeWhileClickHouseDown(t *testing.T) {
	ch := chtest.StartPrivate(t)
	if err := ch.Stop(); err != nil {
		t.Fatal(err)
	}
	spill := t.TempDir()
	e := newEnv(t, envOpts{ownRec: true, yaml: func(up, kf string) string {
		return fmt.Sprintf(`tokens: [{name: a, sha256: %s}]
recorder:
  type: clickhouse
  clickhouse: {addrs: ['%s'], table: proxy_events, spill_dir: '%s'}
upstreams:
  - {name: openai, prefix: /openai, target: '%s', keys: {file: %s}}
`, sha(token), ch.Addr, spill, up, kf)
	}})
	const n = 10
	for i := 0; i < n; i++ {
		resp := e.do("GET", "/openai/v1/models", token, "")
		if readAll(t, resp); resp.StatusCode != 200 {
			t.Fatalf("request %d: status %d", i, resp.StatusCode)
		}
	}
	if code, body := readyz(e); code != 200 || !strings.HasPrefix(body, "ready, degraded: stats store clickhouse failing, ") {
		t.Fatalf("/readyz while ClickHouse is down: %d %q", code, body)
	}
	if err := ch.Start(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "/readyz to say ready", func() bool {
		code, body := readyz(e)
		return code == 200 && body == "ready\n"
	})
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
	if rep.UsageCount["all"] != n {
		t.Fatalf("usage counts %v, want all %d", rep.UsageCount, n)
	}
}
