package zktest_test

import (
	"net"
	"os"
	"testing"

	"github.com/apipool-ng/apipool/internal/testsrv"
	"github.com/apipool-ng/apipool/internal/zktest"
)

// start starts a server for t, skipping (or failing, with CI=true) when
// ZooKeeper is not installed.
func start(t *testing.T) *zktest.Server {
	t.Helper()
	if _, _, err := zktest.Binary(); err != nil {
		if testsrv.InCI() {
			t.Fatalf("%v (CI=true, so a missing server is an error)", err)
		}
		t.Skip(err)
	}
	s, err := zktest.Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return s
}

func TestStopStartKeepsPortAndData(t *testing.T) {
	s := start(t)
	host, _, err := net.SplitHostPort(s.Addr)
	if err != nil || host != "127.0.0.1" {
		t.Fatalf("Addr = %q, want a 127.0.0.1 address", s.Addr)
	}
	dial := func() error {
		c, err := net.Dial("tcp", s.Addr)
		if err == nil {
			c.Close()
		}
		return err
	}
	if err := dial(); err != nil {
		t.Fatalf("dial a started server: %v", err)
	}
	if err := s.Stop(); err != nil {
		t.Fatal(err)
	}
	if s.Running() {
		t.Fatal("Running after Stop")
	}
	if err := dial(); err == nil {
		t.Fatal("the port still answers after Stop")
	}
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	if err := dial(); err != nil {
		t.Fatalf("dial after Start: %v", err)
	}
	if _, err := os.Stat(s.Dir + "/data/version-2"); err != nil {
		t.Fatalf("data directory: %v", err)
	}
}

func TestCloseRemovesDir(t *testing.T) {
	s := start(t)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(s.Dir); !os.IsNotExist(err) {
		t.Fatalf("Dir after Close: %v, want it gone", err)
	}
}
