package test

import (
	"bytes"
	"fmt"
	"maps"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// freePort returns a TCP port free on this machine now.
func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// syncBuffer is a bytes.Buffer safe for a process's writes and the
// test's reads.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// probeURL is the URL the kubelet requests for p, on loopback.
func probeURL(t *testing.T, c *corev1.Container, p *corev1.Probe) string {
	t.Helper()
	g := p.HTTPGet
	port := g.Port.IntVal
	if g.Port.Type == intstr.String {
		for _, cp := range c.Ports {
			if cp.Name == g.Port.StrVal {
				port = cp.ContainerPort
			}
		}
	}
	return fmt.Sprintf("%s://127.0.0.1:%d%s", strings.ToLower(string(g.Scheme)), port, g.Path)
}

// served is apipool serve running the chart's config.
type served struct {
	dir      string // the pod's /etc/apipool
	cmd      *exec.Cmd
	out      *syncBuffer
	exited   chan error
	m        *manifests
	c        *corev1.Container
	proxyURL string
}

// serveChart renders the chart with the proxy and admin ports on free
// ports, lays out the pod's files and runs the image's binary with the
// container's args and variables, until its readiness probe answers 200.
// It returns nil when a port was taken by another process meanwhile.
func serveChart(t *testing.T, bin string, vals map[string]any) *served {
	t.Helper()
	proxy, admin := freePort(t), freePort(t)
	s := &served{dir: t.TempDir(), out: &syncBuffer{}, exited: make(chan error, 1)}
	s.m = mustRender(t, setPath(setPath(vals, "ports.proxy", proxy), "ports.admin", admin))
	s.c = s.m.container(t)
	cfgPath, env := podFiles(t, s.m, s.dir)
	args := append([]string(nil), s.c.Args...)
	if args[len(args)-1] != "/etc/apipool/apipool.yaml" {
		t.Fatalf("args %q: want the config last", args)
	}
	args[len(args)-1] = cfgPath
	s.cmd = exec.Command(bin, args...)
	dieWithTest(s.cmd)
	s.cmd.Env = env
	s.cmd.Stdout, s.cmd.Stderr = s.out, s.out
	if err := s.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { s.exited <- s.cmd.Wait() }()
	s.proxyURL = fmt.Sprintf("http://127.0.0.1:%d", proxy)

	ready := probeURL(t, s.c, s.c.ReadinessProbe)
	deadline := time.Now().Add(2 * time.Minute)
	for time.Now().Before(deadline) {
		select {
		case err := <-s.exited:
			if strings.Contains(s.out.String(), "address already in use") {
				return nil
			}
			t.Fatalf("apipool serve exited (%v) before it was ready:\n%s", err, s.out.String())
		case <-time.After(100 * time.Millisecond):
		}
		if resp, err := http.Get(ready); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return s
			}
		}
	}
	s.cmd.Process.Kill()
	<-s.exited
	t.Fatalf("the readiness probe %s did not answer 200 within 2 minutes:\n%s", ready, s.out.String())
	return nil
}

// startChart runs serveChart until it gets its ports, and stops the
// proxy at the test's end if the test did not.
func startChart(t *testing.T, bin string, vals map[string]any) *served {
	t.Helper()
	var s *served
	for i := 0; s == nil; i++ {
		if i == 3 {
			t.Fatal("no free ports after 3 tries")
		}
		s = serveChart(t, bin, vals)
	}
	t.Cleanup(func() {
		if s.cmd.ProcessState == nil {
			s.cmd.Process.Kill()
			<-s.exited
		}
	})
	return s
}

// The image's binary serves the chart's default config with the
// Deployment's files and variables: its readiness and liveness probes
// answer 200 on the ports and paths the Deployment names, the proxy port
// is the proxy (a request without a token gets its 401), /metrics is on
// the admin port, and SIGTERM stops it cleanly within the pod's
// termination grace period.
func TestChartServes(t *testing.T) {
	s := startChart(t, apipoolBinary(t), map[string]any{})
	c := s.c

	for _, p := range []*corev1.Probe{c.LivenessProbe, c.ReadinessProbe} {
		resp, err := http.Get(probeURL(t, c, p))
		if err != nil {
			t.Fatalf("probe %s: %v", p.HTTPGet.Path, err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Errorf("probe %s: %s", p.HTTPGet.Path, resp.Status)
		}
	}

	resp, err := http.Get(s.proxyURL + "/openai/v1/models")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized || resp.Header.Get("X-Apipool-Error") != "unauthorized" {
		t.Errorf("a request without a token on the proxy port: %s, X-Apipool-Error %q; want the proxy's 401", resp.Status, resp.Header.Get("X-Apipool-Error"))
	}

	// The metrics the ServiceMonitor would scrape, on the admin port.
	metrics := strings.Replace(probeURL(t, c, c.ReadinessProbe), "/readyz", "/metrics", 1)
	if resp, err := http.Get(metrics); err != nil {
		t.Error(err)
	} else {
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Errorf("GET %s: %s", metrics, resp.Status)
		}
	}

	if err := s.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	grace := time.Duration(*s.m.Deployment.Spec.Template.Spec.TerminationGracePeriodSeconds) * time.Second
	select {
	case err := <-s.exited:
		if err != nil {
			t.Errorf("apipool serve after SIGTERM: %v\n%s", err, s.out.String())
		}
	case <-time.After(grace):
		t.Errorf("apipool serve still running %s after SIGTERM (the kubelet kills it then)", grace)
	}
}

// A key added to the keys Secret reaches the running proxy with no
// restart: the kubelet swaps the Secret volume's files (writeSecret), and
// the proxy, which watches its key files, reloads them (every
// reload.interval, 1s here). The new secret is not logged.
func TestChartKeyRotation(t *testing.T) {
	s := startChart(t, apipoolBinary(t), values(t, "config: {reload: {interval: 1s}}"))
	var mode os.FileMode
	for _, v := range s.m.Deployment.Spec.Template.Spec.Volumes {
		if v.Secret != nil && v.Secret.SecretName == "apipool-keys" {
			mode = os.FileMode(*v.Secret.DefaultMode)
		}
	}
	const added = "sk-test-2222222222222222222222"
	entries := maps.Clone(fakeSecrets["apipool-keys"])
	entries["openai.keys"] += "k2 " + added + "\n"
	writeSecret(t, filepath.Join(s.dir, "keys"), mode, entries)

	deadline := time.Now().Add(2 * time.Minute)
	for !strings.Contains(s.out.String(), `"msg":"keys reloaded","upstream":"openai","added":1,"removed":0,"keys":3`) {
		if time.Now().After(deadline) {
			t.Fatalf("no reload of the keys within 2 minutes of the Secret's update:\n%s", s.out.String())
		}
		select {
		case err := <-s.exited:
			t.Fatalf("apipool serve exited: %v\n%s", err, s.out.String())
		case <-time.After(100 * time.Millisecond):
		}
	}
	if strings.Contains(s.out.String(), added[:12]) {
		t.Error("the log shows the new key")
	}
}
