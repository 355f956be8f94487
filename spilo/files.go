package spilo

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/moby/moby/client"

	"github.com/nodeha/nodeha/config"
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

// PrepareHost creates the host directories the container mounts (never
// touching what is inside an existing data directory) and writes
// postgres.yml atomically, mode 0600, owned by the image's postgres user.
func PrepareHost(cfg *config.Config, file []byte) error {
	uid, gid := cfg.PostgresUID, cfg.PostgresGID
	dirs := []struct {
		path     string
		mode     os.FileMode
		postgres bool
	}{
		{cfg.SpiloDir(), 0o755, false},
		{cfg.PostgresDir, 0o750, true},
		// The seed's archive_command copies WAL here; without it archiving
		// fails and WAL piles up.
		{filepath.Join(cfg.PostgresDir, "wal_archive"), 0o700, true},
		{cfg.LogDir, 0o750, true},
	}
	for _, d := range dirs {
		if err := os.MkdirAll(d.path, d.mode); err != nil {
			return fmt.Errorf("spilo: create %s: %w", d.path, err)
		}
		if d.postgres {
			// Only the directory itself: its contents belong to PostgreSQL.
			if err := os.Lchown(d.path, uid, gid); err != nil {
				return fmt.Errorf("spilo: chown %s: %w", d.path, err)
			}
		}
	}
	return WriteConfig(cfg.SpiloDir(), file, uid, gid)
}

// WriteConfig replaces dir/postgres.yml atomically.
func WriteConfig(dir string, file []byte, uid, gid int) error {
	dst := filepath.Join(dir, ConfigFile)
	if old, err := os.ReadFile(dst); err == nil && string(old) == string(file) {
		return errors.Join(os.Chmod(dst, 0o600), os.Lchown(dst, uid, gid))
	}
	tmp, err := os.CreateTemp(dir, ".postgres.yml.*")
	if err != nil {
		return fmt.Errorf("spilo: write %s: %w", dst, err)
	}
	defer os.Remove(tmp.Name())
	err = errors.Join(tmp.Chmod(0o600), tmp.Chown(uid, gid))
	if err == nil {
		_, err = tmp.Write(file)
	}
	err = errors.Join(err, tmp.Sync(), tmp.Close())
	if err == nil {
		err = os.Rename(tmp.Name(), dst)
	}
	if err != nil {
		return fmt.Errorf("spilo: write %s: %w", dst, err)
	}
	return nil
}
