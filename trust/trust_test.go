package trust_test

import (
	"crypto/tls"
	"errors"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nodeha/nodeha/trust"
)

func TestSameTokenSameCAAndPasswordsOnEveryHost(t *testing.T) {
	tok := trust.GenerateToken()
	a, err := trust.FromToken(tok)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := trust.FromToken(tok)
	if a.Fingerprint() != b.Fingerprint() {
		t.Fatal("two hosts with the same token derived different CAs")
	}
	if a.Password("superuser") != b.Password("superuser") || len(a.Password("superuser")) < 24 {
		t.Fatalf("passwords differ or are short: %q", a.Password("superuser"))
	}
	if a.Password("superuser") == a.Password("replication") {
		t.Fatal("two purposes got the same password")
	}
	// A certificate issued on host a verifies on host b.
	cert, _, err := a.Issue("pg1", []netip.Addr{netip.MustParseAddr("10.0.0.1")}, trust.ServerAndClient)
	if err != nil {
		t.Fatal(err)
	}
	if !b.IssuedBy(cert) {
		t.Fatal("a certificate from host a does not verify against host b's CA")
	}
	other, _ := trust.FromToken(trust.GenerateToken())
	if other.Fingerprint() == a.Fingerprint() || other.IssuedBy(cert) {
		t.Fatal("another token's CA accepts this cluster's certificate")
	}
	if other.Password("superuser") == a.Password("superuser") {
		t.Fatal("another token derived the same password")
	}
}

func TestCheckToken(t *testing.T) {
	for _, tc := range []struct{ tok, want string }{
		{trust.GenerateToken(), ""},
		{"an-operator-chosen-token-of-length", ""},
		{"", "empty"},
		{"short", "at least 24"},
		{"nodeha1.damaged", "damaged"},
		{"has a space in it somewhere long", "whitespace"},
	} {
		err := trust.CheckToken(tc.tok)
		if tc.want == "" {
			if err != nil {
				t.Errorf("CheckToken(%q) = %v", tc.tok, err)
			}
			continue
		}
		if err == nil || !strings.Contains(err.Error(), tc.want) || !errors.Is(err, trust.ErrBadToken) {
			t.Errorf("CheckToken(%q) = %v, want ErrBadToken with %q", tc.tok, err, tc.want)
		}
		if err != nil && tc.tok != "" && strings.Contains(err.Error(), tc.tok) {
			t.Errorf("the error repeats the token: %v", err)
		}
	}
}

func TestEnsureHostKeepsGoodCertsAndRefusesAForeignHost(t *testing.T) {
	id, _ := trust.FromToken(trust.GenerateToken())
	f := trust.FilesIn(filepath.Join(t.TempDir(), "tls"))
	ips := []netip.Addr{netip.MustParseAddr("10.0.0.1"), netip.MustParseAddr("127.0.0.1")}
	if err := id.EnsureHost(f, "10.0.0.1", ips); err != nil {
		t.Fatal(err)
	}
	first, _ := os.ReadFile(f.Cert)
	for _, p := range []string{f.CA, f.Cert, f.Key, f.PatroniCrt, f.PatroniKey} {
		st, err := os.Stat(p)
		if err != nil || st.Mode().Perm() != 0o600 {
			t.Fatalf("%s: %v mode %v, want 0600", p, err, st.Mode().Perm())
		}
	}
	if err := id.EnsureHost(f, "10.0.0.1", ips); err != nil {
		t.Fatal(err)
	}
	if again, _ := os.ReadFile(f.Cert); string(again) != string(first) {
		t.Fatal("a restart reissued a certificate that was still right")
	}
	// A new address: a new certificate.
	if err := id.EnsureHost(f, "10.0.0.1", append(ips, netip.MustParseAddr("10.0.0.9"))); err != nil {
		t.Fatal(err)
	}
	if again, _ := os.ReadFile(f.Cert); string(again) == string(first) {
		t.Fatal("the certificate was kept although it lacks an address")
	}

	other, _ := trust.FromToken(trust.GenerateToken())
	before, _ := os.ReadFile(f.CA)
	err := other.EnsureHost(f, "10.0.0.1", ips)
	if !errors.Is(err, trust.ErrForeign) {
		t.Fatalf("EnsureHost with another cluster's token = %v, want ErrForeign", err)
	}
	if after, _ := os.ReadFile(f.CA); string(after) != string(before) {
		t.Fatal("a refused token changed the host's files")
	}
}

