package clickhouse

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/google/uuid"

	"github.com/apipool-ng/apipool/recorder"
)

// flushReq asks the writer to report when the first target events ever
// enqueued are written.
type flushReq struct {
	target uint64
	done   chan error // buffered
}

// job is a batch of rows on its way to the table. The writer goroutine
// owns it, except while an attempt runs (busy): the attempt's goroutine
// then sets batch, and reads rows, which nobody changes meanwhile.
type job struct {
	rows  []row
	cols  columnBufs
	batch driver.Batch // built from rows; nil until built
	// id names the insert (its query_id and, where the server has it,
	// its insert_deduplication_token): the same for every attempt at the
	// same rows.
	id string
	// uncertain says that an attempt failed after the rows may have
	// reached the server: the next one must not simply resend them (see
	// dedupInfo).
	uncertain bool
	// unknownStatus says that the last attempt's answer was
	// UNKNOWN_STATUS_OF_INSERT: the next one looks for orphan parts
	// first (see orphanParts).
	unknownStatus bool
	// seq is the queue sequence number of the first row (rows from the
	// queue are consecutive); fromSpill jobs use the spill's ranges.
	seq       uint64
	fromSpill bool
	spillNext int64 // the spill offset after the rows
	spillInh  int64 // rows an earlier store spilled
	// spillRecords is how many records the job stood for when loaded (a
	// check may cut its rows to those not yet written).
	spillRecords int64
	busy         bool
	failures     int // consecutive failed attempts, for building
	heldN        int // rows taken from the queue (see queue.held)
}

// result is what an attempt's goroutine reports.
type result struct {
	j   *job
	err error
	// sent: Send was called (the rows may have reached the server).
	// written: the rows were found in the table by a check (nothing sent).
	// rest: a check found part of the rows written; the batch now holds
	// the others, which the job's rows must become.
	// buildOnly: the attempt only built the batch (a pipelined job).
	sent, written, buildOnly bool
	buildErr                 bool
	rest                     []row
}

// writer is the store's background goroutine. It never waits on the
// server itself: attempts (set-up, checks, building and sending a batch)
// run in goroutines of their own and report back, so that while one
// hangs the writer keeps moving the oldest queued events to the spill
// file, answers Flush and Close, and probes the server.
//
// Rows go out in this order: the batch being sent, the batch built
// behind it, then the spill file and the queue taking turns batch by
// batch, so that a replay neither starves live events nor is starved.
type writer struct {
	s    *Store
	q    *queue
	sp   *spillFile // nil without Config.SpillDir
	ids  idGen
	bo   backoff
	size int // Config.BatchSize

	flushCh  chan *flushReq
	closeCh  chan context.Context
	done     chan struct{}
	closeErr error // set before done is closed
	resCh    chan result
	probeCh  chan error

	// carry holds the blocks detached from the queue; its events before
	// off in carry[0] are consumed, carryN are not.
	carry   []*qblock
	off     int
	carryN  int
	emptied []*qblock

	cur, next *job // the batch being sent and the one built behind it
	spare     []*job
	lastSpill bool // the last batch loaded came from the spill file
	spillBuf  []row

	// taken counts this store's events consumed from the queue (into a
	// job or the spill file), in the order they were enqueued; spillSeq
	// lists the ranges of them in the spill file, oldest first; settled
	// counts those written or lost.
	taken    uint64
	spillSeq []seqRange
	waiters  []*flushReq
	// forceTo makes the writer send what is queued, without waiting for a
	// full batch, until taken reaches it: the interval ticked, or a Flush
	// came, when that many events had been enqueued.
	forceTo uint64

	failing   bool // the last attempt failed
	failures  int
	lastErr   error
	retryAt   time.Time // no attempt before then, unless a probe answers
	probing   bool
	spillFull bool // the spill file refused rows; stop trying until a batch is written
	closing   bool
	closeCtx  context.Context
	// closeSoon is set when Close's deadline is near (see spillLead).
	closeSoon bool
	soonT     *time.Timer

	ticker *time.Ticker
	trimT  *time.Ticker
	retryT *time.Timer
	probeT *time.Timer

	batches   atomic.Uint64 // batches written, for tests
	pipelined atomic.Uint64 // of which built while the one before was sent
	checks    atomic.Uint64 // batches checked for before a resend, for tests
	// recoveredAt is when the last attempt after a failure succeeded
	// (UnixNano), and failedAt when the failures began, for tests.
	recoveredAt, failedAt atomic.Int64
}

