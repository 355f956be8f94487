package cli

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/url"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"filippo.io/age"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/nodeha/nodeha/backup"
	"github.com/nodeha/nodeha/config"
	"github.com/nodeha/nodeha/spilo"
)

// cmdBackup is `nodeha backup [list|check|keygen]`; alone, a base backup now.
func cmdBackup(args []string, stdout, stderr io.Writer) error {
	if len(args) > 0 {
		switch args[0] {
		case "list":
			return cmdBackupList(args[1:], stdout, stderr)
		case "check":
			return cmdBackupCheck(args[1:], stdout, stderr)
		case "keygen":
			return cmdBackupKeygen(args[1:], stdout, stderr)
		case "verify":
			return cmdBackupVerify(args[1:], stdout, stderr)
		}
	}
	fs := newFlags("backup", stderr)
	cfg, err := load(fs, args, false)
	if err != nil {
		return err
	}
	return action(cfg.Socket, "/backup", 6*time.Hour, stdout)
}

// archiveOf opens the archive this host's settings name.
func archiveOf(name string, args []string, stderr io.Writer, extra func(fs *flag.FlagSet)) (*config.Config, *backup.Archive, error) {
	fs := newFlags(name, stderr)
	if extra != nil {
		extra(fs)
	}
	cfg, err := load(fs, args, true)
	if err != nil {
		return nil, nil, err
	}
	if cfg.Backup == nil {
		return nil, nil, config.Problem("BACKUP_TARGET", "backup-target", "is not set: this cluster has no archive")
	}
	a, err := backup.New(cfg.Backup)
	return cfg, a, err
}

func cmdBackupCheck(args []string, stdout, stderr io.Writer) error {
	cfg, a, err := archiveOf("backup check", args, stderr, nil)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := a.Store.Check(ctx); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "%s: reachable, writable\n", cfg.BackupTarget)
	return nil
}

// cmdBackupList prints the backups, what one can restore to, and the
// newest WAL archived.
func cmdBackupList(args []string, stdout, stderr io.Writer) error {
	var asJSON *bool
	_, a, err := archiveOf("backup list", args, stderr, func(fs *flag.FlagSet) { asJSON = fs.Bool("json", false, "print JSON") })
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	bs, err := a.Backups(ctx)
	if err != nil {
		return err
	}
	usable, err := a.UsableBackups(ctx)
	if err != nil {
		return err
	}
	wal, _, err := a.WAL(ctx)
	if err != nil {
		return err
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(struct {
			Backups []backup.Info    `json:"backups"`
			WAL     backup.WALStatus `json:"wal"`
		}{bs, wal})
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tSTART\tFINISH\tFROM\tHOST\tSIZE\tSTORED\tSTART WAL")
	for _, b := range bs {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", b.Name, b.Start.Format(time.RFC3339), b.Finish.Format(time.RFC3339),
			b.From, b.Host, mib(b.Size), mib(b.Stored), b.StartWAL)
	}
	tw.Flush()
	if len(usable) == 0 {
		fmt.Fprintln(stdout, "no base backup yet (nodeha backup takes one)")
	} else {
		fmt.Fprintf(stdout, "oldest point in time to restore to: %s\n", usable[0].Finish.Format(time.RFC3339))
	}
	if n := len(bs) - len(usable); n > 0 {
		fmt.Fprintf(stdout, "%d backups lie on a branch an earlier restore left: they do not restore this cluster\n", n)
	}
	if wal.Newest != "" {
		fmt.Fprintf(stdout, "newest WAL archived: %s at %s (%d segments, %s stored)\n", wal.Newest, wal.NewestAt.Format(time.RFC3339), wal.Segments, mib(wal.Bytes))
	} else {
		fmt.Fprintln(stdout, "no WAL archived yet")
	}
	return nil
}

