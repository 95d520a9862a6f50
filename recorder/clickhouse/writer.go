package clickhouse

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

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

// writer is the store's background goroutine: it moves events from the
// queue into batches and sends them, retrying a failed batch as it is,
// spilling to the spill file while the server is down, and replaying the
// file when it is back. Events flow in order: the batch being sent, then
// the spill file, then the queue.
//
// Every field is the goroutine's own, except the channels.
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

	// carry holds the blocks detached from the queue; its events before
	// off in carry[0] are consumed, carryN are not.
	carry   []*qblock
	off     int
	carryN  int
	emptied []*qblock

	// pending is the batch being sent; batch is it prepared, when it is.
	// fromSpill says that pending was read from the spill file, up to
	// spillNext, spillInh of its rows written by an earlier store.
	pending        []row
	batch          driver.Batch
	sendDone       chan error // the result of batch.Send, sent from its goroutine
	fromSpill      bool
	spillNext      int64
	spillInh       int64
	appendFailures int
	cols           columnBufs
	spillBuf       []row

	// next is the batch after pending, prepared while pending is sent:
	// its rows are peeked, not taken, so that until pending succeeds they
	// stay queued (and spill, or give up, in their place). nextBatch is
	// nil when there is none.
	next      []row
	nextMark  takeMark
	nextBatch driver.Batch

	// taken counts this store's events consumed from the queue (into
	// pending or the spill file), settled those written (or lost); both
	// in the order the events were enqueued.
	taken, settled uint64
	waiters        []*flushReq
	// forceTo makes the writer send what is queued, without waiting for a
	// full batch, until taken reaches it: the interval ticked, or a Flush
	// came, when that many events had been enqueued.
	forceTo uint64

	failing   bool // the last attempt failed
	failures  int
	spillFull bool // the spill file refused rows; stop trying until it drains
	closing   bool
	closeCtx  context.Context

	ticker *time.Ticker
	timer  *time.Timer

	batches   atomic.Uint64 // batches written, for tests
	pipelined atomic.Uint64 // of which built while the one before was sent
}

func newWriter(s *Store, sp *spillFile) *writer {
	t := time.NewTimer(time.Hour)
	t.Stop()
	return &writer{
		s:        s,
		q:        s.q,
		sp:       sp,
		ids:      newIDGen(),
		bo:       newBackoff(s.cfg.MinBackoff, s.cfg.MaxBackoff),
		size:     s.cfg.BatchSize,
		flushCh:  make(chan *flushReq),
		sendDone: make(chan error, 1),
		closeCh:  make(chan context.Context, 1),
		done:     make(chan struct{}),
		ticker:   time.NewTicker(s.cfg.FlushInterval),
		timer:    t,
	}
}

func (w *writer) run() {
	defer close(w.done)
	defer w.ticker.Stop()
	for {
		w.answerWaiters()
		if w.closing && w.closeCtx.Err() != nil {
			w.giveUp()
			return
		}
		if len(w.pending) == 0 && !w.load() {
			if w.closing {
				w.finish()
				return
			}
			w.idle()
			continue
		}
		if err := w.send(); err != nil {
			w.dropNext()
			w.failed(err)
			w.sleep(w.bo.next())
			continue
		}
		w.sent()
		w.takeNext()
	}
}

// load fills pending from the spill file or, when it is empty, from the
// queue: a full batch, or whatever is queued when forced. It reports
// whether pending holds rows.
func (w *writer) load() bool {
	if w.sp != nil && w.sp.count > 0 {
		rows, next, inh, err := w.sp.read(w.size, w.pending[:0])
		if err != nil && len(rows) == 0 {
			w.spillCorrupt(err)
			return w.load()
		}
		w.pending, w.fromSpill, w.spillNext, w.spillInh = rows, true, next, inh
		w.s.pendingN.Store(int64(len(rows)))
		return true
	}
	held := w.q.len()
	if held == 0 || held < w.size && !w.closing && w.taken >= w.forceTo {
		return false
	}
	var m takeMark
	w.pending, m = w.peek(w.size, w.pending[:0])
	w.commitTake(m)
	w.fromSpill = false
	w.s.pendingN.Store(int64(len(w.pending)))
	return len(w.pending) > 0
}

