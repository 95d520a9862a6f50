package clickhouse

import (
	"testing"
	"time"
	"unsafe"

	"github.com/apipool-ng/apipool/recorder"
)

func TestQueueDropsWhenFull(t *testing.T) {
	q := newQueue(300, 100, false)
	e := recorder.Event{KeyID: "k"}
	for range 300 {
		if !q.put(&e) {
			t.Fatal("put refused below the bound")
		}
	}
	if q.put(&e) || q.dropped.Load() != 1 || q.len() != 300 || q.enqueued() != 300 {
		t.Fatalf("full queue: dropped %d, len %d", q.dropped.Load(), q.len())
	}
	// Detaching keeps events counted until consumed.
	blocks, have := q.detach(nil, 0, 100)
	if have != blockLen || len(blocks) != 1 || q.len() != 300 {
		t.Fatalf("detach: %d blocks, %d events, len %d", len(blocks), have, q.len())
	}
	if q.put(&e) {
		t.Fatal("put accepted while detached events still count")
	}
	q.consumed(have, 0, blocks)
	if q.len() != 300-blockLen || blocks[0].n != 0 || blocks[0].ev[0].KeyID != "" {
		t.Fatalf("after consume: len %d, block n %d", q.len(), blocks[0].n)
	}
	if !q.put(&e) {
		t.Fatal("put refused after room was made")
	}
	q.close()
	if q.put(&e) || q.dropped.Load() != 3 {
		t.Fatalf("put after close: dropped %d", q.dropped.Load())
	}
}

func TestQueueFIFOAcrossBlocks(t *testing.T) {
	q := newQueue(10_000, 1000, false)
	for i := range 1000 {
		q.put(&recorder.Event{Attempt: i})
	}
	blocks, have := q.detach(nil, 0, 1000)
	if have != 1000 {
		t.Fatalf("detached %d", have)
	}
	i := 0
	for _, b := range blocks {
		for _, e := range b.ev[:b.n] {
			if e.Attempt != i {
				t.Fatalf("event %d has Attempt %d", i, e.Attempt)
			}
			i++
		}
	}
}

func TestQueueBlockPolicy(t *testing.T) {
	q := newQueue(blockLen, blockLen, true)
	e := recorder.Event{}
	for range blockLen {
		q.put(&e)
	}
	// waitBlocked polls until a put is waiting for room.
	waitBlocked := func() {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for {
			q.mu.Lock()
			w := q.waiting
			q.mu.Unlock()
			if w == 1 {
				return
			}
			if time.Now().After(deadline) {
				t.Fatal("put did not wait on a full queue")
			}
			time.Sleep(time.Millisecond)
		}
	}
	done := make(chan bool, 1)
	go func() { done <- q.put(&e) }()
	waitBlocked()
	blocks, n := q.detach(nil, 0, blockLen)
	q.consumed(n, 0, blocks)
	if !<-done {
		t.Fatal("blocked put dropped after room was made")
	}
	// Close wakes blocked Records, which drop.
	for q.len() < blockLen {
		q.put(&e)
	}
	go func() { done <- q.put(&e) }()
	waitBlocked()
	q.close()
	if <-done {
		t.Fatal("put after close enqueued")
	}
}

func TestQueueWakesAtMarks(t *testing.T) {
	q := newQueue(1000, 100, false)
	e := recorder.Event{}
	for range 99 {
		q.put(&e)
	}
	select {
	case <-q.wake:
		t.Fatal("woken below the batch mark")
	default:
	}
	q.put(&e)
	select {
	case <-q.wake:
	default:
		t.Fatal("not woken at the batch mark")
	}
}

func TestRecordDoesNotAllocate(t *testing.T) {
	q := newQueue(1<<20, 10_000, false)
	e := recorder.Event{KeyID: "k", Time: time.Now()}
	q.put(&e) // the first block
	if n := testing.AllocsPerRun(blockLen-2, func() { q.put(&e) }); n != 0 {
		t.Errorf("put allocates %v times per event", n)
	}
}

// TestBlockFitsItsPages checks that a queue block fills the whole pages
// the runtime gives it: within an event of blockBytes, and not over.
func TestBlockFitsItsPages(t *testing.T) {
	size := int(unsafe.Sizeof(qblock{}))
	if size > blockBytes || blockBytes-size >= int(unsafe.Sizeof(recorder.Event{})) {
		t.Errorf("a block of %d events takes %d bytes; want at most %d, within an event of it", blockLen, size, blockBytes)
	}
	if blockBytes%8192 != 0 {
		t.Errorf("blockBytes %d is not whole pages", blockBytes)
	}
}

// TestQueueTrimsFreeBlocks: blocks freed after a burst stay for the next
// one, and those no put took through a whole trim interval go back to
// the garbage collector, down to two batches' worth.
func TestQueueTrimsFreeBlocks(t *testing.T) {
	q := newQueue(100*blockLen, blockLen, false)
	burst := func() {
		e := recorder.Event{}
		for range 100 * blockLen {
			q.put(&e)
		}
		blocks, n := q.detach(nil, 0, 100*blockLen)
		q.consumed(n, 0, blocks)
	}
	burst()
	if len(q.free) != 100 {
		t.Fatalf("%d free blocks after a burst, want 100", len(q.free))
	}
	q.trim() // the burst took from the free list: nothing unused
	burst()
	q.trim()
	if len(q.free) != 100 {
		t.Fatalf("%d free blocks after a burst and a trim, want 100", len(q.free))
	}
	q.trim() // a whole interval unused
	if want := 2 + extraFree; len(q.free) != want {
		t.Fatalf("%d free blocks after an idle interval, want %d", len(q.free), want)
	}
}
