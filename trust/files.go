package trust

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"

	"github.com/nodeha/nodeha/internal/atomicfile"
)

// ErrForeign is returned when a host's stored identity is another
// cluster's than the token's.
var ErrForeign = errors.New("belongs to another cluster")

// Files are the paths of a host's TLS material, under DataDir/tls (root
// only, 0600).
type Files struct {
	Dir        string
	CA         string // the cluster CA certificate
	Cert, Key  string // the etcd member: server for peers and clients, client to its peers
	PatroniCrt string // Patroni's client certificate for etcd
	PatroniKey string
	// PostgresCrt is PostgreSQL's server certificate (for the host's
	// addresses), so clients can verify it (sslmode=verify-full).
	PostgresCrt string
	PostgresKey string
}

// FilesIn names the files in dir.
func FilesIn(dir string) Files {
	return Files{
		Dir: dir, CA: filepath.Join(dir, "ca.crt"),
		Cert: filepath.Join(dir, "etcd.crt"), Key: filepath.Join(dir, "etcd.key"),
		PatroniCrt: filepath.Join(dir, "patroni.crt"), PatroniKey: filepath.Join(dir, "patroni.key"),
		PostgresCrt: filepath.Join(dir, "postgres.crt"), PostgresKey: filepath.Join(dir, "postgres.key"),
	}
}

// CheckHost returns ErrForeign (wrapped, naming both CAs) when dir holds
// the identity of another cluster than id's. A host with no files passes.
func (id *Identity) CheckHost(f Files) error {
	b, err := os.ReadFile(f.CA)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("trust: %w", err)
	}
	blk, _ := pem.Decode(b)
	if blk == nil {
		return fmt.Errorf("trust: %s is not a PEM certificate", f.CA)
	}
	c, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		return fmt.Errorf("trust: %s: %w", f.CA, err)
	}
	if have := FingerprintOf(c); have != id.Fingerprint() {
		return fmt.Errorf("this host %w: %s holds CA %s, the token is for CA %s", ErrForeign, f.CA, short(have), short(id.Fingerprint()))
	}
	return nil
}

func short(fp string) string { return fp[:16] }

// Short is the first 16 hex digits of the CA fingerprint, for messages.
func (id *Identity) Short() string { return short(id.Fingerprint()) }

// EnsureHost writes what the host needs into f.Dir, keeping certificates
// that are still right (for name and ips, from this CA): a restart does not
// change them, so the container's spec hash stays the same.
func (id *Identity) EnsureHost(f Files, name string, ips []netip.Addr) error {
	if err := id.CheckHost(f); err != nil {
		return err
	}
	if err := os.MkdirAll(f.Dir, 0o700); err != nil {
		return fmt.Errorf("trust: create %s: %w", f.Dir, err)
	}
	if err := writeIfChanged(f.CA, id.CAPEM()); err != nil {
		return err
	}
	for _, p := range []struct {
		cert, key, name string
		ips             []netip.Addr
		u               Usage
	}{
		{f.Cert, f.Key, name, ips, ServerAndClient},
		{f.PatroniCrt, f.PatroniKey, "patroni-" + name, nil, Client},
		{f.PostgresCrt, f.PostgresKey, "postgres-" + name, ips, ServerAndClient},
	} {
		cert, err := os.ReadFile(p.cert)
		key, kerr := os.ReadFile(p.key)
		if err == nil && kerr == nil && id.IssuedBy(cert) && CertCovers(cert, p.name, p.ips) && pairs(cert, key) {
			continue
		}
		// Two files cannot be replaced in one step: a crash between them
		// leaves a key that is not the certificate's, which pairs() finds
		// on the next start, and a new pair is issued.
		c, k, err := id.Issue(p.name, p.ips, p.u)
		if err != nil {
			return err
		}
		if err := writeIfChanged(p.key, k); err != nil {
			return err
		}
		if err := writeIfChanged(p.cert, c); err != nil {
			return err
		}
	}
	return nil
}

// pairs tells whether key is the private key of cert (PEM both).
func pairs(cert, key []byte) bool {
	_, err := tls.X509KeyPair(cert, key)
	return err == nil
}

func writeIfChanged(path string, b []byte) error {
	if old, err := os.ReadFile(path); err == nil && bytes.Equal(old, b) {
		return os.Chmod(path, 0o600)
	}
	if err := atomicfile.WriteFile(path, b, 0o600); err != nil {
		return fmt.Errorf("trust: %w", err)
	}
	return nil
}

// ClientTLS is a TLS client config that trusts only the cluster CA and
// presents the certificate in certFile/keyFile.
func (id *Identity) ClientTLS(certFile, keyFile string) (*tls.Config, error) {
	kp, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, fmt.Errorf("trust: %w", err)
	}
	return &tls.Config{RootCAs: id.CAPool(), Certificates: []tls.Certificate{kp}, MinVersion: tls.VersionTLS12}, nil
}

// ReadToken reads a stored token (file mode 0600).
func ReadToken(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", err
	}
	return strings.TrimSpace(string(b)), nil
}

// WriteToken stores token at path, mode 0600, creating the directory.
func WriteToken(path, token string) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return fmt.Errorf("trust: create %s: %w", filepath.Dir(path), err)
	}
	return writeIfChanged(path, []byte(token+"\n"))
}

// EphemeralClientTLS is ClientTLS with a certificate made in memory for
// name, for checks that must not touch the disk.
func (id *Identity) EphemeralClientTLS(name string) (*tls.Config, error) {
	c, k, err := id.Issue(name, nil, Client)
	if err != nil {
		return nil, err
	}
	kp, err := tls.X509KeyPair(c, k)
	if err != nil {
		return nil, fmt.Errorf("trust: %w", err)
	}
	return &tls.Config{RootCAs: id.CAPool(), Certificates: []tls.Certificate{kp}, MinVersion: tls.VersionTLS12}, nil
}
