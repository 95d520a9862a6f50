package clickhouse

import (
	"errors"
	"strings"
	"testing"

	"github.com/apipool-ng/apipool/errdefs"
)

// clusterSchema is the schema config of a cluster-mode Config with
// defaults.
func clusterSchema(t *testing.T) schemaConfig {
	t.Helper()
	cfg, err := Config{Database: "db", Table: "events", Cluster: "c1"}.withDefaults()
	if err != nil {
		t.Fatal(err)
	}
	return cfg.schemaConfig()
}

// TestPlanSchemaCluster checks the cluster DDL on both schema branches:
// replicated local tables, ON CLUSTER everywhere, the view between the
// local tables, and Distributed tables named as the single-server tables.
func TestPlanSchemaCluster(t *testing.T) {
	for _, v := range []version{{18, 16}, {21, 8}, {24, 3}} {
		p := planSchema(featuresFor(v), clusterSchema(t))
		st := p.Statements()
		if len(st) != 5 {
			t.Fatalf("%v: %d statements, want 5:\n%s", v, len(st), strings.Join(st, ";\n"))
		}
		for i, want := range [][]string{
			{"CREATE TABLE IF NOT EXISTS `db`.`events_local` ON CLUSTER `c1`\n(",
				"ENGINE = ReplicatedMergeTree('/clickhouse/tables/{shard}/db.events_local', '{replica}')",
				"replicated_deduplication_window = 1000"},
			{"CREATE TABLE IF NOT EXISTS `db`.`events` ON CLUSTER `c1` AS `db`.`events_local`\n" +
				"ENGINE = Distributed('c1', 'db', 'events_local', cityHash64(toString(event_id)))"},
			{"CREATE TABLE IF NOT EXISTS `db`.`events_1m_local` ON CLUSTER `c1`\n(",
				"ENGINE = ReplicatedAggregatingMergeTree('/clickhouse/tables/{shard}/db.events_1m_local', '{replica}')"},
			{"CREATE MATERIALIZED VIEW IF NOT EXISTS `db`.`events_1m_mv` ON CLUSTER `c1` TO `db`.`events_1m_local`",
				"FROM `db`.`events_local`"},
			{"CREATE TABLE IF NOT EXISTS `db`.`events_1m` ON CLUSTER `c1` AS `db`.`events_1m_local`\n" +
				"ENGINE = Distributed('c1', 'db', 'events_1m_local')"},
		} {
			for _, w := range want {
				if !strings.Contains(st[i], w) {
					t.Errorf("%v: statement %d lacks %q:\n%s", v, i, w, st[i])
				}
			}
		}
		if strings.Contains(p.Table, "non_replicated") {
			t.Errorf("%v: the replicated table has a non-replicated setting:\n%s", v, p.Table)
		}
		if v.atLeast(21, 1) != strings.Contains(p.Table, "DateTime64") {
			t.Errorf("%v: the cluster table does not follow the server's schema branch:\n%s", v, p.Table)
		}
	}
}

func TestPlanSchemaClusterPaths(t *testing.T) {
	cfg, err := Config{Table: "ev", Cluster: "c", ReplicaPath: "/ch/{layer}-{shard}/", ReplicaName: "{host}"}.withDefaults()
	if err != nil {
		t.Fatal(err)
	}
	p := planSchema(featuresFor(version{18, 16}), cfg.schemaConfig())
	if want := "ReplicatedMergeTree('/ch/{layer}-{shard}/default.ev_local', '{host}')"; !strings.Contains(p.Table, want) {
		t.Errorf("table DDL lacks %q:\n%s", want, p.Table)
	}
}

func TestPlanSchemaSingleServerUnchanged(t *testing.T) {
	p := planSchema(featuresFor(version{21, 8}), testSchema)
	for _, s := range p.Statements() {
		if strings.Contains(s, "ON CLUSTER") || strings.Contains(s, "Replicated") || strings.Contains(s, "Distributed") {
			t.Errorf("single-server DDL has cluster parts:\n%s", s)
		}
	}
	if p.Dist != "" || p.RollupDist != "" {
		t.Errorf("single-server plan has Distributed tables: %q %q", p.Dist, p.RollupDist)
	}
}

func TestClusterConfigErrors(t *testing.T) {
	for _, c := range []struct {
		name, field string
		cfg         Config
	}{
		{"cluster not an identifier", "Cluster", Config{Cluster: "a-b"}},
		{"cluster with a quote", "Cluster", Config{Cluster: "a'b"}},
		{"relative path", "ReplicaPath", Config{Cluster: "c", ReplicaPath: "clickhouse/tables"}},
		{"quote in path", "ReplicaPath", Config{Cluster: "c", ReplicaPath: "/x'y"}},
		{"backslash in replica", "ReplicaName", Config{Cluster: "c", ReplicaName: `{replica}\`}},
		{"table too long for the local suffix", "Table", Config{Cluster: "c", Table: strings.Repeat("t", 120)}},
		{"InsertDistributed without a cluster", "InsertDistributed", Config{InsertDistributed: true}},
	} {
		_, err := c.cfg.withDefaults()
		var ce *errdefs.ConfigError
		if !errors.Is(err, errdefs.ErrInvalidConfig) || !errors.As(err, &ce) || ce.Field != "clickhouse.Config."+c.field {
			t.Errorf("%s: withDefaults = %v, want a *ConfigError naming clickhouse.Config.%s", c.name, err, c.field)
		}
	}
	cfg, err := Config{Cluster: "c"}.withDefaults()
	if err != nil {
		t.Fatal(err)
	}
	if cfg.ReplicaPath != DefaultReplicaPath || cfg.ReplicaName != DefaultReplicaName {
		t.Errorf("defaults: ReplicaPath %q, ReplicaName %q", cfg.ReplicaPath, cfg.ReplicaName)
	}
	if cfg, _ := (Config{}).withDefaults(); cfg.ReplicaPath != "" || cfg.ReplicaName != "" {
		t.Errorf("single-server config got replica defaults: %q %q", cfg.ReplicaPath, cfg.ReplicaName)
	}
}
