package usage

import (
	"bytes"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/apipool-ng/apipool/errdefs"
)

func TestHeader(t *testing.T) {
	r, err := Header("x-credits-used")
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		value string
		want  float64
	}{{"12.5", 12.5}, {" 3 ", 3}, {"0", 0}, {"-1", -1}, {"abc", -1}, {"Inf", -1}, {"NaN", -1}, {"", -1}} {
		resp := answer(429, "text/plain", []byte("x"))
		resp.Header.Set("X-Credits-Used", tc.value)
		m := r.Start(nil, resp)
		if m == nil {
			t.Fatalf("%q: nil meter", tc.value)
		}
		m.Write([]byte("body"))
		want := Unknown()
		want.Units = tc.want
		if got := m.Done(true); got != want {
			t.Errorf("%q: got %+v, want %+v", tc.value, got, want)
		}
	}
	if m := r.Start(nil, answer(200, ctJSON, nil)); m != nil {
		t.Error("no header: a meter")
	}
	if m := r.Start(nil, nil); m != nil {
		t.Error("nil response: a meter")
	}
}

// A header sent as a trailer is read at the body's end.
func TestHeaderTrailer(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Trailer", "X-Units")
		w.WriteHeader(200)
		io.WriteString(w, strings.Repeat("data ", 1000))
		w.(http.Flusher).Flush()
		w.Header().Set("X-Units", "42")
	}))
	defer srv.Close()
	r, err := Header("X-Units")
	if err != nil {
		t.Fatal(err)
	}
	for _, complete := range []bool{true, false} {
		resp, err := http.Get(srv.URL)
		if err != nil {
			t.Fatal(err)
		}
		m := r.Start(resp.Request, resp)
		if m == nil {
			t.Fatal("a declared trailer: nil meter")
		}
		if complete {
			b, _ := io.ReadAll(resp.Body)
			m.Write(b)
		}
		resp.Body.Close()
		want := Unknown()
		if complete {
			want.Units = 42
		}
		if got := m.Done(complete); got != want {
			t.Errorf("complete %v: got %+v, want %+v", complete, got, want)
		}
	}
}

func TestConfigErrors(t *testing.T) {
	f := func(*http.Response, []byte, bool) Units { return Unknown() }
	for name, err := range map[string]error{
		"Header empty":  second(Header("")),
		"Header space":  second(Header("X Units")),
		"Header colon":  second(Header("X-Units:")),
		"Func negative": second(Func(-1, f)),
		"Func too long": second(Func(MaxTail+1, f)),
		"Func nil":      second(Func(10, nil)),
	} {
		var ce *errdefs.ConfigError
		if !errors.Is(err, errdefs.ErrInvalidConfig) || !errors.As(err, &ce) || !strings.HasPrefix(ce.Field, "usage.") {
			t.Errorf("%s: %v, want a *ConfigError whose Field starts with usage.", name, err)
		}
	}
}

func second(_ Reader, err error) error { return err }

// Func's tail is the last bytes of the body, whatever the pieces it came in.
func TestFuncTail(t *testing.T) {
	body := []byte(strings.Repeat("0123456789abcdefghij", 50))
	for _, tail := range []int{0, 1, 7, 100, 1000, 2000} {
		for _, piece := range []int{1, 3, 7, 64, 999, 2000} {
			var gotTail []byte
			var gotResp *http.Response
			gotComplete := false
			r, err := Func(tail, func(resp *http.Response, b []byte, complete bool) Units {
				gotResp, gotTail, gotComplete = resp, bytes.Clone(b), complete
				return Units{Units: float64(len(b)), InputTokens: -1, OutputTokens: -1, CachedTokens: -1}
			})
			if err != nil {
				t.Fatal(err)
			}
			resp := answer(200, "", body)
			m := r.Start(nil, resp)
			for i := 0; i < len(body); i += piece {
				m.Write(body[i:min(i+piece, len(body))])
			}
			u := m.Done(true)
			want := body[len(body)-min(tail, len(body)):]
			if !bytes.Equal(gotTail, want) || gotResp != resp || !gotComplete || u.Units != float64(len(want)) {
				t.Fatalf("tail %d, pieces of %d: got %q (%v), want %q", tail, piece, gotTail, gotComplete, want)
			}
			if again := m.Done(false); again != u {
				t.Fatal("second Done differs")
			}
		}
	}
}
