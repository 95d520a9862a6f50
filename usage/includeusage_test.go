package usage

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"math/rand/v2"
	"reflect"
	"strings"
	"testing"
	"testing/iotest"
)

func TestAddIncludeUsage(t *testing.T) {
	for _, tc := range []struct {
		name, in, want string
		added          bool
	}{
		{"added", `{"model":"gpt-4o","stream":true,"messages":[{"role":"user","content":"hi"}]}`,
			`{"model":"gpt-4o","stream":true,"messages":[{"role":"user","content":"hi"}],"stream_options":{"include_usage":true}}`, true},
		{"pretty", "{\n  \"stream\": true,\n  \"model\": \"m\"\n}\n",
			"{\n  \"stream\": true,\n  \"model\": \"m\",\"stream_options\":{\"include_usage\":true}\n}\n", true},
		{"not streamed", `{"model":"m","stream":false}`, `{"model":"m","stream":false}`, false},
		{"stream missing", `{"model":"m"}`, `{"model":"m"}`, false},
		{"stream a string", `{"stream":"true"}`, `{"stream":"true"}`, false},
		{"stream_options empty", `{"stream":true,"stream_options":{}}`, `{"stream":true,"stream_options":{"include_usage":true}}`, true},
		{"stream_options other", `{"stream":true,"stream_options":{"include_obfuscation":false}}`,
			`{"stream":true,"stream_options":{"include_usage":true,"include_obfuscation":false}}`, true},
		{"stream_options null", `{"stream":true,"stream_options":null}`, `{"stream":true,"stream_options":{"include_usage":true}}`, true},
		{"include_usage true", `{"stream":true,"stream_options":{"include_usage":true}}`, `{"stream":true,"stream_options":{"include_usage":true}}`, false},
		{"include_usage false kept", `{"stream":true,"stream_options":{"include_usage":false}}`, `{"stream":true,"stream_options":{"include_usage":false}}`, false},
		{"include_usage null", `{"stream":true,"stream_options":{"include_usage":null}}`, `{"stream":true,"stream_options":{"include_usage":true}}`, true},
		{"last stream wins", `{"stream":false,"stream":true}`, `{"stream":false,"stream":true,"stream_options":{"include_usage":true}}`, true},
		{"last stream wins, false", `{"stream":true,"stream":false}`, `{"stream":true,"stream":false}`, false},
		{"escaped keys", `{"stre\u0061m":true,"stream\u005foptions":{"include\u005fusage":false}}`, `{"stre\u0061m":true,"stream\u005foptions":{"include\u005fusage":false}}`, false},
		{"strings that look like keys", `{"prompt":"\"stream_options\":{\"include_usage\":false}","stream":true}`,
			`{"prompt":"\"stream_options\":{\"include_usage\":false}","stream":true,"stream_options":{"include_usage":true}}`, true},
		{"nested stream_options ignored", `{"stream":true,"metadata":{"stream_options":{"include_usage":false}}}`,
			`{"stream":true,"metadata":{"stream_options":{"include_usage":false}},"stream_options":{"include_usage":true}}`, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			in := []byte(tc.in)
			keep := bytes.Clone(in)
			out, added, err := AddIncludeUsage(in)
			if err != nil {
				t.Fatal(err)
			}
			if string(out) != tc.want || added != tc.added {
				t.Fatalf("got %s, %v; want %s, %v", out, added, tc.want, tc.added)
			}
			if !bytes.Equal(in, keep) {
				t.Fatal("the body given was changed")
			}
			if !added && &out[0] != &in[0] {
				t.Fatal("unchanged, but a copy")
			}
			if added {
				checkAdded(t, in, out)
			}
		})
	}
}

// checkAdded checks that out means what in means, with include_usage.
func checkAdded(t *testing.T, in, out []byte) {
	t.Helper()
	var a, b map[string]any
	if err := json.Unmarshal(in, &a); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(out, &b); err != nil {
		t.Fatalf("out is not JSON: %v", err)
	}
	opts, _ := a["stream_options"].(map[string]any)
	if opts == nil {
		opts = map[string]any{}
	}
	opts["include_usage"] = true
	a["stream_options"] = opts
	if !reflect.DeepEqual(a, b) {
		t.Fatalf("meaning changed:\n in %v\nout %v", a, b)
	}
}

func TestAddIncludeUsageErrors(t *testing.T) {
	const canary = "sk-canary-7f3a9b"
	for _, in := range []string{
		`{"stream":true,` + canary,
		`["stream",true,"` + canary + `"]`,
		`"` + canary + `"`,
		``,
		`{"stream":true,"stream_options":"` + canary + `"}`,
		`{"stream":true,"stream_options":{"include_usage":"` + canary + `"}}`,
		`{"stream":true,"stream_options":[]}`,
	} {
		out, added, err := AddIncludeUsage([]byte(in))
		var be *BodyError
		if !errors.As(err, &be) {
			t.Errorf("%s: err %v, want a *BodyError", in, err)
			continue
		}
		if added || string(out) != in {
			t.Errorf("%s: changed to %s", in, out)
		}
		if strings.Contains(err.Error(), canary) || !strings.HasPrefix(err.Error(), "apipool: ") {
			t.Errorf("error %q quotes the body or lacks the prefix", err)
		}
	}
}

