package spilo_test

import (
	"bytes"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"

	"github.com/nodeha/nodeha/config"
	"github.com/nodeha/nodeha/spilo"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

func parseYAML(t *testing.T, b []byte) map[string]any {
	t.Helper()
	var m map[string]any
	if err := yaml.Unmarshal(b, &m); err != nil {
		t.Fatalf("parse YAML: %v\n%s", err, b)
	}
	return m
}

// diffMaps lists the paths at which got and want differ.
func diffMaps(prefix string, got, want any) []string {
	gm, gok := got.(map[string]any)
	wm, wok := want.(map[string]any)
	if !gok || !wok {
		if !reflect.DeepEqual(got, want) {
			return []string{prefix + ": got " + yamlString(got) + ", want " + yamlString(want)}
		}
		return nil
	}
	var out []string
	for k, wv := range wm {
		gv, ok := gm[k]
		if !ok {
			out = append(out, prefix+"."+k+": missing")
			continue
		}
		out = append(out, diffMaps(prefix+"."+k, gv, wv)...)
	}
	for k := range gm {
		if _, ok := wm[k]; !ok {
			out = append(out, prefix+"."+k+": not in the seed")
		}
	}
	return out
}

func yamlString(v any) string {
	b, _ := yaml.Marshal(v)
	return strings.TrimSpace(string(b))
}

// The rendered file must be the seed recipe's postgres.yml, key for key and
// value for value, once the seed's placeholders are filled in and the
// seed's Patroni timings given (nodeha's defaults are faster: README,
// Failover).
func TestRenderIsFaithfulToSeed(t *testing.T) {
	const ip, name = "10.26.235.157", "pg-node-1"
	seed, err := os.ReadFile("testdata/seed.yml")
	if err != nil {
		t.Fatal(err)
	}
	seed = bytes.ReplaceAll(seed, []byte("<IPAddress>"), []byte(ip))
	seed = bytes.ReplaceAll(seed, []byte("<node_name>"), []byte(name))
	want := parseYAML(t, seed)

	cfg := testConfig(t,
		"--name="+name,
		"--advertise="+ip,
		"--peers=10.26.235.157,10.26.235.206,10.26.235.75",
		"--scope=postgres-patroni-cb5o3izc",
		"--superuser-password=<password>",
		"--replication-password=<password>",
		"--rewind-password=<password>",
		"--restapi-password=<password>",
		"--ttl=45", "--loop-wait=15", "--retry-timeout=15", "--synchronous=false",
	)
	file, err := spilo.Render(cfg)
	if err != nil {
		t.Fatal(err)
	}
	got := parseYAML(t, file)
	// Patroni's REST API is HTTPS with the cluster CA, clients verified.
	rest := got["restapi"].(map[string]any)
	for k, v := range map[string]string{"certfile": "/run/certs/restapi.crt", "keyfile": "/run/certs/restapi.key", "cafile": "/run/etcd-tls/ca.crt", "verify_client": "required"} {
		if rest[k] != v {
			t.Errorf("restapi.%s = %v, want %s", k, rest[k], v)
		}
		delete(rest, k)
	}
	// ... and Patroni's client side of it (ctl: Patroni 4 reads only that).
	if !reflect.DeepEqual(got["ctl"], map[string]any{"certfile": "/run/certs/restapi.crt", "keyfile": "/run/certs/restapi.key", "cacert": "/run/etcd-tls/ca.crt"}) {
		t.Errorf("ctl = %v", got["ctl"])
	}
	delete(got, "ctl")
	// nodeha's one addition: Patroni talks to etcd over mutual TLS.
	etcd3 := got["etcd3"].(map[string]any)
	for k, v := range map[string]string{"protocol": "https", "cacert": "/run/etcd-tls/ca.crt", "cert": "/run/etcd-tls/client.crt", "key": "/run/etcd-tls/client.key"} {
		if etcd3[k] != v {
			t.Errorf("etcd3.%s = %v, want %s", k, etcd3[k], v)
		}
		delete(etcd3, k)
	}
	// The replica method and bin_dir (see Render and README, "Real Spilo"):
	// Patroni's own pg_basebackup with a fast checkpoint and WAL streamed
	// alongside, instead of basebackup.sh and its pg_receivewal that never
	// stops; the binaries of the data directory's major.
	pg := got["postgresql"].(map[string]any)
	wantPG := want["postgresql"].(map[string]any)
	if !reflect.DeepEqual(pg["create_replica_method"], []any{"basebackup"}) {
		t.Errorf("create_replica_method = %v, want [basebackup]", pg["create_replica_method"])
	}
	if !reflect.DeepEqual(pg["basebackup"], []any{map[string]any{"checkpoint": "fast"}}) {
		t.Errorf("basebackup = %v, want [{checkpoint: fast}]", pg["basebackup"])
	}
	if pg["bin_dir"] != "/usr/lib/postgresql/15/bin" {
		t.Errorf("bin_dir = %v, want /usr/lib/postgresql/15/bin", pg["bin_dir"])
	}
	if _, ok := pg["basebackup_fast_xlog"]; ok {
		t.Error("basebackup_fast_xlog still rendered")
	}
	for _, k := range []string{"create_replica_method", "basebackup", "bin_dir"} {
		delete(pg, k)
	}
	// Secure by default: pg_hba without trust over TCP, TLS for
	// replication, scram; bg_mon on loopback (README, Security model).
	if !reflect.DeepEqual(pg["pg_hba"], spilo.PgHBA) {
		t.Errorf("pg_hba = %v, want nodeha's", pg["pg_hba"])
	}
	for _, l := range pg["pg_hba"].([]any) {
		if f := strings.Fields(l.(string)); f[0] != "local" && (f[len(f)-1] == "trust" || f[len(f)-1] == "md5") {
			t.Errorf("pg_hba line %q: %s over TCP", l, f[len(f)-1])
		}
	}
	params := pg["parameters"].(map[string]any)
	if params["password_encryption"] != "scram-sha-256" || params["bg_mon.listen_address"] != "127.0.0.1" {
		t.Errorf("password_encryption %v, bg_mon.listen_address %v", params["password_encryption"], params["bg_mon.listen_address"])
	}
	// No local WAL archive without a backup target (README, WAL archive):
	// archive_mode stays on, the command keeps nothing.
	dcsParams := got["bootstrap"].(map[string]any)["dcs"].(map[string]any)["postgresql"].(map[string]any)["parameters"].(map[string]any)
	if dcsParams["archive_command"] != spilo.NoArchive || dcsParams["archive_mode"] != "on" {
		t.Errorf("archive_command %v, archive_mode %v; want %s and on", dcsParams["archive_command"], dcsParams["archive_mode"], spilo.NoArchive)
	}
	delete(dcsParams, "archive_command")
	delete(want["bootstrap"].(map[string]any)["dcs"].(map[string]any)["postgresql"].(map[string]any)["parameters"].(map[string]any), "archive_command")
	delete(pg, "pg_hba")
	delete(wantPG, "pg_hba")
	delete(params, "password_encryption")
	delete(params, "bg_mon.listen_address")
	delete(wantPG["parameters"].(map[string]any), "bg_mon.listen_address")
	delete(wantPG, "create_replica_method")
	delete(wantPG, "basebackup_fast_xlog")
	if d := diffMaps("", got, want); len(d) > 0 {
		t.Errorf("rendered postgres.yml differs from the seed:\n%s", strings.Join(d, "\n"))
	} else if !reflect.DeepEqual(got, want) {
		t.Errorf("rendered postgres.yml differs from the seed:\n%s", file)
	}
}

// Values that YAML 1.1 (PyYAML, which Patroni uses) would read as booleans
// must stay strings: archive_mode: on would turn into True.
func TestRenderQuotesYAML11Booleans(t *testing.T) {
	file, err := spilo.Render(testConfig(t))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range []string{
		`archive_mode: "on"`,
		`hot_standby: "on"`,
		`ssl: "on"`,
		`update_process_title: "off"`,
	} {
		if !bytes.Contains(file, []byte(line)) {
			t.Errorf("rendered file lacks %s", line)
		}
	}
}

func TestRenderGolden(t *testing.T) {
	cfg := testConfig(t,
		"--name=pg-node-2",
		"--advertise=192.168.10.12",
		"--peers=192.168.10.11,192.168.10.12,192.168.10.13",
		"--scope=orders",
		"--postgres-port=5433", "--rw-port=6433",
		"--restapi-port=8009",
		"--etcd-client-port=2479",
	)
	got, err := spilo.Render(cfg)
	if err != nil {
		t.Fatal(err)
	}
	golden := filepath.Join("testdata", "postgres.golden.yml")
	if *update {
		if err := os.WriteFile(golden, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatalf("%v (run go test ./spilo -run Golden -update)", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("Render differs from %s (run with -update if intended):\n--- got\n%s", golden, got)
	}
	// The golden file must carry the non-default settings, not just exist.
	m := parseYAML(t, got)
	pg := m["postgresql"].(map[string]any)
	if pg["connect_address"] != "192.168.10.12:5433" || pg["listen"] != "*:5433" || pg["name"] != "pg-node-2" {
		t.Errorf("postgresql: connect_address %v, listen %v, name %v", pg["connect_address"], pg["listen"], pg["name"])
	}
	if port := pg["parameters"].(map[string]any)["port"]; port != float64(5433) {
		t.Errorf("postgresql.parameters.port = %v, want 5433", port)
	}
	rest := m["restapi"].(map[string]any)
	if rest["connect_address"] != "192.168.10.12:8009" || rest["listen"] != ":8009" {
		t.Errorf("restapi: connect_address %v, listen %v", rest["connect_address"], rest["listen"])
	}
	hosts := m["etcd3"].(map[string]any)["hosts"]
	if want := []any{"192.168.10.11:2479", "192.168.10.12:2479", "192.168.10.13:2479"}; !reflect.DeepEqual(hosts, want) {
		t.Errorf("etcd3.hosts = %v, want %v", hosts, want)
	}
	if m["scope"] != "orders" {
		t.Errorf("scope = %v", m["scope"])
	}
}

func TestRenderFillsPasswords(t *testing.T) {
	file, err := spilo.Render(testConfig(t))
	if err != nil {
		t.Fatal(err)
	}
	m := parseYAML(t, file)
	auth := m["postgresql"].(map[string]any)["authentication"].(map[string]any)
	for user, want := range map[string]string{
		"superuser": superuserPassword, "replication": replicationPassword, "rewind": replicationPassword,
	} {
		if got := auth[user].(map[string]any)["password"]; got != want {
			t.Errorf("postgresql.authentication.%s.password = %v, want %s", user, got, want)
		}
	}
	if got := m["restapi"].(map[string]any)["authentication"].(map[string]any)["password"]; got != restAPIPassword {
		t.Errorf("restapi.authentication.password = %v", got)
	}
	if bytes.Contains(file, []byte("<password>")) || bytes.Contains(file, []byte("<IPAddress>")) || bytes.Contains(file, []byte("<node_name>")) {
		t.Errorf("a placeholder of the seed is left in:\n%s", file)
	}
}

func TestRenderIPv6BracketsConnectAddress(t *testing.T) {
	cfg := testConfig(t, "--advertise=fd00::1", "--peers=fd00::1,fd00::2,fd00::3")
	file, err := spilo.Render(cfg)
	if err != nil {
		t.Fatal(err)
	}
	m := parseYAML(t, file)
	if got := m["postgresql"].(map[string]any)["connect_address"]; got != "[fd00::1]:5432" {
		t.Errorf("connect_address = %v, want [fd00::1]:5432", got)
	}
	if got := m["etcd3"].(map[string]any)["hosts"].([]any)[1]; got != "[fd00::2]:2379" {
		t.Errorf("etcd3.hosts[1] = %v, want [fd00::2]:2379", got)
	}
}

func TestMerge(t *testing.T) {
	dst := map[string]any{
		"bootstrap": map[string]any{
			"dcs": map[string]any{"ttl": 45, "loop_wait": 15},
		},
		"hba":   []any{"a", "b", "c"},
		"scope": "old",
		"keep":  "kept",
	}
	src := map[string]any{
		"bootstrap": map[string]any{
			"dcs": map[string]any{"ttl": 30, "synchronous_mode": true},
		},
		"hba":   []any{"z"},
		"scope": "new",
		"tags":  map[string]any{"nofailover": true},
	}
	spilo.Merge(dst, src)
	want := map[string]any{
		"bootstrap": map[string]any{
			// maps merge key by key
			"dcs": map[string]any{"ttl": 30, "loop_wait": 15, "synchronous_mode": true},
		},
		"hba":   []any{"z"}, // lists replace
		"scope": "new",      // scalars replace
		"keep":  "kept",
		"tags":  map[string]any{"nofailover": true}, // new keys are added
	}
	if !reflect.DeepEqual(dst, want) {
		t.Errorf("Merge:\n got %v\nwant %v", dst, want)
	}
}

func TestMergeScalarOverMapAndMapOverScalar(t *testing.T) {
	dst := map[string]any{"a": map[string]any{"x": 1}, "b": "scalar", "c": 1}
	spilo.Merge(dst, map[string]any{"a": "flat", "b": map[string]any{"y": 2}, "c": nil})
	want := map[string]any{"a": "flat", "b": map[string]any{"y": 2}, "c": nil}
	if !reflect.DeepEqual(dst, want) {
		t.Errorf("Merge = %v, want %v", dst, want)
	}
}

func TestRenderAppliesOverlayFile(t *testing.T) {
	overlay := filepath.Join(t.TempDir(), "overlay.yml")
	if err := os.WriteFile(overlay, []byte(`
bootstrap:
  dcs:
    maximum_lag_on_failover: 1048576
    postgresql:
      parameters:
        max_connections: 500
postgresql:
  pg_hba:
  - hostssl all all all scram-sha-256
tags:
  nofailover: true
`), 0o600); err != nil {
		t.Fatal(err)
	}
	clearEnv(t)
	t.Setenv("NODEHA_PATRONI_OVERLAY", overlay)
	cfg := loadConfig(t)
	if cfg.PatroniOverlay != overlay {
		t.Fatalf("PatroniOverlay = %q, want %q from NODEHA_PATRONI_OVERLAY", cfg.PatroniOverlay, overlay)
	}
	file, err := spilo.Render(cfg)
	if err != nil {
		t.Fatal(err)
	}
	m := parseYAML(t, file)
	dcs := m["bootstrap"].(map[string]any)["dcs"].(map[string]any)
	if dcs["maximum_lag_on_failover"] != float64(1048576) {
		t.Errorf("overlay value not applied: maximum_lag_on_failover %v", dcs["maximum_lag_on_failover"])
	}
	if dcs["loop_wait"] != float64(1) {
		t.Errorf("loop_wait = %v: the overlay's map replaced the seed's instead of merging", dcs["loop_wait"])
	}
	params := dcs["postgresql"].(map[string]any)["parameters"].(map[string]any)
	if params["max_connections"] != float64(500) || params["archive_mode"] != "on" {
		t.Errorf("parameters: max_connections %v, archive_mode %v", params["max_connections"], params["archive_mode"])
	}
	pg := m["postgresql"].(map[string]any)
	if hba := pg["pg_hba"].([]any); len(hba) != 1 || hba[0] != "hostssl all all all scram-sha-256" {
		t.Errorf("pg_hba = %v, want the overlay's list alone", hba)
	}
	if pg["connect_address"] != "10.0.0.1:5432" {
		t.Errorf("connect_address = %v, want it untouched by the overlay", pg["connect_address"])
	}
	if tags, _ := m["tags"].(map[string]any); tags["nofailover"] != true {
		t.Errorf("tags = %v, want the overlay's new key", m["tags"])
	}
}

func TestRenderBrokenOverlayNamesTheFile(t *testing.T) {
	overlay := filepath.Join(t.TempDir(), "broken-overlay.yml")
	if err := os.WriteFile(overlay, []byte("bootstrap:\n  dcs: [ttl: 30\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := testConfig(t)
	cfg.PatroniOverlay = overlay
	_, err := spilo.Render(cfg)
	if err == nil {
		t.Fatal("Render accepted a broken overlay")
	}
	if !strings.Contains(err.Error(), overlay) {
		t.Errorf("error %q does not name %s", err, overlay)
	}
}

// An overlay may not change what nodeha owns, nor change a value's kind;
// each refusal is one line naming NODEHA_PATRONI_OVERLAY and the key.
func TestOverlayRefusals(t *testing.T) {
	cases := []struct{ name, yaml, want string }{
		{"malformed", "bootstrap:\n  dcs: [ttl: 30\n", "not valid YAML"},
		{"a list", "- a\n- b\n", "is a YAML list, want a map"},
		{"a scalar", "just text\n", "is a YAML string, want a map"},
		{"ttl", "bootstrap:\n  dcs:\n    ttl: 30\n", "bootstrap.dcs.ttl is nodeha's (set NODEHA_TTL)"},
		{"wrong type", "bootstrap:\n  dcs:\n    maximum_lag_on_failover: abc\n", "bootstrap.dcs.maximum_lag_on_failover is a string (abc), want a number"},
		{"etcd3", "etcd3:\n  protocol: http\n", "etcd3 is nodeha's"},
		{"etcd3 tls", "etcd3:\n  cacert: /x\n", "etcd3 is nodeha's"},
		{"data_dir", "postgresql:\n  data_dir: /tmp/x\n", "postgresql.data_dir is nodeha's (set NODEHA_POSTGRES_DIR)"},
		{"authentication", "postgresql:\n  authentication:\n    superuser:\n      password: x\n", "postgresql.authentication is nodeha's"},
		{"postgresql null", "postgresql: null\n", "postgresql is null"},
		{"map to scalar", "postgresql: 5\n", "postgresql is a number, want a map"},
		{"list to scalar", "postgresql:\n  pg_hba: host all all all md5\n", "postgresql.pg_hba is a string, want a list"},
		{"port parameter", "postgresql:\n  parameters:\n    port: 6543\n", "postgresql.parameters.port is nodeha's"},
		{"trust over TCP", "postgresql:\n  pg_hba:\n  - local all all trust\n  - host all postgres 127.0.0.1/32 trust\n", `"host all postgres 127.0.0.1/32 trust": trust on a TCP line`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			overlay := filepath.Join(t.TempDir(), "overlay.yml")
			os.WriteFile(overlay, []byte(tc.yaml), 0o600)
			cfg := testConfig(t)
			cfg.PatroniOverlay = overlay
			_, err := spilo.Render(cfg)
			var se *config.SettingError
			if err == nil || !errors.As(err, &se) || !strings.HasPrefix(err.Error(), "NODEHA_PATRONI_OVERLAY (--patroni-overlay): "+overlay+": ") ||
				!strings.Contains(err.Error(), tc.want) || strings.Contains(err.Error(), "\n") {
				t.Errorf("Render = %v, want one setting error line containing %q", err, tc.want)
			}
		})
	}
	// A PostgreSQL parameter's scalar may be written either way.
	overlay := filepath.Join(t.TempDir(), "overlay.yml")
	os.WriteFile(overlay, []byte("postgresql:\n  parameters:\n    shared_buffers: 512MB\n    max_connections: '200'\n"), 0o600)
	cfg := testConfig(t)
	cfg.PatroniOverlay = overlay
	if _, err := spilo.Render(cfg); err != nil {
		t.Errorf("parameters written as strings or numbers: %v", err)
	}
}
