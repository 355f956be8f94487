package backup

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"

	"github.com/nodeha/nodeha/internal/atomicfile"
)

// ErrNotFound is an object that is not in the store.
var ErrNotFound = errors.New("not found")

// Object is one stored object.
type Object struct {
	Key      string
	Size     int64
	Modified time.Time
}

// Store is where backups and WAL live. Keys are slash-separated and
// relative to the target's prefix. Put replaces atomically: a reader sees
// the whole object or none.
type Store interface {
	Put(ctx context.Context, key string, body []byte) error
	Get(ctx context.Context, key string) (io.ReadCloser, error)
	// Stat returns ErrNotFound for a missing key.
	Stat(ctx context.Context, key string) (Object, error)
	// List returns every object under prefix, sorted by key.
	List(ctx context.Context, prefix string) ([]Object, error)
	Delete(ctx context.Context, key string) error
	// Check proves the store is reachable and writable with these
	// settings: one clear error otherwise.
	Check(ctx context.Context) error
}

// Open returns the Store of s.
func Open(s *Settings) (Store, error) {
	u, err := url.Parse(s.Target)
	if err != nil {
		return nil, fmt.Errorf("backup: target %q: %w", s.Target, err)
	}
	switch u.Scheme {
	case "file":
		return &fileStore{root: u.Path}, nil
	case "s3":
		return newS3Store(s, u.Host, strings.Trim(u.Path, "/"))
	}
	return nil, fmt.Errorf("backup: target %q: the scheme must be s3:// or file://", s.Target)
}

// fileStore keeps objects as files under root (an NFS mount, say).
type fileStore struct{ root string }

func (f *fileStore) path(key string) string { return filepath.Join(f.root, filepath.FromSlash(key)) }

func (f *fileStore) Put(_ context.Context, key string, body []byte) error {
	p := f.path(key)
	if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
		return fmt.Errorf("backup: %w", err)
	}
	if err := atomicfile.WriteFile(p, body, 0o600); err != nil {
		return fmt.Errorf("backup: %w", err)
	}
	return nil
}

func (f *fileStore) Get(_ context.Context, key string) (io.ReadCloser, error) {
	r, err := os.Open(f.path(key))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("backup: %s: %w", key, ErrNotFound)
	}
	return r, err
}

func (f *fileStore) Stat(_ context.Context, key string) (Object, error) {
	fi, err := os.Stat(f.path(key))
	if errors.Is(err, fs.ErrNotExist) {
		return Object{}, fmt.Errorf("backup: %s: %w", key, ErrNotFound)
	} else if err != nil {
		return Object{}, fmt.Errorf("backup: %w", err)
	}
	return Object{Key: key, Size: fi.Size(), Modified: fi.ModTime()}, nil
}

func (f *fileStore) List(_ context.Context, prefix string) ([]Object, error) {
	var out []Object
	dir := f.path(prefix)
	if !strings.HasSuffix(prefix, "/") {
		dir = filepath.Dir(dir)
	}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil
			}
			return err
		}
		if d.IsDir() || strings.Contains(d.Name(), ".tmp") {
			return nil
		}
		rel, err := filepath.Rel(f.root, p)
		if err != nil {
			return err
		}
		key := filepath.ToSlash(rel)
		if !strings.HasPrefix(key, prefix) {
			return nil
		}
		fi, err := d.Info()
		if err != nil {
			return nil // gone meanwhile
		}
		out = append(out, Object{Key: key, Size: fi.Size(), Modified: fi.ModTime()})
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("backup: list %s: %w", dir, err)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Key < out[j].Key })
	return out, nil
}

func (f *fileStore) Delete(_ context.Context, key string) error {
	if err := os.Remove(f.path(key)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("backup: %w", err)
	}
	return nil
}

func (f *fileStore) Check(ctx context.Context) error {
	fi, err := os.Stat(f.root)
	if err != nil {
		return fmt.Errorf("backup: target directory %s: %w", f.root, err)
	}
	if !fi.IsDir() {
		return fmt.Errorf("backup: target %s is not a directory", f.root)
	}
	probe := ".nodeha-check"
	if err := f.Put(ctx, probe, []byte("ok")); err != nil {
		return fmt.Errorf("backup: target directory %s is not writable: %w", f.root, err)
	}
	return f.Delete(ctx, probe)
}

