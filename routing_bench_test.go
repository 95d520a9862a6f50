package apipool

import (
	"net/http"
	"strconv"
	"testing"
)

// The routing's own steps, apart from the request path (bench/'s
// BenchmarkRouting measures them in it): reading a model or a session
// from a JSON body, and a session's look-up.

const benchChat = `{"messages":[{"role":"system","content":"You are terse."},{"role":"user","content":"Say hi."}],"model":"gpt-4o-mini","temperature":0.2,"user":"user-0042"}`

// BenchmarkModelFromJSON reads the model of a 160-byte chat body, and of
// one with 64 KiB of messages before the model.
func BenchmarkModelFromJSON(b *testing.B) {
	long := `{"messages":[` + repeatJSON(`{"role":"user","content":"`+string(make64(1000))+`"}`, 64) + `],"model":"gpt-4o-mini"}`
	req, _ := http.NewRequest(http.MethodPost, "http://x/", nil)
	for _, c := range []struct{ name, body string }{{"160B", benchChat}, {"64KiB", long}} {
		b.Run(c.name, func(b *testing.B) {
			body := []byte(c.body)
			b.SetBytes(int64(len(body)))
			b.ReportAllocs()
			for b.Loop() {
				if ModelFromJSON(req, body) != "gpt-4o-mini" {
					b.Fatal("model not found")
				}
			}
		})
	}
}

func make64(n int) []byte {
	s := make([]byte, n)
	for i := range s {
		s[i] = 'a' + byte(i%26)
	}
	return s
}

func repeatJSON(v string, n int) string {
	s := v
	for range n - 1 {
		s += "," + v
	}
	return s
}

// BenchmarkSessionTable looks up a session among 10,000 (the default
// bound), the work of one request of a pinned session.
func BenchmarkSessionTable(b *testing.B) {
	s := newSessionTable(DefaultMaxSessions)
	k := &keyState{}
	hs := make([]uint64, DefaultMaxSessions)
	for i := range hs {
		hs[i] = s.hash("session-" + strconv.Itoa(i))
		s.set(hs[i], k)
	}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		if s.get(hs[i%len(hs)]) != k {
			b.Fatal("lost")
		}
		i += 7919
	}
}
