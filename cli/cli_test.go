package cli_test

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/nodeha/nodeha/cli"
	"github.com/nodeha/nodeha/config"
	"github.com/nodeha/nodeha/health"
	"github.com/nodeha/nodeha/trust"
)

// clearEnv unsets every NODEHA_* variable and the unprefixed names
// envconfig falls back to, so the machine's environment cannot leak in.
func clearEnv(t *testing.T) {
	t.Helper()
	for _, s := range config.Settings() {
		for _, k := range []string{s.Env, strings.TrimPrefix(s.Env, "NODEHA_")} {
			if _, ok := os.LookupEnv(k); ok {
				t.Setenv(k, "")
				os.Unsetenv(k)
			}
		}
	}
}

func run(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errb bytes.Buffer
	code = cli.Main(args, &out, &errb)
	return code, out.String(), errb.String()
}

var cluster = []string{"--name=pg-node-1", "--advertise=10.0.0.1", "--peers=10.0.0.1,10.0.0.2,10.0.0.3"}

const cliToken = "cli-tests-cluster-token-Zx81Qp0v"

// setPasswords sets the token and three explicit passwords, and returns
// the passwords.
func setPasswords(t *testing.T) []string {
	pw := map[string]string{
		"NODEHA_SUPERUSER_PASSWORD":   "su-Kq7vTf9x",
		"NODEHA_REPLICATION_PASSWORD": "repl-Wm3pLs2c",
		"NODEHA_RESTAPI_PASSWORD":     "api-Rb6tJx1q",
	}
	t.Setenv("NODEHA_TOKEN", cliToken)
	var out []string
	for k, v := range pw {
		t.Setenv(k, v)
		out = append(out, v)
	}
	return out
}

func TestVersion(t *testing.T) {
	code, out, _ := run(t, "version")
	if code != 0 || out != "nodeha "+cli.Version+"\n" {
		t.Errorf("version: exit %d, output %q", code, out)
	}
}

func TestNoCommandAndUnknownCommand(t *testing.T) {
	code, _, errOut := run(t, "frobnicate")
	if code != 2 || !strings.Contains(errOut, `unknown command "frobnicate"`) || !strings.Contains(errOut, "usage:") {
		t.Errorf("unknown command: exit %d, stderr %q", code, errOut)
	}
	if code, _, errOut := run(t); code != 2 || !strings.Contains(errOut, "usage:") {
		t.Errorf("no command: exit %d, stderr %q", code, errOut)
	}
	if code, out, _ := run(t, "help"); code != 0 || !strings.Contains(out, "usage:") {
		t.Errorf("help: exit %d, stdout %q", code, out)
	}
}

func TestRenderWithoutToken(t *testing.T) {
	clearEnv(t)
	code, out, errOut := run(t, append([]string{"render", "--data-dir=" + t.TempDir()}, cluster...)...)
	if code != 2 {
		t.Errorf("exit %d, want 2 (bad settings)", code)
	}
	if out != "" {
		t.Errorf("rendered without the cluster token (no CA, no passwords):\n%s", out)
	}
	lines := strings.Split(strings.TrimSuffix(errOut, "\n"), "\n")
	if len(lines) != 1 {
		t.Errorf("want one line naming the token, got:\n%s", errOut)
	}
	for _, l := range lines {
		if !strings.HasPrefix(l, "nodeha: NODEHA_") {
			t.Errorf("line %q does not stand alone with a nodeha: prefix and the variable", l)
		}
	}
	if !strings.Contains(errOut, "NODEHA_TOKEN (--token)") {
		t.Errorf("stderr does not name NODEHA_TOKEN:\n%s", errOut)
	}
}

func TestRenderPrintsPostgresYML(t *testing.T) {
	clearEnv(t)
	pw := setPasswords(t)
	code, out, errOut := run(t, append([]string{"render"}, cluster...)...)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	if !strings.Contains(out, "connect_address: 10.0.0.1:5432") || !strings.Contains(out, "name: pg-node-1") {
		t.Errorf("render output is not this host's postgres.yml:\n%s", out)
	}
	// The file is where the passwords go.
	for _, p := range pw {
		if !strings.Contains(out, p) {
			t.Errorf("postgres.yml lacks a password %s", p)
		}
	}
	if strings.Contains(out, cliToken) {
		t.Error("postgres.yml holds the cluster token; Patroni needs only the passwords")
	}
}

