// Package cli implements nodeha's commands: parsing arguments and settings
// and calling into the packages that do the work. Exit codes: 0 success,
// 1 failure or unhealthy, 2 bad usage or settings.
package cli

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"net/url"
	"os"
	"os/signal"
	"regexp"
	"strings"
	"syscall"
	"time"

	"github.com/nodeha/nodeha/config"
	"github.com/nodeha/nodeha/health"
	"github.com/nodeha/nodeha/spilo"
	"github.com/nodeha/nodeha/supervisor"
	"github.com/nodeha/nodeha/systemd"
)

// Version is stamped at build time with -ldflags "-X github.com/nodeha/nodeha/cli.Version=...".
var Version = "dev"

const usage = `usage: nodeha <command> [flags]

commands:
  run        run this host: etcd member, postgres.yml, Spilo container, health socket
  join       run this host, joining the existing cluster of --peers (a learner, promoted when caught up)
  leave      take this host out of the cluster (switchover first if primary); nothing is deleted
  remove     remove a dead host's etcd and Patroni members: nodeha remove NAME [--force]
  recover    after losing a majority: restart this host's etcd as a one-member cluster (nodeha stopped)
  snapshot   write an etcd snapshot now (DATA_DIR/snapshots)
  status     show this host's health (--json for the full report; --wait[=5m]: until healthy; --cluster: every host)
  render     print the postgres.yml this host would run (--container: the container spec)
  dsn        print the libpq connection string for all hosts (verify-full against --sslrootcert)
  ca         print the cluster CA's certificate, what clients verify the servers against
  metrics-cert  write a certificate that reads the hosts' metrics and nothing else (--out DIR)
  switchover planned leader change (--to NAME), waits for the new primary
  backup     a base backup now; list: backups and archived WAL; check: the target; verify: WAL gaps; keygen --out FILE: a key
  restore    the whole cluster back in time: --to TIME | --latest | --backup NAME (data directories moved aside, kept)
  install    install the systemd unit and settings file, enable and start nodeha (--dry-run)
  uninstall  stop, disable and remove the unit and settings file; data stays
  cloud-init print #cloud-config user-data that makes a new VM a nodeha host
  token      generate: print a new cluster token; show: print this host's (root only)
  version    print the version

Run inside the Spilo container by PostgreSQL and Patroni (README: Backups):
  wal-push, wal-fetch, backup-push, backup-fetch

Every setting is a NODEHA_* environment variable and a flag; flags win.
Run 'nodeha <command> -h' for the flags.
`

// exitError carries an exit code.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }

// Main runs the command in args and returns the process exit code.
func Main(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	cmds := map[string]func([]string, io.Writer, io.Writer) error{
		"run": cmdRun, "status": cmdStatus, "render": cmdRender, "dsn": cmdDSN, "version": cmdVersion, "switchover": cmdSwitchover,
		"install": cmdInstall, "uninstall": cmdUninstall, "cloud-init": cmdCloudInit, "token": cmdToken,
		"backup": cmdBackup, "restore": cmdRestore,
		"wal-push": cmdWALPush, "wal-fetch": cmdWALFetch, "backup-push": cmdBackupPush, "backup-fetch": cmdBackupFetch,
		"join": cmdJoin, "leave": cmdLeave, "ca": cmdCA, "metrics-cert": cmdMetricsCert, "remove": cmdRemove, "recover": cmdRecover, "snapshot": cmdSnapshot,
	}
	cmd, ok := cmds[args[0]]
	if !ok {
		if args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
			fmt.Fprint(stdout, usage)
			return 0
		}
		fmt.Fprintf(stderr, "nodeha: unknown command %q\n%s", args[0], usage)
		return 2
	}
	err := cmd(args[1:], stdout, stderr)
	if err == nil {
		return 0
	}
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	var ee *exitError
	var se *config.SettingError
	code := 1
	switch {
	case errors.As(err, &ee):
		code = ee.code
		err = ee.err
	case errors.As(err, &se):
		code = 2
	}
	if err != nil {
		// One line per problem, each prefixed, so every line stands alone in a log.
		for _, line := range strings.Split(err.Error(), "\n") {
			fmt.Fprintf(stderr, "nodeha: %s\n", line)
		}
	}
	return code
}

