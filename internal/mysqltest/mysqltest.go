// Package mysqltest runs private MariaDB servers for tests.
//
// A server is Debian's mariadbd, its data directory made by
// mariadb-install-db in a new temporary directory, listening on a free
// loopback port and on a Unix socket in that directory, without grant
// tables (any user connects, with any password) and with durability
// relaxed (the data is thrown away). As root it runs as root
// (--user=root).
//
// A test package runs one server for all its tests (see [Main] and
// [Shared]); each test takes a database of its own ([Server.NewDatabase]);
// fault tests run their own server ([StartPrivate]) to stop and start it.
//
// When the binaries are missing, tests that need a server are skipped with
// a message telling how to install them, unless the environment variable
// CI is "true", in which case they fail.
package mysqltest

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	_ "github.com/go-sql-driver/mysql" // the "mysql" driver

	"github.com/apipool-ng/apipool/internal/testsrv"
)

// DefaultBinary is where Debian's mariadb-server package installs the
// server; mariadb-install-db is beside it in /usr/bin. The environment
// variable MYSQLTEST_MARIADBD overrides it.
const DefaultBinary = "/usr/sbin/mariadbd"

// InstallHint tells how to get the server.
const InstallHint = "install it with: apt-get update && apt-get install -y mariadb-server " +
	"(or set MYSQLTEST_MARIADBD to a mariadbd binary)"

// StartTimeout bounds how long Start waits for the server to answer.
const StartTimeout = 60 * time.Second

var binary = testsrv.Binary{
	Pkg:         "mysqltest",
	Name:        "mariadbd",
	Env:         "MYSQLTEST_MARIADBD",
	Default:     DefaultBinary,
	InstallHint: InstallHint,
}

// Binary returns the path of mariadbd, or an error saying how to install
// it.
func Binary() (string, error) {
	p, err := binary.Path()
	if err != nil {
		return "", err
	}
	if _, err := installDB(); err != nil {
		return "", err
	}
	return p, nil
}

func installDB() (string, error) {
	if p, err := exec.LookPath("mariadb-install-db"); err == nil {
		return p, nil
	}
	if _, err := os.Stat("/usr/bin/mariadb-install-db"); err == nil {
		return "/usr/bin/mariadb-install-db", nil
	}
	return "", fmt.Errorf("mysqltest: mariadb-install-db not found; %s", InstallHint)
}

// Server is one private MariaDB server. Its methods are safe for
// concurrent use.
type Server struct {
	// Addr is "127.0.0.1:port". It stays the same across Stop and Start.
	Addr string
	// Dir is the server's directory: its data (Dir/data), socket and log.
	Dir string

	bin  string
	port int
	proc *testsrv.Process

	// NewDatabase and Database make a test's own database; Ping asks the
	// server to answer.
	testsrv.Databases
}

// Start makes a new data directory in a new temporary directory, starts
// the server and waits until it answers. Close stops it and removes the
// directory.
func Start() (*Server, error) {
	bin, err := Binary()
	if err != nil {
		return nil, err
	}
	inst, err := installDB()
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "mysqltest-")
	if err != nil {
		return nil, fmt.Errorf("mysqltest: %w", err)
	}
	// Each server has a temporary directory of its own: a server starting
	// removes the #sql* files it finds in its tmpdir, which in a shared
	// /tmp are another server's (mariadb-install-db failed in CI with
	// "Error on delete of '/tmp/#sql-temptable-...'" while another test
	// started one).
	tmp := filepath.Join(dir, "tmp")
	if err := os.Mkdir(tmp, 0o700); err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("mysqltest: %w", err)
	}
	args := []string{"--no-defaults", "--datadir=" + filepath.Join(dir, "data"), "--tmpdir=" + tmp, "--skip-test-db",
		"--auth-root-authentication-method=normal", "--skip-name-resolve"}
	if os.Geteuid() == 0 {
		args = append(args, "--user=root")
	}
	if out, err := exec.Command(inst, args...).CombinedOutput(); err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("mysqltest: mariadb-install-db: %v\n%s", err, out)
	}
	return testsrv.OnFreePort("mysqltest", dir, func(port int) (*Server, error) {
		s := newServer(dir, bin, port)
		return s, s.Start()
	}, func(s *Server) bool {
		return strings.Contains(s.logTail(), "Address already in use")
	})
}

