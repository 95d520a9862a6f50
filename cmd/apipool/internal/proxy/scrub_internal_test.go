package proxy

import (
	"bytes"
	"fmt"
	"io"
	"math/rand/v2"
	"strings"
	"testing"
	"testing/iotest"
	"time"
)

const (
	keyA     = "sk-proj-Qw3Er5Ty7Ui9Op1As3Df5Gh7Jk9Lz2wxyz"
	keyB     = "AIzaSyB-x_9Kq2Lm4Np6Rs8Tv0Wx2Yz4Ab6Cd8"
	keyShort = "k9Z!x"
)

func TestScrubRules(t *testing.T) {
	x := newScrubIndex([]string{keyA, keyB, keyShort, "a/b+c=d/e+f=g/h+i"})
	cases := []struct{ in, want string }{
		{"no secret here, nothing to do", "no secret here, nothing to do"},
		{"whole: " + keyA + ".", "whole: [REDACTED]."},
		{"two touching: " + keyA + keyB, "two touching: [REDACTED]"},
		{"a fragment of 8: x" + keyA[20:28] + "x", "a fragment of 8: x[REDACTED]x"},
		{"a fragment of 7 stays: " + keyA[20:27], "a fragment of 7 stays: " + keyA[20:27]},
		{"the shared prefix of 8 goes: sk-proj-", "the shared prefix of 8 goes: [REDACTED]"},
		{"a short secret whole: " + keyShort + "; its part: k9Z!", "a short secret whole: [REDACTED]; its part: k9Z!"},
		{"URL-escaped: a%2Fb%2Bc%3Dd%2Fe%2Bf%3Dg%2Fh%2Bi", "URL-escaped: [REDACTED]"},
		{`JSON with \/: a\/b+c=d\/e+f=g\/h+i`, `JSON with \/: [REDACTED]`},
		{"masked: sk-proj-Qw3...****...wxyz!", "masked: [REDACTED]!"},
		{"masked, no head: ********************wxyz.", "masked, no head: [REDACTED]."},
		{"masked, ellipsis: AIza…Cd8 and bullets ••••wxyz", "masked, ellipsis: [REDACTED] and bullets [REDACTED]"},
		{"masked, too little shown: sk-****", "masked, too little shown: sk-****"},
		{"not masks: Loading... **Note** a.b 2*3=6 sk-proj", "not masks: Loading... **Note** a.b 2*3=6 sk-proj"},
		{"masked head of another form: key=sk-proj-Qw3E*****", "masked head of another form: key=[REDACTED]"},
	}
	for _, c := range cases {
		got, hit := x.scrubString(c.in)
		if got != c.want || hit != (c.in != c.want) {
			t.Errorf("scrub(%q) = %q, %v; want %q", c.in, got, hit, c.want)
		}
	}
	if got, _ := (*scrubIndex)(nil).scrubString(keyA); got != keyA {
		t.Errorf("a nil index changed %q", got)
	}
}

// TestScrubManyKeys: with 1,000 keys indexed, each is found, whole, by a
// fragment, and masked, and text of none is left alone.
func TestScrubManyKeys(t *testing.T) {
	ks := keys(1000)
	x := newScrubIndex(ks)
	for i, k := range ks {
		in := fmt.Sprintf("whole %s, part |%s|, masked %s****%s.", k, k[20:30], k[:10], k[len(k)-4:])
		if got, _ := x.scrubString(in); got != "whole [REDACTED], part |[REDACTED]|, masked [REDACTED]." {
			t.Fatalf("key %d: %q", i, got)
		}
	}
	text := "An ordinary error: the model gpt-4o-mini-2024-07-18 does not exist or you do not have access to it."
	if got, hit := x.scrubString(text); hit {
		t.Errorf("text of no key changed: %q", got)
	}
}

// chunky reads its text in random pieces.
type chunky struct {
	r   *rand.Rand
	src []byte
}

func (c *chunky) Read(p []byte) (int, error) {
	if len(c.src) == 0 {
		return 0, io.EOF
	}
	n := min(len(p), len(c.src), 1+c.r.IntN(20))
	copy(p, c.src[:n])
	c.src = c.src[n:]
	return n, nil
}

// TestStreamScrubMatchesWhole: however the stream is cut into reads, the
// streamed scan masks exactly the bytes rule 1 finds in the whole text,
// keeps the length and every other byte, and leaves no run of gramLen of
// a secret.
func TestStreamScrubMatchesWhole(t *testing.T) {
	secrets := []string{keyA, keyB, keyShort}
	x := newScrubIndex(secrets)
	r := rand.New(rand.NewPCG(1, 2))
	pieces := func() string {
		var b strings.Builder
		for b.Len() < 400 {
			switch r.IntN(5) {
			case 0:
				s := secrets[r.IntN(len(secrets))]
				i := r.IntN(len(s))
				b.WriteString(s[i:min(len(s), i+3+r.IntN(12))])
			case 1:
				b.WriteString(secrets[r.IntN(len(secrets))])
			case 2:
				b.WriteString("\n\n")
			default:
				b.WriteByte("abcdefsk-proj_AIz09\" :"[r.IntN(22)])
			}
		}
		return b.String()
	}
	for round := range 300 {
		text := []byte(pieces())
		want := naiveMask(text, secrets)
		var src io.Reader = &chunky{r: r, src: text}
		switch round % 3 {
		case 0:
			src = iotest.OneByteReader(bytes.NewReader(text))
		case 1:
			src = bytes.NewReader(text) // one read: the whole text
		}
		var scrubbed io.Reader = &streamScrub{x: x, src: src, closer: io.NopCloser(nil)}
		if round%2 == 1 {
			scrubbed = iotest.OneByteReader(scrubbed) // reads too small to hold back in
		}
		got, err := io.ReadAll(scrubbed)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want) {
			t.Fatalf("round %d:\ntext %q\n got %q\nwant %q", round, text, got, want)
		}
		for _, s := range secrets {
			for i := 0; i+gramLen <= len(s); i++ {
				if bytes.Contains(got, []byte(s[i:i+gramLen])) {
					t.Fatalf("round %d: %q holds %q", round, got, s[i:i+gramLen])
				}
			}
		}
	}
}

