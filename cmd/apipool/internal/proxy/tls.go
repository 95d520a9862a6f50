package proxy

import (
	"crypto/tls"
	"fmt"
	"log/slog"
	"os"
	"sync"

	"github.com/apipool-ng/apipool/cmd/apipool/internal/config"
)

// certSource serves a listener's certificate, read again from its files
// when they change: each handshake stats the certificate and key files
// (size, modification time, inode), and a change loads the pair anew.
// A pair that does not load (the certificate written, the key not yet)
// leaves the last good one in use, until the files change again.
type certSource struct {
	certFile, keyFile string
	log               *slog.Logger

	mu    sync.Mutex
	cur   *tls.Certificate
	tried [2]stamp // the files' stamps when last loaded or tried
}

func newCertSource(c *config.TLS, log *slog.Logger) (*certSource, error) {
	s := &certSource{certFile: c.CertFile, keyFile: c.KeyFile, log: log}
	s.tried = s.stamps()
	cert, err := s.load()
	if err != nil {
		return nil, err
	}
	s.cur = cert
	return s, nil
}

func (s *certSource) stamps() [2]stamp {
	var out [2]stamp
	for i, f := range []string{s.certFile, s.keyFile} {
		if st, err := os.Stat(f); err == nil {
			out[i] = stamp{st.Size(), st.ModTime(), inode(st)}
		}
	}
	return out
}

func (s *certSource) load() (*tls.Certificate, error) {
	key, err := config.ReadKeyFile(s.keyFile)
	if err != nil {
		return nil, fmt.Errorf("TLS key file %s: %w", s.keyFile, err)
	}
	certPEM, err := os.ReadFile(s.certFile)
	if err != nil {
		return nil, fmt.Errorf("TLS certificate file: %w", err)
	}
	cert, err := tls.X509KeyPair(certPEM, key)
	if err != nil {
		return nil, fmt.Errorf("TLS certificate %s and key %s: %w", s.certFile, s.keyFile, err)
	}
	return &cert, nil
}

// getCertificate is tls.Config.GetCertificate.
func (s *certSource) getCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	now := s.stamps()
	s.mu.Lock()
	defer s.mu.Unlock()
	if now != s.tried {
		s.tried = now
		if cert, err := s.load(); err != nil {
			s.log.Warn("TLS certificate changed but does not load; the previous one stays", "error", err)
		} else {
			s.cur = cert
			s.log.Info("TLS certificate reloaded", "cert_file", s.certFile)
		}
	}
	return s.cur, nil
}

// tlsConfig returns a listener's TLS configuration: TLS 1.2 at least,
// HTTP/1.1, the certificate from its files, and client certificates
// required and verified when c names a client CA.
func tlsConfig(c *config.TLS, log *slog.Logger) (*tls.Config, error) {
	src, err := newCertSource(c, log)
	if err != nil {
		return nil, err
	}
	tc := &tls.Config{
		MinVersion:     max(c.MinVersion, tls.VersionTLS12),
		GetCertificate: src.getCertificate,
		NextProtos:     []string{"http/1.1"},
	}
	if c.ClientCAs != nil {
		tc.ClientCAs = c.ClientCAs
		tc.ClientAuth = tls.RequireAndVerifyClientCert
	}
	return tc, nil
}

// sameTLS reports whether two TLS settings name the same files and
// version.
func sameTLS(a, b *config.TLS) bool {
	if a == nil || b == nil {
		return a == b
	}
	return a.CertFile == b.CertFile && a.KeyFile == b.KeyFile && a.ClientCAFile == b.ClientCAFile && a.MinVersion == b.MinVersion
}