// s3Store speaks the S3 REST API (path-style, Signature V4) to one bucket.
type s3Store struct {
	endpoint *url.URL
	bucket   string
	prefix   string // "" or "a/b/"
	region   string
	creds    aws.Credentials
	signer   *v4.Signer
	hc       *http.Client
}

func newS3Store(s *Settings, bucket, prefix string) (*s3Store, error) {
	if bucket == "" {
		return nil, fmt.Errorf("backup: target %q names no bucket (s3://BUCKET/PREFIX)", s.Target)
	}
	ep, err := url.Parse(s.S3Endpoint)
	if err != nil || ep.Host == "" || (ep.Scheme != "https" && ep.Scheme != "http") {
		return nil, fmt.Errorf("backup: S3 endpoint %q: want https://HOST[:PORT]", s.S3Endpoint)
	}
	if ep.Scheme != "https" {
		// Credentials and data in clear text: never.
		return nil, fmt.Errorf("backup: S3 endpoint %q: only https is allowed", s.S3Endpoint)
	}
	tc := &tls.Config{MinVersion: tls.VersionTLS12}
	if s.S3CA != "" {
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM([]byte(s.S3CA)) {
			return nil, errors.New("backup: the S3 CA holds no PEM certificate")
		}
		tc.RootCAs = pool
	}
	tr := &http.Transport{
		Proxy:                 http.ProxyFromEnvironment,
		DialContext:           (&net.Dialer{Timeout: 10 * time.Second}).DialContext,
		TLSClientConfig:       tc,
		TLSHandshakeTimeout:   10 * time.Second,
		ResponseHeaderTimeout: 60 * time.Second,
		MaxIdleConnsPerHost:   4,
	}
	if prefix != "" {
		prefix += "/"
	}
	region := s.S3Region
	if region == "" {
		region = "us-east-1"
	}
	return &s3Store{
		endpoint: ep, bucket: bucket, prefix: prefix, region: region,
		creds:  aws.Credentials{AccessKeyID: s.AccessKeyID, SecretAccessKey: s.SecretAccessKey},
		signer: v4.NewSigner(), hc: &http.Client{Transport: tr},
	}, nil
}

func (s *s3Store) url(key string, q url.Values) string {
	u := *s.endpoint
	u.Path = "/" + s.bucket + "/" + s.prefix + key
	if key == "" { // the bucket itself: a list, with the prefix in the query
		u.Path = "/" + s.bucket
	}
	u.RawQuery = q.Encode()
	return u.String()
}

const emptySHA256 = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"

// do signs and sends one request; body may be nil.
func (s *s3Store) do(ctx context.Context, method, key string, q url.Values, body []byte) (*http.Response, error) {
	var rd io.Reader
	hash := emptySHA256
	if body != nil {
		rd = bytes.NewReader(body)
		sum := sha256.Sum256(body)
		hash = hex.EncodeToString(sum[:])
	}
	req, err := http.NewRequestWithContext(ctx, method, s.url(key, q), rd)
	if err != nil {
		return nil, fmt.Errorf("backup: %w", err)
	}
	if body != nil {
		req.ContentLength = int64(len(body))
	}
	req.Header.Set("X-Amz-Content-Sha256", hash)
	if err := s.signer.SignHTTP(ctx, s.creds, req, hash, "s3", s.region, time.Now()); err != nil {
		return nil, fmt.Errorf("backup: sign request: %w", err)
	}
	resp, err := s.hc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("backup: S3 %s %s: %w", method, s.endpoint.Host, err)
	}
	return resp, nil
}

// s3Error is the body of an S3 error response.
type s3Error struct {
	Code    string `xml:"Code"`
	Message string `xml:"Message"`
}