// seqRange is n events enqueued consecutively from start.
type seqRange struct {
	start uint64
	n     int64
}

// probeInterval is how often the writer asks a failing server whether it
// answers again (a Ping, on a connection of the pool), so that sending
// resumes within about that long of the server's return, whatever the
// backoff had reached.
const probeInterval = 250 * time.Millisecond

// probeTimeout bounds a probe.
const probeTimeout = time.Second

func newWriter(s *Store, sp *spillFile) *writer {
	stopped := func() *time.Timer {
		t := time.NewTimer(time.Hour)
		t.Stop()
		return t
	}
	return &writer{
		s:       s,
		q:       s.q,
		sp:      sp,
		ids:     newIDGen(),
		bo:      newBackoff(s.cfg.MinBackoff, s.cfg.MaxBackoff),
		size:    s.cfg.BatchSize,
		flushCh: make(chan *flushReq),
		closeCh: make(chan context.Context, 1),
		done:    make(chan struct{}),
		resCh:   make(chan result, 2),
		probeCh: make(chan error, 1),
		ticker:  time.NewTicker(s.cfg.FlushInterval),
		trimT:   time.NewTicker(trimInterval),
		retryT:  stopped(),
		probeT:  stopped(),
		soonT:   stopped(),
	}
}

func (w *writer) run() {
	defer close(w.done)
	defer w.ticker.Stop()
	defer w.trimT.Stop()
	defer w.retryT.Stop()
	defer w.probeT.Stop()
	defer w.soonT.Stop()
	for {
		w.answerWaiters()
		if w.closing && w.closeCtx.Err() != nil {
			w.giveUp()
			return
		}
		w.maybeSpill()
		w.maybeStart()
		if w.closing && w.cur == nil && w.next == nil && w.q.len() == 0 && (w.sp == nil || w.sp.count == 0) {
			w.finish()
			return
		}
		w.wait()
	}
}

// wait waits for something to happen: an attempt or probe ends, the
// queue passes a mark, the interval ticks, a timer fires, a Flush or
// Close comes, Close's context ends.
func (w *writer) wait() {
	var closeDone <-chan struct{}
	if w.closing {
		closeDone = w.closeCtx.Done()
	}
	select {
	case r := <-w.resCh:
		w.handle(r)
	case err := <-w.probeCh:
		w.probing = false
		if err == nil && w.cur != nil && !w.cur.busy {
			// The server answers: retry now.
			w.retryAt = time.Time{}
			w.retryT.Stop()
		} else if w.failing {
			w.probeT.Reset(probeInterval)
		}
	case <-w.probeT.C:
		w.probe()
	case <-w.retryT.C:
		w.retryAt = time.Time{}
	case <-w.q.wake:
	case <-w.ticker.C:
		w.forceTo = w.q.enqueued()
	case <-w.trimT.C:
		w.q.trim()
	case r := <-w.flushCh:
		w.waiters = append(w.waiters, r)
		w.forceTo = max(w.forceTo, r.target)
		// A Flush retries at once.
		w.retryAt = time.Time{}
	case ctx := <-w.closeCh:
		w.closing, w.closeCtx = true, ctx
		w.retryAt = time.Time{}
		if dl, ok := ctx.Deadline(); ok {
			w.soonT.Reset(max(time.Until(dl)-min(spillLead, time.Until(dl)/2), 0))
		}
	case <-w.soonT.C:
		w.closeSoon = true
	case <-closeDone:
	}
}

// probe starts a probe of the server, unless one runs or nothing fails.
func (w *writer) probe() {
	if w.probing || !w.failing || w.cur == nil || w.cur.busy {
		return
	}
	w.probing = true
	go func(ctx context.Context) {
		ctx, cancel := context.WithTimeout(ctx, probeTimeout)
		defer cancel()
		w.probeCh <- w.s.conn.Ping(ctx)
	}(w.s.ctx)
}

