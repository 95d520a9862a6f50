package clickhouse

import (
	"os"
	"strings"
	"testing"
)

// TestReadmeShowsTheDDL checks that README.md shows the DDL that New runs
// for the default config, for both kinds of server.
func TestReadmeShowsTheDDL(t *testing.T) {
	readme, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := Config{}.withDefaults()
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range []version{{18, 16}, {21, 8}} {
		p := planSchema(featuresFor(v), cfg.schemaConfig())
		ddl := strings.Join(p.Statements(), ";\n\n") + ";"
		if !strings.Contains(string(readme), ddl) {
			t.Errorf("README.md does not show the DDL for %v servers:\n%s", v, ddl)
		}
	}
}
