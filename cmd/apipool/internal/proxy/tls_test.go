package proxy_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// testCA is a private CA made in the test.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pem  []byte
	pool *x509.CertPool
}

var serial int64

func newKey(t *testing.T) *ecdsa.PrivateKey {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func newCA(t *testing.T, name string) *testCA {
	t.Helper()
	k := newKey(t)
	serial++
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &k.PublicKey, k)
	if err != nil {
		t.Fatal(err)
	}
	c, _ := x509.ParseCertificate(der)
	ca := &testCA{cert: c, key: k, pem: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pool: x509.NewCertPool()}
	ca.pool.AddCert(c)
	return ca
}

// issue returns a PEM certificate and key signed by the CA: a server's
// for 127.0.0.1, or a client's.
func (ca *testCA) issue(t *testing.T, cn string, client bool) (certPEM, keyPEM []byte) {
	t.Helper()
	k := newKey(t)
	serial++
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	if client {
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
	} else {
		tmpl.IPAddresses = []net.IP{net.IPv4(127, 0, 0, 1)}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &k.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	kd, err := x509.MarshalECPrivateKey(k)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kd})
}

// writeAtomic writes the file as a rotation does: a new file renamed over.
func writeAtomic(t *testing.T, path string, b []byte) {
	t.Helper()
	if err := os.WriteFile(path+".new", b, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(path+".new", path); err != nil {
		t.Fatal(err)
	}
}

// TLS on the proxy's and the admin listeners (issue 27): a client that
// trusts the private CA gets through; TLS below 1.2 is refused; the admin
// listener wants a client certificate of its client CA; a certificate
// rotated on disk is served from the next handshake, without a restart.
func TestTLSListeners(t *testing.T) {
	dir := t.TempDir()
	ca, opsCA := newCA(t, "test CA"), newCA(t, "ops CA")
	certPEM, keyPEM := ca.issue(t, "proxy-1", false)
	crt, key, opsCAFile := filepath.Join(dir, "proxy.crt"), filepath.Join(dir, "proxy.key"), filepath.Join(dir, "ops-ca.crt")
	writeAtomic(t, crt, certPEM)
	writeAtomic(t, key, keyPEM)
	writeAtomic(t, opsCAFile, opsCA.pem)
	e := newEnv(t, envOpts{noServe: true, yaml: func(up, kf string) string {
		return fmt.Sprintf(`listen: 127.0.0.1:0
tls: {cert_file: %s, key_file: %s}
admin:
  listen: 127.0.0.1:0
  tls: {cert_file: %s, key_file: %s, client_ca_file: %s}
tokens: [{name: a, sha256: %s}]
upstreams:
  - {name: openai, prefix: /openai, target: '%s', keys: {file: %s}}
`, crt, key, crt, key, opsCAFile, sha(token), up, kf)
	}})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	adminLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- e.srv.Serve(ln, adminLn) }()
	defer func() { e.srv.Shutdown(t.Context()); <-served }()

	client := func(tc *tls.Config) *http.Client {
		if tc.RootCAs == nil {
			tc.RootCAs = ca.pool
		}
		return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: tc, DisableKeepAlives: true}}
	}
	get := func(c *http.Client, url string) (*http.Response, error) {
		req, _ := http.NewRequest("GET", url, nil)
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := c.Do(req)
		if err == nil {
			readAll(t, resp)
		}
		return resp, err
	}
	main := "https://" + ln.Addr().String()
	admin := "https://" + adminLn.Addr().String()

	resp, err := get(client(&tls.Config{}), main+"/openai/v1/models")
	if err != nil || resp.StatusCode != 200 || resp.TLS == nil || resp.TLS.Version < tls.VersionTLS12 {
		t.Fatalf("through the CA: %v %+v", err, resp)
	}
	if got := resp.TLS.PeerCertificates[0].Subject.CommonName; got != "proxy-1" {
		t.Errorf("certificate %q", got)
	}
	if _, err := get(client(&tls.Config{RootCAs: x509.NewCertPool()}), main+"/openai/v1/models"); err == nil {
		t.Error("a client that does not trust the CA got through")
	}
	if _, err := get(client(&tls.Config{MaxVersion: tls.VersionTLS11}), main+"/openai/v1/models"); err == nil || !strings.Contains(err.Error(), "version") {
		t.Errorf("TLS 1.1: %v, want a protocol version error", err)
	}
	if resp, err := get(&http.Client{Timeout: 10 * time.Second}, "http://"+ln.Addr().String()+"/openai/v1/models"); err == nil && resp.StatusCode != http.StatusBadRequest {
		t.Errorf("plain HTTP on the TLS listener: %d, want 400", resp.StatusCode)
	}

	// Admin: a client certificate of the ops CA is required.
	if resp, err := get(client(&tls.Config{}), admin+"/healthz"); err == nil {
		t.Errorf("admin without a client certificate: %d", resp.StatusCode)
	}
	wrongCert, wrongKey := ca.issue(t, "not-ops", true)
	wrong, _ := tls.X509KeyPair(wrongCert, wrongKey)
	if resp, err := get(client(&tls.Config{Certificates: []tls.Certificate{wrong}}), admin+"/healthz"); err == nil {
		t.Errorf("admin with a certificate of another CA: %d", resp.StatusCode)
	}
	opsCert, opsKey := opsCA.issue(t, "ops", true)
	ops, _ := tls.X509KeyPair(opsCert, opsKey)
	if resp, err := get(client(&tls.Config{Certificates: []tls.Certificate{ops}}), admin+"/healthz"); err != nil || resp.StatusCode != 200 {
		t.Errorf("admin with the ops certificate: %v %+v", err, resp)
	}

	// Rotation: the key first (the pair does not load meanwhile: the old
	// certificate stays), then the certificate.
	certPEM2, keyPEM2 := ca.issue(t, "proxy-2", false)
	writeAtomic(t, key, keyPEM2)
	resp, err = get(client(&tls.Config{}), main+"/openai/v1/models")
	if err != nil || resp.TLS.PeerCertificates[0].Subject.CommonName != "proxy-1" {
		t.Fatalf("half rotated: %v", err)
	}
	writeAtomic(t, crt, certPEM2)
	for _, u := range []string{main + "/openai/v1/models", admin + "/healthz"} {
		resp, err = get(client(&tls.Config{Certificates: []tls.Certificate{ops}}), u)
		if err != nil {
			t.Fatal(err)
		}
		if got := resp.TLS.PeerCertificates[0].Subject.CommonName; got != "proxy-2" {
			t.Errorf("%s after rotation: certificate %q, want proxy-2", u, got)
		}
	}
	if !strings.Contains(e.logs.String(), "TLS certificate reloaded") {
		t.Error("no log of the reload")
	}
	// A config reload that changes tls says it needs a restart.
	y, _ := os.ReadFile(e.cfgPath)
	os.WriteFile(e.cfgPath, []byte(strings.Replace(string(y), "tls: {cert_file", "tls: {min_version: '1.3', cert_file", 1)), 0o600)
	if err := e.srv.Reload(); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(e.logs.String(), "changed tls or admin.tls setting needs a restart") {
		t.Error("no warning that a tls change needs a restart")
	}
}
