package apipool

import (
	"hash/maphash"
	"sync"
)

// sessionTable remembers which key each session last took
// (WithSessions): at most max sessions, the least recently used forgotten
// first. A session is its name's 64-bit hash with the pool's seed, so
// that an entry's size does not depend on the name and no request's
// string is kept. Entries live in one slice, linked by index from the
// most to the least recently used, and are reused when a session is
// forgotten: after the table fills, a request allocates nothing.
type sessionTable struct {
	seed maphash.Seed
	max  int

	mu         sync.Mutex
	idx        map[uint64]int32
	ents       []sessionEntry
	head, tail int32 // most and least recently used; -1 when empty
}

type sessionEntry struct {
	h          uint64
	k          *keyState
	prev, next int32 // towards head and tail; -1 at the ends
}

func newSessionTable(max int) *sessionTable {
	return &sessionTable{seed: maphash.MakeSeed(), max: max, idx: make(map[uint64]int32), head: -1, tail: -1}
}

// hash returns session id's hash.
func (s *sessionTable) hash(id string) uint64 { return maphash.String(s.seed, id) }

// get returns the key session h last took, or nil, and makes the session
// the most recently used.
func (s *sessionTable) get(h uint64) *keyState {
	s.mu.Lock()
	defer s.mu.Unlock()
	i, ok := s.idx[h]
	if !ok {
		return nil
	}
	s.front(i)
	return s.ents[i].k
}

// set records that session h took key k, as the most recently used
// session, forgetting the least recently used one when the table is full.
func (s *sessionTable) set(h uint64, k *keyState) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if i, ok := s.idx[h]; ok {
		s.ents[i].k = k
		s.front(i)
		return
	}
	var i int32
	if len(s.ents) < s.max {
		i = int32(len(s.ents))
		s.ents = append(s.ents, sessionEntry{prev: -1, next: -1})
	} else {
		i = s.tail
		s.unlink(i)
		delete(s.idx, s.ents[i].h)
	}
	s.ents[i] = sessionEntry{h: h, k: k, prev: -1, next: s.head}
	if s.head >= 0 {
		s.ents[s.head].prev = i
	}
	s.head = i
	if s.tail < 0 {
		s.tail = i
	}
	s.idx[h] = i
}

// len returns how many sessions the table holds.
func (s *sessionTable) len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.idx)
}

// front makes entry i the most recently used.
func (s *sessionTable) front(i int32) {
	if s.head == i {
		return
	}
	s.unlink(i)
	e := &s.ents[i]
	e.prev, e.next = -1, s.head
	if s.head >= 0 {
		s.ents[s.head].prev = i
	}
	s.head = i
	if s.tail < 0 {
		s.tail = i
	}
}

// unlink takes entry i out of the list.
func (s *sessionTable) unlink(i int32) {
	e := &s.ents[i]
	if e.prev >= 0 {
		s.ents[e.prev].next = e.next
	} else if s.head == i {
		s.head = e.next
	}
	if e.next >= 0 {
		s.ents[e.next].prev = e.prev
	} else if s.tail == i {
		s.tail = e.prev
	}
	e.prev, e.next = -1, -1
}
