package main

import (
	"bytes"
	"errors"
	"net"
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/apipool-ng/apipool/internal/chtest"
	"github.com/apipool-ng/apipool/recorder/clickhouse"
)

// TestClickHouseExample runs the example against a private server (see
// internal/chtest: skipped without the server binary, failed when CI=true)
// and checks what it prints: every request answered, ClickHouse holding
// one event per attempt the API saw (as many as the in-memory store), a
// stats row per key that adds up, and each SQL query printed as a table
// with a row per key.
func TestClickHouseExample(t *testing.T) {
	srv := chtest.StartPrivate(t)
	var out bytes.Buffer
	if err := run(&out, config{addr: srv.Addr, database: "apipool_example", requests: 1500, workers: 32}); err != nil {
		t.Fatalf("run: %v\n%s", err, out.String())
	}
	text := out.String()
	t.Log("\n" + text)
	if strings.Contains(text, "sk-") {
		t.Errorf("a secret is in the output")
	}
	if !regexp.MustCompile(`sent 1500 requests through 5 keys from 32 goroutines in [0-9.]+s: 1500 answered 200, 0 failed`).MatchString(text) {
		t.Errorf("summary line missing or wrong")
	}
	m := regexp.MustCompile(`attempts: the API saw (\d+); ClickHouse holds (\d+) events, the in-memory store (\d+); dropped 0`).FindStringSubmatch(text)
	if m == nil {
		t.Fatal("no attempts line")
	}
	if m[1] != m[2] || m[2] != m[3] {
		t.Errorf("the API saw %s attempts, ClickHouse holds %s events, memory %s: want them equal", m[1], m[2], m[3])
	}
	attempts, _ := strconv.Atoi(m[2])
	if attempts < 1500+5 { // the requests and the five probes, and retries after 429s
		t.Errorf("%d attempts, want at least 1505", attempts)
	}

	// The stats table: a row per key; the columns add up to the attempts.
	lines := strings.Split(text, "\n")
	header := indexOf(lines, func(l string) bool { return strings.Contains(l, "KEY") && strings.Contains(l, "RATE LIMITED") })
	if header < 0 {
		t.Fatal("no stats table")
	}
	total := 0
	for i, id := range []string{"alpha", "bravo", "charlie", "delta", "echo"} {
		f := strings.Fields(lines[header+1+i])
		if len(f) != 8 || f[0] != id {
			t.Fatalf("stats row %d = %q", i, f)
		}
		n := func(j int) int {
			v, err := strconv.Atoi(f[j])
			if err != nil {
				t.Fatalf("row %s column %d = %q", id, j, f[j])
			}
			return v
		}
		if n(1) != n(2)+n(3)+n(4) {
			t.Errorf("%s: %d attempts != %d + %d + %d", id, n(1), n(2), n(3), n(4))
		}
		total += n(1)
		if id == "echo" && (f[7] != "disabled" || n(4) != 1) {
			t.Errorf("revoked key row = %q", f)
		}
	}
	if total != attempts {
		t.Errorf("stats rows add up to %d attempts, want %d", total, attempts)
	}
	if !strings.Contains(text, "Series, attempts per second:") {
		t.Error("no series")
	}

	// Each SQL query: its header, then a row per key that has events.
	for _, q := range readmeQueries {
		i := indexOf(lines, func(l string) bool { return l == "SQL (README: "+q.name+"):" })
		if i < 0 {
			t.Errorf("query %q not printed", q.name)
			continue
		}
		if !strings.HasPrefix(lines[i+1], "HOUR") && !strings.HasPrefix(lines[i+1], "KEY_ID") {
			t.Errorf("query %q: header %q", q.name, lines[i+1])
		}
		rows := 0
		for _, l := range lines[i+2:] {
			if strings.TrimSpace(l) == "" {
				break
			}
			rows++
		}
		want := 5 // every key
		if strings.Contains(q.name, "latency") {
			want = 4 // successes only: not the revoked key
		}
		if rows != want {
			t.Errorf("query %q printed %d rows, want %d", q.name, rows, want)
		}
	}
	// The first query's counts add up to the attempts.
	i := indexOf(lines, func(l string) bool { return l == "SQL (README: usage per key per hour):" })
	sum := 0
	for _, l := range lines[i+2 : i+7] {
		f := strings.Fields(l)
		// hour (two fields: date and time), key, requests, ...
		n, err := strconv.Atoi(f[3])
		if err != nil {
			t.Fatalf("usage row %q", l)
		}
		sum += n
	}
	if sum != attempts {
		t.Errorf("usage per key per hour adds up to %d, want %d", sum, attempts)
	}
}

// TestReadmeQueriesAreTheReadmes checks that the example's queries are the
// package README's, word for word.
func TestReadmeQueriesAreTheReadmes(t *testing.T) {
	readme, err := os.ReadFile("../../recorder/clickhouse/README.md")
	if err != nil {
		t.Fatal(err)
	}
	for _, q := range readmeQueries {
		if !strings.Contains(string(readme), "-- query: "+q.name+"\n"+q.sql+"\n```") {
			t.Errorf("query %q is not in the README as the example has it", q.name)
		}
	}
}

// TestNoServer checks that without a server the example fails at once
// with an error wrapping ErrUnavailable, which main answers with the hint
// and exit status 2.
func TestNoServer(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close() // nothing listens there now
	var out bytes.Buffer
	err = run(&out, config{addr: addr, database: "apipool_example", requests: 10, workers: 2})
	if !errors.Is(err, clickhouse.ErrUnavailable) {
		t.Fatalf("run = %v, want an error wrapping ErrUnavailable", err)
	}
	if out.Len() != 0 {
		t.Errorf("printed before failing:\n%s", out.String())
	}
	hint := startHint(addr)
	for _, want := range []string{addr, "apt-get install -y clickhouse-server", "CLICKHOUSE_ADDR"} {
		if !strings.Contains(hint, want) {
			t.Errorf("hint lacks %q:\n%s", want, hint)
		}
	}
}

func indexOf(lines []string, match func(string) bool) int {
	for i, l := range lines {
		if match(l) {
			return i
		}
	}
	return -1
}