// maybeStart loads the next batch when there is none and starts an
// attempt at it when none runs and the backoff allows; while the batch is
// being sent, it builds the next one from a full batch of queued events.
func (w *writer) maybeStart() {
	if w.cur == nil {
		if w.next != nil {
			w.cur, w.next = w.next, nil
			w.lastSpill = false
		} else {
			w.cur = w.load()
		}
	}
	if w.cur != nil && !w.cur.busy && !w.retryAt.After(time.Now()) {
		w.start(w.cur, false)
	}
	if w.cur != nil && w.cur.busy && w.next == nil && !w.failing && w.q.len() >= w.size {
		w.next = w.fromQueue(w.size)
		if w.next != nil {
			w.start(w.next, true)
		}
	}
}

// load returns a batch from the spill file or the queue, taking turns
// when both have one; nil when there is nothing to send yet: less than a
// batch queued, unless forced.
func (w *writer) load() *job {
	queued := w.q.len()
	queueReady := queued >= w.size || queued > 0 && (w.closing || w.taken < w.forceTo)
	if w.sp != nil && w.sp.count > 0 && (!queueReady || !w.lastSpill) {
		j := w.newJob()
		rows, next, inh, err := w.sp.read(w.size, j.rows[:0])
		if err != nil && len(rows) == 0 {
			w.spare = append(w.spare, j)
			w.spillCorrupt(err)
			return w.load()
		}
		j.rows, j.fromSpill, j.spillNext, j.spillInh = rows, true, next, inh
		j.spillRecords = int64(len(rows))
		if u := w.sp.uncertain(); u > 0 && u == next {
			// An earlier attempt (perhaps an earlier process's) was cut
			// off: the rows may be in the table.
			j.uncertain = true
		}
		j.id = batchID(rows)
		w.lastSpill = true
		return j
	}
	if !queueReady {
		return nil
	}
	w.lastSpill = false
	return w.fromQueue(w.size)
}

func (w *writer) newJob() *job {
	if k := len(w.spare); k > 0 {
		j := w.spare[k-1]
		w.spare = w.spare[:k-1]
		return j
	}
	return &job{}
}

// release returns a finished job to the spare list.
func (w *writer) release(j *job) {
	clear(j.rows)
	rows, cols := j.rows[:0], j.cols
	*j = job{rows: rows, cols: cols}
	if len(w.spare) < 2 {
		w.spare = append(w.spare, j)
	}
}

// fromQueue takes up to n queued events into a new job.
func (w *writer) fromQueue(n int) *job {
	j := w.newJob()
	var m takeMark
	j.rows, m = w.peek(n, j.rows[:0])
	if m.n == 0 {
		w.spare = append(w.spare, j)
		return nil
	}
	j.seq = w.taken
	j.heldN = m.n
	w.commitTake(m, true)
	j.id = batchID(j.rows)
	return j
}

// batchID names a batch by its first and last event ids (random) and its
// length.
func batchID(rows []row) string {
	if len(rows) == 0 {
		return ""
	}
	a, b := rows[0].id, rows[len(rows)-1].id
	return fmt.Sprintf("apipool-%x-%x-%d", a[:8], b[8:], len(rows))
}

// start starts an attempt at j: the whole of it, or only building it
// (buildOnly, for the batch behind the one being sent).
func (w *writer) start(j *job, buildOnly bool) {
	if j.fromSpill && !buildOnly {
		// Mark the rows as in flight before they leave, so that a crash
		// from now on leaves them marked as possibly written.
		if err := w.sp.begin(j.spillNext); err != nil {
			w.s.log.Error("apipool: clickhouse: spill file", "err", err)
			w.failed(err, false)
			return
		}
	}
	j.busy = true
	go func() { w.resCh <- w.s.attempt(j, buildOnly) }()
}

