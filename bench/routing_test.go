package bench

import (
	"bytes"
	"context"
	"net/http"
	"runtime"
	"strconv"
	"strings"
	"testing"

	"github.com/apipool-ng/apipool"
)

// Routing (issue 25): what tiers, models and sessions cost a request, and
// what a session costs in memory.

// chatBody is a small OpenAI-style chat request, its model and user among
// its fields as an SDK writes them.
const chatBody = `{"messages":[{"role":"system","content":"You are terse."},{"role":"user","content":"Say hi."}],"model":"gpt-4o-mini","temperature":0.2,"user":"user-0042"}`

// bodyReader is a request body read once per round trip and rewound for
// the next, so that the POST benchmarks allocate no body of their own.
type bodyReader struct{ r bytes.Reader }

func (b *bodyReader) Read(p []byte) (int, error) { return b.r.Read(p) }
func (b *bodyReader) Close() error               { return nil }

// newPost returns a POST of chatBody without GetBody, as the apipool
// proxy hands the pool its clients' requests: the pool buffers its body.
func newPost(tb testing.TB) (*http.Request, *bodyReader) {
	body := &bodyReader{}
	body.r.Reset([]byte(chatBody))
	req, err := http.NewRequest(http.MethodPost, "http://api.example.test/v1/chat/completions", body)
	if err != nil {
		tb.Fatal(err)
	}
	req.ContentLength = int64(len(chatBody))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "apipool-bench/1")
	return req, body
}

// BenchmarkRouting measures one request through a pool of 10 keys with
// each routing option, on one goroutine, over the canned base:
//
//   - get/none: the GET of BenchmarkRoundTrip, no routing option (the
//     figure that must not move);
//   - get/tiers: the keys in two tiers of 5, all free;
//   - get/tiers-first-held: the same with the first tier disabled, so
//     that each request looks at tier 0 before it takes a key of tier 1;
//   - get/sessions: WithSessions(SessionFromHeader), 1,000 sessions in
//     turn, each already pinned;
//   - post/none: a 160-byte JSON POST without GetBody (buffered for
//     replay), no routing option;
//   - post/model: WithModel(ModelFromJSON), keys listing models
//     (five "gpt-4o*", five "gpt-4o-mini" and "o1-*"), the model read
//     from the buffered body;
//   - post/model-scope: the same with WithCooldownScope(ScopeModel);
//   - post/session-json: WithSessions(SessionFromJSON("user"));
//   - post/model+session: both.
func BenchmarkRouting(b *testing.B) {
	type variant struct {
		name string
		post bool
		opts []apipool.Option
		keys func() []apipool.Key
		prep func(b *testing.B, p *apipool.Transport)
		hdr  bool // a session header per request
	}
	tiered := func() []apipool.Key {
		ks := testKeys(10)
		for i := range ks {
			ks[i].Tier = i / 5
		}
		return ks
	}
	withModels := func() []apipool.Key {
		ks := testKeys(10)
		for i := range ks {
			if i < 5 {
				ks[i].Models = []string{"gpt-4o*"}
			} else {
				ks[i].Models = []string{"gpt-4o-mini", "o1-*"}
			}
		}
		return ks
	}
	model := apipool.WithModel(apipool.ModelFromJSON)
	sessHdr := apipool.WithSessions(apipool.SessionFromHeader("X-Session"), 0)
	sessJSON := apipool.WithSessions(apipool.SessionFromJSON("user"), 0)
	variants := []variant{
		{name: "get/none"},
		{name: "get/tiers", keys: tiered},
		{name: "get/tiers-first-held", keys: tiered, prep: func(b *testing.B, p *apipool.Transport) {
			for i := range 5 {
				if err := p.Disable("key-"+strconv.Itoa(i), "bench"); err != nil {
					b.Fatal(err)
				}
			}
		}},
		{name: "get/sessions", opts: []apipool.Option{sessHdr}, hdr: true},
		{name: "post/none", post: true},
		{name: "post/model", post: true, keys: withModels, opts: []apipool.Option{model}},
		{name: "post/model-scope", post: true, keys: withModels, opts: []apipool.Option{model, apipool.WithCooldownScope(apipool.ScopeModel)}},
		{name: "post/session-json", post: true, opts: []apipool.Option{sessJSON}},
		{name: "post/model+session", post: true, keys: withModels, opts: []apipool.Option{model, sessJSON}},
	}
	sessions := make([]string, 1000)
	for i := range sessions {
		sessions[i] = "session-" + strconv.Itoa(i)
	}
	for _, v := range variants {
		b.Run(v.name, func(b *testing.B) {
			ks := testKeys(10)
			if v.keys != nil {
				ks = v.keys()
			}
			p := newPool(b, ks, cannedBase{}, v.opts...)
			if v.prep != nil {
				v.prep(b, p)
			}
			var req *http.Request
			var body *bodyReader
			if v.post {
				req, body = newPost(b)
			} else {
				req = newRequest(b)
			}
			send := func(i int) {
				if body != nil {
					body.r.Reset([]byte(chatBody))
				}
				if v.hdr {
					req.Header["X-Session"] = sessions[i%len(sessions) : i%len(sessions)+1]
				}
				roundTrip(b, p, req)
			}
			for i := range 2 * len(sessions) { // every session pinned, the calls pooled
				send(i)
			}
			b.ReportAllocs()
			done := measureCPU(b)
			i := 0
			for b.Loop() {
				send(i)
				i++
			}
			done()
		})
	}
}

