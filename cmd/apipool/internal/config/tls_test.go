package config

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// writePair writes a self-signed certificate for 127.0.0.1 and its key
// into dir, and returns their paths.
func writePair(t *testing.T, dir, name string) (cert, key string) {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &k.PublicKey, k)
	if err != nil {
		t.Fatal(err)
	}
	kd, err := x509.MarshalECPrivateKey(k)
	if err != nil {
		t.Fatal(err)
	}
	cert, key = filepath.Join(dir, name+".crt"), filepath.Join(dir, name+".key")
	if err := os.WriteFile(cert, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(key, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kd}), 0o600); err != nil {
		t.Fatal(err)
	}
	return cert, key
}

// TLS settings for the listener and the admin listener: the files are
// read at load, relative to the config file, and every problem is an
// error with its line and field.
func TestTLSSettings(t *testing.T) {
	dir := t.TempDir()
	cert, key := writePair(t, dir, "server")
	other, otherKey := writePair(t, dir, "other")
	kf := writeKeys(t, "sk-one-AAAA\n", 0o600)
	base := minimal(kf)
	good := base + "tls: {cert_file: server.crt, key_file: server.key}\nadmin:\n  listen: 127.0.0.1:0\n  tls: {cert_file: " + cert + ", key_file: " + key + ", client_ca_file: other.crt, min_version: '1.3'}\n"
	c, err := Parse(filepath.Join(dir, "apipool.yaml"), []byte(good))
	if err != nil {
		t.Fatal(err)
	}
	if c.TLS == nil || c.TLS.CertFile != cert || c.TLS.KeyFile != key || c.TLS.MinVersion != 0x0303 || c.TLS.ClientCAs != nil {
		t.Errorf("tls: %+v", c.TLS)
	}
	if a := c.AdminTLS; a == nil || a.ClientCAFile != other || a.ClientCAs == nil || a.MinVersion != 0x0304 {
		t.Errorf("admin.tls: %+v", a)
	}
	os.Chmod(otherKey, 0o644)
	for _, x := range []struct{ yaml, want string }{
		{base + "tls: {cert_file: " + cert + "}\n", "f.yaml:9: tls.key_file: missing"},
		{base + "tls: {key_file: " + key + "}\n", "f.yaml:9: tls.cert_file: missing"},
		{base + "tls: {cert_file: " + cert + ", key_file: " + key + ", min_version: '1.1'}\n", "f.yaml:9: tls.min_version: TLS below 1.2 is refused"},
		{base + "tls: {cert_file: " + cert + ", key_file: " + key + ", min_version: '1.0'}\n", "TLS below 1.2 is refused"},
		{base + "tls: {cert_file: " + cert + ", key_file: " + otherKey + "}\n", "f.yaml:9: tls.key_file: the key file " + otherKey + ": open to other users"},
		{base + "tls: {cert_file: " + other + ", key_file: " + key + "}\n", "f.yaml:9: tls: the certificate and key do not load as a pair: tls: private key does not match public key"},
		{base + "tls:\n  cert_file: " + dir + "/missing.crt\n  key_file: " + key + "\n", "f.yaml:10: tls.cert_file: the certificate file " + dir + "/missing.crt: no such file or directory"},
		{base + "admin: {tls: {cert_file: " + cert + ", key_file: " + key + "}}\n", "f.yaml:9: admin.tls: needs admin.listen"},
		{base + "admin: {listen: '127.0.0.1:0', tls: {cert_file: " + cert + ", key_file: " + key + ", client_ca_file: " + kf + "}}\n", "admin.tls.client_ca_file: the client CA file " + kf + " holds no PEM certificate"},
	} {
		_, err := Parse("f.yaml", []byte(x.yaml))
		if err == nil || !strings.Contains(err.Error(), x.want) {
			t.Errorf("%v\nwant %q", err, x.want)
		}
	}
}
