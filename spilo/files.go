package spilo

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"syscall"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/moby/moby/client"

	"github.com/nodeha/nodeha/config"
	"github.com/nodeha/nodeha/internal/atomicfile"
)

// ImageAPI is what EnsureImage needs from the Docker Engine API.
type ImageAPI interface {
	ImageInspect(ctx context.Context, ref string, o ...client.ImageInspectOption) (client.ImageInspectResult, error)
	ImagePull(ctx context.Context, ref string, o client.ImagePullOptions) (client.ImagePullResponse, error)
}

// EnsureImage makes sure image is present, pulling it (with progress in
// the log) when it is not.
func EnsureImage(ctx context.Context, d ImageAPI, image string, log *slog.Logger) error {
	_, err := d.ImageInspect(ctx, image)
	if err == nil {
		return nil
	}
	if !cerrdefs.IsNotFound(err) {
		return fmt.Errorf("spilo: inspect image %q: %w", image, err)
	}
	log.Info("pulling image", "image", image)
	resp, err := d.ImagePull(ctx, image, client.ImagePullOptions{})
	if err != nil {
		return fmt.Errorf("NODEHA_IMAGE (--image): image %q is not present and cannot be pulled: %s", image, oneLine(err))
	}
	defer resp.Close()
	last := time.Time{}
	for m, err := range resp.JSONMessages(ctx) {
		if err != nil {
			return fmt.Errorf("NODEHA_IMAGE (--image): pull %q: %s", image, oneLine(err))
		}
		if m.Error != nil {
			return fmt.Errorf("NODEHA_IMAGE (--image): image %q is not present and cannot be pulled: %s", image, m.Error.Message)
		}
		// Every status change is logged; byte progress at most every 2 s.
		if m.Progress != nil && m.Progress.Total > 0 {
			if time.Since(last) < 2*time.Second {
				continue
			}
			last = time.Now()
		}
		args := []any{"status", m.Status}
		if m.ID != "" {
			args = append(args, "layer", m.ID)
		}
		if p := m.Progress; p != nil && p.Total > 0 {
			args = append(args, "progress", fmt.Sprintf("%d%%", p.Current*100/p.Total))
		}
		log.Info("pull", args...)
	}
	log.Info("image pulled", "image", image)
	return nil
}

func oneLine(err error) string {
	s := err.Error()
	for i, r := range s {
		if r == '\n' {
			return s[:i]
		}
	}
	return s
}

// PrepareHost creates the host directories the container mounts, and the
// ones inside them that Spilo's launch.sh would leave to root, owned by the
// image's postgres user (never touching what is inside an existing data
// directory), then writes postgres.yml atomically, mode 0600, owned by
// postgres.
//
// The real launch.sh runs as root: it mkdirs PGDATA, PGLOG and
// $RW_DIR/postgresql (the socket directory) and chowns only PGROOT, which
// the seed's PGDATA is not in, and configure_spilo.py chowns the socket
// directory only when it created it. Left to them, PostgreSQL's data and
// socket directories come out owned by root and Patroni cannot start.
func PrepareHost(cfg *config.Config, file []byte) error {
	if err := EnsureDirs(cfg); err != nil {
		return err
	}
	if cfg.Identity != nil {
		if err := writeTLS(cfg); err != nil {
			return err
		}
	}
	if err := writeBackup(cfg); err != nil {
		return err
	}
	return WriteConfig(cfg.SpiloDir(), file, cfg.PostgresUID, cfg.PostgresGID)
}

// writeBackup puts what the archive needs inside the container: nodeha's
// own binary in SpiloDir/bin (root's, read-only to the container) and the
// settings, secrets included, in SpiloDir/backup/settings.json, readable
// only by the container's postgres user. With no backup target the
// settings file goes: no secret stays behind.
func writeBackup(cfg *config.Config) error {
	dir := filepath.Join(cfg.SpiloDir(), "backup")
	if cfg.Backup == nil {
		return RemoveBackupSecrets(cfg)
	}
	if err := ensureDir(hostDir{dir, 0o700, true}, cfg.PostgresUID, cfg.PostgresGID); err != nil {
		return err
	}
	b, err := cfg.Backup.Marshal()
	if err != nil {
		return err
	}
	if err := writeFile(dir, "settings.json", b, cfg.PostgresUID, cfg.PostgresGID); err != nil {
		return err
	}
	if u, err := url.Parse(cfg.Backup.Target); err == nil && u.Scheme == "file" {
		// The container's postgres user writes there (an NFS mount that
		// squashes root may refuse the chown: then its owner must be the
		// image's postgres uid already).
		_ = os.Lchown(u.Path, cfg.PostgresUID, cfg.PostgresGID)
	}
	return installBinary(filepath.Join(cfg.SpiloDir(), "bin"))
}

