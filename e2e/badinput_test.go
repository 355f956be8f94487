//go:build e2e

package e2e

import (
	"bytes"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestBadInput runs the real binary against the real Docker engine with one
// bad setting at a time: each must give one error line naming the setting,
// exit non-zero, and leave the disk as it was (an existing data directory
// untouched, nothing created).
const badInputToken = "bad-input-tests-cluster-token-0123"

func TestBadInput(t *testing.T) {
	cases := []struct {
		name string
		env  map[string]string
		want string
	}{
		{"missing token", map[string]string{"NODEHA_TOKEN": "", "NODEHA_PEERS": "127.0.0.1,127.0.0.2"}, "NODEHA_TOKEN (--token): is required"},
		{"token too short", map[string]string{"NODEHA_TOKEN": "short"}, "NODEHA_TOKEN (--token): not a valid token: 5 characters, want at least 24"},
		{"token of another cluster", map[string]string{"NODEHA_TOKEN": "the-token-of-another-cluster-0123"}, "NODEHA_TOKEN (--token): differs from the token stored in"},
		{"advertise not this host's", map[string]string{"NODEHA_ADVERTISE": "203.0.113.77", "NODEHA_PEERS": "203.0.113.77"}, "NODEHA_ADVERTISE (--advertise): 203.0.113.77 is not an address of this host"},
		{"unreachable docker", map[string]string{"NODEHA_DOCKER_HOST": "unix:///nonexistent/docker.sock"}, "NODEHA_DOCKER_HOST (--docker-host): cannot reach the Docker engine"},
		{"template resolves to nothing", map[string]string{"NODEHA_ADVERTISE": `{{ GetAllInterfaces | include "name" "no-such-if0" | attr "address" }}`}, "resolves to no address"},
		{"peers without this host", map[string]string{"NODEHA_PEERS": "127.0.0.2,127.0.0.3"}, "NODEHA_PEERS (--peers): does not contain this host's address 127.0.0.1"},
		// A registry on loopback that refuses: the pull fails without any
		// traffic leaving the machine.
		{"image does not exist", map[string]string{"NODEHA_IMAGE": "127.0.0.1:9/nodeha-no-such-image:1"}, "NODEHA_IMAGE (--image): image \"127.0.0.1:9/nodeha-no-such-image:1\" is not present and cannot be pulled"},
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
