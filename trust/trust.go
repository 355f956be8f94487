// Package trust owns a cluster's identity: the join token, the cluster CA
// derived from it, the certificates of a host's etcd member and of its
// Patroni, and the PostgreSQL and REST API passwords every host derives from
// the same token.
//
// The token is the cluster's one secret. Everything else follows from it
// deterministically, so hosts booted at the same moment with the same token
// (cloud-init booting three VMs) agree on the CA and the passwords without
// talking to each other first:
//
//	CA key       = P-256 scalar from HKDF-SHA256(token, "nodeha ca key")
//	password(p)  = base64url(HKDF-SHA256(token, "nodeha password "+p))[:32]
//
// Whoever holds the token can mint certificates the cluster trusts: it
// grants full membership, like a k3s server token. Keep it like a root
// password (mode 0600 on every host).
//
// Usage:
//
//	id, err := trust.FromToken(token)
//	ca := id.CAPool()
//	certPEM, keyPEM, err := id.Issue("pg1", []netip.Addr{ip, loopback}, trust.ServerAndClient)
package trust

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/netip"
	"strings"
	"time"
)

// TokenPrefix starts every token nodeha generates.
const TokenPrefix = "nodeha1."

// MinTokenLength is the shortest token an operator may choose.
const MinTokenLength = 24

// ErrBadToken is returned for a token that cannot be a cluster's.
var ErrBadToken = errors.New("not a valid token")

// GenerateToken returns a new random token.
func GenerateToken() string {
	b := make([]byte, 32)
	rand.Read(b) // never fails (crypto/rand)
	return TokenPrefix + base64.RawURLEncoding.EncodeToString(b)
}

// CheckToken reports what is wrong with a token, if anything, without
// saying anything about its value.
func CheckToken(token string) error {
	switch {
	case token == "":
		return fmt.Errorf("%w: empty", ErrBadToken)
	case strings.ContainsAny(token, " \t\r\n\"'\\$`"):
		return fmt.Errorf("%w: it contains whitespace, quotes, '\\', '$' or '`'", ErrBadToken)
	case strings.HasPrefix(token, TokenPrefix):
		b, err := base64.RawURLEncoding.DecodeString(strings.TrimPrefix(token, TokenPrefix))
		if err != nil || len(b) != 32 {
			return fmt.Errorf("%w: it starts like a generated token (%s) but is damaged", ErrBadToken, TokenPrefix)
		}
	case len(token) < MinTokenLength:
		return fmt.Errorf("%w: %d characters, want at least %d (or run `nodeha token generate`)", ErrBadToken, len(token), MinTokenLength)
	}
	return nil
}

// Identity is a cluster's CA and secrets, derived from its token.
type Identity struct {
	token  string
	caKey  *ecdsa.PrivateKey
	caCert *x509.Certificate
	caDER  []byte
	// readers is the metrics readers' CA (see IssueMetricsReader).
	readers *x509.Certificate
	rdKey   *ecdsa.PrivateKey
}

// caSubject is the same for every cluster: a CA is told apart by its key.
var (
	caSubject      = pkix.Name{CommonName: "nodeha cluster CA", Organization: []string{"nodeha"}}
	readersSubject = pkix.Name{CommonName: "nodeha metrics readers CA", Organization: []string{"nodeha"}}
)

// FromToken derives the cluster identity.
func FromToken(token string) (*Identity, error) {
	if err := CheckToken(token); err != nil {
		return nil, err
	}
	key, der, cert, err := selfSignedCA(token, "nodeha ca key", caSubject)
	if err != nil {
		return nil, err
	}
	rdKey, _, rdCert, err := selfSignedCA(token, "nodeha metrics readers ca key", readersSubject)
	if err != nil {
		return nil, err
	}
	return &Identity{token: token, caKey: key, caCert: cert, caDER: der, readers: rdCert, rdKey: rdKey}, nil
}

// selfSignedCA derives a CA from the token: the key from info, the
// certificate from the key (the same on every host).
func selfSignedCA(token, info string, subject pkix.Name) (*ecdsa.PrivateKey, []byte, *x509.Certificate, error) {
	key, err := deriveKey(token, info)
	if err != nil {
		return nil, nil, nil, err
	}
	ski := keyID(&key.PublicKey)
	tmpl := &x509.Certificate{
		SerialNumber:          new(big.Int).SetBytes(ski[:8]),
		Subject:               subject,
		NotBefore:             time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC),
		NotAfter:              time.Date(2125, 1, 1, 0, 0, 0, 0, time.UTC),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
		SubjectKeyId:          ski,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("trust: create %s: %w", subject.CommonName, err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("trust: parse %s: %w", subject.CommonName, err)
	}
	return key, der, cert, nil
}

// deriveKey turns the token into a P-256 private key: HKDF output taken as
// a scalar, retried with a counter in the (2^-32) case it is not below the
// group order.
func deriveKey(token, info string) (*ecdsa.PrivateKey, error) {
	for i := uint32(0); i < 16; i++ {
		var ctr [4]byte
		binary.BigEndian.PutUint32(ctr[:], i)
		raw, err := hkdf.Key(sha256.New, []byte(token), nil, info+string(ctr[:]), 32)
		if err != nil {
			return nil, fmt.Errorf("trust: derive key: %w", err)
		}
		if k, err := ecdsa.ParseRawPrivateKey(elliptic.P256(), raw); err == nil {
			return k, nil
		}
	}
	return nil, errors.New("trust: derive key: no valid scalar")
}

