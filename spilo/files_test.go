package spilo_test

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nodeha/nodeha/config"
	"github.com/nodeha/nodeha/spilo"
)

// hostConfig places every host directory under a fresh temporary root and
// owns them by the current user, so PrepareHost can chown without root.
func hostConfig(t *testing.T) *config.Config {
	t.Helper()
	root := t.TempDir()
	return testConfig(t,
		"--data-dir="+filepath.Join(root, "nodeha"),
		"--postgres-dir="+filepath.Join(root, "pg"),
		"--log-dir="+filepath.Join(root, "log"),
		"--postgres-uid="+strconv.Itoa(os.Getuid()),
		"--postgres-gid="+strconv.Itoa(os.Getgid()),
	)
}

func TestPrepareHost(t *testing.T) {
	cfg := hostConfig(t)
	file, err := spilo.Render(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := spilo.PrepareHost(cfg, file); err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{cfg.SpiloDir(), cfg.PostgresDir, filepath.Join(cfg.PostgresDir, "wal_archive"), cfg.LogDir} {
		st, err := os.Stat(d)
		if err != nil || !st.IsDir() {
			t.Errorf("%s: %v, want a directory", d, err)
		}
	}
	// WAL and data directories are PostgreSQL's: nobody else may read them.
	for _, d := range []string{cfg.PostgresDir, filepath.Join(cfg.PostgresDir, "wal_archive"), cfg.LogDir} {
		if st, err := os.Stat(d); err == nil && st.Mode().Perm()&0o007 != 0 {
			t.Errorf("%s has mode %v, open to others", d, st.Mode().Perm())
		}
	}
	dst := filepath.Join(cfg.SpiloDir(), "postgres.yml")
	checkConfigFile(t, dst, file)
}

func checkConfigFile(t *testing.T, path string, want []byte) {
	t.Helper()
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Errorf("%s has mode %v, want 0600: it holds the passwords", path, st.Mode().Perm())
	}
	if sys, ok := st.Sys().(*syscall.Stat_t); ok && (int(sys.Uid) != os.Getuid() || int(sys.Gid) != os.Getgid()) {
		t.Errorf("%s owned by %d:%d, want %d:%d", path, sys.Uid, sys.Gid, os.Getuid(), os.Getgid())
	}
	got, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != string(want) {
		t.Errorf("%s holds\n%s\nwant\n%s", path, got, want)
	}
}

func TestPrepareHostLeavesExistingDataAlone(t *testing.T) {
	cfg := hostConfig(t)
	pgdata := filepath.Join(cfg.PostgresDir, "pgdata")
	if err := os.MkdirAll(pgdata, 0o700); err != nil {
		t.Fatal(err)
	}
	version := filepath.Join(pgdata, "PG_VERSION")
	if err := os.WriteFile(version, []byte("15\n"), 0o640); err != nil {
		t.Fatal(err)
	}
	past := time.Now().Add(-time.Hour).Truncate(time.Second)
	if err := os.Chtimes(version, past, past); err != nil {
		t.Fatal(err)
	}
	file, err := spilo.Render(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := spilo.PrepareHost(cfg, file); err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(version)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(version)
	if string(b) != "15\n" || st.Mode().Perm() != 0o640 || !st.ModTime().Equal(past) {
		t.Errorf("PG_VERSION changed: %q, mode %v, mtime %v", b, st.Mode().Perm(), st.ModTime())
	}
	if st, err := os.Stat(pgdata); err != nil || st.Mode().Perm() != 0o700 {
		t.Errorf("pgdata: %v, mode %v; want it untouched (0700)", err, st.Mode().Perm())
	}
}

func TestWriteConfigReplacesAtomically(t *testing.T) {
	dir := t.TempDir()
	uid, gid := os.Getuid(), os.Getgid()
	dst := filepath.Join(dir, "postgres.yml")

	if err := spilo.WriteConfig(dir, []byte("scope: one\n"), uid, gid); err != nil {
		t.Fatal(err)
	}
	checkConfigFile(t, dst, []byte("scope: one\n"))
	before, err := os.Stat(dst)
	if err != nil {
		t.Fatal(err)
	}
	// A reader holding the old file keeps reading the old content.
	old, err := os.Open(dst)
	if err != nil {
		t.Fatal(err)
	}
	defer old.Close()

	if err := spilo.WriteConfig(dir, []byte("scope: two\n"), uid, gid); err != nil {
		t.Fatal(err)
	}
	checkConfigFile(t, dst, []byte("scope: two\n"))
	after, err := os.Stat(dst)
	if err != nil {
		t.Fatal(err)
	}
	if os.SameFile(before, after) {
		t.Error("postgres.yml was rewritten in place, not replaced by a rename")
	}
	buf := make([]byte, 64)
	n, _ := old.Read(buf)
	if string(buf[:n]) != "scope: one\n" {
		t.Errorf("the old file now reads %q: it was modified in place", buf[:n])
	}

	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		if e.Name() != "postgres.yml" {
			t.Errorf("leftover %s in %s", e.Name(), dir)
		}
	}
}

func TestWriteConfigUnchangedContentKeepsFile(t *testing.T) {
	dir := t.TempDir()
	uid, gid := os.Getuid(), os.Getgid()
	if err := spilo.WriteConfig(dir, []byte("scope: one\n"), uid, gid); err != nil {
		t.Fatal(err)
	}
	before, _ := os.Stat(filepath.Join(dir, "postgres.yml"))
	if err := spilo.WriteConfig(dir, []byte("scope: one\n"), uid, gid); err != nil {
		t.Fatal(err)
	}
	after, _ := os.Stat(filepath.Join(dir, "postgres.yml"))
	if !os.SameFile(before, after) {
		t.Error("an unchanged postgres.yml was replaced")
	}
}

