package apipool

import (
	"bytes"
	"encoding/json"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/apipool-ng/apipool/status"
)

func TestJSONField(t *testing.T) {
	for _, c := range []struct {
		body, path, want string
	}{
		{`{"model":"gpt-4o","messages":[]}`, "model", "gpt-4o"},
		{` { "messages" : [ {"role":"user","content":"{\"model\":\"no\"}"} ] , "model" : "claude-3" } `, "model", "claude-3"},
		{`{"model":"a","model":"b"}`, "model", "b"}, // the last, as encoding/json
		{`{"model":"a","model":null}`, "model", ""},
		{`{"model":"gpt-\u00e9\n"}`, "model", "gpt-é\n"},
		{`{"mod\u0065l":"x"}`, "model", "x"},
		{`{"model":12.5e3}`, "model", "12.5e3"},
		{`{"model":true}`, "model", "true"},
		{`{"model":{"name":"x"}}`, "model", ""},
		{`{"model":["x"]}`, "model", ""},
		{`{"metadata":{"user_id":"u-1","x":[1,2]},"model":"m"}`, "metadata.user_id", "u-1"},
		{`{"metadata":"u-1"}`, "metadata.user_id", ""},
		{`{"metadata":{"user_id":"a"},"metadata":{"other":1}}`, "metadata.user_id", ""},
		{`{"user":12345}`, "user", "12345"},
		{`{}`, "model", ""},
		{``, "model", ""},
		{`["model"]`, "model", ""},
		{`{"model":"x"`, "model", ""},                // cut short
		{`{"model":"x"} {}`, "model", ""},            // two values
		{`{"model":"x",}`, "model", ""},              // trailing comma
		{`{"model":01}`, "model", ""},                // not a JSON number
		{`{"model":"a` + "\x01" + `"}`, "model", ""}, // a control character in a string
		{`{"model" "x"}`, "model", ""},
	} {
		if got := jsonField([]byte(c.body), strings.Split(c.path, ".")); got != c.want {
			t.Errorf("jsonField(%s, %q) = %q, want %q", c.body, c.path, got, c.want)
		}
	}
}

// jsonFieldRef is jsonField by encoding/json: the reference the fuzz
// test compares with, for valid JSON.
func jsonFieldRef(body []byte, path []string) string {
	d := json.NewDecoder(bytes.NewReader(body))
	d.UseNumber()
	var v any
	if d.Decode(&v) != nil {
		return ""
	}
	for _, p := range path {
		m, ok := v.(map[string]any)
		if !ok {
			return ""
		}
		if v, ok = m[p]; !ok {
			return ""
		}
	}
	switch x := v.(type) {
	case string:
		return x
	case json.Number:
		return string(x)
	case bool:
		return strconv.FormatBool(x)
	}
	return ""
}

// FuzzJSONField checks jsonField against encoding/json on valid JSON
// objects, and that it never panics on anything else.
func FuzzJSONField(f *testing.F) {
	for _, s := range []string{`{"model":"gpt-4o"}`, `{"a":{"b":"c"},"model":1}`, `{"model":"x","model":"y"}`, `{"m\u006fdel":"z"}`, `{"model":[{"model":"q"}]}`} {
		f.Add([]byte(s), "model")
		f.Add([]byte(s), "a.b")
	}
	f.Fuzz(func(t *testing.T, body []byte, path string) {
		parts := strings.Split(path, ".")
		got := jsonField(body, parts)
		if !json.Valid(body) || bytes.TrimSpace(body)[0] != '{' {
			return
		}
		for _, p := range parts {
			if p == "" {
				return
			}
		}
		// encoding/json's maps keep the last field of a name, as
		// jsonField does.
		if want := jsonFieldRef(body, parts); got != want {
			t.Fatalf("jsonField(%q, %q) = %q, encoding/json %q", body, path, got, want)
		}
	})
}

func TestModelsMatch(t *testing.T) {
	s := newModelSet([]string{"gpt-4o", "claude-*"})
	for m, want := range map[string]bool{"gpt-4o": true, "gpt-4o-mini": false, "claude-3-opus": true, "claude-": true, "claude": false, "": false} {
		if got := s.serves(m); got != want {
			t.Errorf("serves(%q) = %v, want %v", m, got, want)
		}
	}
	if !newModelSet([]string{"*"}).serves("anything") || !(*modelSet)(nil).serves("x") {
		t.Error(`"*" and no list must serve every model`)
	}
}