// newFlags is a command's flag set. A parse error comes back as one line
// naming the flag (Main prints it, exit 2), without the list of every flag;
// -h prints that list.
func newFlags(name string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet("nodeha "+name, flag.ContinueOnError)
	out := &countingWriter{}
	fs.SetOutput(out)
	fs.Usage = func() {
		if out.n > 0 { // the flag package wrote a parse error just before
			return
		}
		fmt.Fprintf(stderr, "Usage of nodeha %s:\n", name)
		fs.SetOutput(stderr)
		fs.PrintDefaults()
		fs.SetOutput(out)
	}
	return fs
}

type countingWriter struct{ n int }

func (w *countingWriter) Write(p []byte) (int, error) { w.n += len(p); return len(p), nil }

// load reads settings and flags; validate runs Validate and marks its
// problems as bad settings (exit 2).
func load(fs *flag.FlagSet, args []string, validate bool) (*config.Config, error) {
	return loadWith(fs, args, validate, false)
}

// loadWith is load; mayGenerate lets a one-host new cluster make up its
// token (run, install).
func loadWith(fs *flag.FlagSet, args []string, validate, mayGenerate bool) (*config.Config, error) {
	cfg, err := config.Load(fs, args)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil, err
		}
		return nil, &exitError{2, err}
	}
	if fs.NArg() > 0 {
		return nil, &exitError{2, fmt.Errorf("unexpected argument %q", fs.Arg(0))}
	}
	cfg.MayGenerateToken = mayGenerate
	if validate {
		if err := cfg.Check(); err != nil {
			return nil, &exitError{2, err}
		}
	}
	return cfg, nil
}

