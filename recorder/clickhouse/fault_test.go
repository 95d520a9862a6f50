package clickhouse_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/apipool-ng/apipool/internal/chtest"
	"github.com/apipool-ng/apipool/recorder/clickhouse"
)

// The fault tests run a private server, record a numbered stream of
// events (event(i) has RequestBytes i) at a steady rate while they kill,
// stop or slow the server, and check after Close that every event
// recorded is in the table exactly once, or counted as dropped for a
// reason the configuration explains. They assert counts, never timings;
// the times they log (from the server's return to the first batch
// written) are for the README.

// faultRate is the rate of the fault tests' streams, in events per
// second: 25,000 by default (10,000 under the race detector), what this
// two-core machine sustains beside the server with other work running
// while the writer also replays what it spilled; APIPOOL_FAULT_RATE sets
// another.
var faultRate = func() int {
	if n, err := strconv.Atoi(os.Getenv("APIPOOL_FAULT_RATE")); err == nil && n > 0 {
		return n
	}
	if raceEnabled {
		return 10_000
	}
	return 25_000
}()

// stream records event(0), event(1), ... at rate per second from a
// goroutine until stop.
type stream struct {
	n    atomic.Int64
	quit chan struct{}
	done chan struct{}
}

func startStream(s *clickhouse.Store, rate int) *stream {
	st := &stream{quit: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(st.done)
		start := time.Now()
		i := 0
		for {
			select {
			case <-st.quit:
				return
			default:
			}
			want := int(time.Since(start).Seconds() * float64(rate))
			for ; i < want; i++ {
				s.Record(event(i))
				st.n.Store(int64(i + 1))
			}
			time.Sleep(time.Millisecond)
		}
	}()
	return st
}

// stop stops the stream and returns how many events it recorded.
func (st *stream) stop() int {
	close(st.quit)
	<-st.done
	return int(st.n.Load())
}

// faultConfig is the fault tests' configuration: a spill file, the Drop
// policy, a queue of 1.2 seconds at faultRate (30,000 events by default;
// the default queue holds 1.3 seconds at 75,000 events/s), so that faults
// outlast it, and batches of 5,000.
func faultConfig(t *testing.T, srv *chtest.Server) clickhouse.Config {
	cfg := testConfig(t, srv)
	cfg.SpillDir = t.TempDir()
	cfg.QueueSize = faultRate * 6 / 5
	cfg.BatchSize = 5000
	cfg.MaxBackoff = 10 * time.Second // the default: probes, not the backoff, find the server back
	logs := &lockedBuffer{}
	cfg.Logger = slog.New(slog.NewTextHandler(logs, nil))
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("the store's log:\n%s", logs.String())
		}
	})
	return cfg
}

// checkStream closes s and checks that each of the n events recorded is
// in the table once, or dropped for want reasons only; it logs the
// figures.
func checkStream(t *testing.T, srv *chtest.Server, s *clickhouse.Store, table string, n int, allowQueueFull bool) tally {
	t.Helper()
	if err := s.Close(ctxT(t, 90*time.Second)); err != nil {
		t.Fatalf("Close: %v", err)
	}
	got := countStream(t, srv, table)
	d := s.Drops()
	t.Logf("recorded %d: %d rows, %d distinct ids; dropped %+v; %d batches found written before a resend",
		n, got.rows, got.ids, d, clickhouse.Checks(s))
	if got.rows != got.ids || got.rows != got.distinct {
		t.Errorf("%d rows for %d distinct ids and %d distinct events: events written twice", got.rows, got.ids, got.distinct)
	}
	if got.rows+s.Dropped() != uint64(n) || got.rows > 0 && got.max >= int64(n) {
		t.Errorf("%d rows + %d dropped != %d recorded", got.rows, s.Dropped(), n)
	}
	if d.SpillFull+d.Closed+d.CloseLost+d.Corrupt+d.Unbuildable != 0 || !allowQueueFull && d.QueueFull != 0 {
		t.Errorf("drops %+v: with a spill file of room, only a queue the spill file could not keep up with may drop", d)
	}
	return got
}

// logResume waits until the store writes a batch after the fault, and
// logs how long that was after back, when the server answered again (a
// Start returns some time after the server first answers, so the store
// may resume before: logged as negative).
func logResume(t *testing.T, s *clickhouse.Store, faultAt, back time.Time) {
	t.Helper()
	waitFor(t, "a batch written after the fault", func() bool { return clickhouse.RecoveredAt(s).After(faultAt) })
	t.Logf("sending resumed %v after the server was back", clickhouse.RecoveredAt(s).Sub(back).Round(time.Millisecond))
}

