package supervisor

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/moby/moby/api/pkg/stdcopy"
	"github.com/moby/moby/client"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/nodeha/nodeha/backup"
	"github.com/nodeha/nodeha/dcs"
	"github.com/nodeha/nodeha/health"
	"github.com/nodeha/nodeha/patroni"
	"github.com/nodeha/nodeha/spilo"
)

// backups is the host side of the archive: base backups run in the
// container (nodeha backup-push as postgres), the schedule, retention, and
// what the report says about the archive.
type backups struct {
	arch *backup.Archive
	log  *slog.Logger

	running sync.Mutex // one base backup at a time on this host

	mu       sync.Mutex
	last     *backup.Info // the newest backup, as last listed
	listedAt time.Time
	listErr  string
	// failingSince is when this host first saw archiving fail (zero: not
	// failing).
	failingSince time.Time
}

// errNoBackupTarget answers backup and restore requests of a host with no
// archive.
var errNoBackupTarget = errors.New("no backup target: set NODEHA_BACKUP_TARGET (see README: Backups)")

// Backup is POST /backup: a base backup now, from this host's PostgreSQL
// (primary or replica), into the archive; then retention.
func (n *Node) Backup(ctx context.Context) (string, error) {
	if n.bk == nil {
		return "", errNoBackupTarget
	}
	if !n.gate.enter() {
		return "", errNodeStopping
	}
	defer n.gate.exit()
	if !n.bk.running.TryLock() {
		return "", errors.New("a base backup is already running on this host")
	}
	defer n.bk.running.Unlock()
	start := time.Now()
	info, err := n.takeBackup(ctx)
	if err != nil {
		return "", err
	}
	took := time.Since(start)
	n.log.Info("base backup done", "name", info.Name, "size", info.Size, "stored", info.Stored, "from", info.From, "seconds", took.Seconds())
	n.bk.mu.Lock()
	n.bk.last, n.bk.listedAt = &info, time.Now()
	n.bk.mu.Unlock()
	msg := fmt.Sprintf("backup %s: %s (%s stored) from the %s %s in %s, %.1f MB/s",
		info.Name, mib(info.Size), mib(info.Stored), info.From, n.cfg.Name, took.Round(100*time.Millisecond),
		float64(info.Size)/1e6/took.Seconds())
	if gone, err := n.bk.arch.Prune(ctx, n.cfg.BackupRetain, n.cfg.BackupRetainAge, time.Now()); err != nil {
		n.log.Warn("backup retention failed", "err", err)
		msg += "; retention failed: " + err.Error()
	} else if len(gone) > 0 {
		n.log.Info("backup retention deleted old backups", "backups", gone)
		msg += fmt.Sprintf("; retention deleted %s", strings.Join(gone, ", "))
	}
	return msg, nil
}

func mib(n int64) string { return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20)) }

// takeBackup runs nodeha backup-push in the container, as postgres.
func (n *Node) takeBackup(ctx context.Context) (backup.Info, error) {
	var info backup.Info
	if st := n.runner.Status(); !st.Running {
		return info, fmt.Errorf("backup: container %s is not running", st.Name)
	}
	cmd := []string{spilo.ContainerBinary, "backup-push", "--host", n.cfg.Name,
		"--pg-bin", spilo.BinDir(spilo.PGVersion(n.cfg))}
	out, errOut, err := n.execSpilo(ctx, cmd)
	if err != nil {
		if s := strings.TrimSpace(string(errOut)); s != "" {
			lines := strings.Split(s, "\n")
			return info, fmt.Errorf("backup: %s", strings.TrimPrefix(lines[len(lines)-1], "nodeha: "))
		}
		return info, err
	}
	if err := json.Unmarshal(out, &info); err != nil {
		return info, fmt.Errorf("backup: backup-push said %q: %w", out, err)
	}
	return info, nil
}

