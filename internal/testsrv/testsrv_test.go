package testsrv

import (
	"errors"
	"fmt"
	"runtime"
	"strings"
	"testing"
)

func TestBinaryPath(t *testing.T) {
	b := Binary{Pkg: "xtest", Name: "no-such-server-binary", Env: "XTEST_SERVER", Default: "/no/such/dir/server", InstallHint: "install it with: apt-get install -y x"}
	t.Setenv("XTEST_SERVER", "")
	if _, err := b.Path(); err == nil || !strings.HasPrefix(err.Error(), "xtest: no-such-server-binary not found at /no/such/dir/server nor on PATH; install it with") {
		t.Errorf("no binary: %v", err)
	}
	t.Setenv("XTEST_SERVER", "/no/such/file")
	if _, err := b.Path(); err == nil || !strings.Contains(err.Error(), "XTEST_SERVER=/no/such/file") || !strings.HasSuffix(err.Error(), b.InstallHint) {
		t.Errorf("$XTEST_SERVER missing: %v", err)
	}
	t.Setenv("XTEST_SERVER", "/")
	if p, err := b.Path(); p != "/" || err != nil {
		t.Errorf("$XTEST_SERVER=/: %q, %v", p, err)
	}
}

// fakeTB records how a test ended; Skip and Fatal end its goroutine, as
// testing's do.
type fakeTB struct {
	testing.TB
	skipped, failed bool
	msg             string
}

func (f *fakeTB) Helper() {}
func (f *fakeTB) Skip(args ...any) {
	f.skipped, f.msg = true, fmt.Sprint(args...)
	runtime.Goexit()
}
func (f *fakeTB) Fatalf(format string, args ...any) {
	f.failed, f.msg = true, fmt.Sprintf(format, args...)
	runtime.Goexit()
}

// TestMissingBinary: a harness with no binary skips a test that needs its
// server, with the reason, or fails it when CI is "true".
func TestMissingBinary(t *testing.T) {
	h := &Harness[closer]{Pkg: "xtest", Binary: func() (string, error) { return "", errors.New("xtest: no binary; install it") }}
	for _, ci := range []string{"", "true"} {
		t.Setenv("CI", ci)
		for name, use := range map[string]func(tb testing.TB){
			"StartPrivate": func(tb testing.TB) { h.StartPrivate(tb, func() (closer, error) { panic("started") }) },
			"Shared":       func(tb testing.TB) { h.skip = "xtest: no binary; install it"; h.Shared(tb) },
		} {
			f := &fakeTB{}
			done := make(chan struct{})
			go func() {
				defer close(done)
				use(f)
			}()
			<-done
			if !strings.HasPrefix(f.msg, "xtest: no binary; install it") {
				t.Errorf("%s, CI=%q: message %q", name, ci, f.msg)
			}
			if ci == "true" && (!f.failed || !strings.HasSuffix(f.msg, "(CI=true, so a missing server is an error)")) {
				t.Errorf("%s, CI=true: failed=%v skipped=%v, want a failure", name, f.failed, f.skipped)
			}
			if ci == "" && (!f.skipped || f.failed) {
				t.Errorf("%s, CI unset: failed=%v skipped=%v, want a skip", name, f.failed, f.skipped)
			}
		}
	}
}

type closer struct{}

func (closer) Close() error { return nil }