func TestRenderContainerHasNoSecret(t *testing.T) {
	clearEnv(t)
	pw := setPasswords(t)
	code, out, errOut := run(t, append([]string{"render", "--container"}, cluster...)...)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	var spec struct {
		Name   string `json:"name"`
		Hash   string `json:"hash"`
		Config struct {
			Image string
			Env   []string
		} `json:"config"`
	}
	if err := json.Unmarshal([]byte(out), &spec); err != nil {
		t.Fatalf("output is not the spec as JSON: %v\n%s", err, out)
	}
	if spec.Name != "nodeha-spilo" || spec.Hash == "" || spec.Config.Image != config.DefaultImage || len(spec.Config.Env) == 0 {
		t.Errorf("spec = %+v", spec)
	}
	for _, p := range append(pw, cliToken) {
		if strings.Contains(out+errOut, p) {
			t.Errorf("render --container printed the secret %s", p)
		}
	}
}

func TestDSN(t *testing.T) {
	clearEnv(t)
	ca := caFile(t)
	code, out, errOut := run(t, "dsn", "--peers", "a,b,c", "--sslrootcert="+ca)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	dsn := strings.TrimSpace(out)
	if !strings.HasPrefix(dsn, "postgresql://a:5432,b:5432,c:5432/postgres?") || !strings.Contains(dsn, "target_session_attrs=read-write") {
		t.Errorf("dsn = %s", dsn)
	}
	cfg, err := pgconn.ParseConfig(dsn)
	if err != nil {
		t.Fatalf("libpq-style parse of %s: %v", dsn, err)
	}
	hosts := []string{cfg.Host}
	for _, f := range cfg.Fallbacks {
		hosts = append(hosts, f.Host)
		if f.Port != 5432 {
			t.Errorf("fallback %s port %d", f.Host, f.Port)
		}
	}
	if strings.Join(hosts, ",") != "a,b,c" || cfg.Port != 5432 || cfg.Database != "postgres" {
		t.Errorf("parsed hosts %v port %d database %q, want a,b,c 5432 postgres", hosts, cfg.Port, cfg.Database)
	}
	if cfg.ValidateConnect == nil {
		t.Error("no session check: target_session_attrs was not understood")
	}
	// nodeha's pg_hba takes clients over TLS only, and the client verifies
	// the server's certificate and name against the cluster CA.
	if cfg.TLSConfig == nil || cfg.TLSConfig.InsecureSkipVerify && cfg.TLSConfig.VerifyPeerCertificate == nil || cfg.TLSConfig.RootCAs == nil || cfg.TLSConfig.ServerName != "a" {
		t.Errorf("DSN does not verify the server against the CA: %+v", cfg.TLSConfig)
	}
	if !strings.Contains(dsn, "sslmode=verify-full") {
		t.Errorf("dsn %s: want sslmode=verify-full", dsn)
	}
	if cfg.Password != "" {
		t.Error("DSN carries a password")
	}
}

func TestDSNReadOnly(t *testing.T) {
	clearEnv(t)
	code, out, _ := run(t, "dsn", "--read-only", "--peers=10.0.0.1,10.0.0.2,10.0.0.3", "--user=app", "--dbname=orders", "--sslrootcert="+caFile(t))
	dsn := strings.TrimSpace(out)
	if code != 0 || !strings.Contains(dsn, "target_session_attrs=prefer-standby") || strings.Contains(dsn, "read-write") {
		t.Fatalf("exit %d, dsn %s", code, dsn)
	}
	cfg, err := pgconn.ParseConfig(dsn)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.User != "app" || cfg.Database != "orders" || 1+len(cfg.Fallbacks) != 3 {
		t.Errorf("parsed user %q database %q hosts %d", cfg.User, cfg.Database, 1+len(cfg.Fallbacks))
	}
}

func TestDSNFromEnvironmentAndIPv6(t *testing.T) {
	clearEnv(t)
	t.Setenv("NODEHA_PEERS", "fd00::1,fd00::2")
	t.Setenv("NODEHA_POSTGRES_PORT", "6432")
	code, out, errOut := run(t, "dsn", "--sslrootcert="+caFile(t))
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	dsn := strings.TrimSpace(out)
	if !strings.HasPrefix(dsn, "postgresql://[fd00::1]:6432,[fd00::2]:6432/") {
		t.Errorf("dsn = %s", dsn)
	}
	cfg, err := pgconn.ParseConfig(dsn)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Host != "fd00::1" || cfg.Port != 6432 || len(cfg.Fallbacks) != 1 || cfg.Fallbacks[0].Host != "fd00::2" {
		t.Errorf("parsed %s:%d fallbacks %+v", cfg.Host, cfg.Port, cfg.Fallbacks)
	}
}