// execSpilo runs cmd in the Spilo container as postgres and returns its
// output; an exit code other than 0 is an error.
func (n *Node) execSpilo(ctx context.Context, cmd []string) (stdout, stderr []byte, err error) {
	ex, err := n.dc.ExecCreate(ctx, n.cfg.ContainerName, client.ExecCreateOptions{
		User: "postgres", AttachStdout: true, AttachStderr: true, Cmd: cmd,
	})
	if err != nil {
		return nil, nil, fmt.Errorf("backup: exec in %s: %w", n.cfg.ContainerName, err)
	}
	att, err := n.dc.ExecAttach(ctx, ex.ID, client.ExecAttachOptions{})
	if err != nil {
		return nil, nil, fmt.Errorf("backup: exec in %s: %w", n.cfg.ContainerName, err)
	}
	defer att.Close()
	var o, e bytes.Buffer
	done := make(chan error, 1)
	go func() {
		_, err := stdcopy.StdCopy(&o, &e, att.Reader)
		done <- err
	}()
	select {
	case err = <-done:
	case <-ctx.Done():
		att.Close()
		return nil, nil, ctx.Err()
	}
	if err != nil {
		return o.Bytes(), e.Bytes(), fmt.Errorf("backup: exec in %s: %w", n.cfg.ContainerName, err)
	}
	res, err := n.dc.ExecInspect(ctx, ex.ID, client.ExecInspectOptions{})
	if err != nil {
		return o.Bytes(), e.Bytes(), fmt.Errorf("backup: exec in %s: %w", n.cfg.ContainerName, err)
	}
	if res.ExitCode != 0 {
		return o.Bytes(), e.Bytes(), fmt.Errorf("backup: %s exited with %d", cmd[1], res.ExitCode)
	}
	return o.Bytes(), e.Bytes(), nil
}

