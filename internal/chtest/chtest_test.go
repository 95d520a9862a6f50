package chtest_test

import (
	"context"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/apipool-ng/apipool/internal/chtest"
)

func TestMain(m *testing.M) { chtest.Main(m) }

func TestSharedAnswers(t *testing.T) {
	srv := chtest.Shared(t)
	conn := srv.Conn(t)
	var v string
	if err := conn.QueryRow(context.Background(), "SELECT version()").Scan(&v); err != nil {
		t.Fatal(err)
	}
	t.Logf("server %s at %s", v, srv.Addr)
	host, _, err := net.SplitHostPort(srv.Addr)
	if err != nil || host != "127.0.0.1" {
		t.Fatalf("Addr = %q, want a 127.0.0.1 address", srv.Addr)
	}
}

func TestPasswordUser(t *testing.T) {
	srv := chtest.Shared(t)
	ctx := context.Background()
	for _, tc := range []struct {
		name, password string
		ok             bool
	}{
		{"right password", chtest.Password, true},
		{"wrong password", "nope", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			opts := srv.Options()
			opts.Auth = clickhouse.Auth{Username: chtest.PasswordUser, Password: tc.password}
			conn, err := clickhouse.Open(opts)
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			err = conn.Ping(ctx)
			if (err == nil) != tc.ok {
				t.Fatalf("Ping: %v, want ok=%v", err, tc.ok)
			}
		})
	}
}

func TestStopStartKeepsPortAndData(t *testing.T) {
	srv := chtest.StartPrivate(t)
	ctx := context.Background()
	conn := srv.Conn(t)
	if err := conn.Exec(ctx, "CREATE TABLE kept (x UInt8) ENGINE = MergeTree() ORDER BY x"); err != nil {
		t.Fatal(err)
	}
	// 18.16 answers an inline VALUES insert sent through Exec with a
	// request for data blocks, so insert with SELECT.
	if err := conn.Exec(ctx, "INSERT INTO kept (x) SELECT 7"); err != nil {
		t.Fatal(err)
	}
	addr := srv.Addr
	if err := srv.Stop(); err != nil {
		t.Fatal(err)
	}
	if srv.Running() {
		t.Fatal("Running after Stop")
	}
	if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
		c.Close()
		t.Fatalf("port %s still open after Stop", addr)
	}
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	if srv.Addr != addr {
		t.Fatalf("Addr changed from %s to %s", addr, srv.Addr)
	}
	var x uint8
	if err := srv.Conn(t).QueryRow(ctx, "SELECT x FROM kept").Scan(&x); err != nil || x != 7 {
		t.Fatalf("after restart: x=%d, %v", x, err)
	}
	if err := srv.Kill(); err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	if err := srv.Conn(t).QueryRow(ctx, "SELECT x FROM kept").Scan(&x); err != nil || x != 7 {
		t.Fatalf("after kill and restart: x=%d, %v", x, err)
	}
}

func TestBaseDir(t *testing.T) {
	srv := chtest.Shared(t)
	if got, want := filepath.Dir(srv.Dir), chtest.BaseDir(); got != want && os.Getenv("CHTEST_DIR") == "" {
		// Start falls back to the temporary directory when it cannot
		// write under /dev/shm.
		if got != filepath.Clean(os.TempDir()) {
			t.Errorf("server directory %s is under neither %s nor the temporary directory", srv.Dir, want)
		}
	}
	dir := t.TempDir()
	t.Setenv("CHTEST_DIR", dir)
	if got := chtest.BaseDir(); got != dir {
		t.Errorf("BaseDir() = %s with CHTEST_DIR=%s", got, dir)
	}
	srv2 := chtest.StartPrivate(t)
	if filepath.Dir(srv2.Dir) != dir {
		t.Errorf("server directory %s, want one under CHTEST_DIR=%s", srv2.Dir, dir)
	}
}

// TestSweepsLeftovers checks that Start removes the directory of a server
// whose test process has exited, and keeps those of live ones and those
// without an owner.
func TestSweepsLeftovers(t *testing.T) {
	base := t.TempDir()
	t.Setenv("CHTEST_DIR", base)
	// A process that has exited: a child, waited for.
	cmd := exec.Command("true")
	if err := cmd.Run(); err != nil {
		t.Skip("no true(1):", err)
	}
	dead := cmd.Process.Pid
	mk := func(name, owner string) string {
		dir := filepath.Join(base, name)
		if err := os.MkdirAll(filepath.Join(dir, "data"), 0o755); err != nil {
			t.Fatal(err)
		}
		if owner != "" {
			if err := os.WriteFile(filepath.Join(dir, "owner.pid"), []byte(owner), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		return dir
	}
	left := mk("chtest-1", strconv.Itoa(dead))
	live := mk("chtest-2", strconv.Itoa(os.Getpid()))
	unowned := mk("chtest-3", "")
	other := mk("other-4", strconv.Itoa(dead))
	chtest.StartPrivate(t)
	if _, err := os.Stat(left); !os.IsNotExist(err) {
		t.Errorf("the directory of an exited owner is still there: %v", err)
	}
	for _, dir := range []string{live, unowned, other} {
		if _, err := os.Stat(dir); err != nil {
			t.Errorf("%s: %v", dir, err)
		}
	}
}
