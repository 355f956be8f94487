package testcluster

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
	"strconv"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
)

// The S3 test server: Versity S3 Gateway (testimage/build-s3.sh, make
// image-s3), its posix backend over a directory of this machine.
const (
	S3Image  = "nodeha-s3-test:v1.8.0"
	S3Port   = 7070 // versitygw's own default
	S3Region = "us-east-1"
)

// S3 is a real S3-compatible server (Versity S3 Gateway, posix backend)
// on a cluster's network, over HTTPS with a certificate of a CA made for
// the purpose (the e2e tests' backup target, the benchmark's archive).
type S3 struct {
	Endpoint  string // https://IP:PORT
	CAFile    string // PEM of the CA that signed the server's certificate (a file on this machine)
	AccessKey string
	SecretKey string
	Name      string // container name
	Region    string // the region the server signs for (S3Region)

	DataDir string       // the backend's directory (every bucket a folder of it), /data in the container
	client  *http.Client // trusts CAFile only
}

// StartS3 runs the S3 server, as container <prefix>-s3 (an old one of
// that name is removed first), at address ip of c's network (which must
// exist), reachable there only (no published port), as this process's
// uid and gid so that its files (under dir: certs/ and data/) are this
// process's to read and remove. It returns once the server answers an S3
// request; when it does not, the container is removed and the error
// holds the end of its log.
func StartS3(ctx context.Context, c *Cluster, ip, dir string) (*S3, error) {
	if _, err := Docker(ctx, "image", "inspect", S3Image); err != nil {
		return nil, fmt.Errorf("image %s is missing: build it with `bash testimage/build-s3.sh` (make image-s3)", S3Image)
	}
	name := c.Opts.Prefix + "-s3"
	certs, data := filepath.Join(dir, "certs"), filepath.Join(dir, "data")
	for _, d := range []string{certs, data} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return nil, err
		}
	}
	caPEM, err := s3Certificates(certs, ip, name)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caPEM)
	s := &S3{
		Endpoint:  fmt.Sprintf("https://%s:%d", ip, S3Port),
		CAFile:    filepath.Join(certs, "ca.crt"),
		AccessKey: "NODEHA" + rand.Text()[:14],
		SecretKey: rand.Text() + rand.Text()[:14],
		Name:      name,
		Region:    S3Region,
		DataDir:   data,
		client: &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
			TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12},
		}},
	}
	// The posix backend keeps each object's metadata (ETag, checksums,
	// content type) in user.* extended attributes of its file: the
	// machine's file system under dir must have them (ext4 does, tmpfs
	// since Linux 6.6). --iam-dir: versitygw's own IAM store (with no user
	// but root), so that an unknown access key is refused as S3 refuses it
	// (403 InvalidAccessKeyId) where its single-account mode answers 404
	// XAdminUserNotFound.
	Docker(ctx, "rm", "-f", name)
	if _, err := Docker(ctx, "run", "-d", "--name", name, "--hostname", name,
		"--network", c.Network(), "--ip", ip, "--user", fmt.Sprintf("%d:%d", os.Getuid(), os.Getgid()),
		"--label", "io.nodeha.testcluster="+c.Opts.Prefix,
		"-v", certs+":/certs:ro", "-v", data+":/data", S3Image,
		"--port", fmt.Sprintf(":%d", S3Port), "--cert", "/certs/server.crt", "--key", "/certs/server.key",
		"--access", s.AccessKey, "--secret", s.SecretKey, "--region", S3Region, "--iam-dir", "/tmp",
		"posix", "/data"); err != nil {
		Docker(context.Background(), "rm", "-f", name)
		return nil, err
	}
	if err := s.waitUp(ctx); err != nil {
		err = fmt.Errorf("%w\n%s's log (end):\n%s", err, name, s.Logs(context.Background(), 40))
		s.Remove(context.Background())
		return nil, err
	}
	return s, nil
}