// TestFaultServerKilled kills the server (SIGKILL) for two seconds while
// events stream in. A kill cuts inserts off mid-way: the writer checks
// for such a batch before sending it again.
func TestFaultServerKilled(t *testing.T) {
	srv := chtest.StartPrivate(t)
	cfg := faultConfig(t, srv)
	s := newStore(t, cfg)
	st := startStream(s, faultRate)
	time.Sleep(time.Second)
	faultAt := time.Now()
	if err := srv.Kill(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(2 * time.Second)
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	logResume(t, s, faultAt, time.Now())
	time.Sleep(time.Second)
	n := st.stop()
	checkStream(t, srv, s, cfg.Table, n, true)
}

// TestFaultServerPaused stops the server (SIGSTOP) for three seconds:
// connections hang rather than fail. Events spill while the insert in
// flight hangs; with a ReadTimeout of one second the insert times out,
// and the server, continued, commits it later: the writer waits for it to
// end and finds it written rather than send it twice.
func TestFaultServerPaused(t *testing.T) {
	srv := chtest.StartPrivate(t)
	cfg := faultConfig(t, srv)
	cfg.ReadTimeout = time.Second
	s := newStore(t, cfg)
	st := startStream(s, faultRate)
	time.Sleep(time.Second)
	faultAt := time.Now()
	if err := srv.Pause(t); err != nil {
		t.Fatal(err)
	}
	time.Sleep(3 * time.Second)
	if s.Spilled() == 0 {
		t.Errorf("nothing spilled while the server hung")
	}
	if err := srv.Resume(); err != nil {
		t.Fatal(err)
	}
	logResume(t, s, faultAt, time.Now())
	time.Sleep(time.Second)
	n := st.stop()
	checkStream(t, srv, s, cfg.Table, n, true)
}

// TestFaultServerSlow stops the server for 300 ms six times, 300 ms
// apart: a server slower than the traffic.
func TestFaultServerSlow(t *testing.T) {
	srv := chtest.StartPrivate(t)
	cfg := faultConfig(t, srv)
	cfg.ReadTimeout = time.Second
	s := newStore(t, cfg)
	st := startStream(s, faultRate)
	time.Sleep(500 * time.Millisecond)
	for range 6 {
		if err := srv.Pause(t); err != nil {
			t.Fatal(err)
		}
		time.Sleep(300 * time.Millisecond)
		if err := srv.Resume(); err != nil {
			t.Fatal(err)
		}
		time.Sleep(300 * time.Millisecond)
	}
	n := st.stop()
	checkStream(t, srv, s, cfg.Table, n, true)
}

// TestFaultRestartDuringReplay kills the server again while the writer
// replays what it spilled during the first outage.
func TestFaultRestartDuringReplay(t *testing.T) {
	srv := chtest.StartPrivate(t)
	cfg := faultConfig(t, srv)
	s := newStore(t, cfg)
	st := startStream(s, faultRate)
	time.Sleep(500 * time.Millisecond)
	if err := srv.Kill(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(2 * time.Second)
	spilled := s.Spilled()
	faultAt := time.Now()
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the replay to start", func() bool { return clickhouse.RecoveredAt(s).After(faultAt) })
	if err := srv.Kill(); err != nil {
		t.Fatal(err)
	}
	t.Logf("killed again with %d of %d spilled events left to replay", s.Spilled(), spilled)
	time.Sleep(time.Second)
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Second)
	n := st.stop()
	checkStream(t, srv, s, cfg.Table, n, true)
}

// TestFaultNoSpillDropsCounted: without a spill file, an outage longer
// than the queue drops events, each counted as QueueFull, none written
// twice.
func TestFaultNoSpillDropsCounted(t *testing.T) {
	srv := chtest.StartPrivate(t)
	cfg := faultConfig(t, srv)
	cfg.SpillDir = ""
	cfg.QueueSize, cfg.BatchSize = 3000, 1000 // holds 5,000 events, a fraction of the outage's
	s := newStore(t, cfg)
	st := startStream(s, faultRate)
	time.Sleep(500 * time.Millisecond)
	if err := srv.Kill(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(1500 * time.Millisecond)
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(500 * time.Millisecond)
	n := st.stop()
	checkStream(t, srv, s, cfg.Table, n, true)
	if s.Drops().QueueFull == 0 {
		t.Errorf("no drops: the outage was shorter than the queue holds")
	}
}

// TestCloseBoundedWhileDown: Close with a server that does not answer
// returns when its context ends (the writer spills from half a second
// before), its error matches context.DeadlineExceeded, and it counts the
// events it kept and lost: each is one or the other. How many the spill
// file takes in the time depends on the machine (all of them here
// without the race detector).
func TestCloseBoundedWhileDown(t *testing.T) {
	srv := chtest.StartPrivate(t)
	for _, spill := range []bool{false, true} {
		cfg := testConfig(t, srv)
		cfg.QueueSize = 200_000
		cfg.BatchSize = 10_000
		if spill {
			cfg.SpillDir = t.TempDir()
		}
		s, err := clickhouse.New(ctxT(t, 30*time.Second), cfg)
		if err != nil {
			t.Fatal(err)
		}
		if err := srv.Pause(t); err != nil {
			t.Fatal(err)
		}
		const n = 50_000
		for i := range n {
			s.Record(event(i))
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		start := time.Now()
		err = s.Close(ctx)
		took := time.Since(start)
		cancel()
		var ce *clickhouse.CloseError
		if !errors.As(err, &ce) || !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("Close while the server hangs: %v, want a *CloseError matching context.DeadlineExceeded", err)
		}
		t.Logf("spill %v: Close took %v on a 1 s context: %d spilled, %d lost", spill, took.Round(time.Millisecond), ce.Spilled, ce.Lost)
		if ce.Spilled+ce.Lost != n || s.Dropped() != uint64(ce.Lost) || s.Drops().CloseLost != uint64(ce.Lost) || !spill && ce.Spilled != 0 {
			t.Errorf("CloseError %+v, Drops %+v; want each of %d events kept or lost, the lost counted", ce, s.Drops(), n)
		}
		if err := srv.Resume(); err != nil {
			t.Fatal(err)
		}
	}
}

// crashChildEnv makes the test binary a child process of TestCrash*: it
// opens a store from the environment and works until killed.
const crashChildEnv = "APIPOOL_CHTEST_CRASH_CHILD"

// crashChild is the child's body: mode "replay" replays the spill file;
// mode "send" records events from CRASH_FROM on, as fast as the store
// takes them while its spill file holds at most crashSpillMax. It prints
// "ready" once its store is open, and "working" once the store has
// written a batch (or, replaying, found nothing left to replay), so that
// the parent kills it in the middle of its work however slowly the
// machine runs.
func crashChild() {
	cfg := clickhouse.Config{
		Addrs:         []string{os.Getenv("CRASH_ADDR")},
		Table:         os.Getenv("CRASH_TABLE"),
		SpillDir:      os.Getenv("CRASH_SPILL"),
		BatchSize:     1000,
		QueueSize:     8000,
		OnFull:        clickhouse.Block,
		FlushInterval: 20 * time.Millisecond,
		MinBackoff:    10 * time.Millisecond,
		MaxBackoff:    100 * time.Millisecond,
	}
	s, err := clickhouse.New(context.Background(), cfg)
	if err != nil {
		fmt.Println("error:", err)
		os.Exit(2)
	}
	fmt.Println("ready")
	mode := os.Getenv(crashChildEnv)
	go func() {
		for clickhouse.Batches(s) == 0 && (mode == "send" || s.Spilled() > 0) {
			time.Sleep(time.Millisecond)
		}
		fmt.Println("working")
	}()
	if mode == "send" {
		from, _ := strconv.Atoi(os.Getenv("CRASH_FROM"))
		for i := from; ; i++ {
			for s.Spilled() > crashSpillMax {
				time.Sleep(time.Millisecond)
			}
			s.Record(event(i))
		}
	}
	time.Sleep(time.Hour) // killed before
	os.Exit(3)
}

// crashSpillMax bounds the backlog of a "send" child, which records
// without end: it waits while its spill file holds more, so that the
// store after the children replays their backlogs in well under
// flushWait on a loaded machine (a child recording as fast as its store
// took events spilled 300,000 before its first batch was written, at a
// load of 18 on 2 cores).
const crashSpillMax = 20_000

// flushWait bounds the final store's Flush in the crash tests: a failure
// guard, not a timing target.
const flushWait = 3 * time.Minute

// childWait bounds the wait for a child's lines: a child that prints
// nothing in that time is stuck, and the test fails rather than hang.
const childWait = 2 * time.Minute

// runChild starts a child in mode, waits until its store has written a
// batch (see crashChild), lets it work for d more and kills it (SIGKILL).
func runChild(t *testing.T, mode string, srv *chtest.Server, table, spill string, from int, d time.Duration) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), crashChildEnv+"="+mode, "CRASH_ADDR="+srv.Addr, "CRASH_TABLE="+table,
		"CRASH_SPILL="+spill, "CRASH_FROM="+strconv.Itoa(from))
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Wait()
	defer cmd.Process.Kill()
	lines := make(chan string, 2)
	go func() {
		defer close(lines)
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			lines <- sc.Text()
		}
	}()
	timeout := time.After(childWait)
	for _, want := range []string{"ready", "working"} {
		select {
		case line := <-lines:
			if line != want {
				t.Fatalf("child: %q, want %q", line, want)
			}
		case <-timeout:
			t.Fatalf("child: no %q line after %v", want, childWait)
		}
	}
	time.Sleep(d)
	if err := cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
}

