//go:build e2e

package e2e

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"

	"github.com/nodeha/nodeha/internal/testcluster"
)

// The S3 test server: Versity S3 Gateway (testimage/build-s3.sh, make
// image-s3), its posix backend over a directory of this machine.
const (
	s3Image  = "nodeha-s3-test:v1.8.0"
	s3Port   = 7070 // versitygw's own default
	s3Region = "us-east-1"
	s3Net    = 14 // third octet of TestS3Server's network
)

// s3Server is a real S3-compatible server (Versity S3 Gateway, posix backend)
// on the cluster's network, over HTTPS with a certificate of a CA made for the test.
type s3Server struct {
	Endpoint  string // https://IP:PORT
	CAFile    string // PEM of the CA that signed the server's certificate (a file on this machine)
	AccessKey string
	SecretKey string
	Name      string // container name
	Region    string // the region the server signs for (s3Region)

	dataDir string       // the backend's directory (every bucket a folder of it), /data in the container
	client  *http.Client // trusts CAFile only
}

// startS3 runs the S3 server at address ip of c's network, reachable
// there only (no published port), as this process's uid and gid so that
// its files (in a t.TempDir()) are this process's to read and remove.
// It returns once the server answers an S3 request.
func startS3(t testing.TB, c *testcluster.Cluster, ip string) *s3Server {
	t.Helper()
	ctx := context.Background()
	if _, err := testcluster.Docker(ctx, "image", "inspect", s3Image); err != nil {
		t.Fatalf("image %s is missing: build it with `bash testimage/build-s3.sh` (make image-s3)", s3Image)
	}
	name := c.Opts.Prefix + "-s3"
	certs, data := t.TempDir(), t.TempDir()
	caPEM := s3Certificates(t, certs, ip, name)
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caPEM)
	s := &s3Server{
		Endpoint:  fmt.Sprintf("https://%s:%d", ip, s3Port),
		CAFile:    filepath.Join(certs, "ca.crt"),
		AccessKey: "NODEHA" + rand.Text()[:14],
		SecretKey: rand.Text() + rand.Text()[:14],
		Name:      name,
		Region:    s3Region,
		dataDir:   data,
		client: &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
			TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12},
		}},
	}
	// The posix backend keeps each object's metadata (ETag, checksums,
	// content type) in user.* extended attributes of its file: the
	// machine's file system under t.TempDir() must have them (ext4 does,
	// tmpfs since Linux 6.6). --iam-dir: versitygw's own IAM store (with no user but
	// root), so that an unknown access key is refused as S3 refuses it
	// (403 InvalidAccessKeyId) where its single-account mode answers 404
	// XAdminUserNotFound.
	testcluster.Docker(ctx, "rm", "-f", name)
	t.Cleanup(func() {
		if t.Failed() {
			out, _ := exec.Command("docker", "logs", "--tail", "40", name).CombinedOutput()
			t.Logf("%s's log (end):\n%s", name, out)
		}
		testcluster.Docker(context.Background(), "rm", "-f", name)
	})
	if _, err := testcluster.Docker(ctx, "run", "-d", "--name", name, "--hostname", name,
		"--network", c.Network(), "--ip", ip, "--user", fmt.Sprintf("%d:%d", os.Getuid(), os.Getgid()),
		"--label", "io.nodeha.testcluster="+c.Opts.Prefix,
		"-v", certs+":/certs:ro", "-v", data+":/data", s3Image,
		"--port", fmt.Sprintf(":%d", s3Port), "--cert", "/certs/server.crt", "--key", "/certs/server.key",
		"--access", s.AccessKey, "--secret", s.SecretKey, "--region", s3Region, "--iam-dir", "/tmp",
		"posix", "/data"); err != nil {
		t.Fatal(err)
	}
	s.waitUp(t)
	return s
}

// s3Certificates writes a CA (ca.crt) and a certificate it signed for ip
// and name (server.crt, server.key), ECDSA P-256, into dir, and returns
// the CA's PEM.
func s3Certificates(t testing.TB, dir, ip, name string) []byte {
	t.Helper()
	serial := func() *big.Int {
		n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	now := time.Now()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	ca := &x509.Certificate{
		SerialNumber: serial(), Subject: pkix.Name{CommonName: "nodeha e2e S3 CA"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, MaxPathLenZero: true,
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, ca, ca, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	if ca, err = x509.ParseCertificate(caDER); err != nil {
		t.Fatal(err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	srv := &x509.Certificate{
		SerialNumber: serial(), Subject: pkix.Name{CommonName: name},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IPAddresses: []net.IP{net.ParseIP(ip)}, DNSNames: []string{name},
	}
	srvDER, err := x509.CreateCertificate(rand.Reader, srv, ca, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	caPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER})
	for f, b := range map[string][]byte{
		"ca.crt":     caPEM,
		"server.crt": pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srvDER}),
		"server.key": pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}),
	} {
		mode := os.FileMode(0o644)
		if f == "server.key" {
			mode = 0o600 // the server runs as this process's uid
		}
		if err := os.WriteFile(filepath.Join(dir, f), b, mode); err != nil {
			t.Fatal(err)
		}
	}
	return caPEM
}

