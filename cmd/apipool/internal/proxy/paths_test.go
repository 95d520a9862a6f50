package proxy_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/apipool-ng/apipool/cmd/apipool/internal/config"
	"github.com/apipool-ng/apipool/cmd/apipool/internal/proxy"
)

// A relative SQLite DSN was opened from the working directory ("unable to
// open database file", and the proxy never listened) (issue 27 item 5):
// it starts at the config file's directory, and a database that cannot be
// opened is named in the error.
func TestRelativeSQLiteDSN(t *testing.T) {
	t.Chdir(t.TempDir())
	e := newEnv(t, envOpts{ownRec: true, yaml: func(up, kf string) string {
		return fmt.Sprintf(`tokens: [{name: a, sha256: %s}]
recorder: {type: sql, sql: {driver: sqlite, dsn: usage.db}}
upstreams:
  - {name: openai, prefix: /openai, target: '%s', keys: {file: openai.keys}}
`, sha(token), up)
	}})
	if resp := e.do("GET", "/openai/v1/models", token, ""); resp.StatusCode != 200 {
		t.Fatalf("status %d", resp.StatusCode)
	}
	if _, err := os.Stat(filepath.Join(e.dir, "usage.db")); err != nil {
		t.Errorf("the database is not next to the config file: %v", err)
	}

	// A path that cannot be a database (a directory): the error names it.
	dir := filepath.Join(e.dir, "adir")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	y, _ := os.ReadFile(e.cfgPath)
	bad := filepath.Join(e.dir, "bad.yaml")
	os.WriteFile(bad, []byte(strings.Replace(string(y), "dsn: usage.db", "dsn: adir", 1)), 0o600)
	cfg, err := config.Load(bad)
	if err != nil {
		t.Fatal(err)
	}
	s, err := proxy.New(context.Background(), cfg, proxy.Options{})
	if err == nil {
		s.Shutdown(context.Background())
		t.Fatal("no error")
	}
	if !strings.Contains(err.Error(), "SQLite database "+dir+":") {
		t.Errorf("error %q does not name %s", err, dir)
	}
}
