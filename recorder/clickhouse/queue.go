package clickhouse

import (
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/apipool-ng/apipool/recorder"
)

// blockLen is the number of events per queue block: as many as fit in
// blockBytes beside the count. Blocks are large objects, which the Go
// runtime allocates in whole pages of 8 KiB: 256 events of 192 bytes and
// the count took 7 pages (224 bytes per event, measured by
// BenchmarkOutageMemory), 255 take 6 (193 bytes per event). With the
// usage fields an event is 264 bytes: 186 take the 6 pages (264 bytes
// per event).
const (
	blockBytes = 48 << 10
	blockLen   = (blockBytes - int(unsafe.Sizeof(int(0)))) / int(unsafe.Sizeof(recorder.Event{}))
)

// qblock is a block of queued events. Blocks are recycled, so a queue in
// steady state allocates nothing.
type qblock struct {
	n  int
	ev [blockLen]recorder.Event
}

// queue is the bounded FIFO between Record and the writer goroutine: a
// list of blocks under a mutex. Record copies an event into the tail block;
// the writer detaches whole blocks (pointer moves only, so the lock is held
// briefly) and reports back how many events it has consumed. An event
// counts against the bound from Record until the writer consumes it.
type queue struct {
	mu      sync.Mutex
	notFull sync.Cond // Block policy: Records waiting for room
	blocks  []*qblock // queued, head first
	free    []*qblock
	n       int    // events queued or detached but not consumed
	held    int    // events consumed into the writer's batches, not yet settled
	enq     uint64 // events ever enqueued
	max     int
	block   bool // Block policy, else drop
	closed  bool
	waiting int // Records waiting on notFull

	// wake tells the writer that the queue has reached one of the
	// thresholds: a batch, the spill mark, full.
	wake                 chan struct{}
	batchMark, spillMark int
	maxFree              int
	floorFree            int // trim keeps this many free blocks
	minFree              int // the fewest free blocks since the last trim

	// dropped counts every event dropped, for any reason; drops counts
	// them by reason. spillFull is set while the spill file refuses rows,
	// so that put counts its drops as the spill file's.
	dropped   atomic.Uint64
	drops     [numDropReasons]atomic.Uint64
	spillFull atomic.Bool
}

// dropReason is why an event was dropped; see Drops.
type dropReason int

const (
	dropQueueFull dropReason = iota
	dropSpillFull
	dropClosed
	dropCloseLost
	dropCorrupt
	dropUnbuildable
	numDropReasons
)

// drop counts n events dropped for reason r.
func (q *queue) drop(r dropReason, n uint64) {
	if n == 0 {
		return
	}
	q.drops[r].Add(n)
	q.dropped.Add(n)
}

// The free list keeps emptied blocks up to maxFreeBytes (the whole
// default queue), so that a queue that fills and drains in bursts
// allocates nothing; beyond, emptied blocks go back to the garbage
// collector as the queue drains, so that a queue that held a million
// events during an outage does not keep their 193 MB. trim also gives
// back the blocks that stayed unused through a whole trim interval, down
// to two batches' worth plus extraFree.
const (
	maxFreeBytes = 20 << 20
	extraFree    = 8
	trimInterval = 10 * time.Second
)

func newQueue(max, batch int, block bool) *queue {
	q := &queue{
		max:       max,
		block:     block,
		wake:      make(chan struct{}, 1),
		batchMark: min(batch, max),
		spillMark: max / 2,
		maxFree:   min((max+blockLen-1)/blockLen, maxFreeBytes/blockBytes),
		floorFree: 2*((batch+blockLen-1)/blockLen) + extraFree,
	}
	if q.maxFree < q.floorFree {
		q.maxFree = q.floorFree // at least two batches' blocks
	}
	q.notFull.L = &q.mu
	return q
}

