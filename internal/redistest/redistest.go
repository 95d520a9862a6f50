// Package redistest runs private Redis servers for tests.
//
// A server is Debian's redis-server binary started on a free loopback port
// with persistence off (no snapshots, no append-only file) and its working
// directory in a temporary directory. It starts in milliseconds, so a test
// package runs one for all its tests (see [Main] and [Shared]) and fault
// tests run their own (see [StartPrivate]) to stop and start it.
//
// When the binary is missing, tests that need a server are skipped with a
// message telling how to install it, unless the environment variable CI is
// "true", in which case they fail.
package redistest

import (
	"bufio"
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

	"github.com/redis/go-redis/v9"

	"github.com/apipool-ng/apipool/internal/testsrv"
)

// DefaultBinary is where Debian's redis-server package installs the
// server. The environment variable REDISTEST_REDIS_SERVER overrides it.
const DefaultBinary = "/usr/bin/redis-server"

// InstallHint tells how to get the server binary.
const InstallHint = "install it with: apt-get update && apt-get install -y redis-server " +
	"(or set REDISTEST_REDIS_SERVER to a redis-server binary)"

// StartTimeout bounds how long Start waits for a server to answer PING.
const StartTimeout = 15 * time.Second

// stopTimeout bounds how long Stop waits for a graceful exit before it
// kills the server.
const stopTimeout = 10 * time.Second

// Server is one private redis-server process. Its methods are safe for
// concurrent use.
type Server struct {
	// Addr is "127.0.0.1:port". It stays the same across Stop and Start.
	Addr string
	// Dir is the server's working directory; it holds its log.
	Dir string

	bin     string
	port    int
	cluster bool
	proc    *testsrv.Process
}

// binary is where the server binary may be.
var binary = testsrv.Binary{
	Pkg:         "redistest",
	Name:        "redis-server",
	Env:         "REDISTEST_REDIS_SERVER",
	Default:     DefaultBinary,
	InstallHint: InstallHint,
}

// Binary returns the path of the server binary, or an error saying how to
// install it.
func Binary() (string, error) { return binary.Path() }

// InCI reports whether the environment variable CI is "true", where a
// missing server is a failure rather than a reason to skip.
func InCI() bool { return testsrv.InCI() }

// Start starts a new server in a new temporary directory and waits until it
// answers PING. Close stops it and removes the directory.
func Start() (*Server, error) { return start(false) }

// StartCluster starts a new server in cluster mode, a cluster of one node
// that holds all 16384 hash slots, and waits until the cluster is up. It
// enforces what a Cluster does (a script's or command's keys must share a
// slot), and a redis.ClusterClient works with it (see ClusterOptions).
func StartCluster() (*Server, error) { return start(true) }

func start(cluster bool) (*Server, error) {
	bin, err := Binary()
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "redistest-")
	if err != nil {
		return nil, fmt.Errorf("redistest: %w", err)
	}
	return testsrv.OnFreePort("redistest", dir, func(port int) (*Server, error) {
		s := newServer(net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), dir, bin, port, cluster)
		return s, s.Start()
	}, func(s *Server) bool {
		return strings.Contains(s.logTail(), "Address already in use")
	})
}

func newServer(addr, dir, bin string, port int, cluster bool) *Server {
	s := &Server{Addr: addr, Dir: dir, bin: bin, port: port, cluster: cluster}
	s.proc = &testsrv.Process{
		Pkg:         "redistest",
		Name:        "redis-server",
		Addr:        addr,
		StopTimeout: stopTimeout,
		LogTail:     s.logTail,
	}
	return s
}

// Start starts the server again after Stop, on the same port, and waits
// until it answers PING. It is a no-op when the server is running. The
// data set starts empty: the server keeps nothing on disk.
func (s *Server) Start() error {
	return s.proc.Start(func() *exec.Cmd {
		args := []string{
			"--port", strconv.Itoa(s.port),
			"--bind", "127.0.0.1",
			"--save", "",
			"--appendonly", "no",
			"--dir", s.Dir,
			"--logfile", filepath.Join(s.Dir, "redis.log"),
			"--daemonize", "no",
		}
		if s.cluster {
			args = append(args, "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf")
		}
		cmd := exec.Command(s.bin, args...)
		cmd.Dir = s.Dir
		return cmd
	}, func(r *testsrv.Run) error {
		// Poll with PING until it answers, the process exits, or
		// StartTimeout passes.
		err := r.WaitReady(s.ping, StartTimeout, time.Millisecond, 50*time.Millisecond)
		if err == nil && s.cluster {
			err = s.waitCluster(r)
		}
		return err
	})
}