// handle takes an attempt's result.
func (w *writer) handle(r result) {
	j := r.j
	j.busy = false
	if r.rest != nil {
		j.rows = r.rest
	}
	if r.buildOnly {
		switch {
		case r.err != nil:
			// Built again, the usual way, when its turn comes.
			j.batch = nil
		case w.failing:
			j.batch.Abort()
			j.batch = nil
		default:
			w.pipelined.Add(1)
		}
		return
	}
	if r.err == nil {
		w.succeeded(j, r.written)
		return
	}
	if r.sent {
		j.uncertain = true
	}
	if r.buildErr {
		j.failures++
		if j.failures >= 3 {
			w.unbuildable(j, r.err)
			return
		}
	}
	w.failed(r.err, true)
}

// succeeded settles j after its rows were written (or found written).
func (w *writer) succeeded(j *job, found bool) {
	if found {
		w.checks.Add(1)
	}
	if j.fromSpill {
		total := j.spillCount()
		if err := w.sp.commit(j.spillNext, total, j.spillInh); err != nil {
			w.s.log.Error("apipool: clickhouse: spill file", "err", err)
			w.s.setErr(err)
		}
		w.popSpill(total - j.spillInh)
		w.s.spilledN.Store(w.sp.count)
	}
	w.batches.Add(1)
	w.spillFull = false
	w.q.spillFull.Store(false)
	if w.failing {
		w.s.log.Info("apipool: clickhouse: sending again", "failures", w.failures)
		w.failing, w.failures = false, 0
		w.recoveredAt.Store(time.Now().UnixNano())
		w.probeT.Stop()
	}
	w.bo.reset()
	w.retryAt = time.Time{}
	w.lastErr = nil
	w.s.setErr(nil)
	w.done1(j)
}

func (j *job) spillCount() int64 { return j.spillRecords }

// done1 forgets a finished job.
func (w *writer) done1(j *job) {
	if w.cur == j {
		w.cur = nil
	} else if w.next == j {
		w.next = nil
	}
	w.q.unhold(j.heldN)
	w.release(j)
}

// popSpill settles n of this store's events from the front of the spill.
func (w *writer) popSpill(n int64) {
	for n > 0 && len(w.spillSeq) > 0 {
		r := &w.spillSeq[0]
		k := min(n, r.n)
		r.start += uint64(k)
		r.n -= k
		n -= k
		if r.n == 0 {
			w.spillSeq = w.spillSeq[1:]
		}
	}
	if len(w.spillSeq) == 0 {
		w.spillSeq = nil
	}
}

// failed records a failed attempt and schedules the next: after the
// backoff, or sooner when a probe finds the server answering (for errors
// that mean it did not answer).
func (w *writer) failed(err error, attempted bool) {
	w.s.setErr(err)
	w.lastErr = err
	w.failures++
	if w.next != nil && !w.next.busy && w.next.batch != nil {
		// The batch built behind would wait with a connection and an
		// open INSERT: build it again when its turn comes.
		w.next.batch.Abort()
		w.next.batch = nil
	}
	d := w.bo.next()
	w.retryAt = time.Now().Add(d)
	w.retryT.Reset(d)
	if retryable(err) {
		w.probeT.Reset(probeInterval)
	}
	if w.failing {
		return
	}
	w.failing = true
	w.failedAt.Store(time.Now().UnixNano())
	n := 0
	if w.cur != nil {
		n = len(w.cur.rows)
	}
	if retryable(err) {
		w.s.log.Warn("apipool: clickhouse: sending a batch failed; retrying it", "err", err, "events", n)
	} else {
		// Wrong credentials or an incompatible table: retried too, in case
		// someone fixes it, but worth a louder line.
		w.s.log.Error("apipool: clickhouse: the server refuses the batch; retrying it", "err", err, "events", n)
	}
}

// unbuildable drops a batch the client library refused to build three
// times. Rows are sanitised, so this means the table changed under the
// store; dropping the rows beats blocking every later event behind them.
func (w *writer) unbuildable(j *job, err error) {
	n := len(j.rows)
	w.s.log.Error("apipool: clickhouse: dropping a batch that cannot be built", "err", err, "events", n)
	w.q.drop(dropUnbuildable, uint64(n))
	w.s.setErr(err)
	if j.fromSpill {
		total := j.spillCount()
		if cerr := w.sp.commit(j.spillNext, total, j.spillInh); cerr != nil {
			w.s.log.Error("apipool: clickhouse: spill file", "err", cerr)
		}
		w.popSpill(total - j.spillInh)
		w.s.spilledN.Store(w.sp.count)
	}
	w.done1(j)
}

