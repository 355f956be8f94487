package cli

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"time"

	"github.com/nodeha/nodeha/config"
	"github.com/nodeha/nodeha/trust"
)

// certName is what a metrics reader may be called: it names its files.
var certName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$`)

// cmdMetricsCert writes a metrics reader's certificate and key (what a
// Prometheus shows to scrape a metrics port off loopback) and the cluster
// CA (what it verifies the hosts with) into --out.
func cmdMetricsCert(args []string, stdout, stderr io.Writer) error {
	fs := newFlags("metrics-cert", stderr)
	out := fs.String("out", "", "directory to write NAME.crt, NAME.key (0600) and nodeha-ca.crt into (created 0700 if missing; existing files are not overwritten)")
	name := fs.String("reader", "prometheus", "the reader's name (the certificate's common name and the files' names)")
	cfg, err := load(fs, args, false)
	if err != nil {
		return err
	}
	if *out == "" {
		return config.Problem("", "out", "is required: the directory to write the certificate into")
	}
	if !certName.MatchString(*name) {
		return config.Problem("", "reader", "%q: want letters, digits, '.', '_' or '-' (at most 63)", *name)
	}
	if err := cfg.ResolveToken(); err != nil {
		return &exitError{2, err}
	}
	crtPath := filepath.Join(*out, *name+".crt")
	keyPath := filepath.Join(*out, *name+".key")
	caPath := filepath.Join(*out, "nodeha-ca.crt")
	for _, p := range []string{crtPath, keyPath} {
		if _, err := os.Lstat(p); err == nil {
			return config.Problem("", "out", "%s exists: not overwritten (remove it, or give another --reader)", p)
		} else if !errors.Is(err, os.ErrNotExist) {
			return &exitError{2, config.Problem("", "out", "%v", err)}
		}
	}
	crt, key, err := cfg.Identity.IssueMetricsReader(*name)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(*out, 0o700); err != nil {
		return config.Problem("", "out", "%v", err)
	}
	// The key first and exclusively: never through a file another
	// account made or can read.
	if err := writeNew(keyPath, key, 0o600); err != nil {
		return err
	}
	if err := writeNew(crtPath, crt, 0o644); err != nil {
		return err
	}
	if err := os.WriteFile(caPath, cfg.Identity.CAPEM(), 0o644); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "wrote %s (a metrics reader, valid until %s), %s (0600) and %s\n",
		crtPath, time.Now().Add(trust.MetricsReaderLifetime).UTC().Format("2006-01-02"), keyPath, caPath)
	fmt.Fprintf(stdout, `A Prometheus scrape job for the hosts' metrics ports (NODEHA_METRICS_LISTEN off loopback):
  scheme: https
  tls_config:
    ca_file: %s
    cert_file: %s
    key_file: %s
This certificate reads metrics and nothing else: etcd, Patroni and PostgreSQL refuse it.
`, caPath, crtPath, keyPath)
	return nil
}

// writeNew writes a file that must not exist yet.
func writeNew(path string, b []byte, mode os.FileMode) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode)
	if err != nil {
		return err
	}
	if _, err := f.Write(b); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
