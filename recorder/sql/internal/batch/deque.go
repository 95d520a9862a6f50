package batch

// chunkLen is the number of items per chunk of the queue.
const chunkLen = 256

type chunk[T any] struct {
	items [chunkLen]T
	r, w  int // items[r:w] are queued
}

// deque is a FIFO of items in chunks, so that it grows and shrinks without
// copying what it holds; emptied chunks are kept for reuse, a few at most.
// It is not safe for concurrent use.
type deque[T any] struct {
	chunks []*chunk[T]
	free   []*chunk[T]
	n      int
}

func (d *deque[T]) push(v T) {
	k := len(d.chunks)
	if k == 0 || d.chunks[k-1].w == chunkLen {
		var c *chunk[T]
		if f := len(d.free); f > 0 {
			c, d.free = d.free[f-1], d.free[:f-1]
		} else {
			c = new(chunk[T])
		}
		d.chunks = append(d.chunks, c)
		k++
	}
	c := d.chunks[k-1]
	c.items[c.w] = v
	c.w++
	d.n++
}

// pop moves up to max items from the head to dst.
func (d *deque[T]) pop(dst []T, max int) []T {
	for len(d.chunks) > 0 && max > 0 {
		c := d.chunks[0]
		k := min(c.w-c.r, max)
		dst = append(dst, c.items[c.r:c.r+k]...)
		clear(c.items[c.r : c.r+k])
		c.r += k
		d.n -= k
		max -= k
		if c.r == c.w {
			c.r, c.w = 0, 0
			n := copy(d.chunks, d.chunks[1:])
			d.chunks[n] = nil
			d.chunks = d.chunks[:n]
			if len(d.free) < 4 {
				d.free = append(d.free, c)
			}
		}
	}
	return dst
}

// drop empties the queue.
func (d *deque[T]) drop() {
	for _, c := range d.chunks {
		clear(c.items[c.r:c.w])
	}
	d.chunks, d.n = nil, 0
}
