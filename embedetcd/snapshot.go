package embedetcd

import (
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"go.etcd.io/etcd/etcdutl/v3/snapshot"
	"go.uber.org/zap"

	"github.com/nodeha/nodeha/internal/atomicfile"
)

// Snapshot writes the member's database to dir/etcd-TIMESTAMP.db (mode
// 0600, atomically), keeps the newest retain snapshots there, and returns
// the new file's path. Restore (nodeha recover --from-snapshot) and
// `etcdutl snapshot restore` read it.
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
	// The file ends with the SHA-256 of the database, as etcd's Maintenance
	// API streams it: a restore checks it.
	err := atomicfile.Stream(path, 0o600, func(w io.Writer) error {
		sum := sha256.New()
		n, err := snap.WriteTo(io.MultiWriter(w, sum))
		if err == nil && n == 0 {
			err = fmt.Errorf("empty snapshot")
		}
		if err == nil {
			_, err = w.Write(sum.Sum(nil))
		}
		return err
	})
	if err != nil {
		return "", fmt.Errorf("embedetcd: snapshot: %w", err)
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

// Restore makes c.Dir a one-member cluster's data dir holding the snapshot
// at path (its SHA-256 checked). c.Dir must not hold data: the caller moves
// an existing one aside.
func Restore(c Config, path string) error {
	// Only an empty directory may be in the way (os.Remove refuses any other).
	if err := os.Remove(c.Dir); err != nil && !os.IsNotExist(err) {
		return fmt.Errorf("embedetcd: restore: %s is not empty; move it aside first", c.Dir)
	}
	peer := mustURL(c.Scheme(), c.Advertise, c.PeerPort)
	err := snapshot.NewV3(zap.NewNop()).Restore(snapshot.RestoreConfig{
		SnapshotPath: path, Name: c.Name, OutputDataDir: c.Dir,
		PeerURLs: []string{peer.String()}, InitialCluster: c.Name + "=" + peer.String(),
		InitialClusterToken: c.Token,
	})
	if err != nil {
		return fmt.Errorf("embedetcd: restore %s: %w", path, err)
	}
	return nil
}

// CheckSnapshot checks, before anything is moved, that path is an etcd
// snapshot whose SHA-256 trailer (as nodeha snapshot and etcdctl snapshot
// save write it) matches its content.
func CheckSnapshot(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return err
	}
	if st.IsDir() {
		return fmt.Errorf("%s is a directory, want a snapshot file", path)
	}
	if st.Size() <= sha256.Size {
		return fmt.Errorf("%s is not an etcd snapshot (%d bytes)", path, st.Size())
	}
	sum := sha256.New()
	if _, err := io.CopyN(sum, f, st.Size()-sha256.Size); err != nil {
		return fmt.Errorf("read %s: %w", path, err)
	}
	trailer := make([]byte, sha256.Size)
	if _, err := io.ReadFull(f, trailer); err != nil {
		return fmt.Errorf("read %s: %w", path, err)
	}
	if !bytes.Equal(sum.Sum(nil), trailer) {
		return fmt.Errorf("%s is not an intact etcd snapshot: its SHA-256 trailer does not match (damaged, truncated, or not written by nodeha snapshot or etcdctl snapshot save)", path)
	}
	return nil
}

// MoveAside renames an existing data dir to dir.WHY-TIMESTAMP and returns
// the new name ("" when there was nothing).
func MoveAside(dir, why string) (string, error) {
	if _, err := os.Stat(dir); os.IsNotExist(err) {
		return "", nil
	}
	to := dir + "." + why + "-" + time.Now().UTC().Format("20060102T150405Z")
	if err := os.Rename(dir, to); err != nil {
		return "", fmt.Errorf("embedetcd: move %s aside: %w", dir, err)
	}
	return to, nil
}