// spillCorrupt handles a spill file that cannot be read on: the records
// from the bad one on are lost.
func (w *writer) spillCorrupt(err error) {
	lost, inh := w.sp.count, w.sp.inherited
	w.s.log.Error("apipool: clickhouse: spill file corrupt; its remaining events are lost", "err", err, "events", lost)
	w.s.setErr(err)
	w.q.dropped.Add(uint64(lost))
	w.settled += uint64(lost - inh)
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

// commitTake consumes the events that peek converted.
func (w *writer) commitTake(m takeMark) {
	w.emptied = append(w.emptied[:0], w.carry[:m.blocks]...)
	k := copy(w.carry, w.carry[m.blocks:])
	clear(w.carry[k:])
	w.carry = w.carry[:k]
	w.off = m.off
	w.carryN -= m.n
	w.taken += uint64(m.n)
	w.q.consumed(m.n, w.emptied)
	clear(w.emptied)
}

// send sends pending: the batch already prepared, or a new one.
func (w *writer) send() error {
	st, err := w.s.setup(w.s.ctx)
	if err != nil {
		return err
	}
	if w.batch == nil {
		b, err := w.s.conn.PrepareBatch(st.insertContext(w.s.ctx), st.insertSQL)
		if err != nil {
			return w.serverError(classify(err))
		}
		if err := w.cols.append(b, w.pending, st.layout); err != nil {
			b.Abort()
			return w.appendFailed(err)
		}
		w.batch = b
		w.appendFailures = 0
	}
	// After a failed Send, Send sends the same block again. While the
	// server takes it, the next batch is built.
	go func(b driver.Batch) { w.sendDone <- b.Send() }(w.batch)
	w.prepareNext(st)
	if err := <-w.sendDone; err != nil {
		err = classify(err)
		if !retryable(err) {
			// The server refused the rows: prepare them anew after the
			// backoff, in case the table changed.
			w.batch = nil
		}
		return w.serverError(err)
	}
	w.batch = nil
	return nil
}

// prepareNext builds the batch after pending, while pending is being sent,
// when the last attempt succeeded, no events wait in the spill file, and a
// full batch is queued. Its rows stay in the queue until takeNext; a batch
// that fails to build is dropped, to be built again the usual way.
func (w *writer) prepareNext(st *tableState) {
	if w.nextBatch != nil || w.failing || w.fromSpill || w.sp != nil && w.sp.count > 0 || w.q.len() < w.size {
		return
	}
	w.next, w.nextMark = w.peek(w.size, w.next[:0])
	if w.nextMark.n < w.size {
		clear(w.next)
		return
	}
	b, err := w.s.conn.PrepareBatch(st.insertContext(w.s.ctx), st.insertSQL)
	if err != nil {
		clear(w.next)
		return
	}
	if err := w.cols.append(b, w.next, st.layout); err != nil {
		b.Abort()
		clear(w.next)
		return
	}
	w.nextBatch = b
}

// takeNext makes the batch that prepareNext built the one to send, after
// pending was written.
func (w *writer) takeNext() {
	if w.nextBatch == nil {
		return
	}
	w.commitTake(w.nextMark)
	w.pipelined.Add(1)
	w.pending, w.next = w.next, w.pending[:0]
	w.batch, w.nextBatch = w.nextBatch, nil
	w.fromSpill = false
	w.s.pendingN.Store(int64(len(w.pending)))
}

// dropNext forgets the next batch after pending failed: its events stay
// queued, behind pending, and whatever the writer does while the server
// fails (spill, give up) applies to them.
func (w *writer) dropNext() {
	if w.nextBatch == nil {
		return
	}
	w.nextBatch.Abort()
	w.nextBatch = nil
	clear(w.next)
	w.next = w.next[:0]
}

// serverError makes the store check its tables again when the server
// answered with an error rather than failing to answer.
func (w *writer) serverError(err error) error {
	if !retryable(err) {
		w.s.state.Store(nil)
	}
	return err
}

// appendFailed handles a batch that the client library refused to build.
// Rows are sanitised, so this means the table changed under the store:
// check it again; after three failures in a row, drop the rows rather
// than block every later event behind them.
func (w *writer) appendFailed(err error) error {
	w.s.state.Store(nil)
	w.appendFailures++
	err = fmt.Errorf("apipool: clickhouse: building a batch: %w", err)
	if w.appendFailures < 3 {
		return err
	}
	n := len(w.pending)
	w.s.log.Error("apipool: clickhouse: dropping a batch that cannot be built", "err", err, "events", n)
	w.q.dropped.Add(uint64(n))
	w.appendFailures = 0
	w.sent() // settles the rows, as lost
	w.s.setErr(err)
	return nil
}

// sent settles pending after a successful insert.
func (w *writer) sent() {
	n := int64(len(w.pending))
	if n == 0 {
		return
	}
	if w.fromSpill {
		if err := w.sp.commit(w.spillNext, n, w.spillInh); err != nil {
			w.s.log.Error("apipool: clickhouse: spill file", "err", err)
			w.s.setErr(err)
		}
		w.settled += uint64(n - w.spillInh)
		w.s.spilledN.Store(w.sp.count)
	} else {
		w.settled += uint64(n)
	}
	w.batches.Add(1)
	w.spillFull = false
	clear(w.pending)
	w.pending = w.pending[:0]
	w.fromSpill = false
	w.s.pendingN.Store(0)
	w.bo.reset()
	if w.failing {
		w.s.log.Info("apipool: clickhouse: sending again", "failures", w.failures)
		w.failing, w.failures = false, 0
	}
	w.s.setErr(nil)
}

func (w *writer) failed(err error) {
	w.s.setErr(err)
	w.failures++
	if w.failing {
		return
	}
	w.failing = true
	if retryable(err) {
		w.s.log.Warn("apipool: clickhouse: sending a batch failed; retrying it", "err", err, "events", len(w.pending))
	} else {
		// Wrong credentials or an incompatible table: retried too, in case
		// someone fixes it, but worth a louder line.
		w.s.log.Error("apipool: clickhouse: the server refuses the batch; retrying it", "err", err, "events", len(w.pending))
	}
}

// answerWaiters answers the flush requests whose events are all written.
func (w *writer) answerWaiters() {
	if len(w.waiters) == 0 {
		return
	}
	inherited := w.sp != nil && w.sp.inherited > 0
	k := 0
	for _, r := range w.waiters {
		if r.target <= w.settled && !inherited {
			r.done <- nil
		} else {
			w.waiters[k] = r
			k++
		}
	}
	clear(w.waiters[k:])
	w.waiters = w.waiters[:k]
}

// idle waits for something to do: a full batch, the interval, a flush, a
// close.
func (w *writer) idle() {
	select {
	case <-w.q.wake:
	case <-w.ticker.C:
		w.forceTo = w.q.enqueued()
	case r := <-w.flushCh:
		w.addWaiter(r)
	case ctx := <-w.closeCh:
		w.startClosing(ctx)
	}
}

// sleep waits d after a failure, spilling when the queue fills. A flush
// request or Close ends the wait early.
func (w *writer) sleep(d time.Duration) {
	w.timer.Reset(d)
	defer w.timer.Stop()
	for {
		w.maybeSpill()
		var closeDone <-chan struct{}
		if w.closing {
			closeDone = w.closeCtx.Done()
		}
		select {
		case <-w.timer.C:
			return
		case <-w.q.wake:
		case <-w.ticker.C:
			w.forceTo = w.q.enqueued()
		case r := <-w.flushCh:
			w.addWaiter(r)
			return
		case ctx := <-w.closeCh:
			w.startClosing(ctx)
			return
		case <-closeDone:
			return
		}
	}
}

func (w *writer) addWaiter(r *flushReq) {
	w.waiters = append(w.waiters, r)
	w.forceTo = max(w.forceTo, r.target)
}

func (w *writer) startClosing(ctx context.Context) {
	w.closing, w.closeCtx = true, ctx
}

// spillChunk is the number of rows per spill-file append (and fsync).
const spillChunk = 4096

// maybeSpill moves the oldest queued events to the spill file while the
// server fails and the queue is at least half full, until a quarter is
// left.
func (w *writer) maybeSpill() {
	if w.sp == nil || !w.failing || w.spillFull || w.q.len() < w.q.spillMark {
		return
	}
	low := w.q.max / 4
	for !w.spillFull {
		held := w.q.len()
		if held <= low {
			return
		}
		w.spillSome(min(held-low, spillChunk))
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
		w.s.log.Error("apipool: clickhouse: cannot spill; the queue will fill", "err", err, "file", w.sp.path)
		clear(w.spillBuf)
		return 0
	}
	clear(w.spillBuf)
	w.commitTake(m)
	w.s.spilledN.Store(w.sp.count)
	return m.n
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

// giveUp ends a Close whose context ended: what is left goes to the spill
// file, or is lost.
func (w *writer) giveUp() {
	cause := w.s.Err()
	if cause == nil {
		cause = w.closeCtx.Err()
	}
	var lost int64
	if len(w.pending) > 0 && !w.fromSpill {
		// The batch goes first, so that it keeps its place before the
		// queue; it may land after events spilled earlier.
		if w.sp == nil || w.spillFull || w.sp.append(w.pending) != nil {
			lost += int64(len(w.pending))
		}
	}
	clear(w.pending)
	w.pending = w.pending[:0]
	w.s.pendingN.Store(0)
	for w.q.len() > 0 {
		if w.sp != nil && !w.spillFull && w.spillSome(spillChunk) > 0 {
			continue
		}
		// No spill file, or it is full: drop the rest.
		_, m := w.peek(w.q.len(), nil)
		w.commitTake(m)
		lost += int64(m.n)
	}
	w.q.dropped.Add(uint64(lost))
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
	}
}

// columnBufs are the column slices of a batch, reused from batch to batch.
type columnBufs struct {
	times                  []time.Time
	ms, http, attempt      []uint16
	ids                    []uuid.UUID
	statusID               []uint8
	latency                []uint32
	reqBytes, respBytes    []int64
	keyID, keyFP, status   []string
	method, host, op       []string
	traceID, spanID, errTy []string
	cols                   []any
}

// append appends rows to b column by column, in the order of the layout's
// INSERT.
func (c *columnBufs) append(b driver.Batch, rows []row, l layout) error {
	c.times = c.times[:0]
	c.ms, c.http, c.attempt = c.ms[:0], c.http[:0], c.attempt[:0]
	c.ids, c.statusID, c.latency = c.ids[:0], c.statusID[:0], c.latency[:0]
	c.reqBytes, c.respBytes = c.reqBytes[:0], c.respBytes[:0]
	c.keyID, c.keyFP, c.status = c.keyID[:0], c.keyFP[:0], c.status[:0]
	c.method, c.host, c.op = c.method[:0], c.host[:0], c.op[:0]
	c.traceID, c.spanID, c.errTy = c.traceID[:0], c.spanID[:0], c.errTy[:0]
	for i := range rows {
		r := &rows[i]
		if l.time64 {
			c.times = append(c.times, time.UnixMilli(r.ms).UTC())
		} else {
			c.times = append(c.times, time.Unix(r.ms/1000, 0).UTC())
			c.ms = append(c.ms, uint16(r.ms%1000))
		}
		c.ids = append(c.ids, r.id)
		c.keyID = append(c.keyID, r.keyID)
		c.keyFP = append(c.keyFP, r.keyFP)
		c.statusID = append(c.statusID, r.statusID)
		c.status = append(c.status, r.status)
		c.http = append(c.http, r.http)
		c.latency = append(c.latency, r.latencyUS)
		c.attempt = append(c.attempt, r.attempt)
		c.method = append(c.method, r.method)
		c.host = append(c.host, r.host)
		c.op = append(c.op, r.operation)
		c.reqBytes = append(c.reqBytes, r.reqBytes)
		c.respBytes = append(c.respBytes, r.respBytes)
		c.traceID = append(c.traceID, r.traceID)
		c.spanID = append(c.spanID, r.spanID)
		c.errTy = append(c.errTy, r.errorType)
	}
	c.cols = append(c.cols[:0], c.times)
	if !l.time64 {
		c.cols = append(c.cols, c.ms)
	}
	c.cols = append(c.cols, c.ids, c.keyID, c.keyFP, c.statusID, c.status, c.http, c.latency, c.attempt,
		c.method, c.host, c.op, c.reqBytes, c.respBytes, c.traceID, c.spanID, c.errTy)
	if len(c.cols) != len(l.columns()) {
		return errors.New("column count mismatch") // a bug: the lists above and in schema.go differ
	}
	for i, col := range c.cols {
		if err := b.Column(i).Append(col); err != nil {
			return fmt.Errorf("column %s: %w", l.columns()[i].name, err)
		}
	}
	// Drop the strings' references until the next batch.
	for _, s := range [][]string{c.keyID, c.keyFP, c.status, c.method, c.host, c.op, c.traceID, c.spanID, c.errTy} {
		clear(s)
	}
	clear(c.cols)
	return nil
}