// naiveMask is rule 1 the slow way: each gramLen bytes of text found in a
// form of a secret, and each short form found whole, become '*'.
func naiveMask(text []byte, secrets []string) []byte {
	out := bytes.Clone(text)
	for _, s := range secrets {
		for _, f := range secretForms(s) {
			for i := range text {
				end := 0
				switch {
				case len(f) < gramLen && bytes.HasPrefix(text[i:], []byte(f)):
					end = i + len(f)
				case len(f) >= gramLen && i+gramLen <= len(text) && strings.Contains(f, string(text[i:i+gramLen])):
					end = i + gramLen
				}
				for j := i; j < end; j++ {
					out[j] = '*'
				}
			}
		}
	}
	return out
}

// TestStreamScrubHoldsOnlyWhatMayBeASecret: a read returns at once all
// but the bytes that may begin a secret: none after an event's newlines.
func TestStreamScrubHoldsOnlyWhatMayBeASecret(t *testing.T) {
	x := newScrubIndex([]string{keyA})
	pr, pw := io.Pipe()
	s := &streamScrub{x: x, src: pr, closer: pr}
	buf := make([]byte, 64)
	for _, c := range []struct{ write, read string }{
		{"data: one\n\n", "data: one\n\n"},
		// "sk-proj-" is a run of a secret: masked; the 7 bytes after it
		// may go on with the key: held.
		{"data: " + keyA[:10], "data: ***"},
		{keyA[10:] + "\n\n", strings.Repeat("*", len(keyA)-3) + "\n\n"},
		{"data: sk-pr", "data: "},
		{"oof\n", "sk-proof\n"},
	} {
		go pw.Write([]byte(c.write))
		res := make(chan []byte, 1)
		go func() {
			var got []byte
			for len(got) < len(c.read) {
				n, err := s.Read(buf)
				if err != nil {
					break
				}
				got = append(got, buf[:n]...)
			}
			res <- got
		}()
		var got []byte
		select {
		case got = <-res:
		case <-time.After(20 * time.Second):
			t.Fatalf("after %q: %q is held back", c.write, c.read)
		}
		if string(got) != c.read {
			t.Fatalf("after %q: read %q, want %q", c.write, got, c.read)
		}
	}
}

// keys returns n OpenAI-like keys.
func keys(n int) []string {
	r := rand.New(rand.NewPCG(3, 4))
	const abc = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
	out := make([]string, n)
	for i := range out {
		b := []byte("sk-proj-")
		for range 48 {
			b = append(b, abc[r.IntN(len(abc))])
		}
		out[i] = string(b)
	}
	return out
}

// BenchmarkScrubErrorAnswer: an OpenAI-like 401 body quoting a key, and a
// 1 MiB one, scrubbed with 1,000 keys indexed.
func BenchmarkScrubErrorAnswer(b *testing.B) {
	ks := keys(1000)
	x := newScrubIndex(ks)
	small := []byte(fmt.Sprintf(`{"error":{"message":"Incorrect API key provided: %s. You can find your API key at https://platform.openai.com/account/api-keys.","type":"invalid_request_error","param":null,"code":"invalid_api_key"}}`, ks[500]))
	large := bytes.Repeat([]byte("filler text of an HTML error page <p>nothing secret</p>\n"), (1<<20)/56)
	for _, c := range []struct {
		name string
		body []byte
	}{{"401", small}, {"1MiB", large}} {
		b.Run(c.name, func(b *testing.B) {
			b.SetBytes(int64(len(c.body)))
			for b.Loop() {
				redact(c.body, x.find(c.body), len(c.body))
			}
		})
	}
	b.Run("index", func(b *testing.B) {
		for b.Loop() {
			newScrubIndex(ks)
		}
	})
}

// BenchmarkScrubStream: a streamed success of server-sent events read
// through the scrubber in 32 KiB reads, as ReverseProxy copies, with
// 1,000 keys indexed.
func BenchmarkScrubStream(b *testing.B) {
	x := newScrubIndex(keys(1000))
	ev := []byte(`data: {"id":"chatcmpl-abc123","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"content":" word"}}]}` + "\n\n")
	body := bytes.Repeat(ev, (1<<20)/len(ev))
	buf := make([]byte, 32<<10)
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	for b.Loop() {
		s := &streamScrub{x: x, src: bytes.NewReader(body), closer: io.NopCloser(nil)}
		for {
			if _, err := s.Read(buf); err != nil {
				break
			}
		}
	}
}