func keyID(pub *ecdsa.PublicKey) []byte {
	der, _ := x509.MarshalPKIXPublicKey(pub)
	sum := sha256.Sum256(der)
	return sum[:20]
}

// Fingerprint names the cluster CA (the SHA-256 of its public key, hex):
// the same on every host of the cluster, different for every other token.
func (id *Identity) Fingerprint() string {
	der, _ := x509.MarshalPKIXPublicKey(&id.caKey.PublicKey)
	sum := sha256.Sum256(der)
	return hex.EncodeToString(sum[:])
}

// FingerprintOf names the CA a certificate chain was issued by, as
// Fingerprint does, from the chain's root.
func FingerprintOf(root *x509.Certificate) string {
	sum := sha256.Sum256(root.RawSubjectPublicKeyInfo)
	return hex.EncodeToString(sum[:])
}

// CAPEM is the CA certificate, PEM-encoded.
func (id *Identity) CAPEM() []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: id.caDER})
}

// CAPool is a pool with only the cluster CA.
func (id *Identity) CAPool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(id.caCert)
	return p
}

// Issued by reports whether certPEM was issued by this cluster's CA.
func (id *Identity) IssuedBy(certPEM []byte) bool {
	b, _ := pem.Decode(certPEM)
	if b == nil {
		return false
	}
	c, err := x509.ParseCertificate(b.Bytes)
	if err != nil {
		return false
	}
	_, err = c.Verify(x509.VerifyOptions{Roots: id.CAPool(), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}})
	return err == nil
}

// Usage says what a certificate is for.
type Usage int

const (
	// Client certificates authenticate to etcd (Patroni, nodeha commands).
	Client Usage = iota
	// ServerAndClient certificates serve etcd and talk to its peers.
	ServerAndClient
)

// Issue creates a key and a certificate for name, valid for ips, signed by
// the cluster CA. Both are PEM-encoded.
func (id *Identity) Issue(name string, ips []netip.Addr, u Usage) (certPEM, keyPEM []byte, err error) {
	return issue(id.caCert, id.caKey, name, ips, u, 100*365*24*time.Hour)
}

// MetricsReaderLifetime is how long a metrics reader's certificate is
// valid.
const MetricsReaderLifetime = 365 * 24 * time.Hour

// IssueMetricsReader creates a client certificate that reads nodeha's
// metrics and nothing else: it is signed by the metrics readers' CA, a CA
// of its own that etcd, Patroni's REST API and PostgreSQL do not trust, so
// the certificate handed to a Prometheus (often another team's) opens no
// door into the cluster. Valid for MetricsReaderLifetime.
func (id *Identity) IssueMetricsReader(name string) (certPEM, keyPEM []byte, err error) {
	return issue(id.readers, id.rdKey, name, nil, Client, MetricsReaderLifetime)
}

// ReadersPool is a pool with only the metrics readers' CA.
func (id *Identity) ReadersPool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(id.readers)
	return p
}

func issue(caCert *x509.Certificate, caKey *ecdsa.PrivateKey, name string, ips []netip.Addr, u Usage, lifetime time.Duration) (certPEM, keyPEM []byte, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("trust: key for %s: %w", name, err)
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, nil, fmt.Errorf("trust: serial for %s: %w", name, err)
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:   serial,
		Subject:        pkix.Name{CommonName: name, Organization: []string{"nodeha"}},
		NotBefore:      now.Add(-time.Hour),
		NotAfter:       now.Add(lifetime),
		KeyUsage:       x509.KeyUsageDigitalSignature,
		ExtKeyUsage:    []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		AuthorityKeyId: caCert.SubjectKeyId,
	}
	if u == ServerAndClient {
		tmpl.ExtKeyUsage = append(tmpl.ExtKeyUsage, x509.ExtKeyUsageServerAuth)
		for _, ip := range ips {
			tmpl.IPAddresses = append(tmpl.IPAddresses, net.IP(ip.AsSlice()))
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, &key.PublicKey, caKey)
	if err != nil {
		return nil, nil, fmt.Errorf("trust: certificate for %s: %w", name, err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return nil, nil, fmt.Errorf("trust: key for %s: %w", name, err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), nil
}

// CertCovers reports whether certPEM is for name and every one of ips.
func CertCovers(certPEM []byte, name string, ips []netip.Addr) bool {
	b, _ := pem.Decode(certPEM)
	if b == nil {
		return false
	}
	c, err := x509.ParseCertificate(b.Bytes)
	if err != nil || c.Subject.CommonName != name || time.Now().After(c.NotAfter) {
		return false
	}
	for _, ip := range ips {
		found := false
		for _, have := range c.IPAddresses {
			if have.Equal(net.IP(ip.AsSlice())) {
				found = true
			}
		}
		if !found {
			return false
		}
	}
	return true
}

// Password derives the password for purpose (e.g. "superuser"): the same
// on every host with the same token.
func (id *Identity) Password(purpose string) string {
	b, _ := hkdf.Key(sha256.New, []byte(id.token), nil, "nodeha password "+purpose, 24)
	return base64.RawURLEncoding.EncodeToString(b)
}
