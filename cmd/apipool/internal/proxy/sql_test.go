package proxy_test

import (
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/apipool-ng/apipool/cmd/apipool/internal/proxy"
	"github.com/apipool-ng/apipool/internal/pgtest"
)

// TestSQLiteServeThenReport serves with the SQL recorder on a SQLite file,
// stops (which flushes it), then runs report against the same file.
func TestSQLiteServeThenReport(t *testing.T) {
	sqlServeThenReport(t, "sqlite", "'"+filepath.Join(t.TempDir(), "usage.db")+"'")
}

// TestPostgresServeThenReport is the same on a private PostgreSQL, its
// DSN (which may hold a password) given as ${VAR}.
func TestPostgresServeThenReport(t *testing.T) {
	pg := pgtest.StartPrivate(t)
	t.Setenv("APIPOOL_TEST_PG_DSN", pg.Database(t))
	sqlServeThenReport(t, "postgres", "'${APIPOOL_TEST_PG_DSN}'")
}

func sqlServeThenReport(t *testing.T, driver, dsn string) {
	yaml := func(up, kf string) string {
		return fmt.Sprintf(`tokens: [{name: a, sha256: %s}]
recorder:
  type: sql
  sql: {driver: %s, dsn: %s}
upstreams:
  - {name: openai, prefix: /openai, target: '%s', keys: {file: %s}}
`, sha(token), driver, dsn, up, kf)
	}
	e := newEnv(t, envOpts{ownRec: true, limited: []string{secretLim}, yaml: yaml})
	for i := 0; i < 5; i++ {
		resp := e.do("GET", "/openai/v1/models", token, "")
		if readAll(t, resp); resp.StatusCode != 200 {
			t.Fatalf("status %d", resp.StatusCode)
		}
	}
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
	if rep.UsageCount["all"] != 6 || rep.UsageCount["success"] != 5 || rep.UsageCount["reach limit"] != 1 || rep.UsageByKey["openai/k2"] != 1 {
		t.Fatalf("report %+v", rep)
	}
	code, out, _ = runMain("", "report", "-config", e.cfgPath, "-since", "1h")
	if code != 0 {
		t.Fatalf("table: %d", code)
	}
	t.Log("\n" + out)
}
