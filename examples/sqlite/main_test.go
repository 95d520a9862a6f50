package main

import (
	"bytes"
	"path/filepath"
	"regexp"
	"strconv"
	"testing"
)

// TestTwoRuns runs the example twice on one file: the second report counts
// the attempts of both runs.
func TestTwoRuns(t *testing.T) {
	file := filepath.Join(t.TempDir(), "usage.db")
	thisRun := regexp.MustCompile(`this run: (\d+) attempts`)
	total := regexp.MustCompile(`every run so far: (\d+) attempts \{.*alpha=\d+.*\}, (\d+) rate limited`)
	var runs, totals []int
	for i := range 2 {
		var out bytes.Buffer
		if err := run(&out, file, 600, 16); err != nil {
			t.Fatalf("run %d: %v\n%s", i+1, err, out.String())
		}
		t.Logf("run %d:\n%s", i+1, out.String())
		m, mt := thisRun.FindStringSubmatch(out.String()), total.FindStringSubmatch(out.String())
		if m == nil || mt == nil {
			t.Fatalf("run %d: report lines missing:\n%s", i+1, out.String())
		}
		n, _ := strconv.Atoi(m[1])
		all, _ := strconv.Atoi(mt[1])
		if n < 600 {
			t.Errorf("run %d: %d attempts for 600 requests", i+1, n)
		}
		runs, totals = append(runs, n), append(totals, all)
	}
	if totals[0] != runs[0] {
		t.Errorf("first run: the file holds %d attempts, the run made %d", totals[0], runs[0])
	}
	if totals[1] != runs[0]+runs[1] {
		t.Errorf("second run: the file holds %d attempts, want %d + %d", totals[1], runs[0], runs[1])
	}
}