func TestDSNWithoutPeers(t *testing.T) {
	clearEnv(t)
	code, out, errOut := run(t, "dsn")
	if code != 2 || out != "" || !strings.Contains(errOut, "NODEHA_PEERS (--peers)") {
		t.Errorf("exit %d, stdout %q, stderr %q; want 2 and a line naming NODEHA_PEERS", code, out, errOut)
	}
}

func TestBadFlagAndExtraArgument(t *testing.T) {
	clearEnv(t)
	if code, _, _ := run(t, "dsn", "--no-such-flag"); code != 2 {
		t.Errorf("unknown flag: exit %d, want 2", code)
	}
	if code, _, errOut := run(t, "dsn", "--peers=a", "extra"); code != 2 || !strings.Contains(errOut, `unexpected argument "extra"`) {
		t.Errorf("extra argument: exit %d, stderr %q", code, errOut)
	}
	if code, _, errOut := run(t, "render", "-h"); code != 0 || !strings.Contains(errOut, "NODEHA_SUPERUSER_PASSWORD") {
		t.Errorf("render -h: exit %d; the flag help should name the variables:\n%s", code, errOut)
	}
}

func TestStatusWithoutDaemon(t *testing.T) {
	clearEnv(t)
	socket := t.TempDir() + "/nodeha.sock"
	code, _, errOut := run(t, "status", "--socket="+socket)
	if code != 1 || !strings.Contains(errOut, socket) {
		t.Errorf("status with no daemon: exit %d, stderr %q", code, errOut)
	}
}