// secretBase answers 200 at once, like cannedBase, and remembers the key
// of the last request (one goroutine only).
type secretBase struct {
	cannedBase
	last string
}

func (s *secretBase) RoundTrip(r *http.Request) (*http.Response, error) {
	s.last = strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")
	return s.cannedBase.RoundTrip(r)
}

// BenchmarkSessionAffinity sends the requests of 1,000 sessions over 10
// keys, every key free, each session's requests spread over the run in a
// shuffled order, and reports the share of requests that reached their
// session's first key (first-key-share, the target 1.0).
func BenchmarkSessionAffinity(b *testing.B) {
	base := &secretBase{}
	p := newPool(b, testKeys(10), base, apipool.WithSessions(apipool.SessionFromHeader("X-Session"), 0))
	req := newRequest(b)
	const n = 1000
	first := make([]string, n)
	ids := make([][]string, n)
	for i := range ids {
		ids[i] = []string{"session-" + strconv.Itoa(i)}
		req.Header["X-Session"] = ids[i]
		roundTrip(b, p, req)
		first[i] = base.last
	}
	hits, total := 0, 0
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		s := (i * 7919) % n // a prime stride: every session, out of order
		req.Header["X-Session"] = ids[s]
		roundTrip(b, p, req)
		if base.last == first[s] {
			hits++
		}
		total++
		i++
	}
	b.ReportMetric(float64(hits)/float64(total), "first-key-share")
}

// BenchmarkSessionMemory measures the heap a pool holds per session it
// remembers: n sessions (10,000, the default bound, and 100,000), each
// pinned by one request, in a pool with WithSessions(..., n) and no
// recorder (whose events would be counted too). It reports HeapAlloc
// after a GC, less the same before the requests, per session
// (B/session). Run it with -benchtime 1x: one op is n requests.
func BenchmarkSessionMemory(b *testing.B) {
	for _, n := range []int{10_000, 100_000} {
		b.Run("sessions="+strconv.Itoa(n), func(b *testing.B) {
			ids := make([][]string, n)
			for i := range ids {
				ids[i] = []string{"session-" + strconv.Itoa(i)}
			}
			var perSession float64
			for b.Loop() {
				p, err := apipool.New(testKeys(10), apipool.WithBase(cannedBase{}), apipool.WithRecorder(nil),
					apipool.WithSessions(apipool.SessionFromHeader("X-Session"), n))
				if err != nil {
					b.Fatal(err)
				}
				req := newRequest(b)
				roundTrip(b, p, req) // the pool's first request, outside the count
				before := heapAlloc()
				for i := range ids {
					req.Header["X-Session"] = ids[i]
					roundTrip(b, p, req)
				}
				after := heapAlloc()
				perSession = float64(int64(after)-int64(before)) / float64(n)
				runtime.KeepAlive(p)
				p.Close(context.Background())
			}
			b.ReportMetric(perSession, "B/session")
		})
	}
}

func heapAlloc() uint64 {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}