// RemoveBackupSecrets deletes the archive's settings file (credentials and
// key) from DATA_DIR/spilo/backup, as a host that leaves does.
func RemoveBackupSecrets(cfg *config.Config) error {
	err := os.Remove(filepath.Join(cfg.SpiloDir(), "backup", "settings.json"))
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("spilo: %w", err)
	}
	return nil
}

// installBinary copies the running nodeha to dir/nodeha when it differs.
func installBinary(dir string) error {
	self := "/proc/self/exe" // the running binary, even when an upgrade replaced the file
	b, err := os.ReadFile(self)
	if err != nil {
		return fmt.Errorf("spilo: %w", err)
	}
	if err := ensureDir(hostDir{dir, 0o755, false}, 0, 0); err != nil {
		return err
	}
	dst := filepath.Join(dir, "nodeha")
	if old, err := os.ReadFile(dst); err == nil && string(old) == string(b) {
		return nil
	}
	if err := atomicfile.WriteFileOwned(dst, b, 0o755, 0, 0); err != nil {
		return fmt.Errorf("spilo: %w", err)
	}
	return nil
}

// EnsureDirs creates the host directories the container needs, or puts an
// existing one's owner and mode right (see PrepareHost). Cheap: the runner
// calls it before every start of the container.
func EnsureDirs(cfg *config.Config) error {
	for _, d := range hostDirs(cfg) {
		if err := ensureDir(d, cfg.PostgresUID, cfg.PostgresGID); err != nil {
			return err
		}
	}
	return nil
}

// RemoveStaleSockets removes PostgreSQL's socket and socket lock files
// (.s.PGSQL.PORT and .s.PGSQL.PORT.lock) from the socket directory. Call it
// only while the container is stopped (the runner does, before every
// start). The directory is on the host and outlives the container: a
// PostgreSQL that was killed (a fenced or killed container) leaves its lock
// with its PID in it, and when that PID is taken by another process in the
// next container, PostgreSQL refuses to start ("lock file ... already
// exists") and the host never comes back. In Spilo's own layout /run is
// the container's, and nothing survives.
func RemoveStaleSockets(cfg *config.Config) error {
	dir := filepath.Join(cfg.SpiloDir(), "postgresql")
	matches, err := filepath.Glob(filepath.Join(dir, ".s.PGSQL.*"))
	if err != nil {
		return err
	}
	for _, m := range matches {
		if err := os.Remove(m); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("spilo: remove stale %s: %w", m, err)
		}
	}
	return nil
}

// hostDir is a directory nodeha keeps: its mode, and whether the
// container's postgres user owns it.
type hostDir struct {
	path     string
	mode     os.FileMode
	postgres bool
}

func hostDirs(cfg *config.Config) []hostDir {
	return []hostDir{
		// nodeha's state: the token, TLS keys, etcd, and (in spilo/) the
		// PostgreSQL socket, trusted for local connections. Root's alone:
		// no other account of the host may reach any of it.
		{cfg.DataDir, 0o700, false},
		// Mounted on /run: root's, as /run is; Spilo makes service/,
		// supervise/ and tmp/ there itself.
		{cfg.SpiloDir(), 0o755, false},
		// PostgreSQL's server certificate from the cluster CA (writeTLS);
		// Spilo's configure_spilo.py keeps a key that is there.
		{filepath.Join(cfg.SpiloDir(), "certs"), 0o700, true},
		// The socket directory, /run/postgresql (configure_spilo.py's 2775).
		{filepath.Join(cfg.SpiloDir(), "postgresql"), 0o775 | os.ModeSetgid, true},
		// Mounted on /var/lib/postgresql/data.
		{cfg.PostgresDir, 0o750, true},
		// PGDATA: PostgreSQL refuses a group- or world-readable one.
		{filepath.Join(cfg.PostgresDir, "pgdata"), 0o700, true},
		// PGLOG, where launch.sh touches the CSV logs Spilo's foreign
		// tables read.
		{filepath.Join(cfg.PostgresDir, "pg_log"), 0o750, true},
		// The seed's archive_command copies WAL here; without it archiving
		// fails and WAL piles up.
		{filepath.Join(cfg.PostgresDir, "wal_archive"), 0o700, true},
		{cfg.LogDir, 0o750, true},
	}
}

