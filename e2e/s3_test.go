//go:build e2e

package e2e

import (
	"bytes"
	"context"
	"crypto/rand"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"

	"github.com/nodeha/nodeha/internal/testcluster"
)

// s3Net is the third octet of TestS3Server's network.
const s3Net = 14

// s3Server is the S3 test server (testcluster.S3: Versity S3 Gateway,
// posix backend) on the cluster's network, over HTTPS with a certificate
// of a CA made for the test.
type s3Server struct{ *testcluster.S3 }

// startS3 runs the S3 server at address ip of c's network, reachable
// there only (no published port), as this process's uid and gid so that
// its files (in a t.TempDir()) are this process's to read and remove.
// It returns once the server answers an S3 request; the container is
// removed when the test ends (its log's end shown if the test failed).
func startS3(t testing.TB, c *testcluster.Cluster, ip string) *s3Server {
	t.Helper()
	s, err := testcluster.StartS3(context.Background(), c, ip, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("%s's log (end):\n%s", s.Name, s.Logs(context.Background(), 40))
		}
		s.Remove(context.Background())
	})
	return &s3Server{s}
}

// makeBucket creates a bucket and returns when it can be listed.
func (s *s3Server) makeBucket(t testing.TB, name string) {
	t.Helper()
	if err := s.MakeBucket(context.Background(), name); err != nil {
		t.Fatal(err)
	}
}

// stop and start the server (same data) to simulate the backup target being down for a while.
func (s *s3Server) stop(t testing.TB) {
	t.Helper()
	if err := s.Stop(context.Background()); err != nil {
		t.Fatal(err)
	}
}

func (s *s3Server) start(t testing.TB) {
	t.Helper()
	if err := s.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
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
	code, b, err := s.Request(ctx, http.MethodPut, key, body, s.Creds())
	check("signed PUT", code, b, err, http.StatusOK)
	code, b, err = s.Request(ctx, http.MethodGet, key, nil, s.Creds())
	check("signed GET", code, b, err, http.StatusOK)
	if !bytes.Equal(b, body) {
		t.Fatalf("signed GET: %q, want %q", b, body)
	}
	code, b, err = s.Request(ctx, http.MethodGet, "/"+bucket+"?list-type=2&prefix=wal/", nil, s.Creds())
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
		code, b, err := s.Request(ctx, r.method, r.path, in, r.creds)
		check(r.what, code, b, err, r.status)
		if !strings.Contains(string(b), "<Code>"+r.code+"</Code>") {
			t.Errorf("%s: %s, want %s", r.what, b, r.code)
		}
	}
	for _, k := range []string{key + ".unsigned", key + ".wrong"} {
		code, b, err := s.Request(ctx, http.MethodGet, k, nil, s.Creds())
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
	if code, b, err := s.Request(ctx, http.MethodGet, key, nil, s.Creds()); err == nil {
		t.Fatalf("GET while stopped: %d %s, want no answer", code, b)
	}
	s.start(t)
	code, b, err = s.Request(ctx, http.MethodGet, key, nil, s.Creds())
	check("signed GET after a restart", code, b, err, http.StatusOK)
	if !bytes.Equal(b, body) {
		t.Fatalf("signed GET after a restart: %q, want %q", b, body)
	}
}
