package proxy_test

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/apipool-ng/apipool/cmd/apipool/internal/config"
	"github.com/apipool-ng/apipool/cmd/apipool/internal/proxy"
)

// streamUpstream is a chat completions API that streams events in
// lockstep with the benchmark's client: it writes one content event, notes
// when, flushes, and waits for the client to have read it before the
// next. The time from its write to the client's read is the event's
// latency through whatever is between them, with no queue behind it.
// With stream_options.include_usage in the request it adds "usage":null
// to each chunk and a usage chunk at the end, as OpenAI's API does.
type streamUpstream struct {
	events int
	base   time.Time
	sentAt atomic.Int64  // when the last content event was written (ns since base)
	ack    chan struct{} // the client read the last content event
	chunks [2][][]byte   // the content events, without and with "usage":null
	usage  []byte        // the usage chunk
	done   []byte        // data: [DONE]
	reqs   atomic.Int64  // requests served
	asked  atomic.Int64  // of which asked for their usage
	stop   chan struct{} // closed at the end of the benchmark
}

func newStreamUpstream(events int) *streamUpstream {
	u := &streamUpstream{events: events, base: time.Now(), ack: make(chan struct{}), stop: make(chan struct{})}
	words := []string{"Pooled", " keys", " stream", " their", " tokens", " through", " the", " proxy."}
	for with := range 2 {
		extra := ""
		if with == 1 {
			extra = `,"usage":null`
		}
		for i := range events {
			u.chunks[with] = append(u.chunks[with], fmt.Appendf(nil,
				"data: {\"id\":\"chatcmpl-bench\",\"object\":\"chat.completion.chunk\",\"created\":1700000000,\"model\":\"bench-1\",\"choices\":[{\"index\":0,\"delta\":{\"content\":%q},\"finish_reason\":null}]%s}\n\n",
				words[i%len(words)], extra))
		}
	}
	u.usage = []byte(`data: {"id":"chatcmpl-bench","object":"chat.completion.chunk","created":1700000000,"model":"bench-1","choices":[],"usage":{"prompt_tokens":12,"completion_tokens":` + fmt.Sprint(events) + `,"total_tokens":` + fmt.Sprint(12+events) + "}}\n\n")
	u.done = []byte("data: [DONE]\n\n")
	return u
}

func (u *streamUpstream) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	include := bytes.Contains(body, []byte(`"include_usage":true`))
	u.reqs.Add(1)
	with := 0
	if include {
		u.asked.Add(1)
		with = 1
	}
	w.Header().Set("Content-Type", "text/event-stream")
	rc := http.NewResponseController(w)
	for _, c := range u.chunks[with] {
		u.sentAt.Store(int64(time.Since(u.base)))
		w.Write(c)
		rc.Flush()
		select {
		case <-u.ack:
		case <-r.Context().Done():
			return
		case <-u.stop:
			return
		}
	}
	if include {
		w.Write(u.usage)
	}
	w.Write(u.done)
	rc.Flush()
}

// BenchmarkStreamUsage measures a server-sent events stream through the
// proxy with the usage reader off and on (issue 26, Measure): one op is
// one streamed chat completion of events=N content events, sent by an
// in-process upstream in lockstep with the client (see streamUpstream).
// Variants, in one run:
//
//   - direct: the client reads the upstream itself (the harness's own
//     cost);
//   - off: through the proxy, no usage section;
//   - reader: usage.reader openai; the request asks for its usage itself
//     (stream_options.include_usage), so the meter reads the usage chunk;
//   - include: usage.reader openai and include_usage; the request does not
//     ask, the pool rewrites it and strips the usage chunk and the
//     "usage":null members from the stream the client reads.
//
// Metrics: ttfb-us, from sending the request to reading the first event;
// event-us and event-p99-us, the mean and 99th percentile of an event's
// latency from the upstream's write to the client's read; allocs/event,
// the process's allocations (upstream, proxy and client together) per
// content event; cpu-us/event, the process's CPU time (user and system)
// per content event. Compare allocs/op across events=10 and events=1000: what
// a variant adds per stream stays, what it adds per event grows 100-fold.
func BenchmarkStreamUsage(b *testing.B) {
	for _, events := range []int{10, 1000} {
		up, urls, client := streamBench(b, events)
		for _, name := range streamVariants {
			b.Run(fmt.Sprintf("events=%d/%s", events, name), func(b *testing.B) {
				ask := name == "reader" || name == "direct"
				var ttfb time.Duration
				// One stream first, not counted: the connections are
				// dialled, the buffers warm.
				if _, err := streamOnce(client, urls[name], up, ask, &ttfb, nil); err != nil {
					b.Fatal(err)
				}
				ttfb = 0
				lat := make([]time.Duration, 0, b.N*up.events)
				var ms0, ms1 runtime.MemStats
				runtime.ReadMemStats(&ms0)
				b.ReportAllocs()
				b.ResetTimer()
				cpu0 := cpuTime()
				for b.Loop() {
					var err error
					if lat, err = streamOnce(client, urls[name], up, ask, &ttfb, lat); err != nil {
						b.Fatal(err)
					}
				}
				b.StopTimer()
				cpu := cpuTime() - cpu0
				runtime.ReadMemStats(&ms1)
				slices.Sort(lat)
				var sum time.Duration
				for _, d := range lat {
					sum += d
				}
				b.ReportMetric(float64(ttfb.Microseconds())/float64(b.N), "ttfb-us")
				b.ReportMetric(float64(sum.Nanoseconds())/float64(len(lat))/1e3, "event-us")
				b.ReportMetric(float64(lat[len(lat)*99/100].Nanoseconds())/1e3, "event-p99-us")
				b.ReportMetric(float64(ms1.Mallocs-ms0.Mallocs)/float64(b.N*up.events), "allocs/event")
				b.ReportMetric(float64(cpu.Nanoseconds())/float64(b.N*up.events)/1e3, "cpu-us/event")
			})
		}
	}
}