// spillCorrupt handles a spill file that cannot be read on: the records
// from the bad one on are lost.
func (w *writer) spillCorrupt(err error) {
	lost := w.sp.count
	w.s.log.Error("apipool: clickhouse: spill file corrupt; its remaining events are lost", "err", err, "events", lost)
	w.s.setErr(err)
	w.q.drop(dropCorrupt, uint64(lost))
	w.spillSeq = nil
	if rerr := w.sp.reset(); rerr != nil {
		w.s.log.Error("apipool: clickhouse: spill file", "err", rerr)
	}
	w.s.spilledN.Store(w.sp.count)
}

// takeMark is where peek stopped in the carry.
type takeMark struct {
	blocks, off, n int
}

// peek converts up to max events, oldest first, into rows appended to
// dst, detaching blocks from the queue as needed. The events stay in the
// queue (counting against its bound) until commitTake.
func (w *writer) peek(max int, dst []row) ([]row, takeMark) {
	if w.carryN < max {
		var have int
		w.carry, have = w.q.detach(w.carry, w.carryN, max)
		w.carryN = have
	}
	m := takeMark{off: w.off}
	for m.blocks < len(w.carry) && m.n < max {
		b := w.carry[m.blocks]
		for m.off < b.n && m.n < max {
			dst = append(dst, sanitize(&b.ev[m.off], w.ids.next()))
			m.off++
			m.n++
		}
		if m.off == b.n {
			m.blocks++
			m.off = 0
		}
	}
	return dst, m
}

// discard consumes every queued event without converting it, and returns
// how many there were.
func (w *writer) discard() int {
	var have int
	w.carry, have = w.q.detach(w.carry, w.carryN, w.q.len())
	w.carryN = have
	m := takeMark{blocks: len(w.carry), n: w.carryN}
	w.commitTake(m, false)
	return m.n
}

// commitTake consumes the events that peek converted, into a batch
// (toJob) or not.
func (w *writer) commitTake(m takeMark, toJob bool) {
	w.emptied = append(w.emptied[:0], w.carry[:m.blocks]...)
	k := copy(w.carry, w.carry[m.blocks:])
	clear(w.carry[k:])
	w.carry = w.carry[:k]
	if k == 0 && cap(w.carry) > 64 {
		w.carry = nil
	}
	w.off = m.off
	w.carryN -= m.n
	w.taken += uint64(m.n)
	held := 0
	if toJob {
		held = m.n
	}
	w.q.consumed(m.n, held, w.emptied)
	clear(w.emptied)
}

// answerWaiters answers the flush requests whose events are all written:
// none of them is queued, in a job or in the spill file, and the spill
// file holds nothing an earlier store left.
func (w *writer) answerWaiters() {
	if len(w.waiters) == 0 {
		return
	}
	if w.sp != nil && w.sp.inherited > 0 {
		return
	}
	low := w.taken
	for _, j := range []*job{w.cur, w.next} {
		if j != nil && !j.fromSpill {
			low = min(low, j.seq)
		}
	}
	// The ranges are in the file's order, which is the order of the
	// events except for batches moved there by spillJobs.
	for _, r := range w.spillSeq {
		low = min(low, r.start)
	}
	k := 0
	for _, r := range w.waiters {
		if r.target <= low {
			r.done <- nil
		} else {
			w.waiters[k] = r
			k++
		}
	}
	clear(w.waiters[k:])
	w.waiters = w.waiters[:k]
}

// spillChunk is the number of rows per spill-file append (and fsync)
// while the writer has other work; maybeSpill appends up to maxSpillChunk
// at a time, an fsync each.
const (
	spillChunk    = 4096
	maxSpillChunk = 32_768
)

