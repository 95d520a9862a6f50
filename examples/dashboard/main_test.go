package main

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"
)

// TestDashboardExample runs the example on a free port, reads the URL it
// prints, and waits until the dashboard's API shows traffic on the
// working keys and the revoked key disabled; then stops it.
func TestDashboardExample(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	pr, pw := io.Pipe()
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, pw, "127.0.0.1:0", 200, false)
		pw.Close()
	}()
	line, err := bufio.NewReader(pr).ReadString('\n')
	if err != nil {
		t.Fatalf("reading the URL: %v", err)
	}
	go io.Copy(io.Discard, pr)
	url, ok := strings.CutPrefix(strings.TrimSpace(line), "dashboard: ")
	if !ok || !strings.HasPrefix(url, "http://127.0.0.1:") || !strings.HasSuffix(url, "/apipool/") {
		t.Fatalf("printed %q, want the dashboard's URL", line)
	}
	type row struct {
		ID       string `json:"id"`
		State    string `json:"state"`
		Requests *int64 `json:"requests"`
	}
	var keys struct{ Keys []row }
	deadline := time.Now().Add(2 * time.Minute)
	for {
		resp, err := http.Get(url + "api/keys?window=15m")
		if err != nil {
			t.Fatal(err)
		}
		err = json.NewDecoder(resp.Body).Decode(&keys)
		resp.Body.Close()
		if err != nil {
			t.Fatal(err)
		}
		busy := 0
		for _, k := range keys.Keys {
			if k.Requests != nil && *k.Requests > 0 && k.ID != "echo" {
				busy++
			}
		}
		if busy == 4 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no traffic on the four working keys: %+v", keys.Keys)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if len(keys.Keys) != 5 || keys.Keys[4].ID != "echo" || keys.Keys[4].State != "disabled" {
		t.Errorf("keys %+v, want five with echo disabled", keys.Keys)
	}
	if resp, err := http.Get(url); err != nil || resp.StatusCode != 200 {
		t.Errorf("page: %v %v", resp, err)
	} else {
		resp.Body.Close()
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("run: %v", err)
	}
}
