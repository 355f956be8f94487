package embedetcd

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"
)

// Snapshot writes the member's database to dir/etcd-TIMESTAMP.db (mode
// 0600, atomically), keeps the newest retain snapshots there, and returns
// the new file's path. `etcdutl snapshot restore` reads it.
func (m *Member) Snapshot(ctx context.Context, dir string, retain int) (string, error) {
	if err := ctx.Err(); err != nil {
		return "", err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", fmt.Errorf("embedetcd: snapshot: %w", err)
	}
	// The backend's own consistent snapshot, as the Maintenance API
	// streams it to etcdctl.
	snap := m.etcd.Server.Backend().Snapshot()
	defer snap.Close()
	path := filepath.Join(dir, "etcd-"+time.Now().UTC().Format("20060102T150405.000Z")+".db")
	tmp, err := os.CreateTemp(dir, ".snapshot.*")
	if err != nil {
		return "", fmt.Errorf("embedetcd: snapshot: %w", err)
	}
	defer os.Remove(tmp.Name())
	n, err := snap.WriteTo(tmp)
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil && n == 0 {
		err = fmt.Errorf("empty snapshot")
	}
	if err == nil {
		err = os.Rename(tmp.Name(), path)
	}
	if err != nil {
		return "", fmt.Errorf("embedetcd: snapshot %s: %w", path, err)
	}
	prune(dir, retain)
	return path, nil
}

// prune keeps the newest retain snapshots in dir (their names sort by time).
func prune(dir string, retain int) {
	ents, _ := os.ReadDir(dir)
	var snaps []string
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), "etcd-") && strings.HasSuffix(e.Name(), ".db") {
			snaps = append(snaps, e.Name())
		}
	}
	sort.Strings(snaps)
	for len(snaps) > retain {
		os.Remove(filepath.Join(dir, snaps[0]))
		snaps = snaps[1:]
	}
}
