//go:build e2e

package e2e

import (
	"bytes"
	"context"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nodeha/nodeha/internal/testcluster"
)

// TestBadInput runs the real binary against the real Docker engine with one
// bad setting at a time: each must give one error line naming the setting,
// exit non-zero, and leave the disk as it was (an existing data directory
// untouched, nothing created).
const badInputToken = "bad-input-tests-cluster-token-0123"

func TestBadInput(t *testing.T) {
	// Each class of bad setting the README's rule covers; code 2 for a bad
	// setting, 1 for a part that is not there.
	overlay := func(name, body string) string {
		p := filepath.Join(t.TempDir(), name)
		if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	notADir := overlay("not-a-dir", "x")
	cases := []struct {
		name string
		env  map[string]string
		want string
		code int
	}{
		{"missing token", map[string]string{"NODEHA_TOKEN": "", "NODEHA_PEERS": "127.0.0.1,127.0.0.2"}, "NODEHA_TOKEN (--token): is required", 2},
		{"token too short", map[string]string{"NODEHA_TOKEN": "short"}, "NODEHA_TOKEN (--token): not a valid token: 5 characters, want at least 24", 2},
		{"token of another cluster", map[string]string{"NODEHA_TOKEN": "the-token-of-another-cluster-0123"}, "NODEHA_TOKEN (--token): differs from the token stored in", 2},
		{"advertise not this host's", map[string]string{"NODEHA_ADVERTISE": "203.0.113.77", "NODEHA_PEERS": "203.0.113.77"}, "NODEHA_ADVERTISE (--advertise): 203.0.113.77 is not an address of this host", 2},
		{"unreachable docker", map[string]string{"NODEHA_DOCKER_HOST": "unix:///nonexistent/docker.sock"}, "NODEHA_DOCKER_HOST (--docker-host): cannot reach the Docker engine", 1},
		{"template resolves to nothing", map[string]string{"NODEHA_ADVERTISE": `{{ GetAllInterfaces | include "name" "no-such-if0" | attr "address" }}`}, "resolves to no address", 2},
		{"peers without this host", map[string]string{"NODEHA_PEERS": "127.0.0.2,127.0.0.3"}, "NODEHA_PEERS (--peers): does not contain this host's address 127.0.0.1", 2},
		// A registry on loopback that refuses: the pull fails without any
		// traffic leaving the machine.
		{"image does not exist", map[string]string{"NODEHA_IMAGE": "127.0.0.1:9/nodeha-no-such-image:1"}, "NODEHA_IMAGE (--image): image \"127.0.0.1:9/nodeha-no-such-image:1\" is not present and cannot be pulled", 1},
		{"overlay not YAML", map[string]string{"NODEHA_PATRONI_OVERLAY": overlay("bad.yml", "bootstrap:\n  dcs: [ttl: 30\n")}, "NODEHA_PATRONI_OVERLAY (--patroni-overlay): ", 2},
		{"overlay a list", map[string]string{"NODEHA_PATRONI_OVERLAY": overlay("list.yml", "- a\n")}, "want a map of Patroni settings", 2},
		{"overlay sets what nodeha owns", map[string]string{"NODEHA_PATRONI_OVERLAY": overlay("ttl.yml", "bootstrap:\n  dcs:\n    ttl: 30\n")}, "bootstrap.dcs.ttl is nodeha's (set NODEHA_TTL)", 2},
		{"overlay value of the wrong kind", map[string]string{"NODEHA_PATRONI_OVERLAY": overlay("kind.yml", "bootstrap:\n  dcs:\n    maximum_lag_on_failover: abc\n")}, "is a string (abc), want a number", 2},
		{"overlay deletes postgresql", map[string]string{"NODEHA_PATRONI_OVERLAY": overlay("null.yml", "postgresql: null\n")}, "postgresql is null", 2},
		{"equal ports", map[string]string{"NODEHA_RESTAPI_PORT": "5432"}, "NODEHA_RESTAPI_PORT (--restapi-port): 5432 is also NODEHA_POSTGRES_PORT", 2},
		{"advertise 0.0.0.0", map[string]string{"NODEHA_ADVERTISE": "0.0.0.0", "NODEHA_PEERS": "0.0.0.0"}, "NODEHA_ADVERTISE (--advertise): 0.0.0.0 cannot be this host's address", 2},
		{"unknown network mode", map[string]string{"NODEHA_NETWORK_MODE": "bridge2"}, "NODEHA_NETWORK_MODE (--network-mode): \"bridge2\"", 2},
		{"container name Docker refuses", map[string]string{"NODEHA_CONTAINER_NAME": "/bad name"}, "NODEHA_CONTAINER_NAME (--container-name): ", 2},
		{"socket path too long", map[string]string{"NODEHA_SOCKET": "/run/" + strings.Repeat("s", 110)}, "longer than a unix socket path may be", 2},
		{"data dir is a file", map[string]string{"NODEHA_DATA_DIR": notADir}, "NODEHA_DATA_DIR (--data-dir): ", 2},
		{"metrics address not host:port", map[string]string{"NODEHA_METRICS_LISTEN": "9272"}, "NODEHA_METRICS_LISTEN (--metrics-listen): \"9272\" is not host:port (or off)", 2},
		{"floating address IPv6", map[string]string{"NODEHA_VIP": "fd00::100/64"}, "NODEHA_VIP (--vip): \"fd00::100/64\": want a unicast IPv4 address", 2},
		{"floating address a host's own", map[string]string{"NODEHA_VIP": "127.0.0.1/8"}, "NODEHA_VIP (--vip): ", 2},
		{"floating address on no interface", map[string]string{"NODEHA_VIP": "10.254.0.100/24", "NODEHA_VIP_INTERFACE": "no-such-if0"}, "NODEHA_VIP_INTERFACE (--vip-interface): interface \"no-such-if0\"", 2},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			pgdata := filepath.Join(dir, "postgresql", "pgdata")
			if err := os.MkdirAll(pgdata, 0o700); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(pgdata, "PG_VERSION"), []byte("15\n"), 0o600); err != nil {
				t.Fatal(err)
			}
			// This host already belongs to a cluster: its token is stored
			// (a host that never ran has none, and needs one given).
			if tc.name != "missing token" && tc.name != "token too short" {
				if err := os.MkdirAll(filepath.Join(dir, "nodeha"), 0o700); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(filepath.Join(dir, "nodeha", "token"), []byte(badInputToken+"\n"), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			before := tree(t, dir)

			env := map[string]string{
				"NODEHA_NAME": "bad1", "NODEHA_PEERS": "127.0.0.1", "NODEHA_ADVERTISE": "127.0.0.1",
				"NODEHA_TOKEN":          badInputToken,
				"NODEHA_IMAGE":          spiloImage,
				"NODEHA_DATA_DIR":       filepath.Join(dir, "nodeha"),
				"NODEHA_POSTGRES_DIR":   filepath.Join(dir, "postgresql"),
				"NODEHA_LOG_DIR":        filepath.Join(dir, "log"),
				"NODEHA_SOCKET":         filepath.Join(dir, "run", "nodeha.sock"),
				"NODEHA_CONTAINER_NAME": prefix("badinput"),
				// Never reached: every case fails before etcd starts.
				"NODEHA_ETCD_CLIENT_PORT": "23791", "NODEHA_ETCD_PEER_PORT": "23801",
			}
			for k, v := range tc.env {
				env[k] = v
			}
			cmd := exec.Command(nodehaBin, "run")
			cmd.Env = []string{"PATH=" + os.Getenv("PATH")}
			for k, v := range env {
				if v != "" {
					cmd.Env = append(cmd.Env, k+"="+v)
				}
			}
			var stderr bytes.Buffer
			cmd.Stderr = &stderr
			err := cmd.Run()
			if err == nil {
				t.Fatalf("nodeha run exited 0; stderr:\n%s", stderr.String())
			}
			var errLines []string
			for _, l := range strings.Split(stderr.String(), "\n") {
				if strings.HasPrefix(l, "nodeha: ") {
					errLines = append(errLines, l)
				}
			}
			if len(errLines) != 1 || !strings.Contains(errLines[0], tc.want) {
				t.Errorf("want one error line containing %q, got:\n%s", tc.want, stderr.String())
			}
			if code := cmd.ProcessState.ExitCode(); code != tc.code {
				t.Errorf("exit code %d, want %d", code, tc.code)
			}
			if after := tree(t, dir); after != before {
				t.Errorf("disk changed:\nbefore:\n%s\nafter:\n%s", before, after)
			}
		})
	}
}