// The stream a caller sees through StripUsageChunk is the stream it would
// have had without include_usage: the usage chunk gone, "usage":null gone.
func TestStripUsageChunk(t *testing.T) {
	with := fixture(t, "openai_chat_stream_usage.sse")
	want := stripByHand(t, with)
	for name, src := range map[string]func() io.Reader{
		"whole":        func() io.Reader { return bytes.NewReader(with) },
		"byte by byte": func() io.Reader { return iotest.OneByteReader(bytes.NewReader(with)) },
		"half":         func() io.Reader { return iotest.HalfReader(bytes.NewReader(with)) },
		"data+EOF":     func() io.Reader { return iotest.DataErrReader(bytes.NewReader(with)) },
	} {
		got, err := io.ReadAll(StripUsageChunk(io.NopCloser(src())))
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if string(got) != string(want) {
			t.Fatalf("%s: got\n%s\nwant\n%s", name, got, want)
		}
		// read by the caller a byte at a time too
		got, err = io.ReadAll(iotest.OneByteReader(StripUsageChunk(io.NopCloser(src()))))
		if err != nil || string(got) != string(want) {
			t.Fatalf("%s, read byte by byte: %v\n%s", name, err, got)
		}
	}
	if !bytes.Contains(want, []byte("data: [DONE]\n\n")) || bytes.Contains(want, []byte(`"usage"`)) {
		t.Fatalf("bad expectation:\n%s", want)
	}
}

// stripByHand removes the usage from an OpenAI stream as the tests'
// fixtures write it: the event whose choices is empty, and every
// ,"usage":null.
func stripByHand(t *testing.T, s []byte) []byte {
	t.Helper()
	var out []byte
	for _, ev := range strings.SplitAfter(string(s), "\n\n") {
		if strings.Contains(ev, `"choices":[]`) {
			continue
		}
		out = append(out, strings.ReplaceAll(ev, `,"usage":null`, "")...)
	}
	return out
}

func TestStripUsageChunkRandomReads(t *testing.T) {
	with := fixture(t, "openai_chat_stream_tools.sse")
	want := stripByHand(t, with)
	rng := rand.New(rand.NewPCG(3, 4))
	for range 300 {
		got, err := io.ReadAll(&randomReader{r: StripUsageChunk(io.NopCloser(&randomReader{r: bytes.NewReader(with), rng: rng})), rng: rng})
		if err != nil || string(got) != string(want) {
			t.Fatalf("%v\ngot\n%s\nwant\n%s", err, got, want)
		}
	}
}

// randomReader reads from r into buffers of random sizes.
type randomReader struct {
	r   io.Reader
	rng *rand.Rand
}

func (r *randomReader) Read(p []byte) (int, error) {
	if len(p) > 1 {
		p = p[:1+r.rng.IntN(len(p))]
	}
	return r.r.Read(p)
}

func TestStripUsageChunkUnchanged(t *testing.T) {
	for _, s := range []string{
		string(fixture(t, "openai_chat_stream.sse")),
		string(fixture(t, "openai_chat.json")), // not SSE
		"",
		"data: [DONE]\n\n",
		": ping\n\nevent: x\ndata: {\"a\":1}\n\n",
		"data: {\"usage\":\n",                         // cut
		"data: {\"usage\":null\ndata: }\n\n",          // two data lines: passes
		"data: {\"usage\": nul}\n\n",                  // not JSON
		"data: [{\"usage\":null}]\n\n",                // not an object
		"data: {\"x\":{\"usage\":null}}\n\n",          // not top level
		"data: {\"text\":\"\\\"usage\\\":null\"}\n\n", // in a string
	} {
		got, err := io.ReadAll(StripUsageChunk(io.NopCloser(iotest.HalfReader(strings.NewReader(s)))))
		if err != nil || string(got) != s {
			t.Errorf("%q: got %q, %v", s, got, err)
		}
	}
}

