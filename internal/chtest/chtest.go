// Package chtest runs private ClickHouse servers for tests.
//
// A server is Debian's clickhouse-server binary started on a free loopback
// port with a minimal configuration in a temporary directory: only the
// native TCP port, bound to 127.0.0.1, with data, logs and users under that
// directory. It starts in well under a second, so a test package can run
// one for all its tests (see [Main] and [Shared]) and fault tests can run
// their own (see [StartPrivate]) to stop and start it.
//
// The directory goes under [BaseDir]: /dev/shm (memory) when it is there,
// so that the many small files the server creates per insert cost no disk
// I/O and no file-system quirks; the environment variable CHTEST_DIR names
// another parent directory (a disk, to measure with one). Start removes
// the directories that servers of exited test processes left there.
//
// When the binary is missing, tests that need a server are skipped with a
// message telling how to install it, unless the environment variable CI is
// "true", in which case they fail.
package chtest

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"

	"github.com/apipool-ng/apipool/internal/testsrv"
)

// DefaultBinary is where Debian's clickhouse-server package installs the
// server. The environment variable CHTEST_CLICKHOUSE_SERVER overrides it.
const DefaultBinary = "/usr/sbin/clickhouse-server"

// InstallHint tells how to get the server binary.
const InstallHint = "install it with: apt-get update && apt-get install -y clickhouse-server " +
	"(or set CHTEST_CLICKHOUSE_SERVER to a clickhouse-server binary)"

// The servers have two users: "default", without a password, and
// PasswordUser, whose password is Password. Both may connect from
// 127.0.0.1 only.
const (
	PasswordUser = "apipool"
	Password     = "apipool-secret"
)

// StartTimeout bounds how long Start waits for a server to accept queries.
const StartTimeout = 30 * time.Second

// stopTimeout bounds how long Stop waits for a graceful exit before it
// kills the server.
const stopTimeout = 15 * time.Second

// Server is one private clickhouse-server process. Its methods are safe for
// concurrent use.
type Server struct {
	// Addr is the native protocol address, "127.0.0.1:port". It stays the
	// same across Stop and Start.
	Addr string
	// Dir holds the configuration, data and logs.
	Dir string
	// Replica is the server's {replica} macro in a Cluster; "" elsewhere.
	Replica string

	bin  string
	proc *testsrv.Process
}

// binary is where the server binary may be.
var binary = testsrv.Binary{
	Pkg:         "chtest",
	Name:        "clickhouse-server",
	Env:         "CHTEST_CLICKHOUSE_SERVER",
	Default:     DefaultBinary,
	InstallHint: InstallHint,
}

// Binary returns the path of the server binary, or an error saying how to
// install it.
func Binary() (string, error) { return binary.Path() }

// BaseDir returns the directory under which servers keep their files:
// $CHTEST_DIR when set, else /dev/shm when it is a directory (Start falls
// back to the system's temporary directory when it cannot write there),
// else the system's temporary directory.
//
// On the machines this project runs on, the temporary directory is on an
// ext4 file system where creating a file scans for recently deleted
// inodes: the server spent half its CPU time there (measured with perf
// while inserting 10,000-row batches: 4 to 7 µs per row against 2 on
// /dev/shm), more the more files were deleted in the last minutes.
func BaseDir() string {
	if d := os.Getenv("CHTEST_DIR"); d != "" {
		return d
	}
	const shm = "/dev/shm"
	if fi, err := os.Stat(shm); err == nil && fi.IsDir() {
		return shm
	}
	return os.TempDir()
}

// InCI reports whether the environment variable CI is "true", where a
// missing server is a failure rather than a reason to skip.
func InCI() bool { return testsrv.InCI() }

// Start starts a new server in a new directory under [BaseDir] and waits
// until it accepts queries. Close stops it and removes the directory.
func Start() (*Server, error) {
	bin, err := Binary()
	if err != nil {
		return nil, err
	}
	dir, err := newDir()
	if err != nil {
		return nil, err
	}
	return testsrv.OnFreePort("chtest", dir, func(port int) (*Server, error) {
		s := newServer(net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), dir, bin)
		if err := s.writeConfig(port, ""); err != nil {
			return nil, err
		}
		return s, s.Start()
	}, func(s *Server) bool {
		return s != nil && strings.Contains(s.errLogTail(), "Address already in use")
	})
}

// newDir makes a new server directory under BaseDir, recording the test
// process as its owner, after sweeping away those of exited ones.
func newDir() (string, error) {
	sweep(BaseDir())
	dir, err := os.MkdirTemp(BaseDir(), dirPrefix)
	if err != nil && os.Getenv("CHTEST_DIR") == "" {
		dir, err = os.MkdirTemp("", dirPrefix)
	}
	if err != nil {
		return "", fmt.Errorf("chtest: %w", err)
	}
	if err := os.WriteFile(filepath.Join(dir, ownerFile), []byte(strconv.Itoa(os.Getpid())), 0o644); err != nil {
		os.RemoveAll(dir)
		return "", fmt.Errorf("chtest: %w", err)
	}
	return dir, nil
}

