//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nodeha/nodeha/internal/testcluster"
)

// backupNet is the backup suite's subnet.
const backupNet = 12

// TestBackup runs a cluster that archives to a real S3 server (Versity S3
// Gateway) over HTTPS, encrypted: scheduled and manual base backups, a
// point-in-time restore of the whole cluster after a DROP TABLE, the
// archive going on on the new timeline, the target down for a while, and
// bad settings refused with one line.
func TestBackup(t *testing.T) {
	ctx := context.Background()
	c, err := testcluster.New(clusterOpts("b", backupNet, testcluster.Options{
		Hosts: 3, BaseDir: t.TempDir(), Scope: "e2e-backup",
		Env: []string{"NODEHA_BACKUP_SCHEDULE=1h", "NODEHA_ARCHIVE_FAILING_AFTER=20s"},
	}))
	if err != nil {
		t.Fatal(err)
	}
	c.Down(ctx, false)
	t.Cleanup(func() {
		if t.Failed() {
			for _, h := range c.Hosts {
				t.Logf("=== nodeha log of %s ===\n%s", h.Name, tail(h.Logs(ctx), 60))
				t.Logf("=== spilo log of %s ===\n%s", h.Name, h.SpiloLogs(ctx, 60))
			}
		}
		c.Down(ctx, false)
	})
	if _, err := testcluster.Docker(ctx, "network", "create", "--subnet", c.Opts.Subnet, "--label", "io.nodeha.testcluster="+c.Opts.Prefix, c.Network()); err != nil {
		t.Fatal(err)
	}
	s3 := startS3(t, c, addr(backupNet, 90))
	s3.makeBucket(t, "nodeha")

	// The secrets as an operator writes them, on each host, mode 0600.
	key := filepath.Join(t.TempDir(), "backup.key")
	if out, err := runBin(ctx, nil, "backup", "keygen", "--out", key); err != nil || !strings.Contains(out, "public key age1") {
		t.Fatalf("backup keygen: %v\n%s", err, out)
	}
	keyPEM, _ := os.ReadFile(key)
	caPEM, err := os.ReadFile(s3.CAFile)
	if err != nil {
		t.Fatal(err)
	}
	creds := fmt.Sprintf("AWS_ACCESS_KEY_ID=%s\nAWS_SECRET_ACCESS_KEY=%s\n", s3.AccessKey, s3.SecretKey)
	withArchive := func(h *testcluster.Host) {
		dir := filepath.Join(h.Dir, "secrets")
		os.MkdirAll(dir, 0o700)
		os.WriteFile(filepath.Join(dir, "s3.env"), []byte(creds), 0o600)
		os.WriteFile(filepath.Join(dir, "backup.key"), keyPEM, 0o600)
		os.WriteFile(filepath.Join(dir, "s3-ca.crt"), caPEM, 0o644)
		h.Extra = append(h.Extra,
			"NODEHA_BACKUP_TARGET=s3://nodeha/e2e",
			"NODEHA_BACKUP_S3_ENDPOINT="+s3.Endpoint,
			"NODEHA_BACKUP_S3_CA_FILE="+filepath.Join(dir, "s3-ca.crt"),
			"NODEHA_BACKUP_S3_CREDENTIALS_FILE="+filepath.Join(dir, "s3.env"),
			"NODEHA_BACKUP_ENCRYPTION_KEY_FILE="+filepath.Join(dir, "backup.key"))
	}
	for _, h := range c.Hosts {
		withArchive(h)
	}
	if err := c.Up(ctx); err != nil {
		t.Fatal(err)
	}
	leader := mustWhole(t, c, 4*time.Minute)

	t.Run("ArchiveSettings", func(t *testing.T) {
		if got := mustPsql(t, leader, "show archive_mode"); got != "always" {
			t.Errorf("archive_mode %q, want always", got)
		}
		if got := mustPsql(t, leader, "show archive_command"); !strings.Contains(got, "nodeha wal-push") {
			t.Errorf("archive_command %q", got)
		}
		// No secret in the container's environment or the rendered file.
		env, _ := testcluster.Docker(ctx, "inspect", "-f", "{{json .Config.Env}}", leader.Spilo)
		rendered, _ := leader.RunOnce(ctx, "render")
		for _, secret := range []string{s3.SecretKey, strings.TrimSpace(lastLine(string(keyPEM)))} {
			if strings.Contains(env, secret) || strings.Contains(rendered, secret) {
				t.Errorf("a backup secret is in the container's environment or nodeha render")
			}
		}
		out, err := testcluster.Docker(ctx, "exec", leader.Spilo, "stat", "-c", "%a %u", "/run/backup/settings.json")
		if err != nil || out != "600 101" {
			t.Errorf("settings.json: %q %v, want mode 600 owned by 101", out, err)
		}
	})

	mustPsql(t, leader, "CREATE TABLE pitr (id int PRIMARY KEY, at timestamptz DEFAULT clock_timestamp()); INSERT INTO pitr (id) SELECT generate_series(1, 100)")

	t.Run("ScheduledBackupFromAReplica", func(t *testing.T) {
		// The schedule's first backup, taken by a healthy replica.
		eventually(t, 4*time.Minute, func() error {
			out, err := leader.RunOnce(ctx, "backup", "list")
			if err != nil {
				return fmt.Errorf("%v: %s", err, out)
			}
			if !strings.Contains(out, " standby ") {
				return fmt.Errorf("no backup from a standby yet:\n%s", out)
			}
			return nil
		})
	})

	var replica *testcluster.Host
	for _, h := range c.Hosts {
		if h != leader {
			replica = h
			break
		}
	}
	t.Run("ManualBackup", func(t *testing.T) {
		out, err := replica.RunOnce(ctx, "backup")
		if err != nil || !strings.Contains(out, "backup base_") || !strings.Contains(out, "from the standby "+replica.Name) {
			t.Fatalf("nodeha backup on %s: %v\n%s", replica.Name, err, out)
		}
		t.Logf("%s", strings.TrimSpace(out))
		// The host's metrics (loopback, the default) say so.
		metrics, err := testcluster.Docker(ctx, "run", "--rm", "--network", "container:"+replica.Holder, "--entrypoint", "curl",
			hostImage, "-sf", "http://127.0.0.1:9272/metrics")
		if err != nil {
			t.Fatalf("scrape %s: %v", replica.Name, err)
		}
		m := regexp.MustCompile(`(?m)^nodeha_backup_last_success_timestamp_seconds ([0-9.e+]+)$`).FindStringSubmatch(metrics)
		if v, _ := strconv.ParseFloat(safeIndex(m, 1), 64); m == nil || time.Since(time.Unix(int64(v), 0)) > time.Minute {
			t.Errorf("nodeha_backup_last_success_timestamp_seconds on %s: %v", replica.Name, m)
		}
		if !strings.Contains(metrics, "\nnodeha_archive_failing 0\n") {
			t.Errorf("nodeha_archive_failing 0 is not in %s's metrics", replica.Name)
		}
	})

	// Committed before T, committed after T, then the mistake.
	mustPsql(t, leader, "INSERT INTO pitr (id) SELECT generate_series(101, 200)")
	time.Sleep(1500 * time.Millisecond)
	target := time.Now().UTC()
	time.Sleep(1500 * time.Millisecond)
	mustPsql(t, leader, "INSERT INTO pitr (id) SELECT generate_series(201, 300)")
	mustPsql(t, leader, "DROP TABLE pitr")

	t.Run("BadInput", func(t *testing.T) {
		before := mustPsql(t, leader, "select pg_postmaster_start_time()")
		out, err := leader.RunOnce(ctx, "restore", "--to", "2020-01-01T00:00:00Z")
		if err == nil || !strings.Contains(out, "before the oldest point") {
			t.Errorf("restore before the oldest backup: %v\n%s", err, out)
		}
		if got := mustPsql(t, leader, "select pg_postmaster_start_time()"); got != before {
			t.Errorf("a refused restore restarted PostgreSQL")
		}
		dir := t.TempDir()
		goodCreds := filepath.Join(dir, "good.env")
		os.WriteFile(goodCreds, []byte(creds), 0o600)
		badCreds := filepath.Join(dir, "bad.env")
		os.WriteFile(badCreds, []byte("AWS_ACCESS_KEY_ID=nobody\nAWS_SECRET_ACCESS_KEY=wrong-secret-123\n"), 0o600)
		openCreds := filepath.Join(dir, "open.env")
		os.WriteFile(openCreds, []byte(creds), 0o644)
		base := []string{"NODEHA_TOKEN=" + c.Token, "NODEHA_DATA_DIR=" + filepath.Join(dir, "nodeha"), "NODEHA_ADVERTISE=127.0.0.1",
			"NODEHA_PEERS=127.0.0.1", "NODEHA_BACKUP_S3_CA_FILE=" + s3.CAFile}
		cases := []struct {
			name string
			env  []string
			want string
		}{
			{"wrong credentials", []string{"NODEHA_BACKUP_TARGET=s3://nodeha/e2e", "NODEHA_BACKUP_S3_ENDPOINT=" + s3.Endpoint, "NODEHA_BACKUP_S3_CREDENTIALS_FILE=" + badCreds}, "NODEHA_BACKUP_S3_CREDENTIALS_FILE"},
			{"no such bucket", []string{"NODEHA_BACKUP_TARGET=s3://no-such-bucket/e2e", "NODEHA_BACKUP_S3_ENDPOINT=" + s3.Endpoint, "NODEHA_BACKUP_S3_CREDENTIALS_FILE=" + goodCreds}, `bucket "no-such-bucket" does not exist`},
			{"unreachable", []string{"NODEHA_BACKUP_TARGET=s3://nodeha/e2e", "NODEHA_BACKUP_S3_ENDPOINT=https://" + addr(backupNet, 91) + ":7070", "NODEHA_BACKUP_S3_CREDENTIALS_FILE=" + goodCreds}, addr(backupNet, 91)},
			{"plain http", []string{"NODEHA_BACKUP_TARGET=s3://nodeha/e2e", "NODEHA_BACKUP_S3_ENDPOINT=http://" + addr(backupNet, 90) + ":7070", "NODEHA_BACKUP_S3_CREDENTIALS_FILE=" + goodCreds}, "NODEHA_BACKUP_S3_ENDPOINT"},
			{"readable secret", []string{"NODEHA_BACKUP_TARGET=s3://nodeha/e2e", "NODEHA_BACKUP_S3_ENDPOINT=" + s3.Endpoint, "NODEHA_BACKUP_S3_CREDENTIALS_FILE=" + openCreds}, "chmod 600"},
		}
		for _, cs := range cases {
			cctx, cancel := context.WithTimeout(ctx, 45*time.Second)
			out, err := runBin(cctx, append(append([]string{}, base...), cs.env...), "backup", "check")
			cancel()
			if err == nil || !strings.Contains(err.Error(), cs.want) {
				t.Errorf("%s: %v\n%s; want an error naming %q", cs.name, err, out, cs.want)
				continue
			}
			if lines := strings.Split(strings.TrimSpace(err.Error()[strings.Index(err.Error(), "nodeha:"):]), "\n"); len(lines) != 1 {
				t.Errorf("%s: %d lines, want one: %v", cs.name, len(lines), err)
			}
		}
		// The good settings pass.
		if out, err := runBin(ctx, append(base, "NODEHA_BACKUP_TARGET=s3://nodeha/e2e", "NODEHA_BACKUP_S3_ENDPOINT="+s3.Endpoint, "NODEHA_BACKUP_S3_CREDENTIALS_FILE="+goodCreds), "backup", "check"); err != nil {
			t.Errorf("backup check with good settings: %v\n%s", err, out)
		}
	})

	t.Run("PointInTimeRestore", func(t *testing.T) {
		start := time.Now()
		out, err := replica.RunOnce(ctx, "restore", "--to", target.Format(time.RFC3339Nano))
		if err != nil || !strings.Contains(out, "restored backup") {
			t.Fatalf("restore: %v\n%s", err, out)
		}
		t.Logf("%s (%s)", strings.TrimSpace(out), time.Since(start).Round(time.Second))
		leader = mustWhole(t, c, 5*time.Minute)
		if got := mustPsql(t, leader, "SELECT count(*), min(id), max(id) FROM pitr"); got != "200|1|200" {
			t.Errorf("after the restore to T: count|min|max = %s, want 200|1|200", got)
		}
		for _, h := range c.Hosts {
			if h == leader {
				continue
			}
			if got := mustPsql(t, h, "SELECT count(*) FROM pitr"); got != "200" {
				t.Errorf("replica %s has %s rows, want 200", h.Name, got)
			}
		}
		for _, h := range c.Hosts {
			if m, _ := filepath.Glob(filepath.Join(h.Dir, "postgresql", "pgdata.before-restore-*")); len(m) != 1 {
				t.Errorf("%s: the data directory before the restore is not kept: %v", h.Name, m)
			}
		}
	})

	t.Run("ArchiveAfterRestore", func(t *testing.T) {
		tl, _ := strconv.Atoi(mustPsql(t, leader, "SELECT timeline_id FROM pg_control_checkpoint()"))
		seg := mustPsql(t, leader, "INSERT INTO pitr (id) VALUES (1000); SELECT pg_walfile_name(pg_switch_wal())")
		if tl < 2 || !strings.HasPrefix(seg, fmt.Sprintf("%08X", tl)) {
			t.Errorf("timeline %d, segment %s", tl, seg)
		}
		eventually(t, time.Minute, func() error {
			out, err := leader.RunOnce(ctx, "backup", "list")
			if err != nil {
				return fmt.Errorf("%v: %s", err, out)
			}
			if !strings.Contains(out, "newest WAL archived: "+seg[:8]) {
				return fmt.Errorf("segment %s not archived yet:\n%s", seg, out)
			}
			return nil
		})
	})

	verify := func(t *testing.T) {
		t.Helper()
		seg := mustPsql(t, leader, "SELECT pg_walfile_name(pg_switch_wal())")
		eventually(t, 2*time.Minute, func() error {
			out, err := leader.RunOnce(ctx, "backup", "verify")
			if err != nil || !archivedUpTo(out, seg) {
				return fmt.Errorf("backup verify (up to %s): %v\n%s", seg, err, out)
			}
			return nil
		})
	}

	t.Run("NewHostFromBackup", func(t *testing.T) {
		h := c.NewHost("NODEHA_JOIN=true")
		withArchive(h)
		if err := h.Start(ctx); err != nil {
			t.Fatal(err)
		}
		leader = mustWhole(t, c, 5*time.Minute)
		logs, _ := testcluster.Docker(ctx, "logs", h.Spilo)
		if !strings.Contains(logs, "unpacked backup base_") {
			t.Errorf("%s was not made from a backup; its Spilo log:\n%s", h.Name, tail(logs, 30))
		}
		want := mustPsql(t, leader, "SELECT count(*) FROM pitr")
		eventually(t, time.Minute, func() error {
			if got, err := h.Psql(ctx, "SELECT count(*) FROM pitr"); err != nil || got != want {
				return fmt.Errorf("%s has %q rows (%v), the primary %s", h.Name, got, err, want)
			}
			return nil
		})
	})

	t.Run("KillHostFailover", func(t *testing.T) {
		// WAL the primary may not have archived yet when it dies: every
		// replica archives what it received, so the archive has no gap.
		mustPsql(t, leader, "INSERT INTO pitr (id, at) SELECT g, now() FROM generate_series(10001, 400000) g")
		old := leader
		if err := old.Kill(ctx); err != nil {
			t.Fatal(err)
		}
		eventually(t, 2*time.Minute, func() error {
			st := c.Observe(ctx)
			if len(st.Leaders) != 1 || st.Leaders[0] == old {
				return fmt.Errorf("no new primary yet: %v", st.Leaders)
			}
			leader = st.Leaders[0]
			return nil
		})
		if err := old.Start(ctx); err != nil {
			t.Fatal(err)
		}
		leader = mustWhole(t, c, 5*time.Minute)
		verify(t)
	})

	t.Run("TargetDown", func(t *testing.T) {
		s3.stop(t)
		restarted := false
		defer func() {
			if !restarted {
				s3.start(t)
			}
		}()
		mustPsql(t, leader, "INSERT INTO pitr (id) SELECT generate_series(2001, 3000); SELECT pg_switch_wal()")
		eventually(t, 2*time.Minute, func() error {
			rep := mustHealth(t, leader)
			if rep.Backup == nil || !rep.Backup.Failing || !strings.Contains(strings.Join(rep.ReasonCodes, ","), "archive_failing") {
				return fmt.Errorf("archive not reported failing: %+v %v", rep.Backup, rep.Reasons)
			}
			return nil
		})
		// Writes go on meanwhile.
		mustPsql(t, leader, "INSERT INTO pitr (id) SELECT generate_series(3001, 4000)")
		status, _ := leader.RunOnce(ctx, "status")
		if !strings.Contains(status, "archive FAILING") || !strings.Contains(status, "WAL archiving is failing") {
			t.Errorf("nodeha status does not say archiving fails:\n%s", status)
		}
		seg := mustPsql(t, leader, "SELECT pg_walfile_name(pg_switch_wal())")
		s3.start(t)
		restarted = true
		eventually(t, 2*time.Minute, func() error {
			rep := mustHealth(t, leader)
			if rep.Backup == nil || rep.Backup.Failing {
				return fmt.Errorf("archive still failing: %+v", rep.Backup)
			}
			if last := mustPsql(t, leader, "SELECT last_archived_wal FROM pg_stat_archiver"); len(last) < 24 || last[8:24] < seg[8:24] {
				return fmt.Errorf("backlog not drained: last archived %s, want %s", last, seg)
			}
			return nil
		})
	})

	t.Run("EveryHostLost", func(t *testing.T) {
		// What reached the archive survives the loss of every host, its
		// data and etcd: a new cluster with the same archive settings,
		// then nodeha restore --latest.
		want := mustPsql(t, leader, "INSERT INTO pitr (id) VALUES (999999); SELECT count(*) FROM pitr")
		verify(t)
		for _, h := range c.Hosts {
			if err := h.Kill(ctx); err != nil {
				t.Fatal(err)
			}
			if err := os.RemoveAll(h.Dir); err != nil {
				t.Fatal(err)
			}
		}
		c2, err := testcluster.New(clusterOpts("b", backupNet, testcluster.Options{
			Hosts: 3, BaseDir: t.TempDir(), Scope: "e2e-backup", Env: c.Opts.Env,
		}))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			if t.Failed() {
				for _, h := range c2.Hosts {
					t.Logf("=== nodeha log of new %s ===\n%s", h.Name, tail(h.Logs(ctx), 60))
					t.Logf("=== spilo log of new %s ===\n%s", h.Name, h.SpiloLogs(ctx, 60))
				}
			}
			for _, h := range c2.Hosts {
				h.Kill(context.Background())
			}
		})
		for _, h := range c2.Hosts {
			withArchive(h)
		}
		if err := c2.Up(ctx); err != nil {
			t.Fatal(err)
		}
		fresh := mustWhole(t, c2, 4*time.Minute)
		if got, _ := fresh.Psql(ctx, "SELECT count(*) FROM pitr"); got == want {
			t.Fatalf("the new cluster has the table before any restore")
		}
		start := time.Now()
		out, err := c2.Hosts[0].RunOnce(ctx, "restore", "--latest")
		if err != nil || !strings.Contains(out, "restored backup") {
			t.Fatalf("restore --latest: %v\n%s", err, out)
		}
		t.Logf("%s (%s)", strings.TrimSpace(out), time.Since(start).Round(time.Second))
		leader = mustWhole(t, c2, 5*time.Minute)
		if got := mustPsql(t, leader, "SELECT count(*) FROM pitr"); got != want {
			t.Errorf("after restoring every lost host: %s rows, want %s (every row archived)", got, want)
		}
	})
}

