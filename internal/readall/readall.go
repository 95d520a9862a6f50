// Package readall reads a body whole, up to a bound, into a buffer sized
// at once when its length is known. The pool (request bodies it keeps for
// replay) and the apipool proxy (answers it scrubs) both use it.
package readall

import "io"

// AtMost reads r to its end, or n bytes of it, which it returns with the
// error that stopped it (nil at the end), as io.ReadAll(io.LimitReader(r,
// n)) does, without the LimitReader; size, when not negative, is the
// length expected, to size the buffer at once.
func AtMost(r io.Reader, n, size int64) ([]byte, error) {
	c := int64(512)
	if size >= 0 {
		// +1: the end is seen without growing. A length claimed, not
		// yet sent, reserves at most 32 KiB: past it the buffer grows
		// as the bytes come.
		c = min(size+1, n, 32<<10)
	}
	b := make([]byte, 0, max(c, 1))
	for int64(len(b)) < n {
		if len(b) == cap(b) {
			b = append(b, 0)[:len(b)]
		}
		m, err := r.Read(b[len(b):min(int64(cap(b)), n)])
		b = b[:len(b)+m]
		if err == io.EOF {
			return b, nil
		}
		if err != nil {
			return b, err
		}
	}
	return b, nil
}
