package config

import (
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/apipool-ng/apipool/status"
)

// The example file and the README give the library's classifier defaults:
// 403 is not an invalid key (issue 27 item 3).
func TestDocsClassifierDefaults(t *testing.T) {
	def, err := status.NewClassifier(status.Config{})
	if err != nil {
		t.Fatal(err)
	}
	// codes lists the codes that cl classes as want, on answers without
	// rate-limit evidence.
	codes := func(cl *status.Classifier, want status.Status) []string {
		var out []string
		for code := 400; code < 600; code++ {
			if cl.Classify(&http.Response{StatusCode: code, Header: http.Header{}}, nil) == want {
				out = append(out, strconv.Itoa(code))
			}
		}
		return out
	}
	c := exampleConfig(t)
	for _, u := range c.Upstreams {
		cl, err := status.NewClassifier(u.Classifier)
		if err != nil {
			t.Fatal(err)
		}
		for _, s := range []status.Status{status.InvalidKey, status.ReachLimit} {
			if got, want := codes(cl, s), codes(def, s); !slices.Equal(got, want) {
				t.Errorf("the example's %s classifier: %v are %v; the library's default: %v", u.Name, got, s, want)
			}
		}
	}
	b, err := os.ReadFile(filepath.Join("..", "..", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	var row string
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(l, "| `upstreams[].classifier`") {
			row = l
		}
	}
	cells := strings.Split(row, "|")
	if len(cells) < 3 {
		t.Fatalf("no classifier row in the README")
	}
	// "429; 401 (...)": the rate-limit codes, then the invalid-key codes.
	dflt := strings.TrimSpace(cells[2])
	dflt, _, _ = strings.Cut(dflt, " (")
	rl, inv, _ := strings.Cut(dflt, "; ")
	for _, x := range []struct {
		doc string
		s   status.Status
	}{{rl, status.ReachLimit}, {inv, status.InvalidKey}} {
		got, want := strings.Split(x.doc, ", "), codes(def, x.s)
		if !slices.Equal(got, want) {
			t.Errorf("the README gives %v as %v by default; the library: %v", got, x.s, want)
		}
	}
}