// cmdBackupVerify checks the archived WAL for gaps: every segment from the
// oldest usable backup's start to the newest archived, along the newest
// timeline's history. Exit 1 when one is missing.
func cmdBackupVerify(args []string, stdout, stderr io.Writer) error {
	_, a, err := archiveOf("backup verify", args, stderr, nil)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	g, err := a.Verify(ctx)
	if err != nil {
		return err
	}
	if len(g.Missing) > 0 {
		return fmt.Errorf("WAL from %s to %s: %d segments missing: %s", g.From, g.To, len(g.Missing), strings.Join(g.Missing, " "))
	}
	fmt.Fprintf(stdout, "WAL from %s to %s: every segment archived\n", g.From, g.To)
	return nil
}

func mib(n int64) string { return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20)) }

// cmdBackupKeygen writes a new age identity for NODEHA_BACKUP_ENCRYPTION_KEY_FILE.
func cmdBackupKeygen(args []string, stdout, stderr io.Writer) error {
	fs := newFlags("backup keygen", stderr)
	out := fs.String("out", "", "the file to write (mode 0600; an existing file is never replaced)")
	if err := fs.Parse(args); err != nil {
		return &exitError{2, err}
	}
	if *out == "" {
		return config.Problem("", "out", "is required: the file to write the key to")
	}
	id, err := age.GenerateX25519Identity()
	if err != nil {
		return err
	}
	f, err := os.OpenFile(*out, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return config.Problem("", "out", "%v", err)
	}
	_, err = fmt.Fprintf(f, "# created: %s\n# public key: %s\n%s\n", time.Now().UTC().Format(time.RFC3339), id.Recipient(), id)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "wrote %s (0600), public key %s\nset NODEHA_BACKUP_ENCRYPTION_KEY_FILE=%s on every host, and keep a copy off the cluster: without it no backup restores\n",
		*out, id.Recipient(), *out)
	return nil
}

// cmdRestore asks the running nodeha to restore the whole cluster.
func cmdRestore(args []string, stdout, stderr io.Writer) error {
	fs := newFlags("restore", stderr)
	to := fs.String("to", "", "restore to this point in time (RFC 3339, e.g. 2026-12-03T14:05:00Z): the newest backup that ended before it, then the WAL up to it")
	latest := fs.Bool("latest", false, "restore the newest backup and every archived WAL after it")
	name := fs.String("backup", "", "restore this backup (nodeha backup list): alone, to its end; with --to, then the WAL up to that time")
	cfg, err := load(fs, args, false)
	if err != nil {
		return err
	}
	switch {
	case *latest && (*to != "" || *name != ""):
		return config.Problem("", "latest", "goes alone: not with --to or --backup")
	case !*latest && *to == "" && *name == "":
		return config.Problem("", "to", "give one of --to TIME, --latest or --backup NAME")
	}
	if *to != "" {
		t, err := time.Parse(time.RFC3339Nano, *to)
		if err != nil {
			return config.Problem("", "to", "%q is not a time like 2026-12-03T14:05:00Z (RFC 3339)", *to)
		}
		if t.After(time.Now()) {
			return config.Problem("", "to", "%s is in the future", *to)
		}
	}
	q := url.Values{}
	if *to != "" {
		q.Set("to", *to)
	}
	if *name != "" {
		q.Set("backup", *name)
	}
	if *latest {
		q.Set("latest", "true")
	}
	fmt.Fprintln(stderr, "nodeha: restoring: every host stops, its data directory is moved aside (kept), and the cluster is rebuilt from the backup")
	return action(cfg.Socket, "/restore?"+q.Encode(), 40*time.Minute, stdout)
}

// The commands below run inside the Spilo container, as postgres: the
// archive_command, restore_command, a base backup and Patroni's restore
// bootstrap. Their settings come from the file nodeha writes there.

func containerArchive(fs *flag.FlagSet, args []string) (*backup.Archive, *backup.Settings, error) {
	settings := fs.String("settings", spilo.ContainerSettings, "the archive's settings file")
	if err := fs.Parse(args); err != nil {
		return nil, nil, &exitError{2, err}
	}
	s, err := backup.ReadSettings(*settings)
	if err != nil {
		return nil, nil, err
	}
	a, err := backup.New(s)
	return a, s, err
}

