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
