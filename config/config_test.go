package config_test

import (
	"errors"
	"flag"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-sockaddr/template"

	"github.com/nodeha/nodeha/config"
)

// clearEnv unsets every NODEHA_* variable for the test, and the unprefixed
// names envconfig falls back to (DOCKER_HOST, NAME, ...), so that the
// machine's environment cannot leak into a test.
func clearEnv(t *testing.T) {
	t.Helper()
	for _, s := range config.Settings() {
		for _, k := range []string{s.Env, strings.TrimPrefix(s.Env, "NODEHA_")} {
			if _, ok := os.LookupEnv(k); ok {
				t.Setenv(k, "") // restores the old value after the test
				os.Unsetenv(k)
			}
		}
	}
}

func load(t *testing.T, args ...string) *config.Config {
	t.Helper()
	fs := flag.NewFlagSet("test", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	c, err := config.Load(fs, args)
	if err != nil {
		t.Fatalf("Load(%q): %v", args, err)
	}
	return c
}

// validArgs is a complete, valid configuration of the first of three hosts.
var validArgs = []string{
	"--name=pg-node-1",
	"--advertise=10.0.0.1",
	"--peers=10.0.0.1,10.0.0.2,10.0.0.3",
	"--superuser-password=su-secret",
	"--replication-password=repl-secret",
	"--restapi-password=api-secret",
	"--token=" + testToken,
}

const testToken = "a-token-chosen-by-the-operator-for-tests"

func errLines(err error) []string {
	if err == nil {
		return nil
	}
	return strings.Split(err.Error(), "\n")
}

// hasLine reports whether one line of lines starts with prefix and
// contains every one of parts.
func hasLine(lines []string, prefix string, parts ...string) bool {
	for _, l := range lines {
		if !strings.HasPrefix(l, prefix) {
			continue
		}
		ok := true
		for _, p := range parts {
			ok = ok && strings.Contains(l, p)
		}
		if ok {
			return true
		}
	}
	return false
}

func TestValidateReportsEveryProblemAtOnce(t *testing.T) {
	clearEnv(t)
	c := load(t,
		"--name=pg-node-1",
		"--advertise="+`{{ GetAllInterfaces | include "name" "no-such-if" | attr "address" }}`,
		"--peers=10.0.0.1,10.0.0.2",
		"--etcd-client-port=70000",
		"--data-dir=var/lib/nodeha",
	)
	err := c.Check()
	if err == nil {
		t.Fatal("Validate() = nil, want every problem")
	}
	lines := errLines(err)
	want := []struct{ prefix, part string }{
		{"NODEHA_TOKEN (--token): ", "required"},
		{"NODEHA_ADVERTISE (--advertise): ", "resolves to no address"},
		{"NODEHA_ETCD_CLIENT_PORT (--etcd-client-port): ", "70000"},
		{"NODEHA_DATA_DIR (--data-dir): ", `"var/lib/nodeha" must be an absolute path`},
	}
	for _, w := range want {
		if !hasLine(lines, w.prefix, w.part) {
			t.Errorf("no line %q...%q in:\n%s", w.prefix, w.part, err)
		}
	}
	if len(lines) != len(want) {
		t.Errorf("got %d problems, want %d:\n%s", len(lines), len(want), err)
	}
	if c.AdvertiseIP.IsValid() {
		t.Errorf("AdvertiseIP = %v, want unset when the template resolves to nothing", c.AdvertiseIP)
	}
}

func TestValidatePeersMustContainAdvertise(t *testing.T) {
	clearEnv(t)
	c := load(t, append(validArgs, "--advertise=10.0.0.9")...)
	err := c.Check()
	if !hasLine(errLines(err), "NODEHA_PEERS (--peers): ", "10.0.0.9") {
		t.Fatalf("Validate() = %v, want a NODEHA_PEERS line naming 10.0.0.9", err)
	}
	if n := len(errLines(err)); n != 1 {
		t.Errorf("got %d problems, want 1:\n%s", n, err)
	}
}

func TestValidatePeerProblems(t *testing.T) {
	clearEnv(t)
	c := load(t, append(validArgs, "--peers=10.0.0.1,10.0.0.2,10.0.0.2,10.0.0.3:2380")...)
	lines := errLines(c.Check())
	if !hasLine(lines, "NODEHA_PEERS (--peers): ", `"10.0.0.2" is listed twice`) {
		t.Errorf("no duplicate-peer line in %q", lines)
	}
	if !hasLine(lines, "NODEHA_PEERS (--peers): ", `"10.0.0.3:2380"`, "without ports") {
		t.Errorf("no peer-with-port line in %q", lines)
	}
}

func TestValidateTemplateResolvingToSeveralAddresses(t *testing.T) {
	clearEnv(t)
	tmpl := `{{ GetAllInterfaces | include "type" "IP" | join "address" " " }}`
	out, err := template.Parse(tmpl)
	if err != nil {
		t.Fatal(err)
	}
	n := len(strings.Fields(out))
	if n < 2 {
		t.Skipf("this host has %d IP address(es); need two", n)
	}
	c := load(t, append(validArgs, "--advertise="+tmpl)...)
	err = c.Check()
	if !hasLine(errLines(err), "NODEHA_ADVERTISE (--advertise): ", "addresses", "want exactly one") {
		t.Fatalf("Validate() = %v, want a NODEHA_ADVERTISE line about several addresses", err)
	}
}

func TestValidTemplateResolves(t *testing.T) {
	clearEnv(t)
	c := load(t, append(validArgs,
		"--advertise="+`{{ GetAllInterfaces | include "name" "^lo$" | include "type" "IPv4" | attr "address" }}`,
		"--peers=127.0.0.1,10.0.0.2,10.0.0.3")...)
	if err := c.Check(); err != nil {
		t.Fatal(err)
	}
	if want := netip.MustParseAddr("127.0.0.1"); c.AdvertiseIP != want {
		t.Errorf("AdvertiseIP = %v, want %v", c.AdvertiseIP, want)
	}
}

func TestValidConfigPasses(t *testing.T) {
	clearEnv(t)
	c := load(t, validArgs...)
	if err := c.Check(); err != nil {
		t.Fatalf("Validate() = %v", err)
	}
	if want := netip.MustParseAddr("10.0.0.1"); c.AdvertiseIP != want {
		t.Errorf("AdvertiseIP = %v, want %v", c.AdvertiseIP, want)
	}
	// The defaults are the seed's and DESIGN.md's.
	if c.Image != config.DefaultImage || c.EtcdClientPort != 2379 || c.PostgresPort != 5432 ||
		c.RestAPIPort != 8008 || c.PostgresDir != "/var/lib/postgresql/data" || c.Socket != "/run/nodeha/nodeha.sock" {
		t.Errorf("unexpected defaults: %+v", c)
	}
	if got, want := strings.Join(c.EtcdHosts(), ","), "10.0.0.1:2379,10.0.0.2:2379,10.0.0.3:2379"; got != want {
		t.Errorf("EtcdHosts() = %s, want %s", got, want)
	}
}

func TestValidateTouchesNothingOnDisk(t *testing.T) {
	clearEnv(t)
	root := t.TempDir()
	dirs := map[string]string{
		"data-dir":     filepath.Join(root, "data"),
		"postgres-dir": filepath.Join(root, "pg"),
		"log-dir":      filepath.Join(root, "log"),
		"socket":       filepath.Join(root, "run", "nodeha.sock"),
	}
	args := append([]string{}, validArgs...)
	for fl, p := range dirs {
		args = append(args, "--"+fl+"="+p)
	}
	c := load(t, args...)
	if err := c.Check(); err != nil {
		t.Fatal(err)
	}
	ents, err := os.ReadDir(root)
	if err != nil {
		t.Fatal(err)
	}
	if len(ents) != 0 {
		t.Errorf("Validate created %v in %s", ents, root)
	}
}

func TestFlagsOverrideEnvironment(t *testing.T) {
	clearEnv(t)
	t.Setenv("NODEHA_SCOPE", "from-env")
	t.Setenv("NODEHA_NAME", "env-node")
	t.Setenv("NODEHA_PEERS", "10.1.0.1,10.1.0.2")
	t.Setenv("NODEHA_POSTGRES_PORT", "6432")
	t.Setenv("NODEHA_STOP_TIMEOUT", "3m")

	c := load(t, "--scope=from-flag", "--peers=10.2.0.1", "--postgres-port=7432")
	if c.Scope != "from-flag" {
		t.Errorf("Scope = %q, want the flag's from-flag", c.Scope)
	}
	if strings.Join(c.Peers, ",") != "10.2.0.1" {
		t.Errorf("Peers = %q, want the flag's [10.2.0.1]", c.Peers)
	}
	if c.PostgresPort != 7432 {
		t.Errorf("PostgresPort = %d, want the flag's 7432", c.PostgresPort)
	}
	// Settings without a flag come from the environment.
	if c.Name != "env-node" {
		t.Errorf("Name = %q, want env-node from NODEHA_NAME", c.Name)
	}
	if c.StopTimeout.String() != "3m0s" {
		t.Errorf("StopTimeout = %v, want 3m from NODEHA_STOP_TIMEOUT", c.StopTimeout)
	}
}

func TestPeersParseCommaSeparated(t *testing.T) {
	clearEnv(t)
	want := "10.0.0.1|10.0.0.2|db3.example"

	t.Setenv("NODEHA_PEERS", " 10.0.0.1, 10.0.0.2 ,,db3.example ")
	if got := strings.Join(load(t).Peers, "|"); got != want {
		t.Errorf("from NODEHA_PEERS: Peers = %q, want %q", got, want)
	}
	os.Unsetenv("NODEHA_PEERS")
	if got := strings.Join(load(t, "--peers", "10.0.0.1, 10.0.0.2,db3.example,").Peers, "|"); got != want {
		t.Errorf("from --peers: Peers = %q, want %q", got, want)
	}
}

func TestLoadRejectsUnknownFlag(t *testing.T) {
	clearEnv(t)
	fs := flag.NewFlagSet("test", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	if _, err := config.Load(fs, []string{"--no-such-flag"}); err == nil {
		t.Fatal("Load accepted --no-such-flag")
	}
}

func TestLoadReportsBadEnvironment(t *testing.T) {
	clearEnv(t)
	t.Setenv("NODEHA_POSTGRES_PORT", "five")
	fs := flag.NewFlagSet("test", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	_, err := config.Load(fs, nil)
	if err == nil || !strings.Contains(err.Error(), "NODEHA_POSTGRES_PORT") {
		t.Fatalf("Load() = %v, want an error naming NODEHA_POSTGRES_PORT", err)
	}
}

func TestValidateOverlayMustBeAFile(t *testing.T) {
	clearEnv(t)
	dir := t.TempDir()
	c := load(t, append(validArgs, "--patroni-overlay="+dir)...)
	if !hasLine(errLines(c.Check()), "NODEHA_PATRONI_OVERLAY (--patroni-overlay): ", "is a directory") {
		t.Error("a directory was accepted as the overlay")
	}
	c = load(t, append(validArgs, "--patroni-overlay="+filepath.Join(dir, "missing.yml"))...)
	err := c.Check()
	if !hasLine(errLines(err), "NODEHA_PATRONI_OVERLAY (--patroni-overlay): ", "missing.yml") {
		t.Errorf("Validate() = %v, want a line naming the missing overlay", err)
	}
}

// The Patroni check is off at 0; on, it needs room for a lost poll or two.
func TestValidatePatroniDeadAfter(t *testing.T) {
	clearEnv(t)
	if c := load(t, validArgs...); c.PatroniDeadAfter != 60*time.Second {
		t.Errorf("default PatroniDeadAfter = %v, want 60s", c.PatroniDeadAfter)
	}
	for _, ok := range []string{"0", "10s", "5m"} {
		if err := load(t, append(validArgs, "--patroni-dead-after="+ok)...).Check(); err != nil {
			t.Errorf("--patroni-dead-after=%s: %v", ok, err)
		}
	}
	for _, bad := range []string{"-1s", "3s"} {
		err := load(t, append(validArgs, "--patroni-dead-after="+bad)...).Check()
		lines := errLines(err)
		if len(lines) != 1 || !hasLine(lines, "NODEHA_PATRONI_DEAD_AFTER (--patroni-dead-after): ", "want 0 (off) or at least 10s") {
			t.Errorf("--patroni-dead-after=%s: Validate() = %v, want one line naming the setting", bad, err)
		}
	}
}

func TestSettingsNameEveryVariableAndFlag(t *testing.T) {
	seen := map[string]bool{}
	secrets := 0
	for _, s := range config.Settings() {
		if !strings.HasPrefix(s.Env, "NODEHA_") || !strings.HasPrefix(s.Flag, "--") || s.Desc == "" {
			t.Errorf("incomplete setting %+v", s)
		}
		if seen[s.Env] {
			t.Errorf("%s listed twice", s.Env)
		}
		seen[s.Env] = true
		if s.Secret {
			secrets++
			if s.Default != "" {
				t.Errorf("secret %s has a default", s.Env)
			}
		}
	}
	if secrets != 5 {
		t.Errorf("%d secret settings, want the token and the four passwords", secrets)
	}
}

func TestResolveAddress(t *testing.T) {
	for _, tc := range []struct {
		in, want string
	}{
		{"10.0.0.1", "10.0.0.1"},
		{"fd00::1", "fd00::1"},
		{`{{ "10.9.8.7" }}`, "10.9.8.7"},
	} {
		got, err := config.ResolveAddress(tc.in)
		if err != nil || got.String() != tc.want {
			t.Errorf("ResolveAddress(%q) = %v, %v; want %s", tc.in, got, err, tc.want)
		}
	}
	for _, in := range []string{"", `{{ "not-an-ip" }}`, `{{ GetNothing }}`} {
		if got, err := config.ResolveAddress(in); err == nil {
			t.Errorf("ResolveAddress(%q) = %v, want an error", in, got)
		}
	}
}

func TestHostPortBracketsIPv6(t *testing.T) {
	if got := config.HostPort("fd00::1", 2379); got != "[fd00::1]:2379" {
		t.Errorf("HostPort = %s", got)
	}
}

func TestValidateJoinsErrors(t *testing.T) {
	clearEnv(t)
	c := load(t, "--name=bad name!", "--advertise=10.0.0.1", "--peers=10.0.0.1")
	err := c.Check()
	// errors.Join keeps every problem reachable, not just a flattened string.
	var joined interface{ Unwrap() []error }
	if !errors.As(err, &joined) || len(joined.Unwrap()) != 2 {
		t.Fatalf("Validate() = %v, want a joined error of the name and the token", err)
	}
}

// The seed's rewind user is its replication user: one role, one password.
func TestRewindPasswordFollowsReplication(t *testing.T) {
	clearEnv(t)
	c := load(t, validArgs...)
	if err := c.Check(); err != nil {
		t.Fatal(err)
	}
	if c.RewindPassword != "repl-secret" {
		t.Errorf("RewindPassword = %q, want the replication password", c.RewindPassword)
	}

	c = load(t, append(validArgs, "--rewind-password=repl-secret")...)
	if err := c.Check(); err != nil {
		t.Errorf("an equal rewind password was refused: %v", err)
	}

	c = load(t, append(validArgs, "--rewind-password=something-else")...)
	err := c.Check()
	if !hasLine(errLines(err), "NODEHA_REWIND_PASSWORD (--rewind-password): ", "NODEHA_REPLICATION_PASSWORD") {
		t.Errorf("Validate() = %v, want a line saying rewind differs from replication", err)
	}
	if strings.Contains(err.Error(), "something-else") || strings.Contains(err.Error(), "repl-secret") {
		t.Errorf("the error shows a password: %v", err)
	}
}

func TestPasswordsDeriveFromTheTokenUnlessSet(t *testing.T) {
	clearEnv(t)
	dir := t.TempDir()
	three := []string{"--name=pg1", "--advertise=10.0.0.1", "--peers=10.0.0.1,10.0.0.2,10.0.0.3", "--data-dir=" + dir, "--token=" + testToken}
	a, b := load(t, three...), load(t, append(three, "--superuser-password=mine-own")...)
	if err := errors.Join(a.Check(), b.Check()); err != nil {
		t.Fatal(err)
	}
	if a.SuperuserPassword == "" || a.ReplicationPassword == "" || a.RestAPIPassword == "" ||
		a.SuperuserPassword == a.ReplicationPassword || a.RewindPassword != a.ReplicationPassword {
		t.Fatalf("derived passwords: %q %q %q %q", a.SuperuserPassword, a.ReplicationPassword, a.RestAPIPassword, a.RewindPassword)
	}
	if b.SuperuserPassword != "mine-own" || b.ReplicationPassword != a.ReplicationPassword {
		t.Errorf("an explicit password did not win, or changed the others")
	}
	if !a.DerivedPassword("superuser", a.SuperuserPassword) || b.DerivedPassword("superuser", b.SuperuserPassword) {
		t.Error("DerivedPassword cannot tell a derived password from an explicit one")
	}
	for _, p := range []string{a.SuperuserPassword, a.ReplicationPassword, a.RestAPIPassword} {
		if p == "<password>" || len(p) < 24 {
			t.Errorf("derived password %q is weak or the seed's placeholder", p)
		}
	}
}

func TestTokenRules(t *testing.T) {
	clearEnv(t)
	dir := t.TempDir()
	base := []string{"--name=pg1", "--advertise=10.0.0.1", "--data-dir=" + dir}

	// Several hosts: no token is an error; a one-host new cluster may make one.
	c := load(t, append(base, "--peers=10.0.0.1,10.0.0.2")...)
	c.MayGenerateToken = true
	if err := c.Check(); !hasLine(errLines(err), "NODEHA_TOKEN (--token): ", "required") {
		t.Errorf("no token with two peers: %v", err)
	}
	c = load(t, append(base, "--peers=10.0.0.1")...)
	if err := c.Check(); !hasLine(errLines(err), "NODEHA_TOKEN (--token): ", "required") {
		t.Errorf("no token, generation not allowed: %v", err)
	}
	c = load(t, append(base, "--peers=10.0.0.1")...)
	c.MayGenerateToken = true
	if err := c.Check(); err != nil || !c.TokenGenerated || c.Token == "" {
		t.Fatalf("one-host new cluster: %v, generated %v", err, c.TokenGenerated)
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 0 {
		t.Fatal("Validate wrote the generated token")
	}

	// A bad token names the setting without showing the value.
	c = load(t, append(base, "--peers=10.0.0.1", "--token=too-short")...)
	err := c.Check()
	if !hasLine(errLines(err), "NODEHA_TOKEN (--token): ", "at least") || strings.Contains(err.Error(), "too-short") {
		t.Errorf("short token: %v", err)
	}

	// The stored token is used when none is given, and another one is refused.
	if err := os.WriteFile(filepath.Join(dir, "token"), []byte(testToken+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	c = load(t, append(base, "--peers=10.0.0.1,10.0.0.2")...)
	if err := c.Check(); err != nil || c.Token != testToken {
		t.Errorf("stored token not used: %v", err)
	}
	// A failed first start stored a (generated) token but formed nothing:
	// the real token replaces it (it used to be refused for good).
	other := append(base, "--postgres-dir="+filepath.Join(dir, "pg"), "--peers=10.0.0.1,10.0.0.2", "--token=another-token-of-another-cluster")
	c = load(t, other...)
	if err := c.Check(); err != nil || !c.ReplaceIdentity || c.Token != "another-token-of-another-cluster" {
		t.Errorf("a new token on a host that formed nothing: %v (replace %v)", err, c.ReplaceIdentity)
	}
	// Once the host has data, another token is refused, and the message
	// says what to do.
	for _, data := range []string{filepath.Join("etcd", "member", "wal", "0.wal"), filepath.Join("pg", "pgdata", "PG_VERSION")} {
		p := filepath.Join(dir, data)
		os.MkdirAll(filepath.Dir(p), 0o700)
		os.WriteFile(p, []byte("x"), 0o600)
		c = load(t, other...)
		err := c.Check()
		if !hasLine(errLines(err), "NODEHA_TOKEN (--token): ", "differs") || !strings.Contains(err.Error(), "nodeha leave") || c.ReplaceIdentity {
			t.Errorf("a token different from the stored one, with %s: %v", data, err)
		}
		os.RemoveAll(filepath.Join(dir, strings.Split(data, "/")[0]))
	}
}

// A host that joined has some other hosts as its peers; once it has etcd
// data it restarts with plain `nodeha run` and the same list.
func TestPeersWithoutThisHostAfterJoining(t *testing.T) {
	clearEnv(t)
	dir := t.TempDir()
	args := []string{"--name=pg4", "--advertise=10.0.0.4", "--peers=10.0.0.1,10.0.0.2", "--data-dir=" + dir, "--token=" + testToken}
	if err := load(t, args...).Check(); !hasLine(errLines(err), "NODEHA_PEERS (--peers): ", "does not contain") {
		t.Fatalf("a new host without itself in the peers: %v", err)
	}
	if err := load(t, append(args, "--join")...).Check(); err != nil {
		t.Fatalf("joining: %v", err)
	}
	if err := os.MkdirAll(filepath.Join(dir, "etcd", "member", "wal"), 0o700); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(dir, "etcd", "member", "wal", "0.wal"), []byte("x"), 0o600)
	c := load(t, args...)
	if err := c.Check(); err != nil {
		t.Fatalf("restart of a host that joined: %v", err)
	}
	if got := c.EtcdHosts(); len(got) != 3 || got[2] != "10.0.0.4:2379" {
		t.Errorf("Patroni's etcd hosts %v, want the peers and this host", got)
	}
}

// Settings that cannot work, alone or together: one line each, naming the
// setting, and a SettingError (commands exit 2 on it).
func TestValidateRefusesWhatCannotWork(t *testing.T) {
	file := filepath.Join(t.TempDir(), "a-file")
	os.WriteFile(file, []byte("x"), 0o600)
	long := "/run/" + strings.Repeat("n", 110) + ".sock"
	cases := []struct {
		name       string
		args       []string
		prefix, in string
	}{
		{"equal ports", []string{"--restapi-port=5432"}, "NODEHA_RESTAPI_PORT (--restapi-port): ", "5432 is also NODEHA_POSTGRES_PORT"},
		{"advertise 0.0.0.0", []string{"--advertise=0.0.0.0", "--peers=0.0.0.0"}, "NODEHA_ADVERTISE (--advertise): ", "0.0.0.0 cannot be this host's address"},
		{"unknown network mode", []string{"--network-mode=bridge2"}, "NODEHA_NETWORK_MODE (--network-mode): ", `"bridge2": want host, or container:NAME`},
		{"bad container in network mode", []string{"--network-mode=container:/x"}, "NODEHA_NETWORK_MODE (--network-mode): ", "want host"},
		{"container name", []string{"--container-name=-spilo/x"}, "NODEHA_CONTAINER_NAME (--container-name): ", "not a name Docker accepts"},
		{"socket path too long", []string{"--socket=" + long}, "NODEHA_SOCKET (--socket): ", "longer than a unix socket path may be"},
		{"data dir is a file", []string{"--data-dir=" + file}, "NODEHA_DATA_DIR (--data-dir): ", "is not a directory"},
		{"unknown socket group", []string{"--socket-group=no-such-group-xyz"}, "NODEHA_SOCKET_GROUP (--socket-group): ", `"no-such-group-xyz": no such group`},
		{"metrics address without a port", []string{"--metrics-listen=127.0.0.1"}, "NODEHA_METRICS_LISTEN (--metrics-listen): ", `"127.0.0.1" is not host:port (or off)`},
		{"metrics address a name", []string{"--metrics-listen=localhost:9272"}, "NODEHA_METRICS_LISTEN (--metrics-listen): ", `"localhost" is not an IP address`},
		{"metrics port taken", []string{"--metrics-listen=127.0.0.1:5432"}, "NODEHA_METRICS_LISTEN (--metrics-listen): ", "5432 is also NODEHA_POSTGRES_PORT"},
		{"floating address without prefix", []string{"--vip=10.0.0.100"}, "NODEHA_VIP (--vip): ", "is not an address with a prefix length"},
		{"floating address IPv6", []string{"--vip=fd00::1/64"}, "NODEHA_VIP (--vip): ", "want a unicast IPv4 address"},
		{"floating address a peer's", []string{"--vip=10.0.0.2/24"}, "NODEHA_VIP (--vip): ", "is a host's own address"},
		{"floating interface alone", []string{"--vip-interface=eth0"}, "NODEHA_VIP_INTERFACE (--vip-interface): ", "is set but NODEHA_VIP is not"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			clearEnv(t)
			c := load(t, append(append([]string{}, validArgs...), tc.args...)...)
			err := c.Check()
			lines := errLines(err)
			var se *config.SettingError
			if len(lines) != 1 || !hasLine(lines, tc.prefix, tc.in) || !errors.As(err, &se) {
				t.Errorf("Validate = %v, want one setting error %q...%q", err, tc.prefix, tc.in)
			}
		})
	}
}

// Resolve reads the host (the stored token here), Validate reads nothing:
// a token that differs from the stored one is Resolve's problem, and
// Validate alone does not see it.
func TestValidateReadsNothing(t *testing.T) {
	clearEnv(t)
	dir := t.TempDir()
	os.MkdirAll(filepath.Join(dir, "etcd", "member", "wal"), 0o700)
	os.WriteFile(filepath.Join(dir, "etcd", "member", "wal", "0.wal"), []byte("x"), 0o600)
	os.WriteFile(filepath.Join(dir, "token"), []byte(testToken+"\n"), 0o600)
	args := append(append([]string{}, validArgs...), "--data-dir="+dir, "--token=another-token-of-another-cluster")
	c := load(t, args...)
	if err := c.Validate(); err != nil {
		t.Fatalf("Validate alone = %v, want nil: it must not read the stored token", err)
	}
	c = load(t, args...)
	if err := c.Check(); !hasLine(errLines(err), "NODEHA_TOKEN (--token): ", "differs") {
		t.Fatalf("Check = %v, want the stored token's conflict", err)
	}
}
