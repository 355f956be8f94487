package testcluster

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/pbkdf2"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"os/exec"
	"regexp"
	"strings"
)

// PsqlScript runs script as postgres over the local socket inside the
// Spilo container and returns the unaligned output. The script goes in on
// stdin, not in argv, so what it holds is in no process list; it may use
// psql's meta-commands (\gexec).
func (h *Host) PsqlScript(ctx context.Context, script string) (string, error) {
	var out, errb bytes.Buffer
	cmd := exec.CommandContext(ctx, "docker", "exec", "-i", "-u", "postgres", h.Spilo,
		"psql", "-h", "/var/run/postgresql", "-U", "postgres", "-d", "postgres", "-XAtq", "-v", "ON_ERROR_STOP=1", "-f", "-")
	cmd.Stdin = strings.NewReader(script)
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		return out.String(), fmt.Errorf("psql on %s: %v: %s", h.Spilo, err, strings.TrimSpace(errb.String()))
	}
	return strings.TrimSpace(out.String()), nil
}

var roleName = regexp.MustCompile(`^[a-z_][a-z0-9_]{0,62}$`)

// EnsureRole makes role a LOGIN role whose password is password and gives
// it a database of its own name that it owns, creating what is missing:
// run again, it only sets the password. h must be the primary. The server
// is sent the password's SCRAM verifier, never the password, so neither
// its logs nor pg_stat_activity can show it.
func (h *Host) EnsureRole(ctx context.Context, role, password string) error {
	script, err := roleScript(role, password)
	if err != nil {
		return err
	}
	if _, err := h.PsqlScript(ctx, script); err != nil {
		return fmt.Errorf("testcluster: ensure role %s: %w", role, err)
	}
	return nil
}

// roleScript is EnsureRole's psql script.
func roleScript(role, password string) (string, error) {
	if !roleName.MatchString(role) {
		return "", fmt.Errorf("testcluster: role %q: want a lower-case SQL identifier", role)
	}
	// CREATE DATABASE cannot run in a DO block (a transaction): \gexec
	// runs it only when the query returns it.
	return fmt.Sprintf(`DO $$ BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '%[1]s') THEN CREATE ROLE %[1]s; END IF;
END $$;
ALTER ROLE %[1]s WITH LOGIN PASSWORD '%[2]s';
SELECT 'CREATE DATABASE %[1]s OWNER %[1]s' WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = '%[1]s') \gexec
ALTER DATABASE %[1]s OWNER TO %[1]s;
`, role, ScramSHA256(password)), nil
}

// ScramSHA256 is the verifier PostgreSQL stores for password under
// password_encryption = scram-sha-256 (RFC 5802, 4096 iterations, a random
// 16-byte salt). Given as a role's PASSWORD, the server stores it as is.
// password must be ASCII: SASLprep, which PostgreSQL applies, leaves it
// unchanged then.
func ScramSHA256(password string) string {
	salt := make([]byte, 16)
	rand.Read(salt) // never fails (crypto/rand)
	return scramSHA256(password, salt, 4096)
}

func scramSHA256(password string, salt []byte, iter int) string {
	salted, err := pbkdf2.Key(sha256.New, password, salt, iter, sha256.Size)
	if err != nil {
		panic(err) // only for a key length out of range
	}
	mac := func(msg string) []byte {
		m := hmac.New(sha256.New, salted)
		m.Write([]byte(msg))
		return m.Sum(nil)
	}
	stored := sha256.Sum256(mac("Client Key"))
	b64 := base64.StdEncoding.EncodeToString
	return fmt.Sprintf("SCRAM-SHA-256$%d:%s$%s:%s", iter, b64(salt), b64(stored[:]), b64(mac("Server Key")))
}
