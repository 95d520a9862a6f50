// Package pgtest runs private PostgreSQL servers for tests.
//
// A server is Debian's PostgreSQL (initdb and postgres from
// /usr/lib/postgresql/<version>/bin) with its data in a new temporary
// directory, listening on a free loopback port and a Unix socket in that
// directory, with trust authentication for the user "postgres" and
// fsync and full_page_writes off: a commit survives the server's crash
// (Kill), not the machine's, and the data is thrown away anyway. PostgreSQL refuses to run as root: as root, the
// harness runs initdb and the server as the user "postgres", which owns
// the directory.
//
// A test package runs one server for all its tests (see [Main] and
// [Shared]); each test takes a database of its own ([Server.NewDatabase]);
// fault tests run their own server ([StartPrivate]) to stop and start it.
//
// When the binaries are missing, tests that need a server are skipped with
// a message telling how to install them, unless the environment variable
// CI is "true", in which case they fail.
package pgtest

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib" // the "pgx" driver

	"github.com/apipool-ng/apipool/internal/testsrv"
)

// InstallHint tells how to get the server.
const InstallHint = "install it with: apt-get update && apt-get install -y postgresql " +
	"(or set PGTEST_BINDIR to a directory holding initdb and postgres)"

// StartTimeout bounds how long Start waits for the server to answer.
const StartTimeout = 60 * time.Second

// Server is one private PostgreSQL server. Its methods are safe for
// concurrent use.
type Server struct {
	// Addr is "127.0.0.1:port". It stays the same across Stop and Start.
	Addr string
	// Dir is the server's directory: its data (Dir/data), socket and log.
	Dir string

	bin  string
	port int
	cred *syscall.Credential
	proc *testsrv.Process

	// NewDatabase and Database make a test's own database; Ping asks the
	// server to answer.
	testsrv.Databases
}

// BinDir returns the directory of initdb and postgres: $PGTEST_BINDIR, or
// the newest /usr/lib/postgresql/<version>/bin; or an error saying how to
// install them.
func BinDir() (string, error) {
	if d := os.Getenv("PGTEST_BINDIR"); d != "" {
		if _, err := os.Stat(filepath.Join(d, "postgres")); err != nil {
			return "", fmt.Errorf("pgtest: PGTEST_BINDIR=%s: %w; %s", d, err, InstallHint)
		}
		return d, nil
	}
	ms, _ := filepath.Glob("/usr/lib/postgresql/*/bin/postgres")
	best, bestV := "", -1
	for _, m := range ms {
		v, err := strconv.Atoi(filepath.Base(filepath.Dir(filepath.Dir(m))))
		if err == nil && v > bestV {
			best, bestV = filepath.Dir(m), v
		}
	}
	if best == "" {
		return "", fmt.Errorf("pgtest: PostgreSQL not found under /usr/lib/postgresql; %s", InstallHint)
	}
	if _, err := os.Stat(filepath.Join(best, "initdb")); err != nil {
		return "", fmt.Errorf("pgtest: %s has postgres but no initdb; %s", best, InstallHint)
	}
	return best, nil
}

// credential returns the credential to run PostgreSQL with: that of the
// user "postgres" when running as root, else none.
func credential() (*syscall.Credential, error) {
	if os.Geteuid() != 0 {
		return nil, nil
	}
	u, err := user.Lookup("postgres")
	if err != nil {
		return nil, fmt.Errorf("pgtest: running as root, and PostgreSQL refuses root: %w (the postgresql package creates the user)", err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}, nil
}

// Start initialises a new cluster in a new temporary directory, starts the
// server and waits until it answers. Close stops it and removes the
// directory.
func Start() (*Server, error) {
	bin, err := BinDir()
	if err != nil {
		return nil, err
	}
	cred, err := credential()
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "pgtest-")
	if err != nil {
		return nil, fmt.Errorf("pgtest: %w", err)
	}
	if cred != nil {
		if err := os.Chown(dir, int(cred.Uid), int(cred.Gid)); err != nil {
			os.RemoveAll(dir)
			return nil, fmt.Errorf("pgtest: %w", err)
		}
	}
	initdb := exec.Command(filepath.Join(bin, "initdb"), "-D", filepath.Join(dir, "data"), "-U", "postgres",
		"--auth=trust", "--encoding=UTF8", "--locale=C", "--no-sync")
	initdb.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	if out, err := initdb.CombinedOutput(); err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("pgtest: initdb: %v\n%s", err, out)
	}
	return testsrv.OnFreePort("pgtest", dir, func(port int) (*Server, error) {
		s := newServer(dir, bin, port, cred)
		return s, s.Start()
	}, func(s *Server) bool {
		return strings.Contains(s.logTail(), "could not bind") || strings.Contains(s.logTail(), "already in use")
	})
}

