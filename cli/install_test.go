package cli_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// forgetInstallEnv makes sure that the NODEHA_* variables install sets
// from a settings file do not outlive the test (t.Setenv restores what it
// saw, which can be such a variable): registered first, it runs last.
func forgetInstallEnv(t *testing.T) {
	t.Cleanup(func() {
		for _, kv := range os.Environ() {
			if k, _, _ := strings.Cut(kv, "="); strings.HasPrefix(k, "NODEHA_") {
				os.Unsetenv(k)
			}
		}
	})
}

// fakeSystemctl is a systemctl that records its arguments.
func fakeSystemctl(t *testing.T) (path, log string) {
	t.Helper()
	dir := t.TempDir()
	path, log = filepath.Join(dir, "systemctl"), filepath.Join(dir, "calls")
	script := "#!/bin/sh\necho \"$*\" >>" + log + "\n"
	if err := os.WriteFile(path, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	return path, log
}

func installArgs(dir, systemctl string) []string {
	return []string{"--unit-dir=" + filepath.Join(dir, "units"), "--env-file=" + filepath.Join(dir, "etc", "nodeha.env"),
		"--binary=" + filepath.Join(dir, "bin", "nodeha"), "--systemctl=" + systemctl}
}

func TestInstallDryRunRedactsAndWritesNothing(t *testing.T) {
	clearEnv(t)
	pw := setPasswords(t)
	dir := t.TempDir()
	code, out, errOut := run(t, append(append([]string{"install", "--dry-run"}, cluster...), installArgs(dir, "/nonexistent")...)...)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	for _, p := range pw {
		if strings.Contains(out+errOut, p) {
			t.Errorf("dry-run output holds a password:\n%s", out)
		}
	}
	for _, want := range []string{"Type=notify", "NODEHA_SUPERUSER_PASSWORD='<redacted>'", "NODEHA_NAME=pg-node-1", "would write " + filepath.Join(dir, "units", "nodeha.service")} {
		if !strings.Contains(out, want) {
			t.Errorf("dry-run output lacks %q:\n%s", want, out)
		}
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 0 {
		t.Errorf("dry-run wrote %v", ents)
	}
}

func TestInstallUninstall(t *testing.T) {
	forgetInstallEnv(t)
	clearEnv(t)
	pw := setPasswords(t)
	dir := t.TempDir()
	sc, calls := fakeSystemctl(t)
	args := installArgs(dir, sc)
	code, out, errOut := run(t, append(append([]string{"install"}, cluster...), args...)...)
	if code != 0 {
		t.Fatalf("install: exit %d: %s", code, errOut)
	}
	envPath := filepath.Join(dir, "etc", "nodeha.env")
	for path, mode := range map[string]os.FileMode{envPath: 0o600, filepath.Join(dir, "units", "nodeha.service"): 0o644, filepath.Join(dir, "bin", "nodeha"): 0o755} {
		st, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		if st.Mode().Perm() != mode {
			t.Errorf("%s: mode %v, want %v", path, st.Mode().Perm(), mode)
		}
	}
	env, _ := os.ReadFile(envPath)
	if !strings.Contains(string(env), "NODEHA_SUPERUSER_PASSWORD="+pw[0]) && !strings.Contains(string(env), "="+pw[0]) {
		t.Errorf("env file lacks the passwords:\n%s", env)
	}
	for _, p := range pw {
		if strings.Contains(out+errOut, p) {
			t.Errorf("install output holds a password:\n%s%s", out, errOut)
		}
	}
	got, _ := os.ReadFile(calls)
	if want := "daemon-reload\nenable nodeha.service\nstart --no-block nodeha.service\n"; string(got) != want {
		t.Errorf("systemctl calls:\n%s\nwant:\n%s", got, want)
	}

	// Again, with the settings only in the file (as cloud-init runs it):
	// nothing changes, so a start, not a restart.
	clearEnv(t)
	os.Remove(calls)
	code, _, errOut = run(t, append([]string{"install"}, args...)...)
	if code != 0 {
		t.Fatalf("second install: exit %d: %s", code, errOut)
	}
	if env2, _ := os.ReadFile(envPath); string(env2) != string(env) {
		t.Errorf("install from the file rewrote it differently:\n%s\nwas:\n%s", env2, env)
	}
	if got, _ := os.ReadFile(calls); string(got) != "daemon-reload\nenable nodeha.service\nstart --no-block nodeha.service\n" {
		t.Errorf("second install: systemctl calls:\n%s", got)
	}

	// A flag wins over the file, and changes it.
	clearEnv(t)
	os.Remove(calls)
	if code, _, errOut := run(t, append([]string{"install", "--scope=billing"}, args...)...); code != 0 {
		t.Fatalf("third install: %s", errOut)
	}
	if got, _ := os.ReadFile(calls); string(got) != "daemon-reload\nenable nodeha.service\nrestart --no-block nodeha.service\n" {
		t.Errorf("changed settings: systemctl calls:\n%s", got)
	}
	if env3, _ := os.ReadFile(envPath); !strings.Contains(string(env3), "NODEHA_SCOPE=billing\n") || !strings.Contains(string(env3), "NODEHA_NAME=pg-node-1\n") {
		t.Errorf("env file after --scope:\n%s", env3)
	}
	clearEnv(t)

	os.Remove(calls)
	uargs := []string{"uninstall", args[0], args[1], args[3]}
	if code, out, errOut := run(t, uargs...); code != 0 || !strings.Contains(out, "left in place") {
		t.Fatalf("uninstall: exit %d: %s%s", code, out, errOut)
	}
	if got, _ := os.ReadFile(calls); string(got) != "disable --now nodeha.service\ndaemon-reload\n" {
		t.Errorf("uninstall: systemctl calls:\n%s", got)
	}
	for _, p := range []string{envPath, filepath.Join(dir, "units", "nodeha.service")} {
		if _, err := os.Stat(p); !os.IsNotExist(err) {
			t.Errorf("%s still there after uninstall", p)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "bin", "nodeha")); err != nil {
		t.Errorf("uninstall removed the binary: %v", err)
	}
}

func TestInstallBadInput(t *testing.T) {
	forgetInstallEnv(t)
	clearEnv(t)
	setPasswords(t)
	dir := t.TempDir()
	code, _, errOut := run(t, append(append([]string{"install"}, cluster...), "--unit-dir=units", "--systemctl=/nonexistent")...)
	if code != 2 || errOut != "nodeha: --unit-dir: \"units\" must be an absolute path\n" {
		t.Errorf("relative --unit-dir: exit %d, %q", code, errOut)
	}
	bad := filepath.Join(dir, "bad.env")
	os.WriteFile(bad, []byte("NODEHA_NAME=pg1\nPATH=/tmp\n"), 0o600)
	code, _, errOut = run(t, "install", "--env-file="+bad, "--systemctl=/nonexistent")
	if code != 2 || !strings.Contains(errOut, "--env-file "+bad+": line 2") || strings.Count(errOut, "\n") != 1 {
		t.Errorf("bad env file: exit %d, %q", code, errOut)
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 1 {
		t.Errorf("bad input wrote %v", ents)
	}
}

func TestStatusWaitTimesOut(t *testing.T) {
	clearEnv(t)
	socket := t.TempDir() + "/nodeha.sock"
	code, _, errOut := run(t, "status", "--socket="+socket, "--wait=1500ms")
	if code != 1 || !strings.Contains(errOut, "not healthy after 1.5s: cannot reach nodeha at "+socket) {
		t.Errorf("status --wait with no daemon: exit %d, stderr %q", code, errOut)
	}
	if code, _, errOut := run(t, "status", "--wait=soon"); code != 2 || !strings.Contains(errOut, "-wait") {
		t.Errorf("status --wait=soon: exit %d, %q", code, errOut)
	}
}

func TestCloudInit(t *testing.T) {
	clearEnv(t)
	pw := setPasswords(t)
	sha := "--binary-sha256=" + strings.Repeat("0f", 32)
	code, out, errOut := run(t, append(append([]string{"cloud-init"}, cluster...), "--binary-url=https://example.com/nodeha", sha)...)
	if code != 0 || !strings.HasPrefix(out, "#cloud-config\n") || !strings.Contains(out, pw[0]) || !strings.Contains(out, "NODEHA_ADVERTISE=10.0.0.1") {
		t.Fatalf("cloud-init: exit %d: %s\n%s", code, errOut, out)
	}

	dir := t.TempDir()
	code, out, errOut = run(t, "cloud-init", "--all="+dir, "--peers=10.0.0.1,10.0.0.2", "--names=a,b", "--advertise={{ GetPrivateIP }}", "--binary-url=https://example.com/nodeha", sha)
	if code != 0 || strings.Count(out, "wrote ") != 2 {
		t.Fatalf("cloud-init --all: exit %d: %s%s", code, out, errOut)
	}
	b, err := os.ReadFile(filepath.Join(dir, "b.user-data"))
	if err != nil {
		t.Fatal(err)
	}
	if st, _ := os.Stat(filepath.Join(dir, "b.user-data")); st.Mode().Perm() != 0o600 {
		t.Errorf("user-data mode %v", st.Mode().Perm())
	}
	if !strings.Contains(string(b), "NODEHA_NAME=b\n") || !strings.Contains(string(b), "NODEHA_ADVERTISE=10.0.0.2\n") {
		t.Errorf("b.user-data:\n%s", b)
	}

	// A host joining an existing cluster: its settings say so, with the token.
	code, out, errOut = run(t, "cloud-init", "--name=pg4", "--advertise=10.0.0.4", "--peers=10.0.0.1,10.0.0.2", "--join", "--binary-url=https://x/y", sha)
	if code != 0 || !strings.Contains(out, "NODEHA_JOIN=true\n") || !strings.Contains(out, "NODEHA_TOKEN="+cliToken+"\n") || !strings.Contains(out, "NODEHA_PEERS=10.0.0.1,10.0.0.2\n") {
		t.Errorf("cloud-init --join: exit %d, stderr %s\n%s", code, errOut, out)
	}

	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--peers=10.0.0.1", "--binary-url=https://x/y", sha}, "nodeha: NODEHA_NAME (--name): is required"},
		{append(cluster, "--join", "--token=K10x", "--binary-url=https://x/y", sha), "nodeha: NODEHA_TOKEN (--token): not a valid token"},
		{[]string{"--name=pg4", "--advertise=10.0.0.4", "--peers=10.0.0.1", "--join", "--token=", "--data-dir=" + dir, "--binary-url=https://x/y", sha}, "nodeha: NODEHA_TOKEN (--token): is required"},
		{append(cluster, "--binary-url=https://x/y"), "nodeha: --binary-sha256: \"\" is not a SHA-256"},
		{append(cluster, "--embed-binary=/nonexistent/nodeha"), "nodeha: --embed-binary: open /nonexistent/nodeha"},
		{[]string{"--all=" + dir, "--peers=10.0.0.1,10.0.0.2", "--names=a", "--binary-url=https://x/y", sha}, "nodeha: --names: 1 names for 2 peers"},
		{[]string{"--all=" + dir, "--name=x", "--peers=10.0.0.1", "--binary-url=https://x/y", sha}, "nodeha: --name: not with --all"},
		{[]string{"--name=pg1", "--peers=10.0.0.1,nope", "--binary-url=https://x/y", sha}, "nodeha: NODEHA_PEERS (--peers): \"nope\" is not an IP address"},
	} {
		code, _, errOut := run(t, append([]string{"cloud-init"}, c.args...)...)
		if code != 2 || !strings.HasPrefix(errOut, c.want) || strings.Count(errOut, "\n") != 1 {
			t.Errorf("cloud-init %v: exit %d, stderr %q, want one line starting %q", c.args, code, errOut, c.want)
		}
	}
}
