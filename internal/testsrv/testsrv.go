// Package testsrv is what the harnesses that run private servers for tests
// (internal/chtest, redistest, zktest, pgtest, mysqltest) share: finding
// the server binary, a free loopback port, a server process that starts,
// answers, stops and starts again, the test plumbing of Main, Shared and
// StartPrivate, and (Databases) a database of its own for each test on a
// SQL server.
//
// When the binary is missing, tests that need a server are skipped with a
// message telling how to install it, unless the environment variable CI is
// "true", in which case they fail.
package testsrv

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Binary says where a server binary may be.
type Binary struct {
	Pkg         string // the harness, which starts the messages: "chtest"
	Name        string // the binary's name, looked up on PATH: "clickhouse-server"
	Env         string // the environment variable that names another binary
	Default     string // where Debian's package installs it
	InstallHint string // how to get it
}

// Path returns the path of the binary: the one $Env names, else Default,
// else Name on PATH; or an error saying how to install it.
func (b Binary) Path() (string, error) {
	if p := os.Getenv(b.Env); p != "" {
		if _, err := os.Stat(p); err != nil {
			return "", fmt.Errorf("%s: %s=%s: %w; unset it to use %s, or %s", b.Pkg, b.Env, p, err, b.Default, b.InstallHint)
		}
		return p, nil
	}
	if _, err := os.Stat(b.Default); err == nil {
		return b.Default, nil
	}
	if p, err := exec.LookPath(b.Name); err == nil {
		return p, nil
	}
	return "", fmt.Errorf("%s: %s not found at %s nor on PATH; %s", b.Pkg, b.Name, b.Default, b.InstallHint)
}

// InCI reports whether the environment variable CI is "true", where a
// missing server is a failure rather than a reason to skip.
func InCI() bool { return os.Getenv("CI") == "true" }

// FreePort returns a loopback TCP port that is free now.
func FreePort(pkg string) (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("%s: finding a free port: %w", pkg, err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// OnFreePort calls start with a free port until it succeeds. The port is
// free when chosen, but another process may take it before the server
// binds it: when start fails and taken says the port was taken, it tries
// another, three ports in all. When it fails, it removes dir, the
// server's directory.
func OnFreePort[S any](pkg, dir string, start func(port int) (S, error), taken func(S) bool) (S, error) {
	for try := 0; ; try++ {
		port, err := FreePort(pkg)
		if err != nil {
			os.RemoveAll(dir)
			var none S
			return none, err
		}
		s, err := start(port)
		if err == nil {
			return s, nil
		}
		if try == 2 || !taken(s) {
			os.RemoveAll(dir)
			var none S
			return none, err
		}
	}
}

// Tail returns the ends (2,000 bytes each at the most) of the named files
// under dir that can be read, one after the other, for messages.
func Tail(dir string, names ...string) string {
	var b []byte
	for _, name := range names {
		data, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			continue
		}
		if len(data) > 2000 {
			data = data[len(data)-2000:]
		}
		b = append(b, data...)
	}
	return string(bytes.TrimSpace(b))
}

// Process is a server process that starts, stops and starts again, one
// run at a time. Its methods are safe for concurrent use.
type Process struct {
	Pkg  string // the harness, which starts the messages: "chtest"
	Name string // the server's name, for messages: "clickhouse-server"
	Addr string // where the server answers, for messages
	// Output, when not "", is the file the process's standard output and
	// error are appended to.
	Output string
	// StopTimeout bounds how long Stop waits for a graceful exit before
	// it kills the process.
	StopTimeout time.Duration
	// LogTail returns the end of the server's logs, for messages.
	LogTail func() string
	// StopSignal is the signal Stop sends. Default: SIGTERM.
	StopSignal syscall.Signal

	mu  sync.Mutex
	run *Run // the running process, or nil
}

// Run is one run of the process.
type Run struct {
	p      *Process
	cmd    *exec.Cmd
	exited chan struct{} // closed when cmd has exited
	err    error         // cmd's exit status, set before exited is closed
}

// Start starts the command cmd returns and calls ready, which waits until
// the server serves; when ready fails, Start kills the process, waits until
// it has exited and returns ready's error. It is a no-op when the process
// is running. The kernel kills the process when the test process dies
// (on Linux), so that a crashed or interrupted test leaves no server
// behind.
func (p *Process) Start(cmd func() *exec.Cmd, ready func(*Run) error) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.run != nil {
		return nil
	}
	c := cmd()
	if p.Output != "" {
		out, err := os.OpenFile(p.Output, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
		if err != nil {
			return fmt.Errorf("%s: %w", p.Pkg, err)
		}
		defer out.Close()
		c.Stdout, c.Stderr = out, out
	}
	setProcAttr(c)
	if err := c.Start(); err != nil {
		return fmt.Errorf("%s: starting %s: %w", p.Pkg, c.Args[0], err)
	}
	r := &Run{p: p, cmd: c, exited: make(chan struct{})}
	go func() {
		r.err = c.Wait()
		close(r.exited)
	}()
	if err := ready(r); err != nil {
		c.Process.Kill()
		<-r.exited
		return err
	}
	p.run = r
	return nil
}

// Exited is closed when the run's process has exited.
func (r *Run) Exited() <-chan struct{} { return r.exited }

// ExitError is the error to return when the process has exited during
// start-up: its exit status and the end of its logs.
func (r *Run) ExitError() error {
	return fmt.Errorf("%s: %s exited during start-up: %v\n%s", r.p.Pkg, r.p.Name, r.err, r.p.LogTail())
}

// WaitReady calls ping until it succeeds, the process exits, or timeout
// passes, pausing first between calls, then twice as long each time up to
// most.
func (r *Run) WaitReady(ping func() error, timeout, first, most time.Duration) error {
	deadline := time.Now().Add(timeout)
	var last error
	for delay := first; ; delay = min(2*delay, most) {
		if last = ping(); last == nil {
			return nil
		}
		select {
		case <-r.exited:
			return r.ExitError()
		case <-time.After(delay):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s: %s did not answer at %s within %v: %v\n%s", r.p.Pkg, r.p.Name, r.p.Addr, timeout, last, r.p.LogTail())
		}
	}
}

// Stop stops the process gracefully (StopSignal, SIGTERM by default), killing it if it has not
// exited within StopTimeout, and waits until it has exited. It is a no-op
// when the process is not running.
func (p *Process) Stop() error {
	if p.StopSignal != 0 {
		return p.stop(p.StopSignal)
	}
	return p.stop(syscall.SIGTERM)
}

// Kill stops the process at once (SIGKILL), like a crash, and waits until
// it has exited.
func (p *Process) Kill() error {
	return p.stop(syscall.SIGKILL)
}

func (p *Process) stop(sig syscall.Signal) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	r := p.run
	if r == nil {
		return nil
	}
	if err := r.cmd.Process.Signal(sig); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("%s: signalling %s: %w", p.Pkg, p.Name, err)
	}
	if sig == syscall.SIGKILL {
		killGroup(r.cmd.Process.Pid) // a crash takes the server's children too
	}
	timer := time.NewTimer(p.StopTimeout)
	defer timer.Stop()
	select {
	case <-r.exited:
	case <-timer.C:
		r.cmd.Process.Kill()
		killGroup(r.cmd.Process.Pid)
		<-r.exited
	}
	p.run = nil
	return nil
}