// spillWhileDown records n events into a store whose server does not
// answer, so that they all end in the spill file.
func spillWhileDown(t *testing.T, table, spill string, n int) {
	t.Helper()
	l := deadAddrT(t)
	cfg := clickhouse.Config{Addrs: []string{l}, Table: table, SpillDir: spill, AllowUnavailable: true,
		BatchSize: 1000, QueueSize: 4000, OnFull: clickhouse.Block, DialTimeout: 100 * time.Millisecond}
	s, err := clickhouse.New(ctxT(t, 30*time.Second), cfg)
	if err != nil {
		t.Fatal(err)
	}
	for i := range n {
		s.Record(event(i))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	var ce *clickhouse.CloseError
	if err := s.Close(ctx); !errors.As(err, &ce) || ce.Spilled != int64(n) {
		t.Fatalf("Close with the server down: %v, want %d events spilled", err, n)
	}
}

// TestCloseSpillsWaitingBatch: while Close waits on a server that does not
// answer, the batch the writer took from the queue goes to the spill file
// with the queued events, before Close's context ends, rather than in the
// short budget after it (which a starved process can miss, losing the
// batch).
func TestCloseSpillsWaitingBatch(t *testing.T) {
	cfg := clickhouse.Config{Addrs: []string{deadAddrT(t)}, Table: tableName(t), SpillDir: t.TempDir(), AllowUnavailable: true,
		BatchSize: 1000, QueueSize: 4000, OnFull: clickhouse.Block, DialTimeout: 100 * time.Millisecond}
	s, err := clickhouse.New(ctxT(t, 30*time.Second), cfg)
	if err != nil {
		t.Fatal(err)
	}
	const n = 2500 // a batch taken, 1,500 queued
	for i := range n {
		s.Record(event(i))
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	closed := make(chan error, 1)
	go func() { closed <- s.Close(ctx) }()
	waitFor(t, "every event in the spill file while Close waits", func() bool { return s.Spilled() == n })
	if q := s.QueueLen(); q != 0 {
		t.Errorf("%d events still in memory with all %d in the spill file", q, n)
	}
	cancel()
	var ce *clickhouse.CloseError
	if err := <-closed; !errors.As(err, &ce) || ce.Spilled != n || ce.Lost != 0 {
		t.Fatalf("Close: %v, want %d events spilled, none lost", err, n)
	}
}

// TestCrashDuringReplay kills the recording process (SIGKILL) at random
// points while it replays a spill file, three times; a fourth store
// replays the rest. Each spilled event is in the table exactly once: the
// spill file marks a batch in flight before its insert, and the next
// store checks for such a batch before sending it.
func TestCrashDuringReplay(t *testing.T) {
	srv := chtest.StartPrivate(t)
	table, spill := tableName(t), t.TempDir()
	const n = 40_000
	spillWhileDown(t, table, spill, n)
	for k := range 3 {
		d := time.Duration(rand.IntN(400)) * time.Millisecond
		runChild(t, "replay", srv, table, spill, 0, d)
		t.Logf("child %d killed after %v: %d rows written", k, d, countStream(t, srv, table).rows)
	}
	cfg := testConfig(t, srv)
	cfg.Table, cfg.SpillDir = table, spill
	s := newStore(t, cfg)
	if err := s.Flush(ctxT(t, flushWait)); err != nil {
		t.Fatal(err)
	}
	wantExactlyOnce(t, srv, table, n)
}

// TestCrashDuringSend kills the recording process at random points while
// it records and sends (spilling when the queue passes half full), three
// times, each child going on from where the last began plus a million;
// then a store replays what the children spilled. Events still in memory
// at a kill are lost; none is written twice.
func TestCrashDuringSend(t *testing.T) {
	srv := chtest.StartPrivate(t)
	table, spill := tableName(t), t.TempDir()
	for k := range 3 {
		d := time.Duration(200+rand.IntN(600)) * time.Millisecond
		runChild(t, "send", srv, table, spill, k*1_000_000, d)
	}
	cfg := testConfig(t, srv)
	cfg.Table, cfg.SpillDir = table, spill
	s := newStore(t, cfg)
	if err := s.Flush(ctxT(t, flushWait)); err != nil {
		t.Fatal(err)
	}
	got := countStream(t, srv, table)
	t.Logf("%d rows from three killed processes", got.rows)
	if got.rows == 0 || got.rows != got.ids || got.rows != got.distinct {
		t.Fatalf("table holds %+v: events written twice (or none)", got)
	}
}

func deadAddrT(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}