// maybeSpill moves the oldest queued events to the spill file when the
// queue passes its high-water mark (half full), whatever the cause: the
// server down, hanging, or slower than the traffic; down to a quarter.
// While Close waits on a failing server it moves everything, so that
// little is left when Close's context ends.
func (w *writer) maybeSpill() {
	if w.sp == nil || w.spillFull {
		return
	}
	low := w.q.max / 4
	if w.closing && (w.failing || w.closeSoon) {
		low = 0
	} else if w.q.len() < w.q.spillMark {
		return
	}
	if w.closing && w.failing {
		w.spillJobs()
	}
	for !w.spillFull {
		held := w.q.len()
		if held <= low || w.closing && w.closeCtx.Err() != nil {
			return
		}
		chunk := maxSpillChunk
		if w.closing {
			chunk = spillChunk // Close's deadline is checked between chunks
		}
		w.spillSome(min(held-low, chunk))
	}
}

// spillJobs moves the batches taken from the queue that wait for a
// failing server to the spill file, as maybeSpill does the queue's events
// while Close waits, so that they do not depend on giveUp's short budget
// after the deadline. A batch being sent, or one an attempt may have
// written (uncertain), stays: it must not be replayed blindly.
func (w *writer) spillJobs() {
	for _, jp := range []**job{&w.next, &w.cur} {
		j := *jp
		if j == nil || j.fromSpill || j.busy || j.uncertain || len(j.rows) == 0 || w.spillFull {
			continue
		}
		if err := w.sp.append(j.rows); err != nil {
			w.spillFull = true
			w.q.spillFull.Store(true)
			w.s.log.Error("apipool: clickhouse: cannot spill; the queue will fill", "err", err, "file", w.sp.path)
			return
		}
		if j.batch != nil {
			j.batch.Abort()
			j.batch = nil
		}
		w.pushSpill(j.seq, int64(len(j.rows)))
		w.s.spilledN.Store(w.sp.count)
		*jp = nil
		w.q.unhold(j.heldN)
		w.release(j)
	}
}

// spillSome moves up to n events from the queue to the spill file, and
// reports how many it moved.
func (w *writer) spillSome(n int) int {
	var m takeMark
	w.spillBuf, m = w.peek(n, w.spillBuf[:0])
	if m.n == 0 {
		return 0
	}
	if err := w.sp.append(w.spillBuf); err != nil {
		w.spillFull = true
		w.q.spillFull.Store(true)
		w.s.log.Error("apipool: clickhouse: cannot spill; the queue will fill", "err", err, "file", w.sp.path)
		clear(w.spillBuf)
		return 0
	}
	clear(w.spillBuf)
	if cap(w.spillBuf) > spillChunk {
		w.spillBuf = nil // an outage's buffer: not kept for good
	}
	w.pushSpill(w.taken, int64(m.n))
	w.commitTake(m, false)
	w.s.spilledN.Store(w.sp.count)
	return m.n
}

func (w *writer) pushSpill(start uint64, n int64) {
	if k := len(w.spillSeq); k > 0 && w.spillSeq[k-1].start+uint64(w.spillSeq[k-1].n) == start {
		w.spillSeq[k-1].n += n
		return
	}
	w.spillSeq = append(w.spillSeq, seqRange{start, n})
}

// finish ends a Close that wrote everything.
func (w *writer) finish() {
	w.answerWaiters()
	for _, r := range w.waiters {
		r.done <- recorder.ErrClosed
	}
	if w.sp != nil {
		w.sp.close()
	}
}

// giveUpBudget bounds the time giveUp spends moving events to the spill
// file after Close's context ended; what is left then is lost, and
// counted. So that little is left then, Close moves every queued event to
// the spill file from spillLead before its deadline (or half its time,
// when shorter) while the server has not answered.
const (
	giveUpBudget = 100 * time.Millisecond
	spillLead    = 500 * time.Millisecond
)