// A TLS server with the cluster's certificate accepts a client with a
// certificate of the same cluster and refuses one of another cluster; a
// client of another cluster refuses the server before sending anything of
// its own.
func TestMutualTLS(t *testing.T) {
	dir := t.TempDir()
	id, _ := trust.FromToken(trust.GenerateToken())
	f := trust.FilesIn(filepath.Join(dir, "a"))
	if err := id.EnsureHost(f, "127.0.0.1", []netip.Addr{netip.MustParseAddr("127.0.0.1")}); err != nil {
		t.Fatal(err)
	}
	kp, err := tls.LoadX509KeyPair(f.Cert, f.Key)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{
		Certificates: []tls.Certificate{kp}, ClientCAs: id.CAPool(), ClientAuth: tls.RequireAndVerifyClientCert,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { c.(*tls.Conn).Handshake(); c.Write([]byte("ok")); c.Close() }()
		}
	}()
	dial := func(cfg *tls.Config) error {
		c, err := tls.Dial("tcp", ln.Addr().String(), cfg)
		if err != nil {
			return err
		}
		defer c.Close()
		buf := make([]byte, 2)
		_, err = c.Read(buf)
		return err
	}
	good, err := id.ClientTLS(f.PatroniCrt, f.PatroniKey)
	if err != nil {
		t.Fatal(err)
	}
	if err := dial(good); err != nil {
		t.Fatalf("a client of the same cluster was refused: %v", err)
	}

	other, _ := trust.FromToken(trust.GenerateToken())
	of := trust.FilesIn(filepath.Join(dir, "b"))
	other.EnsureHost(of, "127.0.0.1", []netip.Addr{netip.MustParseAddr("127.0.0.1")})
	// Trusts our CA, presents the other cluster's certificate: refused by the server.
	bad, _ := other.ClientTLS(of.PatroniCrt, of.PatroniKey)
	bad.RootCAs = id.CAPool()
	if err := dial(bad); err == nil {
		t.Fatal("a client certificate of another cluster was accepted")
	}
	// No certificate at all: refused.
	if err := dial(&tls.Config{RootCAs: id.CAPool()}); err == nil {
		t.Fatal("a client without a certificate was accepted")
	}
	// The other cluster's client does not trust our server.
	sent := false
	probe, _ := other.ClientTLS(of.PatroniCrt, of.PatroniKey)
	probe.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
		sent = true
		return &probe.Certificates[0], nil
	}
	probe.Certificates = nil
	if err := dial(probe); err == nil {
		t.Fatal("a client of another cluster accepted this cluster's server")
	}
	if sent {
		t.Fatal("the client sent its certificate before checking the server's CA")
	}
	// Plain TCP gets nothing but a failed handshake.
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	c.Write([]byte("GET /version HTTP/1.1\r\nHost: x\r\n\r\n"))
	buf := make([]byte, 64)
	n, _ := c.Read(buf)
	c.Close()
	if strings.Contains(string(buf[:n]), "HTTP/1.1 200") {
		t.Fatal("plain HTTP was answered")
	}
}

// A crash between writing a new key and its certificate left a pair that
// does not belong together, and every later start failed to load it: the
// next EnsureHost must issue a new pair.
func TestEnsureHostRepairsATornPair(t *testing.T) {
	id, _ := trust.FromToken(trust.GenerateToken())
	f := trust.FilesIn(filepath.Join(t.TempDir(), "tls"))
	ips := []netip.Addr{netip.MustParseAddr("10.0.0.1")}
	if err := id.EnsureHost(f, "10.0.0.1", ips); err != nil {
		t.Fatal(err)
	}
	_, newKey, err := id.Issue("10.0.0.1", ips, trust.ServerAndClient)
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(f.Key, newKey, 0o600) // the key of the next pair, not its certificate
	if _, err := id.ClientTLS(f.Cert, f.Key); err == nil {
		t.Fatal("test setup: the torn pair loads")
	}
	if err := id.EnsureHost(f, "10.0.0.1", ips); err != nil {
		t.Fatal(err)
	}
	if _, err := id.ClientTLS(f.Cert, f.Key); err != nil {
		t.Fatalf("after EnsureHost the pair still does not load: %v", err)
	}
}
