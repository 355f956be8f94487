package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/nodeha/nodeha/cli"
	"github.com/nodeha/nodeha/internal/atomicfile"
	"github.com/nodeha/nodeha/internal/testcluster"
)

// appRole is the demo's application role and the name of its database.
// The seed's pg_hba rejects postgres from the network, so a newcomer's
// first connection needs a role of its own.
const appRole = "app"

// pgPort is the PostgreSQL port of the seed's postgres.yml.
const pgPort = 5432

// app is the application role's connection, proven to reach the primary.
type app struct {
	dsn      string // no password in it
	passfile string // libpq password file holding it, mode 0600
	server   string // the address that answered read-write
	// endpoint is the string through the hosts' read-write endpoints.
	endpoint string
}

// command is what a newcomer pastes: psql with the password file.
func (a app) command() string {
	return "PGPASSFILE=" + shellQuote(a.passfile) + " psql " + shellQuote(a.dsn)
}

// ensureApp creates (or, on a demo started before, keeps) the role and
// database app with the password stored under the demo directory, and
// proves the connection string with it before anyone is shown it.
func ensureApp(ctx context.Context, c *testcluster.Cluster, leader *testcluster.Host) (app, error) {
	var hosts []string
	for _, h := range c.Hosts {
		hosts = append(hosts, h.IP)
	}
	ca, err := c.CAFile()
	if err != nil {
		return app{}, fmt.Errorf("app role: %w", err)
	}
	a := app{dsn: cli.DSN(hosts, pgPort, appRole, appRole, false, ca), passfile: filepath.Join(c.Opts.BaseDir, appRole+".pgpass")}
	password := ""
	if b, err := os.ReadFile(a.passfile); err == nil {
		password = pgpassPassword(b, appRole)
	}
	if password == "" {
		b := make([]byte, 24)
		rand.Read(b) // never fails (crypto/rand)
		password = base64.RawURLEncoding.EncodeToString(b)
	}
	// The file first: it is what the password is, and a failure below
	// leaves it for the next run to set again.
	if err := writePrivate(a.passfile, pgpass(hosts, appRole, password)); err != nil {
		return a, fmt.Errorf("app role: %w", err)
	}
	if err := leader.EnsureRole(ctx, appRole, password); err != nil {
		return a, fmt.Errorf("app role: %w", err)
	}
	if a.server, err = prove(ctx, a.dsn, a.passfile); err != nil {
		return a, fmt.Errorf("app role: the connection string does not work: %s: %w", a.dsn, err)
	}
	if err := provePsql(ctx, a); err != nil {
		return a, fmt.Errorf("app role: the printed command does not work: %w", err)
	}
	a.endpoint = cli.EndpointDSN(hosts, 5433, appRole, appRole, ca)
	if _, err := prove(ctx, a.endpoint, a.passfile); err != nil {
		return a, fmt.Errorf("app role: the endpoint's connection string does not work: %s: %w", a.endpoint, err)
	}
	return a, nil
}

// prove connects as libpq would with dsn and PGPASSFILE=passfile, and
// checks that the session is writable. It returns the server's address.
func prove(ctx context.Context, dsn, passfile string) (string, error) {
	cfg, err := pgx.ParseConfig(dsn + "&passfile=" + url.QueryEscape(passfile))
	if err != nil {
		return "", err
	}
	if cfg.Password == "" {
		return "", fmt.Errorf("%s has no password for %s@%s", passfile, cfg.User, cfg.Host)
	}
	// The role was just made on the primary; a few tries cover only a
	// connection lost in flight: a wrong password fails every time.
	deadline := time.Now().Add(30 * time.Second)
	for {
		server, err := proveOnce(ctx, cfg)
		if err == nil || time.Now().After(deadline) {
			return server, err
		}
		select {
		case <-ctx.Done():
			return "", ctx.Err()
		case <-time.After(time.Second):
		}
	}
}

func proveOnce(ctx context.Context, cfg *pgx.ConnConfig) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return "", err
	}
	defer conn.Close(context.Background())
	var one int
	if err := conn.QueryRow(ctx, "SELECT 1").Scan(&one); err != nil {
		return "", fmt.Errorf("SELECT 1: %w", err)
	}
	var recovery bool
	if err := conn.QueryRow(ctx, "SELECT pg_is_in_recovery()").Scan(&recovery); err != nil {
		return "", fmt.Errorf("SELECT pg_is_in_recovery(): %w", err)
	}
	server := conn.PgConn().Conn().RemoteAddr().String()
	if recovery {
		return "", fmt.Errorf("%s is in recovery: target_session_attrs=read-write led to a replica", server)
	}
	return server, nil
}

// provePsql runs the printed command itself when this machine has psql
// (libpq, whose multi-host and pgpass rules pgx only imitates).
func provePsql(ctx context.Context, a app) error {
	path, err := exec.LookPath("psql")
	if err != nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	var out, errb bytes.Buffer
	cmd := exec.CommandContext(ctx, path, a.dsn, "-XAtq", "-c", "SELECT pg_is_in_recovery()")
	cmd.Env = append(os.Environ(), "PGPASSFILE="+a.passfile)
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("%s: %v: %s", a.command(), err, strings.TrimSpace(errb.String()))
	}
	if got := strings.TrimSpace(out.String()); got != "f" {
		return fmt.Errorf("%s: pg_is_in_recovery() = %q, want f", a.command(), got)
	}
	return nil
}

// pgpass is a libpq password file giving user password on every host
// (libpq looks a line up per host it tries), for any database.
func pgpass(hosts []string, user, password string) []byte {
	var b strings.Builder
	for _, h := range hosts {
		// Any port: PostgreSQL's and the client endpoints' (5433, 5434).
		fmt.Fprintf(&b, "%s:*:*:%s:%s\n", pgpassEscape(h), pgpassEscape(user), pgpassEscape(password))
	}
	return []byte(b.String())
}

var pgpassEscape = strings.NewReplacer(`\`, `\\`, `:`, `\:`).Replace

// pgpassPassword is user's password in the password file b, "" if none.
func pgpassPassword(b []byte, user string) string {
	for _, line := range strings.Split(string(b), "\n") {
		if f := pgpassFields(line); len(f) == 5 && f[3] == user && f[4] != "" {
			return f[4]
		}
	}
	return ""
}

// pgpassFields splits a password file line on its unescaped colons.
func pgpassFields(line string) []string {
	var fields []string
	var f strings.Builder
	for i := 0; i < len(line); i++ {
		switch {
		case line[i] == '\\' && i+1 < len(line):
			i++
			f.WriteByte(line[i])
		case line[i] == ':':
			fields = append(fields, f.String())
			f.Reset()
		default:
			f.WriteByte(line[i])
		}
	}
	return append(fields, f.String())
}

// writePrivate replaces path with data, mode 0600 from the start (a
// temporary file renamed over it), so the secret is never readable by
// others and never half-written.
func writePrivate(path string, data []byte) error {
	return atomicfile.WriteFile(path, data, 0o600)
}

// shellQuote quotes s for a POSIX shell when it needs it.
func shellQuote(s string) string {
	if s != "" && strings.Trim(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_./=:@,+") == "" {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}