// backupLoop takes the scheduled base backups. Every host runs it; the
// one that backs up is the healthy replica first in name order, the
// primary when no replica is healthy, so the primary is spared when it can
// be. The archive itself says when the last backup finished, so a host
// that takes over the job after a failover knows where it stands.
func (n *Node) backupLoop(ctx context.Context) {
	cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	if err := n.bk.arch.Store.Check(cctx); err != nil {
		// Not fatal: the database runs on; the archive's health says more.
		n.log.Warn("the backup target is not usable; WAL archiving fails until it is", "target", n.cfg.BackupTarget, "err", err)
	}
	cancel()
	tick := time.NewTicker(time.Minute)
	defer tick.Stop()
	for {
		n.refreshLast(ctx, false)
		if n.cfg.BackupSchedule > 0 && n.backupDue() && n.chosenForBackup(ctx) &&
			n.refreshLast(ctx, true) && n.backupDue() { // another host may have taken it meanwhile
			if msg, err := n.Backup(ctx); err != nil {
				n.log.Warn("scheduled base backup failed", "err", err)
			} else {
				n.log.Info("scheduled base backup", "result", msg)
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// refreshLast lists the archive's backups at most every 5 minutes, or now
// when forced; true when the list is fresh.
func (n *Node) refreshLast(ctx context.Context, force bool) bool {
	n.bk.mu.Lock()
	fresh := time.Since(n.bk.listedAt) < 5*time.Minute
	n.bk.mu.Unlock()
	if fresh && !force {
		return true
	}
	lctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	bs, err := n.bk.arch.Backups(lctx)
	n.bk.mu.Lock()
	defer n.bk.mu.Unlock()
	n.bk.listedAt = time.Now()
	if err != nil {
		n.bk.listErr = err.Error()
		return false
	}
	n.bk.listErr = ""
	n.bk.last = nil
	if len(bs) > 0 {
		n.bk.last = &bs[len(bs)-1]
	}
	return true
}

func (n *Node) backupDue() bool {
	n.bk.mu.Lock()
	defer n.bk.mu.Unlock()
	if n.bk.listErr != "" {
		return false
	}
	return n.bk.last == nil || time.Since(n.bk.last.Finish) >= n.cfg.BackupSchedule
}

// chosenForBackup says whether this host takes the scheduled backup.
func (n *Node) chosenForBackup(ctx context.Context) bool {
	cctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	cl, err := n.pc.Cluster(cctx)
	if err != nil {
		return false
	}
	return BackupHost(cl.Members, int64(n.cfg.ROMaxLagBytes)) == n.cfg.Name
}

// BackupHost picks the member that takes a scheduled base backup: the
// first healthy replica by name (streaming, lag known and within maxLag),
// else the leader.
func BackupHost(ms []patroni.Member, maxLag int64) string {
	best, leader := "", ""
	for _, m := range ms {
		switch {
		case patroni.IsLeader(m.Role) && m.State == "running":
			leader = m.Name
		case patroni.IsReplica(m.Role) && (m.State == "streaming" || m.State == "running") && m.Lag >= 0 && int64(m.Lag) <= maxLag:
			if best == "" || m.Name < best {
				best = m.Name
			}
		}
	}
	if best != "" {
		return best
	}
	return leader
}

// backupReport is the archive's part of the report: PostgreSQL's archiver
// on this host and the newest base backup.
func (n *Node) backupReport(ctx context.Context, now time.Time) (*health.Backup, *reason) {
	if n.bk == nil {
		return nil, nil
	}
	b := &health.Backup{Target: n.cfg.BackupTarget}
	n.bk.mu.Lock()
	if l := n.bk.last; l != nil {
		b.LastBackup, b.LastBackupAt = l.Name, l.Finish
		b.LastBackupAgeSeconds = now.Sub(l.Finish).Seconds()
	}
	b.Error = n.bk.listErr
	n.bk.mu.Unlock()
	a, err := n.archive(ctx)
	if err != nil {
		b.ArchiverError = err.Error()
	} else if a != nil {
		b.Archived, b.Failed = a.Archived, a.Failed
		b.LastArchivedAt, b.LastFailedAt = a.LastArchived, a.LastFailed
	}
	failing := !b.LastFailedAt.IsZero() && b.LastFailedAt.After(b.LastArchivedAt)
	n.bk.mu.Lock()
	if !failing {
		n.bk.failingSince = time.Time{}
	} else if n.bk.failingSince.IsZero() {
		n.bk.failingSince = now
	}
	since := n.bk.failingSince
	n.bk.mu.Unlock()
	if code, text := ArchiveVerdict(now, b, since, n.cfg.ArchiveFailingAfter); code != "" {
		return b, &reason{code, text}
	}
	return b, nil
}

// ArchiveVerdict says whether archiving is failing for longer than after:
// its latest attempt failed, and nothing was archived for that long (since
// failingSince, when this host has never archived).
// It marks b failing when the latest attempt failed; code is "" when the
// host is not unhealthy for it.
func ArchiveVerdict(now time.Time, b *health.Backup, failingSince time.Time, after time.Duration) (code, text string) {
	if b == nil || b.LastFailedAt.IsZero() || !b.LastFailedAt.After(b.LastArchivedAt) {
		return "", ""
	}
	b.Failing = true
	since := b.LastArchivedAt
	if since.IsZero() {
		since = failingSince
	}
	if since.IsZero() || now.Sub(since) < after {
		return "", ""
	}
	return "archive_failing", fmt.Sprintf("archive: WAL archiving is failing; nothing archived for %s (PostgreSQL's log says why)", now.Sub(since).Round(time.Second))
}

// restoreRequest is the cluster's restore, in etcd (dcs.Restore).
type restoreRequest struct {
	ID        string    `json:"id"`
	Backup    string    `json:"backup"`
	Target    time.Time `json:"target,omitzero"`
	Immediate bool      `json:"immediate,omitempty"` // only to the backup's end
	Phase     string    `json:"phase"`               // stop, start, done, aborted
	By        string    `json:"by"`
	At        time.Time `json:"at"`
}

// Restore is POST /restore: the whole cluster back to a backup and a
// point in time. Every host's container stops (the primary switches WAL
// first and waits for it to be archived), each host's data directory is
// moved aside (kept: pgdata.before-restore-ID), Patroni's keys are
// deleted, and every host starts with a bootstrap that restores; the host
// that wins Patroni's race restores, the others make replicas of it.
func (n *Node) Restore(ctx context.Context, name, to string, latest bool) (string, error) {
	if n.bk == nil {
		return "", errNoBackupTarget
	}
	if !n.gate.enter() {
		return "", errNodeStopping
	}
	defer n.gate.exit()
	var target time.Time
	if to != "" {
		t, err := time.Parse(time.RFC3339Nano, to)
		if err != nil {
			return "", fmt.Errorf("restore: --to %q is not a time like 2026-12-03T14:05:00Z", to)
		}
		target = t
	}
	if latest && (to != "" || name != "") || !latest && to == "" && name == "" {
		return "", errors.New("restore: give one of --to TIME, --latest or --backup NAME (--backup may go with --to)")
	}
	// Only backups on the way to the newest timeline: one taken on a
	// branch an earlier restore left is not this cluster's past.
	bs, err := n.bk.arch.UsableBackups(ctx)
	if err != nil {
		return "", err
	}
	b, err := backup.Choose(bs, name, target)
	if err != nil {
		return "", fmt.Errorf("restore: %w", err)
	}
	warning := ""
	if t, err := n.bk.arch.Newest(ctx); err == nil {
		if err := n.bk.arch.CanReplay(ctx, t, b); err != nil {
			// The newest timeline began less than a segment before its
			// primary was lost: its first segment never reached the
			// archive, and the replay follows the old timeline instead.
			warning = fmt.Sprintf("; warning: %v, so the replay follows the timeline before it", err)
			n.log.Warn("restore: the newest timeline's first segment is not archived", "err", err)
		}
	}
	etcd, scope := n.member.Client(), n.cfg.Scope
	if resp, err := etcd.Get(ctx, dcs.Restore(scope)); err != nil {
		return "", fmt.Errorf("restore: %w", err)
	} else if len(resp.Kvs) == 1 {
		var old restoreRequest
		if json.Unmarshal(resp.Kvs[0].Value, &old) == nil && (old.Phase == "stop" || old.Phase == "start") {
			return "", fmt.Errorf("restore: restore %s (by %s at %s) is still under way", old.ID, old.By, old.At.Format(time.RFC3339))
		}
	}
	req := restoreRequest{
		ID: time.Now().UTC().Format("20060102T150405Z"), Backup: b.Name, Target: target,
		Immediate: name != "" && to == "", Phase: "stop", By: n.cfg.Name, At: time.Now().UTC(),
	}
	var hosts []string
	for _, m := range n.member.Members() {
		if m.Name != "" {
			hosts = append(hosts, m.Name)
		}
	}
	n.log.Warn("restore: stopping every host", "id", req.ID, "backup", b.Name, "target", target, "hosts", hosts)
	if _, err := etcd.Delete(ctx, dcs.RestoreAcks(scope), clientv3.WithPrefix()); err != nil {
		return "", fmt.Errorf("restore: %w", err)
	}
	if err := putRestore(ctx, etcd, scope, req); err != nil {
		return "", err
	}
	if missing, err := n.waitAcks(ctx, req.ID, hosts, 5*time.Minute); err != nil {
		req.Phase = "aborted"
		_ = putRestore(context.WithoutCancel(ctx), etcd, scope, req)
		return "", fmt.Errorf("restore: %v; aborted, the hosts that stopped have their data back: %s", err, strings.Join(missing, ", "))
	}
	// Every host is stopped: Patroni's keys go, so that the cluster is new
	// to Patroni and bootstraps with the restore.
	if _, err := etcd.Delete(ctx, dcs.Patroni(scope), clientv3.WithPrefix()); err != nil {
		return "", fmt.Errorf("restore: delete Patroni's keys: %w", err)
	}
	req.Phase = "start"
	if err := putRestore(ctx, etcd, scope, req); err != nil {
		return "", err
	}
	n.log.Warn("restore: every host stopped and moved its data aside; restoring", "id", req.ID)
	leader, err := n.waitRestored(ctx, 30*time.Minute)
	if err != nil {
		return "", fmt.Errorf("restore: %w (the restore goes on; nodeha status --cluster shows it)", err)
	}
	req.Phase = "done"
	if err := putRestore(ctx, etcd, scope, req); err != nil {
		return "", err
	}
	what := "the end of the archived WAL"
	if !target.IsZero() {
		what = target.UTC().Format(time.RFC3339Nano)
	} else if req.Immediate {
		what = "the end of the backup"
	}
	return fmt.Sprintf("restored backup %s to %s; %s is the primary; the data directories before the restore are kept as pgdata.before-restore-%s%s",
		b.Name, what, leader, req.ID, warning), nil
}

func putRestore(ctx context.Context, etcd *clientv3.Client, scope string, req restoreRequest) error {
	b, _ := json.Marshal(req)
	if _, err := etcd.Put(ctx, dcs.Restore(scope), string(b)); err != nil {
		return fmt.Errorf("restore: %w", err)
	}
	return nil
}

// waitAcks waits until every host has stopped for restore id.
func (n *Node) waitAcks(ctx context.Context, id string, hosts []string, timeout time.Duration) ([]string, error) {
	deadline := time.Now().Add(timeout)
	for {
		resp, err := n.member.Client().Get(ctx, dcs.RestoreAcks(n.cfg.Scope), clientv3.WithPrefix())
		var missing []string
		if err == nil {
			acked := map[string]bool{}
			for _, kv := range resp.Kvs {
				if string(kv.Value) == id {
					acked[strings.TrimPrefix(string(kv.Key), dcs.RestoreAcks(n.cfg.Scope))] = true
				}
			}
			for _, h := range hosts {
				if !acked[h] {
					missing = append(missing, h)
				}
			}
			if len(missing) == 0 {
				return nil, nil
			}
		}
		if time.Now().After(deadline) {
			return missing, fmt.Errorf("hosts %s did not stop within %s", strings.Join(missing, ", "), timeout)
		}
		select {
		case <-ctx.Done():
			return missing, ctx.Err()
		case <-time.After(time.Second):
		}
	}
}

// waitRestored waits for a leader that runs PostgreSQL as the primary.
func (n *Node) waitRestored(ctx context.Context, timeout time.Duration) (string, error) {
	deadline := time.Now().Add(timeout)
	scope := n.cfg.Scope
	for time.Now().Before(deadline) {
		resp, err := n.member.Client().Get(ctx, dcs.Leader(scope))
		if err == nil && len(resp.Kvs) == 1 {
			leader := string(resp.Kvs[0].Value)
			if m, err := n.member.Client().Get(ctx, dcs.Member(scope, leader)); err == nil && len(m.Kvs) == 1 {
				if mv, err := dcs.ParseMember(m.Kvs[0].Value); err == nil && patroni.IsLeader(mv.Role) && mv.State == "running" {
					return leader, nil
				}
			}
		}
		select {
		case <-ctx.Done():
			return "", ctx.Err()
		case <-time.After(2 * time.Second):
		}
	}
	return "", fmt.Errorf("no primary after %s", timeout)
}

// restoreLoop carries out the cluster's restore requests on this host.
func (n *Node) restoreLoop(ctx context.Context) {
	etcd, scope := n.member.Client(), n.cfg.Scope
	done := ""
	for ctx.Err() == nil {
		resp, err := etcd.Get(ctx, dcs.Restore(scope))
		if err != nil {
			time.Sleep(time.Second)
			continue
		}
		rev := resp.Header.Revision
		if len(resp.Kvs) == 1 {
			var req restoreRequest
			if json.Unmarshal(resp.Kvs[0].Value, &req) == nil && req.ID+req.Phase != done {
				if err := n.restoreStep(ctx, req); err != nil {
					n.log.Error("restore", "id", req.ID, "phase", req.Phase, "err", err)
					time.Sleep(2 * time.Second)
					continue
				}
				done = req.ID + req.Phase
			}
		}
		wctx, cancel := context.WithCancel(ctx)
		select {
		case <-etcd.Watch(wctx, dcs.Restore(scope), clientv3.WithRev(rev+1)):
		case <-time.After(30 * time.Second):
		case <-ctx.Done():
		}
		cancel()
	}
}

// restoreStep is this host's part of one phase of a restore.
func (n *Node) restoreStep(ctx context.Context, req restoreRequest) error {
	pgdata := filepath.Join(n.cfg.PostgresDir, "pgdata")
	aside := pgdata + ".before-restore-" + req.ID
	switch req.Phase {
	case "stop":
		if _, err := os.Stat(aside); err == nil {
			// Done before this nodeha restarted: stopped and moved.
			n.runner.Hold("restore " + req.ID)
			return n.ackRestore(ctx, req.ID)
		}
		n.switchWAL(ctx)
		n.runner.Hold("restore " + req.ID)
		deadline := time.Now().Add(2 * time.Minute)
		for n.runner.Status().Running || n.runner.Status().State == "unknown" {
			if time.Now().After(deadline) {
				return errors.New("the container did not stop")
			}
			time.Sleep(200 * time.Millisecond)
		}
		if entries, err := os.ReadDir(pgdata); err == nil && len(entries) > 0 {
			if err := os.Rename(pgdata, aside); err != nil {
				return fmt.Errorf("move the data directory aside: %w", err)
			}
			n.log.Warn("restore: the data directory is moved aside (kept)", "path", aside)
		} else if err := os.MkdirAll(aside, 0o700); err != nil { // the mark that this host is done
			return err
		}
		return n.ackRestore(ctx, req.ID)
	case "start":
		file, err := spilo.RenderRestore(n.cfg, spilo.RestoreMethod{Backup: req.Backup, Target: req.Target, Immediate: req.Immediate})
		if err != nil {
			return err
		}
		if err := spilo.WriteConfig(n.cfg.SpiloDir(), file, n.cfg.PostgresUID, n.cfg.PostgresGID); err != nil {
			return err
		}
		n.log.Warn("restore: starting with the restore bootstrap", "id", req.ID, "backup", req.Backup, "target", req.Target)
		n.runner.Release()
	case "done":
		if err := spilo.WriteConfig(n.cfg.SpiloDir(), n.file, n.cfg.PostgresUID, n.cfg.PostgresGID); err != nil {
			return err
		}
		n.runner.Release()
		// The new primary's first segment to the archive now: until it
		// is there, no replica can be made from a backup (CanReplay).
		n.switchWAL(ctx)
	case "aborted":
		// Put back what the stop moved, unless something new is there.
		if fi, err := os.Stat(aside); err == nil && fi.IsDir() {
			if entries, err := os.ReadDir(pgdata); err != nil || len(entries) == 0 {
				os.Remove(pgdata)
				if err := os.Rename(aside, pgdata); err != nil {
					return err
				}
			}
		}
		if err := spilo.WriteConfig(n.cfg.SpiloDir(), n.file, n.cfg.PostgresUID, n.cfg.PostgresGID); err != nil {
			return err
		}
		n.runner.Release()
	}
	return nil
}

func (n *Node) ackRestore(ctx context.Context, id string) error {
	// Keyed by this host's etcd member name, which the coordinator lists.
	_, err := n.member.Client().Put(ctx, dcs.RestoreAck(n.cfg.Scope, n.member.Status().Name), id)
	return err
}

// switchWAL, on a primary, ends the current WAL segment and waits (a
// minute at most) until it is archived: a restore to a time just before
// the request then finds its WAL.
func (n *Node) switchWAL(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, 70*time.Second)
	defer cancel()
	dsn := fmt.Sprintf("host=%s port=%d user=postgres dbname=postgres connect_timeout=3 application_name=nodeha-restore",
		filepath.Join(n.cfg.SpiloDir(), "postgresql"), n.cfg.PostgresPort)
	conn, err := pgconn.Connect(ctx, dsn)
	if err != nil {
		return
	}
	defer conn.Close(context.WithoutCancel(ctx))
	rs, err := conn.Exec(ctx, `SELECT CASE WHEN pg_is_in_recovery() THEN '' ELSE pg_walfile_name(pg_switch_wal()) END`).ReadAll()
	if err != nil || len(rs) != 1 || len(rs[0].Rows) != 1 {
		return
	}
	seg := string(rs[0].Rows[0][0])
	if seg == "" {
		return
	}
	for ctx.Err() == nil {
		rs, err := conn.Exec(ctx, `SELECT coalesce(last_archived_wal, ''), coalesce(last_failed_wal, ''),
			coalesce(last_failed_time > coalesce(last_archived_time, '-infinity'), false) FROM pg_stat_archiver`).ReadAll()
		if err == nil && len(rs) == 1 && len(rs[0].Rows) == 1 {
			row := rs[0].Rows[0]
			last, failed, failing := string(row[0]), string(row[1]), string(row[2]) == "t"
			if len(last) >= 24 && backup.IsSegment(last[:24]) && last[8:24] >= seg[8:24] {
				n.log.Info("restore: the primary's last WAL segment is archived", "segment", seg)
				return
			}
			if failing && len(failed) >= 24 && failed[8:24] >= seg[8:24] {
				n.log.Warn("restore: archiving fails on the primary; the restore ends at the archive's newest WAL", "segment", seg)
				return
			}
		}
		time.Sleep(500 * time.Millisecond)
	}
	n.log.Warn("restore: the primary's last WAL segment was not archived within a minute; the restore may end before the newest writes", "segment", seg)
}