// makeBucket creates a bucket (whatever way versitygw needs) and returns when it can be listed.
// The posix backend's buckets are the folders of its directory: the
// bucket is made as one (running or stopped, as an operator would), then
// listed with a signed ListObjectsV2.
func (s *s3Server) makeBucket(t testing.TB, name string) {
	t.Helper()
	if err := os.Mkdir(filepath.Join(s.dataDir, name), 0o755); err != nil && !errors.Is(err, os.ErrExist) {
		t.Fatal(err)
	}
	eventually(t, 30*time.Second, func() error {
		code, body, err := s.request(context.Background(), http.MethodGet, "/"+name+"?list-type=2", nil, s.creds())
		if err == nil && code != http.StatusOK {
			err = fmt.Errorf("list bucket %s: %d %s", name, code, body)
		}
		return err
	})
}

// stop and start the server (same data) to simulate the backup target being down for a while.
func (s *s3Server) stop(t testing.TB) {
	t.Helper()
	if _, err := testcluster.Docker(context.Background(), "stop", "-t", "10", s.Name); err != nil {
		t.Fatal(err)
	}
}

func (s *s3Server) start(t testing.TB) {
	t.Helper()
	if _, err := testcluster.Docker(context.Background(), "start", s.Name); err != nil {
		t.Fatal(err)
	}
	s.waitUp(t)
}

// waitUp waits until the server answers, over TLS with a certificate of
// the test's CA, an unsigned request with an S3 error (AccessDenied).
func (s *s3Server) waitUp(t testing.TB) {
	t.Helper()
	eventually(t, time.Minute, func() error {
		code, body, err := s.request(context.Background(), http.MethodGet, "/", nil, nil)
		if err == nil && (code != http.StatusForbidden || !bytes.Contains(body, []byte("<Code>AccessDenied</Code>"))) {
			err = fmt.Errorf("%s: unsigned GET /: %d %s, want 403 AccessDenied", s.Name, code, body)
		}
		return err
	})
}

// creds are the server's root credentials.
func (s *s3Server) creds() *aws.Credentials {
	return &aws.Credentials{AccessKeyID: s.AccessKey, SecretAccessKey: s.SecretKey}
}

// request sends one path-style request (path is /BUCKET[/KEY][?QUERY]),
// signed with Signature V4 and creds (unsigned when nil), and returns the
// status and the body.
func (s *s3Server) request(ctx context.Context, method, path string, body []byte, creds *aws.Credentials) (int, []byte, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, s.Endpoint+path, bytes.NewReader(body))
	if err != nil {
		return 0, nil, err
	}
	if creds != nil {
		sum := sha256.Sum256(body)
		hash := hex.EncodeToString(sum[:])
		req.Header.Set("X-Amz-Content-Sha256", hash)
		if err := v4.NewSigner().SignHTTP(ctx, *creds, req, hash, "s3", s.Region, time.Now()); err != nil {
			return 0, nil, err
		}
	}
	resp, err := s.client.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, b, err
}