// ensureDir creates d or, when it exists, sets its owner and mode: a host
// whose earlier start left it to root (or another nodeha) is put right. Only
// the directory itself: what is inside belongs to PostgreSQL.
func ensureDir(d hostDir, uid, gid int) error {
	if err := os.MkdirAll(d.path, d.mode.Perm()); err != nil {
		return fmt.Errorf("spilo: create %s: %w", d.path, err)
	}
	st, err := os.Lstat(d.path)
	if err != nil {
		return fmt.Errorf("spilo: %w", err)
	}
	if !st.IsDir() {
		return fmt.Errorf("spilo: %s is not a directory", d.path)
	}
	mode := st.Mode() & (os.ModePerm | os.ModeSetgid)
	if !d.postgres {
		uid, gid = 0, 0
	}
	if sys, ok := st.Sys().(*syscall.Stat_t); !ok || int(sys.Uid) != uid || int(sys.Gid) != gid {
		if err := os.Lchown(d.path, uid, gid); err != nil {
			return fmt.Errorf("spilo: chown %s: %w", d.path, err)
		}
		mode = 0 // a chown clears the setgid bit: set the mode again
	}
	if mode != d.mode {
		if err := os.Chmod(d.path, d.mode); err != nil {
			return fmt.Errorf("spilo: chmod %s: %w", d.path, err)
		}
	}
	return nil
}

// writeTLS makes the host's TLS files (kept across restarts) and copies
// Patroni's into SpiloDir/etcd-tls, readable only by the container's
// postgres user.
func writeTLS(cfg *config.Config) error {
	f := cfg.TLSFiles()
	// Every peer's address too: a client of another host's endpoint
	// (NODEHA_RW_PORT) reaches this PostgreSQL under that host's address,
	// and verifies the name it dialed (sslmode=verify-full).
	ips := []netip.Addr{cfg.AdvertiseIP, netip.MustParseAddr("127.0.0.1")}
	for _, p := range cfg.AllPeers() {
		if ip, err := netip.ParseAddr(p); err == nil && !slices.Contains(ips, ip) {
			ips = append(ips, ip)
		}
	}
	// And the floating address (NODEHA_VIP), which lands on the primary.
	if p, err := netip.ParsePrefix(cfg.VIP); err == nil && !slices.Contains(ips, p.Addr()) {
		ips = append(ips, p.Addr())
	}
	if err := cfg.Identity.EnsureHost(f, cfg.AdvertiseIP.String(), ips); err != nil {
		return err
	}
	dir := filepath.Join(cfg.SpiloDir(), tlsDirName)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("spilo: create %s: %w", dir, err)
	}
	if err := os.Lchown(dir, cfg.PostgresUID, cfg.PostgresGID); err != nil {
		return fmt.Errorf("spilo: chown %s: %w", dir, err)
	}
	for src, name := range map[string]string{f.CA: "ca.crt", f.PatroniCrt: "client.crt", f.PatroniKey: "client.key"} {
		b, err := os.ReadFile(src)
		if err != nil {
			return fmt.Errorf("spilo: %w", err)
		}
		if err := writeFile(dir, name, b, cfg.PostgresUID, cfg.PostgresGID); err != nil {
			return err
		}
	}
	certs := filepath.Join(cfg.SpiloDir(), "certs")
	for _, c := range []struct{ src, name string }{
		{f.PostgresCrt, "server.crt"}, {f.PostgresKey, "server.key"},
		{f.PostgresCrt, "restapi.crt"}, {f.PostgresKey, "restapi.key"},
	} {
		b, err := os.ReadFile(c.src)
		if err != nil {
			return fmt.Errorf("spilo: %w", err)
		}
		if err := writeFile(certs, c.name, b, cfg.PostgresUID, cfg.PostgresGID); err != nil {
			return err
		}
	}
	return nil
}

// WriteConfig replaces dir/postgres.yml atomically.
func WriteConfig(dir string, file []byte, uid, gid int) error {
	return writeFile(dir, ConfigFile, file, uid, gid)
}

// writeFile replaces dir/name atomically, mode 0600, owned by uid:gid.
func writeFile(dir, name string, file []byte, uid, gid int) error {
	dst := filepath.Join(dir, name)
	if old, err := os.ReadFile(dst); err == nil && string(old) == string(file) {
		return errors.Join(os.Chmod(dst, 0o600), os.Lchown(dst, uid, gid))
	}
	if err := atomicfile.WriteFileOwned(dst, file, 0o600, uid, gid); err != nil {
		return fmt.Errorf("spilo: %w", err)
	}
	return nil
}