var streamVariants = []string{"direct", "off", "reader", "include"}

// streamBench starts the upstream of events content events and a proxy
// in front of it for each variant, and returns their URLs by variant.
func streamBench(tb testing.TB, events int) (*streamUpstream, map[string]string, *http.Client) {
	tb.Helper()
	up := newStreamUpstream(events)
	upURL := serveOn(tb, up)
	tb.Cleanup(func() { close(up.stop) })
	urls := map[string]string{"direct": upURL + "/v1/chat/completions"}
	for _, v := range []struct{ name, settings string }{
		{"off", ""},
		{"reader", ", usage: {reader: openai}"},
		{"include", ", usage: {reader: openai, include_usage: true}"},
	} {
		dir := tb.TempDir()
		kf := filepath.Join(dir, "keys")
		if err := os.WriteFile(kf, []byte("k0 sk-bench-0\nk1 sk-bench-1\n"), 0o600); err != nil {
			tb.Fatal(err)
		}
		cfgPath := filepath.Join(dir, "apipool.yaml")
		y := fmt.Sprintf("tokens: [{name: bench, sha256: %s}]\nupstreams:\n  - {name: api, prefix: /api, target: '%s', keys: {file: %s}%s}\n", sha(token), upURL, kf, v.settings)
		if err := os.WriteFile(cfgPath, []byte(y), 0o600); err != nil {
			tb.Fatal(err)
		}
		cfg, err := config.Load(cfgPath)
		if err != nil {
			tb.Fatal(err)
		}
		srv, err := proxy.New(context.Background(), cfg, proxy.Options{})
		if err != nil {
			tb.Fatal(err)
		}
		tb.Cleanup(func() { srv.Shutdown(context.Background()) })
		urls[v.name] = serveOn(tb, srv.Handler()) + "/api/v1/chat/completions"
	}
	return up, urls, &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 4, DisableCompression: true}}
}

// streamOnce reads one stream from u: it adds the time to its first
// event to *ttfb and each content event's latency to lat, and checks that
// every event came, and the usage chunk only when askUsage.
func streamOnce(client *http.Client, u string, up *streamUpstream, askUsage bool, ttfb *time.Duration, lat []time.Duration) ([]time.Duration, error) {
	body := `{"model":"bench-1","stream":true,"messages":[{"role":"user","content":"count"}]}`
	if askUsage {
		body = `{"model":"bench-1","stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"count"}]}`
	}
	t0 := time.Now()
	req, _ := http.NewRequest("POST", u, strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Content-Type", "application/json")
	resp, err := client.Do(req)
	if err != nil {
		return lat, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		return lat, fmt.Errorf("status %d", resp.StatusCode)
	}
	rd := bufio.NewReaderSize(resp.Body, 4096)
	n, sawUsage := 0, false
	for {
		line, err := rd.ReadSlice('\n')
		if err != nil {
			break
		}
		if !bytes.HasPrefix(line, []byte("data: ")) {
			continue
		}
		if bytes.Contains(line, []byte(`"delta"`)) {
			now := time.Since(up.base)
			if n == 0 {
				*ttfb += time.Since(t0)
			}
			lat = append(lat, now-time.Duration(up.sentAt.Load()))
			n++
			up.ack <- struct{}{}
		}
		sawUsage = sawUsage || bytes.Contains(line, []byte(`"usage"`))
	}
	if n != up.events || sawUsage != askUsage {
		return lat, fmt.Errorf("read %d events (want %d), usage seen %v (want %v)", n, up.events, sawUsage, askUsage)
	}
	return lat, nil
}

// TestStreamUsageBench runs each variant of BenchmarkStreamUsage once, so
// that its harness keeps working: every stream arrives whole, with the
// usage chunk only where the client asked, and every request but off's
// reached the upstream asking for its usage (include's through the
// pool's rewrite).
func TestStreamUsageBench(t *testing.T) {
	up, urls, client := streamBench(t, 3)
	for _, name := range streamVariants {
		var ttfb time.Duration
		asked := up.asked.Load()
		if _, err := streamOnce(client, urls[name], up, name == "reader" || name == "direct", &ttfb, nil); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if got, want := up.asked.Load()-asked, map[bool]int64{true: 0, false: 1}[name == "off"]; got != want {
			t.Errorf("%s: %d requests asked for their usage, want %d", name, got, want)
		}
	}
}
