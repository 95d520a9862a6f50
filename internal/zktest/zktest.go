package zktest

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/apipool-ng/apipool/internal/testsrv"
)

// DefaultJar is where Debian's zookeeper package installs the server's
// jar. The environment variable ZKTEST_ZOOKEEPER_JAR overrides it.
const DefaultJar = "/usr/share/java/zookeeper.jar"

// InstallHint tells how to get ZooKeeper.
const InstallHint = "install it with: apt-get update && apt-get install -y zookeeper " +
	"(or set ZKTEST_ZOOKEEPER_JAR to a zookeeper jar, and have java on PATH)"

// StartTimeout bounds how long Start waits for the server to serve.
const StartTimeout = 60 * time.Second

// mainClass runs a standalone server when the configuration names no
// other servers.
const mainClass = "org.apache.zookeeper.server.quorum.QuorumPeerMain"

var jar = testsrv.Binary{
	Pkg:         "zktest",
	Name:        "zookeeper.jar",
	Env:         "ZKTEST_ZOOKEEPER_JAR",
	Default:     DefaultJar,
	InstallHint: InstallHint,
}

// Binary returns the paths of the java binary and the ZooKeeper jar, or an
// error saying how to install them.
func Binary() (java, jarPath string, err error) {
	jarPath, err = jar.Path()
	if err != nil {
		return "", "", err
	}
	java, err = exec.LookPath("java")
	if err != nil {
		return "", "", fmt.Errorf("zktest: java not found on PATH; %s", InstallHint)
	}
	return java, jarPath, nil
}

// Server is one private ZooKeeper process. Its methods are safe for
// concurrent use.
type Server struct {
	// Addr is the client address, "127.0.0.1:port". It stays the same
	// across Stop and Start.
	Addr string
	// Host and Port are Addr's parts.
	Host string
	Port int
	// Dir holds the configuration, data and output.
	Dir string

	java, jar string
	proc      *testsrv.Process
}

// Start starts a new server in a new temporary directory and waits until
// it serves. Close stops it and removes the directory.
func Start() (*Server, error) {
	java, jarPath, err := Binary()
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "zktest-")
	if err != nil {
		return nil, fmt.Errorf("zktest: %w", err)
	}
	return testsrv.OnFreePort("zktest", dir, func(port int) (*Server, error) {
		s := &Server{Addr: net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), Host: "127.0.0.1", Port: port, Dir: dir, java: java, jar: jarPath}
		s.proc = &testsrv.Process{
			Pkg:         "zktest",
			Name:        "zookeeper",
			Addr:        s.Addr,
			Output:      filepath.Join(dir, "stdout.log"),
			StopTimeout: 10 * time.Second,
			LogTail:     func() string { return testsrv.Tail(dir, "stdout.log") },
		}
		if err := s.writeConfig(); err != nil {
			return nil, err
		}
		return s, s.Start()
	}, func(s *Server) bool {
		return s != nil && strings.Contains(testsrv.Tail(dir, "stdout.log"), "Address already in use")
	})
}

func (s *Server) writeConfig() error {
	// Sessions may last up to a minute, so that clients' sessions (30 s
	// for ClickHouse) outlive a server stopped for a few seconds. The
	// four-letter word srvr tells when the server serves.
	cfg := fmt.Sprintf(`tickTime=1000
maxSessionTimeout=60000
initLimit=10
syncLimit=5
dataDir=%s
clientPort=%d
clientPortAddress=127.0.0.1
maxClientCnxns=0
admin.enableServer=false
4lw.commands.whitelist=srvr,ruok
`, filepath.Join(s.Dir, "data"), s.Port)
	if err := os.WriteFile(filepath.Join(s.Dir, "zoo.cfg"), []byte(cfg), 0o644); err != nil {
		return fmt.Errorf("zktest: %w", err)
	}
	return nil
}

// Start starts the server again after Stop, on the same port and data,
// and waits until it serves. It is a no-op when the server is running.
func (s *Server) Start() error {
	return s.proc.Start(func() *exec.Cmd {
		// A small heap and the quickest JIT start: the server holds a few
		// hundred nodes. forceSync=no skips fsync: test data.
		cmd := exec.Command(s.java, "-Xmx256m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1",
			"-Dzookeeper.forceSync=no", "-cp", s.jar, mainClass, filepath.Join(s.Dir, "zoo.cfg"))
		cmd.Dir = s.Dir
		return cmd
	}, func(r *testsrv.Run) error {
		return r.WaitReady(s.ping, StartTimeout, 20*time.Millisecond, 200*time.Millisecond)
	})
}

// ping asks the server for its state; it fails until the server serves
// clients.
func (s *Server) ping() error {
	c, err := net.DialTimeout("tcp", s.Addr, time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(2 * time.Second))
	if _, err := io.WriteString(c, "srvr"); err != nil {
		return err
	}
	sc := bufio.NewScanner(c)
	for sc.Scan() {
		if strings.HasPrefix(sc.Text(), "Mode:") {
			return nil
		}
	}
	if err := sc.Err(); err != nil {
		return err
	}
	return errors.New("zktest: not serving yet")
}

// Stop stops the server gracefully (SIGTERM) and waits until it has
// exited; its port is then closed and its data kept for Start. It is a
// no-op when the server is not running.
func (s *Server) Stop() error { return s.proc.Stop() }

// Kill stops the server at once (SIGKILL) and waits until it has exited.
func (s *Server) Kill() error { return s.proc.Kill() }

// Running reports whether the server process is running.
func (s *Server) Running() bool { return s.proc.Running() }

// Close stops the server and removes its directory.
func (s *Server) Close() error { return s.proc.Close(s.Dir) }
