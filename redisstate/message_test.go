package redisstate

import (
	"testing"
	"time"

	"github.com/apipool-ng/apipool/sharedstate"
)

func TestMessageRoundTrip(t *testing.T) {
	at := time.UnixMilli(1_767_225_600_123)
	for _, c := range []sharedstate.Change{
		{KeyID: "k1", Kind: sharedstate.Cooldown, Until: at.Add(30 * time.Second), At: at},
		{KeyID: "ключ \"1\"", Kind: sharedstate.Disable, Reason: "401: <bad key> & more", At: at},
		// A disable with the time of its next trial; without one it is for good.
		{KeyID: "k2", Kind: sharedstate.Disable, Reason: "401", At: at, Until: at.Add(time.Minute)},
		{KeyID: "k1", Kind: sharedstate.Enable, At: at},
		{KeyID: "k1", Kind: sharedstate.Learned, Limit: 10, Window: time.Second, At: at},
		{KeyID: "k2", Kind: sharedstate.Learned, Limit: 256, Window: time.Minute, At: at},
	} {
		m := encodeChange(c, c.At.UnixMilli())
		got, ok := decodeChange(string(m))
		if !ok || got.KeyID != c.KeyID || got.Kind != c.Kind || !got.Until.Equal(c.Until) || got.Reason != c.Reason || !got.At.Equal(c.At) || got.Limit != c.Limit || got.Window != c.Window {
			t.Errorf("%s: decoded %+v, %v; want %+v", m, got, ok, c)
		}
	}
	// A cooldown's deadline is rounded up to the millisecond.
	c := sharedstate.Change{KeyID: "k", Kind: sharedstate.Cooldown, Until: at.Add(1)}
	got, _ := decodeChange(string(encodeChange(c, 0)))
	if !got.Until.Equal(at.Add(time.Millisecond)) || !got.At.IsZero() {
		t.Errorf("rounded %v to %v, at %v", c.Until, got.Until, got.At)
	}
}

func TestCeilMs(t *testing.T) {
	for _, c := range []struct {
		t    time.Time
		want int64
	}{
		{time.UnixMilli(5), 5},
		{time.Unix(0, 5_000_001), 6},
		{time.Unix(0, -1), 0},
		{time.Unix(0, -1_000_001), -1},
		{time.Unix(0, 0), 0},
	} {
		if got := ceilMs(c.t); got != c.want {
			t.Errorf("ceilMs(%d ns) = %d, want %d", c.t.UnixNano(), got, c.want)
		}
	}
}

// FuzzDecodeChange: decoding any payload never panics, and what it
// accepts encodes back to a message that decodes the same.
func FuzzDecodeChange(f *testing.F) {
	for _, s := range []string{
		`{"kind":"cooldown","key":"k1","until":1767225600000,"at":1767225570000}`,
		`{"kind":"disable","key":"k1","reason":"401","at":1}`,
		`{"kind":"enable","key":"k1"}`,
		`{"kind":"learned","key":"k1","limit":10,"window":1000,"at":1767225570000}`,
		`{"kind":"learned","key":"k1","limit":0,"window":1000,"at":1}`,
		`{"kind":"cooldown","key":"k","until":-1}`,
		`{"kind":"enable","key":"\ud800"}`,
		`{`, `null`, ``,
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, payload string) {
		c, ok := decodeChange(payload)
		if !ok {
			return
		}
		if c.KeyID == "" || c.Kind < sharedstate.Cooldown || c.Kind > sharedstate.Learned || c.Kind == sharedstate.Synced {
			t.Fatalf("accepted %q as %+v", payload, c)
		}
		if c.Kind == sharedstate.Cooldown && c.Until.IsZero() {
			t.Fatalf("cooldown without a deadline from %q", payload)
		}
		var at int64
		if !c.At.IsZero() {
			at = c.At.UnixMilli()
		}
		again, ok := decodeChange(string(encodeChange(c, at)))
		if c.Kind == sharedstate.Learned && (c.Limit < 1 || c.Window < time.Millisecond || c.At.IsZero()) {
			t.Fatalf("learned limit out of range from %q: %+v", payload, c)
		}
		if !ok || again.KeyID != c.KeyID || again.Kind != c.Kind || !again.Until.Equal(c.Until) || again.Reason != c.Reason || !again.At.Equal(c.At) || again.Limit != c.Limit || again.Window != c.Window {
			t.Fatalf("%q: %+v re-decoded as %+v (%v)", payload, c, again, ok)
		}
	})
}

func TestDecodeEntries(t *testing.T) {
	for v, ok := range map[string]bool{"1767225600000": true, "0": false, "-1": false, "x": false, "": false, "99999999999999999": false} {
		if _, got := decodeDeadline(v); got != ok {
			t.Errorf("decodeDeadline(%q) ok = %v", v, got)
		}
	}
	for v, ok := range map[string]bool{`{"reason":"r","at":5}`: true, `{}`: true, `{"at":-1}`: false, `x`: false, `[]`: false} {
		if _, got := decodeDisabled(v); got != ok {
			t.Errorf("decodeDisabled(%q) ok = %v", v, got)
		}
	}
	for v, ok := range map[string]bool{
		`{"n":10,"w":1000,"at":5}`: true, `{"n":0,"w":1000,"at":5}`: false, `{"n":10,"w":0,"at":5}`: false,
		`{"n":10,"w":1000}`: false, `{"n":10,"w":3600001,"at":5}`: false, `{"n":1048577,"w":1000,"at":5}`: false, `x`: false,
	} {
		if _, got := decodeLearned(v); got != ok {
			t.Errorf("decodeLearned(%q) ok = %v", v, got)
		}
	}
}
