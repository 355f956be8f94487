// Package cloudinit owns the #cloud-config user-data that turns a fresh VM
// into a nodeha host with no hands on it: Docker if missing, the nodeha
// binary (downloaded and checked against its SHA-256, or embedded), the
// settings file (mode 0600), `nodeha install` (the systemd unit), then
// `nodeha status --wait` so that cloud-init's final stage reports whether
// the node became healthy.
//
// The user-data carries the host's settings file, passwords included: it
// must travel like any secret (see the README's cloud-init section).
package cloudinit

import (
	"bytes"
	"compress/gzip"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"path/filepath"
	"strings"
	"time"
)

// Where the user-data puts things on the VM.
const (
	DefaultOverlayPath = "/etc/nodeha/patroni-overlay.yml"
)

// Options describe one host's user-data.
type Options struct {
	Comment     string        // lines put at the top, after #cloud-config (no secrets)
	Env         []byte        // the settings file (systemd.RenderEnv)
	EnvFile     string        // where it goes, e.g. /etc/nodeha/nodeha.env
	Overlay     []byte        // Patroni overlay file, written to OverlayPath when set
	OverlayPath string        // must match NODEHA_PATRONI_OVERLAY in Env
	Binary      string        // where the nodeha binary goes, e.g. /usr/local/bin/nodeha
	BinaryURL   string        // download the binary from here ...
	BinarySHA   string        // ... and check it against this SHA-256 (hex)
	Embedded    []byte        // or: the binary itself, embedded (gzip + base64)
	Socket      string        // the health socket, for status --wait
	Wait        time.Duration // how long status --wait waits
}

// Validate reports every problem with o; flag names are those of
// `nodeha cloud-init`.
func (o Options) Validate() error {
	var errs []error
	switch {
	case o.BinaryURL == "" && o.Embedded == nil:
		errs = append(errs, errors.New("--binary-url (with --binary-sha256) or --embed-binary: one is required: how the VM gets the nodeha binary"))
	case o.BinaryURL != "" && o.Embedded != nil:
		errs = append(errs, errors.New("--binary-url and --embed-binary: give one, not both"))
	case o.BinaryURL != "":
		if u, err := url.Parse(o.BinaryURL); err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
			errs = append(errs, fmt.Errorf("--binary-url: %q is not an http(s) URL", o.BinaryURL))
		}
		if b, err := hex.DecodeString(o.BinarySHA); err != nil || len(b) != 32 {
			errs = append(errs, fmt.Errorf("--binary-sha256: %q is not a SHA-256 in hex (64 hex digits; `sha256sum nodeha`)", o.BinarySHA))
		}
	}
	if o.Embedded == nil && o.BinaryURL == "" && o.BinarySHA != "" {
		errs = append(errs, errors.New("--binary-sha256: given without --binary-url"))
	}
	for _, p := range []struct{ v, fl string }{{o.Binary, "--binary"}, {o.EnvFile, "--env-file"}, {o.Socket, "NODEHA_SOCKET (--socket)"}} {
		if !filepath.IsAbs(p.v) {
			errs = append(errs, fmt.Errorf("%s: %q must be an absolute path", p.fl, p.v))
		}
	}
	if o.Wait <= 0 {
		errs = append(errs, fmt.Errorf("--wait: %v must be positive", o.Wait))
	}
	return errors.Join(errs...)
}

// Render returns the #cloud-config user-data.
func Render(o Options) ([]byte, error) {
	if err := o.Validate(); err != nil {
		return nil, err
	}
	var b bytes.Buffer
	b.WriteString("#cloud-config\n")
	for _, l := range strings.Split(strings.TrimRight(o.Comment, "\n"), "\n") {
		if l != "" {
			b.WriteString("# " + l + "\n")
		} else {
			b.WriteString("#\n")
		}
	}

	// write_files runs before runcmd (cloud-init's config stage), so the
	// settings are in place, 0600 from the first byte, before anything
	// reads them.
	b.WriteString("write_files:\n")
	file(&b, o.EnvFile, "0600", o.Env)
	if o.Overlay != nil {
		file(&b, o.OverlayPath, "0600", o.Overlay)
	}
	if o.Embedded != nil {
		var z bytes.Buffer
		zw, _ := gzip.NewWriterLevel(&z, gzip.BestCompression)
		zw.Write(o.Embedded)
		zw.Close()
		fmt.Fprintf(&b, "  - path: %s\n    owner: root:root\n    permissions: '0755'\n    encoding: gz+b64\n    content: %s\n",
			q(o.Binary), base64.StdEncoding.EncodeToString(z.Bytes()))
	}

	// runcmd is one shell script; set -e stops it at the first failure, so
	// cloud-init reports the failed step instead of running the rest.
	b.WriteString("runcmd:\n")
	cmd := func(s string) { b.WriteString("  - " + q(s) + "\n") }
	cmd("set -e")
	// Docker from Debian's docker.io unless an engine is already there.
	cmd("command -v dockerd >/dev/null 2>&1 || test -S /var/run/docker.sock || { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q docker.io; }")
	if o.BinaryURL != "" {
		tmp := o.Binary + ".download"
		cmd(fmt.Sprintf("curl -fsSL --retry 10 --retry-connrefused -o %s %s", sh(tmp), sh(o.BinaryURL)))
		cmd(fmt.Sprintf("echo %s | sha256sum -c -", sh(strings.ToLower(o.BinarySHA)+"  "+tmp)))
		cmd(fmt.Sprintf("install -m 0755 %s %s", sh(tmp), sh(o.Binary)))
		cmd("rm -f " + sh(tmp))
	}
	cmd(fmt.Sprintf("%s install --env-file %s --binary %s", sh(o.Binary), sh(o.EnvFile), sh(o.Binary)))
	cmd(fmt.Sprintf("%s status --socket %s --wait=%s", sh(o.Binary), sh(o.Socket), o.Wait))
	return b.Bytes(), nil
}

// file writes one write_files entry. Text goes in a literal block, so the
// user-data reads like the file it writes.
func file(b *bytes.Buffer, path, mode string, content []byte) {
	fmt.Fprintf(b, "  - path: %s\n    owner: root:root\n    permissions: '%s'\n", q(path), mode)
	s := string(content)
	if !literalOK(s) {
		fmt.Fprintf(b, "    content: %s\n", q(s))
		return
	}
	b.WriteString("    content: |\n")
	for _, l := range strings.SplitAfter(s, "\n") {
		if l == "" {
			continue
		}
		if l == "\n" {
			b.WriteString("\n")
			continue
		}
		b.WriteString("      " + l)
	}
}

// literalOK says whether s survives a YAML literal block unchanged.
func literalOK(s string) bool {
	if s == "" || !strings.HasSuffix(s, "\n") || strings.HasSuffix(s, "\n\n") || s[0] == ' ' || s[0] == '\t' || s[0] == '\n' {
		return false
	}
	for _, r := range s {
		if r == '\r' || r == '\t' || (r < 0x20 && r != '\n') || r == 0x7f || r == '\ufeff' {
			return false
		}
	}
	for _, l := range strings.Split(strings.TrimSuffix(s, "\n"), "\n") {
		if strings.HasSuffix(l, " ") {
			return false
		}
	}
	return true
}

// q quotes s as a YAML double-quoted scalar (JSON's quoting is valid YAML).
func q(s string) string {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	enc.Encode(s)
	return strings.TrimSuffix(b.String(), "\n")
}

// sh quotes s for the POSIX shell.
func sh(s string) string {
	if s != "" && strings.Trim(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_./:=@,+%") == "" {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}