// Running reports whether the process is running.
func (p *Process) Running() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.run != nil
}

// Close stops the process and removes dir, the server's directory.
func (p *Process) Close(dir string) error {
	err := p.Stop()
	if rerr := os.RemoveAll(dir); err == nil {
		err = rerr
	}
	return err
}

// Harness is a harness's test plumbing: the server Main starts for a test
// package and Shared hands its tests, and the servers StartPrivate starts
// for one test.
type Harness[S interface{ Close() error }] struct {
	Pkg    string                 // the harness: "chtest"
	Binary func() (string, error) // the server binary, or why there is none
	Start  func() (S, error)      // starts the shared server

	srv     S
	started bool
	skip    string // why tests that need a server skip, when there is none
}

// Main starts one server for the test package, runs its tests and stops
// the server. When the binary is missing, Main runs the tests anyway and
// Shared skips those that need the server, unless CI is "true": then Main
// fails at once. When the server is there but does not start, Main fails.
func (h *Harness[S]) Main(m *testing.M) {
	os.Exit(h.Run(m))
}

// Run is Main without the exit: it returns the exit code, for a TestMain
// that has more to stop afterwards.
func (h *Harness[S]) Run(m *testing.M) int {
	if _, err := h.Binary(); err != nil {
		if InCI() {
			fmt.Fprintf(os.Stderr, "FAIL: %v (CI=true, so a missing server is an error)\n", err)
			return 1
		}
		h.skip = err.Error()
		return m.Run()
	}
	srv, err := h.Start()
	if err != nil {
		fmt.Fprintf(os.Stderr, "FAIL: %v\n", err)
		return 1
	}
	h.srv, h.started = srv, true
	defer srv.Close()
	return m.Run()
}

// Shared returns the server that Main started. When there is none because
// the binary is missing, it skips t (or fails it when CI is "true").
func (h *Harness[S]) Shared(t testing.TB) S {
	t.Helper()
	if h.started {
		return h.srv
	}
	if h.skip == "" {
		t.Fatalf("%s: no server: call %[1]s.Main from TestMain", h.Pkg)
	}
	unavailable(t, h.skip)
	var none S
	return none
}

// StartPrivate starts a server with start for t alone and closes it when
// t ends. It skips or fails t as Shared does when the binary is missing.
func (h *Harness[S]) StartPrivate(t testing.TB, start func() (S, error)) S {
	t.Helper()
	if _, err := h.Binary(); err != nil {
		unavailable(t, err.Error())
	}
	srv, err := start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := srv.Close(); err != nil {
			t.Errorf("%s: closing server: %v", h.Pkg, err)
		}
	})
	return srv
}

// unavailable skips t for why, the server binary missing, or fails it when
// CI is "true".
func unavailable(t testing.TB, why string) {
	t.Helper()
	if InCI() {
		t.Fatalf("%s (CI=true, so a missing server is an error)", why)
	}
	t.Skip(why)
}
