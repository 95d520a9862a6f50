package proxy_test

import (
	"runtime"
	"runtime/debug"
	"strings"
	"testing"

	"github.com/apipool-ng/apipool/cmd/apipool/internal/proxy"
)

// There was no version command (issue 27 item 11): apipool version
// prints the module version, the Go version and the commit when the
// build recorded one.
func TestVersion(t *testing.T) {
	code, out, errOut := runMain("", "version")
	if code != proxy.ExitOK || !strings.HasPrefix(out, "apipool ") || !strings.Contains(out, "\ngo "+runtime.Version()+"\n") {
		t.Errorf("version: %d %q %q", code, out, errOut)
	}
	bi := &debug.BuildInfo{GoVersion: "go1.26.0", Main: debug.Module{Path: "github.com/apipool-ng/apipool", Version: "v1.4.0"},
		Settings: []debug.BuildSetting{{Key: "vcs.revision", Value: "0123abcd"}, {Key: "vcs.time", Value: "2026-12-01T10:00:00Z"}, {Key: "vcs.modified", Value: "true"}}}
	if got, want := proxy.Version(bi), "apipool v1.4.0\ngo go1.26.0\nrevision 0123abcd+dirty (2026-12-01T10:00:00Z)\n"; got != want {
		t.Errorf("Version = %q, want %q", got, want)
	}
	if got := proxy.Version(nil); !strings.HasPrefix(got, "apipool unknown\ngo ") {
		t.Errorf("Version(nil) = %q", got)
	}
}