func TestStripUsageChunkCases(t *testing.T) {
	for _, tc := range []struct{ name, in, want string }{
		{"usage first", "data: {\"usage\":null, \"id\":1}\n\n", "data: {\"id\":1}\n\n"},
		{"usage only", "data: {\"usage\":null}\n\n", "data: {}\n\n"},
		{"usage middle", "data: {\"id\":1 , \"usage\" : null ,\"x\":2}\n\n", "data: {\"id\":1 ,\"x\":2}\n\n"},
		{"usage with choices kept", "data: {\"choices\":[{\"delta\":{}}],\"usage\":{\"prompt_tokens\":1}}\n\n", "data: {\"choices\":[{\"delta\":{}}]}\n\n"},
		{"usage chunk, choices null", "data: {\"choices\":null,\"usage\":{\"prompt_tokens\":1}}\n\ndata: [DONE]\n\n", "data: [DONE]\n\n"},
		{"usage chunk, no choices", "data: {\"usage\":{\"prompt_tokens\":1}}\n\ndata: [DONE]\n\n", "data: [DONE]\n\n"},
		{"usage chunk, choices [ ]", "id: 7\ndata: {\"choices\":[ ],\"usage\":{}}\n\ndata: [DONE]\n\n", "data: [DONE]\n\n"},
		{"CRLF", "data: {\"a\":1,\"usage\":null}\r\n\r\ndata: {\"choices\":[],\"usage\":{}}\r\n\r\ndata: [DONE]\r\n\r\n", "data: {\"a\":1}\r\n\r\ndata: [DONE]\r\n\r\n"},
		{"CR", "data: {\"a\":1,\"usage\":null}\r\rdata: {\"choices\":[],\"usage\":{}}\r\rdata: [DONE]\r\r", "data: {\"a\":1}\r\rdata: [DONE]\r\r"},
		{"comment first", ": hi\n\ndata: {\"a\":1,\"usage\":null}\n\n", ": hi\n\ndata: {\"a\":1}\n\n"},
		{"last event without blank line", "data: {\"a\":1,\"usage\":null}\n\ndata: {\"a\":2,\"usage\":null}\n", "data: {\"a\":1}\n\ndata: {\"a\":2,\"usage\":null}\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, r := range []func(io.Reader) io.Reader{func(r io.Reader) io.Reader { return r }, iotest.OneByteReader} {
				got, err := io.ReadAll(StripUsageChunk(io.NopCloser(r(strings.NewReader(tc.in)))))
				if err != nil || string(got) != tc.want {
					t.Fatalf("got %q, %v; want %q", got, err, tc.want)
				}
			}
		})
	}
}

// An event longer than MaxHeldEvent passes as it is, and is not held whole.
func TestStripUsageChunkLongEvent(t *testing.T) {
	long := "data: {\"choices\":[{\"delta\":{\"content\":\"" + strings.Repeat("x", MaxHeldEvent+10) + "\"}}],\"usage\":null}\n\n"
	in := long + "data: {\"a\":1,\"usage\":null}\n\ndata: [DONE]\n\n"
	want := long + "data: {\"a\":1}\n\ndata: [DONE]\n\n"
	got, err := io.ReadAll(StripUsageChunk(io.NopCloser(strings.NewReader(in))))
	if err != nil || string(got) != want {
		t.Fatalf("%v: got %d bytes, want %d", err, len(got), len(want))
	}
	// the first bytes come out before the long event ends
	r := StripUsageChunk(io.NopCloser(io.MultiReader(strings.NewReader(long[:MaxHeldEvent+5]), iotest.ErrReader(errStop))))
	got, err = io.ReadAll(r)
	if !errors.Is(err, errStop) || string(got) != long[:MaxHeldEvent+5] {
		t.Fatalf("got %d bytes, %v", len(got), err)
	}
}

var errStop = errors.New("stop")

// Read's error comes after the bytes read before it.
func TestStripUsageChunkError(t *testing.T) {
	in := "data: {\"a\":1,\"usage\":null}\n\ndata: {\"a\":2"
	r := StripUsageChunk(io.NopCloser(io.MultiReader(strings.NewReader(in), iotest.ErrReader(errStop))))
	got, err := io.ReadAll(r)
	if !errors.Is(err, errStop) || string(got) != "data: {\"a\":1}\n\ndata: {\"a\":2" {
		t.Fatalf("got %q, %v", got, err)
	}
}

type closeCounter struct {
	io.Reader
	closed int
}

func (c *closeCounter) Close() error { c.closed++; return errStop }

func TestStripUsageChunkClose(t *testing.T) {
	c := &closeCounter{Reader: strings.NewReader("data: x\n\n")}
	if err := StripUsageChunk(c).Close(); !errors.Is(err, errStop) || c.closed != 1 {
		t.Fatalf("Close: %v, closed %d times", err, c.closed)
	}
}

// A meter reading the stream before StripUsageChunk finds the usage the
// caller no longer sees.
func TestMeterBeforeStrip(t *testing.T) {
	with := fixture(t, "openai_chat_stream_usage.sse")
	m := meterOf(t, OpenAI(), ctSSE, with)
	body := StripUsageChunk(io.NopCloser(io.TeeReader(bytes.NewReader(with), writerFunc(m.Write))))
	got, err := io.ReadAll(body)
	if err != nil || bytes.Contains(got, []byte(`"usage":`)) || bytes.Contains(got, []byte(`"choices":[]`)) {
		t.Fatalf("%v\n%s", err, got)
	}
	if u := m.Done(true); u != (Units{2006, 300, 1920, -1}) {
		t.Fatalf("got %+v", u)
	}
}

type writerFunc func([]byte)

func (f writerFunc) Write(p []byte) (int, error) { f(p); return len(p), nil }
