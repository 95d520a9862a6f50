package main

import (
	"bytes"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

// TestQuickstart runs the quickstart with fewer requests and checks what
// it prints: every request answered, a row per key with the revoked key
// disabled, and apipool-ng's two queries agreeing with the table. Whether
// the fake API's quota is reached depends on how fast the machine sends:
// the test does not ask for it.
func TestQuickstart(t *testing.T) {
	var out bytes.Buffer
	if err := run(&out, 1500, 32); err != nil {
		t.Fatalf("run: %v\n%s", err, out.String())
	}
	text := out.String()
	t.Log("\n" + text)
	if !regexp.MustCompile(`sent 1500 requests through 5 keys from 32 goroutines in [0-9.]+s: 1500 answered 200, 0 failed`).MatchString(text) {
		t.Errorf("summary line missing or wrong")
	}
	for _, id := range []string{"alpha", "bravo", "charlie", "delta"} {
		if !regexp.MustCompile(`check_usable: ` + id + ` +usable`).MatchString(text) {
			t.Errorf("check_usable line for %s missing", id)
		}
	}
	if !strings.Contains(text, "check_usable: echo     NOT usable (invalid key)") {
		t.Errorf("check_usable did not report the revoked key")
	}
	lines := strings.Split(text, "\n")
	var header int = -1
	for i, l := range lines {
		if strings.Contains(l, "KEY") && strings.Contains(l, "RATE LIMITED") {
			header = i
		}
	}
	if header < 0 {
		t.Fatal("no table header")
	}
	wantCols := []string{"KEY", "ATTEMPTS", "SUCCESS", "RATE", "LIMITED", "INVALID", "P50", "P99", "STATE"}
	if got := strings.Fields(lines[header]); strings.Join(got, " ") != strings.Join(wantCols, " ") {
		t.Errorf("header = %q", got)
	}
	var totalAttempts, totalSuccess, totalLimited int
	for i, id := range []string{"alpha", "bravo", "charlie", "delta", "echo"} {
		f := strings.Fields(lines[header+1+i])
		if len(f) != 8 || f[0] != id {
			t.Fatalf("row %d = %q", i, f)
		}
		n := func(j int) int {
			v, err := strconv.Atoi(f[j])
			if err != nil {
				t.Fatalf("row %s column %d = %q", id, j, f[j])
			}
			return v
		}
		attempts, success, limited, invalid := n(1), n(2), n(3), n(4)
		if attempts != success+limited+invalid {
			t.Errorf("%s: %d attempts != %d + %d + %d", id, attempts, success, limited, invalid)
		}
		totalAttempts += attempts
		totalSuccess += success
		totalLimited += limited
		if id == "echo" {
			// CheckUsable found it revoked before the traffic: the probe's
			// attempt, and on a slow run the trials after its retry
			// backoff, all rejected.
			if f[7] != "disabled" || invalid < 1 || success != 0 || attempts != invalid {
				t.Errorf("revoked key row = %q, want only invalid attempts and state disabled", f)
			}
			continue
		}
		if success == 0 || f[5] == "-" || f[7] == "disabled" {
			t.Errorf("working key row = %q", f)
		}
	}
	if totalSuccess != 1500+4 { // the requests and the four probes that passed
		t.Errorf("successes = %d, want 1504", totalSuccess)
	}
	m := regexp.MustCompile(`usage_count_in_recent_n_seconds\(3600, status_id=9 "reach limit"\) = (\d+)`).FindStringSubmatch(text)
	if m == nil || m[1] != strconv.Itoa(totalLimited) {
		t.Errorf("reach-limit query = %v, want %d", m, totalLimited)
	}
	if !strings.Contains(text, `usage_count_stats_in_recent_n_seconds(3600) = {"alpha": `) {
		t.Errorf("per-key query missing")
	}
}