// archivedUpTo says whether `nodeha backup verify` found no gap up to at
// least segment seg ("WAL from A to B: every segment archived").
func archivedUpTo(out, seg string) bool {
	m := regexp.MustCompile(`to ([0-9A-F]{24}): every segment archived`).FindStringSubmatch(out)
	return m != nil && m[1][8:] >= seg[8:] && m[1][:8] >= seg[:8]
}

func safeIndex(m []string, i int) string {
	if i < len(m) {
		return m[i]
	}
	return ""
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return lines[len(lines)-1]
}

// TestBackupToDirectory archives to a directory every host mounts at the
// same path, as an NFS mount would be: a base backup, the WAL, and the
// whole cluster restored from it.
func TestBackupToDirectory(t *testing.T) {
	ctx := context.Background()
	shared := t.TempDir()
	target := filepath.Join(shared, "archive")
	if err := os.Mkdir(target, 0o700); err != nil {
		t.Fatal(err)
	}
	// The path must be traversable by the image's postgres user, as an
	// NFS mount point is.
	os.Chmod(shared, 0o755)
	os.Chmod(filepath.Dir(shared), 0o755)
	c, err := testcluster.New(clusterOpts("bd", 16, testcluster.Options{
		Hosts: 3, BaseDir: t.TempDir(), Scope: "e2e-backup-dir", Shared: []string{shared},
		Env: []string{"NODEHA_BACKUP_TARGET=file://" + target, "NODEHA_BACKUP_SCHEDULE=0"},
	}))
	if err != nil {
		t.Fatal(err)
	}
	c.Down(ctx, false)
	t.Cleanup(func() {
		if t.Failed() {
			for _, h := range c.Hosts {
				t.Logf("=== nodeha log of %s ===\n%s", h.Name, tail(h.Logs(ctx), 40))
				t.Logf("=== spilo log of %s ===\n%s", h.Name, h.SpiloLogs(ctx, 40))
			}
		}
		c.Down(ctx, false)
	})
	if err := c.Up(ctx); err != nil {
		t.Fatal(err)
	}
	leader := mustWhole(t, c, 4*time.Minute)
	mustPsql(t, leader, "CREATE TABLE kept (id int PRIMARY KEY); INSERT INTO kept SELECT generate_series(1, 100)")
	if out, err := leader.RunOnce(ctx, "backup"); err != nil || !strings.Contains(out, "backup base_") {
		t.Fatalf("nodeha backup: %v\n%s", err, out)
	}
	if m, _ := filepath.Glob(filepath.Join(target, "basebackups", "base_*", "backup.json")); len(m) != 1 {
		t.Errorf("backup.json files in the directory: %v", m)
	}
	mustPsql(t, leader, "INSERT INTO kept SELECT generate_series(101, 200)")
	seg := mustPsql(t, leader, "SELECT pg_walfile_name(pg_switch_wal())")
	eventually(t, time.Minute, func() error {
		out, err := leader.RunOnce(ctx, "backup", "verify")
		if err != nil || !archivedUpTo(out, seg) {
			return fmt.Errorf("verify up to %s: %v\n%s", seg, err, out)
		}
		return nil
	})
	out, err := c.Hosts[1].RunOnce(ctx, "restore", "--latest")
	if err != nil || !strings.Contains(out, "restored backup") {
		t.Fatalf("restore --latest: %v\n%s", err, out)
	}
	leader = mustWhole(t, c, 5*time.Minute)
	if got := mustPsql(t, leader, "SELECT count(*) FROM kept"); got != "200" {
		t.Errorf("after the restore: %s rows, want 200", got)
	}
}