// giveUp ends a Close whose context ended: what is left goes to the spill
// file, or is lost. An attempt still running is left to end by itself
// (its context is canceled); its rows go to the spill file all the same.
func (w *writer) giveUp() {
	var cause error = w.closeCtx.Err()
	if w.lastErr != nil {
		cause = fmt.Errorf("%w; last error: %w", cause, w.lastErr)
	}
	deadline := time.Now().Add(giveUpBudget)
	var lost int64
	for _, j := range []*job{w.cur, w.next} {
		if j == nil || j.fromSpill {
			continue // still in the file
		}
		if w.sp == nil || w.spillFull || time.Now().After(deadline) || w.sp.append(j.rows) != nil {
			lost += int64(len(j.rows))
		}
	}
	for _, j := range []*job{w.cur, w.next} {
		if j != nil {
			w.q.unhold(j.heldN)
		}
	}
	w.cur, w.next = nil, nil
	for w.q.len() > 0 {
		if w.sp != nil && !w.spillFull && time.Now().Before(deadline) && w.spillSome(spillChunk) > 0 {
			continue
		}
		// No spill file, it is full, or the time is up: drop the rest.
		lost += int64(w.discard())
	}
	w.q.drop(dropCloseLost, uint64(lost))
	var spilled int64
	if w.sp != nil {
		spilled = w.sp.count
		w.s.spilledN.Store(spilled)
		w.sp.close()
	}
	for _, r := range w.waiters {
		r.done <- recorder.ErrClosed
	}
	if spilled+lost > 0 {
		w.closeErr = &CloseError{Spilled: spilled, Lost: lost, Err: cause}
	} else if w.closeCtx.Err() != nil {
		w.closeErr = fmt.Errorf("apipool: clickhouse: close: %w", cause)
	}
}

// errBuild marks an error building a batch.
var errBuild = errors.New("apipool: clickhouse: building a batch")

// attempt runs one attempt at j in its own goroutine: set-up, a check
// when an earlier attempt may have written the rows, building the batch,
// and, unless buildOnly, sending it.
func (s *Store) attempt(j *job, buildOnly bool) (r result) {
	r.j, r.buildOnly = j, buildOnly
	st, err := s.setup(s.ctx)
	if err != nil {
		r.err = err
		return r
	}
	rows := j.rows
	if j.uncertain {
		if st.dedup.mode == resendCheck {
			rest, err := s.checkWritten(s.ctx, st, rows, j.id)
			if err != nil {
				r.err = err
				return r
			}
			if len(rest) == 0 {
				r.written = true
				return r
			}
			if len(rest) < len(rows) {
				if j.batch != nil {
					j.batch.Abort()
					j.batch = nil
				}
				rows, r.rest = rest, rest
			}
		}
		// resendIdentical: the same block again (j.batch as it is, or
		// built anew from the same rows in the same order).
		if st.dedup.mode == resendIdentical && j.unknownStatus && s.reportOrphans(s.ctx, st, rows) {
			j.unknownStatus = false
		}
	}
	if j.batch == nil {
		b, err := s.conn.PrepareBatch(s.insertContext(st, j.id), st.insertSQL)
		if err != nil {
			r.err = s.serverError(classify(err))
			return r
		}
		if err := j.cols.append(b, rows, st.layout); err != nil {
			b.Abort()
			s.state.Store(nil)
			r.err, r.buildErr = fmt.Errorf("%w: %w", errBuild, err), true
			return r
		}
		j.batch = b
	}
	if buildOnly {
		return r
	}
	r.sent = true
	// After a failed Send, Send sends the same block again.
	if err := j.batch.Send(); err != nil {
		if ex := (*clickhouse.Exception)(nil); errors.As(err, &ex) && ex.Code == codeUnknownStatus {
			j.unknownStatus = true
		}
		err = classify(err)
		if !retryable(err) {
			// The server refused the rows: build them anew, in case the
			// table changed.
			j.batch = nil
		}
		r.err = s.serverError(err)
		return r
	}
	j.batch = nil
	return r
}

// serverError makes the store check its tables again when the server
// answered with an error rather than failing to answer.
func (s *Store) serverError(err error) error {
	if !retryable(err) {
		s.state.Store(nil)
	}
	return err
}

// columnBufs are the scratch slices a batch is built through, one per Go
// type, reused from column to column and from batch to batch: each
// column is filled from the rows and appended (clickhouse-go copies the
// values into the batch's block) before the next one reuses the slice.
// A job so keeps about 80 bytes per row of scratch, where a slice per
// column kept 280.
type columnBufs struct {
	times []time.Time
	ids   []uuid.UUID
	str   []string
	u8    []uint8
	u16   []uint16
	u32   []uint32
	i64   []int64
	f64   []float64
}

