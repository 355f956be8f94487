package supervisor

import (
	"context"
	"encoding/json"
	"log/slog"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/nodeha/nodeha/dcs"
)

// warnLocalArchive says, once at start, when the cluster's dynamic
// configuration still has the recipe's archive_command (a copy of every
// WAL segment into wal_archive/ on the data disk, growing without end): a
// cluster created before nodeha stopped rendering it keeps it until an
// operator changes it (README, WAL archive). nodeha changes nothing.
func warnLocalArchive(ctx context.Context, etcd clientv3.KV, scope string, log *slog.Logger) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	resp, err := etcd.Get(ctx, dcs.Config(scope), clientv3.WithSerializable())
	if err != nil || len(resp.Kvs) == 0 {
		return
	}
	if cmd := archiveCommand(resp.Kvs[0].Value); recipeArchive(cmd) {
		log.Warn("this cluster's archive_command copies every WAL segment into wal_archive/ on the data disk and nothing prunes it: it fills the disk; see README, WAL archive, to stop it and reclaim the space",
			"archive_command", cmd)
	}
}

// archiveCommand is archive_command in a dynamic configuration (JSON).
func archiveCommand(config []byte) string {
	var c struct {
		PostgreSQL struct {
			Parameters map[string]any `json:"parameters"`
		} `json:"postgresql"`
	}
	if json.Unmarshal(config, &c) != nil {
		return ""
	}
	s, _ := c.PostgreSQL.Parameters["archive_command"].(string)
	return s
}

// recipeArchive tells the recipe's local copy from any other command.
func recipeArchive(cmd string) bool {
	return strings.Contains(cmd, "wal_archive/%f") && strings.Contains(cmd, "cp ")
}