// cmdWALPush is archive_command: nodeha wal-push %p.
func cmdWALPush(args []string, stdout, stderr io.Writer) error {
	fs := newFlags("wal-push", stderr)
	a, _, err := containerArchive(fs, args)
	if err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return &exitError{2, errors.New("wal-push: want the WAL file's path (%p)")}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	return a.PushWAL(ctx, fs.Arg(0))
}

// cmdWALFetch is restore_command: nodeha wal-fetch %f %p. A file that is
// not archived exits 1 quietly: PostgreSQL asks for such files routinely.
func cmdWALFetch(args []string, stdout, stderr io.Writer) error {
	fs := newFlags("wal-fetch", stderr)
	a, _, err := containerArchive(fs, args)
	if err != nil {
		return err
	}
	if fs.NArg() != 2 {
		return &exitError{2, errors.New("wal-fetch: want the WAL file's name and the path to write it to (%f %p)")}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	err = a.FetchWAL(ctx, fs.Arg(0), fs.Arg(1))
	if errors.Is(err, backup.ErrNotFound) {
		return &exitError{1, nil}
	}
	return err
}

// cmdBackupPush takes a base backup with pg_basebackup and prints its
// backup.json.
func cmdBackupPush(args []string, stdout, stderr io.Writer) error {
	fs := newFlags("backup-push", stderr)
	host := fs.String("host", "", "this host's member name, recorded in the backup")
	pgBin := fs.String("pg-bin", "", "PostgreSQL's bin directory (default: pg_basebackup from PATH)")
	a, s, err := containerArchive(fs, args)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	name := backup.NewBackupName(time.Now())
	sysid, err := systemID(ctx, s)
	if err != nil {
		return err
	}
	bin := "pg_basebackup"
	if *pgBin != "" {
		bin = filepath.Join(*pgBin, bin)
	}
	// -X fetch: the backup carries the WAL it needs (no wait for the
	// archive, which a standby cannot make switch); fast checkpoint.
	cmd := exec.CommandContext(ctx, bin, "-D", "-", "-F", "t", "-X", "fetch", "-c", "fast", "-w",
		"-h", s.PGSocketDir, "-p", strconv.Itoa(s.PGPort), "-U", "postgres", "-l", "nodeha "+name)
	cmd.Stderr = stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		return err
	}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("backup: %w", err)
	}
	info, err := a.PushBackup(ctx, out, backup.Info{Name: name, Host: *host, SystemID: sysid}, func() error {
		if err := cmd.Wait(); err != nil {
			return fmt.Errorf("backup: pg_basebackup: %w", err)
		}
		return nil
	})
	if err != nil {
		if cmd.ProcessState == nil {
			cmd.Process.Kill()
			cmd.Wait()
		}
		return err
	}
	return json.NewEncoder(stdout).Encode(info)
}

