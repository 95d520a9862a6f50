package memory

// ring is a double-ended queue of T in a circular buffer: the store keeps
// its time buckets in rings sorted by time, adds at the back, and drops
// expired buckets from the front. It grows by doubling when full and
// shrinks by half when at most an eighth is in use, so its memory follows
// the number of buckets in use.
type ring[T any] struct {
	buf     []T
	head, n int
}

// at returns the i-th element from the front, 0 <= i < len(buf).
func (r *ring[T]) at(i int) *T {
	j := r.head + i
	if j >= len(r.buf) {
		j -= len(r.buf)
	}
	return &r.buf[j]
}

func (r *ring[T]) push(v T) {
	if r.n == len(r.buf) {
		r.resize(max(2*len(r.buf), 4))
	}
	*r.at(r.n) = v
	r.n++
}

// insert puts v at position i, moving the elements from i back by one.
func (r *ring[T]) insert(i int, v T) {
	r.push(v)
	for j := r.n - 1; j > i; j-- {
		*r.at(j) = *r.at(j - 1)
	}
	*r.at(i) = v
}

// dropFront removes the first k elements.
func (r *ring[T]) dropFront(k int) {
	var zero T
	for i := range k {
		*r.at(i) = zero // release what T points to
	}
	r.head += k
	if len(r.buf) > 0 {
		r.head %= len(r.buf)
	}
	r.n -= k
	if len(r.buf) > 16 && r.n <= len(r.buf)/8 {
		r.resize(len(r.buf) / 2)
	}
}

func (r *ring[T]) resize(size int) {
	nb := make([]T, size)
	for i := range r.n {
		nb[i] = *r.at(i)
	}
	r.buf, r.head = nb, 0
}

// entry is the count of the events of one status slot in one time bucket.
type entry struct {
	t    int64 // the bucket: a Unix second or minute
	n    uint32
	slot uint8
}

// countRing holds the counts of a tier, sorted by time then slot: only
// the buckets and slots with events take room.
type countRing struct{ ring[entry] }

// lower returns the index of the first entry at or after (t, slot).
func (r *countRing) lower(t int64, slot uint8) int {
	lo, hi := 0, r.n
	for lo < hi {
		m := int(uint(lo+hi) >> 1)
		if e := r.at(m); e.t < t || e.t == t && e.slot < slot {
			lo = m + 1
		} else {
			hi = m
		}
	}
	return lo
}

// add counts one event of slot in bucket t.
func (r *countRing) add(t int64, slot uint8) {
	if r.n > 0 {
		e := r.at(r.n - 1)
		if e.t == t && e.slot == slot {
			e.n++
			return
		}
		if e.t < t || e.t == t && e.slot < slot {
			r.push(entry{t: t, n: 1, slot: slot})
			return
		}
	}
	i := r.lower(t, slot)
	if i < r.n {
		if e := r.at(i); e.t == t && e.slot == slot {
			e.n++
			return
		}
	}
	r.insert(i, entry{t: t, n: 1, slot: slot})
}

// expire drops the buckets before t.
func (r *countRing) expire(t int64) {
	if r.n > 0 && r.at(0).t < t {
		r.dropFront(r.lower(t, 0))
	}
}

// sum returns the events of the buckets [lo, hi) that the filter selects.
func (r *countRing) sum(lo, hi int64, f *filter) int64 {
	var n int64
	for i := r.lower(lo, 0); i < r.n; i++ {
		e := r.at(i)
		if e.t >= hi {
			break
		}
		if f.has[e.slot] {
			n += int64(e.n)
		}
	}
	return n
}

// each calls fn with every bucket of [lo, hi) that holds events and the
// filter's count of them (which may be 0), in time order.
func (r *countRing) each(lo, hi int64, f *filter, fn func(t, n int64)) {
	i := r.lower(lo, 0)
	for i < r.n {
		t := r.at(i).t
		if t >= hi {
			return
		}
		var n int64
		for ; i < r.n && r.at(i).t == t; i++ {
			if e := r.at(i); f.has[e.slot] {
				n += int64(e.n)
			}
		}
		fn(t, n)
	}
}

// histEntry is the histograms of one time bucket and, for an hour, its
// counts per status slot (whole hours are counted from them).
type histEntry struct {
	t  int64
	hs histSet
	n  *[numSlots]uint64 // hours only
}

// histRing holds the histograms of a tier, sorted by time.
type histRing struct{ ring[histEntry] }

func (r *histRing) lower(t int64) int {
	lo, hi := 0, r.n
	for lo < hi {
		m := int(uint(lo+hi) >> 1)
		if r.at(m).t < t {
			lo = m + 1
		} else {
			hi = m
		}
	}
	return lo
}

// get returns the entry of bucket t, or nil.
func (r *histRing) get(t int64) *histEntry {
	if i := r.lower(t); i < r.n && r.at(i).t == t {
		return r.at(i)
	}
	return nil
}

// getOrAdd returns the entry of bucket t, adding an empty one. The pointer
// is valid until the ring changes.
func (r *histRing) getOrAdd(t int64) *histEntry {
	if r.n > 0 {
		if e := r.at(r.n - 1); e.t == t {
			return e
		} else if e.t < t {
			r.push(histEntry{t: t})
			return r.at(r.n - 1)
		}
	}
	i := r.lower(t)
	if i < r.n && r.at(i).t == t {
		return r.at(i)
	}
	r.insert(i, histEntry{t: t})
	return r.at(i)
}

// expire drops the buckets before t, giving their histograms to free.
func (r *histRing) expire(t int64, free *hists) {
	if r.n == 0 || r.at(0).t >= t {
		return
	}
	k := r.lower(t)
	for i := range k {
		hs := &r.at(i).hs
		for c, h := range hs.h {
			if h != nil {
				free.put(h)
				hs.h[c] = nil
			}
		}
	}
	r.dropFront(k)
}