func newLogger(cfg *config.Config, w io.Writer) *slog.Logger {
	var lvl slog.Level
	_ = lvl.UnmarshalText([]byte(cfg.LogLevel))
	opts := &slog.HandlerOptions{Level: lvl}
	if os.Getenv("INVOCATION_ID") != "" { // under systemd: journald adds the time
		opts.ReplaceAttr = func(groups []string, a slog.Attr) slog.Attr {
			if len(groups) == 0 && a.Key == slog.TimeKey {
				return slog.Attr{}
			}
			return a
		}
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

func cmdJoin(args []string, stdout, stderr io.Writer) error {
	return runDaemon("join", append([]string{"--join"}, args...), stderr)
}

func cmdRun(args []string, stdout, stderr io.Writer) error {
	return runDaemon("run", args, stderr)
}

func runDaemon(name string, args []string, stderr io.Writer) error {
	fs := newFlags(name, stderr)
	cfg, err := loadWith(fs, args, true, true)
	if err != nil {
		return err
	}
	log := newLogger(cfg, stderr)
	supervisor.Version = Version
	// The daemon's command line stays readable by every local user for as
	// long as it runs.
	for _, f := range cfg.SecretFlags {
		log.Warn(f + " on the command line is visible to every local user (ps, /proc/PID/cmdline) while nodeha runs; set it in the environment or the settings file (mode 0600; nodeha install writes one) instead")
	}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	// SIGUSR2: exit leaving PostgreSQL running, for an upgrade of the binary.
	detach := make(chan struct{})
	usr2 := make(chan os.Signal, 1)
	signal.Notify(usr2, syscall.SIGUSR2)
	go func() {
		if _, ok := <-usr2; ok {
			close(detach)
		}
	}()
	defer signal.Stop(usr2)
	return supervisor.Run(ctx, cfg, log, detach, systemd.NewNotifier())
}

func cmdStatus(args []string, stdout, stderr io.Writer) error {
	fs := newFlags("status", stderr)
	asJSON := fs.Bool("json", false, "print the full health report as JSON")
	var wait waitFlag
	args = bareWait(args)
	fs.Var(&wait, "wait", "wait until this node is healthy (exit 0) or the time runs out (exit 1, with the reasons): --wait or --wait=DURATION (default 5m)")
	cluster := fs.Bool("cluster", false, "every host of the cluster as this host's nodeha sees it (exit 1 when the cluster is not whole)")
	cfg, err := load(fs, args, false)
	if err != nil {
		return err
	}
	if *cluster {
		if wait.d > 0 {
			return config.Problem("", "wait", "not with --cluster")
		}
		return statusCluster(cfg.Socket, *asJSON, stdout)
	}
	if wait.d > 0 {
		show := printStatus
		if *asJSON {
			show = printJSON
		}
		return waitHealthy(cfg.Socket, wait.d, stdout, stderr, show)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	rep, err := health.Get(ctx, cfg.Socket)
	if err != nil {
		return err
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		enc.Encode(rep)
	} else {
		printStatus(stdout, rep)
	}
	if !rep.Healthy {
		return &exitError{1, nil}
	}
	return nil
}

func printStatus(w io.Writer, r health.Report) {
	verdict := "healthy"
	if !r.Healthy {
		verdict = "UNHEALTHY: " + strings.Join(r.Reasons, "; ")
	}
	fmt.Fprintf(w, "node      %s (%s), scope %s: %s\n", r.Name, r.Address, r.Scope, verdict)
	if e := r.Etcd; e != nil {
		role := "follower"
		if e.Leader {
			role = "leader"
		}
		if e.Learner {
			role = "learner"
		}
		q := "quorum"
		if !e.HasQuorum {
			q = "NO QUORUM"
		}
		fmt.Fprintf(w, "etcd      member %s %s, %s, %d voting of %d members\n", e.Name, role, q, e.Voters, len(e.Members))
	}
	c := r.Container
	line := fmt.Sprintf("container %s %s, restarts %d", c.Name, c.State, c.Restarts)
	if c.LastExitCode != nil {
		line += fmt.Sprintf(", last exit %d at %s", *c.LastExitCode, c.LastExitAt.Format(time.RFC3339))
	}
	if c.NodehaRestarts > 0 {
		line += fmt.Sprintf(", %d by nodeha (last at %s: %s)", c.NodehaRestarts, c.LastRestartAt.Format(time.RFC3339), c.LastRestartReason)
	}
	fmt.Fprintln(w, line)
	if p := r.Patroni; p != nil {
		switch {
		case !p.Reachable && !p.NotAnsweringSince.IsZero():
			fmt.Fprintf(w, "patroni   not answering for %s\n", r.Time.Sub(p.NotAnsweringSince).Round(time.Second))
		case !p.Reachable:
			fmt.Fprintf(w, "patroni   not answering\n")
		default:
			lag := "lag unknown"
			if p.LagBytes >= 0 {
				lag = fmt.Sprintf("lag %d bytes", p.LagBytes)
			}
			fmt.Fprintf(w, "patroni   %s, %s, timeline %d, %s\n", p.Role, p.State, p.Timeline, lag)
		}
	}
	for _, e := range r.Endpoints {
		target := "no target (connections refused)"
		if e.Target.Addr != "" {
			target = "-> " + e.Target.Member + " (" + e.Target.Addr + ")"
		}
		fmt.Fprintf(w, "endpoint  %s on %s %s, %d open, %d routing changes\n", e.Name, e.Listen, target, e.Open, e.RoutingChanges)
	}
	if v := r.VIP; v != nil {
		held := "not held"
		if v.Held {
			held = "held here"
		}
		if v.Error != "" {
			held += ", error: " + v.Error
		}
		fmt.Fprintf(w, "vip       %s on %s %s\n", v.Address, v.Interface, held)
	}
	if b := r.Backup; b != nil {
		state := "archiving"
		switch {
		case b.ArchiverError != "":
			state = "archiver unknown (" + b.ArchiverError + ")"
		case b.Failing:
			state = "archive FAILING since the last success"
			if !b.LastArchivedAt.IsZero() {
				state += " at " + b.LastArchivedAt.Format(time.RFC3339)
			}
		case !b.LastArchivedAt.IsZero():
			state += ", last at " + b.LastArchivedAt.Format(time.RFC3339)
		}
		last := "no base backup yet"
		if b.LastBackup != "" {
			last = fmt.Sprintf("last base backup %s, %s old", b.LastBackup, (time.Duration(b.LastBackupAgeSeconds) * time.Second).Round(time.Second))
		}
		if b.Error != "" {
			last = "the archive cannot be listed: " + b.Error
		}
		fmt.Fprintf(w, "backup    %s: %s, %d archived, %d failed; %s\n", b.Target, state, b.Archived, b.Failed, last)
	}
}

func cmdRender(args []string, stdout, stderr io.Writer) error {
	fs := newFlags("render", stderr)
	asContainer := fs.Bool("container", false, "print the container spec as JSON instead (no secrets)")
	cfg, err := load(fs, args, true)
	if err != nil {
		return err
	}
	file, err := spilo.Render(cfg)
	if err != nil {
		return err
	}
	if !*asContainer {
		_, err = stdout.Write(file)
		return err
	}
	enc := json.NewEncoder(stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(spilo.NewSpec(cfg, file))
}

func cmdDSN(args []string, stdout, stderr io.Writer) error {
	fs := newFlags("dsn", stderr)
	readOnly := fs.Bool("read-only", false, "prefer standbys (target_session_attrs=prefer-standby)")
	user := fs.String("user", "", "user name to put in the string (no password is ever printed)")
	dbname := fs.String("dbname", "postgres", "database name")
	via := fs.String("endpoint", "", "rw or ro: the string through the hosts' client endpoints (NODEHA_RW_PORT / NODEHA_RO_PORT) instead of PostgreSQL's port, for clients without target_session_attrs")
	rootCert := fs.String("sslrootcert", "nodeha-ca.crt", "the cluster CA's certificate where the client reads it (`nodeha ca > nodeha-ca.crt` on a host writes it): the client verifies the server against it (sslmode=verify-full)")
	cfg, err := load(fs, args, false)
	if err != nil {
		return err
	}
	if len(cfg.Peers) == 0 {
		return &exitError{2, errors.New("NODEHA_PEERS (--peers): is required: the address of every host of the cluster")}
	}
	for _, p := range cfg.Peers {
		if _, err := netip.ParseAddr(p); err != nil && !hostName.MatchString(p) {
			return config.Problem("PEERS", "peers", "%q is not an IP address or a host name", p)
		}
	}
	if *rootCert == "" {
		return config.Problem("", "sslrootcert", "is empty: clients verify the server with the cluster CA (`nodeha ca` prints it)")
	}
	switch *via {
	case "":
	case "rw", "ro":
		port := cfg.RWPort
		if *via == "ro" {
			port = cfg.ROPort
		}
		if port == 0 {
			return config.Problem("", "endpoint", "the %s endpoint is off (its port setting is 0)", *via)
		}
		if *readOnly {
			return config.Problem("", "endpoint", "not with --read-only: give --endpoint=ro")
		}
		fmt.Fprintln(stdout, EndpointDSN(cfg.Peers, port, *user, *dbname, *rootCert))
		return nil
	default:
		return config.Problem("", "endpoint", "%q: want rw or ro", *via)
	}
	fmt.Fprintln(stdout, DSN(cfg.Peers, cfg.PostgresPort, *user, *dbname, *readOnly, *rootCert))
	return nil
}

// EndpointDSN is the libpq URL through the hosts' client endpoints at port:
// any host forwards to the right server, so no target_session_attrs is
// needed and a client that takes one host only works with the first.
func EndpointDSN(hosts []string, port int, user, dbname, rootCert string) string {
	return pgURL(hosts, port, user, dbname, rootCert, nil)
}

// hostName is a DNS host name (RFC 1123 labels).
var hostName = regexp.MustCompile(`^[a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?(\.[a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?)*$`)

// DSN is the libpq multi-host URL for hosts. nodeha's pg_hba takes
// clients only over TLS, and every host's PostgreSQL has a certificate of
// the cluster CA for its address: the client verifies it
// (sslmode=verify-full) against rootCert, the CA's certificate.
func DSN(hosts []string, port int, user, dbname string, readOnly bool, rootCert string) string {
	attrs := "read-write"
	if readOnly {
		attrs = "prefer-standby"
	}
	return pgURL(hosts, port, user, dbname, rootCert, url.Values{"target_session_attrs": {attrs}})
}

// pgURL is the libpq URL for hosts at port, verifying the server against
// rootCert, with extra parameters.
func pgURL(hosts []string, port int, user, dbname, rootCert string, extra url.Values) string {
	hp := make([]string, len(hosts))
	for i, h := range hosts {
		hp[i] = config.HostPort(h, port)
	}
	q := url.Values{}
	for k, v := range extra {
		q[k] = v
	}
	q.Set("sslmode", "verify-full")
	q.Set("sslrootcert", rootCert)
	q.Set("connect_timeout", "2")
	u := "postgresql://"
	if user != "" {
		u += url.User(user).String() + "@"
	}
	return u + strings.Join(hp, ",") + "/" + url.PathEscape(dbname) + "?" + q.Encode()
}

func cmdVersion(args []string, stdout, stderr io.Writer) error {
	fmt.Fprintf(stdout, "nodeha %s\n", Version)
	return nil
}