func TestSessionTableLRU(t *testing.T) {
	s := newSessionTable(3)
	ka, kb, kc, kd := &keyState{}, &keyState{}, &keyState{}, &keyState{}
	s.set(1, ka)
	s.set(2, kb)
	s.set(3, kc)
	if s.get(1) != ka { // 1 is now the most recent; 2 the least
		t.Fatal("session 1 lost")
	}
	s.set(4, kd) // evicts 2
	if s.len() != 3 {
		t.Fatalf("len = %d, want 3", s.len())
	}
	if s.get(2) != nil {
		t.Error("session 2, the least recently used, was not evicted")
	}
	for h, k := range map[uint64]*keyState{1: ka, 3: kc, 4: kd} {
		if s.get(h) != k {
			t.Errorf("session %d lost its key", h)
		}
	}
	s.set(3, ka) // moves, stays one entry
	if s.get(3) != ka || s.len() != 3 {
		t.Errorf("moved session: key %p len %d", s.get(3), s.len())
	}
	// A long run keeps the bound and the list consistent.
	s = newSessionTable(100)
	for i := range 10_000 {
		s.set(uint64(i%250), ka)
		if i%7 == 0 {
			s.get(uint64(i % 13))
		}
	}
	if s.len() != 100 || len(s.ents) != 100 {
		t.Fatalf("len %d, entries %d, want 100", s.len(), len(s.ents))
	}
	n := 0
	for i := s.head; i >= 0; i = s.ents[i].next {
		n++
	}
	if n != 100 {
		t.Fatalf("list holds %d entries, want 100", n)
	}
}

func TestModelRestsBoundAndExpiry(t *testing.T) {
	k := newTestKeyState(t, Key{ID: "a", Secret: "s"})
	now := t0
	for i := range maxModelRests {
		if moved, ok := k.rest("m"+strconv.Itoa(i), now.Add(time.Duration(i+1)*time.Second), now); !moved || !ok {
			t.Fatalf("rest %d: moved %v ok %v", i, moved, ok)
		}
	}
	if _, ok := k.rest("one-more", now.Add(time.Hour), now); ok {
		t.Fatalf("a rest beyond %d was taken", maxModelRests)
	}
	if moved, ok := k.rest("m3", now.Add(time.Second), now); moved || !ok {
		t.Errorf("a shorter rest moved the rest of m3 (moved %v ok %v)", moved, ok)
	}
	if u, ok := k.restedFor("m3", now.UnixNano()); !ok || u != now.Add(4*time.Second).UnixNano() {
		t.Errorf("m3 rests until %v, %v", time.Unix(0, u), ok)
	}
	if _, ok := k.restedFor("m70", now.UnixNano()); ok {
		t.Error("rests for a model it was never rested for")
	}
	// Once the first rests are over, room is made for a new one.
	later := now.Add(2500 * time.Millisecond)
	if _, ok := k.restedFor("m0", later.UnixNano()); ok {
		t.Error("m0's rest is over, yet it holds")
	}
	if _, ok := k.rest("one-more", later.Add(time.Hour), later); !ok {
		t.Error("no room after two rests ended")
	}
	if n := len(k.rests.Load().list); n != maxModelRests-1 {
		t.Errorf("%d rests kept, want %d (two over dropped, one added)", n, maxModelRests-1)
	}
	// When every rest is over, they are dropped.
	end := now.Add(2 * time.Hour)
	if _, ok := k.restedFor("one-more", end.UnixNano()); ok || k.rests.Load() != nil {
		t.Error("rests kept after every one ended")
	}
}

func TestCommitScopedRateLimit(t *testing.T) {
	k := newTestKeyState(t, Key{ID: "a", Secret: "s"})
	now := t0
	r := mustReserve(t, k, now)
	ch := r.commit(verdict{st: status.ReachLimit, at: now, coolUntil: now.Add(10 * time.Second), scope: "gpt-4o"})
	if !ch.rested || ch.cooled {
		t.Fatalf("change %+v: want the model rested, not the key cooled", ch)
	}
	k.release()
	if h, _ := k.available(now); h != holdNone {
		t.Fatalf("key held (%v) by one model's rate limit", h)
	}
	if _, ok := k.restedFor("gpt-4o", now.UnixNano()); !ok {
		t.Fatal("the model does not rest")
	}
	r = mustReserve(t, k, now) // no trial gate for a model's rest: any request may take the key
	if r.trial {
		t.Error("the key's next request is a trial after one model's rate limit")
	}
	r.cancel()
	// Full: the whole key cools instead.
	for i := range maxModelRests - 1 {
		k.rest("m"+strconv.Itoa(i), now.Add(time.Minute), now)
	}
	r = mustReserve(t, k, now)
	ch = r.commit(verdict{st: status.ReachLimit, at: now, coolUntil: now.Add(10 * time.Second), scope: "another"})
	if !ch.cooled {
		t.Fatalf("change %+v: a rest beyond the bound must cool the key", ch)
	}
	k.release()
	if h, _ := k.available(now); h != holdCooling {
		t.Fatalf("hold %v, want cooling", h)
	}
}