func newServer(addr, dir, bin string) *Server {
	s := &Server{Addr: addr, Dir: dir, bin: bin}
	s.proc = &testsrv.Process{
		Pkg:         "chtest",
		Name:        "clickhouse-server",
		Addr:        addr,
		Output:      filepath.Join(dir, "stdout.log"),
		StopTimeout: stopTimeout,
		LogTail:     s.errLogTail,
	}
	return s
}

// A server's directory is named dirPrefix plus a random number, and
// holds ownerFile: the process ID of the test process that started it.
const (
	dirPrefix = "chtest-"
	ownerFile = "owner.pid"
)

// sweep removes the directories under base that servers of test
// processes that have exited left behind (a test killed before its
// cleanup ran): under /dev/shm they hold memory.
func sweep(base string) {
	entries, err := os.ReadDir(base)
	if err != nil {
		return
	}
	for _, e := range entries {
		if !e.IsDir() || !strings.HasPrefix(e.Name(), dirPrefix) {
			continue
		}
		dir := filepath.Join(base, e.Name())
		b, err := os.ReadFile(filepath.Join(dir, ownerFile))
		if err != nil {
			continue // not ours to judge: no owner recorded
		}
		if pid, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil && pid > 0 && ownerGone(pid) {
			os.RemoveAll(dir)
		}
	}
}

// writeConfig writes the server's configuration for its native port, with
// extra (XML elements) inside its root element.
func (s *Server) writeConfig(port int, extra string) error {
	p := func(name string) string { return filepath.Join(s.Dir, name) + "/" }
	config := fmt.Sprintf(`<?xml version="1.0"?>
<yandex>
    <logger>
        <level>information</level>
        <log>%[1]s/server.log</log>
        <errorlog>%[1]s/server.err.log</errorlog>
        <size>10M</size>
        <count>1</count>
        <console>0</console>
    </logger>
    <listen_host>127.0.0.1</listen_host>
    <tcp_port>%[2]d</tcp_port>
    <path>%[3]s</path>
    <tmp_path>%[4]s</tmp_path>
    <user_files_path>%[5]s</user_files_path>
    <format_schema_path>%[6]s</format_schema_path>
    <users_config>%[1]s/users.xml</users_config>
    <default_profile>default</default_profile>
    <default_database>default</default_database>
    <timezone>UTC</timezone>
    <max_concurrent_queries>100</max_concurrent_queries>
    <mark_cache_size>268435456</mark_cache_size>
    <uncompressed_cache_size>268435456</uncompressed_cache_size>
    <mlock_executable>false</mlock_executable>
%[7]s</yandex>
`, s.Dir, port, p("data"), p("tmp"), p("user_files"), p("format_schemas"), extra)
	users := fmt.Sprintf(`<?xml version="1.0"?>
<yandex>
    <profiles>
        <default>
            <max_memory_usage>2000000000</max_memory_usage>
            <!-- Idle connections check for shutdown this often (seconds):
                 the default, 10, makes a graceful stop wait that long. -->
            <poll_interval>1</poll_interval>
        </default>
    </profiles>
    <users>
        <default>
            <password></password>
            <networks><ip>127.0.0.1</ip></networks>
            <profile>default</profile>
            <quota>default</quota>
        </default>
        <%[1]s>
            <password>%[2]s</password>
            <networks><ip>127.0.0.1</ip></networks>
            <profile>default</profile>
            <quota>default</quota>
        </%[1]s>
    </users>
    <quotas>
        <default></default>
    </quotas>
</yandex>
`, PasswordUser, Password)
	if err := os.WriteFile(filepath.Join(s.Dir, "config.xml"), []byte(config), 0o644); err != nil {
		return fmt.Errorf("chtest: %w", err)
	}
	if err := os.WriteFile(filepath.Join(s.Dir, "users.xml"), []byte(users), 0o644); err != nil {
		return fmt.Errorf("chtest: %w", err)
	}
	return nil
}

// Start starts the server again after Stop, on the same port and data
// directory, and waits until it accepts queries. It is a no-op when the
// server is running.
func (s *Server) Start() error {
	return s.proc.Start(func() *exec.Cmd {
		cmd := exec.Command(s.bin, "--config-file="+filepath.Join(s.Dir, "config.xml"))
		cmd.Dir = s.Dir
		return cmd
	}, func(r *testsrv.Run) error {
		// Poll with a query until it answers, the process exits, or
		// StartTimeout passes.
		return r.WaitReady(s.ping, StartTimeout, 5*time.Millisecond, 100*time.Millisecond)
	})
}

