package systemd

import (
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nodeha/nodeha/config"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

func golden(t *testing.T, name string, got []byte) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test ./systemd -update)", err)
	}
	if string(got) != string(want) {
		t.Errorf("output differs from %s (run with -update if intended):\n--- got\n%s", path, got)
	}
}

func TestUnitGolden(t *testing.T) {
	u := Unit{Binary: DefaultBinary, EnvFile: DefaultEnvFile, StopTimeout: 120 * time.Second}
	golden(t, "nodeha.service", u.Render())
}

func TestUnitStopsAfterTheContainer(t *testing.T) {
	u := Unit{Binary: "/opt/nodeha", EnvFile: "/srv/env", StopTimeout: 300*time.Second + 500*time.Millisecond}
	s := string(u.Render())
	for _, want := range []string{"TimeoutStopSec=361s\n", "ExecStart=/opt/nodeha run\n", "EnvironmentFile=/srv/env\n", "Type=notify\n", "WatchdogSec=30s\n"} {
		if !strings.Contains(s, want) {
			t.Errorf("unit lacks %q:\n%s", want, s)
		}
	}
}

// testConfig is a config as Load would return it with defaults, then
// changed the way an operator would.
func testConfig(t *testing.T) *config.Config {
	t.Helper()
	for _, s := range config.Settings() {
		for _, k := range []string{s.Env, strings.TrimPrefix(s.Env, "NODEHA_")} {
			if _, ok := os.LookupEnv(k); ok {
				t.Setenv(k, "")
				os.Unsetenv(k)
			}
		}
	}
	cfg, err := config.Load(flag.NewFlagSet("t", flag.ContinueOnError), []string{
		"--name=pg1", "--peers=10.0.0.1, 10.0.0.2,10.0.0.3", "--scope=orders",
		"--superuser-password=su pw'$x\"`y\\z", "--replication-password=repl$1",
		"--restapi-password=api", "--token=systemd-tests-cluster-token-0123", "--stop-timeout=2m", "--etcd-heartbeat=250ms",
		"--log-level=debug", "--test-hooks",
	})
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

func TestEnvGolden(t *testing.T) {
	cfg := testConfig(t)
	cfg.RewindPassword = cfg.ReplicationPassword // as Validate leaves it
	got, err := RenderEnv(cfg, false)
	if err != nil {
		t.Fatal(err)
	}
	golden(t, "nodeha.env", got)
	if strings.Contains(string(got), "STOP_TIMEOUT") || strings.Contains(string(got), "REWIND") || strings.Contains(string(got), "ADVERTISE") {
		t.Errorf("defaults written:\n%s", got)
	}

	red, err := RenderEnv(cfg, true)
	if err != nil {
		t.Fatal(err)
	}
	golden(t, "nodeha.env.redacted", red)
	for _, secret := range []string{"su pw", "repl$1", "=api"} {
		if strings.Contains(string(red), secret) {
			t.Errorf("redacted output holds %q:\n%s", secret, red)
		}
	}
}

// The file must read back to exactly the settings: ParseEnv (install),
// and the same syntax is what systemd's EnvironmentFile= reads (the e2e
// test proves that with a real systemd).
func TestEnvRoundTrip(t *testing.T) {
	cfg := testConfig(t)
	cfg.Advertise = "{{ GetPrivateInterfaces | attr \"address\" }}"
	b, err := RenderEnv(cfg, false)
	if err != nil {
		t.Fatal(err)
	}
	vars, err := ParseEnv(b)
	if err != nil {
		t.Fatalf("%v:\n%s", err, b)
	}
	want := map[string]string{
		"NODEHA_SUPERUSER_PASSWORD":   cfg.SuperuserPassword,
		"NODEHA_REPLICATION_PASSWORD": "repl$1",
		"NODEHA_ADVERTISE":            cfg.Advertise,
		"NODEHA_PEERS":                "10.0.0.1,10.0.0.2,10.0.0.3",
		"NODEHA_STOP_TIMEOUT":         "",
		"NODEHA_TEST_HOOKS":           "true",
	}
	for k, v := range want {
		if vars[k] != v {
			t.Errorf("%s = %q, want %q", k, vars[k], v)
		}
	}
}

func TestEnvRejectsLineBreak(t *testing.T) {
	cfg := testConfig(t)
	cfg.RestAPIPassword = "a\nNODEHA_IMAGE=evil"
	_, err := RenderEnv(cfg, false)
	if err == nil || !strings.Contains(err.Error(), "NODEHA_RESTAPI_PASSWORD (--restapi-password)") || strings.Contains(err.Error(), "evil") {
		t.Fatalf("err = %v, want one naming the setting and not echoing it", err)
	}
}

func TestParseEnvErrors(t *testing.T) {
	for _, in := range []string{"PATH=/bin\n", "NODEHA_X='open\n", "NODEHA_X=\"a\"b\n", "NODEHA_X=$HOME\n", "garbage\n"} {
		if _, err := ParseEnv([]byte(in)); err == nil {
			t.Errorf("ParseEnv(%q): no error", in)
		}
	}
	got, err := ParseEnv([]byte("# c\n\nexport NODEHA_A = 'x y'\nNODEHA_B=\"q\\\"\\$\"\nNODEHA_C=\n"))
	if err != nil || got["NODEHA_A"] != "x y" || got["NODEHA_B"] != `q"$` || got["NODEHA_C"] != "" {
		t.Fatalf("got %q, %v", got, err)
	}
}