func TestWriteConfigMissingDir(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "absent")
	err := spilo.WriteConfig(dir, []byte("x: 1\n"), os.Getuid(), os.Getgid())
	if err == nil || !strings.Contains(err.Error(), "postgres.yml") {
		t.Fatalf("WriteConfig into a missing dir = %v, want an error naming postgres.yml", err)
	}
}

// The directories Spilo's real launch.sh creates as root and leaves to
// root (PGDATA, PGLOG, the socket directory under the mounted /run) are
// postgres's, with the modes PostgreSQL and configure_spilo.py want, on a
// new host and on one whose earlier start left them to root.
func TestPrepareHostOwnsSpiloDirectories(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("needs root to chown to the image's postgres user (CI runs as root)")
	}
	for _, existing := range []bool{false, true} {
		root := t.TempDir()
		cfg := testConfig(t,
			"--data-dir="+filepath.Join(root, "nodeha"),
			"--postgres-dir="+filepath.Join(root, "pg"),
			"--log-dir="+filepath.Join(root, "log"),
		)
		want := map[string]os.FileMode{
			filepath.Join(cfg.SpiloDir(), "postgresql"): 0o775 | os.ModeSetgid,
			cfg.PostgresDir:                          0o750,
			filepath.Join(cfg.PostgresDir, "pgdata"): 0o700,
			filepath.Join(cfg.PostgresDir, "pg_log"): 0o750,
			cfg.LogDir:                               0o750,
		}
		if existing {
			// As launch.sh leaves them: root's, 0755.
			for d := range want {
				if err := os.MkdirAll(d, 0o755); err != nil {
					t.Fatal(err)
				}
				os.Chown(d, 0, 0)
				os.Chmod(d, 0o755)
			}
		}
		file, err := spilo.Render(cfg)
		if err != nil {
			t.Fatal(err)
		}
		if err := spilo.PrepareHost(cfg, file); err != nil {
			t.Fatal(err)
		}
		for d, mode := range want {
			st, err := os.Stat(d)
			if err != nil {
				t.Fatal(err)
			}
			sys := st.Sys().(*syscall.Stat_t)
			if int(sys.Uid) != cfg.PostgresUID || int(sys.Gid) != cfg.PostgresGID {
				t.Errorf("existing=%v: %s owned by %d:%d, want %d:%d", existing, d, sys.Uid, sys.Gid, cfg.PostgresUID, cfg.PostgresGID)
			}
			if got := st.Mode() & (os.ModePerm | os.ModeSetgid); got != mode {
				t.Errorf("existing=%v: %s has mode %v, want %v", existing, d, got, mode)
			}
		}
		if st, err := os.Stat(cfg.SpiloDir()); err != nil || st.Sys().(*syscall.Stat_t).Uid != 0 || st.Mode().Perm() != 0o755 {
			t.Errorf("existing=%v: %s: %v, want root's, 0755 (it is the container's /run)", existing, cfg.SpiloDir(), err)
		}
	}
}

// bin_dir follows the data directory's major (as Spilo's own config would),
// else NODEHA_PG_VERSION: a PG 15 data directory on a spilo-17 image keeps
// the 15 binaries.
func TestRenderBinDir(t *testing.T) {
	cfg := hostConfig(t)
	cfg.PGVersion = "17"
	binDir := func() string {
		file, err := spilo.Render(cfg)
		if err != nil {
			t.Fatal(err)
		}
		for _, l := range strings.Split(string(file), "\n") {
			if s := strings.TrimSpace(l); strings.HasPrefix(s, "bin_dir:") {
				return strings.TrimSpace(strings.TrimPrefix(s, "bin_dir:"))
			}
		}
		return ""
	}
	if got := binDir(); got != "/usr/lib/postgresql/17/bin" {
		t.Errorf("new data directory: bin_dir %q, want /usr/lib/postgresql/17/bin", got)
	}
	pgdata := filepath.Join(cfg.PostgresDir, "pgdata")
	if err := os.MkdirAll(pgdata, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(pgdata, "PG_VERSION"), []byte("15\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if got := binDir(); got != "/usr/lib/postgresql/15/bin" {
		t.Errorf("PG 15 data directory: bin_dir %q, want /usr/lib/postgresql/15/bin", got)
	}
}

// A killed PostgreSQL's socket lock stays in the host's socket directory;
// with its PID taken by another process in the next container, PostgreSQL
// refused to start for good (seen on Spilo 4.0-p3 after a fenced
// partition).
func TestRemoveStaleSockets(t *testing.T) {
	cfg := hostConfig(t)
	if err := spilo.EnsureDirs(cfg); err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(cfg.SpiloDir(), "postgresql")
	for _, f := range []string{".s.PGSQL.5432", ".s.PGSQL.5432.lock", "pgpass"} {
		os.WriteFile(filepath.Join(dir, f), []byte("110\n"), 0o600)
	}
	if err := spilo.RemoveStaleSockets(cfg); err != nil {
		t.Fatal(err)
	}
	for f, want := range map[string]bool{".s.PGSQL.5432": false, ".s.PGSQL.5432.lock": false, "pgpass": true} {
		if _, err := os.Stat(filepath.Join(dir, f)); (err == nil) != want {
			t.Errorf("%s: exists %v, want %v", f, err == nil, want)
		}
	}
}