// tree lists every path under dir with its mode and content.
func tree(t *testing.T, dir string) string {
	t.Helper()
	var b strings.Builder
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		info, _ := d.Info()
		b.WriteString(p + " " + info.Mode().String())
		if d.Type().IsRegular() {
			c, _ := os.ReadFile(p)
			b.WriteString(" " + string(c))
		}
		b.WriteString("\n")
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return b.String()
}

// TestBadCommandInput: the other commands' bad arguments, with the real
// binary: one line naming the flag or setting, exit 2, nothing written.
func TestBadCommandInput(t *testing.T) {
	dir := t.TempDir()
	garbage := filepath.Join(dir, "garbage.db")
	os.WriteFile(garbage, bytes.Repeat([]byte("not a snapshot "), 200), 0o600)
	out := filepath.Join(dir, "user-data")
	env := []string{"NODEHA_TOKEN=" + badInputToken, "NODEHA_DATA_DIR=" + filepath.Join(dir, "data"), "NODEHA_SOCKET=" + filepath.Join(dir, "nodeha.sock")}
	cases := []struct {
		name string
		args []string
		want string
	}{
		{"dsn with garbage peers", []string{"dsn", "--peers=a b,;;x"}, `NODEHA_PEERS (--peers): "a b" is not an IP address or a host name`},
		{"cloud-init with a name twice", []string{"cloud-init", "--all=" + out, "--peers=10.0.0.1,10.0.0.2,10.0.0.3", "--names=a,a,b", "--embed-binary=" + nodehaBin}, `--names: "a" is listed twice`},
		{"status --wait=abc", []string{"status", "--wait=abc"}, `invalid value "abc" for flag -wait: want a positive duration`},
		{"recover from a garbage snapshot", []string{"recover", "--from-snapshot=" + garbage, "--peers=127.0.0.1", "--advertise=127.0.0.1", "--name=bad1"}, "--from-snapshot: " + garbage + " is not an intact etcd snapshot"},
		{"remove without a name", []string{"remove", "--force"}, "remove: usage: nodeha remove NAME [--force]"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			before := tree(t, dir)
			cmd := exec.Command(nodehaBin, tc.args...)
			cmd.Env = append([]string{"PATH=" + os.Getenv("PATH")}, env...)
			var stderr bytes.Buffer
			cmd.Stderr = &stderr
			cmd.Run()
			lines := strings.Split(strings.TrimSpace(stderr.String()), "\n")
			if len(lines) != 1 || !strings.HasPrefix(lines[0], "nodeha: ") || !strings.Contains(lines[0], tc.want) {
				t.Errorf("want one line containing %q, got:\n%s", tc.want, stderr.String())
			}
			if code := cmd.ProcessState.ExitCode(); code != 2 {
				t.Errorf("exit code %d, want 2", code)
			}
			if after := tree(t, dir); after != before {
				t.Errorf("disk changed:\nbefore:\n%s\nafter:\n%s", before, after)
			}
		})
	}
	// `remove --force NAME` reaches the daemon (here: none) in either order.
	cmd := exec.Command(nodehaBin, "remove", "--force", "pg3")
	cmd.Env = append([]string{"PATH=" + os.Getenv("PATH")}, env...)
	b, _ := cmd.CombinedOutput()
	if !strings.Contains(string(b), "cannot reach nodeha at") {
		t.Errorf("remove --force NAME: %s, want it to ask the daemon", b)
	}

	// install on a machine without systemd (the host image, booted without
	// /sbin/init): refused before the binary, the unit or the settings
	// file is written.
	if err := testcluster.RequireImage(context.Background(), hostImage); err != nil {
		t.Fatalf("%v (make image)", err)
	}
	script := `set -u; /nodeha install --peers=127.0.0.1 --advertise=127.0.0.1 --name=bad1 --token=` + badInputToken + ` 2>/tmp/err; echo "rc=$?"; cat /tmp/err; ls /usr/local/bin/nodeha /etc/systemd/system/nodeha.service /etc/nodeha/nodeha.env 2>&1 | grep -c "No such file"`
	got, err := testcluster.Docker(context.Background(), "run", "--rm", "-v", nodehaBin+":/nodeha:ro", hostImage, "sh", "-c", script)
	if err != nil {
		t.Fatalf("install without systemd: %v\n%s", err, got)
	}
	if !strings.Contains(got, "rc=1") || !strings.Contains(got, "systemd is not running on this host") || !strings.HasSuffix(strings.TrimSpace(got), "3") {
		t.Errorf("install without systemd: want exit 1, the reason, and none of the three files written; got:\n%s", got)
	}
}
