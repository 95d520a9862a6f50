package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// Relative key files and a relative SQLite DSN were opened from the
// working directory, not the config file's, and the errors did not show
// the path tried (issue 27 item 5). Now they start at the config file's
// directory, and errors show the resolved path.
func TestRelativePathsFromConfigDir(t *testing.T) {
	dir := t.TempDir()
	t.Chdir(t.TempDir()) // elsewhere
	if err := os.WriteFile(filepath.Join(dir, "keys"), []byte("k1 sk-one-AAAA\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(dir, "data"), 0o700); err != nil {
		t.Fatal(err)
	}
	cfg := filepath.Join(dir, "apipool.yaml")
	y := minimal("keys") + "recorder: {type: sql, sql: {driver: sqlite, dsn: 'data/usage.db?_pragma=foreign_keys(1)'}}\n"
	if err := os.WriteFile(cfg, []byte(y), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := Load(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := c.Upstreams[0].KeyFile, filepath.Join(dir, "keys"); got != want {
		t.Errorf("KeyFile = %q, want %q", got, want)
	}
	if len(c.Upstreams[0].Keys) != 1 {
		t.Errorf("keys: %v", c.Upstreams[0].Keys)
	}
	db := filepath.Join(dir, "data", "usage.db")
	if got, want := c.Recorder.SQL.DSN, db+"?_pragma=foreign_keys(1)"; got != want {
		t.Errorf("DSN = %q, want %q", got, want)
	}
	if c.Recorder.SQL.SQLiteFile != db {
		t.Errorf("SQLiteFile = %q, want %q", c.Recorder.SQL.SQLiteFile, db)
	}

	// file: DSNs, absolute paths and in-memory databases.
	v := &validator{dir: dir}
	for in, want := range map[string]string{
		"file:u.db?mode=rwc":        "file:" + filepath.Join(dir, "u.db") + "?mode=rwc",
		"/var/lib/apipool/usage.db": "/var/lib/apipool/usage.db",
		":memory:":                  ":memory:",
		"file:x?mode=memory":        "file:x?mode=memory",
		"file:///abs/u.db":          "file:///abs/u.db",
	} {
		if got, _ := v.sqliteDSN(in); got != want {
			t.Errorf("sqliteDSN(%q) = %q, want %q", in, got, want)
		}
	}

	// The errors show the path tried, resolved, with the line.
	y = minimal("missing.keys") + "recorder:\n  type: sql\n  sql: {driver: sqlite, dsn: nodir/usage.db}\n"
	if err := os.WriteFile(cfg, []byte(y), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err = Load(cfg)
	if err == nil {
		t.Fatal("no error")
	}
	for _, want := range []string{
		cfg + ":8: upstreams[0].keys.file: key file " + filepath.Join(dir, "missing.keys") + ": no such file or directory",
		cfg + ":11: recorder.sql.dsn: the SQLite database " + filepath.Join(dir, "nodir", "usage.db") + ": its directory does not exist",
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error:\n%v\nwant it to contain:\n%s", err, want)
		}
	}
}

// memory.New refuses a retention outside [5m, 744h]: the loader says so
// with the line, rather than serve failing at start without one.
func TestMemoryRetentionRange(t *testing.T) {
	kf := writeKeys(t, "sk-one-AAAA\n", 0o600)
	for in, ok := range map[string]bool{"5m": true, "744h": true, "24h": true, "4m": false, "0s": false, "745h": false} {
		y := minimal(kf) + "recorder:\n  memory:\n    retention: " + in + "\n"
		_, err := Parse("f.yaml", []byte(y))
		if ok && err != nil {
			t.Errorf("%s: %v", in, err)
		}
		if want := "f.yaml:11: recorder.memory.retention: want 5m to 744h"; !ok && (err == nil || !strings.Contains(err.Error(), want)) {
			t.Errorf("%s: %v; want %q", in, err, want)
		}
	}
}