// TestS3Server: the S3 test server on a network of its own (no nodeha
// host): a bucket, a signed PUT and GET, refusals of unsigned and
// wrongly signed requests, TLS with the test's CA only, and the data kept
// across a stop and a start.
func TestS3Server(t *testing.T) {
	ctx := context.Background()
	c, err := testcluster.New(clusterOpts("store", s3Net, testcluster.Options{BaseDir: t.TempDir()}))
	if err != nil {
		t.Fatal(err)
	}
	testcluster.Docker(ctx, "rm", "-f", c.Opts.Prefix+"-s3") // leftovers of an interrupted run
	c.Down(ctx, false)
	// No hosts: Up only creates the network.
	if err := c.Up(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Down(context.Background(), false) })

	s := startS3(t, c, addr(s3Net, 50))
	if out, err := testcluster.Docker(ctx, "port", s.Name); err != nil || out != "" {
		t.Fatalf("%s publishes ports: %q %v", s.Name, out, err)
	}
	const bucket = "nodeha-e2e"
	s.makeBucket(t, bucket)

	key := "/" + bucket + "/wal/000000010000000000000001"
	body := []byte(rand.Text() + "\x00\xff binary too")
	check := func(what string, code int, b []byte, err error, want int) {
		t.Helper()
		if err != nil || code != want {
			t.Fatalf("%s: %d %s %v, want %d", what, code, b, err, want)
		}
	}
	code, b, err := s.request(ctx, http.MethodPut, key, body, s.creds())
	check("signed PUT", code, b, err, http.StatusOK)
	code, b, err = s.request(ctx, http.MethodGet, key, nil, s.creds())
	check("signed GET", code, b, err, http.StatusOK)
	if !bytes.Equal(b, body) {
		t.Fatalf("signed GET: %q, want %q", b, body)
	}
	code, b, err = s.request(ctx, http.MethodGet, "/"+bucket+"?list-type=2&prefix=wal/", nil, s.creds())
	check("signed list", code, b, err, http.StatusOK)
	if !bytes.Contains(b, []byte("<Key>wal/000000010000000000000001</Key>")) {
		t.Fatalf("signed list: %s, want the object's key", b)
	}

	// Refused: no signature, a wrong secret, an unknown key; nothing
	// written by a refused PUT.
	wrongSecret := &aws.Credentials{AccessKeyID: s.AccessKey, SecretAccessKey: s.SecretKey + "x"}
	unknownKey := &aws.Credentials{AccessKeyID: "NODEHAUNKNOWN0000000", SecretAccessKey: s.SecretKey}
	for _, r := range []struct {
		what   string
		method string
		path   string
		creds  *aws.Credentials
		status int
		code   string
	}{
		{"unsigned GET", http.MethodGet, key, nil, http.StatusForbidden, "AccessDenied"},
		{"unsigned PUT", http.MethodPut, key + ".unsigned", nil, http.StatusForbidden, "AccessDenied"},
		{"unsigned list", http.MethodGet, "/" + bucket + "?list-type=2", nil, http.StatusForbidden, "AccessDenied"},
		{"GET signed with a wrong secret", http.MethodGet, key, wrongSecret, http.StatusForbidden, "SignatureDoesNotMatch"},
		{"PUT signed with a wrong secret", http.MethodPut, key + ".wrong", wrongSecret, http.StatusForbidden, "SignatureDoesNotMatch"},
		{"GET signed with an unknown key", http.MethodGet, key, unknownKey, http.StatusForbidden, "InvalidAccessKeyId"},
	} {
		var in []byte
		if r.method == http.MethodPut {
			in = []byte("refused")
		}
		code, b, err := s.request(ctx, r.method, r.path, in, r.creds)
		check(r.what, code, b, err, r.status)
		if !strings.Contains(string(b), "<Code>"+r.code+"</Code>") {
			t.Errorf("%s: %s, want %s", r.what, b, r.code)
		}
	}
	for _, k := range []string{key + ".unsigned", key + ".wrong"} {
		code, b, err := s.request(ctx, http.MethodGet, k, nil, s.creds())
		check("GET of a refused PUT", code, b, err, http.StatusNotFound)
	}

	// TLS: the server's certificate is the test CA's, for its address;
	// a client trusting the system's roots only refuses it.
	plain := &http.Client{Timeout: 10 * time.Second}
	if resp, err := plain.Get(s.Endpoint + "/"); err == nil {
		resp.Body.Close()
		t.Fatalf("GET %s trusting the system's roots: no error", s.Endpoint)
	} else if !strings.Contains(err.Error(), "certificate") {
		t.Fatalf("GET %s trusting the system's roots: %v, want a certificate error", s.Endpoint, err)
	}
	if _, err := os.Stat(s.CAFile); err != nil {
		t.Fatal(err)
	}

	// Down for a while, then back with the same data.
	s.stop(t)
	if code, b, err := s.request(ctx, http.MethodGet, key, nil, s.creds()); err == nil {
		t.Fatalf("GET while stopped: %d %s, want no answer", code, b)
	}
	s.start(t)
	code, b, err = s.request(ctx, http.MethodGet, key, nil, s.creds())
	check("signed GET after a restart", code, b, err, http.StatusOK)
	if !bytes.Equal(b, body) {
		t.Fatalf("signed GET after a restart: %q, want %q", b, body)
	}
}