// s3Certificates writes a CA (ca.crt) and a certificate it signed for ip
// and name (server.crt, server.key), ECDSA P-256, into dir, and returns
// the CA's PEM.
func s3Certificates(dir, ip, name string) ([]byte, error) {
	limit := new(big.Int).Lsh(big.NewInt(1), 127)
	caSerial, err := rand.Int(rand.Reader, limit)
	if err != nil {
		return nil, err
	}
	srvSerial, err := rand.Int(rand.Reader, limit)
	if err != nil {
		return nil, err
	}
	now := time.Now()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	ca := &x509.Certificate{
		SerialNumber: caSerial, Subject: pkix.Name{CommonName: "nodeha e2e S3 CA"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, MaxPathLenZero: true,
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, ca, ca, &caKey.PublicKey, caKey)
	if err != nil {
		return nil, err
	}
	if ca, err = x509.ParseCertificate(caDER); err != nil {
		return nil, err
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	srv := &x509.Certificate{
		SerialNumber: srvSerial, Subject: pkix.Name{CommonName: name},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IPAddresses: []net.IP{net.ParseIP(ip)}, DNSNames: []string{name},
	}
	srvDER, err := x509.CreateCertificate(rand.Reader, srv, ca, &key.PublicKey, caKey)
	if err != nil {
		return nil, err
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, err
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
			return nil, err
		}
	}
	return caPEM, nil
}

// MakeBucket creates a bucket (whatever way versitygw needs) and returns
// when it can be listed. The posix backend's buckets are the folders of
// its directory: the bucket is made as one (running or stopped, as an
// operator would), then listed with a signed ListObjectsV2.
func (s *S3) MakeBucket(ctx context.Context, name string) error {
	if err := os.Mkdir(filepath.Join(s.DataDir, name), 0o755); err != nil && !errors.Is(err, os.ErrExist) {
		return err
	}
	return eventually(ctx, 30*time.Second, func() error {
		code, body, err := s.Request(ctx, http.MethodGet, "/"+name+"?list-type=2", nil, s.Creds())
		if err == nil && code != http.StatusOK {
			err = fmt.Errorf("list bucket %s: %d %s", name, code, body)
		}
		return err
	})
}

// Stop and Start the server (same data) to simulate the backup target
// being down for a while.
func (s *S3) Stop(ctx context.Context) error {
	_, err := Docker(ctx, "stop", "-t", "10", s.Name)
	return err
}

// Start starts the stopped server and waits until it answers.
func (s *S3) Start(ctx context.Context) error {
	if _, err := Docker(ctx, "start", s.Name); err != nil {
		return err
	}
	return s.waitUp(ctx)
}

// Remove removes the server's container (its files under the directory
// StartS3 was given stay, the caller's to remove).
func (s *S3) Remove(ctx context.Context) error {
	_, err := Docker(ctx, "rm", "-f", s.Name)
	return err
}

// Logs is the last n lines of the server's output.
func (s *S3) Logs(ctx context.Context, n int) string {
	out, _ := exec.CommandContext(ctx, "docker", "logs", "--tail", strconv.Itoa(n), s.Name).CombinedOutput()
	return string(out)
}

// waitUp waits until the server answers, over TLS with a certificate of
// its CA, an unsigned request with an S3 error (AccessDenied).
func (s *S3) waitUp(ctx context.Context) error {
	return eventually(ctx, time.Minute, func() error {
		code, body, err := s.Request(ctx, http.MethodGet, "/", nil, nil)
		if err == nil && (code != http.StatusForbidden || !bytes.Contains(body, []byte("<Code>AccessDenied</Code>"))) {
			err = fmt.Errorf("%s: unsigned GET /: %d %s, want 403 AccessDenied", s.Name, code, body)
		}
		return err
	})
}

// eventually calls f until it succeeds, every 300ms, for up to timeout,
// and returns its last error.
func eventually(ctx context.Context, timeout time.Duration, f func() error) error {
	deadline := time.Now().Add(timeout)
	for {
		err := f()
		if err == nil {
			return nil
		}
		if !time.Now().Before(deadline) {
			return fmt.Errorf("after %v: %w", timeout, err)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w (last: %v)", ctx.Err(), err)
		case <-time.After(300 * time.Millisecond):
		}
	}
}

// Creds are the server's root credentials.
func (s *S3) Creds() *aws.Credentials {
	return &aws.Credentials{AccessKeyID: s.AccessKey, SecretAccessKey: s.SecretKey}
}

// Request sends one path-style request (path is /BUCKET[/KEY][?QUERY]),
// signed with Signature V4 and creds (unsigned when nil), and returns the
// status and the body.
func (s *S3) Request(ctx context.Context, method, path string, body []byte, creds *aws.Credentials) (int, []byte, error) {
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

// ArchiveEnv writes the secrets host h needs to archive to this server
// into h.Dir/secrets (the only directory its nodeha container sees, at
// the same path): the credentials file s3.env (mode 0600), the server's
// CA s3-ca.crt, and, when keyFile is not empty, a copy of that age
// identity, backup.key (0600). It returns h's NODEHA_BACKUP_* settings
// for target s3://bucket/prefix (without NODEHA_BACKUP_ENCRYPTION_KEY_FILE
// when keyFile is empty: not encrypted), for h.Extra.
func (s *S3) ArchiveEnv(h *Host, bucket, prefix, keyFile string) ([]string, error) {
	dir := filepath.Join(h.Dir, "secrets")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	caPEM, err := os.ReadFile(s.CAFile)
	if err != nil {
		return nil, err
	}
	type file struct {
		name string
		data []byte
		mode os.FileMode
	}
	files := []file{
		{"s3.env", fmt.Appendf(nil, "AWS_ACCESS_KEY_ID=%s\nAWS_SECRET_ACCESS_KEY=%s\n", s.AccessKey, s.SecretKey), 0o600},
		{"s3-ca.crt", caPEM, 0o644},
	}
	if keyFile != "" {
		key, err := os.ReadFile(keyFile)
		if err != nil {
			return nil, err
		}
		files = append(files, file{"backup.key", key, 0o600})
	}
	for _, f := range files {
		p := filepath.Join(dir, f.name)
		if err := os.WriteFile(p, f.data, f.mode); err != nil {
			return nil, err
		}
		// WriteFile keeps an existing file's mode.
		if err := os.Chmod(p, f.mode); err != nil {
			return nil, err
		}
	}
	target := "s3://" + bucket
	if prefix != "" {
		target += "/" + prefix
	}
	env := []string{
		"NODEHA_BACKUP_TARGET=" + target,
		"NODEHA_BACKUP_S3_ENDPOINT=" + s.Endpoint,
		"NODEHA_BACKUP_S3_CA_FILE=" + filepath.Join(dir, "s3-ca.crt"),
		"NODEHA_BACKUP_S3_CREDENTIALS_FILE=" + filepath.Join(dir, "s3.env"),
	}
	if keyFile != "" {
		env = append(env, "NODEHA_BACKUP_ENCRYPTION_KEY_FILE="+filepath.Join(dir, "backup.key"))
	}
	return env, nil
}