// put enqueues a copy of *e, or drops it (counting it) when the queue is
// closed, or full under the drop policy. Under the block policy it waits
// for room. It reports whether e was enqueued.
func (q *queue) put(e *recorder.Event) bool {
	q.mu.Lock()
	for q.n >= q.max && !q.closed {
		if !q.block {
			q.mu.Unlock()
			if q.spillFull.Load() {
				q.drop(dropSpillFull, 1)
			} else {
				q.drop(dropQueueFull, 1)
			}
			return false
		}
		q.waiting++
		q.notFull.Wait()
		q.waiting--
	}
	if q.closed {
		q.mu.Unlock()
		q.drop(dropClosed, 1)
		return false
	}
	var tail *qblock
	if k := len(q.blocks); k > 0 && q.blocks[k-1].n < blockLen {
		tail = q.blocks[k-1]
	} else {
		if k := len(q.free); k > 0 {
			tail = q.free[k-1]
			q.free = q.free[:k-1]
			q.minFree = min(q.minFree, k-1)
		} else {
			tail = new(qblock)
		}
		q.blocks = append(q.blocks, tail)
	}
	tail.ev[tail.n] = *e
	tail.n++
	q.n++
	q.enq++
	n := q.n
	q.mu.Unlock()
	// n grows one at a time, so each mark is seen when crossed.
	if n == q.batchMark || n == q.spillMark || n == q.max {
		q.signal()
	}
	return true
}

func (q *queue) signal() {
	select {
	case q.wake <- struct{}{}:
	default:
	}
}

// detach moves blocks from the head of the queue to dst until dst holds at
// least want events or the queue is empty; their events stay counted in
// len until consumed.
func (q *queue) detach(dst []*qblock, have, want int) ([]*qblock, int) {
	q.mu.Lock()
	k := 0
	for k < len(q.blocks) && have < want {
		have += q.blocks[k].n
		k++
	}
	dst = append(dst, q.blocks[:k]...)
	n := copy(q.blocks, q.blocks[k:])
	clear(q.blocks[n:])
	q.blocks = q.blocks[:n]
	if n == 0 && cap(q.blocks) > 64 {
		q.blocks = nil // the slice grew during an outage: give it back
	}
	q.mu.Unlock()
	return dst, have
}

// consumed tells the queue that the writer is done with n events, and
// returns the blocks emptied (cleared, to drop their strings) to the free
// list. held events of them went into a batch (see unhold).
func (q *queue) consumed(n, held int, emptied []*qblock) {
	for _, b := range emptied {
		clear(b.ev[:b.n])
		b.n = 0
	}
	q.mu.Lock()
	q.n -= n
	q.held += held
	for _, b := range emptied {
		if len(q.free) < q.maxFree {
			q.free = append(q.free, b)
		}
	}
	if q.waiting > 0 {
		q.notFull.Broadcast()
	}
	q.mu.Unlock()
}

// trim drops the free blocks that no put took since the last trim, down
// to floorFree. The writer calls it every trimInterval.
func (q *queue) trim() {
	q.mu.Lock()
	defer q.mu.Unlock()
	k := len(q.free)
	drop := min(q.minFree, k-q.floorFree)
	if drop > 0 {
		clear(q.free[k-drop:])
		q.free = q.free[:k-drop]
		if cap(q.free) > 2*len(q.free)+64 {
			q.free = append([]*qblock(nil), q.free...)
		}
	}
	q.minFree = len(q.free)
}

// unhold tells the queue that n events of batches are settled.
func (q *queue) unhold(n int) {
	q.mu.Lock()
	q.held -= n
	q.mu.Unlock()
}

// total returns the events queued and in batches.
func (q *queue) total() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.n + q.held
}

// len returns the number of events held (queued or detached).
func (q *queue) len() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.n
}

// enqueued returns how many events were ever enqueued.
func (q *queue) enqueued() uint64 {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.enq
}

// close makes put drop from now on and wakes Records waiting for room.
func (q *queue) close() {
	q.mu.Lock()
	q.closed = true
	q.notFull.Broadcast()
	q.mu.Unlock()
}
