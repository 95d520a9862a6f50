package readall

import (
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"
	"testing/iotest"
)

// AtMost reads what io.ReadAll(io.LimitReader(r, n)) reads, whatever
// length it is told to expect.
func TestReadAtMost(t *testing.T) {
	for _, l := range []int{0, 1, 7, 100, 511, 512, 513, 5000, 40 << 10} {
		src := strings.Repeat("abcdefghij", l/10+1)[:l]
		for _, n := range []int64{1, 8, 100, 512, 4096, 64 << 10} {
			for _, size := range []int64{-1, 0, int64(l), int64(l) / 2, int64(l) * 2, 1 << 30} {
				want, _ := io.ReadAll(io.LimitReader(strings.NewReader(src), n))
				for _, r := range []io.Reader{strings.NewReader(src), iotest.OneByteReader(strings.NewReader(src)), iotest.DataErrReader(strings.NewReader(src))} {
					got, err := AtMost(r, n, size)
					if err != nil || !bytes.Equal(got, want) {
						t.Fatalf("len %d, n %d, size %d: got %d bytes, %v; want %d", l, n, size, len(got), err, len(want))
					}
				}
			}
		}
	}
	boom := errors.New("boom")
	got, err := AtMost(io.MultiReader(strings.NewReader("abc"), iotest.ErrReader(boom)), 100, 10)
	if string(got) != "abc" || err != boom {
		t.Fatalf("got %q, %v", got, err)
	}
}