func (s *Server) ping() error {
	c, err := net.DialTimeout("tcp", s.Addr, time.Second)
	if err != nil {
		return err
	}
	c.Close()
	conn, err := openConn(s.Addr)
	if err != nil {
		return err
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var one uint8
	return conn.QueryRow(ctx, "SELECT 1").Scan(&one)
}

// openConn opens a connection to addr for the harness's own queries.
func openConn(addr string) (clickhouse.Conn, error) {
	return clickhouse.Open(&clickhouse.Options{
		Addr:        []string{addr},
		Protocol:    clickhouse.Native,
		DialTimeout: time.Second,
		ReadTimeout: 5 * time.Second,
	})
}

// Stop stops the server gracefully (SIGTERM), killing it if it has not
// exited within 15 seconds, and waits until it has exited. Its port is
// then closed and its data kept for Start. It is a no-op when the server
// is not running.
func (s *Server) Stop() error { return s.proc.Stop() }

// Kill stops the server at once (SIGKILL), like a crash, and waits until it
// has exited.
func (s *Server) Kill() error { return s.proc.Kill() }

// Pause stops the server process where it is (SIGSTOP), like a server
// that hangs: connections stay open and new ones are accepted by the
// kernel, but nothing answers. Resume continues it. A test that pauses
// the server must resume it before stopping it (Stop's SIGTERM waits for
// a paused process to continue, then kills it after 15 seconds); Pause
// resumes it when t ends, in case.
func (s *Server) Pause(t testing.TB) error {
	t.Helper()
	t.Cleanup(func() { s.Resume() })
	return s.signal(sigStop)
}

// Resume continues a paused server (SIGCONT).
func (s *Server) Resume() error { return s.signal(sigCont) }

// signal sends sig to the server process, found by its command line.
func (s *Server) signal(sig os.Signal) error {
	if sig == nil {
		return fmt.Errorf("chtest: pausing a server needs SIGSTOP, which this system lacks")
	}
	if !s.Running() {
		return fmt.Errorf("chtest: the server is not running")
	}
	pid, err := findPID("--config-file=" + filepath.Join(s.Dir, "config.xml"))
	if err != nil {
		return err
	}
	p, err := os.FindProcess(pid)
	if err != nil {
		return fmt.Errorf("chtest: %w", err)
	}
	if err := p.Signal(sig); err != nil {
		return fmt.Errorf("chtest: signalling the server: %w", err)
	}
	return nil
}

// Running reports whether the server process is running.
func (s *Server) Running() bool { return s.proc.Running() }

// Close stops the server and removes its directory.
func (s *Server) Close() error { return s.proc.Close(s.Dir) }

// Options returns clickhouse-go options for the server as the default user.
func (s *Server) Options() *clickhouse.Options {
	return &clickhouse.Options{
		Addr:        []string{s.Addr},
		Protocol:    clickhouse.Native,
		DialTimeout: 5 * time.Second,
	}
}

// Conn opens a connection pool to the server as the default user and
// closes it when t ends.
func (s *Server) Conn(t testing.TB) clickhouse.Conn {
	t.Helper()
	conn, err := clickhouse.Open(s.Options())
	if err != nil {
		t.Fatalf("chtest: %v", err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// errLogTail returns the end of the server's error log, for messages.
func (s *Server) errLogTail() string {
	return testsrv.Tail(s.Dir, "server.err.log", "stdout.log")
}

// harness is the server Main starts for the package, and the plumbing of
// Shared and StartPrivate.
var harness = testsrv.Harness[*Server]{Pkg: "chtest", Binary: Binary, Start: Start}

// Main starts one server for the test package, runs its tests and stops
// the server. Call it from TestMain:
//
//	func TestMain(m *testing.M) { chtest.Main(m) }
//
// When the binary is missing, Main runs the tests anyway and [Shared]
// skips those that need the server, unless CI is "true": then Main fails
// at once. When the server is there but does not start, Main fails.
func Main(m *testing.M) {
	code := harness.Run(m)
	closeShared()
	os.Exit(code)
}

// Shared returns the server that Main started for the package. When there
// is none because the binary is missing, it skips t (or fails it when CI
// is "true").
func Shared(t testing.TB) *Server {
	t.Helper()
	return harness.Shared(t)
}

// StartPrivate starts a server for t alone, for tests that stop and start
// it, and closes it when t ends. It skips or fails t as Shared does when
// the binary is missing.
func StartPrivate(t testing.TB) *Server {
	t.Helper()
	return harness.StartPrivate(t, Start)
}
