package main

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/nodeha/nodeha/cli"
	"github.com/nodeha/nodeha/trust"
)

func TestOptions(t *testing.T) {
	for _, tc := range []struct {
		o                     options
		image, overlay, pgver string
	}{
		{options{dir: "/d", spilo: "3.0-p1"}, "nodeha-spilo-test:3.0-p1", "testimage/overlay-3.0-p1.yml", "15"},
		{options{dir: "/d", spilo: "4.0-p3"}, "nodeha-spilo-test:4.0-p3", "testimage/overlay-4.0-p3.yml", "17"},
		{options{dir: "/d", spilo: "3.0-p1", image: "ghcr.io/zalando/spilo-15:3.0-p1", overlay: "none"}, "ghcr.io/zalando/spilo-15:3.0-p1", "", "15"},
		{options{dir: "/d", spilo: "4.0-p3", overlay: "/x.yml"}, "nodeha-spilo-test:4.0-p3", "/x.yml", "17"},
	} {
		if err := tc.o.validate(); err != nil {
			t.Errorf("%+v: %v", tc.o, err)
		}
		co := tc.o.clusterOptions()
		if co.SpiloImage != tc.image || co.Overlay != tc.overlay || !slices.Equal(co.Env, []string{"NODEHA_PG_VERSION=" + tc.pgver}) {
			t.Errorf("%+v: image %q overlay %q env %v, want %q %q NODEHA_PG_VERSION=%s", tc.o, co.SpiloImage, co.Overlay, co.Env, tc.image, tc.overlay, tc.pgver)
		}
	}
	err := options{dir: "/d", spilo: "15"}.validate()
	if err == nil || err.Error() != `-spilo: spilo tag "15": want 3.0-p1 or 4.0-p3` {
		t.Errorf("unknown generation: %v", err)
	}
}

// TestPgpass checks the password file the way clients read it: pgx (the
// same lookup as libpq's) finds the password whichever host comes first.
func TestPgpass(t *testing.T) {
	t.Setenv("PGPASSWORD", "") // pgx, as libpq, would take it over the file
	hosts := []string{"172.28.7.11", "172.28.7.12", "172.28.7.13"}
	const pw = `a:b\c-_`
	file := filepath.Join(t.TempDir(), "app.pgpass")
	if err := writePrivate(file, pgpass(hosts, appRole, pw)); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(file); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("stat: %v, %v; want mode 0600", fi, err)
	}
	b, _ := os.ReadFile(file)
	if got := pgpassPassword(b, appRole); got != pw {
		t.Errorf("read back %q, want %q", got, pw)
	}
	if got := pgpassPassword(b, "other"); got != "" {
		t.Errorf("password of another user: %q", got)
	}
	ca := filepath.Join(t.TempDir(), "ca.crt")
	id, _ := trust.FromToken(trust.GenerateToken())
	os.WriteFile(ca, id.CAPEM(), 0o644)
	for i := range hosts {
		order := append(slices.Clone(hosts[i:]), hosts[:i]...)
		dsn := cli.DSN(order, pgPort, appRole, appRole, false, ca)
		if strings.Contains(dsn, pw) {
			t.Fatalf("the password is in %s", dsn)
		}
		cfg, err := pgx.ParseConfig(dsn + "&passfile=" + file)
		if err != nil {
			t.Fatal(err)
		}
		if cfg.Password != pw {
			t.Errorf("host %s first: password %q, want %q", order[0], cfg.Password, pw)
		}
	}
}

func TestShellQuote(t *testing.T) {
	for in, want := range map[string]string{
		"/tmp/nodeha-demo/app.pgpass":         "/tmp/nodeha-demo/app.pgpass",
		"postgresql://app@h:5432/app?a=b&c=d": "'postgresql://app@h:5432/app?a=b&c=d'",
		"it's":                                `'it'\''s'`,
		"":                                    "''",
	} {
		if got := shellQuote(in); got != want {
			t.Errorf("shellQuote(%q) = %s, want %s", in, got, want)
		}
	}
}
