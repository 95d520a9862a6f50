package creds

import (
	"slices"
	"testing"
)

func isKey(name, _ string) bool { return name == "key" || name == "api_key" }

func isKeyName(name string) bool { return isKey(name, "") }

// FilterQuery drops the selected parameters, escaped names and bare names
// included, and keeps the rest byte for byte, in order; a part that does
// not unescape is kept (drop never sees it).
func TestFilterQuery(t *testing.T) {
	cases := []struct {
		raw, want string
		changed   bool
	}{
		{"", "", false},
		{"a=1&b=%2F2", "a=1&b=%2F2", false},
		{"key=s", "", true},
		{"b=2&key=s&a=%2F1", "b=2&a=%2F1", true},
		{"api%5Fkey=s&a=1", "a=1", true},
		{"key&a=1", "a=1", true},
		{"a=1&&key=s&", "a=1", true},
		{"key=%zz&a=1", "key=%zz&a=1", false},
		{"a=x+y&key=s+t", "a=x+y", true},
	}
	for _, c := range cases {
		got, changed := FilterQuery(c.raw, isKey)
		if got != c.want || changed != c.changed {
			t.Errorf("FilterQuery(%q) = %q, %v; want %q, %v", c.raw, got, changed, c.want, c.changed)
		}
	}
}

// drop sees names and values unescaped.
func TestFilterQueryUnescapes(t *testing.T) {
	var seen []string
	FilterQuery("a%20b=c%2Fd&e+f=g+h", func(name, value string) bool {
		seen = append(seen, name+"|"+value)
		return false
	})
	if want := []string{"a b|c/d", "e f|g h"}; !slices.Equal(seen, want) {
		t.Fatalf("drop saw %q, want %q", seen, want)
	}
}

// Neither function allocates when nothing goes: they run on every request.
func TestNoAllocWhenNothingGoes(t *testing.T) {
	const raw = "model=x&stream=true&limit=10"
	if n := testing.AllocsPerRun(100, func() {
		FilterQuery(raw, isKey)
		MayHoldParam(raw, isKeyName)
	}); n != 0 {
		t.Fatalf("%v allocs, want 0", n)
	}
}

func TestMayHoldParam(t *testing.T) {
	cases := []struct {
		raw  string
		want bool
	}{
		{"", false},
		{"a=1&b=2", false},
		{"a=1&key=s", true},
		{"key", true},
		{"monkey=1", false},
		{"api%5Fkey=s", true}, // escaped: left to FilterQuery
		{"a+b=1", true},
		{"a=%2F", false}, // an escape in a value is no name
	}
	for _, c := range cases {
		if got := MayHoldParam(c.raw, isKeyName); got != c.want {
			t.Errorf("MayHoldParam(%q) = %v, want %v", c.raw, got, c.want)
		}
	}
}

func TestFilterProtocols(t *testing.T) {
	for _, c := range []struct {
		in      []string
		want    []string
		changed bool
	}{
		{[]string{"realtime"}, []string{"realtime"}, false},
		{[]string{"realtime, openai-insecure-api-key.sk-abc"}, []string{"realtime"}, true},
		{[]string{"openai-insecure-api-key.sk-abc"}, nil, true},
		{[]string{"realtime", "OpenAI-Insecure-API-Key.sk-abc, openai-beta.realtime-v1"}, []string{"realtime", "openai-beta.realtime-v1"}, true},
	} {
		got, changed := FilterProtocols(c.in)
		if changed != c.changed || !slices.Equal(got, c.want) {
			t.Errorf("FilterProtocols(%q) = %q, %v; want %q, %v", c.in, got, changed, c.want, c.changed)
		}
	}
}