// failure turns an unsuccessful response into one line an operator can act on.
func (s *s3Store) failure(resp *http.Response, what string) error {
	defer resp.Body.Close()
	var e s3Error
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	_ = xml.Unmarshal(b, &e)
	if resp.StatusCode == http.StatusNotFound && (e.Code == "NoSuchKey" || e.Code == "" && resp.Request.Method == http.MethodHead) {
		return fmt.Errorf("backup: %s: %w", what, ErrNotFound)
	}
	hint := ""
	switch e.Code {
	case "NoSuchBucket":
		hint = fmt.Sprintf(": bucket %q does not exist (NODEHA_BACKUP_TARGET)", s.bucket)
	case "InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied":
		hint = ": the S3 credentials were refused (NODEHA_BACKUP_S3_CREDENTIALS_FILE)"
	}
	if e.Code == "" {
		e.Code = resp.Status
	}
	return fmt.Errorf("backup: S3 %s: %s%s", what, e.Code, hint)
}

func (s *s3Store) Put(ctx context.Context, key string, body []byte) error {
	resp, err := s.do(ctx, http.MethodPut, key, nil, body)
	if err != nil {
		return err
	}
	if resp.StatusCode/100 != 2 {
		return s.failure(resp, "put "+key)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	return resp.Body.Close()
}

func (s *s3Store) Get(ctx context.Context, key string) (io.ReadCloser, error) {
	resp, err := s.do(ctx, http.MethodGet, key, nil, nil)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode/100 != 2 {
		return nil, s.failure(resp, "get "+key)
	}
	return resp.Body, nil
}

func (s *s3Store) Stat(ctx context.Context, key string) (Object, error) {
	resp, err := s.do(ctx, http.MethodHead, key, nil, nil)
	if err != nil {
		return Object{}, err
	}
	if resp.StatusCode/100 != 2 {
		return Object{}, s.failure(resp, "stat "+key)
	}
	resp.Body.Close()
	mod, _ := http.ParseTime(resp.Header.Get("Last-Modified"))
	return Object{Key: key, Size: resp.ContentLength, Modified: mod}, nil
}

type listResult struct {
	Contents []struct {
		Key          string    `xml:"Key"`
		Size         int64     `xml:"Size"`
		LastModified time.Time `xml:"LastModified"`
	} `xml:"Contents"`
	IsTruncated           bool   `xml:"IsTruncated"`
	NextContinuationToken string `xml:"NextContinuationToken"`
}

func (s *s3Store) List(ctx context.Context, prefix string) ([]Object, error) {
	var out []Object
	token := ""
	for {
		q := url.Values{"list-type": {"2"}, "prefix": {s.prefix + prefix}}
		if token != "" {
			q.Set("continuation-token", token)
		}
		resp, err := s.do(ctx, http.MethodGet, "", q, nil)
		if err != nil {
			return nil, err
		}
		if resp.StatusCode/100 != 2 {
			return nil, s.failure(resp, "list "+prefix)
		}
		var r listResult
		err = xml.NewDecoder(resp.Body).Decode(&r)
		resp.Body.Close()
		if err != nil {
			return nil, fmt.Errorf("backup: S3 list %s: %w", prefix, err)
		}
		for _, c := range r.Contents {
			out = append(out, Object{Key: strings.TrimPrefix(c.Key, s.prefix), Size: c.Size, Modified: c.LastModified})
		}
		if !r.IsTruncated || r.NextContinuationToken == "" {
			break
		}
		token = r.NextContinuationToken
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Key < out[j].Key })
	return out, nil
}

func (s *s3Store) Delete(ctx context.Context, key string) error {
	resp, err := s.do(ctx, http.MethodDelete, key, nil, nil)
	if err != nil {
		return err
	}
	if resp.StatusCode/100 != 2 && resp.StatusCode != http.StatusNotFound {
		return s.failure(resp, "delete "+key)
	}
	resp.Body.Close()
	return nil
}

func (s *s3Store) Check(ctx context.Context) error {
	probe := ".nodeha-check"
	if err := s.Put(ctx, probe, []byte("ok")); err != nil {
		return err
	}
	if _, err := s.List(ctx, probe); err != nil {
		return err
	}
	return s.Delete(ctx, probe)
}