// waitCluster gives the node every hash slot, unless it has them from an
// earlier run (its nodes.conf), and waits until the cluster is up.
func (s *Server) waitCluster(r *testsrv.Run) error {
	c := redis.NewClient(&redis.Options{Addr: s.Addr, DialTimeout: time.Second, MaxRetries: -1})
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), StartTimeout)
	defer cancel()
	info := func() string {
		v, _ := c.ClusterInfo(ctx).Result()
		return v
	}
	if strings.Contains(info(), "cluster_slots_assigned:0") {
		if err := c.ClusterAddSlotsRange(ctx, 0, 16383).Err(); err != nil {
			return fmt.Errorf("redistest: assigning the hash slots: %w", err)
		}
	}
	for delay := time.Millisecond; !strings.Contains(info(), "cluster_state:ok"); delay = min(2*delay, 50*time.Millisecond) {
		select {
		case <-r.Exited():
			return r.ExitError()
		case <-ctx.Done():
			return fmt.Errorf("redistest: cluster at %s not up within %v: %s", s.Addr, StartTimeout, info())
		case <-time.After(delay):
		}
	}
	return nil
}

// ping sends PING in the inline protocol and expects +PONG.
func (s *Server) ping() error {
	c, err := net.DialTimeout("tcp", s.Addr, time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(time.Second))
	if _, err := c.Write([]byte("PING\r\n")); err != nil {
		return err
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return err
	}
	if line != "+PONG\r\n" {
		// -LOADING while it starts, for example.
		return fmt.Errorf("redistest: PING answered %q", strings.TrimSpace(line))
	}
	return nil
}

// Stop stops the server gracefully (SIGTERM), killing it if it has not
// exited within 10 seconds, and waits until it has exited. Its port is then
// closed: clients see connections refused. It is a no-op when the server
// is not running.
func (s *Server) Stop() error { return s.proc.Stop() }

// Kill stops the server at once (SIGKILL), like a crash, and waits until it
// has exited.
func (s *Server) Kill() error { return s.proc.Kill() }

// Running reports whether the server process is running.
func (s *Server) Running() bool { return s.proc.Running() }

// Close stops the server and removes its directory.
func (s *Server) Close() error { return s.proc.Close(s.Dir) }

// Options returns go-redis options for the server with short timeouts, as
// a service that must not stall on its shared state would set them: dial,
// read and write each give up after a second, context deadlines are
// honoured, a failed dial and a failed command are not retried (go-redis
// would otherwise dial 5 times, 100ms apart, and retry a command 3 times).
func (s *Server) Options() *redis.Options {
	return &redis.Options{
		Addr:                  s.Addr,
		DialTimeout:           time.Second,
		DialerRetries:         1,
		ReadTimeout:           time.Second,
		WriteTimeout:          time.Second,
		ContextTimeoutEnabled: true,
		MaxRetries:            -1,
	}
}

// ClusterOptions returns go-redis Cluster client options for a server
// started with StartCluster, with the timeouts of Options.
func (s *Server) ClusterOptions() *redis.ClusterOptions {
	o := s.Options()
	return &redis.ClusterOptions{
		Addrs:                 []string{s.Addr},
		DialTimeout:           o.DialTimeout,
		DialerRetries:         o.DialerRetries,
		ReadTimeout:           o.ReadTimeout,
		WriteTimeout:          o.WriteTimeout,
		ContextTimeoutEnabled: o.ContextTimeoutEnabled,
		MaxRetries:            o.MaxRetries,
	}
}

// Client returns a new client of the server (see Options) and closes it
// when t ends.
func (s *Server) Client(t testing.TB) *redis.Client {
	t.Helper()
	c := redis.NewClient(s.Options())
	t.Cleanup(func() { c.Close() })
	return c
}

// logTail returns the end of the server's log, for messages.
func (s *Server) logTail() string { return testsrv.Tail(s.Dir, "redis.log") }

// harness is the server Main starts for the package, and the plumbing of
// Shared and StartPrivate.
var harness = testsrv.Harness[*Server]{Pkg: "redistest", Binary: Binary, Start: Start}

// Main starts one server for the test package, runs its tests and stops
// the server. Call it from TestMain:
//
//	func TestMain(m *testing.M) { redistest.Main(m) }
//
// When the binary is missing, Main runs the tests anyway and [Shared]
// skips those that need the server, unless CI is "true": then Main fails
// at once. When the server is there but does not start, Main fails.
func Main(m *testing.M) { harness.Main(m) }

// Shared returns the server that Main started for the package. When there
// is none because the binary is missing, it skips t (or fails it when CI
// is "true"). Tests sharing it keep apart by using their own key names.
func Shared(t testing.TB) *Server {
	t.Helper()
	return harness.Shared(t)
}

// StartPrivate starts a server for t alone, for tests that stop and start
// it, and closes it when t ends. It skips or fails t as Shared does when
// the binary is missing.
func StartPrivate(t testing.TB) *Server {
	t.Helper()
	return startPrivate(t, false)
}

// StartPrivateCluster is StartPrivate with StartCluster.
func StartPrivateCluster(t testing.TB) *Server {
	t.Helper()
	return startPrivate(t, true)
}

func startPrivate(t testing.TB, cluster bool) *Server {
	t.Helper()
	return harness.StartPrivate(t, func() (*Server, error) { return start(cluster) })
}