// caFile writes a cluster CA's certificate, as `nodeha ca` prints it.
func caFile(t *testing.T) string {
	t.Helper()
	id, _ := trust.FromToken(trust.GenerateToken())
	p := filepath.Join(t.TempDir(), "ca.crt")
	if err := os.WriteFile(p, id.CAPEM(), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestCAPrintsTheTokensCA(t *testing.T) {
	clearEnv(t)
	tok := trust.GenerateToken()
	id, _ := trust.FromToken(tok)
	code, out, errOut := run(t, "ca", "--token="+tok, "--data-dir="+t.TempDir())
	blk, _ := pem.Decode([]byte(out))
	if code != 0 || blk == nil {
		t.Fatalf("exit %d (%s), out %q, want the CA's PEM", code, errOut, out)
	}
	c, err := x509.ParseCertificate(blk.Bytes)
	if err != nil || !c.IsCA || trust.FingerprintOf(c) != id.Fingerprint() {
		t.Fatalf("printed certificate: %v, CA %v: not the token's CA", err, c != nil && c.IsCA)
	}
	if strings.Contains(out, "PRIVATE") {
		t.Fatal("nodeha ca printed a private key")
	}
}

func TestStatusCluster(t *testing.T) {
	clearEnv(t)
	socket := filepath.Join(t.TempDir(), "nodeha.sock")
	view := health.ClusterView{
		Scope: "orders", From: "pg1", Leader: "pg2", Whole: true,
		Hosts: []health.HostView{
			{Name: "pg1", Address: "10.0.0.1", Role: "replica", State: "streaming", Timeline: 2, LagBytes: 0, Etcd: "voter", Healthy: true, Status: &health.HostStatus{Version: "v9"}},
			{Name: "pg2", Address: "10.0.0.2", Role: "primary", State: "running", Timeline: 2, LagBytes: 0, Etcd: "voter,leader", Healthy: true},
		},
		LastFailover: &health.Failover{From: "pg1", To: "pg2", Why: "switchover"},
	}
	s, err := health.Listen(socket, func(context.Context) health.Report { return health.Report{} }, health.Actions{
		Cluster: func(context.Context) (health.ClusterView, error) { return view, nil },
	})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	code, out, errOut := run(t, "status", "--cluster", "--socket", socket)
	if code != 0 || !strings.Contains(out, "cluster orders: whole") || !strings.Contains(out, "pg2") || !strings.Contains(out, "voter,leader") ||
		!strings.Contains(out, "last failover:") || !strings.Contains(out, "pg1 -> pg2: switchover") || !strings.Contains(out, "v9") {
		t.Errorf("exit %d (%s):\n%s", code, errOut, out)
	}
	code, out, _ = run(t, "status", "--cluster", "--json", "--socket", socket)
	var got health.ClusterView
	if err := json.Unmarshal([]byte(out), &got); code != 0 || err != nil || len(got.Hosts) != 2 || got.Leader != "pg2" {
		t.Errorf("--json: exit %d, %v: %s", code, err, out)
	}
	view.Whole, view.Problems = false, []string{"pg1: no status from its nodeha"}
	code, out, _ = run(t, "status", "--cluster", "--socket", socket)
	if code != 1 || !strings.Contains(out, "NOT WHOLE") || !strings.Contains(out, "pg1: no status from its nodeha") {
		t.Errorf("not whole: exit %d:\n%s", code, out)
	}
}

func TestDSNThroughEndpoints(t *testing.T) {
	clearEnv(t)
	ca := caFile(t)
	code, out, errOut := run(t, "dsn", "--endpoint=rw", "--peers=10.0.0.1,10.0.0.2", "--user=app", "--sslrootcert="+ca)
	dsn := strings.TrimSpace(out)
	if code != 0 || !strings.HasPrefix(dsn, "postgresql://app@10.0.0.1:5433,10.0.0.2:5433/postgres?") || strings.Contains(dsn, "target_session_attrs") {
		t.Fatalf("exit %d (%s): %s", code, errOut, dsn)
	}
	if _, err := pgconn.ParseConfig(dsn); err != nil {
		t.Fatal(err)
	}
	if code, out, _ := run(t, "dsn", "--endpoint=ro", "--peers=10.0.0.1", "--sslrootcert="+ca); code != 0 || !strings.Contains(out, "10.0.0.1:5434") {
		t.Errorf("ro: exit %d, %s", code, out)
	}
	if code, _, errOut := run(t, "dsn", "--endpoint=rx", "--peers=10.0.0.1"); code != 2 || !strings.Contains(errOut, `--endpoint: "rx": want rw or ro`) {
		t.Errorf("bad --endpoint: exit %d, %s", code, errOut)
	}
}

func TestMetricsCert(t *testing.T) {
	clearEnv(t)
	tok := trust.GenerateToken()
	id, _ := trust.FromToken(tok)
	dir := filepath.Join(t.TempDir(), "certs")
	code, out, errOut := run(t, "metrics-cert", "--token="+tok, "--data-dir="+t.TempDir(), "--out="+dir, "--reader=prom-1")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	if strings.Contains(out, "PRIVATE") {
		t.Fatal("metrics-cert printed a private key")
	}
	crt, err := os.ReadFile(filepath.Join(dir, "prom-1.crt"))
	if err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(filepath.Join(dir, "prom-1.key")); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("key: %v, want mode 0600", err)
	}
	caPEM, _ := os.ReadFile(filepath.Join(dir, "nodeha-ca.crt"))
	if blk, _ := pem.Decode(caPEM); blk == nil {
		t.Error("nodeha-ca.crt is not PEM")
	} else if ca, err := x509.ParseCertificate(blk.Bytes); err != nil || trust.FingerprintOf(ca) != id.Fingerprint() {
		t.Errorf("nodeha-ca.crt is not the cluster CA (%v)", err)
	}
	// A reader's certificate, not the cluster CA's.
	blk, _ := pem.Decode(crt)
	c, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Verify(x509.VerifyOptions{Roots: id.ReadersPool(), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Errorf("not a metrics reader: %v", err)
	}
	if id.IssuedBy(crt) {
		t.Error("the reader's certificate is the cluster CA's: etcd would take it")
	}
	// Never over an existing file; a bad name or no --out: one line, exit 2.
	for _, args := range [][]string{
		{"--out=" + dir, "--reader=prom-1"},
		{"--out=" + dir, "--reader=../x"},
		{"--reader=prom-2"},
	} {
		code, _, errOut := run(t, append([]string{"metrics-cert", "--token=" + tok, "--data-dir=" + t.TempDir()}, args...)...)
		if code != 2 || strings.Count(strings.TrimSpace(errOut), "\n") != 0 {
			t.Errorf("%v: exit %d, %q; want 2 and one line", args, code, errOut)
		}
	}
	if b, _ := os.ReadFile(filepath.Join(dir, "prom-1.crt")); !bytes.Equal(b, crt) {
		t.Error("an existing certificate was overwritten")
	}
}