// primaryIdentity asks the primary (libpq connection string, password
// from PGPASSFILE) for its system identifier and timeline over a
// replication connection.
func primaryIdentity(ctx context.Context, connstring string) (sysid string, tl int, err error) {
	if connstring == "" {
		return "", 0, errors.New("no connection string")
	}
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	conn, err := pgconn.Connect(ctx, connstring+" replication=true application_name=nodeha-backup-fetch")
	if err != nil {
		return "", 0, err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	rs, err := conn.Exec(ctx, "IDENTIFY_SYSTEM").ReadAll()
	if err != nil {
		return "", 0, err
	}
	if len(rs) != 1 || len(rs[0].Rows) != 1 || len(rs[0].Rows[0]) < 2 {
		return "", 0, errors.New("IDENTIFY_SYSTEM: unexpected answer")
	}
	tl, err = strconv.Atoi(string(rs[0].Rows[0][1]))
	return string(rs[0].Rows[0][0]), tl, err
}

// systemID asks the local PostgreSQL for its system identifier.
func systemID(ctx context.Context, s *backup.Settings) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	conn, err := pgconn.Connect(ctx, fmt.Sprintf("host=%s port=%d user=postgres dbname=postgres application_name=nodeha-backup", s.PGSocketDir, s.PGPort))
	if err != nil {
		return "", fmt.Errorf("backup: %w", err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	rs, err := conn.Exec(ctx, "SELECT system_identifier FROM pg_control_system()").ReadAll()
	if err != nil || len(rs) != 1 || len(rs[0].Rows) != 1 {
		return "", fmt.Errorf("backup: read the system identifier: %v", err)
	}
	return string(rs[0].Rows[0][0]), nil
}

// cmdBackupFetch is Patroni's restore bootstrap: it unpacks a base backup
// into the (empty) data directory; Patroni then replays the WAL.
func cmdBackupFetch(args []string, stdout, stderr io.Writer) error {
	fs := newFlags("backup-fetch", stderr)
	name := fs.String("backup", "", "the backup to unpack")
	latest := fs.Bool("latest", false, "the newest backup on the way to the archive's newest timeline (a new replica)")
	dir := fs.String("datadir", "", "the data directory (Patroni passes it)")
	// What Patroni passes to a bootstrap or replica creation command.
	fs.String("scope", "", "the cluster's scope (Patroni passes it)")
	fs.String("role", "", "the member's role (Patroni passes it)")
	connstring := fs.String("connstring", "", "the primary's connection string (Patroni passes it, and the password in PGPASSFILE)")
	// A method's other keys come as flags too (Patroni 3 passes these).
	for _, k := range []string{"keep_data", "no_master", "no_leader"} {
		fs.String(k, "", "Patroni's, ignored")
	}
	a, _, err := containerArchive(fs, args)
	if err != nil {
		return err
	}
	if (*name == "") == !*latest || *dir == "" {
		return &exitError{2, errors.New("backup-fetch: want --backup NAME or --latest, and --datadir DIR")}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 12*time.Hour)
	defer cancel()
	if *latest {
		// Only when the archive already holds the primary's timeline: a
		// replica made from a backup replays the archive, and without the
		// newest history file it would follow an old timeline past the
		// point where the primary left it (right after a failover or a
		// restore). Patroni then makes the replica with pg_basebackup.
		sysid, tl, err := primaryIdentity(ctx, *connstring)
		if err != nil {
			return fmt.Errorf("backup-fetch: cannot ask the primary for its timeline, so no replica from a backup: %w", err)
		}
		t, err := a.Newest(ctx)
		if err != nil {
			return err
		}
		if tl > t.TL {
			return fmt.Errorf("backup-fetch: the primary is on timeline %d, the archive's newest is %d: no replica from a backup until its history is archived", tl, t.TL)
		}
		all, err := a.Backups(ctx)
		if err != nil {
			return err
		}
		// And only this cluster's: a new cluster next to an old archive
		// (before its restore) must not make replicas of another system.
		var bs []backup.Info
		for _, b := range backup.Usable(all, t) {
			if b.SystemID == sysid {
				bs = append(bs, b)
			}
		}
		if len(bs) == 0 {
			// Patroni goes on to its next method (pg_basebackup).
			return fmt.Errorf("backup-fetch: no base backup of system %s to make a replica from", sysid)
		}
		if err := a.CanReplay(ctx, t, bs[len(bs)-1]); err != nil {
			return fmt.Errorf("backup-fetch: no replica from a backup yet: %w", err)
		}
		*name = bs[len(bs)-1].Name
	}
	start := time.Now()
	info, err := a.FetchBackup(ctx, *name, *dir)
	if err != nil {
		return err
	}
	fmt.Fprintf(stderr, "nodeha: unpacked backup %s (%s) into %s in %s\n", info.Name, mib(info.Size), *dir, time.Since(start).Round(time.Millisecond))
	return nil
}