func newServer(dir, bin string, port int) *Server {
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	s := &Server{Addr: addr, Dir: dir, bin: bin, port: port}
	s.Databases = testsrv.Databases{Pkg: "mysqltest", Driver: "mysql", DSNOf: s.DSN, Admin: ""}
	s.proc = &testsrv.Process{
		Pkg:         "mysqltest",
		Name:        "mariadbd",
		Addr:        addr,
		Output:      filepath.Join(dir, "mariadbd.log"),
		StopTimeout: 30 * time.Second,
		LogTail:     s.logTail,
	}
	return s
}

// Start starts the server again after Stop, on the same port and data, and
// waits until it answers. It is a no-op when the server is running.
func (s *Server) Start() error {
	return s.proc.Start(func() *exec.Cmd {
		args := []string{
			"--no-defaults",
			"--datadir=" + filepath.Join(s.Dir, "data"),
			"--tmpdir=" + filepath.Join(s.Dir, "tmp"),
			"--socket=" + filepath.Join(s.Dir, "mysqld.sock"),
			"--pid-file=" + filepath.Join(s.Dir, "mysqld.pid"),
			"--port=" + strconv.Itoa(s.port),
			"--bind-address=127.0.0.1",
			"--skip-grant-tables",
			"--skip-name-resolve",
			"--skip-log-bin",
			"--innodb-flush-log-at-trx-commit=2",
			"--innodb-buffer-pool-size=256M",
			"--innodb-log-file-size=256M",
			"--max-connections=200",
			"--log-error=" + filepath.Join(s.Dir, "mariadbd.err"),
		}
		if os.Geteuid() == 0 {
			args = append(args, "--user=root")
		}
		cmd := exec.Command(s.bin, args...)
		cmd.Dir = s.Dir
		return cmd
	}, func(r *testsrv.Run) error {
		return r.WaitReady(s.Ping, StartTimeout, 10*time.Millisecond, 200*time.Millisecond)
	})
}

// DSN returns the go-sql-driver/mysql DSN of a database on the server.
func (s *Server) DSN(database string) string {
	return "root@tcp(" + s.Addr + ")/" + database + "?timeout=5s"
}

// Stop stops the server gracefully (SIGTERM), killing it after 30s, and
// waits until it has exited. Clients then see connections refused.
func (s *Server) Stop() error { return s.proc.Stop() }

// Kill stops the server at once (SIGKILL), like a crash.
func (s *Server) Kill() error { return s.proc.Kill() }

// Running reports whether the server process is running.
func (s *Server) Running() bool { return s.proc.Running() }

// Close stops the server and removes its directory.
func (s *Server) Close() error { return s.proc.Close(s.Dir) }

func (s *Server) logTail() string { return testsrv.Tail(s.Dir, "mariadbd.err", "mariadbd.log") }

var harness = testsrv.Harness[*Server]{Pkg: "mysqltest", Binary: Binary, Start: Start}

// Main starts one server for the test package, runs its tests and stops
// the server. Call it from TestMain. When MariaDB is missing, Main runs
// the tests anyway and Shared skips those that need the server, unless CI
// is "true": then Main fails at once.
func Main(m *testing.M) { harness.Main(m) }

// Shared returns the server that Main started for the package, skipping t
// (or failing it when CI is "true") when there is none.
func Shared(t testing.TB) *Server {
	t.Helper()
	return harness.Shared(t)
}

// StartPrivate starts a server for t alone and closes it when t ends.
func StartPrivate(t testing.TB) *Server {
	t.Helper()
	return harness.StartPrivate(t, Start)
}