func newServer(dir, bin string, port int, cred *syscall.Credential) *Server {
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	s := &Server{Addr: addr, Dir: dir, bin: bin, port: port, cred: cred}
	s.Databases = testsrv.Databases{Pkg: "pgtest", Driver: "pgx", DSNOf: s.DSN, Admin: "postgres"}
	s.proc = &testsrv.Process{
		Pkg:         "pgtest",
		Name:        "postgres",
		Addr:        addr,
		Output:      filepath.Join(dir, "postgres.log"),
		StopTimeout: 20 * time.Second,
		// A fast shutdown: SIGTERM's smart shutdown waits for clients.
		StopSignal: syscall.SIGINT,
		LogTail:    s.logTail,
	}
	return s
}

// Start starts the server again after Stop, on the same port and data, and
// waits until it answers. It is a no-op when the server is running.
//
// After Kill, the old server's backends may hold its shared memory for a
// moment after the postmaster is gone; the new server then refuses to
// start ("pre-existing shared memory block is still in use"), and Start
// tries again, for up to 10s.
func (s *Server) Start() error {
	for try := 0; ; try++ {
		err := s.start()
		if err == nil || try == 100 || !strings.Contains(err.Error(), "pre-existing shared memory block") {
			return err
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func (s *Server) start() error {
	return s.proc.Start(func() *exec.Cmd {
		cmd := exec.Command(filepath.Join(s.bin, "postgres"),
			"-D", filepath.Join(s.Dir, "data"),
			"-p", strconv.Itoa(s.port),
			"-k", s.Dir,
			"-c", "listen_addresses=127.0.0.1",
			"-c", "fsync=off",
			"-c", "full_page_writes=off",
			"-c", "max_connections=100",
			"-c", "shared_buffers=128MB",
		)
		cmd.Dir = s.Dir
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: s.cred}
		return cmd
	}, func(r *testsrv.Run) error {
		return r.WaitReady(s.Ping, StartTimeout, 10*time.Millisecond, 200*time.Millisecond)
	})
}

// DSN returns the URL of a database on the server, for the user postgres.
func (s *Server) DSN(database string) string {
	return "postgres://postgres@" + s.Addr + "/" + database + "?sslmode=disable&connect_timeout=5"
}

// Stop stops the server with a fast shutdown (SIGINT: it disconnects
// clients, aborting their transactions, and exits; the harness kills it
// after 20s), and waits until it has exited. Clients then see connections
// refused.
func (s *Server) Stop() error { return s.proc.Stop() }

// Kill stops the server at once (SIGKILL), like a crash.
func (s *Server) Kill() error { return s.proc.Kill() }

// Running reports whether the server process is running.
func (s *Server) Running() bool { return s.proc.Running() }

// Close stops the server and removes its directory.
func (s *Server) Close() error { return s.proc.Close(s.Dir) }

func (s *Server) logTail() string { return testsrv.Tail(s.Dir, "postgres.log") }

var harness = testsrv.Harness[*Server]{
	Pkg:    "pgtest",
	Binary: BinDir,
	Start:  Start,
}

// Main starts one server for the test package, runs its tests and stops
// the server. Call it from TestMain. When PostgreSQL is missing, Main runs
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