// append appends rows to b column by column, in the order of the layout's
// INSERT.
func (c *columnBufs) append(b driver.Batch, rows []row, l layout) error {
	for i, spec := range l.columns() {
		col, err := c.column(spec.name, rows, l)
		if err != nil {
			return err
		}
		if err := b.Column(i).Append(col); err != nil {
			return fmt.Errorf("column %s: %w", spec.name, err)
		}
	}
	clear(c.str) // drop the strings' references until the next batch
	return nil
}

// fill sets *buf, emptied, to f of each row, and returns it.
func fill[T any](buf *[]T, rows []row, f func(*row) T) []T {
	*buf = (*buf)[:0]
	for i := range rows {
		*buf = append(*buf, f(&rows[i]))
	}
	return *buf
}

// column returns the column name of rows, in a scratch slice of c.
func (c *columnBufs) column(name string, rows []row, l layout) (any, error) {
	str := func(f func(*row) string) []string { return fill(&c.str, rows, f) }
	u16 := func(f func(*row) uint16) []uint16 { return fill(&c.u16, rows, f) }
	i64 := func(f func(*row) int64) []int64 { return fill(&c.i64, rows, f) }
	f64 := func(f func(*row) float64) []float64 { return fill(&c.f64, rows, f) }
	switch name {
	case colEventTime:
		c.times = c.times[:0]
		for i := range rows {
			if l.time64 {
				c.times = append(c.times, time.UnixMilli(rows[i].ms).UTC())
			} else {
				c.times = append(c.times, time.Unix(rows[i].ms/1000, 0).UTC())
			}
		}
		return c.times, nil
	case colEventMS:
		return u16(func(r *row) uint16 { return uint16(r.ms % 1000) }), nil
	case colEventID:
		return fill(&c.ids, rows, func(r *row) uuid.UUID { return r.id }), nil
	case colStatusID:
		return fill(&c.u8, rows, func(r *row) uint8 { return r.statusID }), nil
	case colLatencyUS:
		return fill(&c.u32, rows, func(r *row) uint32 { return r.latencyUS }), nil
	case colKeyID:
		return str(func(r *row) string { return r.keyID }), nil
	case colKeyFingerprint:
		return str(func(r *row) string { return r.keyFP }), nil
	case colStatus:
		return str(func(r *row) string { return r.status }), nil
	case colMethod:
		return str(func(r *row) string { return r.method }), nil
	case colHost:
		return str(func(r *row) string { return r.host }), nil
	case colOperation:
		return str(func(r *row) string { return r.operation }), nil
	case colTraceID:
		return str(func(r *row) string { return r.traceID }), nil
	case colSpanID:
		return str(func(r *row) string { return r.spanID }), nil
	case colErrorType:
		return str(func(r *row) string { return r.errorType }), nil
	case colModel:
		return str(func(r *row) string { return r.model }), nil
	case colClient:
		return str(func(r *row) string { return r.client }), nil
	case colHTTPStatus:
		return u16(func(r *row) uint16 { return r.http }), nil
	case colAttempt:
		return u16(func(r *row) uint16 { return r.attempt }), nil
	case colRequestBytes:
		return i64(func(r *row) int64 { return r.reqBytes }), nil
	case colResponseBytes:
		return i64(func(r *row) int64 { return r.respBytes }), nil
	case colInputTokens:
		return i64(func(r *row) int64 { return r.inTok }), nil
	case colOutputTokens:
		return i64(func(r *row) int64 { return r.outTok }), nil
	case colCachedTokens:
		return i64(func(r *row) int64 { return r.cachedTok }), nil
	case colUnits:
		return f64(func(r *row) float64 { return r.units }), nil
	case colCost:
		return f64(func(r *row) float64 { return r.cost }), nil
	}
	return nil, fmt.Errorf("column %s: no values for it", name) // a bug: schema.go lists a column this does not fill
}
